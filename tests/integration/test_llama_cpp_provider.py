"""The ``inline::llama-cpp`` provider called directly with contract models, on real GGUF models.

SmolLM2 135M (fast) covers plain-token behaviour: sampling, stop, seeds, logprobs, streaming,
concurrency, cancellation, legacy completions. Qwen2.5-Coder 0.5B covers what needs a capable model:
tool calls in every ``tool_choice`` mode, multi-turn tool use, JSON schema output and
fill-in-the-middle. Models are loaded once per module and shared. Tests compare the provider with
itself (stop, seed, streaming vs not) rather than with fixed text, so they hold for any output.

The first block (template conversion, GGUF metadata) loads no weights and is not marked slow.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from underlay.api.errors import (
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    ServiceUnavailableError,
    UpstreamError,
)
from underlay.api.inference import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    EmbeddingsRequest,
)
from underlay.providers.inline.inference.llama_cpp import LlamaCppConfig, create_provider
from underlay.providers.inline.inference.llama_cpp.chat_template import ChatTemplate, build_template_messages
from underlay.providers.inline.inference.llama_cpp.gguf import GGUFError, read_metadata
from underlay.providers.inline.inference.llama_cpp.provider import LlamaCppInferenceProvider
from underlay.shared.packaged_models import resolve_model_path

QWEN = "qwen2.5-coder-0.5b-instruct"
SMOL = "smollm2-135m-instruct"
SMOL_TINY = "smol-tiny"  # the same weights with a 256-token context, for context-limit tests

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current local time in a timezone",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"]},
    },
}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK_WEATHER = [{"role": "user", "content": "What's the weather in Paris right now?"}]


def chat_request(**kwargs: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(kwargs)


async def chat(provider: LlamaCppInferenceProvider, **kwargs: Any) -> ChatCompletion:
    result = await provider.openai_chat_completion(chat_request(**kwargs))
    assert isinstance(result, ChatCompletion)
    return result


async def chat_stream(provider: LlamaCppInferenceProvider, **kwargs: Any) -> list[ChatCompletionChunk]:
    result = await provider.openai_chat_completion(chat_request(stream=True, **kwargs))
    assert isinstance(result, AsyncIterator)
    return [chunk async for chunk in result]


async def complete(provider: LlamaCppInferenceProvider, **kwargs: Any) -> Completion:
    result = await provider.openai_completion(CompletionRequest.model_validate(kwargs))
    assert isinstance(result, Completion)
    return result


def check_calls(message: Any) -> list[Any]:
    """Every returned call is well-formed: an id, a declared name, arguments valid for its schema."""
    calls = message.tool_calls or []
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function"
        assert call.function.name in SCHEMAS
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    return calls


def streamed_calls(chunks: list[ChatCompletionChunk]) -> tuple[dict[int, dict[str, Any]], str | None, str]:
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    content = ""
    for chunk in chunks:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            content += choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                slot = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = delta.id or slot["id"]
                if delta.function:
                    slot["name"] += delta.function.get("name") or ""
                    slot["arguments"] += delta.function.get("arguments") or ""
    return calls, finish, content


# --------------------------------------------------------------------------------------------------
# No weights loaded


@pytest.fixture(scope="module")
def smol_path() -> Path:
    return resolve_model_path(SMOL)


def test_gguf_metadata_reads_the_header_only(smol_path: Path, tmp_path: Path) -> None:
    meta = read_metadata(smol_path, ["general.architecture", "llama.context_length", "tokenizer.chat_template"])
    assert meta["general.architecture"] == "llama" and meta["llama.context_length"] == 8192
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    everything = read_metadata(smol_path)
    assert len(everything["tokenizer.ggml.tokens"]) == 49152
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(GGUFError):
        read_metadata(junk)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(smol_path.read_bytes()[:2000])
    with pytest.raises(GGUFError):
        read_metadata(truncated)


def test_messages_render_through_the_models_own_templates(smol_path: Path) -> None:
    qwen_source = read_metadata(resolve_model_path(QWEN), ["tokenizer.chat_template"])["tokenizer.chat_template"]
    smol_source = read_metadata(smol_path, ["tokenizer.chat_template"])["tokenizer.chat_template"]
    qwen, smol = ChatTemplate(qwen_source), ChatTemplate(smol_source)
    assert qwen.supports_tools and not smol.supports_tools
    request = chat_request(
        model="m",
        tools=[WEATHER],
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather"}, {"type": "text", "text": "in Oslo?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": -3}'},
        ],
    )
    native = build_template_messages(request.messages, model="m", native_tools=True)
    prompt = qwen.render(native, tools=[WEATHER])
    assert prompt.startswith("<|im_start|>system\nBe brief.\n\n# Tools")
    assert "Weather\nin Oslo?" in prompt
    # arguments are rendered as JSON once, not as a JSON-encoded string
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in prompt
    assert '<tool_response>\n{"temp_c": -3}\n</tool_response>' in prompt
    assert prompt.endswith("<|im_start|>assistant\n")

    plain = build_template_messages(request.messages, model="m", native_tools=False, tools=request.tools or [])
    text = smol.render(plain)
    assert "<tools>" in text and "get_weather" in text.split("<|im_end|>")[0]  # described in the system turn
    assert '{"name": "get_weather", "arguments": {"city": "Oslo"}}' in text
    assert 'Tool result for get_weather (call id call_1):\n{"temp_c": -3}' in text
    assert "<|im_start|>tool" not in text


def test_non_text_parts_are_refused_with_the_field_named() -> None:
    request = chat_request(
        model="m",
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ],
    )
    with pytest.raises(InvalidRequestError) as info:
        build_template_messages(request.messages, model="m", native_tools=True)
    assert info.value.param == "messages[1].content[1]" and "images" in info.value.message


def test_config_accepts_packaged_names_paths_and_rejects_nonsense() -> None:
    config = LlamaCppConfig(models=[{"name": QWEN}, {"name": "mine", "path": "/x.gguf", "n_ctx": 1024}])
    assert config.models[0].packaged == QWEN and config.models[0].n_ctx == 4096
    assert config.models[0].n_threads >= 1 and not config.preload
    with pytest.raises(ValueError):
        LlamaCppConfig(models=[{"name": "unknown-thing"}])
    with pytest.raises(ValueError):
        LlamaCppConfig(models=[{"name": "a", "path": "/x"}, {"name": "a", "path": "/y"}])


async def test_listing_models_loads_no_weights(smol_path: Path) -> None:
    provider = await create_provider(
        "llama",
        LlamaCppConfig(models=[{"name": QWEN}, {"name": "local-smol", "path": str(smol_path), "n_ctx": 1024}]),
        {},
    )
    await provider.initialize()
    try:
        models = {m.provider_resource_id: m for m in await provider.list_provider_models()}
        assert models[QWEN].metadata["context_length"] == 4096 and models[QWEN].metadata["supports_tools"] is True
        local = models["local-smol"].metadata
        assert local["context_length"] == 1024 and local["supports_tools"] is False
        assert local["trained_context_length"] == 8192 and local["architecture"] == "llama"
        health = await provider.health()
        assert not any(m["loaded"] for m in health["models"].values())
    finally:
        await provider.shutdown()


# --------------------------------------------------------------------------------------------------
# Real models


@pytest.fixture(scope="module")
async def provider() -> AsyncIterator[LlamaCppInferenceProvider]:
    config = LlamaCppConfig(
        models=[
            {"name": QWEN, "n_ctx": 4096},
            {"name": SMOL, "n_ctx": 2048},
            {"name": SMOL_TINY, "packaged": SMOL, "n_ctx": 256},
        ]
    )
    p = await create_provider("llama", config, {})
    await p.initialize()
    yield p
    await p.shutdown()


@pytest.mark.slow
async def test_chat_usage_length_and_counts(provider: LlamaCppInferenceProvider) -> None:
    start = time.perf_counter()
    first = await chat(provider, model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    print(f"SmolLM2 load + first reply: {time.perf_counter() - start:.2f}s")
    reply = await chat(
        provider,
        model=SMOL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": [{"type": "text", "text": "Write a long story about a dragon."}]},
        ],
        max_completion_tokens=7,
        temperature=0,
        logprobs=True,
        user="u-1",
        metadata={"k": "v"},
        store=True,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "length" and reply.usage.completion_tokens == 7
    assert len(choice.logprobs.content) == 7  # completion tokens are true token counts
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 7
    assert reply.usage.prompt_tokens > first.usage.prompt_tokens  # system + developer turns are counted
    assert reply.id.startswith("chatcmpl-") and reply.model == SMOL and reply.object == "chat.completion"


@pytest.mark.slow
async def test_stop_sequences_cut_and_are_excluded(provider: LlamaCppInferenceProvider) -> None:
    messages = [{"role": "user", "content": "List five fruits, one per line."}]
    full = await chat(provider, model=SMOL, messages=messages, temperature=0, max_tokens=40)
    text = full.choices[0].message.content
    assert len(text) > 10
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = await chat(provider, model=SMOL, messages=messages, temperature=0, max_tokens=40, stop=[stop, "zzzz"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]
    chunks = await chat_stream(provider, model=SMOL, messages=messages, temperature=0, max_tokens=40, stop=stop)
    _, finish, streamed = streamed_calls(chunks)
    assert streamed == text[: text.index(stop)] and finish == "stop"


@pytest.mark.slow
async def test_seed_n_and_history_independence(provider: LlamaCppInferenceProvider) -> None:
    messages = [{"role": "user", "content": "Say something about the sea."}]
    kwargs: dict[str, Any] = {"model": SMOL, "messages": messages, "temperature": 1.0, "max_tokens": 20}
    first = await chat(provider, seed=7, **kwargs)
    # something else runs on the model in between; the answer must not depend on it
    await chat(provider, model=SMOL, messages=[{"role": "user", "content": "Something else entirely."}], max_tokens=5)
    second = await chat(provider, seed=7, **kwargs)
    assert first.choices[0].message.content == second.choices[0].message.content
    others = {(await chat(provider, seed=s, **kwargs)).choices[0].message.content for s in (1, 2, 3)}
    assert len(others) > 1  # different seeds sample differently
    several = await chat(provider, seed=7, n=3, logprobs=True, **kwargs)
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert several.choices[0].message.content == first.choices[0].message.content  # choice i uses seed + i
    assert several.usage.prompt_tokens == first.usage.prompt_tokens  # the prompt is counted once
    assert several.usage.completion_tokens == sum(len(c.logprobs.content) for c in several.choices)


@pytest.mark.slow
async def test_streaming_matches_and_reports_usage(provider: LlamaCppInferenceProvider) -> None:
    kwargs: dict[str, Any] = {
        "model": SMOL,
        "messages": [{"role": "user", "content": "Say something about the sea."}],
        "temperature": 0.9,
        "seed": 11,
        "max_tokens": 24,
    }
    whole = await chat(provider, **kwargs)
    chunks = await chat_stream(provider, stream_options={"include_usage": True}, **kwargs)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    no_usage = await chat_stream(provider, **kwargs)
    assert all(c.usage is None for c in no_usage)


@pytest.mark.slow
async def test_logprobs_bias_and_penalties(provider: LlamaCppInferenceProvider) -> None:
    kwargs: dict[str, Any] = {"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6}
    reply = await chat(provider, logprobs=True, top_logprobs=3, temperature=0, **kwargs)
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    assert "".join(e.token for e in entries) == reply.choices[0].message.content
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3 and bytes(entry.bytes).decode() == entry.token
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob >= entry.top_logprobs[2].logprob
        assert abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-6  # greedy takes the top token
    # banning the greedy first token changes the first token
    engine = provider._pools[SMOL]._slots[0].engine  # look up the id of the token the model chose
    assert engine is not None
    first_id = engine.tokenize(entries[0].token, add_bos=False, special=False)[0]
    banned = await chat(provider, logprobs=True, temperature=0, logit_bias={str(first_id): -100}, **kwargs)
    assert banned.choices[0].logprobs.content[0].token != entries[0].token
    with pytest.raises(InvalidRequestError) as info:
        await chat(provider, logit_bias={"99999999": 5}, **kwargs)
    assert info.value.param == "logit_bias"
    long = {"model": SMOL, "messages": [{"role": "user", "content": "Repeat the word cat many times."}]}
    plain = await chat(provider, temperature=0, max_tokens=30, **long)
    penalised = await chat(provider, temperature=0, max_tokens=30, frequency_penalty=2.0, presence_penalty=2.0, **long)
    assert penalised.choices[0].message.content != plain.choices[0].message.content


@pytest.mark.slow
async def test_context_limits(provider: LlamaCppInferenceProvider) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await chat(provider, model=SMOL_TINY, messages=[{"role": "user", "content": "word " * 400}])
    assert "tokens" in info.value.message and "256" in info.value.message
    assert info.value.code == "context_length_exceeded"
    # max_tokens beyond the room left is clamped; banning end-of-turn makes the model use all of it
    reply = await chat(
        provider,
        model=SMOL_TINY,
        messages=[{"role": "user", "content": "Tell me a story."}],
        max_tokens=100_000,
        temperature=0,
        logit_bias={"2": -100, "0": -100},
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.total_tokens == 256


@pytest.mark.slow
async def test_legacy_completions(provider: LlamaCppInferenceProvider) -> None:
    prompt = "The capital of France is"
    plain = await complete(provider, model=SMOL, prompt=prompt, max_tokens=5, temperature=0)
    assert plain.object == "text_completion" and plain.usage.completion_tokens <= 5
    echoed = await complete(provider, model=SMOL, prompt=prompt, max_tokens=5, temperature=0, echo=True, logprobs=2)
    choice = echoed.choices[0]
    assert choice.text == prompt + plain.choices[0].text
    lp = choice.logprobs
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing predicts the first token
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == echoed.usage.prompt_tokens + 5
    assert "".join(lp.tokens) == choice.text
    assert all(choice.text[off:].startswith(tok) for tok, off in zip(lp.tokens, lp.text_offset, strict=True))
    assert all(len(t) <= 3 for t in lp.top_logprobs[1:])  # top 2 plus the sampled token
    several = await complete(provider, model=SMOL, prompt=["One", "Two"], n=2, max_tokens=3, seed=1)
    assert [c.index for c in several.choices] == [0, 1, 2, 3]
    ids = await complete(provider, model=SMOL, prompt=[504, 3575, 282], max_tokens=3, temperature=0)
    assert ids.usage.prompt_tokens == 3
    best = await complete(provider, model=SMOL, prompt=prompt, max_tokens=4, best_of=3, n=1, seed=3)
    assert len(best.choices) == 1
    stream = await provider.openai_completion(
        CompletionRequest(
            model=SMOL, prompt=prompt, max_tokens=5, temperature=0, stream=True, stream_options={"include_usage": True}
        )
    )
    chunks = [c async for c in stream]  # type: ignore[union-attr]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == plain.choices[0].text
    assert chunks[-1].usage == plain.usage
    stopped = await complete(provider, model=SMOL, prompt=prompt, max_tokens=5, temperature=0, stop=[" "])
    assert " " not in stopped.choices[0].text
    with pytest.raises(InvalidRequestError) as info:
        await complete(provider, model=SMOL, prompt="x", suffix="y", max_tokens=3)
    assert info.value.param == "suffix" and "suffix" in info.value.message
    with pytest.raises(InvalidRequestError):
        await complete(provider, model=SMOL, prompt="x", n=2, best_of=1)


@pytest.mark.slow
async def test_errors_are_typed(provider: LlamaCppInferenceProvider, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        await chat(provider, model="nope", messages=[{"role": "user", "content": "x"}])
    assert info.value.param == "model" and SMOL in info.value.message
    with pytest.raises(InvalidRequestError) as emb:
        await provider.openai_embeddings(EmbeddingsRequest(model=SMOL, input="x"))
    assert "sentence-transformers" in emb.value.message
    with pytest.raises(InvalidRequestError) as img:
        await chat(
            provider,
            model=SMOL,
            messages=[
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}
            ],
        )
    assert img.value.param == "messages[0].content[0]"

    junk = tmp_path / "broken.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 64)
    broken = await create_provider(
        "broken",
        LlamaCppConfig(
            models=[{"name": "missing", "path": str(tmp_path / "nowhere.gguf")}, {"name": "junk", "path": str(junk)}]
        ),
        {},
    )
    await broken.initialize()
    try:
        for name in ("missing", "junk"):
            with pytest.raises(ServiceUnavailableError) as unavailable:
                await chat(broken, model=name, messages=[{"role": "user", "content": "x"}])
            assert unavailable.value.status_code == 503 and "Provider 'broken'" in unavailable.value.message
        assert "no GGUF file" in str(unavailable.value) or "could not be loaded" in str(unavailable.value)
        models = {m.provider_resource_id: m.metadata for m in await broken.list_provider_models()}
        assert models["missing"]["available"] is False
    finally:
        await broken.shutdown()
    preload = await create_provider(
        "pre", LlamaCppConfig(preload=True, models=[{"name": "junk", "path": str(junk)}]), {}
    )
    with pytest.raises(ServiceUnavailableError):
        await preload.initialize()
    await preload.shutdown()


@pytest.mark.slow
async def test_concurrent_requests_stay_apart_and_loop_stays_free(provider: LlamaCppInferenceProvider) -> None:
    prompts = ["Repeat exactly: apple", "Repeat exactly: banana", "Repeat exactly: cherry"]

    async def ask(text: str) -> str:
        reply = await chat(
            provider, model=SMOL, messages=[{"role": "user", "content": text}], temperature=0, max_tokens=12
        )
        return reply.choices[0].message.content or ""

    singles = [await ask(p) for p in prompts]
    gaps: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:  # stands in for /health: it must keep running during generation
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    together = await asyncio.gather(*(ask(p) for p in prompts))
    health = await provider.health()
    stop.set()
    await beat
    assert list(together) == singles
    assert len(gaps) > 10 and max(gaps) < 0.5, f"event loop blocked for {max(gaps):.2f}s"
    assert health["status"] == "OK"


@pytest.mark.slow
async def test_closing_a_stream_stops_generation_and_frees_the_model(provider: LlamaCppInferenceProvider) -> None:
    stream = await provider.openai_chat_completion(
        chat_request(
            model=SMOL,
            messages=[{"role": "user", "content": "Write a very long essay."}],
            max_tokens=1500,
            stream=True,
            logit_bias={"2": -100},
        )
    )
    received = 0
    async for _ in stream:  # type: ignore[union-attr]
        received += 1
        if received == 5:
            break
    await stream.aclose()  # type: ignore[union-attr]
    start = time.perf_counter()
    quick = await chat(provider, model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert quick.choices[0].message.content is not None
    assert time.perf_counter() - start < 10  # not stuck behind 1500 tokens
    health = await provider.health()
    assert health["models"][SMOL]["busy"] == 0


@pytest.mark.slow
async def test_cancelling_a_request_frees_the_model(provider: LlamaCppInferenceProvider) -> None:
    task = asyncio.create_task(
        chat(
            provider,
            model=SMOL,
            messages=[{"role": "user", "content": "Write a very long essay."}],
            max_tokens=1500,
            logit_bias={"2": -100},
        )
    )
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    start = time.perf_counter()
    await chat(provider, model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert time.perf_counter() - start < 10


@pytest.mark.slow
async def test_streaming_several_choices(provider: LlamaCppInferenceProvider) -> None:
    kwargs: dict[str, Any] = {
        "model": SMOL,
        "messages": [{"role": "user", "content": "Name an animal."}],
        "n": 2,
        "seed": 5,
        "temperature": 1.0,
        "max_tokens": 10,
    }
    whole = await chat(provider, **kwargs)
    chunks = await chat_stream(provider, **kwargs)
    texts = {0: "", 1: ""}
    finishes = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert finishes == {c.index: c.finish_reason for c in whole.choices}


@pytest.mark.slow
async def test_queue_limit_refuses_instead_of_piling_up(smol_path: Path) -> None:
    p = await create_provider(
        "q", LlamaCppConfig(max_queued_per_model=0, models=[{"name": "s", "path": str(smol_path), "n_ctx": 512}]), {}
    )
    await p.initialize()
    try:
        stream = await p.openai_chat_completion(
            chat_request(
                model="s", messages=[{"role": "user", "content": "Write an essay."}], max_tokens=200, stream=True
            )
        )
        with pytest.raises(RateLimitedError) as info:
            await chat(p, model="s", messages=[{"role": "user", "content": "x"}], max_tokens=2)
        assert info.value.status_code == 429 and "Retry-After" in info.value.headers
        await stream.aclose()  # type: ignore[union-attr]
    finally:
        await p.shutdown()


# --------------------------------------------------------------------------------------------------
# Tools and structured output (Qwen)


@pytest.mark.slow
async def test_tool_choice_modes(provider: LlamaCppInferenceProvider) -> None:
    start = time.perf_counter()
    required = await chat(provider, model=QWEN, messages=ASK_WEATHER, tools=TOOLS, tool_choice="required")
    print(f"Qwen load + first tool call: {time.perf_counter() - start:.2f}s")
    assert required.choices[0].finish_reason == "tool_calls"
    assert required.choices[0].message.content is None
    assert check_calls(required.choices[0].message)
    named = await chat(
        provider,
        model=QWEN,
        messages=ASK_WEATHER,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [c.function.name for c in check_calls(named.choices[0].message)] == ["get_time"]
    none = await chat(provider, model=QWEN, messages=ASK_WEATHER, tools=TOOLS, tool_choice="none", max_tokens=30)
    assert not none.choices[0].message.tool_calls and none.choices[0].message.content
    auto = await chat(provider, model=QWEN, messages=ASK_WEATHER, tools=TOOLS, parallel_tool_calls=False)
    calls = check_calls(auto.choices[0].message)
    assert len(calls) <= 1
    if calls:
        assert auto.choices[0].finish_reason == "tool_calls"
    chatter = await chat(
        provider,
        model=QWEN,
        messages=[{"role": "user", "content": "Hi! How are you today?"}],
        tools=TOOLS,
        temperature=0,
        max_tokens=40,
    )
    assert chatter.choices[0].message.content and not chatter.choices[0].message.tool_calls


@pytest.mark.slow
async def test_tools_on_a_template_without_tool_support(provider: LlamaCppInferenceProvider) -> None:
    reply = await chat(provider, model=SMOL, messages=ASK_WEATHER, tools=TOOLS, tool_choice="required")
    calls = check_calls(reply.choices[0].message)
    assert calls and reply.choices[0].finish_reason == "tool_calls"
    assert len({(c.function.name, c.function.arguments) for c in calls}) == len(calls)  # no repeats


@pytest.mark.slow
async def test_streamed_tool_calls(provider: LlamaCppInferenceProvider) -> None:
    for choice in ("required", "auto"):
        chunks = await chat_stream(
            provider,
            model=QWEN,
            messages=[{"role": "user", "content": "What time is it in Tokyo?"}],
            tools=TOOLS,
            tool_choice=choice,
            temperature=0,
        )
        calls, finish, content = streamed_calls(chunks)
        if choice == "required" or calls:
            assert finish == "tool_calls" and calls
            for slot in calls.values():
                assert slot["id"] and slot["name"] in SCHEMAS
                jsonschema.validate(json.loads(slot["arguments"]), SCHEMAS[slot["name"]])
            assert "<tool_call>" not in content and "{" not in content
        else:
            assert content


@pytest.mark.slow
async def test_multi_turn_tool_use_ends_in_an_answer(provider: LlamaCppInferenceProvider) -> None:
    """Greedy decoding throughout: whether a 0.5B model answers or calls again after a tool result is
    a sampling outcome, and this test is about the provider's handling of the turn, not about luck."""
    messages: list[Any] = [{"role": "user", "content": "What's the weather in Oslo?"}]
    first = await chat(provider, model=QWEN, messages=messages, tools=[WEATHER], tool_choice="required", temperature=0)
    call = check_calls(first.choices[0].message)[0]
    messages.append({"role": "assistant", "content": None, "tool_calls": [call.model_dump()]})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": -3, "sky": "snow"}'})
    for choice in ("auto", "none"):
        final = await chat(
            provider,
            model=QWEN,
            messages=messages,
            tools=[WEATHER],
            tool_choice=choice,
            max_tokens=60,
            temperature=0,
        )
        message = final.choices[0].message
        assert final.choices[0].finish_reason in ("stop", "length")
        assert message.content and not message.tool_calls, message
        assert '"name"' not in message.content
    streamed = await chat_stream(provider, model=QWEN, messages=messages, tools=[WEATHER], max_tokens=60, temperature=0)
    calls, _, content = streamed_calls(streamed)
    assert not calls and content and "{" not in content


