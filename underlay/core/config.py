"""Run configs: YAML validated by pydantic, with ``${env.NAME}`` substitution.

Substitution forms (in any string value):

- ``${env.NAME}``: the variable's value; an error if it is unset.
- ``${env.NAME:=default}``: the value, or ``default`` when unset or empty.
- ``${env.NAME:+value}``: ``value`` when NAME is set and non-empty, else the empty string. A provider
  whose ``provider_id`` resolves empty is switched off, which is how ``starter`` turns remote
  providers on from the environment.

Every problem is a :class:`ConfigError` whose message is one line naming the file, the key and the fix.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from underlay.api.errors import ConfigError as ConfigError  # re-exported: its home was here
from underlay.api.models import ModelType
from underlay.core.access.config import AccessPolicyConfig
from underlay.core.auth.config import AuthConfig
from underlay.core.quotas.config import QuotaConfig
from underlay.core.telemetry.config import TelemetryConfig
from underlay.core.transport import TlsConfig

_ENV_PATTERN = re.compile(r"\$\{env\.([A-Za-z_][A-Za-z0-9_]*)(?:(:[=+])([^}]*))?\}")
DISTRIBUTIONS_DIR = Path(__file__).parent / "distributions"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderConfig(_Strict):
    provider_id: str
    provider_type: str
    config: dict[str, Any] = Field(default_factory=dict)


class ModelRegistration(_Strict):
    model_id: str
    provider_id: str
    provider_model_id: str | None = None
    model_type: ModelType = ModelType.llm
    aliases: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class McpStdioRegistration(_Strict):
    """A local MCP server started as a subprocess speaking MCP on stdin/stdout."""

    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None


class ToolGroupRegistration(_Strict):
    """A tool group declared in the run config: an MCP server reached by URL or started over stdio.

    ``headers`` and ``authorization`` (sent as ``Authorization: Bearer ...``) go to the server on every
    request; callers may override them per request. A group whose ``toolgroup_id`` or ``provider_id``
    resolves empty is switched off, like a provider.
    """

    toolgroup_id: str
    provider_id: str
    mcp_endpoint: str | None = Field(default=None, description="The server's URL (or {uri: URL}).")
    transport: Literal["streamable_http", "sse"] | None = Field(
        default=None, description="Default streamable_http; sse when the URL path ends in /sse."
    )
    stdio: McpStdioRegistration | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    authorization: str | None = None
    timeout: float | None = Field(default=None, gt=0, description="Seconds per tool call (default: the provider's).")
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("mcp_endpoint", mode="before")
    @classmethod
    def _uri(cls, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"uri"}:
            return value["uri"]
        return value or None

    @model_validator(mode="after")
    def _one_server(self) -> ToolGroupRegistration:
        if self.mcp_endpoint is not None and self.stdio is not None:
            raise ValueError("give either mcp_endpoint or stdio, not both")
        return self


class StorageConfig(_Strict):
    kvstore: dict[str, Any] = Field(default_factory=lambda: {"type": "sqlite", "path": "kvstore.db"})
    sqlstore: dict[str, Any] = Field(default_factory=lambda: {"type": "sqlite", "path": "sqlstore.db"})


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8321, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    max_request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    cors_origins: list[str] = Field(default_factory=list)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per line with the request id, secrets redacted."
    )
    tls: TlsConfig | None = Field(default=None, description="Serve HTTPS (and require client certificates).")
    auth: AuthConfig | None = Field(default=None, description="Authenticate every request but health and version.")
    quotas: QuotaConfig | None = Field(default=None, description="Per-principal rate limits and quotas.")
    console: bool = Field(default=True, description="Serve the web console at / (its assets under /console/).")


class InferenceSettings(_Strict):
    store_chat_completions: bool = Field(
        default=False, description="Store every chat completion, not only those sent with store=true."
    )
    model_discovery_timeout: float = Field(default=5.0, ge=0)


class FilesSettings(_Strict):
    """The Files API's limits; uploads are streamed, so the size limit is about storage, not memory."""

    max_upload_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1, description="Largest file POST /v1/files accepts (413 past it)."
    )
    min_expires_after_seconds: int = Field(
        default=3600, ge=1, description="Shortest expires_after a client may ask for (OpenAI's is 3600)."
    )
    batch_expires_after_seconds: int | None = Field(
        default=2_592_000,
        ge=1,
        description="Default expiry of purpose=batch files, as OpenAI (30 days); null keeps them.",
    )
    expiry_sweep_seconds: float = Field(default=60.0, gt=0, description="How often expired files are removed.")


