"""Pure helpers of the OpenAI-compatible adapter base: parsing upstream headers, bodies and SSE lines."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import importlib.util
import struct
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp.base_protocol import BaseProtocol

from underlay.api.inference import ChatCompletion, ChatCompletionRequest, Completion
from underlay.providers.remote.inference import passthrough
from underlay.providers.remote.inference.llama_cpp_server import mean_pool
from underlay.providers.remote.inference.passthrough import PassthroughInferenceProvider
from underlay.providers.utils.openai_compat import (
    TimeoutSettings,
    _split_userinfo,
    body_message,
    floats_to_base64,
    guess_model_type,
    normalize_finish_reasons,
    retry_after_seconds,
    with_v1,
)
from underlay.providers.utils.upstream_http import LineReader, env_proxy


def test_retry_after_forms() -> None:
    assert retry_after_seconds(httpx.Headers({"Retry-After": "2"})) == 2.0
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "250", "Retry-After": "9"})) == 0.25
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (retry_after_seconds(httpx.Headers({"Retry-After": future})) or 0) <= 31
    assert retry_after_seconds(httpx.Headers({"Retry-After": "soon"})) is None
    assert retry_after_seconds(httpx.Headers()) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": {"message": "bad model", "type": "invalid_request_error"}}, "bad model"),
        ({"error": "plain"}, "plain"),
        ({"detail": "Invalid API key"}, "Invalid API key"),
        ({"detail": [{"loc": ["body", "messages", 0], "msg": "Field required"}]}, "messages.0: Field required"),
        ({"message": "from elsewhere"}, "from elsewhere"),
        ('{"error": {"message": "as text"}}', "as text"),
        ("not json", ""),
        ([1, 2], ""),
    ],
)
def test_body_message_shapes(body: object, message: str) -> None:
    assert body_message(body) == message


def test_with_v1_only_fills_a_bare_url() -> None:
    assert with_v1("http://h:8000") == "http://h:8000/v1"
    assert with_v1("http://h:8000/") == "http://h:8000/v1"
    assert with_v1("http://h:8000/v1/") == "http://h:8000/v1"
    assert with_v1("https://gateway/llm/openai") == "https://gateway/llm/openai"


def test_timeout_number_sets_read() -> None:
    assert TimeoutSettings.model_validate(30) == TimeoutSettings(connect=5, read=30)
    assert TimeoutSettings.model_validate(2) == TimeoutSettings(connect=2, read=2)


def test_unknown_finish_reasons_become_stop() -> None:
    body = {"choices": [{"finish_reason": "abort"}, {"finish_reason": "tool_calls"}, {"finish_reason": None}]}
    assert [c["finish_reason"] for c in normalize_finish_reasons(ChatCompletion, body)["choices"]] == [
        "stop",
        "tool_calls",
        None,
    ]
    completion = {"choices": [{"finish_reason": "tool_calls"}]}
    assert normalize_finish_reasons(Completion, completion)["choices"][0]["finish_reason"] == "stop"


def test_base64_is_little_endian_float32() -> None:
    encoded = floats_to_base64([1.0, -2.5])
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (1.0, -2.5)


def test_mean_pool_and_type_guess() -> None:
    assert mean_pool([[1.0, 2.0], [3.0, 4.0]]) == [2.0, 3.0]
    assert guess_model_type("nomic-Embed-text") == "embedding"
    assert guess_model_type("llama3") == "llm"


async def _lines_of(chunks: list[bytes]) -> list[str]:
    """Feed ``chunks`` through a real aiohttp body stream, read by the adapter's SSE line splitter."""
    loop = asyncio.get_running_loop()
    content = aiohttp.StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    for chunk in chunks:
        content.feed_data(chunk)
    content.feed_eof()
    reader = LineReader(content)
    lines = []
    while (line := await reader.readline()) is not None:
        lines.append(line)
    return lines


async def test_sse_lines_split_at_every_line_ending_even_across_reads() -> None:
    assert await _lines_of([b"data: a\n\ndata: b\r\n\r\n"]) == ["data: a", "", "data: b", ""]
    # A CRLF cut between two reads is one line ending, not two; a lone CR ends a line too.
    assert await _lines_of([b"data: a\r", b"\n\r", b"\ndata: b\rdata: c"]) == ["data: a", "", "data: b", "data: c"]
    assert await _lines_of([b"data: x\r"]) == ["data: x"]
    # A multi-byte character split across reads is decoded whole.
    snowman = "data: \u2603\n".encode()
    assert await _lines_of([snowman[:8], snowman[8:]]) == ["data: \u2603"]
    assert await _lines_of([]) == []


def test_url_credentials_become_basic_auth_and_leave_the_url() -> None:
    url, auth = _split_userinfo("http://user%40x:p%3Ass@127.0.0.1:8000/v1/")
    assert url == "http://127.0.0.1:8000/v1"
    assert auth == "Basic " + base64.b64encode(b"user@x:p:ss").decode()
    assert _split_userinfo("https://api.example.com/v1") == ("https://api.example.com/v1", None)


async def test_pooled_connections_are_reused_after_answers_and_streams() -> None:
    """Against the benchmark's real loopback upstream: a connection goes back to the pool after a JSON
    answer and after a stream read to ``[DONE]``, and a burst's connections serve the next burst."""
    stub = _load_bench_stub()
    accepted = 0

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await stub._handle(reader, writer)

    server = await asyncio.start_server(counting, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    provider = PassthroughInferenceProvider("pt", passthrough.Config(base_url=f"http://127.0.0.1:{port}/v1"))
    await provider.initialize()
    chat = ChatCompletionRequest.model_validate({"model": "stub", "messages": [{"role": "user", "content": "hi"}]})
    try:
        for _ in range(5):
            answer = await provider.openai_chat_completion(chat)
            assert isinstance(answer, ChatCompletion) and answer.choices[0].message.content == "ok"
            stream = await provider.openai_chat_completion(chat.model_copy(update={"stream": True}))
            chunks = [chunk async for chunk in stream]  # type: ignore[union-attr]
            assert len(chunks) == stub.CHUNKS + 1
        assert accepted == 1
        for _ in range(2):
            await asyncio.gather(*(provider.openai_chat_completion(chat) for _ in range(16)))
        assert accepted <= 16
    finally:
        await provider.shutdown()
        server.close()
        await server.wait_closed()


def _load_bench_stub() -> Any:
    path = Path(__file__).resolve().parents[2] / "bench" / "upstream_stub.py"
    spec = importlib.util.spec_from_file_location("upstream_stub", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_environment_proxy_is_honoured_unless_no_proxy_names_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("https://api.example.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "gpu-box.internal")
    assert env_proxy("https://api.example.com/v1") == "http://proxy.internal:3128"
    assert env_proxy("https://gpu-box.internal/v1") is None
    assert env_proxy("http://api.example.com/v1") is None  # only HTTPS_PROXY is set
