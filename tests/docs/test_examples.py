"""Every code block of README.md and docs/ is checked; the ones marked ``run`` run against real servers.

Docs drift as the code grows, so each block is a test case, and the mark before it says how it is
checked (docs/writing-docs.md is the writers' reference; in short):

- ``config file=NAME.yaml`` (or an unmarked YAML block with ``apis``): a whole run config, validated as
  ``underlay run`` validates it (loader, storage, each provider's config class).
- ``fragment of=REF [at=KEY]``: merged into the whole config REF names (a distribution or
  ``[page]#NAME.yaml``) and validated, so every fragment's full config is reachable.
- ``run [server=REF|@page] [serves [wait]] [ports=..] [background=..] [env=..] [slow]``: Python or shell
  run as written against real servers on loopback, every port number the page uses swapped for a free
  one. An ``output`` block right after is compared with doctest's checker.
- ``needs WHAT`` / ``placeholder WHAT``: parsed only. ``text WHY``: not code.

An unmarked Python or shell block fails: the writer says whether it runs.
"""

from __future__ import annotations

import copy
import doctest
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.docs.examples import ROOT, Example, collect_all
from tests.integration.harness import RunningServer, free_port, start_server

EXAMPLES = collect_all()
BY_PAGE: dict[str, list[Example]] = {}
for _example in EXAMPLES:
    BY_PAGE.setdefault(_example.page, []).append(_example)
DISTRIBUTIONS = ROOT / "underlay" / "core" / "distributions"
_ENV_NAME = re.compile(r"\$\{env\.(\w+)\}")  # references with no default: the check gives them a value
# A block runs with its own HOME, but packaged models stay where this machine keeps them (not assembled again).
_MODELS_DIR = os.environ.get("UNDERLAY_MODELS_DIR") or str(Path("~/.cache/underlay/models").expanduser())


def _params() -> list[Any]:
    params = []
    for example in EXAMPLES:
        marks = [pytest.mark.slow] if "slow" in example.flags else []
        params.append(pytest.param(example, id=example.id, marks=marks))
    return params


# ---- configs ----------------------------------------------------------------------------------------------


def _config_file(example: Example) -> str:
    return example.options.get("file", f"block-{example.line}.yaml")


def _find_config(ref: str, page: str) -> Any:
    """The whole config REF names: a shipped distribution, or a config (or fragment) block with file=."""
    if "#" not in ref:
        path = DISTRIBUTIONS / f"{ref}.yaml"
        assert path.is_file(), f"{page}: no distribution '{ref}'"
        return yaml.safe_load(path.read_text())
    return _whole_config(_find_block(ref, page))


def _merge(base: Any, part: Any) -> Any:
    """Deep-merge ``part`` into ``base``; list entries with a known id replace the same id, others append."""
    if isinstance(base, dict) and isinstance(part, dict):
        if base.get("type", part.get("type")) != part.get("type", base.get("type")):
            return part  # another kind of thing (a postgres store for a sqlite one): replaced, not mixed
        merged = dict(base)
        for key, value in part.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(part, list):
        merged_list = list(base)
        for item in part:
            key = next((k for k in _ID_KEYS if isinstance(item, dict) and k in item), None)
            if key is not None:
                merged_list = [
                    old for old in merged_list if not (isinstance(old, dict) and _same_id(old.get(key), item[key]))
                ]
            merged_list.append(item)
        return merged_list
    return part


_ID_KEYS = ("provider_id", "toolgroup_id", "shield_id", "model_id")
_SWITCHED_ID = re.compile(r"\$\{env\.\w+:\+([^}]*)\}")  # ${env.KEY:+openai} is the id "openai" when on


def _same_id(old: Any, new: Any) -> bool:
    return (
        isinstance(old, str) and isinstance(new, str) and _SWITCHED_ID.sub(r"\1", old) == _SWITCHED_ID.sub(r"\1", new)
    )


def _place(part: Any, at: str) -> Any:
    for key in reversed(at.split(".") if at else []):
        part = {key: part}
    return part


def _whole_config(example: Example) -> Any:
    data = yaml.safe_load(example.source)
    if example.kind != "fragment":
        return data
    ref = example.options.get("of")
    assert ref, f"{example.id}: a fragment says which whole config it belongs to: fragment of=REF"
    return _merge(copy.deepcopy(_find_config(ref, example.page)), _place(data, example.options.get("at", "")))


