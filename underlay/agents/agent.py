"""``Agent``: run turns of an agent through the Responses API, streamed, with client functions run here.

Why the Responses API and not a loop of our own: the server already runs the server-side tools
(file_search, mcp, web_search) and shields inside one response, so the same agent behaves the same
through this class, a deployed agent, or any OpenAI client. What only the caller can do is run its own
functions: when a response ends with ``function_call`` items, each is run locally and the outputs are
sent back as ``function_call_output`` in a follow-up response, until the model answers in text.

The client is any ``openai.OpenAI`` (an ``Underlay`` in process or against a URL); events are small
typed dataclasses so a CLI or a UI can show text and tool calls as they happen.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from underlay.agents.functions import ClientFunction, function_from_callable, load_functions
from underlay.agents.spec import (
    AgentSpec,
    FileSearchTool,
    FunctionTools,
    McpTool,
    WebSearchTool,
    load_spec,
    render_template,
)

if TYPE_CHECKING:
    from underlay.api.agents import AgentDefinition

__all__ = ["Agent", "TextDelta", "ToolCall", "ToolResult", "TurnDone"]

MAX_FUNCTION_ROUNDS = 8
_SERVER_TOOL_ITEMS = {"file_search_call", "mcp_call", "web_search_call"}


@dataclass(frozen=True)
class TextDelta:
    """A piece of the answer as the model writes it."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """A tool call as it starts: ``kind`` is file_search_call, mcp_call, web_search_call or function_call."""

    kind: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolResult:
    """A client function's output, run here and sent back to the model."""

    name: str
    output: str


@dataclass(frozen=True)
class TurnDone:
    """The turn's end: the whole answer and the last response's id."""

    text: str
    response_id: str


AgentEvent = TextDelta | ToolCall | ToolResult | TurnDone


