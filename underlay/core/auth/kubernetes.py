"""Kubernetes tokens (service accounts, or any user the cluster knows) checked with a TokenReview.

The API server is the only party that can vouch for such a token, so we ask it
(``POST /apis/authentication.k8s.io/v1/tokenreviews``) with our own token, which needs the
``system:auth-delegator`` cluster role. Authenticated answers are cached by SHA-256 for a short while.
Attributes: ``groups`` from the review, and ``namespaces`` for a service account's own namespace.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from underlay.core.auth.base import AuthRequest, Decline, unavailable
from underlay.core.auth.cache import TokenCache
from underlay.core.auth.config import KubernetesProvider
from underlay.core.identity import Principal

_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
_TOKEN_FILE_SECONDS = 60.0  # projected service-account tokens rotate; re-read ours this often
_SERVICE_ACCOUNT = "system:serviceaccount:"


class KubernetesAuth:
    def __init__(self, config: KubernetesProvider, name: str) -> None:
        self.name = name
        self.config = config
        self.cache = TokenCache(config.cache_seconds)
        self._url = config.api_server.rstrip("/") + _REVIEW_PATH
        verify: Any = config.ca_file or True
        self._client = httpx.AsyncClient(timeout=config.timeout_seconds, verify=verify)
        self._own_token: str | None = config.token
        self._own_token_read = float("-inf")

    async def _credentials(self) -> str:
        if self.config.token is not None:
            return self.config.token
        if self._own_token is None or time.monotonic() - self._own_token_read > _TOKEN_FILE_SECONDS:
            path = Path(self.config.token_file)
            try:
                self._own_token = (await asyncio.to_thread(path.read_text)).strip()
            except OSError as exc:
                raise unavailable(
                    self.name,
                    f"API server at {self.config.api_server}",
                    problem=f"cannot be asked: our token file {path} is unreadable ({type(exc).__name__}); "
                    "set server.auth kubernetes token or token_file",
                ) from None
            self._own_token_read = time.monotonic()
        return self._own_token

    async def authenticate(self, request: AuthRequest) -> Principal:
        token, digest, cached = self.cache.lookup(request)
        if cached is not None:
            return cached
        status = await self._review(token)
        if status.get("authenticated") is not True:
            raise Decline("the API server does not authenticate the token")
        user = status.get("user") or {}
        username = user.get("username")
        if not isinstance(username, str) or not username:
            raise Decline("the TokenReview names no user")
        attributes: dict[str, list[str]] = {}
        groups = user.get("groups")
        if isinstance(groups, list):
            attributes["groups"] = [str(g) for g in groups]
        if username.startswith(_SERVICE_ACCOUNT):
            namespace = username[len(_SERVICE_ACCOUNT) :].split(":", 1)[0]
            if namespace:
                attributes["namespaces"] = [namespace]
        principal = Principal(id=username, attributes=attributes)
        self.cache.put(digest, principal)
        return principal

    async def _review(self, token: str) -> dict[str, Any]:
        where = f"API server at {self.config.api_server}"
        spec: dict[str, Any] = {"token": token}
        if self.config.audiences:
            spec["audiences"] = self.config.audiences
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        headers = {"authorization": f"Bearer {await self._credentials()}", "accept": "application/json"}
        try:
            response = await self._client.post(self._url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise unavailable(self.name, where, exc) from None
        if response.status_code in (401, 403):
            raise unavailable(
                self.name,
                where,
                problem=f"refused our TokenReview (HTTP {response.status_code}); our token needs the "
                "system:auth-delegator cluster role",
            )
        try:
            response.raise_for_status()
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise unavailable(self.name, where, exc) from None
        status = answer.get("status") if isinstance(answer, dict) else None
        return status if isinstance(status, dict) else {}

    async def aclose(self) -> None:
        await self._client.aclose()
