"""Agent folders without a server: agent.yaml's model and errors, the shipped schema, the knowledge
sync plan, tools.py schemas, eval cases and ``underlay agent init``.

The end-to-end runs (in process and against a server, with the embedded model) are in
tests/integration/test_agents.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from underlay.agents.functions import function_from_callable, load_functions
from underlay.agents.spec import SPEC_FILE, FileSearchTool, McpTool, load_spec, schema_text
from underlay.agents.sync import Attached, KnowledgeFile, knowledge_files, knowledge_filter, plan, store_name
from underlay.agents.templates import TEMPLATES, write_template
from underlay.api.agents import AgentDefinition
from underlay.api.vector_io import ComparisonFilter
from underlay.cli.agent_cmd import load_cases, passes
from underlay.cli.main import main
from underlay.core.config import ConfigError
from underlay.providers.utils.vector.filters import matches

SCHEMA = Path(__file__).resolve().parents[2] / "underlay" / "agents" / "agent.schema.json"


def _folder(tmp_path: Path, text: str) -> Path:
    (tmp_path / SPEC_FILE).write_text(text)
    return tmp_path


def _error(folder: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_spec(folder, env or {})
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(folder / SPEC_FILE))
    return message


def test_the_shipped_schema_is_current() -> None:
    assert SCHEMA.read_text() == schema_text(), "run: python -c 'from underlay.agents.spec import schema_text; ...'"


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_loads_and_matches_the_schema(tmp_path: Path, template: str) -> None:
    import jsonschema
    import yaml

    write_template(tmp_path / "my-agent", template)
    spec = load_spec(tmp_path / "my-agent", {})
    assert spec.name == "my-agent"
    raw = yaml.safe_load((tmp_path / "my-agent" / SPEC_FILE).read_text())
    jsonschema.validate(raw, json.loads(SCHEMA.read_text()))
    assert spec.environment("server", {"UNDERLAY_AGENT_URL": "http://h:1/v1"}).base_url == "http://h:1/v1"


def test_init_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "init", str(tmp_path / "a"), "--template", "support"]) == 0
    assert (tmp_path / "a" / "tools.py").is_file()
    assert main(["agent", "init", str(tmp_path / "a")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_unknown_key_is_one_line_with_a_suggestion(tmp_path: Path) -> None:
    message = _error(_folder(tmp_path, "name: a\nmodel: m\ninstruction: hi\n"))
    assert message.endswith("agent.yaml: instruction: unknown key 'instruction'; did you mean 'instructions'?")


def test_a_tool_mistake_names_the_tool_key(tmp_path: Path) -> None:
    message = _error(_folder(tmp_path, "name: a\nmodel: m\ntools:\n  - type: mcp\n    server_label: x\n"))
    assert "tools[0].server_url: required key 'server_url' is missing; add it" in message


def test_missing_model_and_bad_name(tmp_path: Path) -> None:
    assert "model: required key 'model' is missing" in _error(_folder(tmp_path, "name: a\n"))
    assert _error(_folder(tmp_path, "name: Bad Name\nmodel: m\n")).split(": ")[1] == "name"


def test_instructions_and_prompt_together_is_an_error(tmp_path: Path) -> None:
    message = _error(_folder(tmp_path, "name: a\nmodel: m\ninstructions: x\nprompt: {id: pmpt_1}\n"))
    assert "give either instructions or prompt" in message


def test_files_the_spec_names_must_exist(tmp_path: Path) -> None:
    assert "prompt.file: no file prompts/s.md" in _error(_folder(tmp_path, "name: a\nmodel: m\nprompt: {file: s.md}\n"))
    assert "needs a tools.py" in _error(_folder(tmp_path, "name: a\nmodel: m\ntools: [{type: functions}]\n"))
    assert "needs a knowledge/ folder" in _error(_folder(tmp_path, "name: a\nmodel: m\ntools: [{type: file_search}]\n"))
    escape = "name: a\nmodel: m\nprompt: {file: ../agent.yaml}\n"
    (tmp_path / "prompts").mkdir()
    assert "prompt.file" in _error(_folder(tmp_path, escape))


def test_knowledge_globs_stay_inside_the_folder(tmp_path: Path) -> None:
    message = _error(_folder(tmp_path, "name: a\nmodel: m\nknowledge: ['**/*.md', '../../*']\n"))
    assert "knowledge: " in message and "must be a glob inside knowledge/" in message


def test_yaml_syntax_error_is_one_line(tmp_path: Path) -> None:
    assert "invalid YAML" in _error(_folder(tmp_path, "name: [a\n"))


def test_env_substitution_and_lazy_environments(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        "name: a\nmodel: ${env.AGENT_MODEL:=qwen}\ntools:\n  - type: mcp\n    server_label: d\n"
        "    server_url: http://127.0.0.1:9/mcp\n    authorization: ${env.MCP_TOKEN}\n"
        "environments:\n  local: {}\n  prod:\n    base_url: https://x/v1\n    api_key: ${env.PROD_KEY}\n"
        "    models: {qwen: gpt-4o-mini}\n",
    )
    spec = load_spec(folder, {"MCP_TOKEN": "t0k"})  # PROD_KEY unset: fine until prod is chosen
    assert spec.model == "qwen"
    assert isinstance(spec.tools[0], McpTool) and spec.tools[0].authorization == "t0k"
    assert spec.environment("local", {}).base_url is None
    with pytest.raises(ConfigError) as caught:
        spec.environment("prod", {})
    assert "environments.prod.api_key" in str(caught.value) and "PROD_KEY" in str(caught.value)
    prod = spec.environment("prod", {"PROD_KEY": "k"})
    assert prod.api_key == "k" and prod.models == {"qwen": "gpt-4o-mini"}
    assert "no such environment; use one of: local, prod" in str(
        pytest.raises(ConfigError, spec.environment, "stg").value
    )
    assert "MCP_TOKEN" in _error(folder, {})  # unset in the agent's own keys: an error at load


def test_an_environment_mistake_names_its_key(tmp_path: Path) -> None:
    spec = load_spec(_folder(tmp_path, "name: a\nmodel: m\nenvironments:\n  prod: {base_url: x, modles: {}}\n"), {})
    with pytest.raises(ConfigError) as caught:
        spec.environment("prod", {})
    assert str(caught.value).endswith("environments.prod.modles: unknown key 'modles'; did you mean 'models'?")


# ---- knowledge sync plan ------------------------------------------------------------------------------


def _local(path: str, digest: str) -> KnowledgeFile:
    return KnowledgeFile(path, digest, Path(path))


def test_plan_uploads_only_new_content_and_keeps_the_old() -> None:
    attached = [
        Attached("file-a", "a.md", "h1"),  # unchanged
        Attached("file-b", "b.md", "old"),  # changed: the new content is uploaded, the old kept for old versions
        Attached("file-c", "c.md", "h3"),  # removed locally: kept too
        Attached("file-d", None, None),  # not ours (no attributes)
        Attached("file-a2", "a.md", "h1"),  # a second copy of a.md's content
        Attached("file-e", "e.md", "h5", status="failed"),  # failed ingestion: detached, uploaded again
        Attached("file-f", "f.md", "h6", status="in_progress"),  # still ingesting: waited for
    ]
    local = [_local("a.md", "h1"), _local("b.md", "h2"), _local("new.md", "h4"), _local("e.md", "h5")]
    local += [_local("f.md", "h6"), _local("renamed.md", "h3"), _local("copy.md", "h4")]
    result = plan(local, attached)
    assert [f.path for f in result.upload] == ["b.md", "new.md", "e.md"]  # copy.md shares new.md's content
    assert sorted(a.file_id for a in result.detach) == ["file-a2", "file-d", "file-e"]
    assert result.unchanged == ["a.md", "f.md", "renamed.md"]
    assert [a.file_id for a in result.superseded] == ["file-b"]
    assert [a.file_id for a in result.waiting] == ["file-f"]


def test_knowledge_filter_admits_exactly_the_hashes() -> None:
    flt = knowledge_filter(["h2", "h1", "h2"])
    assert flt == {"type": "in", "key": "sha256", "value": ["h1", "h2"]}
    chunk = {"sha256": "h1", "path": "a.md"}
    assert matches(ComparisonFilter.model_validate(flt), chunk)
    assert not matches(ComparisonFilter.model_validate(flt), {"sha256": "h3"})
    assert not matches(ComparisonFilter.model_validate(knowledge_filter([])), chunk)  # no knowledge: no results


def test_a_version_filter_for_every_knowledge_file_fits_a_definition() -> None:
    hashes = [f"{i:064x}" for i in range(10_000)]  # the folder's limit
    tool = {"type": "file_search", "vector_store_ids": ["vs_1"], "filters": knowledge_filter(hashes)}
    assert AgentDefinition.model_validate({"name": "a", "model": "m", "tools": [tool]}).tools[0] == tool
    big = {"type": "function", "name": "f", "parameters": {"enum": hashes}}
    with pytest.raises(ValueError, match="tools\\[0\\] is over 64000 characters"):
        AgentDefinition.model_validate({"name": "a", "model": "m", "tools": [big]})


def test_plan_is_idempotent() -> None:
    local = [_local("a.md", "h1"), _local("dir/b.txt", "h2")]
    after = [Attached(f"file-{i}", f.path, f.sha256) for i, f in enumerate(local)]
    again = plan(local, after)
    assert again.upload == [] and again.detach == [] and again.unchanged == ["a.md", "dir/b.txt"]


def test_knowledge_files_hash_content_and_skip_hidden(tmp_path: Path) -> None:
    (tmp_path / "knowledge" / "sub").mkdir(parents=True)
    (tmp_path / "knowledge" / "a.md").write_text("alpha")
    (tmp_path / "knowledge" / "sub" / "b.txt").write_text("beta")
    (tmp_path / "knowledge" / ".hidden.md").write_text("x")
    (tmp_path / "secret.md").write_text("not knowledge")
    (tmp_path / "knowledge" / "link.md").symlink_to(tmp_path / "secret.md")
    files = knowledge_files(tmp_path, ["**/*.md", "**/*.txt", "**/*.md"])
    assert [f.path for f in files] == ["a.md", "sub/b.txt"]
    assert files[0].sha256 == "8ed3f6ad685b959ead7022518e1af76cd816f8e8ec7ccdda1ed4018e8f2223f8"
    assert store_name("bakery", "local") == "agent-bakery-local"


# ---- tools.py -----------------------------------------------------------------------------------------


def test_function_schema_from_hints_and_docstring(tmp_path: Path) -> None:
    (tmp_path / "tools.py").write_text(
        'def lookup(order_id: str, limit: int = 3) -> str:\n    """Find an order.\n\n    More text."""\n'
        "    return f'{order_id}:{limit}'\n\n"
        "def _private() -> None: ...\n\n"
        "async def slow(x: float) -> dict:\n    return {'x': x * 2}\n"
    )
    functions = load_functions(tmp_path / "tools.py")
    assert sorted(functions) == ["lookup", "slow"]
    tool = functions["lookup"].tool()
    assert tool["description"] == "Find an order."
    assert tool["parameters"]["required"] == ["order_id"]
    assert tool["parameters"]["properties"]["limit"] == {"type": "integer", "default": 3}
    assert functions["lookup"].invoke('{"order_id": "A-1"}') == "A-1:3"
    assert functions["slow"].invoke('{"x": 2}') == '{"x": 4.0}'
    assert functions["lookup"].invoke('{"limit": "many"}').startswith("error: invalid arguments for lookup")
    assert functions["lookup"].invoke("not json").startswith("error: invalid arguments")
    with pytest.raises(ConfigError, match="no function 'nope'"):
        load_functions(tmp_path / "tools.py", ["nope"])


def test_a_raising_function_reports_to_the_model() -> None:
    def boom(x: int) -> int:
        """Always fails."""
        raise ValueError("no such thing")

    assert function_from_callable(boom).invoke('{"x": 1}') == "error: boom failed: ValueError: no such thing"


# ---- evals and the CLI --------------------------------------------------------------------------------


def test_eval_cases_and_matching(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"input": "q", "expected": "Six"}\n\n{"input": "r", "expected_regex": "^a+$"}\n')
    cases = load_cases(tmp_path)
    assert [w.rsplit(":", 1)[1] for w, _ in cases] == ["1", "3"]
    assert passes(cases[0][1], "it is six.") and not passes(cases[1][1], "ab")
    (tmp_path / "b.jsonl").write_text('{"input": "q"}\n')
    with pytest.raises(ValueError, match=r"b.jsonl:1: expected: give expected"):
        load_cases(tmp_path)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "underlay", "agent", "run", str(tmp_path), "hi"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "agent.yaml: file not found" in result.stderr
    (tmp_path / SPEC_FILE).write_text("name: a\nmodel: m\nenvironments:\n  s: {base_url: 'http://127.0.0.1:9/v1'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "underlay", "agent", "run", str(tmp_path), "hi", "--env", "s"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: ")


def test_file_search_over_named_stores_maps_per_environment(tmp_path: Path) -> None:
    spec = load_spec(_folder(tmp_path, "name: a\nmodel: m\ntools: [{type: file_search, vector_stores: [docs]}]\n"), {})
    assert isinstance(spec.tools[0], FileSearchTool) and not spec.uses_knowledge()


def test_a_folder_converts_to_the_agents_api_definition(tmp_path: Path) -> None:
    from underlay.agents import Agent

    folder = tmp_path / "desk"
    write_template(folder, "support")
    text = (folder / SPEC_FILE).read_text()
    text = text.replace(
        "    api_key: ${env.UNDERLAY_API_KEY:=none}\n", "    models: {qwen2.5-coder-0.5b-instruct: big}\n"
    )
    (folder / SPEC_FILE).write_text(text)
    agent = Agent.from_dir(folder, "server", client=object(), environ={}, sync=False)  # makes no request
    definition = agent.to_definition()
    assert definition.name == "desk" and definition.model == "big"
    assert definition.instructions is not None and "support assistant of Lumen Bakery" in definition.instructions
    function = next(t for t in definition.tools if t["type"] == "function")
    assert function["name"] == "order_status" and function["parameters"]["required"] == ["order_id"]
    assert definition.knowledge is None  # not synced: no store to point at

    agent.model = ""
    with pytest.raises(ValueError, match=r"^agent desk: model: "):
        agent.to_definition()
