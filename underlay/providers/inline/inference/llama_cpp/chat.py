"""Chat completions on an engine: plan the request, run it on the model's thread, shape the answer.

The work splits in three so that each runs where it must:

1. :func:`plan_chat` (event loop, no model): everything decidable from the request alone, tool
   policy, grammar, sampling, so a bad request is a 400 before it waits for a busy model;
2. the job from :func:`chat_job` (the slot's worker thread): render the template, tokenize, check the
   context, generate each choice (retrying outputs that must validate and did not);
3. :func:`build_completion` / :func:`stream_chunks` (event loop): turn generations into OpenAI
   objects, reading tool calls out of the text.

Streaming has two modes. *Live*: text deltas are sent as the model writes them, with tool-call
sections held back until they can be parsed. *Buffered*: when the output must be validated before
anyone sees it (``tool_choice`` required or a named function; a strict JSON schema the grammar
cannot fully enforce), the choices are generated (and retried) first and then sent as chunks.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from importlib import metadata as _metadata

from underlay.api.errors import InvalidRequestError, UpstreamError
from underlay.api.ids import new_id, now
from underlay.api.inference import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    FinishReason,
    ResponseFormatJSONObject,
    ResponseFormatJSONSchema,
    ResponseMessage,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    TopLogprob,
    Usage,
)
from underlay.api.inference import ChoiceDelta as ApiChoiceDelta
from underlay.providers.inline.inference.llama_cpp.chat_template import (
    build_template_messages,
    check_content,
    tools_for_template,
)
from underlay.providers.inline.inference.llama_cpp.common import (
    MAX_ATTEMPTS,
    ChoiceDelta,
    ChoiceDone,
    ChoiceRestart,
    PromptReady,
    check_fits,
    check_logit_bias,
    for_attempt,
    parse_logit_bias,
    sampling_params,
)
from underlay.providers.inline.inference.llama_cpp.config import LlamaCppModelConfig
from underlay.providers.inline.inference.llama_cpp.engine import Engine, Generation
from underlay.providers.inline.inference.llama_cpp.engine import TokenLogprob as EngineLogprob
from underlay.providers.inline.inference.llama_cpp.loops import LoopGuard
from underlay.providers.inline.inference.llama_cpp.pool import Emit, JobHandle
from underlay.providers.inline.inference.llama_cpp.sampling import SamplingParams
from underlay.providers.utils.tool_calls import (
    CALL_OPEN,
    PROSE_GRAMMAR,
    CallSniffer,
    JsonFormat,
    SchemaGrammarError,
    ToolCallStreamSplitter,
    ToolPolicy,
    answered_calls,
    check_schema,
    could_be_cut_call,
    find_markup,
    grammar_gaps,
    only_repeats,
    plan_decoding,
    schema_errors,
    visible_text,
)

logger = logging.getLogger(__name__)

SYSTEM_FINGERPRINT = f"llama-cpp-python-{_metadata.version('llama-cpp-python')}"

Validator = Callable[[str], list[str]]


@dataclass
class ChatPlan:
    """A chat request resolved against one model's config, before any model work."""

    params: ChatCompletionRequest
    config: LlamaCppModelConfig
    provider_id: str
    policy: ToolPolicy
    json_format: JsonFormat | None
    sampling: SamplingParams
    call_grammar: str | None
    answered: set[tuple[str, str]]
    logit_bias: dict[int, float]
    n: int
    max_tokens: int | None
    stop: list[str]
    top_logprobs: int | None
    stream: bool
    include_usage: bool
    buffered: bool
    validator: Validator | None


@dataclass
class ChoiceResult:
    generation: Generation
    problems: list[str] = field(default_factory=list)
    attempts: int = 1


@dataclass
class ChatJobResult:
    prompt_tokens: int
    choices: list[ChoiceResult]


# --------------------------------------------------------------------------------------------------
# 1. Plan


