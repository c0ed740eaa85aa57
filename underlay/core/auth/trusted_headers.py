"""Identity asserted by a gateway in front of the server (oauth2-proxy, an ingress, a mesh).

Headers are trivially forged by any client that reaches the server directly, so the gateway must
also send a shared secret; a principal header without the right secret is refused outright, not
passed to the next provider.
"""

from __future__ import annotations

import hmac

from underlay.core.auth.base import AuthRequest, Decline, invalid_token
from underlay.core.auth.config import TrustedHeadersProvider
from underlay.core.identity import Principal


class TrustedHeadersAuth:
    def __init__(self, config: TrustedHeadersProvider, name: str) -> None:
        self.name = name
        self.config = config
        self._principal = config.principal_header.encode()
        self._secret_header = config.secret_header.encode()
        self._secret = config.shared_secret.encode()
        self._attributes = {name: header.encode() for name, header in config.attribute_headers.items()}

    async def authenticate(self, request: AuthRequest) -> Principal:
        principal_id = request.header(self._principal)
        if principal_id is None or not principal_id.strip():
            raise Decline(f"no {self.config.principal_header} header")
        sent = request.header(self._secret_header)
        if sent is None or not hmac.compare_digest(sent.encode("latin-1"), self._secret):
            raise invalid_token(
                f"{self.name}: {self.config.principal_header} is only trusted with the gateway's "
                f"{self.config.secret_header}; send requests through the gateway."
            )
        attributes: dict[str, list[str]] = {}
        for attribute, header in self._attributes.items():
            value = request.header(header)
            if value is not None:
                attributes[attribute] = [v.strip() for v in value.split(",") if v.strip()]
        return Principal(id=principal_id.strip(), attributes=attributes)

    async def aclose(self) -> None:
        return None
