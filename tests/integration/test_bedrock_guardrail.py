"""remote::bedrock against a loopback ApplyGuardrail endpoint, directly and through a real server's HTTP API.

moto 5.2.5 (the dev dependency) implements only ``InvokeModel`` for bedrock-runtime, not
``ApplyGuardrail``, so :class:`GuardrailStandIn` is a **stand-in**: a small HTTP server on 127.0.0.1
that speaks ApplyGuardrail's REST shape (``POST /guardrail/{id}/version/{version}/apply``, JSON in and
out, errors as ``x-amzn-ErrorType``). It checks what a real endpoint would: the path, the body, and the
SigV4 signature, recomputed here with botocore from the same credentials, so a request that AWS would
reject for its signature fails these tests. Its answers are canned per guardrail id; the point is the
client side: request shape, signing, mapping the assessment, and the error paths.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.integration.harness import RunningServer, free_port, start_server
from underlay.api.errors import ServiceUnavailableError, UpstreamError
from underlay.api.safety import Shield, ShieldMessage
from underlay.providers.remote.safety.bedrock import BedrockSafetyProvider, Config

ACCESS_KEY, SECRET_KEY, REGION = "AKIDSTANDIN0000000000", "stand-in-secret-key", "eu-west-1"

ANSWERS: dict[str, tuple[int, dict[str, Any]]] = {
    "gr-pass": (200, {"action": "NONE", "outputs": [], "assessments": [{}], "usage": {}}),
    "gr-block": (
        200,
        {
            "action": "GUARDRAIL_INTERVENED",
            "actionReason": "Guardrail blocked.",
            "outputs": [{"text": "Sorry, our policy does not allow that."}],
            "assessments": [
                {
                    "contentPolicy": {
                        "filters": [
                            {"type": "HATE", "confidence": "MEDIUM", "action": "BLOCKED", "detected": True},
                            {"type": "PROMPT_ATTACK", "confidence": "HIGH", "action": "BLOCKED", "detected": True},
                        ]
                    },
                    "topicPolicy": {"topics": [{"name": "Investment advice", "type": "DENY", "action": "BLOCKED"}]},
                }
            ],
        },
    ),
    "gr-mask": (
        200,
        {
            "action": "GUARDRAIL_INTERVENED",
            "outputs": [{"text": "mail me at {EMAIL}"}],
            "assessments": [
                {
                    "sensitiveInformationPolicy": {
                        "piiEntities": [{"match": "ann@example.com", "type": "EMAIL", "action": "ANONYMIZED"}]
                    }
                }
            ],
        },
    ),
    "gr-denied": (403, {"message": "User is not authorized to perform: bedrock:ApplyGuardrail"}),
    "gr-missing": (404, {"message": "The guardrail gr-missing was not found."}),
    "gr-throttled": (429, {"message": "Too many requests."}),
}
ERROR_TYPES = {403: "AccessDeniedException", 404: "ResourceNotFoundException", 429: "ThrottlingException"}


class GuardrailStandIn:
    """Stand-in for bedrock-runtime's ApplyGuardrail (moto lacks it): verifies SigV4, answers per guardrail."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.signature_errors: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                stand_in.check_signature(self.path, dict(self.headers.items()), body)
                parts = self.path.strip("/").split("/")
                if len(parts) != 5 or parts[0] != "guardrail" or parts[2] != "version" or parts[4] != "apply":
                    self._reply(404, {"message": f"unknown route {self.path}"}, "UnknownOperationException")
                    return
                stand_in.requests.append({"guardrail": parts[1], "version": parts[3], "body": json.loads(body)})
                status, answer = ANSWERS.get(parts[1], (404, {"message": "no such guardrail"}))
                self._reply(status, answer, ERROR_TYPES.get(status))

            def _reply(self, status: int, payload: dict[str, Any], error_type: str | None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if error_type:
                    self.send_header("x-amzn-ErrorType", error_type)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def check_signature(self, path: str, headers: dict[str, str], body: bytes) -> None:
        """Recompute the SigV4 signature of what arrived; record a mismatch instead of raising in a thread."""
        lower = {k.lower(): v for k, v in headers.items()}
        auth = lower.get("authorization", "")
        try:
            fields = dict(part.strip().split("=", 1) for part in auth.removeprefix("AWS4-HMAC-SHA256 ").split(","))
            signed = fields["SignedHeaders"].split(";")
            request = AWSRequest(
                method="POST", url=f"{self.url}{path}", data=body, headers={h: lower[h] for h in signed}
            )
            request.context["timestamp"] = lower["x-amz-date"]
            signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "bedrock", REGION)
            expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
            scope = f"{ACCESS_KEY}/{lower['x-amz-date'][:8]}/{REGION}/bedrock/aws4_request"
            if fields["Credential"] != scope or fields["Signature"] != expected:
                self.signature_errors.append(f"{path}: bad signature or scope {fields['Credential']}")
        except (KeyError, ValueError) as exc:
            self.signature_errors.append(f"{path}: unsigned or malformed authorization ({exc}): {auth!r}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stand_in() -> Iterator[GuardrailStandIn]:
    server = GuardrailStandIn()
    yield server
    server.close()
    assert server.signature_errors == []


def _config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint_url": url,
        "region": REGION,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "max_attempts": 1,
        "connect_timeout": 2,
        "read_timeout": 5,
        **extra,
    }


