"""inline::guard-prompt and inline::llama-guard: verdict parsing, the prompt, excluded categories, the
unparseable policy, and llama-guard's refusal of models that are not Llama Guard models."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from underlay.api.errors import InvalidRequestError, UpstreamError
from underlay.api.inference import ChatCompletion, ChatCompletionRequest, Choice, ResponseMessage
from underlay.api.safety import Shield, ShieldMessage, moderation_result
from underlay.core.config import ConfigError
from underlay.providers.safety.guard import llama_guard
from underlay.providers.safety.guard.prompt import (
    HAZARDS,
    Config,
    GuardPromptSafetyProvider,
    guard_prompt,
    parse_verdict,
)


@pytest.mark.parametrize(
    ("text", "safe", "codes"),
    [
        ("safe", True, []),
        ("  Safe\n", True, []),
        ("SAFE.", True, []),
        ("unsafe\nS1", False, ["S1"]),
        ("unsafe\nS1,S10", False, ["S1", "S10"]),
        ("Unsafe\n s9 , s1 ", False, ["S9", "S1"]),
        ("unsafe S11", False, ["S11"]),
        ("**unsafe**\nS2, S2, S99", False, ["S2"]),
        ("unsafe", False, []),
        ("", None, []),
        ("I think this is fine", None, []),
        ("safety first", None, []),
        ("12345", None, []),
    ],
)
def test_parse_verdict(text: str, safe: bool | None, codes: list[str]) -> None:
    verdict = parse_verdict(text)
    assert verdict.safe is safe
    assert verdict.categories == codes


def test_prompt_lists_categories_and_targets_last_role() -> None:
    messages = [ShieldMessage(role="user", content="hi"), ShieldMessage(role="assistant", content="hello")]
    prompt = guard_prompt(messages, {k: v for k, v in HAZARDS.items() if k != "S6"})
    assert "S14: Code Interpreter Abuse." in prompt and "S6:" not in prompt
    assert 'Agent reply: "hello"' in prompt and "User: hi" in prompt and "agent's reply" in prompt
    alone = guard_prompt(messages[:1], HAZARDS)
    assert "Earlier conversation" not in alone and 'Message: "hi"' in alone


class _FixedModel:
    """An inference router stand-in that always answers ``reply`` and records the request."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.requests: list[ChatCompletionRequest] = []

    async def openai_chat_completion(self, params: ChatCompletionRequest) -> Any:
        self.requests.append(params)
        message = ResponseMessage(content=self.reply)
        return ChatCompletion(
            id="c", created=0, model=params.model, choices=[Choice(index=0, message=message, finish_reason="stop")]
        )


def _run(reply: str, **config: Any) -> Any:
    provider = GuardPromptSafetyProvider("guard", Config(model="m", **config), _FixedModel(reply))
    shield = Shield(identifier="g", provider_id="guard", provider_resource_id="g")
    return asyncio.run(provider.run_shield(shield, [ShieldMessage(role="user", content="x")], {}))


def test_unsafe_maps_onto_openai_categories() -> None:
    violation = _run("unsafe\nS10,S1").violation
    assert violation is not None and violation.metadata["underlay_categories"] == ["S10", "S1"]
    result = moderation_result(violation)
    assert result.flagged and result.categories["hate"] and result.categories["violence"]
    assert not result.categories["sexual"] and result.category_scores["hate"] == 1.0


def test_excluded_categories_pass() -> None:
    assert _run("unsafe\nS6", excluded_categories=["S6"]).violation is None
    assert _run("unsafe\nS6,S2", excluded_categories=["S6"]).violation.metadata["underlay_categories"] == ["S2"]


def test_unparseable_follows_policy() -> None:
    with pytest.raises(UpstreamError):
        _run("I cannot decide")
    assert _run("I cannot decide", on_unparseable="unsafe").violation is not None
    assert _run("I cannot decide", on_unparseable="safe").violation is None


def test_guard_call_opts_out_of_guardrails() -> None:
    model = _FixedModel("safe")
    provider = GuardPromptSafetyProvider("guard", Config(model="m"), model)
    shield = Shield(identifier="g", provider_id="guard", provider_resource_id="g")
    asyncio.run(provider.run_shield(shield, [ShieldMessage(role="user", content="x")], {}))
    assert model.requests[0].model_extra == {"guardrails": []}
    assert model.requests[0].temperature == 0


# -- inline::llama-guard: only a real Llama Guard model ------------------------------------------------


@pytest.mark.parametrize(
    ("model", "ok"),
    [
        ("vllm/meta-llama/Llama-Guard-3-1B", True),
        ("ollama/llama-guard3:1b", True),
        ("meta-llama/Llama_Guard_4_12B", True),
        ("LlamaGuard-7b", True),
        ("llama-cpp/qwen2.5-coder-0.5b-instruct", False),
        ("meta-llama/Llama-3.1-8B-Instruct", False),
        ("guard", False),
    ],
)
def test_llama_guard_model_names(model: str, ok: bool) -> None:
    assert llama_guard.is_llama_guard_model(model) is ok


def test_llama_guard_over_a_chat_model_is_a_one_line_rename_message() -> None:
    config = llama_guard.Config(model="llama-cpp/qwen2.5-coder-0.5b-instruct")
    with pytest.raises(ConfigError) as info:
        asyncio.run(llama_guard.create_provider("llama-guard", config, {"inference": _FixedModel("safe")}))
    message = str(info.value)
    assert "\n" not in message and "providers.safety[llama-guard].config.model" in message
    assert "inline::guard-prompt" in message and "Llama Guard model" in message


def test_llama_guard_sends_the_conversation_natively_and_refuses_other_models() -> None:
    model = _FixedModel("unsafe\nS1")
    config = llama_guard.Config(model="vllm/meta-llama/Llama-Guard-3-1B")
    provider = asyncio.run(llama_guard.create_provider("lg", config, {"inference": model}))
    shield = Shield(identifier="lg", provider_id="lg", provider_resource_id="lg")
    turns = [ShieldMessage(role="user", content="hi"), ShieldMessage(role="assistant", content="I will hurt you")]
    result = asyncio.run(provider.run_shield(shield, turns, {}))
    assert result.violation is not None and result.violation.metadata["underlay_categories"] == ["S1"]
    sent = model.requests[0]
    assert sent.model == "vllm/meta-llama/Llama-Guard-3-1B"
    assert [(m.role, m.content) for m in sent.messages] == [("user", "hi"), ("assistant", "I will hurt you")]
    with pytest.raises(InvalidRequestError) as info:
        asyncio.run(provider.run_shield(shield, turns, {"model": "llama-cpp/qwen"}))
    assert info.value.param == "params.model" and "inline::guard-prompt" in info.value.message
    assert len(model.requests) == 1  # the refused model was never called
