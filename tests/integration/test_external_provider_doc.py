"""docs/providers/external.md is a working third-party package built only from the declared surface.

The blocks of the page that start with a file name (``# greeter_provider/__init__.py``,
``# pyproject.toml``, ``# greeter.yaml``...) are copied out as written, the package is installed with
pip (a real wheel build, offline, into a folder put on the server's ``PYTHONPATH``), and a real server
finds it through its ``underlay.providers`` entry points and serves it to the ``openai`` SDK. The adapter
example is then pointed at that server, which stands in for an OpenAI-compatible service.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml

from tests.integration.harness import RunningServer, start_server
from tests.unit.test_public_surface import undeclared_imports

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "providers" / "external.md"
_NAMED_BLOCK = re.compile(r"^```\w+\n# (\S+)\n(.*?)^```", re.S | re.M)


def page_files() -> dict[str, str]:
    """Each block that opens with ``# FILE``: the file name and the block's text, as the page shows it."""
    files = {name: f"# {name}\n{body}" for name, body in _NAMED_BLOCK.findall(PAGE.read_text())}
    assert {"greeter_provider/__init__.py", "greeter_provider/upstream.py", "pyproject.toml"} <= set(files)
    return files


def with_port(text: str, port: int) -> str:
    return re.sub(r"(?<![\d.])8321\b", str(port), text)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page's package, installed by pip into its own folder."""
    source = tmp_path_factory.mktemp("greeter-src")
    for name, text in page_files().items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    target = tmp_path_factory.mktemp("greeter-site")
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation"]
    result = subprocess.run([*command, "--target", str(target), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(target.glob("greeter_provider-0.1.0.dist-info/entry_points.txt"))
    return target


@pytest.fixture(scope="module")
def greeter(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("greeter")
    config = {"state_dir": str(workdir / "state"), **yaml.safe_load(page_files()["greeter.yaml"])}
    server = start_server(config, workdir, extra_pythonpath=[site])
    yield server
    server.stop()


def test_the_package_imports_only_the_declared_surface() -> None:
    """Every name the example takes from Underlay is in a pinned ``__all__``: it is built from the surface alone."""
    modules = {name: text for name, text in page_files().items() if name.startswith("greeter_provider/")}
    assert len(modules) == 2
    for name, text in modules.items():
        assert undeclared_imports(text) == [], name


def test_underlay_lists_both_providers_of_the_package(site: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "underlay", "providers"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "remote::greeter " in result.stdout and "remote::greeter-upstream" in result.stdout


def test_the_client_example_runs_against_the_served_provider(greeter: RunningServer, tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text(with_port(page_files()["client.py"], greeter.port))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hi there, Ada!", "hi there, Bo!"]


def test_the_providers_typed_error_reaches_the_client_as_an_envelope(greeter: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        greeter.openai().chat.completions.create(model="greeter", messages=[{"role": "user", "content": " "}])
    error = caught.value.body
    assert error["param"] == "messages" and "your name" in error["message"]


def test_the_adapter_example_reaches_an_openai_compatible_service(
    site: Path, greeter: RunningServer, tmp_path: Path
) -> None:
    config = yaml.safe_load(with_port(page_files()["upstream.yaml"], greeter.port))
    adapter = start_server({"state_dir": str(tmp_path / "state"), **config}, tmp_path, extra_pythonpath=[site])
    try:
        client = adapter.openai()
        models = [model.id for model in client.models.list()]
        assert models, "the adapter listed no models of its upstream"
        model = next(m for m in models if m.endswith("greeter"))
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Cy"}])
        assert reply.choices[0].message.content == "hi there, Cy!"
    finally:
        adapter.stop()
