"""The Safety API: OpenAI's Moderations endpoint, the Shields resource and ``run-shield``.

A *shield* is a registered safety check (``pii``, ``code-scanner``, ``llama-guard`` ...) served by a
safety provider. Providers answer one question — does this conversation violate the shield? — as a
:class:`RunShieldResponse`; the router turns that answer into OpenAI's moderation shape, so every
provider gets ``/v1/moderations`` for free and clients written for OpenAI work unchanged.

Why categories are fixed here: OpenAI's SDK parses every category and score as required fields, so a
moderation result must always carry all thirteen, even when a shield only knows about one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import ConfigDict, Field

from underlay.api.base import ApiModel
from underlay.api.routes import Route

__all__ = [
    "DeletedShield",
    "MODERATION_CATEGORIES",
    "ModerationRequest",
    "ModerationResponse",
    "ModerationResult",
    "ROUTES",
    "RegisterShieldRequest",
    "RunShieldRequest",
    "RunShieldResponse",
    "SafetyApi",
    "SafetyProvider",
    "SafetyViolation",
    "Shield",
    "ShieldList",
    "ShieldMessage",
    "ShieldObject",
    "ViolationLevel",
    "moderation_result",
]

MODERATION_CATEGORIES: tuple[str, ...] = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
"""Every category OpenAI's moderation object carries, in its order."""


class ViolationLevel(StrEnum):
    info = "info"
    warn = "warn"
    error = "error"


class SafetyViolation(ApiModel):
    """A shield's finding. ``error`` blocks; ``warn`` and ``info`` are reported but let content through.

    ``metadata`` always has ``categories`` (OpenAI moderation categories the finding maps onto, maybe
    empty) and ``underlay_categories`` (the shield's own labels, e.g. ``S10`` or ``pii:email``), so a
    finding outside OpenAI's taxonomy is still visible.
    """

    violation_level: ViolationLevel = ViolationLevel.error
    user_message: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class RunShieldResponse(ApiModel):
    violation: SafetyViolation | None = None


class ShieldMessage(ApiModel):
    """A chat message as shields read it: role plus content (string or OpenAI content parts)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text") or p.get("refusal") or "") for p in self.content if isinstance(p, dict))


class RunShieldRequest(ApiModel):
    shield_id: str = Field(description="The shield to run (GET /v1/shields lists them).")
    messages: list[ShieldMessage] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class Shield(ApiModel):
    """A shield as stored in the routing table."""

    identifier: str
    provider_id: str
    provider_resource_id: str
    params: dict[str, Any] = Field(default_factory=dict)
    source: Literal["config", "api"] = "config"
    created: int = 0

    def to_object(self) -> ShieldObject:
        return ShieldObject(
            id=self.identifier,
            created=self.created,
            provider_id=self.provider_id,
            provider_shield_id=self.provider_resource_id,
            params=self.params,
        )


class ShieldObject(ApiModel):
    id: str
    object: Literal["shield"] = "shield"
    created: int
    provider_id: str
    provider_shield_id: str
    params: dict[str, Any] = Field(default_factory=dict)


class ShieldList(ApiModel):
    object: Literal["list"] = "list"
    data: list[ShieldObject]


class RegisterShieldRequest(ApiModel):
    shield_id: str = Field(min_length=1, description="The id clients will use.")
    provider_id: str | None = Field(default=None, description="Which safety provider serves it.")
    provider_shield_id: str | None = Field(default=None, description="The provider's own name for it.")
    params: dict[str, Any] = Field(default_factory=dict)


class DeletedShield(ApiModel):
    id: str
    object: Literal["shield"] = "shield"
    deleted: bool = True


class ModerationRequest(ApiModel):
    """OpenAI's request: text, a list of texts, or multi-modal parts (only text parts are read)."""

    input: str | list[str] | list[dict[str, Any]]
    model: str | None = Field(default=None, description="A shield id; the configured default when omitted.")

    def texts(self) -> list[str]:
        if isinstance(self.input, str):
            return [self.input]
        out: list[str] = []
        for item in self.input:
            if isinstance(item, str):
                out.append(item)
            elif item.get("type") == "text":
                out.append(str(item.get("text", "")))
        return out


class ModerationResult(ApiModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]
    underlay_categories: list[str] = Field(
        default_factory=list, description="The shield's own labels (extra field; SDKs ignore it)."
    )


class ModerationResponse(ApiModel):
    id: str
    model: str
    results: list[ModerationResult]


def moderation_result(violation: SafetyViolation | None) -> ModerationResult:
    """OpenAI's shape from a shield's answer: every category present, flagged categories scored 1.

    Scores come from ``metadata.category_scores`` when the provider has real ones (e.g. a remote
    moderation endpoint); rule-based shields are certain, so a mapped category scores 1.0.
    """
    blocking = violation is not None and violation.violation_level == ViolationLevel.error
    mapped = set(violation.metadata.get("categories", [])) if violation is not None else set()
    given = violation.metadata.get("category_scores", {}) if violation is not None else {}
    scores = {c: float(given.get(c, 1.0 if c in mapped and blocking else 0.0)) for c in MODERATION_CATEGORIES}
    return ModerationResult(
        flagged=blocking,
        categories={c: blocking and c in mapped for c in MODERATION_CATEGORIES},
        category_scores=scores,
        category_applied_input_types={c: ["text"] for c in MODERATION_CATEGORIES},
        underlay_categories=list(violation.metadata.get("underlay_categories", [])) if violation else [],
    )


class SafetyProvider(Protocol):
    """What a safety provider implements (besides the provider lifecycle)."""

    async def run_shield(
        self, shield: Shield, messages: list[ShieldMessage], params: dict[str, Any]
    ) -> RunShieldResponse: ...


class SafetyApi(Protocol):
    async def create_moderation(self, params: ModerationRequest) -> ModerationResponse: ...

    async def run_shield(self, params: RunShieldRequest) -> RunShieldResponse: ...

    async def list_shields(self) -> ShieldList: ...

    async def retrieve_shield(self, shield_id: str) -> ShieldObject: ...

    async def register_shield(self, params: RegisterShieldRequest) -> ShieldObject: ...

    async def delete_shield(self, shield_id: str) -> DeletedShield: ...


_TAGS = ("safety",)
ROUTES: list[Route] = [
    Route(
        "POST",
        "/v1/moderations",
        SafetyApi.create_moderation,
        body=ModerationRequest,
        response=ModerationResponse,
        summary="Classify text with a shield (OpenAI's Moderations API)",
        tags=_TAGS,
    ),
    Route(
        "POST",
        "/v1/safety/run-shield",
        SafetyApi.run_shield,
        body=RunShieldRequest,
        response=RunShieldResponse,
        summary="Run a shield over messages",
        tags=_TAGS,
    ),
    Route("GET", "/v1/shields", SafetyApi.list_shields, response=ShieldList, summary="List shields", tags=_TAGS),
    Route(
        "GET",
        "/v1/shields/{shield_id:path}",
        SafetyApi.retrieve_shield,
        response=ShieldObject,
        summary="Retrieve a shield",
        tags=_TAGS,
    ),
    Route(
        "POST",
        "/v1/shields",
        SafetyApi.register_shield,
        body=RegisterShieldRequest,
        response=ShieldObject,
        summary="Register a shield with a safety provider",
        tags=_TAGS,
    ),
    Route(
        "DELETE",
        "/v1/shields/{shield_id:path}",
        SafetyApi.delete_shield,
        response=DeletedShield,
        summary="Unregister a shield",
        tags=_TAGS,
    ),
]
