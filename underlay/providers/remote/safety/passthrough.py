"""``remote::passthrough``: any OpenAI-compatible ``/v1/moderations`` endpoint as a shield.

OpenAI itself, another Underlay, or any service with the same shape. The shield's
``provider_shield_id`` is sent as ``model``; a flagged result becomes a violation carrying the
upstream's categories and scores unchanged (they are already OpenAI's taxonomy).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from pydantic import BaseModel, Field

from underlay.api.errors import ServiceUnavailableError, UpstreamError, UpstreamTimeoutError
from underlay.api.safety import RunShieldResponse, SafetyViolation, Shield, ShieldMessage, ViolationLevel


class Config(BaseModel):
    base_url: str = Field(description="Base URL ending in /v1, e.g. https://api.openai.com/v1.")
    api_key: str | None = Field(default=None, description="Bearer token; PASSTHROUGH_MODERATION_API_KEY if unset.")
    timeout: float = Field(default=10.0, gt=0)
    send_model: bool = Field(default=True, description="Send the shield's provider_shield_id as model.")


class PassthroughSafetyProvider:
    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config
        self._client: httpx.AsyncClient | None = None

    async def initialize(self) -> None:
        key = self.config.api_key or os.environ.get("PASSTHROUGH_MODERATION_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(
            base_url=self.config.base_url.rstrip("/"), timeout=self.config.timeout, headers=headers
        )

    async def shutdown(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def health(self) -> dict[str, Any]:
        return {"status": "OK", "url": self.config.base_url}

    async def run_shield(
        self, shield: Shield, messages: list[ShieldMessage], params: dict[str, Any]
    ) -> RunShieldResponse:
        assert self._client is not None
        body: dict[str, Any] = {"input": [m.text() for m in messages if m.text()] or [""]}
        if self.config.send_model:
            body["model"] = params.get("model") or shield.provider_resource_id
        try:
            reply = await self._client.post("/moderations", json=body)
        except httpx.TimeoutException:
            raise UpstreamTimeoutError(
                self.provider_id, f"{self.config.base_url} did not answer in {self.config.timeout}s"
            ) from None
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(self.provider_id, f"cannot reach {self.config.base_url}: {exc}") from None
        if reply.status_code >= 400:
            raise UpstreamError(
                self.provider_id, f"moderation endpoint answered {reply.status_code}: {reply.text[:200]}"
            )
        try:
            results = reply.json()["results"]
        except (ValueError, KeyError, TypeError):
            raise UpstreamError(self.provider_id, "moderation endpoint answered without results") from None
        flagged = [r for r in results if r.get("flagged")]
        if not flagged:
            return RunShieldResponse()
        categories = sorted({c for r in flagged for c, on in (r.get("categories") or {}).items() if on})
        scores: dict[str, float] = {}
        for r in flagged:
            for c, s in (r.get("category_scores") or {}).items():
                scores[c] = max(scores.get(c, 0.0), float(s or 0.0))
        labels = sorted({u for r in flagged for u in r.get("underlay_categories", [])})
        return RunShieldResponse(
            violation=SafetyViolation(
                violation_level=ViolationLevel.error,
                user_message="I can't help with that: the content was flagged by moderation.",
                metadata={
                    "categories": categories,
                    "category_scores": scores,
                    "underlay_categories": labels or categories,
                },
            )
        )


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> PassthroughSafetyProvider:
    return PassthroughSafetyProvider(provider_id, config)
