"""The safety router: shields CRUD, ``run-shield``, moderations, and the checks guardrails call.

Thin like the other routers: resolve the shield and call its provider (whose stray exceptions arrive
as typed errors naming it, from :mod:`underlay.core.boundary`). ``check`` adds what guardrails need on
top: a timeout and the failure policy, so that a broken shield never silently lets content through
unless the operator chose "open".
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from underlay.api.errors import InvalidRequestError, NotFoundError
from underlay.api.ids import new_id
from underlay.api.safety import (
    DeletedShield,
    ModerationRequest,
    ModerationResponse,
    RegisterShieldRequest,
    RunShieldRequest,
    RunShieldResponse,
    SafetyApi,
    SafetyProvider,
    SafetyViolation,
    Shield,
    ShieldList,
    ShieldMessage,
    ShieldObject,
    ViolationLevel,
    moderation_result,
)
from underlay.core.config import SafetySettings
from underlay.core.routing.shields import ShieldsRoutingTable

log = logging.getLogger("underlay.safety")

UNAVAILABLE_MESSAGE = "I can't answer that right now: a safety check could not be completed."

OPENAI_MODERATION_MODEL = re.compile(r"(omni|text)-moderation-(latest|stable|\d{3}|\d{4}-\d{2}-\d{2})")
"""OpenAI's moderation model names (``omni-moderation-latest``, ``text-moderation-007``, dated ones).

Clients written for OpenAI send one of these; unless a shield is registered under that exact name it
means "the default moderation shield", so such clients work unchanged instead of getting a 404."""


class SafetyRouter(SafetyApi):
    def __init__(
        self, table: ShieldsRoutingTable, providers: dict[str, SafetyProvider], settings: SafetySettings
    ) -> None:
        self.table = table
        self.providers = providers
        self.settings = settings

    # -- shields ----------------------------------------------------------------------------------

    async def list_shields(self) -> ShieldList:
        return ShieldList(data=[s.to_object() for s in await self.table.list()])

    async def retrieve_shield(self, shield_id: str) -> ShieldObject:
        return (await self.table.get(shield_id, param=None)).to_object()

    async def register_shield(self, params: RegisterShieldRequest) -> ShieldObject:
        provider_id = params.provider_id
        if provider_id is None:
            if len(self.providers) != 1:
                raise InvalidRequestError(
                    "Several safety providers are configured; name one in provider_id: "
                    f"{', '.join(sorted(self.providers))}.",
                    param="provider_id",
                )
            provider_id = next(iter(self.providers))
        shield = Shield(
            identifier=params.shield_id,
            provider_id=provider_id,
            provider_resource_id=params.provider_shield_id or params.shield_id,
            params=params.params,
            source="api",
        )
        return (await self.table.register(shield)).to_object()

    async def delete_shield(self, shield_id: str) -> DeletedShield:
        shield = await self.table.unregister(shield_id)
        return DeletedShield(id=shield.identifier)

    # -- running ----------------------------------------------------------------------------------

    async def _run(self, shield: Shield, messages: list[ShieldMessage], params: dict[str, Any]) -> RunShieldResponse:
        provider = self.providers[shield.provider_id]  # its failures arrive typed (underlay.core.boundary)
        return await provider.run_shield(shield, messages, {**shield.params, **params})

    async def run_shield(self, params: RunShieldRequest) -> RunShieldResponse:
        shield = await self.table.get(params.shield_id)
        return await self._run(shield, params.messages, params.params)

    async def _moderation_shield(self, model: str | None) -> Shield:
        """The shield ``model`` names; none, or an OpenAI moderation model name, means the default."""
        default = self.settings.default_moderation_shield
        if model and OPENAI_MODERATION_MODEL.fullmatch(model):
            try:  # a shield registered under the OpenAI name wins
                return await self.table.get(model, param="model")
            except NotFoundError:
                pass
            if not default:
                raise InvalidRequestError(
                    f"'{model}' is an OpenAI moderation model and stands for safety.default_moderation_shield, "
                    "which is not configured; set it, or name a shield from GET /v1/shields in model.",
                    param="model",
                )
            model = None
        shield_id = model or default
        if not shield_id:
            raise InvalidRequestError(
                "No shield named in model and no safety.default_moderation_shield is configured; "
                "pick one from GET /v1/shields.",
                param="model",
            )
        return await self.table.get(shield_id, param="model")

    async def create_moderation(self, params: ModerationRequest) -> ModerationResponse:
        shield = await self._moderation_shield(params.model)
        texts = params.texts()
        if not texts:
            raise InvalidRequestError("input has no text to classify.", param="input")
        answers = await asyncio.gather(
            *(self._run(shield, [ShieldMessage(role="user", content=t)], {"source": "moderation"}) for t in texts)
        )
        return ModerationResponse(
            id=new_id("modr"), model=shield.identifier, results=[moderation_result(a.violation) for a in answers]
        )

    # -- guardrails -------------------------------------------------------------------------------

    async def check(self, shield_ids: list[str], messages: list[ShieldMessage]) -> SafetyViolation | None:
        """The first blocking violation among ``shield_ids`` (run concurrently), or ``None``.

        A shield that raises or exceeds ``safety.shield_timeout_seconds`` follows its own
        ``params.failure_policy`` or else ``safety.failure_policy``: ``closed`` answers with a blocking
        violation, ``open`` logs a warning and treats the shield as passed. An unknown shield id is a
        client error either way.
        """
        shields = [await self.table.get(sid, param="guardrails") for sid in shield_ids]
        timeout = self.settings.shield_timeout_seconds

        async def one(shield: Shield) -> SafetyViolation | None:
            try:
                answer = await asyncio.wait_for(self._run(shield, messages, {}), timeout)
            except Exception as exc:
                if shield.params.get("failure_policy", self.settings.failure_policy) == "open":
                    log.warning("shield %s failed (%s); failure policy is open, passing", shield.identifier, exc)
                    return None
                log.warning("shield %s failed (%s); failure policy is closed, refusing", shield.identifier, exc)
                return SafetyViolation(
                    user_message=UNAVAILABLE_MESSAGE,
                    metadata={"shield_id": shield.identifier, "error": str(exc) or type(exc).__name__},
                )
            violation = answer.violation
            if violation is None or violation.violation_level != ViolationLevel.error:
                return None
            violation.metadata.setdefault("shield_id", shield.identifier)
            return violation

        for found in await asyncio.gather(*(one(s) for s in shields)):
            if found is not None:
                return found
        return None