class JobsSettings(_Strict):
    """Durable jobs (file ingestion, ...): how many run at once per process and how leases behave."""

    workers: int = Field(
        default=2, ge=0, description="Shared workers: jobs of any lane, interactive first (0: claim none)."
    )
    reserved_workers: dict[Literal["interactive", "bulk", "training"], Annotated[int, Field(ge=0, le=256)]] = Field(
        default_factory=lambda: dict[Literal["interactive", "bulk", "training"], int](
            {"interactive": 1, "training": 1}
        ),
        description="Extra workers per lane that claim only that lane, so bulk work never takes them all; "
        "training jobs run only on these (how many train at once).",
    )
    lease_seconds: float = Field(
        default=30.0, ge=1, description="How long a job of a dead process stays running before it is resumed."
    )
    poll_seconds: float = Field(
        default=0.5, gt=0, description="How soon idle workers first look again for jobs queued by other processes."
    )
    poll_max_seconds: float = Field(
        default=5.0,
        gt=0,
        description="The longest wait between looks while nothing is found: the wait doubles from poll_seconds "
        "up to this, so a job queued by another process waits at most this long for an idle worker.",
    )


class VectorStoresSettings(_Strict):
    default_embedding_model: str | None = Field(
        default=None, description="Embedding model for new vector stores (default: the first embedding model)."
    )
    rewrite_model: str | None = Field(
        default=None, description="Chat model for rewrite_query (default: the first llm)."
    )
    embed_batch_size: int = Field(default=32, ge=1, le=2048, description="Chunks per embeddings call.")
    max_attempts: int = Field(default=3, ge=1, description="Ingestion attempts before a file fails for good.")


class BatchesSettings(_Strict):
    """How hard one batch may push: its lines share the providers with live traffic."""

    concurrency: int = Field(
        default=4, ge=1, le=64, description="Lines of one batch in flight at once (each batch job has its own)."
    )
    max_lines: int = Field(
        default=50_000, ge=1, le=50_000, description="Requests one batch may hold; a longer file fails on that line."
    )
    native_poll_seconds: float = Field(
        default=30.0, ge=0.05, le=3600, description="How often a passed-through batch asks its upstream for news."
    )


class ShieldRegistration(_Strict):
    shield_id: str
    provider_id: str
    provider_shield_id: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class SafetySettings(_Strict):
    default_moderation_shield: str | None = Field(
        default=None, description="The shield /v1/moderations uses when the request names no model."
    )
    default_guardrails: list[str] = Field(
        default_factory=list, description="Shields run on every chat completion that sends no guardrails."
    )
    failure_policy: Literal["closed", "open"] = Field(
        default="closed", description="A shield that fails or times out: closed refuses, open passes with a warning."
    )
    shield_timeout_seconds: float = Field(default=30.0, gt=0)
    stream_buffer_chars: int = Field(
        default=200,
        ge=1,
        description="Streamed text held back at most this long (or to a sentence end) before a check.",
    )