class Agent:
    """An agent bound to a client. ``tools`` are Responses API tool dicts or plain Python functions
    (run locally when the model calls them)."""

    def __init__(
        self,
        client: Any,
        *,
        model: str,
        instructions: str | None = None,
        prompt: Mapping[str, Any] | None = None,
        tools: list[dict[str, Any] | Callable[..., Any]] | None = None,
        tool_choice: Any = None,
        guardrails: list[str] | None = None,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        max_infer_iters: int | None = None,
        name: str = "agent",
    ) -> None:
        self.client = client
        self.name = name
        self.model = model
        self.instructions = instructions
        self.prompt = dict(prompt) if prompt else None
        self.tools: list[dict[str, Any]] = []
        self.functions: dict[str, ClientFunction] = {}
        for tool in tools or []:
            if callable(tool):
                self.add_function(function_from_callable(tool))
            else:
                self.tools.append(dict(tool))
        self.tool_choice = tool_choice
        self.guardrails = guardrails or []
        self.temperature = temperature
        self.max_output_tokens = max_output_tokens
        self.max_infer_iters = max_infer_iters
        self.spec: AgentSpec | None = None
        self.vector_store_id: str | None = None
        self._owns_client = False

    def add_function(self, function: ClientFunction) -> None:
        self.functions[function.name] = function
        self.tools.append(function.tool())

    # ---- from a folder ----------------------------------------------------------------------------------

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        env: str = "local",
        *,
        client: Any = None,
        environ: Mapping[str, str] | None = None,
        sync: bool = True,
    ) -> Agent:
        """Load an agent folder and bind it to environment ``env``: with no ``client``, one is made for
        it (the embedded stack in process when the environment has no ``base_url``; closed by
        :meth:`close`). Knowledge is synced first unless ``sync=False``."""
        environ = environ if environ is not None else os.environ
        spec = load_spec(path, environ)
        environment = spec.environment(env, environ)
        owns = client is None
        if client is None:
            client = _client_for(spec, environment, environ)
        try:
            agent = cls._bind(spec, env, environment, client, sync)
        except BaseException:
            if owns:
                client.close()
            raise
        agent._owns_client = owns
        return agent

    @classmethod
    def _bind(cls, spec: AgentSpec, env: str, environment: Any, client: Any, sync: bool) -> Agent:
        from underlay.agents.sync import sync_knowledge

        tools: list[dict[str, Any]] = []
        functions: dict[str, ClientFunction] = {}
        store_id: str | None = None
        if sync and spec.uses_knowledge():
            store_id = sync_knowledge(client, spec.root, spec.name, env, spec.knowledge).vector_store_id
        for tool in spec.tools:
            if isinstance(tool, FileSearchTool):
                ids = [environment.vector_stores.get(s, s) for s in tool.vector_stores]
                if not tool.vector_stores and store_id is not None:
                    ids = [store_id]
                entry: dict[str, Any] = {"type": "file_search", "vector_store_ids": ids}
                if tool.max_num_results is not None:
                    entry["max_num_results"] = tool.max_num_results
                tools.append(entry)
            elif isinstance(tool, McpTool):
                mcp: dict[str, Any] = {
                    "type": "mcp", "server_label": tool.server_label, "server_url": tool.server_url,
                    "require_approval": "never",
                }  # fmt: skip
                if tool.authorization:
                    mcp["authorization"] = tool.authorization
                if tool.headers:
                    mcp["headers"] = tool.headers
                if tool.allowed_tools is not None:
                    mcp["allowed_tools"] = tool.allowed_tools
                tools.append(mcp)
            elif isinstance(tool, FunctionTools):
                functions.update(load_functions(spec.root / "tools.py", tool.names or None))
            elif isinstance(tool, WebSearchTool):
                tools.append({"type": "web_search"})
        instructions, prompt = spec.instructions, None
        if spec.prompt is not None and spec.prompt.file is not None:
            text = (spec.root / "prompts" / spec.prompt.file).read_text(encoding="utf-8")
            instructions = render_template(text, spec.prompt.variables, source=spec.source)
        elif spec.prompt is not None:
            prompt = {"id": spec.prompt.id, "variables": spec.prompt.variables}
            if spec.prompt.version is not None:
                prompt["version"] = spec.prompt.version
        agent = cls(
            client,
            model=environment.models.get(spec.model, spec.model),
            instructions=instructions,
            prompt=prompt,
            tools=tools,
            tool_choice=_tool_choice(spec.tool_choice),
            guardrails=spec.shields,
            temperature=spec.temperature,
            max_output_tokens=spec.max_output_tokens,
            max_infer_iters=spec.max_infer_iters,
            name=spec.name,
        )
        for function in functions.values():
            agent.add_function(function)
        agent.spec = spec
        agent.vector_store_id = store_id
        return agent

    # ---- turns ----------------------------------------------------------------------------------------

    def stream(self, input: str | list[Any], *, conversation: str | None = None) -> Iterator[AgentEvent]:
        """One turn, as events: text deltas and tool calls as they happen, client functions run here,
        and a final :class:`TurnDone`. With ``conversation`` the turn is added to that conversation."""
        request_input: Any = input
        previous: str | None = None
        text_parts: list[str] = []
        tool_choice = self.tool_choice
        for _ in range(MAX_FUNCTION_ROUNDS):
            calls: list[Any] = []
            response_id = ""
            stream = self.client.responses.create(
                **self._request(request_input, previous, conversation, tool_choice), stream=True
            )
            for event in stream:
                kind = event.type
                if kind == "response.output_text.delta":
                    text_parts.append(event.delta)
                    yield TextDelta(event.delta)
                elif kind == "response.output_item.added" and event.item.type in _SERVER_TOOL_ITEMS:
                    yield ToolCall(event.item.type, _server_tool_name(event.item), "")
                elif kind == "response.output_item.done" and event.item.type == "function_call":
                    calls.append(event.item)
                    yield ToolCall("function_call", event.item.name, event.item.arguments)
                elif kind in ("response.completed", "response.incomplete"):
                    response_id = event.response.id
                elif kind == "response.failed":
                    error = event.response.error
                    raise RuntimeError(
                        f"agent {self.name}: the response failed: {error.message if error else 'unknown'}"
                    )
                elif kind == "error":
                    raise RuntimeError(f"agent {self.name}: {getattr(event, 'message', 'stream error')}")
            if not calls:
                yield TurnDone("".join(text_parts), response_id)
                return
            outputs = []
            for call in calls:
                function = self.functions.get(call.name)
                output = function.invoke(call.arguments) if function else f"error: no client function {call.name!r}"
                yield ToolResult(call.name, output)
                outputs.append({"type": "function_call_output", "call_id": call.call_id, "output": output})
            request_input, previous, tool_choice = outputs, (None if conversation else response_id), None
        raise RuntimeError(f"agent {self.name}: still calling functions after {MAX_FUNCTION_ROUNDS} rounds")

    def run(self, input: str | list[Any], *, conversation: str | None = None) -> TurnDone:
        """One turn, waited for: the final :class:`TurnDone`."""
        done: TurnDone | None = None
        for event in self.stream(input, conversation=conversation):
            if isinstance(event, TurnDone):
                done = event
        assert done is not None  # stream() always ends with TurnDone or raises
        return done

    def _request(self, input: Any, previous: str | None, conversation: str | None, tool_choice: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "input": input}
        if self.instructions is not None:
            body["instructions"] = self.instructions
        if self.prompt is not None:
            body["prompt"] = self.prompt
        if self.tools:
            body["tools"] = self.tools
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_output_tokens is not None:
            body["max_output_tokens"] = self.max_output_tokens
        if previous:
            body["previous_response_id"] = previous
        if conversation:
            body["conversation"] = conversation
        extra: dict[str, Any] = {}
        if self.guardrails:
            extra["guardrails"] = self.guardrails
        if self.max_infer_iters is not None:
            extra["max_infer_iters"] = self.max_infer_iters
        if extra:
            body["extra_body"] = extra
        return body

    def to_definition(self) -> AgentDefinition:
        """This agent, as bound to its environment, as the Agents API's definition (what ``underlay agent
        deploy`` sends to ``/v1/agents``): the environment's model and store ids, the rendered template or
        the stored prompt's reference, client functions as declared function tools, and each knowledge
        file's sha256. Raises ``ValueError`` naming the field when the server would refuse it."""
        from pydantic import ValidationError

        from underlay.agents.sync import knowledge_files
        from underlay.api.agents import AgentDefinition

        spec = self.spec
        body: dict[str, Any] = {"name": self.name, "model": self.model, "tools": self.tools}
        if spec is not None and spec.description:
            body["description"] = spec.description
        if self.instructions is not None:
            body["instructions"] = self.instructions
        if self.prompt is not None:
            prompt = dict(self.prompt)
            if prompt.get("version") is not None:
                prompt["version"] = int(prompt["version"])  # the Prompts API counts versions from 1
            body["prompt"] = prompt
        body["guardrails"] = self.guardrails
        for key in ("temperature", "max_output_tokens"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if self.vector_store_id is not None and spec is not None:
            files = {f.path: f.sha256 for f in knowledge_files(spec.root, spec.knowledge)}
            body["knowledge"] = {"vector_store_id": self.vector_store_id, "files": files}
        try:
            return AgentDefinition.model_validate(body)
        except (ValidationError, ValueError) as exc:
            first = exc.errors()[0] if isinstance(exc, ValidationError) else None
            where = ".".join(str(p) for p in first["loc"]) if first else "definition"
            reason = first["msg"] if first else str(exc)
            raise ValueError(f"agent {self.name}: {where}: {reason}") from None

    def close(self) -> None:
        """Close the client when :meth:`from_dir` made it (stopping an in-process stack)."""
        if self._owns_client:
            self._owns_client = False
            self.client.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _tool_choice(value: str | None) -> Any:
    if value is None or value in ("auto", "required", "none"):
        return value
    return {"type": value}


def _server_tool_name(item: Any) -> str:
    if item.type == "mcp_call":
        return f"{getattr(item, 'server_label', '')}.{getattr(item, 'name', '')}"
    return str(item.type.removesuffix("_call"))


def _client_for(spec: AgentSpec, environment: Any, environ: Mapping[str, str]) -> Any:
    from underlay.client import Underlay

    if environment.base_url:
        return Underlay(base_url=environment.base_url, api_key=environment.api_key, timeout=600, max_retries=1)
    state = Path(environment.state_dir).expanduser()
    state = state if state.is_absolute() else spec.root / state
    config = environment.config
    if not Path(config).is_absolute() and (spec.root / config).is_file():
        config = str(spec.root / config)
    variables = {**environ, "UNDERLAY_STATE_DIR": str(state)}
    return Underlay.in_process(config, env=variables, timeout=600, max_retries=0)
