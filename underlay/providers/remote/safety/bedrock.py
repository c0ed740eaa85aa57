"""``remote::bedrock``: an Amazon Bedrock guardrail as a shield, through the ``ApplyGuardrail`` API.

One call per check: the messages' text goes to ``ApplyGuardrail`` as ``INPUT`` (the user's side) or
``OUTPUT`` (when the last message is the assistant's), and the answer's ``action`` decides:
``NONE`` passes, ``GUARDRAIL_INTERVENED`` is a violation built from the assessments:

- content filters map onto OpenAI's categories (HATE → hate, INSULTS → harassment, SEXUAL → sexual,
  VIOLENCE → violence, MISCONDUCT → illicit; PROMPT_ATTACK has none), with Bedrock's confidence as
  the score (LOW 0.5, MEDIUM 0.75, HIGH 1.0);
- denied topics, custom and managed words, PII entities, regexes and contextual grounding become
  ``underlay_categories`` such as ``bedrock:topic:Investment advice`` or ``bedrock:pii:EMAIL``;
- the guardrail's own blocked message (``outputs``) is the user message. When every finding was only
  masked (``ANONYMIZED``), nothing was blocked: the violation is a ``warn`` carrying the masked text.

The shield's ``provider_shield_id`` is the guardrail identifier unless the config names one, so one
provider can serve several guardrails. The client is aiobotocore's, so the call never blocks the
event loop; credentials come from the config (secrets) or the usual AWS chain. Failures name the
provider: unreachable or throttled 503, timeouts 504, refusals (403, unknown guardrail) 502.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from underlay.api.errors import ServiceUnavailableError, UpstreamError, UpstreamTimeoutError
from underlay.api.safety import RunShieldResponse, SafetyViolation, Shield, ShieldMessage, ViolationLevel
from underlay.providers.utils.aws import client_credentials, client_region

log = logging.getLogger("underlay.safety.bedrock")

CONTENT_CATEGORIES: dict[str, list[str]] = {
    "HATE": ["hate"],
    "INSULTS": ["harassment"],
    "SEXUAL": ["sexual"],
    "VIOLENCE": ["violence"],
    "MISCONDUCT": ["illicit"],
    "PROMPT_ATTACK": [],
}
CONFIDENCE_SCORES = {"NONE": 0.0, "LOW": 0.5, "MEDIUM": 0.75, "HIGH": 1.0}
_UNAVAILABLE = {"ThrottlingException", "ServiceUnavailableException", "ServiceQuotaExceededException"}
_UNAVAILABLE |= {"InternalServerException"}
DEFAULT_MESSAGE = "I can't help with that: the content was blocked by a guardrail."


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    guardrail_id: str | None = Field(
        default=None, description="Guardrail identifier or ARN; unset: each shield's provider_shield_id."
    )
    guardrail_version: str = Field(default="DRAFT", description="A version number, or DRAFT.")
    region: str | None = Field(default=None, description="Unset: AWS_REGION / AWS_DEFAULT_REGION / us-east-1.")
    endpoint_url: str | None = Field(default=None, description="Override the bedrock-runtime endpoint (VPC, tests).")
    access_key_id: SecretStr | None = Field(default=None, description="Unset: the AWS credential chain.")
    secret_access_key: SecretStr | None = Field(default=None, description="Unset: the AWS credential chain.")
    session_token: SecretStr | None = None
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=15.0, gt=0)
    max_attempts: int = Field(default=2, ge=1, description="Total attempts per call, retries included.")
    output_scope: Literal["INTERVENTIONS", "FULL"] | None = Field(
        default=None, description="Bedrock's outputScope; unset: the service default."
    )


def _texts(messages: list[ShieldMessage], source: str) -> list[str]:
    if source == "OUTPUT":
        return [m.text() for m in messages if m.role == "assistant" and m.text()]
    return [m.text() for m in messages if m.role != "assistant" and m.text()]


def violation_from_answer(answer: dict[str, Any]) -> SafetyViolation | None:
    """The violation an ``ApplyGuardrail`` answer stands for, or ``None`` when the guardrail let it pass."""
    if answer.get("action") != "GUARDRAIL_INTERVENED":
        return None
    categories: set[str] = set()
    scores: dict[str, float] = {}
    labels: list[str] = []
    actions: list[str] = []

    def note(label: str, action: str | None) -> None:
        labels.append(label)
        actions.append(action or "BLOCKED")

    for assessment in answer.get("assessments") or []:
        for f in (assessment.get("contentPolicy") or {}).get("filters") or []:
            kind = str(f.get("type", ""))
            note(f"bedrock:content:{kind}", f.get("action"))
            for c in CONTENT_CATEGORIES.get(kind, []):
                categories.add(c)
                scores[c] = max(scores.get(c, 0.0), CONFIDENCE_SCORES.get(str(f.get("confidence")), 1.0))
        for t in (assessment.get("topicPolicy") or {}).get("topics") or []:
            note(f"bedrock:topic:{t.get('name')}", t.get("action"))
        words = assessment.get("wordPolicy") or {}
        for w in words.get("customWords") or []:
            note("bedrock:word:custom", w.get("action"))
        for w in words.get("managedWordLists") or []:
            note(f"bedrock:word:{w.get('type', 'managed')}", w.get("action"))
        sensitive = assessment.get("sensitiveInformationPolicy") or {}
        for p in sensitive.get("piiEntities") or []:
            note(f"bedrock:pii:{p.get('type')}", p.get("action"))
        for r in sensitive.get("regexes") or []:
            note(f"bedrock:regex:{r.get('name')}", r.get("action"))
        for g in (assessment.get("contextualGroundingPolicy") or {}).get("filters") or []:
            note(f"bedrock:grounding:{g.get('type')}", g.get("action"))
    outputs = [str(o.get("text", "")) for o in answer.get("outputs") or [] if o.get("text")]
    masked_only = bool(actions) and all(a in ("ANONYMIZED", "NONE") for a in actions)
    metadata: dict[str, Any] = {
        "categories": sorted(categories),
        "category_scores": scores,
        "underlay_categories": sorted(set(labels)) or ["bedrock:intervened"],
    }
    if answer.get("actionReason"):
        metadata["action_reason"] = answer["actionReason"]
    if masked_only:
        metadata["redacted"] = outputs
        return SafetyViolation(
            violation_level=ViolationLevel.warn,
            user_message="Personal data was masked by a guardrail.",
            metadata=metadata,
        )
    return SafetyViolation(
        violation_level=ViolationLevel.error,
        user_message=" ".join(outputs) or DEFAULT_MESSAGE,
        metadata=metadata,
    )


class BedrockSafetyProvider:
    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config
        self._exit = contextlib.AsyncExitStack()
        self._client: Any = None
        self._region = "us-east-1"

    async def initialize(self) -> None:
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
        except ImportError:  # pragma: no cover - depends on the install
            from underlay.api.errors import ConfigError

            raise ConfigError(
                f"providers.safety[{self.provider_id}]: remote::bedrock needs aiobotocore; "
                "pip install 'aiobotocore==3.10.0' (or the s3 extra)"
            ) from None
        c = self.config
        credentials = client_credentials(c)
        self._region = client_region(c)
        client_config = AioConfig(
            connect_timeout=c.connect_timeout,
            read_timeout=c.read_timeout,
            retries={"total_max_attempts": c.max_attempts, "mode": "standard"},
        )
        self._client = await self._exit.enter_async_context(
            get_session().create_client(
                "bedrock-runtime",
                endpoint_url=c.endpoint_url,
                region_name=self._region,
                config=client_config,
                **credentials,
            )
        )

    async def shutdown(self) -> None:
        await self._exit.aclose()

    async def health(self) -> dict[str, Any]:
        return {"status": "OK", "region": self._region}

    @contextlib.contextmanager
    def _errors(self, where: str) -> Iterator[None]:
        """botocore's failures → provider errors that name this provider and the guardrail."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "")) or str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
            message = error.get("Message") or code
            if code in _UNAVAILABLE:
                raise ServiceUnavailableError(
                    self.provider_id,
                    f"Bedrock could not apply {where} ({code}: {message}).",
                    code="bedrock_unavailable",
                ) from None
            raise UpstreamError(
                self.provider_id, f"Bedrock refused to apply {where} ({code}: {message}).", code="bedrock_error"
            ) from None
        except (ConnectTimeoutError, ReadTimeoutError):
            raise UpstreamTimeoutError(
                self.provider_id, f"Bedrock did not answer in time for {where}.", code="bedrock_timeout"
            ) from None
        except (BotoConnectionError, HTTPClientError) as exc:
            raise ServiceUnavailableError(
                self.provider_id, f"cannot reach Bedrock for {where}: {exc}", code="bedrock_unreachable"
            ) from None
        except (NoCredentialsError, PartialCredentialsError):
            raise ServiceUnavailableError(
                self.provider_id,
                "no AWS credentials; set access_key_id and secret_access_key in its config or AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY in the environment.",
                code="bedrock_no_credentials",
            ) from None
        except BotoCoreError as exc:
            raise UpstreamError(self.provider_id, f"Bedrock failed on {where}: {exc}", code="bedrock_error") from None

    async def run_shield(
        self, shield: Shield, messages: list[ShieldMessage], params: dict[str, Any]
    ) -> RunShieldResponse:
        assert self._client is not None, "initialize() creates the client"
        guardrail = str(params.get("guardrail_id") or self.config.guardrail_id or shield.provider_resource_id)
        version = str(params.get("guardrail_version") or self.config.guardrail_version)
        source = params.get("source_type") or ("OUTPUT" if messages[-1].role == "assistant" else "INPUT")
        if params.get("source") == "moderation":
            source = "INPUT"
            texts = [m.text() for m in messages if m.text()]
        else:
            texts = _texts(messages, source)
        if not texts:
            return RunShieldResponse()
        request: dict[str, Any] = {
            "guardrailIdentifier": guardrail,
            "guardrailVersion": version,
            "source": source,
            "content": [{"text": {"text": t}} for t in texts],
        }
        if self.config.output_scope:
            request["outputScope"] = self.config.output_scope
        with self._errors(f"guardrail '{guardrail}' version {version}"):
            answer = await self._client.apply_guardrail(**request)
        return RunShieldResponse(violation=violation_from_answer(answer))


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> BedrockSafetyProvider:
    return BedrockSafetyProvider(provider_id, config)