def _json_format(params: ChatCompletionRequest) -> JsonFormat | None:
    fmt = params.response_format
    if isinstance(fmt, ResponseFormatJSONObject):
        return JsonFormat()
    if isinstance(fmt, ResponseFormatJSONSchema):
        spec = fmt.json_schema
        schema = spec.schema_
        if schema is not None:
            problem = check_schema(schema)
            if problem:
                raise InvalidRequestError(
                    f"response_format.json_schema.schema is not a valid JSON Schema: {problem}",
                    param="response_format.json_schema.schema",
                )
        return JsonFormat(schema=schema, strict=bool(spec.strict), name=spec.name)
    return None


def _json_validator(fmt: JsonFormat) -> Validator:
    def validate(text: str) -> list[str]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return [f"not valid JSON: {exc}"]
        if fmt.schema is None:
            return [] if isinstance(value, dict) else ["not a JSON object"]
        return schema_errors(fmt.schema, value)

    return validate


def _tools_validator(policy: ToolPolicy) -> Validator:
    def validate(text: str) -> list[str]:
        parsed = policy.parse(text)
        if parsed.calls:
            return []
        return parsed.problems or ["the output holds no tool call"]

    return validate


def _auto_validator(policy: ToolPolicy) -> Validator:
    """In ``auto`` an answer in words is fine; a tagged call that does not validate is not.

    The grammar makes every tagged call well-formed, so this only fires for schema keywords it
    cannot enforce (see :func:`grammar_gaps`), and then the choice is generated again.
    """

    def validate(text: str) -> list[str]:
        if CALL_OPEN not in text:
            return []
        parsed = policy.parse(text)
        return [] if parsed.calls else parsed.problems or ["a tool call that could not be read"]

    return validate


def plan_chat(params: ChatCompletionRequest, config: LlamaCppModelConfig, provider_id: str) -> ChatPlan:
    """Resolve the request; every problem found here is a 400 naming the field."""
    check_content(params.messages, config.name)
    policy = ToolPolicy.from_request(params.tools, params.tool_choice, params.parallel_tool_calls)
    for i, tool in enumerate(params.tools or []):
        if tool.function.parameters:
            problem = check_schema(tool.function.parameters)
            if problem:
                raise InvalidRequestError(
                    f"tools[{i}].function.parameters is not a valid JSON Schema: {problem}",
                    param=f"tools[{i}].function.parameters",
                )
    fmt = _json_format(params)
    try:
        decoding = plan_decoding(policy, fmt)
    except SchemaGrammarError as exc:
        raise InvalidRequestError(str(exc), param=exc.where) from None
    bias = parse_logit_bias(params.logit_bias)

    validator: Validator | None = None
    buffered = False
    if policy.active and policy.mode == "required":
        validator = _tools_validator(policy)
        buffered = True
    elif policy.active and decoding.call_grammar is not None:
        validator = _auto_validator(policy)
    elif not policy.active and fmt is not None and (fmt.strict or fmt.schema is None):
        validator = _json_validator(fmt)
        gaps = grammar_gaps(fmt.schema) if fmt.schema is not None else []
        buffered = fmt.strict and bool(gaps)
        if gaps:
            logger.debug("schema keywords the grammar does not enforce: %s", gaps)

    stream = bool(params.stream)
    return ChatPlan(
        params=params,
        config=config,
        provider_id=provider_id,
        policy=policy,
        json_format=fmt,
        sampling=sampling_params(
            config,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            logit_bias=bias,
            grammar=decoding.grammar,
            n_ctx=config.n_ctx,
        ),
        call_grammar=decoding.call_grammar,
        answered=answered_calls(params.messages) if policy.tools else set(),
        logit_bias=bias,
        n=params.n or 1,
        max_tokens=params.token_limit,
        stop=[s for s in params.stop_list if s],
        top_logprobs=(params.top_logprobs or 0) if params.logprobs else None,
        stream=stream,
        include_usage=bool(stream and params.stream_options and params.stream_options.include_usage),
        buffered=stream and buffered,
        validator=validator,
    )


