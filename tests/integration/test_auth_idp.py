"""A real identity provider on loopback for the auth tests (this module holds no tests itself).

One Starlette app served by uvicorn in a background thread speaks, over real HTTP:

- ``GET /jwks.json``: the public halves of keys generated here (RSA and EC), as a JWKS;
- ``POST /introspect``: RFC 7662 token introspection with HTTP Basic client authentication;
- ``POST /webhook``: ``{"token"}`` → ``{"principal", "attributes"}`` or 401;
- ``POST /apis/authentication.k8s.io/v1/tokenreviews``: a stand-in for the Kubernetes API server's
  TokenReview endpoint (same request and response shapes, same caller-token check), since no cluster
  runs on this machine.

Tokens are signed with PyJWT using the private keys, exactly as an issuer would.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.integration.harness import free_port

CLIENT_ID = "underlay-server"
CLIENT_SECRET = "introspection-client-secret"
REVIEWER_TOKEN = "reviewer-service-account-token"


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.RSAAlgorithm if self.alg.startswith(("RS", "PS")) else jwt.algorithms.ECAlgorithm
        member = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**member, "kid": self.kid, "use": "sig", "alg": self.alg}


@dataclass
class IdentityProvider:
    audience: str = "underlay"
    keys: dict[str, SigningKey] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    opaque_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhook_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    cluster_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=lambda: {"jwks": 0, "introspect": 0, "webhook": 0, "review": 0})
    port: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.url}/issuer"

    def add_key(self, kid: str, alg: str = "RS256", *, publish: bool = True) -> SigningKey:
        if alg.startswith(("RS", "PS")):
            private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            private = ec.generate_private_key({"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1()}[alg])
        key = SigningKey(kid, alg, private)
        self.keys[kid] = key
        if publish:
            self.published.append(kid)
        return key

    def token(self, kid: str, *, lifetime: float = 300, **claims: Any) -> str:
        """A token signed with key ``kid``; claims default to this issuer and audience."""
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": self.audience, "sub": "alice", "iat": now, "exp": now + lifetime}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        key = self.keys[kid]
        return jwt.encode(payload, key.private, algorithm=key.alg, headers={"kid": kid})

    # --- the HTTP side -----------------------------------------------------------------------------

    async def _jwks(self, request: Request) -> Response:
        self.calls["jwks"] += 1
        return JSONResponse({"keys": [self.keys[kid].public_jwk() for kid in self.published]})

    async def _introspect(self, request: Request) -> Response:
        self.calls["introspect"] += 1
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        form = await request.form()
        claims = self.opaque_tokens.get(str(form.get("token")))
        if claims is None or claims.get("exp", float("inf")) <= time.time():
            return JSONResponse({"active": False})
        return JSONResponse({"active": True, **claims})

    async def _webhook(self, request: Request) -> Response:
        self.calls["webhook"] += 1
        body = await request.json()
        answer = self.webhook_tokens.get(body.get("token"))
        if answer is None:
            return JSONResponse({"error": "unknown token"}, status_code=401)
        return JSONResponse(answer)

    async def _token_review(self, request: Request) -> Response:
        self.calls["review"] += 1
        if request.headers.get("authorization") != f"Bearer {REVIEWER_TOKEN}":
            return JSONResponse({"kind": "Status", "status": "Failure", "code": 401}, status_code=401)
        review = await request.json()
        assert review["apiVersion"] == "authentication.k8s.io/v1" and review["kind"] == "TokenReview"
        user = self.cluster_tokens.get(review["spec"]["token"])
        status: dict[str, Any] = {"authenticated": user is not None}
        if user is not None:
            status["user"] = user
            status["audiences"] = review["spec"].get("audiences", [])
        else:
            status["error"] = "token not recognized"
        return JSONResponse({**review, "status": status}, status_code=201)

    def start(self) -> IdentityProvider:
        app = Starlette(
            routes=[
                Route("/jwks.json", self._jwks),
                Route("/introspect", self._introspect, methods=["POST"]),
                Route("/webhook", self._webhook, methods=["POST"]),
                Route("/apis/authentication.k8s.io/v1/tokenreviews", self._token_review, methods=["POST"]),
            ]
        )
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the loopback identity provider did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
