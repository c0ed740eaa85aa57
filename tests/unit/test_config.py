"""Run-config parsing: env substitution, switched-off providers, and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from underlay.core.config import ConfigError, load_run_config, parse_run_config, substitute_env


def test_env_forms() -> None:
    env = {"SET": "value", "EMPTY": ""}
    assert substitute_env("${env.SET}", env) == "value"
    assert substitute_env("a-${env.SET}-b", env) == "a-value-b"
    assert substitute_env("${env.MISSING:=fallback}", env) == "fallback"
    assert substitute_env("${env.EMPTY:=fallback}", env) == "fallback"
    assert substitute_env("${env.SET:=fallback}", env) == "value"
    assert substitute_env("${env.SET:+on}", env) == "on"
    assert substitute_env("${env.MISSING:+on}", env) == ""
    assert substitute_env("${env.EMPTY:+on}", env) == ""
    assert substitute_env({"a": ["${env.SET}"], "b": 3}, env) == {"a": ["value"], "b": 3}


def test_unset_variable_names_key_and_fix() -> None:
    with pytest.raises(ConfigError) as info:
        substitute_env({"server": {"host": "${env.NOPE}"}}, {}, source="run.yaml")
    message = str(info.value)
    assert message.startswith("run.yaml: server.host:") and "NOPE" in message and ":=" in message
    assert "\n" not in message


def test_malformed_reference() -> None:
    with pytest.raises(ConfigError, match="cannot parse"):
        substitute_env({"x": "${env.A:-b}"}, {}, source="f.yaml")


def _providers(pid: str) -> dict:
    return {"inference": [{"provider_id": pid, "provider_type": "remote::openai", "config": {}}]}


def test_empty_provider_id_switches_provider_off() -> None:
    data = {
        "providers": _providers("${env.OPENAI_API_KEY:+openai}"),
        "models": [{"model_id": "gpt", "provider_id": "${env.OPENAI_API_KEY:+openai}"}],
    }
    off = parse_run_config(data, env={})
    assert off.providers["inference"] == [] and off.models == []
    on = parse_run_config(data, env={"OPENAI_API_KEY": "sk"})
    assert [p.provider_id for p in on.providers["inference"]] == ["openai"]


def test_type_coercion_after_substitution() -> None:
    config = parse_run_config({"server": {"port": "${env.PORT:=9000}"}}, env={})
    assert config.server.port == 9000


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"providrs": {}}, "providrs: unknown key 'providrs'; did you mean 'providers'?"),
        ({"server": {"prot": 1}}, "server.prot: unknown key 'prot'; did you mean 'port'?"),
        ({"server": {"port": "http"}}, "server.port:"),
        ({"providers": {"inference": [{"provider_type": "x"}]}}, "providers.inference[0].provider_id: required key"),
        ({"providers": _providers("a") | {"other": _providers("a")["inference"]}}, "is used twice"),
        ({"models": [{"model_id": "m", "provider_id": "ghost"}]}, "models[0].provider_id: no provider 'ghost'"),
    ],
)
def test_errors_are_one_line(data: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_config(data, source="my.yaml", env={})
    message = str(info.value)
    assert message.startswith("my.yaml: ") and expected in message and "\n" not in message


def test_shipped_distributions_parse() -> None:
    for name in ("local", "starter", "postgres"):
        config = load_run_config(name, env={})
        assert config.distribution == name
        assert config.server.host == "127.0.0.1" and config.server.port == 8321
    starter = load_run_config("starter", env={"VLLM_URL": "http://127.0.0.1:1/v1"})
    assert {p.provider_id for p in starter.providers["inference"]} == {"llama-cpp", "sentence-transformers", "vllm"}


def test_unknown_distribution() -> None:
    with pytest.raises(ConfigError, match="no such distribution; choose one of local, postgres, starter"):
        load_run_config("nonsense")


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "underlay", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_cli_config_errors_print_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  inference:\n    - provider_id: x\n      provider_type: remote::nope\n")
    result = _run_cli("run", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "providers.inference[0].provider_type: unknown provider type 'remote::nope'" in lines[0]
    assert "remote::openai" in lines[0]

    broken = tmp_path / "broken.yaml"
    broken.write_text("server: [unclosed\n")
    result = _run_cli("run", str(broken), cwd=tmp_path)
    assert result.returncode == 2 and "invalid YAML" in result.stderr and "Traceback" not in result.stderr

    bad_provider_config = tmp_path / "badcfg.yaml"
    bad_provider_config.write_text(
        f"state_dir: {tmp_path}\nproviders:\n  inference:\n    - provider_id: x\n"
        "      provider_type: remote::vllm\n      config: {url: http://127.0.0.1:1/v1, max_retries: many}\n"
    )
    result = _run_cli("run", str(bad_provider_config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "providers.inference[0].config.max_retries" in result.stderr and "Traceback" not in result.stderr


def test_cli_lists(tmp_path: Path) -> None:
    providers = _run_cli("providers", cwd=tmp_path)
    assert providers.returncode == 0 and "inline::llama-cpp" in providers.stdout and "local" in providers.stdout
    distros = _run_cli("distros", cwd=tmp_path)
    assert distros.returncode == 0 and "starter" in distros.stdout
    version = _run_cli("--version", cwd=tmp_path)
    assert version.stdout.startswith("underlay ")


def test_error_paths_skip_union_tags_and_suggest_keys() -> None:
    """A provider chosen by its ``type`` is named by position, as written, with the keys it allows."""
    data = {"server": {"auth": {"providers": [{"type": "webhook", "url": "http://127.0.0.1:1", "tiemout_seconds": 3}]}}}
    with pytest.raises(ConfigError) as info:
        parse_run_config(data, source="run.yaml")
    assert str(info.value) == (
        "run.yaml: server.auth.providers[0].tiemout_seconds: unknown key 'tiemout_seconds'; "
        "did you mean 'timeout_seconds'?"
    )
    data = {"providers": {"inference": [{"provider_id": "x", "provider_type": "y", "confg": {}}]}}
    with pytest.raises(ConfigError, match=r"providers\.inference\[0\]\.confg: .*did you mean 'config'"):
        parse_run_config(data, source="run.yaml")


def test_errors_never_echo_a_secret_value() -> None:
    provider = {"type": "introspection", "url": "http://127.0.0.1:1", "client_id": "a", "client_secret": 98765}
    with pytest.raises(ConfigError) as info:
        parse_run_config({"server": {"auth": {"providers": [provider]}}}, source="run.yaml")
    assert "client_secret" in str(info.value) and "98765" not in str(info.value)
