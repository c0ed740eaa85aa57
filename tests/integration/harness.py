"""Start real Underlay servers as subprocesses on free loopback ports, the way a user runs them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def install_external_provider(target: Path) -> Path:
    """Lay the echo provider out as an installed distribution (package + .dist-info with an entry point)."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        FIXTURES / "external_provider" / "underlay_echo_provider", target / "underlay_echo_provider", dirs_exist_ok=True
    )
    info = target / "underlay_echo_provider-0.1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: underlay-echo-provider\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[underlay.providers]\necho = underlay_echo_provider:SPEC\n")
    (info / "RECORD").write_text("")
    return target


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    config_path: Path
    scheme: str = "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"

    def openai(self, **kwargs: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=self.v1, api_key="unused", max_retries=0, **kwargs)

    def async_openai(self, **kwargs: Any) -> Any:
        import openai

        return openai.AsyncOpenAI(base_url=self.v1, api_key="unused", max_retries=0, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def start_server(
    config: dict[str, Any] | str,
    workdir: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    extra_pythonpath: list[Path] | None = None,
    port: int | None = None,
    probe: dict[str, Any] | None = None,
) -> RunningServer:
    """Write the config, run ``python -m underlay run CONFIG --port N`` and wait for /v1/health.

    ``probe``: httpx options for the health probe (``verify``, ``cert``); given, the probe speaks https.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    if isinstance(config, dict):
        config = {"state_dir": str(workdir / "state"), **config}
        config_path = workdir / "run.yaml"
        config_path.write_text(yaml.safe_dump(config))
        target = str(config_path)
    else:
        config_path = Path(config)
        target = config
    port = port or free_port()
    log_path = workdir / f"server-{port}.log"
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
    if extra_pythonpath:
        full_env["PYTHONPATH"] = os.pathsep.join([*map(str, extra_pythonpath), full_env.get("PYTHONPATH", "")])
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "underlay", "run", target, "--port", str(port)],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=str(workdir),
    )
    server = RunningServer(process, port, log_path, config_path, "https" if probe is not None else "http")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()[-4000:]}")
        try:
            if httpx.get(f"{server.v1}/health", timeout=1, **(probe or {})).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"server did not become healthy in {timeout}s:\n{server.log()[-4000:]}")


SMOLLM2 = "smollm2-135m-instruct"
QWEN = "qwen2.5-coder-0.5b-instruct"
MINILM = "all-minilm-l6-v2"


def local_config(**overrides: Any) -> dict[str, Any]:
    """The embedded models the end-to-end tests use: Qwen 0.5B (tools), SmolLM2 (fast tokens), MiniLM."""
    config: dict[str, Any] = {
        "apis": ["inference", "models"],
        "providers": {
            "inference": [
                {
                    "provider_id": "llama-cpp",
                    "provider_type": "inline::llama-cpp",
                    "config": {
                        "models": [
                            {"name": QWEN, "packaged": QWEN, "n_ctx": 4096},
                            {"name": SMOLLM2, "packaged": SMOLLM2, "n_ctx": 2048},
                        ]
                    },
                },
                {
                    "provider_id": "sentence-transformers",
                    "provider_type": "inline::sentence-transformers",
                    "config": {"models": [{"name": MINILM, "packaged": MINILM}]},
                },
            ]
        },
    }
    config.update(overrides)
    return config