def _validate_config(data: Any, source: str, tmp_path: Path) -> None:
    """As ``underlay run`` does: the loader, then each provider's config class."""
    from underlay.core.config import parse_run_config
    from underlay.core.registry import available_providers, import_object

    # A digest-shaped placeholder where the name says it holds a SHA-256, a word elsewhere.
    placeholder = "example-value-for-the-docs-check"  # long enough for key-like fields
    env = {name: "0" * 64 if "SHA" in name else placeholder for name in _ENV_NAME.findall(json.dumps(data))}
    config = parse_run_config(data, source=source, env=env)
    from pydantic import TypeAdapter

    from underlay.core.storage.kvstore import KVStoreConfig
    from underlay.core.storage.sqlstore import SqlStoreConfig

    TypeAdapter(KVStoreConfig).validate_python(config.storage.kvstore)
    TypeAdapter(SqlStoreConfig).validate_python(config.storage.sqlstore)
    registry = available_providers()
    for api, entries in config.providers.items():
        assert api in config.apis, f"{source}: providers.{api} needs '{api}' in apis"
        for entry in entries:
            spec = registry.get((api, entry.provider_type))
            assert spec is not None, f"{source}: unknown provider type {entry.provider_type} for {api}"
            import_object(spec.config_class).model_validate(entry.config, context={"state_dir": str(tmp_path)})


# ---- running ---------------------------------------------------------------------------------------------


def _run_env(workdir: Path, extra: dict[str, str]) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # `underlay` and `python` resolve to this environment
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "HOME": str(workdir),  # ~/.underlay/... in a block lands in its own folder
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "UNDERLAY_STATE_DIR": str(workdir / "state"),
        "UNDERLAY_MODELS_DIR": _MODELS_DIR,
        **extra,
    }


def _env_option(example: Example) -> dict[str, str]:
    pairs = [p for p in example.options.get("env", "").split(",") if p]
    return dict(pair.split("=", 1) for pair in pairs)


def _popen(command: list[str], workdir: Path, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with log.open("w") as sink:
        return subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a block's background jobs (a server it starts) stop with its group
        )


def _stop_group(process: subprocess.Popen[str]) -> None:
    """Stop the block and everything it left running, and wait until they are gone (ports free again)."""
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            process.poll()  # reaps the leader; the group lives on while any member does
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    process.wait(10)


