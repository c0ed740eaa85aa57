"""``agent.yaml``: the pydantic model of an agent folder, and its loader.

Why a model of its own and not a run config: an agent is portable. It names *what* it needs (a model,
instructions or a prompt, tool bindings, knowledge, shields) and each environment maps that onto some
infrastructure (the embedded stack in this process, or a server URL with its own model and vector-store
names). The same file runs on a laptop offline and against production without edits.

Loading follows the run config's rules so nothing new has to be learnt: ``${env.NAME}`` (and ``:=`` /
``:+``) substitution from :func:`underlay.core.config.substitute_env`, and every mistake is one
``ConfigError`` line naming the file, the key and the fix. Environments are substituted only when one is
chosen, so a ``prod`` key that is unset on a laptop does not stop ``local`` from loading.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from underlay.core.config import ConfigError, substitute_env, validation_error_line, yaml_error_line

__all__ = [
    "SPEC_FILE",
    "AgentSpec",
    "Environment",
    "FileSearchTool",
    "FunctionTools",
    "McpTool",
    "PromptBinding",
    "WebSearchTool",
    "json_schema",
    "load_spec",
]

SPEC_FILE = "agent.yaml"
_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
MAX_SPEC_BYTES = 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptBinding(_Strict):
    """Instructions from a stored prompt (``id`` and optional ``version``) or a template in ``prompts/``."""

    id: str | None = Field(default=None, description="A stored prompt's id (Prompts API), e.g. pmpt_...")
    version: str | None = Field(default=None, description="The stored prompt's version (default: its default).")
    file: str | None = Field(default=None, description="A template under prompts/, e.g. system.md.")
    variables: dict[str, str] = Field(default_factory=dict, description="Values for the {{variable}} slots.")

    @model_validator(mode="after")
    def _one_source(self) -> PromptBinding:
        if (self.id is None) == (self.file is None):
            raise ValueError("give either id (a stored prompt) or file (a template under prompts/), not both")
        return self


class FileSearchTool(_Strict):
    """Search the folder's knowledge (no ``vector_stores``) or named vector stores."""

    type: Literal["file_search"]
    vector_stores: list[str] = Field(
        default_factory=list, description="Named vector stores; empty means the folder's knowledge/."
    )
    max_num_results: int | None = Field(default=None, ge=1, le=50)


class McpTool(_Strict):
    """An MCP server reached by URL; ``authorization`` usually comes from ``${env.NAME}``."""

    type: Literal["mcp"]
    server_label: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    server_url: str = Field(min_length=1, description="http(s) URL; may be ${env.NAME} (checked after substitution).")
    authorization: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    allowed_tools: list[str] | None = None

    @field_validator("server_url")
    @classmethod
    def _http(cls, value: str) -> str:
        # Not a schema pattern: the schema checks the file as written, where the URL may be ${env...}.
        if not value.startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL is required")
        return value


class FunctionTools(_Strict):
    """Client-side functions from the folder's ``tools.py``, run on the caller's machine."""

    type: Literal["functions"]
    names: list[str] = Field(default_factory=list, description="Which functions (default: every public one).")


class WebSearchTool(_Strict):
    type: Literal["web_search"]


Tool = Annotated[FileSearchTool | McpTool | FunctionTools | WebSearchTool, Field(discriminator="type")]


class Environment(_Strict):
    """Where the agent runs. No ``base_url``: the embedded stack of ``config`` in this process."""

    base_url: str | None = Field(default=None, description="A server's /v1 URL; omitted: in process.")
    api_key: str | None = None
    config: str = Field(default="local", description="In process only: a distribution name or run-config path.")
    state_dir: str = Field(default=".underlay", description="In process only: state, relative to the folder.")
    models: dict[str, str] = Field(default_factory=dict, description="Model names as this environment knows them.")
    vector_stores: dict[str, str] = Field(default_factory=dict, description="Named vector stores to their ids here.")


