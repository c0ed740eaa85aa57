"""What :class:`~underlay.agents.Agent` and :class:`~underlay.agents.AsyncAgent` share, with no I/O.

Why a module of its own: the sync and the async agent must build the same requests, bind a folder the
same way and read a Responses stream the same way, or an agent would answer differently depending on
which class ran it. Everything that decides something lives here, once; the two classes only differ in
how they wait (a loop over ``Stream`` or ``async for`` over ``AsyncStream``, a direct call or a thread):

- :class:`AgentBase`: the agent's settings, :meth:`~AgentBase.add_function`, the Responses request body,
  binding an ``agent.yaml`` (tools, store ids, prompt) and :meth:`~AgentBase.to_definition`.
- :class:`Turn`: one turn as a state machine: the next request, each stream event mapped to an agent
  event, the function calls a round asked for and the follow-up request that answers them.
- :func:`client_for`: the client an environment needs (a URL, or the embedded stack in process), for
  either client class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from underlay.agents.functions import ClientFunction, function_from_callable, load_functions
from underlay.agents.spec import (
    AgentSpec,
    Environment,
    FileSearchTool,
    FunctionTools,
    McpTool,
    WebSearchTool,
    render_template,
)

if TYPE_CHECKING:
    from underlay.agents.sync import SyncReport
    from underlay.api.agents import AgentDefinition
    from underlay.client import AsyncUnderlay, Underlay

__all__ = [
    "MAX_FUNCTION_ROUNDS",
    "AgentBase",
    "AgentEvent",
    "TextDelta",
    "ToolCall",
    "ToolResult",
    "Turn",
    "TurnDone",
    "client_for",
    "spec_instructions",
    "spec_tools",
]

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


# ---- binding a folder ---------------------------------------------------------------------------------------


def spec_tools(
    spec: AgentSpec,
    environment: Environment,
    store_id: str | None,
    knowledge: Iterable[str] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, ClientFunction]]:
    """The folder's tools as Responses API tool dicts for ``environment`` (named stores mapped to its ids,
    ``file_search`` without stores pointed at the synced ``store_id``), and its ``tools.py`` functions.

    ``knowledge`` (the synced files' content hashes) filters the folder's ``file_search`` to exactly that
    content: the store also holds earlier versions' content, which this one must not find."""
    from underlay.agents.sync import knowledge_filter

    tools: list[dict[str, Any]] = []
    functions: dict[str, ClientFunction] = {}
    for tool in spec.tools:
        if isinstance(tool, FileSearchTool):
            ids = [environment.vector_stores.get(s, s) for s in tool.vector_stores]
            entry: dict[str, Any] = {"type": "file_search", "vector_store_ids": ids}
            if not tool.vector_stores and store_id is not None:
                entry["vector_store_ids"] = [store_id]
                if knowledge is not None:
                    entry["filters"] = knowledge_filter(knowledge)
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
    return tools, functions


def spec_instructions(spec: AgentSpec) -> tuple[str | None, dict[str, Any] | None]:
    """``(instructions, prompt)``: the rendered template of ``prompt.file``, or the stored prompt's
    reference, or the plain ``instructions``."""
    if spec.prompt is not None and spec.prompt.file is not None:
        text = (spec.root / "prompts" / spec.prompt.file).read_text(encoding="utf-8")
        return render_template(text, spec.prompt.variables, source=spec.source), None
    if spec.prompt is not None:
        prompt: dict[str, Any] = {"id": spec.prompt.id, "variables": spec.prompt.variables}
        if spec.prompt.version is not None:
            prompt["version"] = spec.prompt.version
        return None, prompt
    return spec.instructions, None


def _tool_choice(value: str | None) -> Any:
    if value is None or value in ("auto", "required", "none"):
        return value
    return {"type": value}


_Client = TypeVar("_Client", "Underlay", "AsyncUnderlay")


def client_for(
    client_class: type[_Client], spec: AgentSpec, environment: Environment, environ: Mapping[str, str]
) -> _Client:
    """A client of ``client_class`` (``Underlay`` or ``AsyncUnderlay``) for ``environment``: its server, or
    the embedded stack of its ``config`` started in this process (state in ``state_dir``, relative to the
    folder), which the client stops when closed. Blocks while a stack starts: call it in a thread from
    an event loop."""
    if environment.base_url:
        return client_class(base_url=environment.base_url, api_key=environment.api_key, timeout=600, max_retries=1)
    state = Path(environment.state_dir).expanduser()
    state = state if state.is_absolute() else spec.root / state
    config = environment.config
    if not Path(config).is_absolute() and (spec.root / config).is_file():
        config = str(spec.root / config)
    variables = {**environ, "UNDERLAY_STATE_DIR": str(state)}
    return client_class.in_process(config, env=variables, timeout=600, max_retries=0)


# ---- the agent's settings -----------------------------------------------------------------------------------


class AgentBase:
    """An agent's settings and everything that does not wait on the client. ``tools`` are Responses API
    tool dicts or plain Python functions (run locally when the model calls them)."""

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
        self.sync_report: SyncReport | None = None
        """The knowledge sync of ``from_dir`` (:class:`underlay.agents.sync.SyncReport`), when it ran."""
        self._owns_client = False

    def add_function(self, function: ClientFunction) -> None:
        """Offer ``function`` to the model as a function tool, run here when it is called."""
        self.functions[function.name] = function
        self.tools.append(function.tool())

    @classmethod
    def _bind(cls, spec: AgentSpec, env: str, environment: Environment, client: Any, knowledge_client: Any) -> Self:
        """The agent of ``spec`` in ``environment``, on ``client``. ``knowledge_client`` (a sync ``openai``
        client on the same server, or ``None`` for no sync) syncs the folder's knowledge first. Blocking
        (files, ``tools.py``, the sync): the async agent runs it in a thread."""
        from underlay.agents.sync import sync_knowledge

        store_id: str | None = None
        report = None
        if knowledge_client is not None and spec.uses_knowledge():
            report = sync_knowledge(knowledge_client, spec.root, spec.name, env, spec.knowledge)
            store_id = report.vector_store_id
        knowledge = report.files.values() if report is not None else None
        tools, functions = spec_tools(spec, environment, store_id, knowledge)
        instructions, prompt = spec_instructions(spec)
        agent = cls(
            client,
            model=environment.models.get(spec.model, spec.model),
            instructions=instructions,
            prompt=prompt,
            tools=[*tools],
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
        agent.sync_report = report
        return agent

    def _request(self, input: Any, previous: str | None, conversation: str | None, tool_choice: Any) -> dict[str, Any]:
        """The Responses request of one round (without ``stream``)."""
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
            if self.sync_report is not None:
                files = dict(self.sync_report.files)  # what the tools' filter admits, not a later re-read
            else:
                files = {f.path: f.sha256 for f in knowledge_files(spec.root, spec.knowledge)}
            body["knowledge"] = {"vector_store_id": self.vector_store_id, "files": files}
        try:
            return AgentDefinition.model_validate(body)
        except (ValidationError, ValueError) as exc:
            first = exc.errors()[0] if isinstance(exc, ValidationError) else None
            where = ".".join(str(p) for p in first["loc"]) if first else "definition"
            reason = first["msg"] if first else str(exc)
            raise ValueError(f"agent {self.name}: {where}: {reason}") from None


# ---- one turn -----------------------------------------------------------------------------------------------


class Turn:
    """One turn of an agent, across its rounds, as a state machine that does no I/O.

    The caller loops: send :meth:`request` (streamed), pass every stream event to :meth:`observe` and
    yield what it returns; when :attr:`done` is set the turn is over, otherwise run each of
    :attr:`calls` (:meth:`function` finds it) and hand the output to :meth:`answer`, then send the
    next :meth:`request`, which carries the outputs as ``function_call_output`` items.
    """

    def __init__(self, agent: AgentBase, input: str | list[Any], conversation: str | None = None) -> None:
        self.agent = agent
        self.conversation = conversation
        self.calls: list[Any] = []
        """The ``function_call`` items of the round just streamed."""
        self.response_id = ""
        self.done: TurnDone | None = None
        self._input: Any = input
        self._previous: str | None = None
        self._tool_choice = agent.tool_choice
        self._text: list[str] = []
        self._outputs: list[dict[str, Any]] = []
        self._rounds = 0

    def request(self) -> dict[str, Any]:
        """The next round's streamed Responses request; the first asks the question, each later one
        answers the previous round's calls (the agent's ``tool_choice`` only applies to the first)."""
        if self._rounds:
            if self._rounds >= MAX_FUNCTION_ROUNDS:
                raise RuntimeError(
                    f"agent {self.agent.name}: still calling functions after {MAX_FUNCTION_ROUNDS} rounds"
                )
            self._input, self._outputs = self._outputs, []
            self._previous = None if self.conversation else self.response_id
            self._tool_choice = None
        self._rounds += 1
        self.calls, self.response_id = [], ""
        body = self.agent._request(self._input, self._previous, self.conversation, self._tool_choice)
        return {**body, "stream": True}

    def observe(self, event: Any) -> AgentEvent | None:
        """The agent event one Responses stream event means, if any; a failed response raises
        ``RuntimeError``. At the stream's end (``response.completed``) the turn is done unless the
        round asked for functions."""
        kind = event.type
        if kind == "response.output_text.delta":
            self._text.append(event.delta)
            return TextDelta(event.delta)
        if kind == "response.output_item.added" and event.item.type in _SERVER_TOOL_ITEMS:
            return ToolCall(event.item.type, _server_tool_name(event.item), "")
        if kind == "response.output_item.done" and event.item.type == "function_call":
            self.calls.append(event.item)
            return ToolCall("function_call", event.item.name, event.item.arguments)
        if kind in ("response.completed", "response.incomplete"):
            self.response_id = event.response.id
        elif kind == "response.failed":
            error = event.response.error
            raise RuntimeError(f"agent {self.agent.name}: the response failed: {error.message if error else 'unknown'}")
        elif kind == "error":
            raise RuntimeError(f"agent {self.agent.name}: {getattr(event, 'message', 'stream error')}")
        return None

    def end_round(self) -> TurnDone | None:
        """Call when a round's stream ended: the turn's :class:`TurnDone` when it asked for no function."""
        if not self.calls:
            self.done = TurnDone("".join(self._text), self.response_id)
        return self.done

    def function(self, call: Any) -> ClientFunction | None:
        """The client function ``call`` asks for (``None``: the agent has none by that name)."""
        return self.agent.functions.get(call.name)

    def answer(self, call: Any, output: str | None) -> ToolResult:
        """Record ``call``'s output for the next request (``None``: there was no such function, which
        the model is told), as the :class:`ToolResult` to yield."""
        text = output if output is not None else f"error: no client function {call.name!r}"
        self._outputs.append({"type": "function_call_output", "call_id": call.call_id, "output": text})
        return ToolResult(call.name, text)


def _server_tool_name(item: Any) -> str:
    if item.type == "mcp_call":
        return f"{getattr(item, 'server_label', '')}.{getattr(item, 'name', '')}"
    return str(item.type.removesuffix("_call"))
