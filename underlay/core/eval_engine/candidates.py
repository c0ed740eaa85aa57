"""Candidates: what produces a row's ``sample`` before it is graded.

A candidate is anything with a ``model`` and ``async sample(row) -> Sample`` (:class:`Candidate`). Two
are built in, both going through Underlay's own routers so model access policies, quotas, guardrails and
telemetry apply to every sampled row as to a live request:

- :class:`ChatCandidate`: a chat model through the inference router (the ``completions`` data source).
- :class:`ResponsesCandidate`: a Responses configuration (model, instructions from system/developer
  messages, tools, text format) through the responses router (the ``responses`` data source). With
  ``model="agent/<name>"`` the responses router runs the deployed agent's own loop, so an agent is
  evaluated end to end, tools and knowledge included.

A run without a candidate (``jsonl``) grades the sample each row may carry (see :func:`preset_sample`).
Every call carries the row's tags as ``metadata`` (run id, row number), so stored completions and traces
can be traced back to the row that made them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from underlay.api.evals import (
    CompletionsSamplingParams,
    ItemReferenceMessages,
    ResponsesSamplingParams,
    TemplateMessages,
    message_text,
)
from underlay.api.inference import ChatCompletion, ChatCompletionRequest
from underlay.api.responses import CreateResponseRequest
from underlay.core.eval_engine.graders import ChatFn, RowError, RowInput
from underlay.core.eval_engine.templates import TemplateError, lookup, render

ResponsesFn = Callable[[CreateResponseRequest], Awaitable[Any]]
"""A Responses call (the responses router's ``create_response``)."""


@dataclass
class Sample:
    """A candidate's answer to one row, and how it was asked."""

    input: list[dict[str, str]]
    output_text: str
    model: str
    finish_reason: str = "stop"
    usage: dict[str, int] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    output_tools: list[dict[str, Any]] = field(default_factory=list)

    def namespace(self) -> dict[str, Any]:
        """The ``sample`` namespace templates see: ``output_text``, ``output_json`` (when it parses), …"""
        try:
            parsed: Any = json.loads(self.output_text)
        except ValueError:
            parsed = None
        return {
            "output_text": self.output_text,
            "output_json": parsed,
            "output_tools": self.output_tools,
            "model": self.model,
            "finish_reason": self.finish_reason,
        }

    def record(self) -> dict[str, Any]:
        """The output item's ``sample`` object."""
        usage = {
            k: int(self.usage.get(k, 0))
            for k in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens")
        }
        return {
            "input": self.input,
            "output": [{"role": "assistant", "content": self.output_text}],
            "model": self.model,
            "finish_reason": self.finish_reason,
            "usage": usage,
            "error": {"code": "", "message": ""},
            "temperature": float(self.params.get("temperature") or 1.0),
            "top_p": float(self.params.get("top_p") or 1.0),
            "max_completion_tokens": int(self.params.get("max_completion_tokens") or 0),
            "seed": int(self.params.get("seed") or 0),
        }


class Candidate(Protocol):
    model: str

    async def sample(self, row: RowInput) -> Sample: ...


def preset_sample(row: RowInput) -> Sample | None:
    """A row's own ``sample`` (jsonl runs): ``output_text`` or the first output message's content."""
    given = row.sample
    if not given:
        return None
    text = given.get("output_text")
    if not isinstance(text, str):
        output = given.get("output")
        first = output[0] if isinstance(output, list) and output else None
        text = first.get("content") if isinstance(first, dict) else None
    if not isinstance(text, str):
        text = ""
    return Sample(input=[], output_text=text, model=str(given.get("model") or ""))


def prompt_messages(spec: TemplateMessages | ItemReferenceMessages | None, row: RowInput) -> list[dict[str, str]]:
    """The rendered prompt of one row; a missing reference is the row's (non-retryable) error."""
    try:
        if spec is None:
            raise RowError(
                "missing_input_messages", "the run's data source needs input_messages to sample", retryable=False
            )
        if isinstance(spec, TemplateMessages):
            return [{"role": m.role, "content": render(message_text(m.content), row.namespaces)} for m in spec.template]
        value = lookup(row.namespaces, spec.item_reference)
    except TemplateError as exc:
        raise RowError("invalid_template_reference", str(exc), retryable=False) from None
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages: list[dict[str, str]] = []
    for message in value if isinstance(value, list) else []:
        if isinstance(message, dict) and message.get("role") in ("user", "assistant", "system", "developer"):
            try:
                messages.append({"role": str(message["role"]), "content": message_text(message.get("content", ""))})
            except ValueError as exc:
                raise RowError("invalid_item_messages", f"{spec.item_reference}: {exc}", retryable=False) from None
        else:
            messages = []
            break
    if not messages:
        raise RowError(
            "invalid_item_messages",
            f"{spec.item_reference} must be a string or a list of {{role, content}} messages",
            retryable=False,
        )
    return messages


class ChatCandidate:
    """Samples a chat model through the inference router."""

    def __init__(
        self, chat: ChatFn, model: str, messages: TemplateMessages | ItemReferenceMessages | None,
        params: CompletionsSamplingParams | None,
    ) -> None:  # fmt: skip
        self.chat = chat
        self.model = model
        self.messages = messages
        self.params = params or CompletionsSamplingParams()

    async def sample(self, row: RowInput) -> Sample:
        messages = prompt_messages(self.messages, row)
        p = self.params
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "metadata": dict(row.tags),
            **{
                k: v
                for k, v in {
                    "temperature": p.temperature,
                    "top_p": p.top_p,
                    "seed": p.seed,
                    "max_completion_tokens": p.max_completion_tokens,
                    "response_format": p.response_format,
                    "tools": p.tools,
                }.items()
                if v is not None
            },
        }
        try:
            request = ChatCompletionRequest.model_validate(body)
        except ValueError as exc:
            raise RowError(
                "invalid_sampling_params", f"the sampling request is invalid: {str(exc)[:300]}", retryable=False
            ) from None
        reply = await self.chat(request)
        if not isinstance(reply, ChatCompletion) or not reply.choices:
            raise RowError("sample_streamed", f"model '{self.model}' returned no single completion")
        choice = reply.choices[0]
        tools = [c.model_dump(mode="json") for c in choice.message.tool_calls or []]
        text = choice.message.content or ""
        if not text and tools:
            text = json.dumps([t.get("function") for t in tools], separators=(",", ":"))
        usage = reply.usage.model_dump() if reply.usage is not None else {}
        params = {
            "temperature": p.temperature,
            "top_p": p.top_p,
            "seed": p.seed,
            "max_completion_tokens": p.max_completion_tokens,
        }
        return Sample(messages, text, self.model, str(choice.finish_reason or "stop"), usage, params, tools)


