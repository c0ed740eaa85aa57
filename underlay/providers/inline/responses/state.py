"""The state of one response while the loop produces it, and how that state becomes numbered events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from underlay.api.errors import UnderlayError
from underlay.api.response_items import shape_for_client
from underlay.api.responses import (
    CreateResponseRequest,
    OutputItemEvent,
    ResponseEvent,
    ResponseLifecycleEvent,
    ResponseObject,
    ToolProgressEvent,
)
from underlay.providers.inline.responses.server_tools import McpServer


@dataclass
class McpBinding:
    """One MCP tool as the model sees it (``function_name``) and where it really lives."""

    function_name: str
    tool_name: str
    server: McpServer
    needs_approval: bool
    definition: dict[str, Any]


@dataclass
class Run:
    """The state of one response while it is produced."""

    request: CreateResponseRequest
    response: ResponseObject
    history: list[dict[str, Any]]
    input_items: list[dict[str, Any]]
    max_infer_iters: int
    include: list[str] = field(default_factory=list)
    sequence: int = 0
    announce: bool = True
    client_error: UnderlayError | None = None
    server_tool_calls: int = 0
    last_results: list[dict[str, Any]] = field(default_factory=list)
    mcp: dict[str, McpBinding] = field(default_factory=dict)
    elicitation_answers: dict[str, list[Any]] = field(default_factory=dict)
    """Per approved call id: the answers (``ElicitationResponse``) to the MCP server's question."""
    awaiting_input: bool = False
    """An MCP server asked a question during a call: the response ends with it, like an approval."""
    files: dict[str, str] = field(default_factory=dict)  # input_file parts' text, see input_files.resolve_files
    # False when nobody reads the events (a plain, non-streamed create drains them): lifecycle events
    # then carry the live response instead of a deep copy, which is most of their cost.
    observed: bool = True

    def stamp(self, event: ResponseEvent) -> ResponseEvent:
        event.sequence_number = self.sequence
        self.sequence += 1
        return event

    def snapshot(self) -> ResponseObject:
        copy = self.response.model_copy(deep=True)
        copy.output = [shape_for_client(i, self.include) for i in copy.output]
        return copy

    def final(self) -> ResponseObject:
        """The finished response as the client sees it: :meth:`snapshot` without the deep copy, which
        a response that nothing changes any more does not need (the output list is still a new one)."""
        copy = self.response.model_copy()
        copy.output = [shape_for_client(i, self.include) for i in self.response.output]
        return copy

    def lifecycle(self, kind: str) -> ResponseEvent:
        response = self.snapshot() if self.observed else self.response
        return self.stamp(ResponseLifecycleEvent(type=kind, response=response))  # type: ignore[arg-type]

    def add_item(self, item: dict[str, Any]) -> tuple[int, ResponseEvent]:
        self.response.output.append(item)
        index = len(self.response.output) - 1
        return index, self.stamp(
            OutputItemEvent(type="response.output_item.added", output_index=index, item=dict(item))
        )

    def item_done(self, index: int) -> ResponseEvent:
        item = shape_for_client(self.response.output[index], self.include)
        return self.stamp(OutputItemEvent(type="response.output_item.done", output_index=index, item=dict(item)))

    def progress(self, kind: str, item: dict[str, Any], index: int) -> ResponseEvent:
        return self.stamp(ToolProgressEvent(type=kind, item_id=item["id"], output_index=index))  # type: ignore[arg-type]


@dataclass
class Call:
    call_id: str
    name: str
    arguments: str


@dataclass
class Turn:
    text: str = ""
    calls: list[Call] = field(default_factory=list)
    finish_reason: str | None = None
    message_index: int | None = None


def tool_of(run: Run, kind: type) -> Any:
    """The request's first tool of ``kind`` (file_search, web_search), or ``None``."""
    return next((t for t in run.request.tools or [] if isinstance(t, kind)), None)
