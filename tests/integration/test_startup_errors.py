"""Expected start-up failures end the CLI with one stderr line and exit code 2, never a traceback.

``docs/cli.md`` promises this; each case runs the real command (``python -m underlay run cfg.yaml``) as a
user would, against real services where the failure needs one: a PostgreSQL database without the pgvector
extension, and closed loopback ports for the Milvus, Qdrant and Chroma clients to fail on.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.integration.harness import free_port

PG_ADMIN = os.environ.get("UNDERLAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _run(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "run.yaml"
    config.write_text(text)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "underlay", "run", str(config), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=env,
    )


def _assert_one_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1, result.stderr[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _vector_io(provider_type: str, config: dict[str, object]) -> str:
    return yaml.safe_dump(
        {
            "apis": ["vector_io"],
            "providers": {"vector_io": [{"provider_id": "vec", "provider_type": provider_type, "config": config}]},
        }
    )


def test_missing_websearch_documents_is_one_line(tmp_path: Path) -> None:
    # The config block of docs/tool-runtime.md, run where ./pages.jsonl does not exist.
    text = """
apis: [tool_runtime]
providers:
  tool_runtime:
    - provider_id: websearch
      provider_type: builtin::websearch
      config: {engine: local-index, documents: ./pages.jsonl}
"""
    line = _assert_one_line(_run(tmp_path, text), "providers.tool_runtime[0]", "pages.jsonl", "do not exist")
    assert line.startswith("error: ")


@pytest.mark.parametrize(
    ("provider_type", "key", "service"),
    [("remote::milvus", "uri", "Milvus"), ("remote::qdrant", "url", "Qdrant"), ("remote::chromadb", "url", "Chroma")],
)
def test_unreachable_vector_server_is_one_line(tmp_path: Path, provider_type: str, key: str, service: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # bound once, then released: nothing listens there
    result = _run(tmp_path, _vector_io(provider_type, {key: closed}))
    _assert_one_line(result, "providers.vector_io[0]", f"cannot reach {service}", closed, "did not start")


async def _create_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()


async def _has_pgvector() -> bool:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'"))
    finally:
        await conn.close()


def test_pgvector_without_the_extension_is_one_line(tmp_path: Path) -> None:
    if asyncio.run(_has_pgvector()):
        pytest.skip("this PostgreSQL ships pgvector; the missing-extension failure cannot be produced here")
    name = f"underlay_novec_{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_database(name))
    try:
        config = {"host": "127.0.0.1", "port": 5432, "db": name, "user": "postgres"}
        result = _run(tmp_path, _vector_io("remote::pgvector", config))
        _assert_one_line(result, "providers.vector_io[0]", "pgvector extension", "install pgvector")
    finally:
        asyncio.run(_drop_database(name))


def test_unquoted_env_reference_in_flow_mapping_says_quote_it(tmp_path: Path) -> None:
    # docs/auth.md once showed `headers: {x-api-key: ${env.VERIFY_KEY}}`, which YAML cannot parse.
    text = "apis: [models]\nserver:\n  cors: {allow_origins: [${env.ORIGIN}]}\n"
    _assert_one_line(_run(tmp_path, text), "line 3", "must be quoted", "'${env.ORIGIN}'")