class ResponsesCandidate:
    """Samples a Responses configuration (an agent, when ``model`` is ``agent/<name>``) through the responses router."""

    def __init__(
        self, create: ResponsesFn, model: str, messages: TemplateMessages | ItemReferenceMessages | None,
        params: ResponsesSamplingParams | None,
    ) -> None:  # fmt: skip
        self.create = create
        self.model = model
        self.messages = messages
        self.params = params or ResponsesSamplingParams()

    async def sample(self, row: RowInput) -> Sample:
        messages = prompt_messages(self.messages, row)
        instructions = "\n\n".join(m["content"] for m in messages if m["role"] in ("system", "developer"))
        turns = [
            {"type": "message", "role": m["role"], "content": m["content"]}
            for m in messages
            if m["role"] in ("user", "assistant")
        ]
        p = self.params
        body: dict[str, Any] = {
            "model": self.model,
            "input": turns,
            "metadata": dict(row.tags),
            **{
                k: v
                for k, v in {
                    "instructions": instructions or None,
                    "temperature": p.temperature,
                    "top_p": p.top_p,
                    "seed": p.seed,
                    "max_output_tokens": p.max_completion_tokens,
                    "text": p.text,
                    "tools": p.tools,
                }.items()
                if v is not None
            },
        }
        try:
            request = CreateResponseRequest.model_validate(body)
        except ValueError as exc:
            raise RowError(
                "invalid_sampling_params", f"the Responses request is invalid: {str(exc)[:300]}", retryable=False
            ) from None
        response = await self.create(request)
        status = getattr(response, "status", None)
        if status != "completed":
            error = getattr(response, "error", None)
            detail = getattr(error, "message", None) or f"status {status}"
            raise RowError("sample_failed", f"model '{self.model}' did not complete the response: {detail}")
        usage_obj = getattr(response, "usage", None)
        usage: Mapping[str, int] = {}
        if usage_obj is not None:
            usage = {
                "prompt_tokens": usage_obj.input_tokens,
                "completion_tokens": usage_obj.output_tokens,
                "total_tokens": usage_obj.total_tokens,
            }
        tools = [item for item in response.output if item.get("type") not in ("message", "reasoning")]
        params = {
            "temperature": p.temperature,
            "top_p": p.top_p,
            "seed": p.seed,
            "max_completion_tokens": p.max_completion_tokens,
        }
        return Sample(messages, str(response.output_text), self.model, "stop", dict(usage), params, tools)