# --------------------------------------------------------------------------------------------------
# 2. Job (worker thread)


def render_prompt(plan: ChatPlan, engine: Engine, *, show_tools: bool | None = None) -> str:
    """The prompt text for this request on this model (tools shown unless ``tool_choice`` is none)."""
    if show_tools is None:
        show_tools = plan.policy.mode != "none"
    shown = plan.policy.tools if show_tools else ()
    native = engine.template.supports_tools
    messages = build_template_messages(
        plan.params.messages, model=plan.config.name, native_tools=native, tools=() if native else shown
    )
    return engine.template.render(messages, tools=tools_for_template(shown) if native and shown else None)


class _JobContext:
    """What one job's choices share: the engine, the prompt tokens and, when needed, the variants."""

    def __init__(self, plan: ChatPlan, engine: Engine) -> None:
        self.plan = plan
        self.engine = engine
        self.tokens = engine.tokenize(render_prompt(plan, engine))
        check_fits(len(self.tokens), engine, "messages")
        opener = engine.tokenize(CALL_OPEN, add_bos=False, special=True)
        #: The call tag as one token, when the vocabulary has it (Qwen does): lets a lazy grammar
        #: start at exactly that token, and lets ``tool_choice`` none ban it outright.
        self.tag_token: int | None = opener[0] if len(opener) == 1 else None
        self._answer_tokens: list[int] | None = None

    def answer_tokens(self) -> list[int]:
        """The prompt without the tools section, for when the model must answer in words."""
        if self._answer_tokens is None:
            tokens = self.engine.tokenize(render_prompt(self.plan, self.engine, show_tools=False))
            check_fits(len(tokens), self.engine, "messages")
            self._answer_tokens = tokens
        return self._answer_tokens


def _generate_choice(
    ctx: _JobContext, index: int, attempt: int, emit: Emit, cancel: threading.Event, live: bool
) -> Generation:
    """One attempt at one choice, keeping a small model on the rails the request sets.

    * ``auto``: the "answer or call" grammar applies from the first token, so the answer holds no
      template markup and any tagged call is well-formed. If the model starts an untagged call
      instead, the attempt is cut short and redone under the call grammar alone (the prompt is
      cached, so this costs only the few tokens already written). If all it produced is a call
      already made and answered since the user last spoke, it is looping: it answers again in
      words, without the tools shown. An answer that turns into the same block of text over and
      over ends at its third copy (:class:`LoopGuard`) instead of running to the token limit.
    * ``none`` with tools declared: the call tag is banned, and an untagged call naming a tool is
      cut short and redone as prose.

    In a live stream every restart happens while the splitter still holds the output, so nothing
    sent is ever taken back.
    """
    plan, engine = ctx.plan, ctx.engine
    sampling = for_attempt(plan.sampling, index, attempt)
    on_delta = (lambda d: emit(ChoiceDelta(index, d))) if live else None
    run = partial(
        engine.generate,
        max_tokens=plan.max_tokens,
        stop=plan.stop,
        cancel=cancel,
        logprobs=plan.top_logprobs,
        on_delta=on_delta,
    )

    def restart(why: str) -> None:
        logger.debug("model %s: %s; generating choice %d again", plan.config.name, why, index)
        if live:
            emit(ChoiceRestart(index))

    policy = plan.policy
    if plan.call_grammar is not None:
        sniffer = CallSniffer(policy.callable, tag_constrained=True)
        gen = run(ctx.tokens, sampling, watch=sniffer, loop_guard=LoopGuard(until=CALL_OPEN))
        if gen.finish_reason == "aborted":
            restart("untagged tool call")
            gen = run(ctx.tokens, replace(sampling, grammar=plan.call_grammar))
        parsed = policy.parse(gen.text) if plan.answered and gen.finish_reason == "stop" else None
        # Only a calls-only output is redone: text before the calls may already be streamed.
        if parsed is not None and parsed.content is None and only_repeats(parsed.calls, plan.answered):
            restart("repeated an answered call")
            gen = run(ctx.answer_tokens(), replace(sampling, grammar=PROSE_GRAMMAR), loop_guard=LoopGuard())
        if gen.looped:
            logger.info("model %s: choice %d repeated itself; ended at the third copy", plan.config.name, index)
        return gen
    if policy.mode == "none" and policy.tools and sampling.grammar is None:
        bias = dict(sampling.logit_bias)
        if ctx.tag_token is not None:
            bias[ctx.tag_token] = -100.0
        names = [t.function.name for t in policy.tools]
        gen = run(ctx.tokens, replace(sampling, logit_bias=bias), watch=CallSniffer(names, tag_constrained=False))
        if gen.finish_reason == "aborted":
            restart("tool call although tool_choice is none")
            gen = run(ctx.tokens, replace(sampling, grammar=PROSE_GRAMMAR))
        return gen
    return run(ctx.tokens, sampling)


