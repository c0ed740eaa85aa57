"""``remote::vllm``, ``remote::ollama`` and ``inline::llama-guard`` against STAND-INS of vLLM and Ollama.

A real ``underlay run`` is driven by the ``openai`` SDK; its vLLM and Ollama providers point at loopback
stand-ins (``wire_standins.py``) that speak those servers' documented wire formats, because neither
server can run here (vLLM needs a GPU, Ollama is not installable offline):

- vLLM's OpenAI-compatible server: ``GET /v1/models`` with ``max_model_len``, ``POST /v1/chat/completions``
  (JSON and SSE ending in ``data: [DONE]``), ``/v1/completions``, ``/v1/embeddings`` (float or base64),
  ``--api-key`` checked as a bearer token (401 ``{"error": "Unauthorized"}``), and its error object
  ``{"object": "error", "message", "type", "param", "code"}``.
- Ollama: ``GET /api/tags`` (models with ``details.family``), and its OpenAI-compatible ``/v1`` API, whose
  embeddings come back as floats whatever encoding was asked.

Each test asserts what the adapter sent (path, auth header, body) and how answers and failures reach the
client: 401 from the operator's key is 502, 429 stays 429, a stall is 504, each naming the provider.
``inline::llama-guard`` is checked over the stand-in's Llama Guard model: the conversation goes as is.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.integration.harness import RunningServer, start_server
from tests.integration.wire_standins import Failure, Seen, StandIn, sse

VLLM_KEY = "vllm-key-7d2e91"
CHAT = "meta-llama/Llama-3.2-1B-Instruct"
GUARD = "meta-llama/Llama-Guard-3-1B"
EMBED = "nomic-ai/nomic-embed-text-v1.5"  # listings carry no task: "embed" in the name is the hint
VECTOR = [0.25, -0.5, 0.125, 1.0]
CREATED = 1733500000


def _usage(prompt: int = 7, completion: int = 3) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _last_user(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = users[-1]["content"] if users else ""
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


# -- the vLLM stand-in ------------------------------------------------------------------------------


def _vllm_error(message: str, kind: str, status: int) -> web.Response:
    """vLLM's error object (``ErrorResponse`` in its OpenAI server)."""
    body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return web.json_response(body, status=status)


def _vllm_refusal(seen: Seen, served: tuple[str, ...]) -> web.Response | None:
    if seen.headers.get("authorization") != f"Bearer {VLLM_KEY}":
        return web.json_response({"error": "Unauthorized"}, status=401)
    model = (seen.body or {}).get("model")
    if seen.method == "POST" and model not in served:
        return _vllm_error(f"The model `{model}` does not exist.", "NotFoundError", 404)
    return None