class RunConfig(_Strict):
    version: int = 1
    distribution: str = "custom"
    state_dir: str = "~/.underlay/custom"
    apis: list[str] = Field(default_factory=lambda: ["inference", "models"])
    apis_dir: str | None = Field(
        default=None,
        description="A folder of API packages (each exports APIS, and optionally PROVIDERS); relative to this file.",
    )
    providers: dict[str, list[ProviderConfig]] = Field(default_factory=dict)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    models: list[ModelRegistration] = Field(default_factory=list)
    server: ServerConfig = Field(default_factory=ServerConfig)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    vector_stores: VectorStoresSettings = Field(default_factory=VectorStoresSettings)
    batches: BatchesSettings = Field(default_factory=BatchesSettings)
    tool_groups: list[ToolGroupRegistration] = Field(default_factory=list)
    shields: list[ShieldRegistration] = Field(default_factory=list)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    access_policy: AccessPolicyConfig = Field(default_factory=AccessPolicyConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    source: str = Field(default="<memory>", exclude=True)

    def state_path(self, name: str) -> Path:
        """A path inside the state directory (created on demand)."""
        base = Path(os.path.expanduser(self.state_dir))
        base.mkdir(parents=True, exist_ok=True)
        return base / name


# ---------------------------------------------------------------------------------------------------


def substitute_env(value: Any, env: Mapping[str, str], *, source: str = "<memory>", key: str = "") -> Any:
    """Recursively resolve ``${env...}`` references in strings."""
    if isinstance(value, dict):
        return {k: substitute_env(v, env, source=source, key=f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, env, source=source, key=f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = env.get(name)
        if op == ":=":
            return current if current else (arg or "")
        if op == ":+":
            return (arg or "") if current else ""
        if current is None:
            raise ConfigError(
                f"{source}: {key}: environment variable {name} is not set; "
                f"export {name}=... or write ${{env.{name}:=default}}"
            )
        return current

    resolved = _ENV_PATTERN.sub(replace, value)
    if "${" in resolved and _looks_like_bad_reference(resolved):
        raise ConfigError(
            f"{source}: {key}: cannot parse '{value}'; use ${{env.NAME}}, ${{env.NAME:=default}} "
            "or ${env.NAME:+value}"
        )
    return resolved


def _looks_like_bad_reference(text: str) -> bool:
    return re.search(r"\$\{[^}]*\}", text) is not None


def _describe_location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


_SECRET_KEY = re.compile(r"secret|password|passwd|token|api_?key|credential|authorization", re.IGNORECASE)


def _fix_hint(error: Mapping[str, Any], model: type[BaseModel]) -> str:
    kind = error["type"]
    loc = tuple(error["loc"])
    if kind == "extra_forbidden":
        name = str(loc[-1])
        _, fields = _walk(model, loc[:-1])
        close = difflib.get_close_matches(name, fields, n=1)
        if close:
            return f"unknown key '{name}'; did you mean '{close[0]}'?"
        return f"unknown key '{name}'; allowed keys: {', '.join(sorted(fields)) or 'none'}"
    if kind == "missing":
        return f"required key '{loc[-1]}' is missing; add it"
    if loc and _SECRET_KEY.search(str(loc[-1])):  # never print what may be a secret
        return f"{error['msg']}; fix the value"
    shown = repr(error.get("input"))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{error['msg']} (got {shown}); fix the value"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, list[...], unions, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or getattr(annotation, "__metadata__", ()):
        found.extend(m for m in _models_in(arg) if m not in found)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and not found:
        found.extend(_models_in(origin))
    return found


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], list[str]]:
    """Follow ``loc`` through the models: the location a person wrote (pydantic's union tags, such as a
    provider's ``type`` value, dropped) and the keys allowed where it ends."""
    candidates: list[type[BaseModel]] = [model]
    written: list[Any] = []
    for part in loc:
        if isinstance(part, int):
            written.append(part)
            continue
        by_field = [c for c in candidates if str(part) in c.model_fields]
        if by_field:
            written.append(part)
            candidates = _models_in(by_field[0].model_fields[str(part)].annotation)
            continue
        tagged = [c for c in candidates if _tag_of(c) == str(part)]
        if tagged:  # a discriminated union's tag: not a key in the file
            candidates = tagged
            continue
        written.append(part)  # a mapping's key (e.g. the API name under ``providers``): same models below
    fields = list(candidates[0].model_fields) if len(candidates) == 1 else []
    return tuple(written), fields


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is None:
        return None
    values: tuple[Any, ...] = getattr(field.annotation, "__args__", ())
    return str(values[0]) if len(values) == 1 else (str(field.default) if isinstance(field.default, str) else None)


def validation_error_line(source: str, error: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line for the first problem pydantic found."""
    first = error.errors()[0]
    where = _describe_location(_walk(model, tuple(first["loc"]))[0])
    key = f"{prefix}.{where}" if prefix and where != "<root>" else (prefix or where)
    return f"{source}: {key}: {_fix_hint(first, model)}"


def parse_run_config(data: Any, *, source: str = "<memory>", env: Mapping[str, str] | None = None) -> RunConfig:
    """Validate an already-loaded YAML document into a :class:`RunConfig`."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: <root>: expected a mapping of keys (apis, providers, ...); got {type(data).__name__}"
        )
    resolved = substitute_env(data, env if env is not None else os.environ, source=source)
    providers = resolved.get("providers") or {}
    if isinstance(providers, dict):
        for api, entries in providers.items():
            if isinstance(entries, list):
                providers[api] = [e for e in entries if not (isinstance(e, dict) and e.get("provider_id") == "")]
    if isinstance(resolved.get("models"), list):
        # Models registered against a switched-off provider are switched off with it.
        resolved["models"] = [m for m in resolved["models"] if not (isinstance(m, dict) and m.get("provider_id") == "")]
    if isinstance(resolved.get("shields"), list):  # shields of a switched-off provider are switched off with it
        resolved["shields"] = [
            s for s in resolved["shields"] if not (isinstance(s, dict) and s.get("provider_id") == "")
        ]
    if isinstance(resolved.get("tool_groups"), list):
        resolved["tool_groups"] = [
            g
            for g in resolved["tool_groups"]
            if not (isinstance(g, dict) and "" in (g.get("toolgroup_id"), g.get("provider_id")))
        ]
    try:
        config = RunConfig.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(validation_error_line(source, exc, RunConfig)) from None
    config.source = source
    seen: set[str] = set()
    for api, entries in config.providers.items():
        for index, entry in enumerate(entries):
            if entry.provider_id in seen:
                raise ConfigError(
                    f"{source}: providers.{api}[{index}].provider_id: '{entry.provider_id}' is used twice; "
                    "give each provider a unique id"
                )
            seen.add(entry.provider_id)
    for index, model in enumerate(config.models):
        if model.provider_id not in seen:
            raise ConfigError(
                f"{source}: models[{index}].provider_id: no provider '{model.provider_id}' is configured; "
                f"use one of: {', '.join(sorted(seen)) or 'none'}"
            )
    tool_runtime = sorted(e.provider_id for e in config.providers.get("tool_runtime", []))
    group_ids: set[str] = set()
    for index, group in enumerate(config.tool_groups):
        if group.provider_id not in tool_runtime:
            raise ConfigError(
                f"{source}: tool_groups[{index}].provider_id: no tool_runtime provider '{group.provider_id}' is "
                f"configured; use one of: {', '.join(tool_runtime) or 'none (add one under providers.tool_runtime)'}"
            )
        if group.toolgroup_id in group_ids:
            raise ConfigError(
                f"{source}: tool_groups[{index}].toolgroup_id: '{group.toolgroup_id}' is used twice; "
                "give each tool group a unique id"
            )
        group_ids.add(group.toolgroup_id)
    return config


def list_distributions() -> list[str]:
    return sorted(p.stem for p in DISTRIBUTIONS_DIR.glob("*.yaml"))


def _dists() -> str:
    return ", ".join(list_distributions())


def resolve_config_path(name_or_path: str | None) -> Path:
    """A distribution name (``local``) or a path to a YAML file."""
    target = name_or_path or "local"
    candidate = Path(target).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"{target}: file not found; pass a distribution ({_dists()}) or a YAML path")
        return candidate
    shipped = DISTRIBUTIONS_DIR / f"{target}.yaml"
    if not shipped.is_file():
        raise ConfigError(f"{target}: no such distribution; choose one of {_dists()} or pass a YAML path")
    return shipped