def chat_job(plan: ChatPlan) -> Callable[[Engine, Emit, threading.Event], ChatJobResult]:
    """The work to run on the model's thread for ``plan``."""

    def job(engine: Engine, emit: Emit, cancel: threading.Event) -> ChatJobResult:
        ctx = _JobContext(plan, engine)
        tokens = ctx.tokens
        check_logit_bias(plan.logit_bias, engine)
        emit(PromptReady(len(tokens)))
        live = plan.stream and not plan.buffered
        attempts = MAX_ATTEMPTS if plan.validator is not None and not live else 1
        results: list[ChoiceResult] = []
        for i in range(plan.n):
            for attempt in range(attempts):
                gen = _generate_choice(ctx, i, attempt, emit, cancel, live)
                logger.debug(
                    "model=%s prompt=%d completion=%d %.1f tok/s finish=%s",
                    plan.config.name,
                    len(tokens),
                    gen.completion_tokens,
                    gen.completion_tokens / gen.seconds if gen.seconds else 0.0,
                    gen.finish_reason,
                )
                problems: list[str] = []
                if gen.finish_reason == "stop" and plan.validator is not None:
                    problems = plan.validator(gen.text)
                if not problems:
                    break
                logger.info(
                    "model %s: output failed validation (attempt %d of %d): %s",
                    plan.config.name,
                    attempt + 1,
                    attempts,
                    "; ".join(problems),
                )
            results.append(ChoiceResult(gen, problems, attempt + 1))
            if live:
                emit(ChoiceDone(i, gen))
            if gen.finish_reason == "cancelled":
                break
        return ChatJobResult(prompt_tokens=len(tokens), choices=results)

    return job


# --------------------------------------------------------------------------------------------------
# 3. Responses


def api_logprobs(entries: list[EngineLogprob] | None) -> list[TokenLogprob]:
    """Engine logprobs in the chat shape (``token``, ``logprob``, ``bytes``, ``top_logprobs``)."""
    return [
        TokenLogprob(
            token=e.text,
            logprob=e.logprob,
            bytes=list(e.raw),
            top_logprobs=[TopLogprob(token=t, logprob=lp, bytes=list(raw)) for t, raw, lp in e.top],
        )
        for e in entries or []
    ]


def _finish(reason: str) -> FinishReason:
    return "length" if reason == "length" else "stop"


def _answer_text(plan: ChatPlan, gen: Generation) -> str | None:
    """The content of a turn that returns no call: never markup, never the start of a call cut short."""
    text = visible_text(gen.text)
    if text and gen.finish_reason == "length" and could_be_cut_call(text, plan.policy.callable):
        logger.info("model %s: an untagged call was cut short by the token limit", plan.config.name)
        return None
    return text