@pytest.mark.slow
async def test_json_object_and_schemas(provider: LlamaCppInferenceProvider) -> None:
    obj = await chat(
        provider,
        model=QWEN,
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        response_format={"type": "json_object"},
        max_tokens=300,
        temperature=0,  # greedy, so the object always closes within the budget
    )
    assert obj.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(obj.choices[0].message.content), dict)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0},  # not enforced by the grammar: validated after
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}
    ask = [{"role": "user", "content": "Invent a person."}]
    reply = await chat(provider, model=QWEN, messages=ask, response_format=fmt, max_tokens=120)
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    chunks = await chat_stream(provider, model=QWEN, messages=ask, response_format=fmt, max_tokens=120)
    _, finish, content = streamed_calls(chunks)
    assert finish == "stop"
    jsonschema.validate(json.loads(content), schema)
    with pytest.raises(InvalidRequestError) as info:
        await chat(
            provider,
            model=QWEN,
            messages=ask,
            response_format={"type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "objekt"}}},
        )
    assert info.value.param == "response_format.json_schema.schema"
    with pytest.raises(InvalidRequestError) as info:
        bad_tool = {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {"type": "object", "properties": {"a": {"$ref": "https://example.com/schema"}}},
            },
        }
        await chat(provider, model=QWEN, messages=ask, tools=[bad_tool], tool_choice="required")
    assert info.value.param == "tools[0].function.parameters"


