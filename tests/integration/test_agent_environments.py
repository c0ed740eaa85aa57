"""One agent folder, unmodified, in process and on three server environments with different
infrastructure underneath, and its eval suite giving comparable results on each.

``test_agents.py`` runs the folder in process (``local``) and on a ``underlay run local`` server; here the
same folder's ``server`` environment is pointed (by ``${env.UNDERLAY_AGENT_URL}``, never by editing the
folder) at: (a) a ``local`` server (SQLite state, embedded models); (b) a ``postgres`` server (state in a
fresh PostgreSQL database); (c) a server whose chat model is a remote OpenAI-compatible provider
(``remote::passthrough`` to server (a)'s ``/v1``, a real HTTP hop; embeddings stay local). Each runs
``underlay agent eval`` on the folder's cases, as does the folder's own ``local`` environment (the embedded
stack started inside the test process, state in the folder's git-ignored ``.underlay``); the pass rates must
all clear the bar and agree closely.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.harness import MINILM, QWEN, RunningServer, start_server
from tests.integration.storage.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER
from underlay.cli.main import main
from underlay.core.config import DISTRIBUTIONS_DIR

pytestmark = pytest.mark.slow

AGENT_APIS = (
    "inference", "models", "files", "vector_io", "vector_stores", "conversations", "prompts", "agents",
    "tool_runtime", "responses", "telemetry",
)  # fmt: skip
"""What the agent folder's turns use; the remote-model server serves these (no shields: they would need
the embedded model as their guard)."""
METRIC = "underlay_requests_total{"  # checked against /metrics below
CASES = 4
"""The rag template's eval cases (opening time, secret ingredient, door code, closing time)."""


async def _drop(database: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, database="postgres", timeout=10
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def database() -> Iterator[str]:
    name = f"underlay_agent_env_{uuid.uuid4().hex[:12]}"
    yield name
    asyncio.run(_drop(name))


def _remote_model_config(upstream: RunningServer) -> dict[str, Any]:
    """The local distribution with its chat model replaced by an OpenAI-compatible upstream."""
    config = yaml.safe_load((DISTRIBUTIONS_DIR / "local.yaml").read_text())
    config["apis"] = [a for a in config["apis"] if a in AGENT_APIS]
    config["providers"] = {api: p for api, p in config["providers"].items() if api in AGENT_APIS}
    for key in ("shields", "safety"):
        config.pop(key, None)
    config["providers"]["inference"] = [
        {"provider_id": "upstream", "provider_type": "remote::passthrough", "config": {"base_url": upstream.v1}},
        {
            "provider_id": "sentence-transformers",
            "provider_type": "inline::sentence-transformers",
            "config": {"models": [{"name": MINILM, "packaged": MINILM}]},
        },
    ]
    config["models"] = [{"model_id": QWEN, "provider_id": "upstream", "provider_model_id": QWEN}]
    return config


def _chat_requests(server: RunningServer) -> float:
    """How many chat completion requests a server has answered, from its Prometheus ``/metrics``."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(METRIC) and 'route="/v1/chat/completions"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _eval(folder: Path, server: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: Any, *, job: bool) -> float:
    """The folder's pass rate on ``server``; ``job``: the server has the eval API, so the cases run there as
    one eval job; otherwise the CLI says so and asks them from the client."""
    monkeypatch.setenv("UNDERLAY_AGENT_URL", server.v1)
    capsys.readouterr()
    assert main(["agent", "eval", str(folder), "--env", "server"]) == 0
    out, err = capsys.readouterr()
    found = re.search(r"pass rate (\d+)/(\d+) = ", out)
    assert found is not None, out
    if job:
        ran = re.search(r"eval job (evaljob_\w+) on benchmark (agent-bakery-[0-9a-f]{12})", err)
        assert ran is not None, err  # the cases ran as one job of the server's eval API, kept there
        stored = httpx.get(f"{server.base_url}/v1alpha/eval/benchmarks/{ran.group(2)}/jobs/{ran.group(1)}", timeout=30)
        assert stored.json()["status"] == "completed" and stored.json()["progress"]["rows_total"] == CASES
    else:
        assert "the server has no eval API" in err and "eval job" not in err, err
    return int(found.group(1)) / int(found.group(2))


def _eval_in_process(folder: Path, capsys: Any) -> float:
    """The folder's pass rate in its ``local`` environment: no server, the embedded stack in this process."""
    capsys.readouterr()
    assert main(["agent", "eval", str(folder)]) == 0
    out, _ = capsys.readouterr()
    found = re.search(r"pass rate (\d+)/(\d+) = ", out)
    assert found is not None, out
    return int(found.group(1)) / int(found.group(2))


def test_one_folder_three_infrastructures_comparable_evals(
    tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "bakery"
    assert main(["agent", "init", str(folder), "--template", "rag"]) == 0
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    rates: dict[str, float] = {"in-process": _eval_in_process(folder, capsys)}
    local = start_server("local", tmp_path / "local", env={"UNDERLAY_STATE_DIR": str(tmp_path / "s1")}, timeout=600)
    try:
        rates["local"] = _eval(folder, local, monkeypatch, capsys, job=True)

        postgres_env = {
            "POSTGRES_DB": database,
            "POSTGRES_HOST": PG_HOST,
            "POSTGRES_PORT": str(PG_PORT),
            "POSTGRES_USER": PG_USER,
            "POSTGRES_PASSWORD": PG_PASSWORD or "",
            "UNDERLAY_STATE_DIR": str(tmp_path / "s2"),
        }
        pg = start_server("postgres", tmp_path / "pg", env=postgres_env, timeout=600)
        try:
            rates["postgres"] = _eval(folder, pg, monkeypatch, capsys, job=True)
        finally:
            pg.stop()

        remote = start_server(_remote_model_config(local), tmp_path / "remote", timeout=600)
        try:
            upstream_calls = _chat_requests(local)
            rates["remote-model"] = _eval(folder, remote, monkeypatch, capsys, job=False)
            # the remote server's model turns went over HTTP to the upstream, as chat completions
            assert _chat_requests(local) > upstream_calls
            assert _chat_requests(remote) == 0  # nobody called the front door's own chat completions route
        finally:
            remote.stop()
    finally:
        local.stop()

    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert {k: v for k, v in after.items() if ".underlay" not in k.parts} == before  # the folder is unmodified
    print("pass rates:", rates)
    assert all(rate >= 0.5 for rate in rates.values()), rates
    assert max(rates.values()) - min(rates.values()) <= 0.5, rates