def load_run_config(name_or_path: str | None = None, env: Mapping[str, str] | None = None) -> RunConfig:
    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_line(str(path), exc)) from None
    return parse_run_config(data, source=str(path), env=env)


_UNQUOTED_REFERENCE = re.compile(r"\$\{env\.[^}\s]*\}")


def yaml_error_line(source: str, exc: yaml.YAMLError) -> str:
    """One line for a YAML syntax error, with the usual fix when it is an unquoted ``${env...}``.

    Inside a flow mapping or list (``{a: b}``, ``[a, b]``) a ``{`` starts a nested mapping, so an
    unquoted ``${env.NAME}`` there is a syntax error whose raw wording ("expected ',' or '}'") does not
    hint at the cure; we name the reference and show it quoted.
    """
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}" if mark is not None else "<parse>"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None) or ""
    if mark is not None and mark.buffer is not None and "flow" in context:
        lines = mark.buffer.split("\n")
        found = _UNQUOTED_REFERENCE.search(lines[mark.line][:500]) if mark.line < len(lines) else None
        if found is not None:
            return (
                f"{source}: {where}: invalid YAML ({problem}); a ${{env...}} reference inside {{...}} or [...] "
                f"must be quoted: write '{found.group(0)}'"
            )
    return f"{source}: {where}: invalid YAML ({problem}); fix the syntax"