def vllm_standin() -> StandIn:
    served = (CHAT, GUARD, EMBED)

    async def models(seen: Seen) -> web.StreamResponse:
        if (refused := _vllm_refusal(seen, served)) is not None:
            return refused
        data = [
            {
                "id": m,
                "object": "model",
                "created": CREATED,
                "owned_by": "vllm",
                "root": m,
                "parent": None,
                "max_model_len": 4096 if m != EMBED else 512,
                "permission": [],
            }
            for m in served
        ]
        return web.json_response({"object": "list", "data": data})

    async def chat(seen: Seen) -> web.StreamResponse:
        if (refused := _vllm_refusal(seen, served)) is not None:
            return refused
        body = seen.body
        if body["model"] == GUARD:  # a Llama Guard model reads the whole conversation
            text = " ".join(str(m["content"]) for m in body["messages"]).lower()
            answer = "unsafe\nS1" if "kill" in text else "safe"
        else:
            answer = f"vllm heard: {_last_user(body)}"
        if body.get("stream"):
            first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            events = [
                {
                    "id": "chatcmpl-v1",
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": body["model"],
                    "choices": [first],
                }
            ]
            for word in answer.split(" "):
                delta = {"index": 0, "delta": {"content": word + " "}, "finish_reason": None}
                events.append({**events[0], "choices": [delta]})
            events.append({**events[0], "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                events.append({**events[0], "choices": [], "usage": _usage()})
            return await sse(seen, events)
        message = {"role": "assistant", "content": answer, "tool_calls": [], "reasoning_content": None}
        return web.json_response(
            {
                "id": "chatcmpl-v1",
                "object": "chat.completion",
                "created": CREATED,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop", "stop_reason": None}
                ],
                "usage": _usage(),
                "prompt_logprobs": None,
            }
        )

    async def completions(seen: Seen) -> web.StreamResponse:
        if (refused := _vllm_refusal(seen, served)) is not None:
            return refused
        choice = {
            "index": 0,
            "text": " and the rest.",
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
        }
        return web.json_response(
            {
                "id": "cmpl-v1",
                "object": "text_completion",
                "created": CREATED,
                "model": seen.body["model"],
                "choices": [choice],
                "usage": _usage(),
            }
        )

    async def embeddings(seen: Seen) -> web.StreamResponse:
        if (refused := _vllm_refusal(seen, served)) is not None:
            return refused
        inputs = seen.body["input"] if isinstance(seen.body["input"], list) else [seen.body["input"]]
        packed = base64.b64encode(struct.pack(f"<{len(VECTOR)}f", *VECTOR)).decode()
        vector: Any = packed if seen.body.get("encoding_format") == "base64" else VECTOR
        data = [{"index": i, "object": "embedding", "embedding": vector} for i in range(len(inputs))]
        return web.json_response(
            {
                "id": "embd-v1",
                "object": "list",
                "created": CREATED,
                "model": seen.body["model"],
                "data": data,
                "usage": {"prompt_tokens": 4, "total_tokens": 4, "completion_tokens": 0},
            }
        )

    routes = {
        ("GET", "/v1/models"): models,
        ("POST", "/v1/chat/completions"): chat,
        ("POST", "/v1/completions"): completions,
        ("POST", "/v1/embeddings"): embeddings,
    }
    return StandIn("vllm", routes).start()


# -- the Ollama stand-in ----------------------------------------------------------------------------

OLLAMA_CHAT = "llama3.2:1b"
OLLAMA_EMBED = "nomic-embed-text:latest"


def ollama_standin() -> StandIn:
    def tag(name: str, family: str, size: int, parameters: str) -> dict[str, Any]:
        details = {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": parameters,
            "quantization_level": "Q8_0",
        }
        return {
            "name": name,
            "model": name,
            "modified_at": "2025-11-02T10:00:00Z",
            "size": size,
            "digest": "9" * 64,
            "details": details,
        }

    async def tags(seen: Seen) -> web.StreamResponse:
        return web.json_response(
            {
                "models": [
                    tag(OLLAMA_CHAT, "llama", 1321098329, "1.2B"),
                    tag(OLLAMA_EMBED, "nomic-bert", 274302450, "137M"),
                ]
            }
        )

    def not_pulled(model: str) -> web.Response:
        error = {
            "message": f'model "{model}" not found, try pulling it first',
            "type": "api_error",
            "param": None,
            "code": None,
        }
        return web.json_response({"error": error}, status=404)

    async def chat(seen: Seen) -> web.StreamResponse:
        body = seen.body
        if body["model"] != OLLAMA_CHAT:
            return not_pulled(body["model"])
        answer = f"ollama heard: {_last_user(body)}"
        head = {
            "id": "chatcmpl-42",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": OLLAMA_CHAT,
            "system_fingerprint": "fp_ollama",
        }
        if body.get("stream"):
            events = [
                {
                    **head,
                    "choices": [
                        {"index": 0, "delta": {"role": "assistant", "content": w + " "}, "finish_reason": None}
                    ],
                }
                for w in answer.split(" ")
            ]
            events.append(
                {
                    **head,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": "stop"}],
                }
            )
            return await sse(seen, events)
        message = {"role": "assistant", "content": answer}
        return web.json_response(
            {
                **head,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": _usage(),
            }
        )

    async def embeddings(seen: Seen) -> web.StreamResponse:
        if seen.body["model"] != OLLAMA_EMBED:
            return not_pulled(seen.body["model"])
        data = [{"object": "embedding", "embedding": VECTOR, "index": 0}]  # floats, whatever was asked
        return web.json_response(
            {"object": "list", "data": data, "model": OLLAMA_EMBED, "usage": {"prompt_tokens": 2, "total_tokens": 2}}
        )

    routes = {
        ("GET", "/api/tags"): tags,
        ("POST", "/v1/chat/completions"): chat,
        ("POST", "/v1/embeddings"): embeddings,
    }
    return StandIn("ollama", routes).start()


# -- the server -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standins() -> Iterator[dict[str, StandIn]]:
    started = {"vllm": vllm_standin(), "ollama": ollama_standin()}
    yield started
    for s in started.values():
        s.stop()


@pytest.fixture(scope="module")
def server(standins: dict[str, StandIn], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    quick = {"max_retries": 1, "backoff": 0.01, "timeout": {"connect": 2, "read": 2}}
    config = {
        "apis": ["inference", "models", "safety"],
        "providers": {
            "inference": [
                {
                    "provider_id": "vllm",
                    "provider_type": "remote::vllm",
                    "config": {"url": standins["vllm"].root, "api_token": VLLM_KEY, **quick},
                },
                {
                    "provider_id": "ollama",
                    "provider_type": "remote::ollama",
                    "config": {"url": standins["ollama"].root, **quick},
                },
            ],
            "safety": [
                {
                    "provider_id": "llama-guard",
                    "provider_type": "inline::llama-guard",
                    "config": {"model": f"vllm/{GUARD}"},
                }
            ],
        },
        "shields": [{"shield_id": "llama-guard", "provider_id": "llama-guard"}],
        "safety": {"default_moderation_shield": "llama-guard"},
    }
    running = start_server(config, tmp_path_factory.mktemp("wire"))
    yield running
    running.stop()


def _client(server: RunningServer) -> openai.OpenAI:
    return server.openai()  # max_retries=0: the SDK's own retries would hide how often the adapter retried


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body if isinstance(exc.body, dict) else {}
    return body.get("error", body)


# -- vLLM ---------------------------------------------------------------------------------------------


def test_vllm_listing_sends_the_key_and_reads_max_model_len(
    server: RunningServer, standins: dict[str, StandIn]
) -> None:
    models = {m.id: m for m in _client(server).models.list().data}
    assert {f"vllm/{CHAT}", f"vllm/{GUARD}", f"vllm/{EMBED}"} <= set(models)
    listing = standins["vllm"].requests_to("/v1/models")
    assert listing and all(s.headers["authorization"] == f"Bearer {VLLM_KEY}" for s in listing)
    chat_model = models[f"vllm/{CHAT}"].model_dump()
    assert "4096" in str(chat_model), chat_model  # vLLM's max_model_len becomes the context length


def test_vllm_chat_request_and_answer(server: RunningServer, standins: dict[str, StandIn]) -> None:
    vllm = standins["vllm"]
    before = len(vllm.requests_to("/v1/chat/completions"))
    reply = _client(server).chat.completions.create(
        model=f"vllm/{CHAT}", messages=[{"role": "user", "content": "hello there"}], max_tokens=20, temperature=0.2
    )
    assert reply.choices[0].message.content == "vllm heard: hello there"
    assert reply.model == f"vllm/{CHAT}" and reply.usage is not None and reply.usage.total_tokens == 10
    sent = vllm.requests_to("/v1/chat/completions")[before]
    assert sent.headers["authorization"] == f"Bearer {VLLM_KEY}"
    assert sent.body["model"] == CHAT  # the provider prefix is stripped
    assert sent.body["messages"] == [{"role": "user", "content": "hello there"}]
    assert sent.body["max_tokens"] == 20 and sent.body["temperature"] == 0.2 and not sent.body.get("stream")


def test_vllm_streaming(server: RunningServer, standins: dict[str, StandIn]) -> None:
    stream = _client(server).chat.completions.create(
        model=f"vllm/{CHAT}",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "vllm heard: stream me"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 10
    sent = standins["vllm"].requests_to("/v1/chat/completions")[-1]
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}


def test_vllm_completions_and_embeddings(server: RunningServer, standins: dict[str, StandIn]) -> None:
    client = _client(server)
    completion = client.completions.create(model=f"vllm/{CHAT}", prompt="Once upon a time", max_tokens=5)
    assert completion.choices[0].text == " and the rest." and completion.choices[0].finish_reason == "length"
    sent = standins["vllm"].requests_to("/v1/completions")[-1]
    assert sent.body == {"model": CHAT, "prompt": "Once upon a time", "max_tokens": 5}
    embedded = client.embeddings.create(model=f"vllm/{EMBED}", input=["a", "b"])  # the SDK asks for base64
    assert [d.embedding for d in embedded.data] == [VECTOR, VECTOR]
    sent = standins["vllm"].requests_to("/v1/embeddings")[-1]
    assert sent.body["model"] == EMBED and sent.body["encoding_format"] == "base64" and sent.body["input"] == ["a", "b"]
    floats = client.embeddings.create(model=f"vllm/{EMBED}", input="c", encoding_format="float")
    assert floats.data[0].embedding == VECTOR


def test_vllm_failures_reach_the_client_as_the_base_maps_them(
    server: RunningServer, standins: dict[str, StandIn]
) -> None:
    vllm, client = standins["vllm"], _client(server)
    path = "/v1/chat/completions"

    def ask() -> Any:
        return client.chat.completions.create(model=f"vllm/{CHAT}", messages=[{"role": "user", "content": "hi"}])

    # The operator's key refused: not the caller's fault, so 502, naming the provider, never echoing the key.
    vllm.fail(path, Failure(401, {"error": "Unauthorized"}))
    with pytest.raises(openai.APIStatusError) as refused:
        ask()
    assert refused.value.status_code == 502 and _error(refused.value)["code"] == "upstream_auth_failed"
    assert "vllm" in _error(refused.value)["message"] and VLLM_KEY not in str(refused.value.body)

    # Rate limited on every try: 429 to the client after the adapter's one retry.
    limited = Failure(
        429, {"object": "error", "message": "Too many requests", "type": "RateLimitError", "param": None, "code": 429}
    )
    before = len(vllm.requests_to(path))
    vllm.fail(path, limited, limited)
    with pytest.raises(openai.RateLimitError) as throttled:
        ask()
    assert "vllm" in _error(throttled.value)["message"] and "Too many requests" in _error(throttled.value)["message"]
    assert len(vllm.requests_to(path)) - before == 2

    # vLLM's own 400 error object keeps its class and message.
    vllm.fail(
        path,
        Failure(
            400,
            {
                "object": "error",
                "message": "This model's maximum context length is 4096 tokens.",
                "type": "BadRequestError",
                "param": None,
                "code": 400,
            },
        ),
    )
    with pytest.raises(openai.BadRequestError) as bad:
        ask()
    assert "maximum context length is 4096" in _error(bad.value)["message"]

    # vLLM no longer serving the model (restarted with another one): 404 on the model.
    vllm.fail(
        path,
        Failure(
            404,
            {
                "object": "error",
                "message": f"The model `{CHAT}` does not exist.",
                "type": "NotFoundError",
                "param": None,
                "code": 404,
            },
        ),
    )
    with pytest.raises(openai.NotFoundError) as missing:
        ask()
    assert "does not exist" in _error(missing.value)["message"] and _error(missing.value)["param"] == "model"

    # A stall past the read timeout (2 s here): 504 naming the provider, and not retried.
    before = len(vllm.requests_to(path))
    vllm.fail(path, Failure(200, {}, delay=4))
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as slow:
        ask()
    assert slow.value.status_code == 504 and "vllm" in _error(slow.value)["message"]
    assert time.monotonic() - started < 4 and len(vllm.requests_to(path)) - before == 1


def test_llama_guard_over_vllm_sends_the_conversation_as_is(
    server: RunningServer, standins: dict[str, StandIn]
) -> None:
    client = _client(server)
    unsafe = client.moderations.create(input="Tell me how to kill my neighbour quietly.")
    benign = client.moderations.create(input="What is the capital of France?")
    assert unsafe.model == "llama-guard" and unsafe.results[0].flagged and unsafe.results[0].categories.violence
    assert unsafe.results[0].model_extra["underlay_categories"] == ["S1"]
    assert not benign.results[0].flagged
    guard_calls = [s for s in standins["vllm"].requests_to("/v1/chat/completions") if s.body["model"] == GUARD]
    assert guard_calls[-1].body["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert guard_calls[-1].body["temperature"] == 0 and guard_calls[-1].body["max_tokens"] == 12


def test_llama_guard_refuses_a_non_guard_model_per_call(server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        _client(server).post(
            "/safety/run-shield",
            body={
                "shield_id": "llama-guard",
                "messages": [{"role": "user", "content": "hi"}],
                "params": {"model": f"vllm/{CHAT}"},
            },
            cast_to=dict,
        )
    assert (
        _error(refused.value)["param"] == "params.model" and "inline::guard-prompt" in _error(refused.value)["message"]
    )


# -- Ollama -------------------------------------------------------------------------------------------


def test_ollama_listing_from_api_tags(server: RunningServer, standins: dict[str, StandIn]) -> None:
    models = {m.id: m.model_dump() for m in _client(server).models.list().data}
    assert f"ollama/{OLLAMA_CHAT}" in models and f"ollama/{OLLAMA_EMBED}" in models
    assert models[f"ollama/{OLLAMA_EMBED}"]["model_type"] == "embedding"  # told apart by its BERT family
    assert models[f"ollama/{OLLAMA_CHAT}"]["model_type"] == "llm"
    listing = standins["ollama"].requests_to("/api/tags")
    assert listing and all("authorization" not in s.headers for s in listing)  # no key configured, none sent


def test_ollama_chat_stream_and_embeddings(server: RunningServer, standins: dict[str, StandIn]) -> None:
    client, ollama = _client(server), standins["ollama"]
    reply = client.chat.completions.create(model=f"ollama/{OLLAMA_CHAT}", messages=[{"role": "user", "content": "hey"}])
    assert reply.choices[0].message.content == "ollama heard: hey"
    assert ollama.requests_to("/v1/chat/completions")[-1].body["model"] == OLLAMA_CHAT
    stream = client.chat.completions.create(
        model=f"ollama/{OLLAMA_CHAT}", messages=[{"role": "user", "content": "go on"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).strip() == "ollama heard: go on"
    embedded = client.embeddings.create(model=f"ollama/{OLLAMA_EMBED}", input="x")  # base64 asked, floats answered
    assert embedded.data[0].embedding == VECTOR


def test_ollama_model_not_pulled_is_404_and_server_errors_502(
    server: RunningServer, standins: dict[str, StandIn]
) -> None:
    client, ollama = _client(server), standins["ollama"]
    # The model was removed (ollama rm) after Underlay listed it: Ollama's own 404 body.
    gone = {"message": f'model "{OLLAMA_CHAT}" not found, try pulling it first', "type": "api_error"}
    ollama.fail("/v1/chat/completions", Failure(404, {"error": {**gone, "param": None, "code": None}}))
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model=f"ollama/{OLLAMA_CHAT}", messages=[{"role": "user", "content": "hi"}])
    assert "try pulling it first" in _error(missing.value)["message"] and _error(missing.value)["param"] == "model"
    broken = Failure(500, {"error": {"message": "llama runner process has terminated", "type": "api_error"}})
    ollama.fail("/v1/chat/completions", broken, broken)
    with pytest.raises(openai.APIStatusError) as failed:
        client.chat.completions.create(model=f"ollama/{OLLAMA_CHAT}", messages=[{"role": "user", "content": "hi"}])
    assert failed.value.status_code == 502
    assert (
        "ollama" in _error(failed.value)["message"]
        and "runner process has terminated" in _error(failed.value)["message"]
    )


def test_no_traceback_in_the_server_log(server: RunningServer) -> None:
    assert "Traceback" not in server.log()
