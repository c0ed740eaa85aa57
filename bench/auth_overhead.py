"""Per-request cost of authentication: the app with and without JWT auth + an access policy.

Both apps are built from the same run config (one OpenAI-compatible provider, one registered model)
and driven in process through their full ASGI stack with ``GET /v1/models``; the second adds
``server.auth`` (a JWT provider whose JWKS is served on loopback by this script) and a small
``access_policy`` (two route rules and two resource rules, which /v1/models evaluates per model).
Telemetry is off in all of them, so the difference is auth and policy alone.
Rounds alternate between the apps (in rotating order) so machine noise hits all alike; the added p50
is the median over rounds of each round's p50 difference, in wall time and in this thread's CPU time
(steadier on a shared machine); p99 is from all requests pooled. The target: at most 0.3 ms added at p50.

    python bench/auth_overhead.py [--requests 4000] [--rounds 16]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile  # noqa: E402

from underlay.core.access.policy import set_active_policy  # noqa: E402
from underlay.core.auth.authenticator import Authenticator  # noqa: E402
from underlay.core.auth.base import AuthRequest  # noqa: E402
from underlay.core.config import RunConfig, parse_run_config  # noqa: E402
from underlay.server.app import create_app  # noqa: E402

TARGET_MS = 0.3
ISSUER = "https://issuer.bench"
AUDIENCE = "underlay"
POLICY = {
    "routes": [
        {"effect": "forbid", "path": "/v1/admin*", "unless": ["user with admin in roles"]},
        {"effect": "forbid", "path": "/v1/*", "when": ["user is anonymous"]},
    ],
    "rules": [
        {"effect": "permit", "actions": ["read"], "resources": ["model"], "when": ["user with user in roles"]},
        {"effect": "permit", "when": ["user is owner"]},
    ],
}


def serve_jwks(keys: list[dict[str, Any]]) -> ThreadingHTTPServer:
    body = json.dumps({"keys": keys}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def configs(state_dir: str, jwks_url: str) -> tuple[RunConfig, RunConfig, RunConfig]:
    """No auth; JWT auth alone; JWT auth and the access policy."""
    base: dict[str, Any] = {
        "state_dir": state_dir,
        "apis": ["inference", "models"],
        "providers": {
            "inference": [
                {
                    "provider_id": "upstream",
                    "provider_type": "remote::passthrough",
                    "config": {"base_url": "http://127.0.0.1:9/v1"},  # never called: /v1/models reads the registry
                }
            ]
        },
        "models": [{"model_id": f"model-{i}", "provider_id": "upstream"} for i in range(3)],
        "inference": {"model_discovery_timeout": 0.2},
        # Off in every variant: its per-request spans and background writes cost several times what is
        # measured here and would bury it in noise; bench/overhead.py covers the whole stack.
        "telemetry": {"enabled": False},
    }
    auth = {
        "providers": [
            {
                "type": "jwt",
                "jwks_url": jwks_url,
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "attribute_claims": {"roles": "roles", "teams": "groups"},
            }
        ]
    }
    jwt_only = {**base, "server": {"auth": auth}}
    on = {**jwt_only, "access_policy": POLICY}
    return parse_run_config(base), parse_run_config(jwt_only), parse_run_config(on)


def scope_for(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/models",
        "raw_path": b"/v1/models",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8321),
    }


async def timed_requests(
    app: Any, header_sets: list[list[tuple[bytes, bytes]]], n: int
) -> tuple[list[float], list[float], int]:
    """``n`` sequential requests: wall seconds and this thread's CPU seconds each, and the non-200 count.

    CPU time is what the request itself costs; wall time also holds whatever else the shared machine
    ran meanwhile, so the CPU figure is the steadier one on a busy box.
    """
    status = 0
    errors = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    wall: list[float] = []
    cpu: list[float] = []
    for i in range(n):
        scope = scope_for(header_sets[i % len(header_sets)])
        start, start_cpu = time.perf_counter(), time.thread_time()
        await app(scope, receive, send)
        cpu.append(time.thread_time() - start_cpu)
        wall.append(time.perf_counter() - start)
        errors += status != 200
    return wall, cpu, errors


async def provider_only(authenticator: Authenticator, tokens: list[str], n: int) -> list[float]:
    """The JWT provider alone (header scan, signature, claims), for where the added time goes."""
    requests = [[(b"authorization", f"Bearer {t}".encode())] for t in tokens]
    times: list[float] = []
    for i in range(n):
        start = time.perf_counter()
        await authenticator.authenticate(AuthRequest.from_headers(requests[i % len(requests)]))
        times.append(time.perf_counter() - start)
    return times


def mint(private: Any, alg: str, kid: str, count: int) -> list[str]:
    now = int(time.time())
    return [
        jwt.encode(
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": f"user-{i}",
                "roles": ["user"],
                "groups": [f"team-{i % 4}"],
                "iat": now,
                "exp": now + 3600,
            },
            private,
            algorithm=alg,
            headers={"kid": kid},
        )
        for i in range(count)
    ]


async def run(args: argparse.Namespace) -> int:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = serve_jwks(
        [
            {**jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "rsa", "alg": "RS256"},
            {**jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True), "kid": "ec", "alg": "ES256"},
        ]
    )
    jwks_url = f"http://127.0.0.1:{jwks.server_address[1]}/jwks.json"
    tokens = {"RS256": mint(rsa_key, "RS256", "rsa", 64), "ES256": mint(ec_key, "ES256", "ec", 64)}
    headers = {alg: [[(b"authorization", f"Bearer {t}".encode())] for t in ts] for alg, ts in tokens.items()}
    off_config, jwt_config, on_config = configs(tempfile.mkdtemp(prefix="underlay-auth-bench-"), jwks_url)
    off_app, jwt_app, on_app = create_app(off_config), create_app(jwt_config), create_app(on_config)
    variants = [
        ("no auth", off_app, off_config, [[]]),
        ("JWT RS256, no policy", jwt_app, jwt_config, headers["RS256"]),
        ("JWT RS256 + policy", on_app, on_config, headers["RS256"]),
        ("JWT ES256 + policy", on_app, on_config, headers["ES256"]),
    ]
    results: dict[str, list[float]] = {name: [] for name, *_ in variants}
    cpu_results: dict[str, list[float]] = {name: [] for name, *_ in variants}
    # Per round, each variant's p50 less the no-auth p50 of the same round: pairs share the round's noise.
    paired: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name, *_ in variants}
    errors = 0
    per_round = max(1, args.requests // args.rounds)
    async with (
        off_app.router.lifespan_context(off_app),
        jwt_app.router.lifespan_context(jwt_app),
        on_app.router.lifespan_context(on_app),
    ):
        await asyncio.sleep(2)  # let the (failing) model discovery of the unreachable upstream finish
        for name, app, config, header_sets in variants:  # warm up: JWKS fetch, imports, caches
            set_active_policy(config.access_policy)
            _, _, bad = await timed_requests(app, header_sets, 300)
            if bad:
                print(f"{name}: {bad} warm-up requests were not 200", file=sys.stderr)
                errors += bad
        gc.collect()
        gc.freeze()
        for round_index in range(args.rounds):
            shift = round_index % len(variants)  # rotate the order so no variant always runs after another
            round_p50: dict[str, dict[str, float]] = {}
            for name, app, config, header_sets in variants[shift:] + variants[:shift]:
                set_active_policy(config.access_policy)  # the resource policy is process-wide
                wall, cpu, bad = await timed_requests(app, header_sets, per_round)
                results[name] += wall
                cpu_results[name] += cpu
                errors += bad
                round_p50[name] = {"wall": percentile(wall, 50), "cpu": percentile(cpu, 50)}
            for name in round_p50:
                for kind in ("wall", "cpu"):
                    paired[name][kind].append(round_p50[name][kind] - round_p50["no auth"][kind])
        authenticator = Authenticator(on_config.server.auth)  # type: ignore[arg-type]
        alone = {alg: await provider_only(authenticator, tokens[alg], args.requests) for alg in tokens}
        await authenticator.aclose()
    jwks.shutdown()

    print(f"GET /v1/models in process, {per_round * args.rounds} requests per variant in {args.rounds} rounds")
    print(f"{'variant':<24}{'wall p50':>10}{'wall p99':>10}{'cpu p50':>10}{'cpu p99':>10}  (ms)")
    for name in results:
        wall, cpu = results[name], cpu_results[name]
        print(
            f"{name:<24}{percentile(wall, 50) * 1000:>10.3f}{percentile(wall, 99) * 1000:>10.3f}"
            f"{percentile(cpu, 50) * 1000:>10.3f}{percentile(cpu, 99) * 1000:>10.3f}"
        )
    for alg, times in alone.items():
        label = f"{alg} provider alone"
        print(f"{label:<24}{percentile(times, 50) * 1000:>10.3f}{percentile(times, 99) * 1000:>10.3f}")
    print()
    print("added per request, ms: p50 is the median over rounds of (variant p50 - no-auth p50) in the same round")
    for name in results:
        if name == "no auth":
            continue
        parts = []
        for kind, table in (("wall", results), ("cpu", cpu_results)):
            added50 = statistics.median(paired[name][kind]) * 1000
            added99 = (percentile(table[name], 99) - percentile(table["no auth"], 99)) * 1000
            verdict = "PASS" if added50 <= TARGET_MS else "MISS"
            parts.append(f"{kind} p50 +{added50:.3f} ({verdict}), p99 {added99:+.3f}")
        print(f"  {name:<22} " + "; ".join(parts))
    print(f"target: added p50 <= {TARGET_MS} ms per request")
    print(f"non-200 answers: {errors}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per variant")
    parser.add_argument("--rounds", type=int, default=16)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the unreachable upstream's model discovery is expected to fail
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