@pytest.mark.slow
async def test_strict_schema_that_cannot_be_met_is_an_upstream_error(provider: LlamaCppInferenceProvider) -> None:
    """No integer is both in [1, 2] and a multiple of 3: the grammar can keep the range but not the
    multiple, so every attempt fails validation whatever the model samples."""
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 2, "multipleOf": 3}},
        "required": ["n"],
        "additionalProperties": False,
    }
    with pytest.raises(UpstreamError) as info:
        await chat(
            provider,
            model=QWEN,
            messages=[{"role": "user", "content": "Pick a small number."}],
            max_tokens=20,
            temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema, "strict": True}},
        )
    assert info.value.code == "schema_mismatch" and "3 attempts" in info.value.message


@pytest.mark.slow
async def test_fill_in_the_middle(provider: LlamaCppInferenceProvider) -> None:
    fim = await complete(
        provider,
        model=QWEN,
        prompt="def add(a, b):\n    ",
        suffix="\n\nprint(add(1, 2))\n",
        max_tokens=16,
        temperature=0,
    )
    assert "a + b" in fim.choices[0].text


@pytest.mark.slow
async def test_qwen_decode_speed(provider: LlamaCppInferenceProvider) -> None:
    """Not an assertion on speed (the machine is shared); prints tokens/s for the report."""
    await complete(provider, model=QWEN, prompt="Hello", max_tokens=2)
    start = time.perf_counter()
    reply = await complete(
        provider,
        model=QWEN,
        prompt="Write a long essay about computers.\n",
        max_tokens=128,
        temperature=0,
        logit_bias={"151643": -100, "151645": -100},
    )
    seconds = time.perf_counter() - start
    assert reply.usage.completion_tokens == 128
    print(f"Qwen 0.5B: 128 tokens in {seconds:.2f}s = {128 / seconds:.1f} tokens/s (prompt included)")