def _message(plan: ChatPlan, result: ChoiceResult) -> tuple[ResponseMessage, FinishReason]:
    """Read one generation into a message, enforcing what the request demanded."""
    gen = result.generation
    policy = plan.policy
    if policy.active:
        parsed = policy.parse(gen.text)
        if parsed.calls:
            return (
                ResponseMessage(content=visible_text(parsed.content or ""), tool_calls=parsed.calls),
                "tool_calls" if gen.finish_reason == "stop" else "length",
            )
        if policy.mode == "required" and gen.finish_reason == "stop":
            raise UpstreamError(
                plan.provider_id,
                f"model '{plan.config.name}' did not produce a valid call of "
                f"{', '.join(policy.callable)} in {result.attempts} attempts "
                f"({'; '.join(parsed.problems) or 'no call found'}).",
                code="invalid_tool_call",
            )
        if parsed.problems:
            logger.info("model %s: tool call dropped: %s", plan.config.name, "; ".join(parsed.problems))
        return ResponseMessage(content=_answer_text(plan, gen)), _finish(gen.finish_reason)
    if result.problems and plan.json_format is not None and plan.json_format.strict:
        raise UpstreamError(
            plan.provider_id,
            f"model '{plan.config.name}' did not produce JSON matching schema "
            f"'{plan.json_format.name}' in {result.attempts} attempts ({'; '.join(result.problems)}).",
            code="schema_mismatch",
        )
    return ResponseMessage(content=gen.text), _finish(gen.finish_reason)


def _usage(job: ChatJobResult) -> Usage:
    completion = sum(c.generation.completion_tokens for c in job.choices)
    return Usage(
        prompt_tokens=job.prompt_tokens, completion_tokens=completion, total_tokens=job.prompt_tokens + completion
    )


def _stop(result: ChoiceResult) -> dict[str, str]:
    """``stop_reason``: the stop string that ended a choice (vLLM's field; Anthropic's Messages needs it)."""
    gen = result.generation
    return {"stop_reason": gen.stop_string} if gen.stop_string and gen.finish_reason == "stop" else {}


def build_completion(plan: ChatPlan, job: ChatJobResult) -> ChatCompletion:
    """The non-streaming response."""
    choices = []
    for i, result in enumerate(job.choices):
        message, finish = _message(plan, result)
        logprobs = (
            ChoiceLogprobs(content=api_logprobs(result.generation.logprobs)) if plan.top_logprobs is not None else None
        )
        choices.append(Choice(index=i, message=message, finish_reason=finish, logprobs=logprobs, **_stop(result)))
    return ChatCompletion(
        id=new_id("chatcmpl"),
        created=now(),
        model=plan.params.model,
        choices=choices,
        usage=_usage(job),
        system_fingerprint=SYSTEM_FINGERPRINT,
    )


class _ChunkMaker:
    def __init__(self, plan: ChatPlan) -> None:
        self.id = new_id("chatcmpl")
        self.created = now()
        self.model = plan.params.model

    def __call__(
        self,
        index: int,
        delta: ApiChoiceDelta | None = None,
        *,
        finish: FinishReason | None = None,
        logprobs: list[TokenLogprob] | None = None,
        stop: dict[str, str] | None = None,
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            system_fingerprint=SYSTEM_FINGERPRINT,
            choices=[
                ChunkChoice(
                    index=index,
                    delta=delta or ApiChoiceDelta(),
                    finish_reason=finish,
                    logprobs=ChoiceLogprobs(content=logprobs) if logprobs is not None else None,
                    **(stop or {}),
                )
            ],
        )

    def usage(self, usage: Usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[],
            usage=usage,
            system_fingerprint=SYSTEM_FINGERPRINT,
        )


def _tool_call_chunks(chunk: _ChunkMaker, index: int, calls: list[ToolCall]) -> list[ChatCompletionChunk]:
    """OpenAI's streamed call shape: id, type and name first, then the arguments."""
    out = []
    for k, call in enumerate(calls):
        out.append(
            chunk(
                index,
                ApiChoiceDelta(
                    tool_calls=[
                        ToolCallDelta(
                            index=k,
                            id=call.id,
                            type="function",
                            function={"name": call.function.name, "arguments": ""},
                        )
                    ]
                ),
            )
        )
        out.append(
            chunk(
                index,
                ApiChoiceDelta(tool_calls=[ToolCallDelta(index=k, function={"arguments": call.function.arguments})]),
            )
        )
    return out


