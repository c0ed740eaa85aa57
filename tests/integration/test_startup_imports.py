"""Start-up imports only what serving needs: heavy libraries wait for the request that uses them.

Not a timing test (timings on a shared machine flake): it builds the shipped ``local`` stack and its app
in a fresh interpreter exactly as ``underlay run`` does (the CLI module, ``Stack.start``, ``create_app``)
and reads ``sys.modules``. Each library listed here once cost every start a measurable share of its
CPU and memory (bench/startup.py, docs/performance.md); the fix when this fails is to import the
library inside the function that needs it, as the providers named in the message already do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HEAVY = (
    # model runtimes and ML stacks
    "torch",
    "transformers",
    "sentence_transformers",
    "onnxruntime",
    "onnx",
    "llama_cpp",
    "peft",
    "accelerate",
    "safetensors",
    "faiss",
    # data and scoring libraries
    "numpy",
    "pandas",
    "pyarrow",
    "datasets",
    "sacrebleu",
    "rouge_score",
    "nltk",
    "sklearn",
    "scipy",
    "regex",
    # clients and SDKs only some requests or configs need
    "mcp",
    "openai",
    "anthropic",
    "boto3",
    "botocore",
    "aiobotocore",
    "jinja2",
    "jsonschema",
    "jwt",
    "cryptography",
    "httpx",
    "asyncpg",
    "prometheus_client",
)

# Parts of libraries that start-up does use, and of our own providers, that wait for their first use all the same.
DEFERRED = (
    # SQLAlchemy's ORM (what sqlalchemy.ext.asyncio imports; the SQL store runs Core through
    # underlay.core.storage.sql_async) and its PostgreSQL dialect (a SQLite config never needs it)
    "sqlalchemy.orm",
    "sqlalchemy.ext.asyncio",
    "sqlalchemy.dialects.postgresql",
    # the PII and code-scanner shields' detectors (dozens of regexes compiled on import)
    "underlay.providers.inline.safety.pii.detectors",
    "underlay.providers.inline.safety.code_scanner.rules",
)

_SCRIPT = """
import asyncio, json, sys

from underlay.cli.main import load_config  # what `underlay run` imports first


async def main():
    from underlay.core.stack import Stack
    from underlay.core.telemetry.logs import configure_logging
    from underlay.server.app import create_app
    from underlay.server.tls import uvicorn_ssl_options

    config = load_config("local", {"port": 0})
    configure_logging(config)
    stack = Stack(config)
    await stack.start()
    try:
        app = create_app(config, stack)
        uvicorn_ssl_options(config)
        heavy, deferred = json.loads(sys.argv[1]), tuple(json.loads(sys.argv[2]))
        started = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
        early = sorted(m for m in sys.modules if m in deferred or m.startswith(tuple(d + "." for d in deferred)))
        # The first requests of a client (and of bench/startup.py): health, then model discovery.
        import httpx

        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://underlay") as client,
        ):
            statuses = [(await client.get(path)).status_code for path in ("/v1/health", "/v1/models")]
        listed = sorted(m for m in sys.modules if m.split(".")[0] in heavy and m.split(".")[0] != "httpx")
        print(json.dumps({"started": started, "early": early, "listed": listed, "statuses": statuses}))
    finally:
        await stack.stop()


asyncio.run(main())
"""


def _top_level(modules: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules})


def test_local_stack_starts_without_heavy_imports(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "UNDERLAY_STATE_DIR": str(tmp_path / "state"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    env.pop("UNDERLAY_WEBSEARCH_DOCUMENTS", None)
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(HEAVY), json.dumps(DEFERRED)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["statuses"] == [200, 200]
    assert _top_level(found["started"]) == [], (
        f"`underlay run local` imports {_top_level(found['started'])} before serving its first request "
        f"({', '.join(found['started'][:12])}...); import it inside the function that needs it"
    )
    assert found["early"] == [], (
        f"`underlay run local` imports {', '.join(found['early'][:12])} before serving its first request; "
        "import it inside the function that needs it (see DEFERRED for why each waits)"
    )
    assert _top_level(found["listed"]) == [], (
        f"listing models imports {_top_level(found['listed'])}; model discovery reads catalogs, not runtimes"
    )