class Servers:
    """Real servers and helpers the ``run`` blocks talk to, each started once for the session.

    Every page gets a folder (its ``config`` blocks are written there, and ``tests`` links to the
    repository's so paths such as ``tests/fixtures/...`` work as they do from a checkout) and its own
    free port for every port number its blocks use (8321, and those listed in ``ports=``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: dict[str, RunningServer] = {}
        self.groups: list[subprocess.Popen[str]] = []
        self.ports: dict[str, dict[int, int]] = {}
        self.served: dict[str, int] = {}
        self.started: set[tuple[str, str]] = set()

    def workdir(self, page: str) -> Path:
        folder = self.root / re.sub(r"\W+", "-", page)
        if not folder.exists():
            folder.mkdir(parents=True)
            (folder / "tests").symlink_to(ROOT / "tests")
            for example in BY_PAGE[page]:  # the page's configs lie where its commands expect them
                if example.kind in ("config", "fragment") and "file" in example.options:
                    data = _own_quota_counters(_whole_config(example))
                    (folder / example.options["file"]).write_text(yaml.safe_dump(data, sort_keys=False))
        return folder

    def port_map(self, example: Example) -> dict[int, int]:
        ports = self.ports.setdefault(example.page, {})
        for number in [8321, *(int(p) for p in example.options.get("ports", "").split(",") if p)]:
            ports.setdefault(number, free_port())
        return dict(ports)

    def server(self, ref: str, page: str) -> int:
        """The port of the server REF names, started on first use."""
        if ref == "@page":
            if page not in self.served:
                serving = next((e for e in BY_PAGE[page] if e.kind == "run" and "serves" in e.flags), None)
                assert serving is not None, f"{page}: server=@page needs a block marked 'run serves'"
                self.serve(serving)
            return self.served[page]
        key = ref if "#" not in ref else f"{ref.partition('#')[0] or page}#{ref.partition('#')[2]}"
        if key not in self.running:
            workdir = self.root / "servers" / re.sub(r"\W+", "-", key)
            env = {
                "UNDERLAY_STATE_DIR": str(workdir / "state"),
                "HOME": str(workdir),
                "UNDERLAY_MODELS_DIR": _MODELS_DIR,
            }
            if "#" in key:
                where, _, name = key.partition("#")
                block = _find_block(ref, page)
                env.update(_env_option(block))
                target = str(self.workdir(where) / name)
            else:
                target = key
            self.running[key] = start_server(target, workdir, env=env, timeout=300)
        return self.running[key].port

    def serve(self, example: Example) -> None:
        """Start a block that starts a server, and wait until the server answers."""
        ports = self.port_map(example)
        workdir = self.workdir(example.page)
        source = _swap_ports(example.source, ports)
        log = workdir / f"serves-{example.line}.log"
        process = _popen(["bash", "-c", source], workdir, _run_env(workdir, _env_option(example)), log)
        self.groups.append(process)
        url = f"http://127.0.0.1:{ports[8321]}/v1/health"
        if "wait" in example.flags:  # the block ends by itself, leaving its server in the background
            process.wait(float(example.options.get("timeout", 300)))
            assert process.returncode == 0, f"{example.id} exited {process.returncode}:\n{log.read_text()[-3000:]}"
        deadline = time.monotonic() + float(example.options.get("timeout", 300))
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    self.served[example.page] = ports[8321]
                    return
            except httpx.HTTPError:
                pass
            if process.poll() is not None and process.returncode != 0:
                break
            time.sleep(0.2)
        raise AssertionError(f"{example.id}: no server answered {url}:\n{log.read_text()[-3000:]}")

    def background(self, example: Example, ports: dict[int, int]) -> None:
        """A helper the block needs running (``background="command"``), e.g. an MCP server or ``underlay run``.

        Started once per page and command; the block runs when every port it uses accepts connections.
        """
        command = _swap_ports(example.options["background"], ports)
        if (example.page, command) in self.started:
            return
        self.started.add((example.page, command))
        workdir = self.workdir(example.page)
        log = workdir / f"background-{len(self.groups)}.log"
        process = _popen(["bash", "-c", command], workdir, _run_env(workdir, {}), log)
        self.groups.append(process)
        for port in ports.values():
            deadline = time.monotonic() + 180
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() not in (None, 0):
                        raise AssertionError(
                            f"{example.id}: '{command}' did not listen on {port}:\n{log.read_text()}"
                        ) from None
                    time.sleep(0.1)

    def stop(self) -> None:
        for server in self.running.values():
            server.stop()
        for process in self.groups:
            _stop_group(process)
        _drop_quota_counters()


QUOTA_PREFIX = f"underlay-docs-test-{os.getpid()}-{time.time_ns()}:quota"
"""Where this session's served configs keep Redis quota counters, so the shared Redis's ``underlay:``
keys are never touched and everything written is deleted at the end."""


def _own_quota_counters(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its Redis quota counters under this session's own key prefix."""
    quotas = (config.get("server") or {}).get("quotas") or {}
    if quotas.get("backend") == "redis":
        quotas["key_prefix"] = QUOTA_PREFIX
    return config


def _drop_quota_counters() -> None:
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        keys = list(client.scan_iter(match=f"{QUOTA_PREFIX}:*"))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass  # no Redis here: nothing was written to it either
    finally:
        client.close()


def _find_block(ref: str, page: str) -> Example:
    where, _, name = ref.partition("#")
    for example in BY_PAGE.get(where or page, []):
        if example.kind in ("config", "fragment") and example.options.get("file") == name:
            return example
    raise AssertionError(f"{page}: no config block with file={name} on {where or page}")


def _swap_ports(text: str, ports: dict[int, int]) -> str:
    for number, port in ports.items():
        text = re.sub(rf"(?<![\d.]){number}\b", str(port), text)
    return text


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    running = Servers(tmp_path_factory.mktemp("docs"))
    yield running
    running.stop()


