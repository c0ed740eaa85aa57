"""The OpenAI-compatible presets: one table, and the registry, the starter distribution and the docs agree with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from underlay.core.config import load_run_config
from underlay.core.registry import available_providers, import_object
from underlay.providers.inference.presets import PRESETS
from underlay.providers.inference.presets.adapter import config_class, provider_class

ROOT = Path(__file__).resolve().parents[2]
DOCS_PAGE = ROOT / "docs" / "providers" / "openai-compatible-presets.md"
ASKED_FOR = {
    "together",
    "fireworks",
    "groq",
    "deepseek",
    "mistral",
    "openrouter",
    "nvidia",
    "sambanova",
    "cerebras",
    "lmstudio",
    "tgi",
}


def _clear(monkeypatch: pytest.MonkeyPatch) -> None:
    for preset in PRESETS.values():
        monkeypatch.delenv(preset.key_env, raising=False)
        monkeypatch.delenv(preset.url_env, raising=False)


def test_every_asked_for_host_has_a_registered_preset() -> None:
    assert set(PRESETS) == ASKED_FOR
    registry = available_providers()
    for preset in PRESETS.values():
        spec = registry[("inference", preset.provider_type)]
        assert import_object(spec.config_class) is config_class(preset.name)
        assert preset.key_env in spec.description


def test_config_resolves_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear(monkeypatch)
    assert config_class("groq")().endpoint() == "https://api.groq.com/openai/v1"
    monkeypatch.setenv("GROQ_BASE_URL", "http://127.0.0.1:9/proxy/v1/")
    assert config_class("groq")().endpoint() == "http://127.0.0.1:9/proxy/v1"
    assert config_class("groq")(base_url="https://eu.example/v1").endpoint() == "https://eu.example/v1"  # config wins
    assert config_class("lmstudio")().endpoint() == "http://127.0.0.1:1234/v1"
    monkeypatch.setenv("TGI_URL", "http://10.0.0.7:8080")
    assert config_class("tgi")().endpoint() == "http://10.0.0.7:8080/v1"  # a bare local URL gets /v1
    monkeypatch.delenv("TGI_URL")
    with pytest.raises(ValidationError, match="TGI_URL"):
        config_class("tgi")()
    with pytest.raises(ValidationError, match="not an http"):
        config_class("mistral")(base_url="api.mistral.ai")
    with pytest.raises(ValidationError):
        config_class("mistral")(api_keey="x")  # a typo is an error, not ignored
    assert "s3cr3t" not in config_class("together")(api_key="s3cr3t").model_dump_json()


def test_providers_use_their_own_key_variable() -> None:
    for preset in PRESETS.values():
        cls = provider_class(preset.name)
        assert cls.api_key_env == preset.key_env and cls.provider_data_key == f"{preset.ident}_api_key"
        assert cls.requires_api_key is preset.hosted


def test_starter_loads_with_none_set() -> None:
    starter = load_run_config("starter", env={})
    assert {p.provider_id for p in starter.providers["inference"]} == {"llama-cpp", "sentence-transformers"}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_starter_switches_each_preset_on_by_its_variable(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear(monkeypatch)
    preset = PRESETS[name]
    value = "http://127.0.0.1:1234" if not preset.hosted else "key-123"
    starter = load_run_config("starter", env={preset.toggle_env: value})
    remote = [p for p in starter.providers["inference"] if p.provider_type.startswith("remote::")]
    assert [(p.provider_id, p.provider_type) for p in remote] == [(name, preset.provider_type)]
    monkeypatch.setenv(preset.toggle_env, value)  # the config class reads the address from the environment
    config = config_class(name).model_validate(remote[0].config)
    assert config.endpoint().startswith("http")
    if preset.hosted:
        assert config.configured_api_key() == "key-123"


def test_starter_with_several_set() -> None:
    env = {"GEMINI_API_KEY": "g", "GROQ_API_KEY": "q", "TGI_URL": "http://127.0.0.1:8080", "OPENAI_API_KEY": "o"}
    starter = load_run_config("starter", env=env)
    ids = {p.provider_id: p.provider_type for p in starter.providers["inference"]}
    assert ids == {
        "llama-cpp": "inline::llama-cpp",
        "sentence-transformers": "inline::sentence-transformers",
        "openai": "remote::openai",
        "gemini": "remote::gemini",
        "groq": "remote::groq",
        "tgi": "remote::tgi",
    }


def test_docs_page_lists_every_preset_with_its_variables_and_url() -> None:
    text = DOCS_PAGE.read_text()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `remote::")}
    assert set(rows) == {p.provider_type for p in PRESETS.values()}, "the page and the presets table differ"
    for preset in PRESETS.values():
        row = rows[preset.provider_type]
        assert preset.key_env in row and preset.url_env in row and preset.label in row, row
        assert (preset.base_url or "none") in row, row


def test_underlay_providers_lists_every_preset_and_gemini(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "underlay", "providers", "--api", "inference"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split()[1]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    for preset in PRESETS.values():
        assert preset.key_env in lines[preset.provider_type]
    assert "remote::gemini" in lines