async def _run(url: str, guardrail: str, messages: list[ShieldMessage], params: dict[str, Any] | None = None) -> Any:
    provider = BedrockSafetyProvider("bedrock", Config(**_config(url)))
    await provider.initialize()
    try:
        shield = Shield(identifier="g", provider_id="bedrock", provider_resource_id=guardrail)
        return await provider.run_shield(shield, messages, params or {})
    finally:
        await provider.shutdown()


def test_intervention_maps_to_a_violation(stand_in: GuardrailStandIn) -> None:
    messages = [ShieldMessage(role="system", content="be nice"), ShieldMessage(role="user", content="hateful ask")]
    answer = asyncio.run(_run(stand_in.url, "gr-block", messages))
    sent = stand_in.requests[-1]
    assert (sent["guardrail"], sent["version"]) == ("gr-block", "DRAFT")
    assert sent["body"] == {
        "source": "INPUT",
        "content": [{"text": {"text": "be nice"}}, {"text": {"text": "hateful ask"}}],
    }
    violation = answer.violation
    assert violation is not None and violation.violation_level == "error"
    assert violation.user_message == "Sorry, our policy does not allow that."
    assert violation.metadata["categories"] == ["hate"]
    assert violation.metadata["category_scores"] == {"hate": 0.75}
    assert violation.metadata["underlay_categories"] == [
        "bedrock:content:HATE",
        "bedrock:content:PROMPT_ATTACK",
        "bedrock:topic:Investment advice",
    ]
    assert stand_in.signature_errors == []


def test_output_source_and_masking_only_warns(stand_in: GuardrailStandIn) -> None:
    messages = [
        ShieldMessage(role="user", content="hi"),
        ShieldMessage(role="assistant", content="mail ann@example.com"),
    ]
    answer = asyncio.run(_run(stand_in.url, "gr-mask", messages))
    assert stand_in.requests[-1]["body"]["source"] == "OUTPUT"
    assert stand_in.requests[-1]["body"]["content"] == [{"text": {"text": "mail ann@example.com"}}]
    assert answer.violation.violation_level == "warn"
    assert answer.violation.metadata["redacted"] == ["mail me at {EMAIL}"]
    assert answer.violation.metadata["underlay_categories"] == ["bedrock:pii:EMAIL"]


def test_pass_is_no_violation(stand_in: GuardrailStandIn) -> None:
    answer = asyncio.run(_run(stand_in.url, "gr-pass", [ShieldMessage(role="user", content="hello")]))
    assert answer.violation is None


@pytest.mark.parametrize(
    ("guardrail", "error", "fragment"),
    [
        ("gr-denied", UpstreamError, "AccessDeniedException"),
        ("gr-missing", UpstreamError, "ResourceNotFoundException"),
        ("gr-throttled", ServiceUnavailableError, "ThrottlingException"),
    ],
)
def test_refusals_name_the_provider(stand_in: GuardrailStandIn, guardrail: str, error: type, fragment: str) -> None:
    with pytest.raises(error) as caught:
        asyncio.run(_run(stand_in.url, guardrail, [ShieldMessage(role="user", content="x")]))
    assert (
        "Provider 'bedrock'" in str(caught.value) and fragment in str(caught.value) and guardrail in str(caught.value)
    )


def test_unreachable_is_503() -> None:
    with pytest.raises(ServiceUnavailableError, match="cannot reach Bedrock"):
        asyncio.run(_run(f"http://127.0.0.1:{free_port()}", "gr-pass", [ShieldMessage(role="user", content="x")]))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stand_in: GuardrailStandIn) -> Iterator[RunningServer]:
    dead = f"http://127.0.0.1:{free_port()}"
    config = {
        "apis": ["safety"],
        "providers": {
            "safety": [
                {"provider_id": "bedrock", "provider_type": "remote::bedrock", "config": _config(stand_in.url)},
                {"provider_id": "bedrock-down", "provider_type": "remote::bedrock", "config": _config(dead)},
            ]
        },
        "shields": [
            {"shield_id": "block", "provider_id": "bedrock", "provider_shield_id": "gr-block"},
            {"shield_id": "denied", "provider_id": "bedrock", "provider_shield_id": "gr-denied"},
            {"shield_id": "down", "provider_id": "bedrock-down", "provider_shield_id": "gr-pass"},
        ],
    }
    running = start_server(config, Path(tmp_path_factory.mktemp("bedrock")))
    yield running
    running.stop()


def test_through_the_http_api(server: RunningServer) -> None:
    moderation = httpx.post(f"{server.v1}/moderations", json={"model": "block", "input": "hateful ask"}, timeout=30)
    assert moderation.status_code == 200, moderation.text
    result = moderation.json()["results"][0]
    assert result["flagged"] and result["categories"]["hate"] and result["category_scores"]["hate"] == 0.75

    def run_shield(shield: str) -> httpx.Response:
        body = {"shield_id": shield, "messages": [{"role": "user", "content": "x"}]}
        return httpx.post(f"{server.v1}/safety/run-shield", json=body, timeout=30)

    denied = run_shield("denied")
    assert denied.status_code == 502
    assert denied.json()["error"]["type"] == "upstream_error"
    assert "Provider 'bedrock'" in denied.json()["error"]["message"]
    down = run_shield("down")
    assert down.status_code == 503
    assert "Provider 'bedrock-down'" in down.json()["error"]["message"]