def _message_chunks(plan: ChatPlan, chunk: _ChunkMaker, index: int, result: ChoiceResult) -> list[ChatCompletionChunk]:
    """A buffered choice as chunks: role, content, calls, finish."""
    message, finish = _message(plan, result)
    out = [chunk(index, ApiChoiceDelta(role="assistant", content=""))]
    if message.content:
        lp = api_logprobs(result.generation.logprobs) if plan.top_logprobs is not None else None
        out.append(chunk(index, ApiChoiceDelta(content=message.content), logprobs=lp))
    if message.tool_calls:
        out.extend(_tool_call_chunks(chunk, index, message.tool_calls))
    out.append(chunk(index, finish=finish, stop=_stop(result) if finish == "stop" else None))
    return out


async def stream_chunks(plan: ChatPlan, handle: JobHandle[ChatJobResult]) -> AsyncIterator[ChatCompletionChunk]:
    """The streaming response; closing the iterator cancels generation and frees the model."""
    chunk = _ChunkMaker(plan)
    splitting = bool(plan.policy.tools)  # hold anything call-like; only an active policy returns calls
    splitters: dict[int, ToolCallStreamSplitter] = {}
    started: set[int] = set()
    want_lp = plan.top_logprobs is not None
    try:
        if not plan.buffered:
            started.add(0)
            yield chunk(0, ApiChoiceDelta(role="assistant", content=""))
        async for event in handle.events():
            if isinstance(event, ChoiceRestart):
                splitters.pop(event.index, None)  # everything of it was held, nothing was sent
                continue
            if not isinstance(event, ChoiceDelta | ChoiceDone):
                continue
            i = event.index
            if i not in started:
                started.add(i)
                yield chunk(i, ApiChoiceDelta(role="assistant", content=""))
            splitter = splitters.setdefault(i, ToolCallStreamSplitter())
            if isinstance(event, ChoiceDelta):
                text = splitter.feed(event.delta.text) if splitting else event.delta.text
                if text:
                    lp = api_logprobs(event.delta.logprobs) if want_lp else None
                    yield chunk(i, ApiChoiceDelta(content=text), logprobs=lp)
                continue
            gen = event.generation
            finish = _finish(gen.finish_reason)
            held = splitter.finish()
            if held and plan.policy.active:
                parsed = plan.policy.parse(held)
                if parsed.calls:
                    if parsed.content:
                        yield chunk(i, ApiChoiceDelta(content=parsed.content))
                    for c in _tool_call_chunks(chunk, i, parsed.calls):
                        yield c
                    finish = "tool_calls" if gen.finish_reason == "stop" else "length"
                else:
                    # A call cut short by the token limit, or one that did not validate: never as text.
                    if parsed.problems or find_markup(held) >= 0:
                        logger.info("model %s: streamed tool call dropped (finish %s)", plan.config.name, finish)
                    text = _answer_text(plan, replace(gen, text=held))
                    if text:
                        yield chunk(i, ApiChoiceDelta(content=text))
            elif held:
                yield chunk(i, ApiChoiceDelta(content=held))
            stop = {"stop_reason": gen.stop_string} if finish == "stop" and gen.stop_string else None
            yield chunk(i, finish=finish, stop=stop)
        job = await handle.result()
        if plan.buffered:
            for i, result in enumerate(job.choices):
                for c in _message_chunks(plan, chunk, i, result):
                    yield c
        elif plan.validator is not None:
            for result in job.choices:
                problems = plan.validator(result.generation.text) if result.generation.finish_reason == "stop" else []
                if problems:
                    logger.warning("model %s: streamed output failed validation: %s", plan.config.name, problems)
        if plan.include_usage:
            yield chunk.usage(_usage(job))
    finally:
        handle.cancel()
