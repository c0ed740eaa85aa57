"""``inline::builtin``: the Responses API over the loop in :mod:`.engine`, with storage and background jobs.

What this module adds around the loop: building a request's context (a previous response's whole
chain, or a conversation's items), storing the final response and appending both sides to the
conversation, and background mode. A background response is a durable job: its events are written to
an event log as they happen, so a client can poll it, cancel it, or stream it from any sequence
number, from any worker; a server that dies mid-response resumes it on restart (the new run's events
continue the numbering) until ``background_max_attempts``, after which it fails cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from underlay.api.conversations import ConversationsApi
from underlay.api.errors import InvalidRequestError, NotFoundError, UnderlayError
from underlay.api.ids import now
from underlay.api.response_items import ItemReference, normalize_item, shape_for_client
from underlay.api.responses import (
    TERMINAL_EVENTS,
    CompactedResponse,
    CompactRequest,
    ConversationRef,
    CreateResponseRequest,
    FileSearchTool,
    FormatJSONSchema,
    FunctionTool,
    InputItemList,
    InputItemsQuery,
    JobQueue,
    ListResponsesQuery,
    McpTool,
    ResponseDeleted,
    ResponseErrorInfo,
    ResponseEvent,
    ResponseLifecycleEvent,
    ResponseList,
    ResponseObject,
    ResponseStateStore,
    ResponseUsage,
    RetrieveResponseQuery,
    WebSearchTool,
)
from underlay.providers.inline.responses import compaction
from underlay.providers.inline.responses.config import BuiltinResponsesConfig
from underlay.providers.inline.responses.convert import check_input_items, items_to_messages
from underlay.providers.inline.responses.engine import Engine
from underlay.providers.inline.responses.input_files import resolve_files
from underlay.providers.inline.responses.prompts import render_prompt
from underlay.providers.inline.responses.server_tools import ServerTools
from underlay.providers.inline.responses.state import Run

log = logging.getLogger("underlay.responses")

JOB_KIND = "responses.background"
_FINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})
_TERMINAL_EVENT_GRACE_S = 5.0
"""How long a stream reader waits for the terminal event once the stored response is already final."""
_SECRET_TOOL_FIELDS = ("headers", "authorization")


_COMMITTED_AT_SUBMIT = frozenset({"response.created", "response.queued"})
"""The events written when a background response is submitted; the rest belongs to an attempt."""


class _StoredEvent(BaseModel):
    """An event read back from the log: its type and number plus whatever fields it had."""

    model_config = ConfigDict(extra="allow")

    type: str
    sequence_number: int


def _response_id() -> str:
    return f"resp_{secrets.token_hex(24)}"


def _public_tools(params: CreateResponseRequest) -> list[dict[str, Any]]:
    """Tools as the response shows them: secrets (MCP headers, authorization) left out."""
    tools = []
    for tool in params.tools or []:
        data = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
        for key in _SECRET_TOOL_FIELDS:
            data.pop(key, None)
        if isinstance(tool, FunctionTool):  # Open Responses requires these keys on a function tool, null when unset
            for key in ("description", "parameters", "strict"):
                data.setdefault(key, None)
        tools.append(data)
    return tools


class _EventLog:
    """Writes a background response's events in batches and wakes readers in this process."""

    def __init__(self, store: ResponseStateStore, response_id: str, every: float, wake: Callable[[], None]) -> None:
        self.store = store
        self.response_id = response_id
        self.every = every
        self.wake = wake
        self.pending: list[dict[str, Any]] = []
        self.last = time.monotonic()

    async def add(self, event: ResponseEvent) -> None:
        self.pending.append(event.model_dump(mode="json", by_alias=True))
        urgent = not event.type.endswith(".delta")
        if urgent or time.monotonic() - self.last >= self.every:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            batch, self.pending = self.pending, []
            await self.store.append_events(self.response_id, batch)
            self.wake()
        self.last = time.monotonic()


