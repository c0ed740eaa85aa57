"""The built-in providers come through the ``underlay.providers`` entry points, like a third-party one.

What is pinned: the set of built-in provider types (the list the in-code registry held before the move,
so the move changed nothing), that each comes from the ``underlay`` distribution, that the installed
metadata matches ``pyproject.toml`` (a stale ``pip install -e`` would silently drop a provider), and that
listing providers imports no provider implementation (specs are strings, so ``underlay providers`` and
server start-up never load llama.cpp, torch or a vector database client).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

from underlay.api.providers import ProviderSpec
from underlay.core.registry import ENTRY_POINT_GROUP, available_providers, builtin_providers

ROOT = Path(__file__).resolve().parents[2]

# The (api, provider_type) pairs of the former BUILTIN_PROVIDERS list in underlay/providers/registry.py.
BUILTINS = {
    ("inference", "inline::llama-cpp"),
    ("inference", "inline::sentence-transformers"),
    ("inference", "remote::openai"),
    ("inference", "remote::vllm"),
    ("inference", "remote::llama-cpp-server"),
    ("inference", "remote::ollama"),
    ("inference", "remote::passthrough"),
    ("inference", "remote::gemini"),
    ("inference", "remote::anthropic"),
    ("inference", "remote::bedrock"),
    ("inference", "remote::azure-openai"),
    ("inference", "remote::together"),
    ("inference", "remote::fireworks"),
    ("inference", "remote::groq"),
    ("inference", "remote::deepseek"),
    ("inference", "remote::mistral"),
    ("inference", "remote::openrouter"),
    ("inference", "remote::nvidia"),
    ("inference", "remote::sambanova"),
    ("inference", "remote::cerebras"),
    ("inference", "remote::lmstudio"),
    ("inference", "remote::tgi"),
    ("vector_io", "inline::sqlite-vec"),
    ("vector_io", "inline::faiss"),
    ("vector_io", "remote::pgvector"),
    ("vector_io", "inline::milvus"),
    ("vector_io", "remote::milvus"),
    ("vector_io", "inline::qdrant"),
    ("vector_io", "remote::qdrant"),
    ("vector_io", "inline::chromadb"),
    ("vector_io", "remote::chromadb"),
    ("files", "inline::localfs"),
    ("files", "remote::s3"),
    ("tool_runtime", "remote::model-context-protocol"),
    ("tool_runtime", "builtin::file_search"),
    ("tool_runtime", "builtin::websearch"),
    ("responses", "inline::builtin"),
    ("safety", "inline::pii"),
    ("safety", "inline::code-scanner"),
    ("safety", "inline::guard-prompt"),
    ("safety", "inline::llama-guard"),
    ("safety", "remote::passthrough"),
    ("safety", "inline::prompt-guard"),
    ("safety", "remote::bedrock"),
    ("datasets", "inline::localfs"),
    ("datasets", "remote::huggingface"),
    ("scoring", "inline::basic"),
    ("scoring", "inline::embedding-similarity"),
    ("scoring", "inline::llm-as-judge"),
    ("scoring", "inline::rag"),
    ("fine_tuning", "inline::huggingface"),
    ("fine_tuning", "remote::openai"),
}


def test_the_entry_points_declare_exactly_the_former_builtins() -> None:
    specs = builtin_providers()
    assert all(isinstance(spec, ProviderSpec) for spec in specs)
    keys = [(spec.api, spec.provider_type) for spec in specs]
    assert len(keys) == len(set(keys)), "two entry points declare the same provider type"
    assert set(keys) == BUILTINS
    assert BUILTINS <= set(available_providers())


def test_installed_metadata_matches_pyproject() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][ENTRY_POINT_GROUP]
    installed = {
        ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.dist and ep.dist.name == "underlay"
    }
    assert installed == declared, "the installed entry points are stale: run  pip install -e '.[local,dev]' --no-deps"


def test_each_spec_lives_beside_its_provider() -> None:
    """A spec is declared in the package that holds its provider, so a backend carries its own declaration."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if not (ep.dist and ep.dist.name == "underlay"):
            continue
        spec = ep.load()
        home = ep.value.partition(":")[0]
        assert spec.factory.startswith(home + ".") or spec.factory.startswith(home + ":"), (ep.name, spec.factory)
        assert spec.config_class.partition(":")[0] == spec.factory.partition(":")[0], ep.name


def test_listing_providers_imports_no_provider_implementation() -> None:
    script = (
        "import json, sys\n"
        "from underlay.core.registry import available_providers\n"
        "from underlay.api.providers import ProviderSpec\n"
        "specs = available_providers().values()\n"
        "implementations = {s.factory.partition(':')[0] for s in specs}\n"
        "implementations.discard('underlay.providers.inline.responses')  # its package holds only config and spec\n"
        "heavy = ['llama_cpp', 'torch', 'sentence_transformers', 'faiss', 'numpy', 'qdrant_client', 'chromadb',\n"
        "         'pymilvus', 'asyncpg', 'aiobotocore', 'mcp']\n"
        "print(json.dumps(sorted(m for m in sys.modules if m in implementations or m.split('.')[0] in heavy)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
