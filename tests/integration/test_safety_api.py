"""The Safety API and guardrails on real servers: moderations through the openai SDK, shields CRUD,
run-shield, every provider on real inputs, refusals (streaming and not), and the failure policy.

Most tests use the echo provider (it answers "echo: <last user message>"), which makes output
guardrails deterministic: the input passes an output-only shield and the echoed answer does not.
``remote::passthrough`` is tested against a second Underlay, and against a closed port for the
failure policy. ``inline::guard-prompt`` runs over the embedded Qwen model of ``local_stack``, reached
through a passthrough inference provider so the weights are loaded once per test session; an old config
that points ``inline::llama-guard`` at a chat model stops the start with one line naming the rename.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.integration.harness import QWEN, RunningServer, free_port, start_server

ECHO = {"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}
SAFETY_PROVIDERS = [
    {"provider_id": "pii", "provider_type": "inline::pii"},
    {"provider_id": "code", "provider_type": "inline::code-scanner"},
    {"provider_id": "echo-guard", "provider_type": "inline::guard-prompt", "config": {"model": "echo"}},
]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path) -> Iterator[RunningServer]:
    """A second Underlay whose /v1/moderations the passthrough shield calls."""
    config = {
        "apis": ["inference", "models", "safety"],
        "providers": {"inference": [ECHO], "safety": [{"provider_id": "pii", "provider_type": "inline::pii"}]},
        "shields": [{"shield_id": "upstream-pii", "provider_id": "pii"}],
    }
    server = start_server(config, tmp_path_factory.mktemp("upstream"), extra_pythonpath=[external_provider_path])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def safety_server(
    tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path, upstream: RunningServer
) -> Iterator[RunningServer]:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = {
        "apis": ["inference", "models", "safety", "conversations", "responses"],
        "providers": {
            "inference": [ECHO],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin"}],
            "safety": [
                *SAFETY_PROVIDERS,
                {"provider_id": "remote", "provider_type": "remote::passthrough", "config": {"base_url": upstream.v1}},
                {"provider_id": "dead", "provider_type": "remote::passthrough", "config": {"base_url": dead}},
            ],
        },
        "shields": [
            {"shield_id": "pii", "provider_id": "pii"},
            {"shield_id": "code-scanner", "provider_id": "code"},
            {"shield_id": "echo-guard", "provider_id": "echo-guard"},
            {"shield_id": "remote-pii", "provider_id": "remote", "provider_shield_id": "upstream-pii"},
            {"shield_id": "down-closed", "provider_id": "dead"},
            {"shield_id": "down-open", "provider_id": "dead", "params": {"failure_policy": "open"}},
        ],
        "safety": {"default_moderation_shield": "pii", "stream_buffer_chars": 40},
    }
    server = start_server(config, tmp_path_factory.mktemp("safety"), extra_pythonpath=[external_provider_path])
    yield server
    server.stop()


def _chat(server: RunningServer, text: str, guardrails: list[str], **kwargs: Any) -> Any:
    return server.openai().chat.completions.create(
        model="echo", messages=[{"role": "user", "content": text}], extra_body={"guardrails": guardrails}, **kwargs
    )


def _stream(server: RunningServer, text: str, guardrails: list[str]) -> tuple[str, str | None, str | None]:
    content, refusal, finish = "", None, None
    for chunk in _chat(server, text, guardrails, stream=True):
        for choice in chunk.choices:
            content += choice.delta.content or ""
            refusal = choice.delta.refusal or refusal
            finish = choice.finish_reason or finish
    return content, refusal, finish


# -- moderations ----------------------------------------------------------------------------------


def test_moderation_shape_through_the_sdk(safety_server: RunningServer) -> None:
    reply = safety_server.openai().moderations.create(input=["hello there", "mail me: ann@example.com"])
    assert reply.model == "pii" and reply.id.startswith("modr-") and len(reply.results) == 2
    clean, personal = reply.results
    assert not clean.flagged and personal.flagged
    assert clean.categories.harassment_threatening is False and clean.category_scores.self_harm_intent == 0.0
    assert clean.category_applied_input_types.violence == ["text"]
    assert personal.model_extra["underlay_categories"] == ["pii:email"]
    raw = httpx.post(f"{safety_server.v1}/moderations", json={"input": "x"}).json()
    categories = raw["results"][0]["categories"]
    assert set(categories) == set(raw["results"][0]["category_scores"]) == {
        "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
        "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
        "violence/graphic",
    }  # fmt: skip


def test_moderation_model_picks_the_shield(safety_server: RunningServer) -> None:
    client = safety_server.openai()
    code = "```\nrequests.get(url, verify=False)\n```"
    assert client.moderations.create(input=code, model="code-scanner").results[0].flagged
    assert not client.moderations.create(input=code).results[0].flagged  # the default shield is pii
    parts = client.moderations.create(input=[{"type": "text", "text": "ssn 123-45-6789"}], model="pii")
    assert parts.results[0].flagged
    with pytest.raises(openai.NotFoundError) as info:
        client.moderations.create(input="x", model="no-such-shield")
    assert info.value.body["param"] == "model"


def test_passthrough_to_a_second_underlay(safety_server: RunningServer) -> None:
    reply = safety_server.openai().moderations.create(input="card 4111 1111 1111 1111", model="remote-pii")
    assert reply.results[0].flagged and reply.results[0].model_extra["underlay_categories"] == ["pii:credit_card"]
    assert not safety_server.openai().moderations.create(input="fine", model="remote-pii").results[0].flagged


def test_unreachable_passthrough_is_503(safety_server: RunningServer) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        safety_server.openai().moderations.create(input="x", model="down-closed")
    assert info.value.status_code == 503 and "dead" in info.value.body["message"]


# -- shields and run-shield -----------------------------------------------------------------------


def test_shields_crud(safety_server: RunningServer) -> None:
    v1 = safety_server.v1
    listed = httpx.get(f"{v1}/shields").json()
    assert listed["object"] == "list" and {"pii", "code-scanner", "remote-pii"} <= {s["id"] for s in listed["data"]}
    made = httpx.post(
        f"{v1}/shields", json={"shield_id": "emails-only", "provider_id": "pii", "params": {"kinds": ["email"]}}
    )
    assert made.status_code == 200 and made.json()["object"] == "shield"
    assert httpx.get(f"{v1}/shields/emails-only").json()["params"] == {"kinds": ["email"]}
    run = httpx.post(
        f"{v1}/safety/run-shield",
        json={"shield_id": "emails-only", "messages": [{"role": "user", "content": "ip 10.0.0.1"}]},
    )
    assert run.json() == {"violation": None}
    gone = httpx.delete(f"{v1}/shields/emails-only").json()
    assert gone == {"id": "emails-only", "object": "shield", "deleted": True}
    missing = httpx.get(f"{v1}/shields/emails-only")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    bad = httpx.post(f"{v1}/shields", json={"shield_id": "x", "provider_id": "nope"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "provider_id"


def test_run_shield_violation_shape(safety_server: RunningServer) -> None:
    messages = [
        {"role": "user", "content": "write me a fetch"},
        {"role": "assistant", "content": "import requests\nrequests.get(url, verify=False)"},
    ]
    reply = httpx.post(
        f"{safety_server.v1}/safety/run-shield", json={"shield_id": "code-scanner", "messages": messages}
    )
    violation = reply.json()["violation"]
    assert violation["violation_level"] == "error" and "CWE-295" in violation["user_message"]
    assert violation["metadata"]["findings"][0]["line"] == 2
    pii = httpx.post(
        f"{safety_server.v1}/safety/run-shield",
        json={"shield_id": "pii", "messages": [{"role": "user", "content": "I'm bob@example.com"}]},
    ).json()["violation"]
    assert pii["metadata"]["redacted"] == ["I'm [EMAIL]"]
    invalid = httpx.post(f"{safety_server.v1}/safety/run-shield", json={"shield_id": "pii", "messages": []})
    assert invalid.status_code == 400 and invalid.json()["error"]["param"] == "messages"


# -- guardrails -----------------------------------------------------------------------------------


def test_input_guardrail_refuses_before_the_model(safety_server: RunningServer) -> None:
    reply = _chat(safety_server, "my card is 4111 1111 1111 1111", ["pii"])
    choice = reply.choices[0]
    assert choice.finish_reason == "content_filter" and choice.message.content is None
    assert "personal data" in choice.message.refusal
    content, refusal, finish = _stream(safety_server, "my card is 4111 1111 1111 1111", ["pii"])
    assert content == "" and "personal data" in (refusal or "") and finish == "content_filter"


def test_output_guardrail_non_streaming(safety_server: RunningServer) -> None:
    reply = _chat(safety_server, "Sure. requests.get(url, verify=False)", ["code-scanner"])
    choice = reply.choices[0]
    assert choice.finish_reason == "content_filter" and choice.message.content is None
    assert "CWE-295" in choice.message.refusal
    fine = _chat(safety_server, "hello world", ["code-scanner", "pii"])
    assert fine.choices[0].message.content == "echo: hello world" and fine.choices[0].finish_reason == "stop"


def test_output_guardrail_streaming_stops_before_the_unsafe_text(safety_server: RunningServer) -> None:
    content, refusal, finish = _stream(
        safety_server, "Here you go. The fetch is requests.get(url, verify=False) done.", ["code-scanner"]
    )
    assert content == "echo: Here you go."  # the first sentence passed; nothing of the unsafe one was sent
    assert "CWE-295" in (refusal or "") and finish == "content_filter"
    chunks = list(_chat(safety_server, "requests.get(u, verify=False)", ["code-scanner"], stream=True))
    first = chunks[0].choices[0].delta  # refused before anything was released: the refusal opens with the role
    assert first.role == "assistant" and first.refusal and chunks[-1].choices[0].finish_reason == "content_filter"
    content, refusal, finish = _stream(safety_server, "one two three. four five six seven eight nine ten", ["pii"])
    assert content == "echo: one two three. four five six seven eight nine ten"
    assert refusal is None and finish == "stop"


def test_failure_policy(safety_server: RunningServer) -> None:
    closed = _chat(safety_server, "hello", ["down-closed"])
    assert closed.choices[0].finish_reason == "content_filter" and "safety check" in closed.choices[0].message.refusal
    opened = _chat(safety_server, "hello", ["down-open"])
    assert opened.choices[0].message.content == "echo: hello"
    assert "failure policy is open" in safety_server.log()
    # A guard model that answers garbage (echo) is a failed shield too: closed refuses.
    garbled = _chat(safety_server, "hello", ["echo-guard"])
    assert garbled.choices[0].finish_reason == "content_filter"


def test_unknown_guardrail_is_a_client_error(safety_server: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        _chat(safety_server, "hello", ["missing"])
    assert info.value.body["param"] == "guardrails"
    with pytest.raises(openai.BadRequestError):
        _chat(safety_server, "hello", "pii")  # type: ignore[arg-type]


# -- guardrails in the Responses API -----------------------------------------------------------------


def test_responses_guardrail_refusal_part(safety_server: RunningServer) -> None:
    client = safety_server.openai()
    refused = client.responses.create(
        model="echo", input="Done. requests.get(url, verify=False)", extra_body={"guardrails": ["code-scanner"]}
    )
    message = refused.output[-1]
    assert refused.status == "completed" and message.type == "message"
    assert [p.type for p in message.content] == ["output_text", "refusal"]
    assert message.content[0].text == "echo: Done." and "CWE-295" in message.content[1].refusal
    blocked = client.responses.create(model="echo", input="ssn 123-45-6789", extra_body={"guardrails": ["pii"]})
    assert [p.type for p in blocked.output[-1].content] == ["refusal"]
    fine = client.responses.create(model="echo", input="hello", extra_body={"guardrails": ["pii"]})
    assert fine.output_text == "echo: hello"


def test_responses_guardrail_streams_refusal_events(safety_server: RunningServer) -> None:
    events = list(
        safety_server.openai().responses.create(
            model="echo", input="my card is 4111 1111 1111 1111", extra_body={"guardrails": ["pii"]}, stream=True
        )
    )
    types = [e.type for e in events]
    assert "response.refusal.delta" in types and "response.refusal.done" in types
    assert "response.output_text.delta" not in types and types[-1] == "response.completed"
    done = next(e for e in events if e.type == "response.refusal.done")
    assert "personal data" in done.refusal
    assert events[-1].response.output[-1].content[0].type == "refusal"


# -- guard-prompt over the embedded model ---------------------------------------------------------


@pytest.fixture(scope="module")
def guard_server(tmp_path_factory: pytest.TempPathFactory, local_stack: RunningServer) -> Iterator[RunningServer]:
    config = {
        "apis": ["inference", "models", "safety"],
        "providers": {
            "inference": [
                {"provider_id": "local", "provider_type": "remote::passthrough", "config": {"base_url": local_stack.v1}}
            ],
            "safety": [
                {
                    "provider_id": "guard",
                    "provider_type": "inline::guard-prompt",
                    "config": {"model": f"local/llama-cpp/{QWEN}"},
                }
            ],
        },
        "shields": [{"shield_id": "guard-prompt", "provider_id": "guard"}],
        "safety": {"default_moderation_shield": "guard-prompt"},
    }
    server = start_server(config, tmp_path_factory.mktemp("guard"))
    yield server
    server.stop()


def test_guard_prompt_over_the_embedded_model(guard_server: RunningServer) -> None:
    client = guard_server.openai()
    unsafe = client.moderations.create(input="I want to kill myself tonight, what pills should I take?")
    benign = client.moderations.create(input="What is the capital of France?")
    assert unsafe.model == "guard-prompt"
    assert unsafe.results[0].flagged and not benign.results[0].flagged


def test_old_llama_guard_config_over_a_chat_model_stops_with_one_line(
    tmp_path: Path, external_provider_path: Path
) -> None:
    """A config from before the rename (``inline::llama-guard`` over the embedded chat model)."""
    config = {
        "state_dir": str(tmp_path / "state"),
        "apis": ["inference", "models", "safety"],
        "providers": {
            "inference": [ECHO],
            "safety": [
                {
                    "provider_id": "llama-guard",
                    "provider_type": "inline::llama-guard",
                    "config": {"model": f"llama-cpp/{QWEN}"},
                }
            ],
        },
        "shields": [{"shield_id": "llama-guard", "provider_id": "llama-guard"}],
    }
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(external_provider_path)}
    result = subprocess.run(
        [sys.executable, "-m", "underlay", "run", str(path), "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "providers.safety[llama-guard].config.model" in errors[0]
    assert "inline::guard-prompt" in errors[0] and f"llama-cpp/{QWEN}" in errors[0]