class BuiltinResponsesProvider:
    def __init__(self, provider_id: str, config: BuiltinResponsesConfig, deps: dict[str, Any]) -> None:
        self.provider_id = provider_id
        self.config = config
        self.deps = dict(deps)
        """The routers it uses, by API (optional ones only when switched on); all built before it."""
        self.store: ResponseStateStore | None = None
        self.jobs: JobQueue | None = None
        self.tools = ServerTools(config, self._router)
        self._wakers: dict[str, asyncio.Event] = {}

    # ---- lifecycle ------------------------------------------------------------------------------------

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def health(self) -> dict[str, Any]:
        return {"status": "OK"}

    def attach(self, store: ResponseStateStore, jobs: JobQueue) -> None:
        self.store = store
        self.jobs = jobs
        jobs.register(
            JOB_KIND,
            self._run_job,
            on_failure=self._job_failed,
            max_attempts=self.config.background_max_attempts,
            lane="interactive",  # someone is waiting on it: never queued behind ingestion
        )

    def _router(self, api: str) -> Any:
        return self.deps.get(api)

    @property
    def _store(self) -> ResponseStateStore:
        if self.store is None:
            raise RuntimeError("the responses provider was not attached to its store")
        return self.store

    @property
    def engine(self) -> Engine:
        return Engine(self._router("inference"), self.tools)

    # ---- create ---------------------------------------------------------------------------------------

    async def _check_model(self, name: str) -> Any:
        """The inference router, once ``name`` is known to be a chat model (else a 400/404 naming it)."""
        inference = self._router("inference")
        if inference is None:
            raise InvalidRequestError("The Responses API needs the inference API.", param="model")
        models = getattr(inference, "models", None)
        if models is not None:
            model = await models.get(name)
            if getattr(model, "model_type", "llm") != "llm":
                raise InvalidRequestError(f"Model '{name}' is an embedding model; pick a chat model.", param="model")
        return inference

    async def _preflight(self, params: CreateResponseRequest) -> None:
        """Everything that can be refused before any work starts: model, schema, tools, input content."""
        inference = self._router("inference")
        if inference is None:
            raise InvalidRequestError("The Responses API needs the inference API.", param="model")
        models = getattr(inference, "models", None)
        if models is not None:
            model = await models.get(params.model)
            if getattr(model, "model_type", "llm") != "llm":
                raise InvalidRequestError(
                    f"Model '{params.model}' is an embedding model; pick a chat model.", param="model"
                )
            check = getattr(model, "check_output_tokens", None)
            if check is not None:
                check("max_output_tokens", params.max_output_tokens)
        fmt = params.text.format if params.text else None
        if isinstance(fmt, FormatJSONSchema):
            import jsonschema  # on the first request with a schema: the module costs about 30 ms at every start

            try:
                jsonschema.validators.validator_for(fmt.schema_).check_schema(fmt.schema_)
            except jsonschema.SchemaError as exc:
                raise InvalidRequestError(
                    f"text.format.schema is not a valid JSON Schema: {exc.message}", param="text.format.schema"
                ) from None
        for index, tool in enumerate(params.tools or []):
            if isinstance(tool, FileSearchTool):
                await self.tools.check_file_search(tool, f"tools[{index}]")
            elif isinstance(tool, McpTool):
                self.tools.resolve_mcp(tool, f"tools[{index}]")
            elif isinstance(tool, WebSearchTool):
                self.tools.check_web_search(f"tools[{index}]")

    async def _context(self, params: CreateResponseRequest) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(history, input items): the items before this request, and this request's input, normalized."""
        history: list[dict[str, Any]] = []
        if params.previous_response_id:
            row = await self._store.find(params.previous_response_id)
            if row is None:
                raise NotFoundError(
                    "Response",
                    params.previous_response_id,
                    param="previous_response_id",
                    hint="Only stored responses (store: true) can be continued.",
                )
            history = [*row.history, *row.input_items, *row.response.get("output", [])]
        elif params.conversation_id:
            history = await self._conversations().all_items(params.conversation_id)
        raw: list[Any] = params.input if isinstance(params.input, list) else []
        if isinstance(params.input, str) and params.input:
            raw = [{"role": "user", "content": params.input}]
        if not params.input and not history:  # "" and [] alike: nothing for the model to answer
            raise InvalidRequestError("input is empty; send a string or a list of items.", param="input")
        by_id = {i.get("id"): i for i in history}
        items: list[dict[str, Any]] = []
        for position, item in enumerate(raw):
            if isinstance(item, ItemReference):
                found = by_id.get(item.id)
                if found is None:
                    raise InvalidRequestError(
                        f"item_reference '{item.id}' is not in this response's context.", param=f"input[{position}].id"
                    )
                items.append(found)
            else:
                items.append(normalize_item(item))
        check_input_items(items)
        return history, items

    async def _input_files(self, history: list[dict[str, Any]], items: list[dict[str, Any]]) -> dict[str, str]:
        """The text of the context's ``input_file`` parts (a 400 naming the part, before any model time)."""
        return await resolve_files(history, items, self._router("files"), self.config.input_file_max_bytes)

    def _conversations(self) -> ConversationsApi:
        router = self._router("conversations")
        if router is None:
            raise InvalidRequestError(
                "conversation needs the conversations API; add it to apis in the run config.", param="conversation"
            )
        return router  # type: ignore[no-any-return]

    def _new_run(
        self, params: CreateResponseRequest, history: list[dict[str, Any]], items: list[dict[str, Any]]
    ) -> Run:
        conversation = params.conversation_id
        response = ResponseObject(
            id=_response_id(),
            created_at=now(),
            status="queued" if params.background else "in_progress",
            background=bool(params.background),
            instructions=params.instructions,
            max_output_tokens=params.max_output_tokens,
            max_tool_calls=params.max_tool_calls,
            model=params.model,
            parallel_tool_calls=params.parallel_tool_calls if params.parallel_tool_calls is not None else True,
            previous_response_id=params.previous_response_id,
            conversation=ConversationRef(id=conversation) if conversation else None,
            store=params.store is not False,
            temperature=self.config.temperature if params.temperature is None else params.temperature,
            top_p=self.config.top_p if params.top_p is None else params.top_p,
            top_logprobs=params.top_logprobs or 0,
            presence_penalty=params.presence_penalty or 0.0,
            frequency_penalty=params.frequency_penalty or 0.0,
            safety_identifier=params.safety_identifier,
            prompt_cache_key=params.prompt_cache_key,
            prompt=params.prompt,
            text=(
                params.text.model_dump(mode="json", by_alias=True, exclude_none=True)
                if params.text
                else {"format": {"type": "text"}}
            ),
            tool_choice=(
                params.tool_choice.model_dump(mode="json", exclude_none=True)
                if isinstance(params.tool_choice, BaseModel)
                else params.tool_choice or "auto"
            ),
            tools=_public_tools(params),
            truncation=params.truncation or "disabled",
            user=params.user,
            metadata=params.metadata or {},
        )
        return Run(
            request=params,
            response=response,
            history=history,
            input_items=items,
            max_infer_iters=params.max_infer_iters or self.config.max_infer_iters,
            include=list(params.include or []),
            last_results=_recent_search_results(history),
        )

    async def _with_prompt(self, params: CreateResponseRequest) -> CreateResponseRequest:
        """``params`` with ``prompt`` rendered into ``instructions`` (the request's own instructions follow it).

        Done once, at create: a background response stores the rendered request, so a resumed job runs
        with the very text the client's request produced even if the prompt changed since.
        """
        if params.prompt is None:
            return params
        text, prompt = await render_prompt(
            params.prompt, self._router("prompts"), self._router("files"), self.config.input_file_max_bytes
        )
        instructions = f"{text}\n\n{params.instructions}" if params.instructions else text
        used = params.prompt.model_copy(update={"version": str(prompt.version)})
        return params.model_copy(update={"instructions": instructions, "prompt": used})

    async def create_response(self, params: CreateResponseRequest) -> ResponseObject | AsyncIterator[ResponseEvent]:
        await self._preflight(params)
        params = await self._with_prompt(params)
        if params.conversation_id:
            await self._conversations().get_conversation(params.conversation_id)
        history, items = await self._context(params)
        files = await self._input_files(history, items)
        run = self._new_run(params, history, items)
        run.files = files
        if params.background:
            return await self._start_background(run)
        if params.stream:
            return self._stream(run)
        run.observed = False
        async with contextlib.aclosing(self._stream(run)) as events:
            async for _ in events:
                pass
        if run.client_error is not None:
            raise run.client_error
        return run.final()

    async def _stream(self, run: Run) -> AsyncIterator[ResponseEvent]:
        async with contextlib.aclosing(self.engine.run(run)) as events:
            async for event in events:
                if event.type in TERMINAL_EVENTS:
                    await self._finish(run)  # stored before the client sees the end, so it can follow up at once
                yield event

    async def _finish(self, run: Run) -> None:
        """Store the response (unless store is false) and append both sides to its conversation."""
        response = run.response
        if response.store:
            if response.background:
                await self._store.update(response.id, response.model_dump(mode="json"))
            else:
                await self._store.put(
                    response.model_dump(mode="json"), input_items=run.input_items, history=run.history
                )
        conversation = run.request.conversation_id
        if conversation and response.status in ("completed", "incomplete"):
            known = {i.get("id") for i in run.history}
            items = [i for i in run.input_items if i.get("id") not in known] + list(response.output)
            await self._conversations().append_items(conversation, items)

    # ---- compaction ---------------------------------------------------------------------------------

    async def compact_response(self, params: CompactRequest) -> CompactedResponse:
        """Condense the context (a previous response's chain, then ``input``) into one compaction item."""
        inference = await self._check_model(params.model)
        request = CreateResponseRequest(
            model=params.model,
            input=params.input if params.input is not None else "",
            previous_response_id=params.previous_response_id,
        )
        history, items = await self._context(request)
        files = await self._input_files(history, items)
        messages = items_to_messages(params.instructions, [*history, *items], files)
        item, prompt, completion = await compaction.summarise(
            inference, params.model, messages, self.config.compact_max_tokens
        )
        return CompactedResponse(
            id=_response_id(),
            created_at=now(),
            output=[item],
            usage=ResponseUsage(input_tokens=prompt, output_tokens=completion, total_tokens=prompt + completion),
            safety_identifier=params.safety_identifier,
        )

    # ---- background -----------------------------------------------------------------------------------

    async def _start_background(self, run: Run) -> ResponseObject | AsyncIterator[ResponseEvent]:
        if self.jobs is None:
            raise InvalidRequestError("Background responses need the job runner.", param="background")
        response = run.response
        await self._store.put(
            response.model_dump(mode="json"),
            input_items=run.input_items,
            history=run.history,
            request=run.request.model_dump(mode="json", by_alias=True, exclude_none=True),
        )
        created = run.lifecycle("response.created")
        queued = run.lifecycle("response.queued")
        await self._store.append_events(response.id, [e.model_dump(mode="json") for e in (created, queued)])
        job = await self.jobs.submit(JOB_KIND, {"response_id": response.id}, reference=response.id)
        await self._store.update(response.id, job_id=job.id)
        if run.request.stream:
            return self._tail(response.id, -1)
        return run.snapshot()

    def _waker(self, response_id: str) -> asyncio.Event:
        return self._wakers.setdefault(response_id, asyncio.Event())

    def _wake(self, response_id: str) -> None:
        event = self._wakers.get(response_id)
        if event is not None:
            event.set()

    async def _run_job(self, ctx: Any) -> dict[str, Any]:
        response_id = ctx.job.payload["response_id"]
        row = await self._store.get(response_id)
        if row.status in _FINAL:
            return {"status": row.status}
        params = CreateResponseRequest.model_validate(row.request)
        run = self._new_run(params, row.history, row.input_items)
        run.files = await self._input_files(row.history, row.input_items)
        base = row.response
        run.response = run.response.model_copy(update={"id": response_id, "created_at": base["created_at"]})
        run.response.status = "queued"
        run.sequence = await self._store.last_sequence_number(response_id) + 1
        run.announce = False
        if ctx.job.attempts > 1:
            await self._discard_interrupted(response_id)
        log_ = _EventLog(self._store, response_id, self.config.event_flush_seconds, lambda: self._wake(response_id))
        try:
            async with contextlib.aclosing(self.engine.run(run)) as events:
                async for event in events:
                    if event.type in TERMINAL_EVENTS:
                        await self._finish(run)
                    elif event.type == "response.in_progress":
                        await self._store.update(response_id, run.response.model_dump(mode="json"))
                    await log_.add(event)
                    await ctx.checkpoint()
        finally:
            with contextlib.suppress(Exception):
                await log_.flush()
        return {"status": run.response.status}

    async def _discard_interrupted(self, response_id: str) -> None:
        """Drop what an interrupted attempt wrote after the response was queued, before a new one starts.

        Why: the new attempt generates the output again from the start, so a replay that kept both would
        show the old attempt's partial text followed by the whole new text to any client that
        concatenates deltas, and the SDK's stream helper, which tracks items by ``output_index``,
        refuses the second ``output_item.added`` at index 0 outright. Only ``response.created`` and
        ``response.queued`` are final when written; everything after them is provisional until an
        attempt ends. The new attempt's numbers continue after the highest one ever written, so no
        number is reused and a client's ``starting_after`` cursor never points at a different event
        than the one it saw.
        """
        committed = -1
        for event in await self._store.events_after(response_id, -1):
            if event.get("type") in _COMMITTED_AT_SUBMIT:
                committed = max(committed, int(event["sequence_number"]))
            else:
                break
        await self._store.discard_events_after(response_id, committed)

    async def _job_failed(self, job: Any) -> None:
        """A background response that was cancelled or gave up: record it, and end any stream readers."""
        response_id = job.payload.get("response_id")
        row = await self._store.find(response_id) if response_id else None
        if row is None or row.status in ("completed", "incomplete", "failed", "cancelled"):
            return
        response = ResponseObject.model_validate(row.response)
        if job.status == "cancelled":
            response.status = "cancelled"
        else:
            error = job.error or {}
            response.status = "failed"
            response.error = ResponseErrorInfo(
                code=str(error.get("code") or "server_error"), message=str(error.get("message") or "failed")
            )
            last = await self._store.last_sequence_number(response_id)
            event = ResponseLifecycleEvent(type="response.failed", sequence_number=last + 1, response=response)
            await self._store.append_events(response_id, [event.model_dump(mode="json")])
        await self._store.update(response_id, response.model_dump(mode="json"))
        self._wake(response_id)

    async def _tail(self, response_id: str, after: int) -> AsyncIterator[ResponseEvent]:
        """The background response's events after ``after``, then new ones as they are written."""
        waker = self._waker(response_id)
        last = after
        finished_at: float | None = None
        try:
            while True:
                waker.clear()
                for data in await self._store.events_after(response_id, last):
                    last = int(data["sequence_number"])
                    yield _StoredEvent.model_validate(data)  # type: ignore[misc]
                    if data["type"] in TERMINAL_EVENTS:
                        return
                row = await self._store.find(response_id)
                if row is None or row.status == "cancelled":
                    for data in await self._store.events_after(response_id, last):
                        yield _StoredEvent.model_validate(data)  # type: ignore[misc]
                    return
                if row.status in _FINAL:
                    # The job stores the final row just before it writes the terminal event, so a reader
                    # can land in between; it waits (bounded, in case the writer died there) for the event.
                    finished_at = finished_at if finished_at is not None else time.monotonic()
                    if time.monotonic() - finished_at > _TERMINAL_EVENT_GRACE_S:
                        return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waker.wait(), timeout=0.5)
        finally:
            self._wakers.pop(response_id, None)

    # ---- reads and the rest ---------------------------------------------------------------------------

    async def get_response(
        self, response_id: str, query: RetrieveResponseQuery
    ) -> ResponseObject | AsyncIterator[ResponseEvent]:
        row = await self._store.get(response_id)
        if query.stream:
            if not row.background:
                raise InvalidRequestError(
                    "Only background responses can be streamed after they were created.", param="stream"
                )
            return self._tail(response_id, query.starting_after if query.starting_after is not None else -1)
        return self._shaped(row.response, query.include)

    @staticmethod
    def _shaped(data: dict[str, Any], include: list[str] | None) -> ResponseObject:
        response = ResponseObject.model_validate(data)
        response.output = [shape_for_client(i, include) for i in response.output]
        return response

    async def delete_response(self, response_id: str) -> ResponseDeleted:
        row = await self._store.get(response_id)
        if row.status in ("queued", "in_progress") and row.job_id and self.jobs is not None:
            await self.jobs.cancel(row.job_id)
        await self._store.delete(response_id)
        return ResponseDeleted(id=response_id)

    async def cancel_response(self, response_id: str) -> ResponseObject:
        row = await self._store.get(response_id)
        if not row.background:
            raise InvalidRequestError("Only background responses can be cancelled.", param="response_id")
        if row.status in ("queued", "in_progress") and row.job_id and self.jobs is not None:
            await self.jobs.cancel(row.job_id)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                row = await self._store.get(response_id)
                if row.status in _FINAL:
                    break
                await asyncio.sleep(0.05)
        return self._shaped(row.response, None)

    async def list_responses(self, query: ListResponsesQuery) -> ResponseList:
        rows, has_more = await self._store.page(
            after=query.after, limit=query.limit, order=query.order, model=query.model
        )
        data = [self._shaped(r.response, None) for r in rows]
        return ResponseList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )

    async def list_input_items(self, response_id: str, query: InputItemsQuery) -> InputItemList:
        row = await self._store.get(response_id)
        items = [shape_for_client(i, query.include) for i in row.input_items]
        if query.order == "desc":
            items.reverse()
        start = 0
        if query.after is not None:
            ids = [i.get("id") for i in items]
            if query.after not in ids:
                raise InvalidRequestError(f"No input item with id '{query.after}' to list after.", param="after")
            start = ids.index(query.after) + 1
        page = items[start : start + query.limit]
        return InputItemList(
            data=page,
            first_id=page[0].get("id") if page else None,
            last_id=page[-1].get("id") if page else None,
            has_more=start + query.limit < len(items),
        )


def describe_error(exc: BaseException) -> str:
    return exc.message if isinstance(exc, UnderlayError) else f"{type(exc).__name__}: {exc}"


def _recent_search_results(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results of the latest file search since the last user message, so an answer that arrives in a
    follow-up response (after a client function call in the same turn) still gets its citations."""
    for item in reversed(history):
        if item.get("type") == "message" and item.get("role") == "user":
            break
        if item.get("type") == "file_search_call" and item.get("results"):
            return list(item["results"])
    return []