class AgentSpec(_Strict):
    """The whole of ``agent.yaml``."""

    name: str = Field(pattern=_NAME, description="Lower-case letters, digits, '-', '_' and '.'.")
    description: str = ""
    model: str = Field(min_length=1)
    instructions: str | None = None
    prompt: PromptBinding | None = None
    tools: list[Tool] = Field(default_factory=list)
    tool_choice: str | None = Field(
        default=None, description="auto, required, none, or a tool type to call first (e.g. file_search)."
    )
    knowledge: list[str] = Field(default_factory=lambda: ["**/*"], description="Globs under knowledge/.")
    shields: list[str] = Field(default_factory=list, description="Shield ids run on every model turn.")
    eval: str = Field(default="evals", description="The folder of *.jsonl eval cases.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_infer_iters: int | None = Field(default=None, ge=1, le=100)
    environments: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"local": {}},
        description="Each value is an Environment; substituted only when chosen.",
    )

    @field_validator("knowledge")
    @classmethod
    def _inside_knowledge(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern or pattern.startswith(("/", "~")) or ".." in pattern.split("/"):
                raise ValueError(f"'{pattern[:80]}' must be a glob inside knowledge/, such as '**/*.md'")
        return value

    @model_validator(mode="after")
    def _instructions_or_prompt(self) -> AgentSpec:
        if self.instructions is not None and self.prompt is not None:
            raise ValueError("give either instructions or prompt, not both")
        return self

    # Filled by load_spec: where the file was read from (not part of the file).
    _root: Path | None = None
    _source: str = SPEC_FILE

    @property
    def root(self) -> Path:
        if self._root is None:
            raise RuntimeError("this AgentSpec was not loaded from a folder")
        return self._root

    @property
    def source(self) -> str:
        return self._source

    def environment(self, name: str, env: Mapping[str, str] | None = None) -> Environment:
        """The environment ``name``, its ``${env...}`` references resolved now."""
        if name not in self.environments:
            if name == "local":
                return Environment()
            known = ", ".join(sorted(self.environments)) or "none"
            raise ConfigError(f"{self._source}: environments.{name}: no such environment; use one of: {known}")
        data = substitute_env(
            self.environments[name], env if env is not None else os.environ, source=self._source,
            key=f"environments.{name}",
        )  # fmt: skip
        try:
            return Environment.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(validation_error_line(self._source, exc, Environment, f"environments.{name}")) from None

    def uses_knowledge(self) -> bool:
        return any(isinstance(t, FileSearchTool) and not t.vector_stores for t in self.tools)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``agent.yaml`` (shipped as ``agent.schema.json``, checked current by a test)."""
    schema = AgentSpec.model_json_schema()
    schema.setdefault("$defs", {})["Environment"] = Environment.model_json_schema()
    schema["properties"]["environments"]["additionalProperties"] = {"$ref": "#/$defs/Environment"}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Underlay agent.yaml"
    return schema


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


_TEMPLATE_SLOT = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def render_template(text: str, variables: Mapping[str, str], *, source: str) -> str:
    """Fill ``{{name}}`` slots in one pass (a value is never re-read as a template); a missing one is an error."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise ConfigError(f"{source}: prompt.variables.{name}: the template uses {{{{{name}}}}}; give it a value")
        return variables[name]

    return _TEMPLATE_SLOT.sub(fill, text)


def load_spec(folder: str | Path, env: Mapping[str, str] | None = None) -> AgentSpec:
    """Read and check ``folder/agent.yaml``; every mistake is one ``ConfigError`` line."""
    root = Path(folder).expanduser().resolve()
    path = root / SPEC_FILE
    source = str(path)
    if not path.is_file():
        raise ConfigError(f"{source}: file not found; create one with `underlay agent init {folder}`")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise ConfigError(f"{source}: <root>: larger than {MAX_SPEC_BYTES} bytes; an agent.yaml is a small file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_line(source, exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: <root>: expected a mapping of keys (name, model, ...); got {type(data).__name__}")
    environments = data.pop("environments", None)
    resolved = substitute_env(data, env if env is not None else os.environ, source=source)
    if environments is not None:
        resolved["environments"] = environments
    try:
        spec = AgentSpec.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(validation_error_line(source, exc, AgentSpec)) from None
    spec._root, spec._source = root, source
    _check_files(spec)
    return spec


def _check_files(spec: AgentSpec) -> None:
    """The files the spec points at exist (caught at load time, not mid-turn)."""
    root, source = spec.root, spec.source
    if spec.prompt is not None and spec.prompt.file is not None:
        target = (root / "prompts" / spec.prompt.file).resolve()
        if not target.is_relative_to(root / "prompts") or not target.is_file():
            raise ConfigError(f"{source}: prompt.file: no file prompts/{spec.prompt.file}; create it or fix the name")
    for index, tool in enumerate(spec.tools):
        if isinstance(tool, FunctionTools) and not (root / "tools.py").is_file():
            raise ConfigError(f"{source}: tools[{index}]: type functions needs a tools.py in the folder; add one")
    if spec.uses_knowledge() and not (root / "knowledge").is_dir():
        raise ConfigError(
            f"{source}: tools: file_search over the folder's knowledge needs a knowledge/ folder; add one"
        )