def _expected_output(example: Example) -> Example | None:
    page = BY_PAGE[example.page]
    following = page[example.index + 1] if example.index + 1 < len(page) else None
    return following if following is not None and following.kind == "output" else None


def _run(example: Example, servers: Servers) -> str:
    if "serves" in example.flags:
        if example.page not in servers.served:
            servers.serve(example)
        return ""
    ports = servers.port_map(example)
    if "server" in example.options:
        ports[8321] = servers.server(example.options["server"], example.page)
    if "background" in example.options:
        servers.background(example, ports)
    workdir = servers.workdir(example.page)
    source = _swap_ports(example.source, ports)
    if example.language == "python":
        command = [sys.executable, "-c", source]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", source]
    # Output goes to files, not pipes: a server the block left in the background keeps a pipe open.
    out_path, err_path = workdir / f"out-{example.line}.txt", workdir / f"err-{example.line}.txt"
    with out_path.open("w") as out_file, err_path.open("w") as err_file:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=_run_env(workdir, _env_option(example)),
            stdout=out_file,
            stderr=err_file,
            text=True,
            start_new_session=True,  # the block's background jobs stop with its process group
        )
        try:
            process.wait(timeout=float(example.options.get("timeout", 300)))
        finally:
            _stop_group(process)
    out, err = out_path.read_text(), err_path.read_text()
    assert process.returncode == 0, f"{example.id} exited {process.returncode}:\n{out[-3000:]}\n{err[-3000:]}"
    return out


def _check_output(example: Example, expected: Example, actual: str) -> None:
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    want = expected.source.replace("…", "...")
    if expected.language == "json":  # compact or pretty, JSON is the same JSON
        want, actual = re.sub(r"\s+", "", want), re.sub(r"\s+", "", actual)
    shown = expected.source
    assert checker.check_output(want, actual, flags), f"{example.id} printed:\n{actual}\nthe page shows:\n{shown}"


# ---- the test --------------------------------------------------------------------------------------------


def _parse_only(example: Example) -> None:
    if example.language == "yaml":
        yaml.safe_load(example.source)
    elif example.language == "json":
        json.loads(example.source)
    elif example.language == "toml":
        tomllib.loads(example.source)
    elif example.language == "python":
        compile(example.source, example.id, "exec", flags=0)
    elif example.language in ("bash", "sh"):
        result = subprocess.run(["bash", "-n"], input=example.source, capture_output=True, text=True)
        assert result.returncode == 0, f"{example.id}: {result.stderr}"


@pytest.mark.parametrize("example", _params())
def test_example(example: Example, servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kind, language = example.kind, example.language
    if kind in ("text", "output"):
        return
    if kind in ("needs", "placeholder"):
        assert example.reason, f"{example.id}: say what it needs: <!-- example: {kind} WHAT -->"
        _parse_only(example)
        return
    if language == "yaml" and (kind in ("config", "fragment") or not kind):
        data = yaml.safe_load(example.source)
        if not kind:
            assert isinstance(data, dict) and "apis" in data, (
                f"{example.id}: a YAML block that is not a whole run config is marked "
                "<!-- example: fragment of=REF at=KEY --> (or needs/text)"
            )
        # Relative paths in a config (TLS files) are relative to where the page's commands run.
        monkeypatch.chdir(servers.workdir(example.page))
        _validate_config(_whole_config(example), example.id, tmp_path)
        return
    if kind == "fragment":
        assert "of" in example.options, f"{example.id}: say what it is a fragment of: fragment of=REF"
        if language == "python":
            compile(example.source, example.id, "exec", flags=0x2000)  # PyCF_ALLOW_TOP_LEVEL_AWAIT
        else:
            _parse_only(example)
        return
    if kind == "run":
        output = _run(example, servers)
        expected = _expected_output(example)
        if expected is not None:
            _check_output(example, expected, output)
        else:  # an unset field printed as-is is a classic docs bug; a page that means it shows the output
            assert not re.search(r"\bNone\b", output), f"{example.id} printed None:\n{output[-2000:]}"
        return
    if language in ("python", "bash", "sh"):
        pytest.fail(f"{example.id}: mark whether this block runs: <!-- example: run|fragment|needs|text ... -->")
    _parse_only(example)
