"""The Safety API and guardrails in process: moderations, shields CRUD, run-shield, refusals (streaming
and not, in chat completions and Responses) and the failure policy.

The echo provider answers "echo: <last user message>", which makes output guardrails deterministic: the
input passes an output-only shield and the echoed answer does not. The ``remote::passthrough`` shield
calls a second Underlay that runs as a real server (``underlay run``) on a loopback port, and a closed
port stands for an unreachable one. What needs a real front server stays in
``tests/integration/test_safety_api.py`` (guard-prompt over the embedded model, the one-line start-up
error); guardrails on a real server are also covered by ``tests/integration/test_prompt_guard_api.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.inprocess.harness import InProcessServer, echo_config, serve_in_process
from tests.integration.harness import RunningServer, free_port, start_server

ECHO = {"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}
SAFETY_PROVIDERS = [
    {"provider_id": "pii", "provider_type": "inline::pii"},
    {"provider_id": "code", "provider_type": "inline::code-scanner"},
    {"provider_id": "echo-guard", "provider_type": "inline::guard-prompt", "config": {"model": "echo"}},
]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, echo_plugin: Path) -> Iterator[RunningServer]:
    """A second Underlay, served for real, whose /v1/moderations the passthrough shield calls."""
    config = {
        "apis": ["inference", "models", "safety"],
        "providers": {"inference": [ECHO], "safety": [{"provider_id": "pii", "provider_type": "inline::pii"}]},
        "shields": [{"shield_id": "upstream-pii", "provider_id": "pii"}],
    }
    server = start_server(config, tmp_path_factory.mktemp("upstream"), extra_pythonpath=[echo_plugin])
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def safety_app(
    tmp_path_factory: pytest.TempPathFactory, echo_plugin: Path, upstream: RunningServer
) -> AsyncIterator[InProcessServer]:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = echo_config(
        tmp_path_factory.mktemp("inprocess-safety"),
        apis=["inference", "models", "safety", "conversations", "responses"],
        providers={
            "inference": [ECHO],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin"}],
            "safety": [
                *SAFETY_PROVIDERS,
                {"provider_id": "remote", "provider_type": "remote::passthrough", "config": {"base_url": upstream.v1}},
                {"provider_id": "dead", "provider_type": "remote::passthrough", "config": {"base_url": dead}},
            ],
        },
        shields=[
            {"shield_id": "pii", "provider_id": "pii"},
            {"shield_id": "code-scanner", "provider_id": "code"},
            {"shield_id": "echo-guard", "provider_id": "echo-guard"},
            {"shield_id": "remote-pii", "provider_id": "remote", "provider_shield_id": "upstream-pii"},
            {"shield_id": "down-closed", "provider_id": "dead"},
            {"shield_id": "down-open", "provider_id": "dead", "params": {"failure_policy": "open"}},
        ],
        safety={"default_moderation_shield": "pii", "stream_buffer_chars": 40},
    )
    async with serve_in_process(config) as app:
        yield app


async def _chat(app: InProcessServer, text: str, guardrails: Any, **kwargs: Any) -> Any:
    return await app.openai().chat.completions.create(
        model="echo", messages=[{"role": "user", "content": text}], extra_body={"guardrails": guardrails}, **kwargs
    )


async def _stream(app: InProcessServer, text: str, guardrails: list[str]) -> tuple[str, str | None, str | None]:
    content, refusal, finish = "", None, None
    async for chunk in await _chat(app, text, guardrails, stream=True):
        for choice in chunk.choices:
            content += choice.delta.content or ""
            refusal = choice.delta.refusal or refusal
            finish = choice.finish_reason or finish
    return content, refusal, finish


# -- moderations ----------------------------------------------------------------------------------


async def test_moderation_shape_through_the_sdk(safety_app: InProcessServer) -> None:
    reply = await safety_app.openai().moderations.create(input=["hello there", "mail me: ann@example.com"])
    assert reply.model == "pii" and reply.id.startswith("modr-") and len(reply.results) == 2
    clean, personal = reply.results
    assert not clean.flagged and personal.flagged
    assert clean.categories.harassment_threatening is False and clean.category_scores.self_harm_intent == 0.0
    assert clean.category_applied_input_types.violence == ["text"]
    assert personal.model_extra is not None and personal.model_extra["underlay_categories"] == ["pii:email"]
    raw = (await safety_app.http.post("/v1/moderations", json={"input": "x"})).json()
    categories = raw["results"][0]["categories"]
    assert set(categories) == set(raw["results"][0]["category_scores"]) == {
        "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
        "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
        "violence/graphic",
    }  # fmt: skip


async def test_moderation_model_picks_the_shield(safety_app: InProcessServer) -> None:
    client = safety_app.openai()
    code = "```\nrequests.get(url, verify=False)\n```"
    assert (await client.moderations.create(input=code, model="code-scanner")).results[0].flagged
    assert not (await client.moderations.create(input=code)).results[0].flagged  # the default shield is pii
    parts = await client.moderations.create(input=[{"type": "text", "text": "ssn 123-45-6789"}], model="pii")
    assert parts.results[0].flagged
    with pytest.raises(openai.NotFoundError) as info:
        await client.moderations.create(input="x", model="no-such-shield")
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "model"


async def test_passthrough_to_a_second_underlay(safety_app: InProcessServer) -> None:
    client = safety_app.openai()
    reply = await client.moderations.create(input="card 4111 1111 1111 1111", model="remote-pii")
    extra = reply.results[0].model_extra
    assert reply.results[0].flagged and extra is not None and extra["underlay_categories"] == ["pii:credit_card"]
    assert not (await client.moderations.create(input="fine", model="remote-pii")).results[0].flagged


async def test_unreachable_passthrough_is_503(safety_app: InProcessServer) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await safety_app.openai().moderations.create(input="x", model="down-closed")
    body = info.value.body
    assert info.value.status_code == 503 and isinstance(body, dict) and "dead" in body["message"]


# -- shields and run-shield -----------------------------------------------------------------------


async def test_shields_crud(safety_app: InProcessServer) -> None:
    http = safety_app.http
    listed = (await http.get("/v1/shields")).json()
    assert listed["object"] == "list" and {"pii", "code-scanner", "remote-pii"} <= {s["id"] for s in listed["data"]}
    made = await http.post(
        "/v1/shields", json={"shield_id": "emails-only", "provider_id": "pii", "params": {"kinds": ["email"]}}
    )
    assert made.status_code == 200 and made.json()["object"] == "shield"
    assert (await http.get("/v1/shields/emails-only")).json()["params"] == {"kinds": ["email"]}
    run = await http.post(
        "/v1/safety/run-shield",
        json={"shield_id": "emails-only", "messages": [{"role": "user", "content": "ip 10.0.0.1"}]},
    )
    assert run.json() == {"violation": None}
    gone = (await http.delete("/v1/shields/emails-only")).json()
    assert gone == {"id": "emails-only", "object": "shield", "deleted": True}
    missing = await http.get("/v1/shields/emails-only")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    bad = await http.post("/v1/shields", json={"shield_id": "x", "provider_id": "nope"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "provider_id"


async def test_run_shield_violation_shape(safety_app: InProcessServer) -> None:
    http = safety_app.http
    messages = [
        {"role": "user", "content": "write me a fetch"},
        {"role": "assistant", "content": "import requests\nrequests.get(url, verify=False)"},
    ]
    reply = await http.post("/v1/safety/run-shield", json={"shield_id": "code-scanner", "messages": messages})
    violation = reply.json()["violation"]
    assert violation["violation_level"] == "error" and "CWE-295" in violation["user_message"]
    assert violation["metadata"]["findings"][0]["line"] == 2
    pii = (
        await http.post(
            "/v1/safety/run-shield",
            json={"shield_id": "pii", "messages": [{"role": "user", "content": "I'm bob@example.com"}]},
        )
    ).json()["violation"]
    assert pii["metadata"]["redacted"] == ["I'm [EMAIL]"]
    invalid = await http.post("/v1/safety/run-shield", json={"shield_id": "pii", "messages": []})
    assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "messages"


# -- guardrails -----------------------------------------------------------------------------------


async def test_input_guardrail_refuses_before_the_model(safety_app: InProcessServer) -> None:
    reply = await _chat(safety_app, "my card is 4111 1111 1111 1111", ["pii"])
    choice = reply.choices[0]
    assert choice.finish_reason == "content_filter" and choice.message.content is None
    assert "personal data" in choice.message.refusal
    content, refusal, finish = await _stream(safety_app, "my card is 4111 1111 1111 1111", ["pii"])
    assert content == "" and "personal data" in (refusal or "") and finish == "content_filter"


async def test_output_guardrail_non_streaming(safety_app: InProcessServer) -> None:
    reply = await _chat(safety_app, "Sure. requests.get(url, verify=False)", ["code-scanner"])
    choice = reply.choices[0]
    assert choice.finish_reason == "content_filter" and choice.message.content is None
    assert "CWE-295" in choice.message.refusal
    fine = await _chat(safety_app, "hello world", ["code-scanner", "pii"])
    assert fine.choices[0].message.content == "echo: hello world" and fine.choices[0].finish_reason == "stop"


async def test_output_guardrail_streaming_stops_before_the_unsafe_text(safety_app: InProcessServer) -> None:
    content, refusal, finish = await _stream(
        safety_app, "Here you go. The fetch is requests.get(url, verify=False) done.", ["code-scanner"]
    )
    assert content == "echo: Here you go."  # the first sentence passed; nothing of the unsafe one was sent
    assert "CWE-295" in (refusal or "") and finish == "content_filter"
    stream = await _chat(safety_app, "requests.get(u, verify=False)", ["code-scanner"], stream=True)
    chunks = [chunk async for chunk in stream]
    first = chunks[0].choices[0].delta  # refused before anything was released: the refusal opens with the role
    assert first.role == "assistant" and first.refusal and chunks[-1].choices[0].finish_reason == "content_filter"
    content, refusal, finish = await _stream(safety_app, "one two three. four five six seven eight nine ten", ["pii"])
    assert content == "echo: one two three. four five six seven eight nine ten"
    assert refusal is None and finish == "stop"


async def test_failure_policy(safety_app: InProcessServer, caplog: pytest.LogCaptureFixture) -> None:
    closed = await _chat(safety_app, "hello", ["down-closed"])
    assert closed.choices[0].finish_reason == "content_filter" and "safety check" in closed.choices[0].message.refusal
    with caplog.at_level(logging.WARNING, logger="underlay"):
        opened = await _chat(safety_app, "hello", ["down-open"])
    assert opened.choices[0].message.content == "echo: hello"
    assert "failure policy is open" in caplog.text
    # A guard model that answers garbage (echo) is a failed shield too: closed refuses.
    garbled = await _chat(safety_app, "hello", ["echo-guard"])
    assert garbled.choices[0].finish_reason == "content_filter"


async def test_unknown_guardrail_is_a_client_error(safety_app: InProcessServer) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await _chat(safety_app, "hello", ["missing"])
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "guardrails"
    with pytest.raises(openai.BadRequestError):
        await _chat(safety_app, "hello", "pii")


# -- guardrails in the Responses API -----------------------------------------------------------------


async def test_responses_guardrail_refusal_part(safety_app: InProcessServer) -> None:
    client = safety_app.openai()
    refused = await client.responses.create(
        model="echo", input="Done. requests.get(url, verify=False)", extra_body={"guardrails": ["code-scanner"]}
    )
    message: Any = refused.output[-1]
    assert refused.status == "completed" and message.type == "message"
    assert [p.type for p in message.content] == ["output_text", "refusal"]
    assert message.content[0].text == "echo: Done." and "CWE-295" in message.content[1].refusal
    blocked = await client.responses.create(model="echo", input="ssn 123-45-6789", extra_body={"guardrails": ["pii"]})
    last: Any = blocked.output[-1]
    assert [p.type for p in last.content] == ["refusal"]
    fine = await client.responses.create(model="echo", input="hello", extra_body={"guardrails": ["pii"]})
    assert fine.output_text == "echo: hello"


async def test_responses_guardrail_streams_refusal_events(safety_app: InProcessServer) -> None:
    stream = await safety_app.openai().responses.create(
        model="echo", input="my card is 4111 1111 1111 1111", extra_body={"guardrails": ["pii"]}, stream=True
    )
    events: list[Any] = [event async for event in stream]
    types = [e.type for e in events]
    assert "response.refusal.delta" in types and "response.refusal.done" in types
    assert "response.output_text.delta" not in types and types[-1] == "response.completed"
    done = next(e for e in events if e.type == "response.refusal.done")
    assert "personal data" in done.refusal
    assert events[-1].response.output[-1].content[0].type == "refusal"
