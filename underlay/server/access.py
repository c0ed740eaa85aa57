"""Installs the access layer: makes the run config's policy the active one and enforces route rules.

Route rules run as pure-ASGI middleware after authentication (so the principal is known) and before
quotas (so a refused request costs no quota). Resource rules are enforced further in, by routing
tables and stores, where the resource and its owner are known.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from underlay.api.errors import ForbiddenError
from underlay.core.access.policy import AccessPolicy, set_active_policy
from underlay.core.config import RunConfig
from underlay.core.identity import current_principal
from underlay.server.middleware import send_envelope


class RoutePolicyMiddleware:
    """Refuses (403) requests whose method and path the first matching route rule forbids."""

    def __init__(self, app: Any, policy: AccessPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            principal = current_principal()
            rule = self.policy.route_decision(principal, scope["method"], scope["path"])
            if rule is not None and rule.effect == "forbid":
                why = f" ({rule.description})" if rule.description else ""
                error = ForbiddenError(
                    f"The access policy does not let '{principal.id}' call {scope['method']} {scope['path']}{why}.",
                    code="access_denied",
                )
                await send_envelope(send, error)  # the request-context layer adds the request id
                return
        await self.app(scope, receive, send)


def install(app: FastAPI, config: RunConfig) -> None:
    """Activate ``config.access_policy`` for this process; add the route middleware if it has routes."""
    policy = set_active_policy(config.access_policy)
    if policy.routes:
        app.add_middleware(RoutePolicyMiddleware, policy=policy)
