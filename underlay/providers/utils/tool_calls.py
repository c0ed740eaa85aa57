"""Reliable tool calls from models too small to be trusted with a free-form format.

Small instruction models pick the right tool and arguments for simple prompts, but they write the call
in whatever shape they like: inside the ``<tool_call>`` tags their chat template asks for, as a fenced
JSON block, or as bare JSON, and sometimes with arguments that do not match the declared schema. An
agent cannot work with "usually". This module gives any provider that decodes locally two things:

* **Constraints** (:func:`plan_decoding`): GBNF grammars derived from the request's ``tools``,
  ``tool_choice`` and ``parallel_tool_calls`` that only admit calls we know how to read. A call is
  always ``<tool_call>\\n{"name": <declared name>, "arguments": <that tool's parameters>}\\n</tool_call>``
  (the Hermes form Qwen's template teaches), so the sampler cannot produce a malformed one.
  ``required`` and a named function constrain from the first token. ``auto`` constrains from the
  first token too, to "answer or call": text that never contains chat-template markup
  (:data:`MARKUP`: ``<tool_call>``, ``<tools>``, ``<|im_start|>`` ...), optionally followed by
  well-formed calls. Small models otherwise echo the tools section they were shown, or write half a
  tag, and that markup would reach the client as the answer. The text part is a character automaton
  (:func:`markup_free_rule`), so checking a sampled token against it costs next to nothing. When the
  model starts an untagged call instead (bare or fenced JSON naming a declared tool, which
  :class:`CallSniffer` spots within a few tokens), it generates again with the call grammar alone.
* **Lenient parsing and validation** (:func:`parse_tool_calls`): tagged, fenced and bare forms are all
  read, and a call is only ever returned when it is well-formed JSON naming a declared tool with
  arguments that validate against its schema. Anything else stays text. Remote providers that cannot
  constrain decoding can still use this half.

Grammar building imports ``llama_cpp`` lazily (for its JSON-schema-to-GBNF converter), so parsing works
without it. The converter does not enforce every JSON Schema keyword; :func:`grammar_gaps` lists the
ones a schema relies on that the grammar cannot guarantee, so callers know when validation may fail
after decoding and a retry (or a buffered stream) is needed.
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import string
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from underlay.api.inference import (
    AssistantMessage,
    ChatMessage,
    ChatTool,
    FunctionCall,
    NamedToolChoice,
    ToolCall,
    ToolMessage,
    UserMessage,
)

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"

#: Chat-template markup that is never part of an answer: the Hermes/Qwen tool tags and sections, and
#: ``<|`` (every ChatML-family control token, ``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``,
#: Llama's ``<|eot_id|>`` ..., starts with it). A model that writes one is echoing its prompt or
#: starting a turn that is not its own.
MARKUP: tuple[str, ...] = (
    CALL_OPEN,
    CALL_CLOSE,
    "<tools>",
    "</tools>",
    "<tool_response>",
    "</tool_response>",
    "<|",
)

#: How many calls one assistant turn may carry when parallel calls are allowed. Small models sometimes
#: repeat a call until they run out of tokens; a cap turns that loop into a clean end of turn.
MAX_PARALLEL_CALLS = 8

_FENCE_HEADER_RE = re.compile(r"```[ \t]*[A-Za-z0-9_+.-]*[ \t]*\r?\n")
#: A fence header longer than this with no newline is not the start of a JSON block.
_MAX_FENCE_HEADER = 24

ToolMode = Literal["none", "auto", "required"]

_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    """An OpenAI-style tool call id (``call_`` plus 24 random letters and digits)."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


# --------------------------------------------------------------------------------------------------
# Policy: what the request allows


@dataclass(frozen=True)
class ToolPolicy:
    """What ``tools`` + ``tool_choice`` + ``parallel_tool_calls`` allow the model to do.

    ``tools`` are all declared tools (what the prompt shows and what parsing accepts); ``callable``
    names the ones this turn may call (a named ``tool_choice`` narrows it to one). A named choice
    means exactly one call, whatever ``parallel_tool_calls`` says.
    """

    mode: ToolMode
    tools: tuple[ChatTool, ...] = ()
    callable: tuple[str, ...] = ()
    parallel: bool = True

    @classmethod
    def from_request(
        cls,
        tools: Sequence[ChatTool] | None,
        tool_choice: str | NamedToolChoice | None,
        parallel_tool_calls: bool | None,
    ) -> ToolPolicy:
        """Resolve OpenAI's defaults: tools present and no choice means ``auto``; no tools means none."""
        declared = tuple(tools or ())
        parallel = True if parallel_tool_calls is None else parallel_tool_calls
        if not declared or tool_choice == "none":
            return cls(mode="none", tools=declared, callable=(), parallel=parallel)
        names = tuple(t.function.name for t in declared)
        if isinstance(tool_choice, NamedToolChoice):
            return cls(mode="required", tools=declared, callable=(tool_choice.function.name,), parallel=False)
        mode: ToolMode = "required" if tool_choice == "required" else "auto"
        return cls(mode=mode, tools=declared, callable=names, parallel=parallel)

    @property
    def active(self) -> bool:
        """Whether the model may (or must) call something this turn."""
        return self.mode != "none" and bool(self.callable)

    @property
    def max_calls(self) -> int:
        """How many calls one turn may return."""
        return MAX_PARALLEL_CALLS if self.parallel else 1

    def parse(self, text: str) -> ParsedToolCalls:
        """:func:`parse_tool_calls` under this policy (allowed names, call count)."""
        return parse_tool_calls(text, self.tools, allowed=self.callable, max_calls=self.max_calls)

    def tool(self, name: str) -> ChatTool | None:
        for t in self.tools:
            if t.function.name == name:
                return t
        return None


def arguments_schema(tool: ChatTool) -> dict[str, Any]:
    """The JSON schema a call's ``arguments`` must satisfy.

    OpenAI reads a missing (or empty) ``parameters`` as "takes no arguments", so that becomes a schema
    for the empty object rather than JSON Schema's "anything goes".
    """
    params = tool.function.parameters
    if not params:
        return {"type": "object", "properties": {}, "additionalProperties": False}
    return params


# --------------------------------------------------------------------------------------------------
# Validation


def _validator_for(schema: dict[str, Any]) -> Any:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_errors(schema: dict[str, Any], instance: Any, *, limit: int = 3) -> list[str]:
    """Why ``instance`` does not satisfy ``schema`` (empty when it does), worded for a log or a client.

    A schema that is itself invalid is reported as one error instead of raising, because the schema came
    from a request and must not turn into a 500.
    """
    try:
        validator = _validator_for(schema)
        errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    except jsonschema.exceptions.SchemaError as exc:
        return [f"the schema itself is invalid: {exc.message}"]
    except Exception as exc:  # noqa: BLE001 - unresolvable $ref and the like, raised by `referencing`
        return [f"the schema cannot be applied: {exc}"]
    out = []
    for err in errors[:limit]:
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        out.append(f"{where}: {err.message}")
    return out


def check_schema(schema: dict[str, Any]) -> str | None:
    """None when ``schema`` is a valid JSON Schema, else why not (for a 400 naming the field)."""
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        return exc.message
    return None


# --------------------------------------------------------------------------------------------------
# Grammar


class SchemaGrammarError(ValueError):
    """A schema the grammar converter cannot handle; ``where`` names the part of the request."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: cannot build a decoding grammar from this JSON schema ({reason})")
        self.where = where
        self.reason = reason


@dataclass(frozen=True)
class JsonFormat:
    """A ``response_format`` that asks for JSON: any object (``schema`` None) or a given schema."""

    schema: dict[str, Any] | None = None
    strict: bool = False
    name: str = "response"


# Keywords the llama.cpp converter turns into grammar rules. Anything else that constrains values is a
# "gap": the grammar may admit output the schema rejects, so only post-hoc validation catches it.
_ENFORCED_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "$defs",
        "definitions",
        "pattern",
        "minLength",
        "maxLength",
        "format",
    }
)
_ANNOTATION_KEYWORDS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "nullable",
        "strict",
    }
)
_GRAMMAR_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_SINGLE = ("items", "additionalProperties", "not", "if", "then", "else", "contains")


def grammar_gaps(schema: Any, _path: str = "") -> list[str]:
    """JSON-pointer-ish paths of keywords in ``schema`` that the decoding grammar does not enforce.

    Empty means the grammar alone guarantees a valid instance (when decoding is not cut short).
    """
    gaps: list[str] = []
    if not isinstance(schema, dict):
        return gaps
    for key, value in schema.items():
        here = f"{_path}/{key}"
        if key in _ANNOTATION_KEYWORDS:
            continue
        if key == "format" and value not in _GRAMMAR_FORMATS:
            gaps.append(here)
        elif key == "oneOf":
            gaps.append(here + " (treated as anyOf)")
        elif key in ("minLength", "maxLength") and "pattern" in schema:
            gaps.append(here)
        elif key not in _ENFORCED_KEYWORDS and key not in _SUBSCHEMA_MAPS + _SUBSCHEMA_SINGLE:
            gaps.append(here)
        if key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            if key in ("patternProperties", "dependentSchemas"):
                gaps.append(here)
            for sub_name, sub in value.items():
                gaps.extend(grammar_gaps(sub, f"{here}/{sub_name}"))
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            for i, sub in enumerate(value):
                gaps.extend(grammar_gaps(sub, f"{here}/{i}"))
        elif key in _SUBSCHEMA_SINGLE and isinstance(value, dict):
            if key not in ("items", "additionalProperties"):
                gaps.append(here)
            gaps.extend(grammar_gaps(value, here))
    return gaps


def _literal(text: str) -> str:
    """A GBNF string literal; every non-alphanumeric ASCII character is hex-escaped to stay unambiguous."""
    out = []
    for ch in text:
        if ch.isalnum() and ch.isascii() or ch in "_-:/.,!? ":
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_STRICT_JSON_CHAR = r'[^"\\\x00-\x1F\x7F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


class _Rules:
    """Wraps llama.cpp's ``SchemaConverter`` so our own rules sit beside the ones it generates.

    We reach into its rule table (``_add_rule``/``format_grammar``), which is why llama-cpp-python is
    pinned; the names we add all start with ``tc-`` so they cannot collide with generated ones.
    """

    def __init__(self) -> None:
        from llama_cpp.llama_grammar import SchemaConverter

        # "name" before "arguments": the name decides which arguments schema applies.
        self._conv = SchemaConverter(
            prop_order={"name": 0, "arguments": 1}, allow_fetch=False, dotall=False, raw_pattern=False
        )

    def schema(self, schema: dict[str, Any], name: str, where: str, *, ref_base: str) -> str:
        """Add rules for ``schema`` and return the name of its top rule."""
        try:
            resolved = self._conv.resolve_refs(copy.deepcopy(schema), ref_base)
            return self._conv.visit(resolved, name)
        except (AssertionError, ValueError, KeyError, TypeError, RecursionError, IndexError) as exc:
            raise SchemaGrammarError(where, str(exc) or type(exc).__name__) from None

    def resolve(self, schema: dict[str, Any], where: str, *, ref_base: str) -> dict[str, Any]:
        """Resolve local ``$ref`` s of a schema that will be embedded in a larger one.

        Refs like ``#/$defs/x`` are relative to the tool's own parameters; once the parameters sit
        under ``anyOf[i].properties.arguments`` they would point nowhere, so each is rewritten to an
        absolute, per-tool name first.
        """
        try:
            return self._conv.resolve_refs(copy.deepcopy(schema), ref_base)
        except (AssertionError, ValueError, KeyError, TypeError) as exc:
            raise SchemaGrammarError(where, str(exc) or type(exc).__name__) from None

    def visit(self, schema: dict[str, Any], name: str, where: str) -> str:
        try:
            return self._conv.visit(schema, name)
        except (AssertionError, ValueError, KeyError, TypeError, RecursionError, IndexError) as exc:
            raise SchemaGrammarError(where, str(exc) or type(exc).__name__) from None

    def add(self, name: str, body: str) -> str:
        return self._conv._add_rule(name, body)

    def set_root(self, body: str) -> None:
        """Point ``root`` at ``body``, replacing an earlier root (one rule table, several grammars)."""
        self._conv._rules["root"] = body

    def text(self) -> str:
        rules = self._conv._rules
        if "char" in rules:
            # The converter lets raw control characters (a bare newline, say) into JSON strings, which
            # strict JSON forbids; models do emit them, so exclude them here.
            rules["char"] = _STRICT_JSON_CHAR
        return self._conv.format_grammar()


def _avoid_step(state: str, ch: str, words: Sequence[str], prefixes: set[str]) -> str | None:
    """Where the automaton that avoids ``words`` goes from ``state`` on ``ch`` (None: a word completed).

    States are the longest suffix of the text so far that is a proper prefix of some word, as in a
    string-search automaton; the text never contains a whole word, so one can only end at ``ch``.
    """
    text = state + ch
    if any(text.endswith(w) for w in words):
        return None
    return next(text[i:] for i in range(len(text) + 1) if text[i:] in prefixes)


def _char_class(chars: Iterable[str], *, negated: bool) -> str:
    body = "".join(ch if ch.isalnum() and ch.isascii() else f"\\x{ord(ch):02X}" for ch in sorted(chars))
    return f"[{'^' if negated else ''}{body}]"


def markup_free_rule(rules: _Rules, words: Sequence[str] = MARKUP, name: str = "tc-text") -> str:
    """Add rules for any text that contains none of ``words``; return the top rule's name.

    One rule per automaton state, each a choice between ending, a character that moves to another
    state, and any other character (back to the start). Every reference is in tail position, so
    llama.cpp's grammar stacks do not grow with the length of the text, and the grammar stays
    deterministic: a sampled token is checked in one pass over its characters.
    """
    prefixes = {w[:i] for w in words for i in range(len(w))}
    alphabet = sorted({ch for w in words for ch in w})
    names: dict[str, str] = {"": name}
    order = [""]
    bodies: dict[str, str] = {}
    while len(bodies) < len(order):
        state = order[len(bodies)]
        explicit: list[str] = []
        excluded: set[str] = set()
        for ch in alphabet:
            nxt = _avoid_step(state, ch, words, prefixes)
            if nxt is None:
                excluded.add(ch)
            elif nxt:
                if nxt not in names:
                    names[nxt] = f"{name}-{len(order)}"
                    order.append(nxt)
                explicit.append(f"{_literal(ch)} {names[nxt]}")
                excluded.add(ch)
        other = f"{_char_class(excluded, negated=True)} {name}" if excluded else f"[^\\x00] {name}"
        bodies[state] = "(" + " | ".join([other, *explicit]) + ")?"
    for state in order:
        rules.add(names[state], bodies[state])
    return name


def find_markup(text: str, words: Sequence[str] = MARKUP) -> int:
    """Where the first piece of template markup in ``text`` starts, or -1."""
    hits = [i for w in words if (i := text.find(w)) >= 0]
    return min(hits) if hits else -1


def visible_text(text: str) -> str | None:
    """What of a model's output may be shown as content when it holds no valid call.

    Everything before the first template markup (a call that did not validate, a call cut short by
    the token limit, an echoed tools section), trailing whitespace dropped; None when that is nothing.
    """
    cut = find_markup(text)
    if cut >= 0:
        text = text[:cut].rstrip()
    return text or None


_CUT_CALL_RE = re.compile(r'\A[\[\s]*\{\s*(?:"(?:n(?:a(?:m(?:e(?:"\s*(?::\s*(?:"(?P<name>[^"]*)"?)?)?)?)?)?)?)?)?')


def could_be_cut_call(text: str, names: Iterable[str]) -> bool:
    """Whether ``text``, cut short by the token limit, is the start of an untagged call to one of ``names``.

    Such a start (bare or fenced JSON whose ``name`` is, so far, a prefix of a declared tool's name) is
    half a call, not an answer, and must not be returned as content. JSON that has moved past
    a ``name`` naming no declared tool, or that starts with another key, is an answer like any other.
    """
    s = text.lstrip()
    if s.startswith(CALL_OPEN):
        return True
    if classify_start(s) != "call":
        return False
    header = _FENCE_HEADER_RE.match(s)
    body = s[header.end() :] if header else s
    m = _CUT_CALL_RE.match(body)
    if m is None:
        return False
    rest = body[m.end() :]
    name = m.group("name")
    if name is None:  # cut inside the opening brace or the "name" key
        return not rest.strip()
    closed = body[m.end("name") : m.end("name") + 1] == '"'
    if not closed:
        return not rest and any(n.startswith(name) for n in names)
    return name in set(names)


def _call_rule(rules: _Rules, policy: ToolPolicy) -> str:
    alternatives = []
    for i, name in enumerate(policy.callable):
        tool = policy.tool(name)
        if tool is None:  # pragma: no cover - the request validator already rejects this
            raise SchemaGrammarError("tool_choice", f"unknown function {name!r}")
        index = policy.tools.index(tool)
        where = f"tools[{index}].function.parameters"
        args = rules.resolve(arguments_schema(tool), where, ref_base=f"tool{i}")
        alternatives.append(
            {
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": args},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    schema = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    call = rules.visit(schema, "tc-call", "tools")
    block = rules.add("tc-block", f"{_literal(CALL_OPEN + chr(10))} {call} {_literal(chr(10) + CALL_CLOSE)}")
    if policy.parallel:
        more = MAX_PARALLEL_CALLS - 1
        return rules.add("tc-calls", f"{block} ({_literal(chr(10))} {block}){{0,{more}}}")
    return rules.add("tc-calls", block)


def _json_rule(rules: _Rules, fmt: JsonFormat) -> str:
    schema = fmt.schema if fmt.schema is not None else {"type": "object"}
    return rules.schema(schema, "tc-json", "response_format.json_schema.schema", ref_base="response")


@dataclass(frozen=True)
class DecodingPlan:
    """The grammars for one turn.

    ``grammar`` applies from the first token (None: the output is free). ``call_grammar``, set in
    ``auto`` mode, admits only calls: generate again under it when :class:`CallSniffer` sees an
    untagged call starting.
    """

    grammar: str | None = None
    call_grammar: str | None = None


def plan_decoding(policy: ToolPolicy | None, response_format: JsonFormat | None = None) -> DecodingPlan:
    """Grammars for ``policy`` and a JSON ``response_format``.

    * tools active, ``required`` (or a named function): calls from the first token, one call or up
      to ``MAX_PARALLEL_CALLS`` newline-separated ones when parallel calls are allowed;
    * tools active, ``auto``, with a JSON format: calls or the JSON answer, decided by the first
      character (a tag or a brace), so both stay constrained;
    * tools active, ``auto``, no format: text free of template markup, optionally followed by calls
      (or calls alone), with ``call_grammar`` (calls alone) for an untagged call the sniffer caught;
    * no tools: the JSON format's grammar, or nothing.

    Raises :class:`SchemaGrammarError` for a schema the converter cannot express.
    """
    active = policy is not None and policy.active
    if not active:
        if response_format is None:
            return DecodingPlan()
        rules = _Rules()
        rules.add("root", _json_rule(rules, response_format))
        return DecodingPlan(grammar=rules.text())
    assert policy is not None
    rules = _Rules()
    calls = _call_rule(rules, policy)
    if policy.mode == "required":
        rules.add("root", calls)
        return DecodingPlan(grammar=rules.text())
    if response_format is not None:
        answer = _json_rule(rules, response_format)
        rules.add("root", f"{calls} | {answer}")
        return DecodingPlan(grammar=rules.text())
    text = markup_free_rule(rules)
    rules.set_root(f"{text} {calls}?")
    answer_or_call = rules.text()
    rules.set_root(calls)
    return DecodingPlan(grammar=answer_or_call, call_grammar=rules.text())


# --------------------------------------------------------------------------------------------------
# Recognising a call as it starts


def classify_start(text: str) -> Literal["call", "text", "undecided"]:
    """Whether output that begins with ``text`` is shaping up as a call, plain text, or cannot tell yet.

    A call starts (after whitespace) with the tag, a JSON object or list, or a code fence (any
    language tag: small models fence JSON as ``xml`` or ``python`` too) whose first line
    of content starts a JSON object or list.
    """
    s = text.lstrip()
    if not s:
        return "undecided"
    if s.startswith(CALL_OPEN) or s[0] in "{[":
        return "call"
    if CALL_OPEN.startswith(s):
        return "undecided"
    if s.startswith("```"):
        header = _FENCE_HEADER_RE.match(s)
        if header is None:
            return "undecided" if len(s) <= _MAX_FENCE_HEADER and "\n" not in s else "text"
        body = s[header.end() :].lstrip()
        if not body:
            return "undecided"
        return "call" if body[0] in "{[" else "text"
    if "```".startswith(s):
        return "undecided"
    return "text"


class CallSniffer:
    """Watches the start of a free ``auto`` answer for an untagged call naming a declared tool.

    Returns True (stop, and generate again with the call grammar) once the output starts like a call
    *and* names one of ``names`` as a JSON string; a JSON example the user asked for, naming no tool,
    is left alone. ``tag_constrained`` says a tagged call is already handled by a lazy grammar, so the
    tag alone is no reason to stop. Once the output is plain text the sniffer stays quiet for good.
    """

    def __init__(self, names: Iterable[str], *, tag_constrained: bool) -> None:
        self._quoted = tuple(json.dumps(n) for n in names)
        self._tag_constrained = tag_constrained
        self._decided = False

    def __call__(self, text: str) -> bool:
        if self._decided:
            return False
        kind = classify_start(text)
        if kind == "text" or (kind == "call" and self._tag_constrained and text.lstrip().startswith(CALL_OPEN)):
            self._decided = True
            return False
        if kind == "undecided":
            return False
        if any(q in text for q in self._quoted):
            self._decided = True
            return True
        return False


#: A grammar for an answer in words: no JSON, tags or code fences anywhere, and no opening character
#: that could start one. It is the last resort when a model must answer (``tool_choice`` none, or
#: after its tools have answered) but keeps writing a call instead, which small models do.
PROSE_GRAMMAR = r"""root ::= [^{}<>\[\]`(),;:"\x20\t\r\n] [^{}<>\[\]`]*"""


def _canonical(name: str, arguments: Any) -> tuple[str, str]:
    """A call's identity: its name and its arguments as sorted, compact JSON."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return name, arguments
    return name, json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def answered_calls(messages: Sequence[ChatMessage]) -> set[tuple[str, str]]:
    """Calls the assistant made since the last user message that already have a tool result.

    A small model that sees its call and the result often writes the same call again instead of
    answering; this is what such a repeat is recognised by. Calls before the last user message do not
    count: asking again later is a fair reason to call again.
    """
    start = max((i for i, m in enumerate(messages) if isinstance(m, UserMessage)), default=-1) + 1
    results = {m.tool_call_id for m in messages[start:] if isinstance(m, ToolMessage)}
    out: set[tuple[str, str]] = set()
    for m in messages[start:]:
        if isinstance(m, AssistantMessage):
            for call in m.tool_calls or []:
                if call.id in results:
                    out.add(_canonical(call.function.name, call.function.arguments))
    return out


def only_repeats(calls: Sequence[ToolCall], answered: set[tuple[str, str]]) -> bool:
    """True when every call was already made and answered (so the model is looping, not working)."""
    return bool(calls) and all(_canonical(c.function.name, c.function.arguments) in answered for c in calls)


# --------------------------------------------------------------------------------------------------
# Parsing


@dataclass
class ParsedToolCalls:
    """The outcome of reading a model's output: calls (all valid) or none, plus the text to show.

    ``problems`` explains why candidate calls were rejected (for logs and retries); when it is not
    empty, ``calls`` is empty and ``content`` is the original text.
    """

    content: str | None
    calls: list[ToolCall] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    found_candidates: bool = False


_TAGGED_RE = re.compile(re.escape(CALL_OPEN) + r"(.*?)(?:" + re.escape(CALL_CLOSE) + r"|\Z)", re.DOTALL)
_FENCE_RE = re.compile(r"\A```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)\n?[ \t]*```\Z", re.DOTALL)


def _strip_fence(text: str) -> str:
    m = _FENCE_RE.match(text.strip())
    return m.group(2) if m else text


def _json_values(text: str) -> list[Any] | None:
    """All JSON values in ``text`` written back to back (whitespace between), or None if it is not that."""
    decoder = json.JSONDecoder(strict=False)  # tolerate raw control characters inside strings
    values = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return None
        values.append(value)
        pos = end
        while pos < len(text) and text[pos] in " \t\r\n,;":
            pos += 1
    return values if values else None


def _as_call_dicts(value: Any) -> list[dict[str, Any]] | None:
    """Read the shapes models use for a call: ``{name, arguments}``, ``{name, parameters}``,
    ``{"function": {...}}``, OpenAI's ``{"type": "function", "function": ...}``, or a list of those."""
    if isinstance(value, list):
        out: list[dict[str, Any]] = []
        for item in value:
            got = _as_call_dicts(item)
            if got is None:
                return None
            out.extend(got)
        return out or None
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict) and "name" in value["function"]:
        value = value["function"]
    name = value.get("name")
    if not isinstance(name, str):
        return None
    if "arguments" in value:
        args = value["arguments"]
    elif "parameters" in value:
        args = value["parameters"]
    else:
        args = {}
    if isinstance(args, str):  # double-encoded, as the OpenAI wire format has it
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return [{"name": name, "arguments": args, "_unparsed": True}]
    return [{"name": name, "arguments": args}]


def _calls_in_json_text(text: str) -> list[dict[str, Any]] | None:
    """Call dicts from JSON text holding one call, several back to back, or a list; None otherwise."""
    values = _json_values(text)
    if not values:
        return None
    return _as_call_dicts(values if len(values) > 1 else values[0])


def _validate(
    candidates: list[dict[str, Any]], tools: Sequence[ChatTool], allowed: Collection[str] | None
) -> tuple[list[ToolCall], list[str]]:
    by_name = {t.function.name: t for t in tools}
    calls: list[ToolCall] = []
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for i, cand in enumerate(candidates):
        name = cand["name"]
        tool = by_name.get(name)
        if tool is None:
            problems.append(f"call {i}: '{name}' is not a declared tool")
            continue
        if allowed is not None and name not in allowed:
            problems.append(f"call {i}: '{name}' is not allowed by tool_choice")
            continue
        if cand.get("_unparsed"):
            problems.append(f"call {i} ({name}): arguments are not valid JSON")
            continue
        args = cand["arguments"]
        if not isinstance(args, dict):
            problems.append(f"call {i} ({name}): arguments must be a JSON object")
            continue
        errs = schema_errors(arguments_schema(tool), args)
        if errs:
            problems.append(f"call {i} ({name}): " + "; ".join(errs))
            continue
        key = _canonical(name, args)
        if key in seen:  # the same call twice in one turn is a decoding loop, not a plan
            continue
        seen.add(key)
        calls.append(
            ToolCall(
                id=new_call_id(),
                function=FunctionCall(name=name, arguments=json.dumps(args, ensure_ascii=False)),
            )
        )
    return calls, problems


def parse_tool_calls(
    text: str,
    tools: Sequence[ChatTool],
    *,
    allowed: Collection[str] | None = None,
    max_calls: int | None = None,
) -> ParsedToolCalls:
    """Read tool calls out of model output, leniently, returning only valid ones.

    Recognised forms: ``<tool_call>`` blocks anywhere in the text (an unterminated last block is
    accepted if its JSON is complete; text outside the blocks becomes ``content``); and, when the whole
    output is nothing else, a fenced JSON block or bare JSON (one object, several back to back, or a
    list). Calls are all-or-nothing: if any candidate names an unknown tool or fails its schema, no
    call is returned and ``content`` is the original text, so a caller never acts on half a plan.
    ``max_calls`` (1 when parallel calls are off) keeps only the first calls, in order; a call that
    repeats an earlier one of the same turn exactly is dropped.
    """
    candidates: list[dict[str, Any]] = []
    problems: list[str] = []
    outside: str | None = None

    blocks = list(_TAGGED_RE.finditer(text))
    if blocks:
        pieces = []
        last = 0
        for m in blocks:
            pieces.append(text[last : m.start()])
            last = m.end()
            payload = _strip_fence(m.group(1).strip())
            dicts = _calls_in_json_text(payload)
            if dicts is None:
                problems.append(f"a {CALL_OPEN} block does not hold a JSON call: {payload[:80]!r}")
            else:
                candidates.extend(dicts)
        pieces.append(text[last:])
        outside = "".join(pieces).strip() or None
    else:
        stripped = text.strip()
        body = None
        fence = _FENCE_RE.match(stripped)
        if fence:  # any language tag: models fence JSON calls as xml, python, ...
            body = fence.group(2)
        elif stripped[:1] in ("{", "["):
            body = stripped
        if body is not None:
            candidates.extend(_calls_in_json_text(body) or [])
        if not candidates:
            return ParsedToolCalls(content=text if text else None)

    if problems or not candidates:
        return ParsedToolCalls(content=text or None, problems=problems, found_candidates=True)
    if max_calls is not None:
        candidates = candidates[:max_calls]
    calls, problems = _validate(candidates, tools, allowed)
    if problems:
        return ParsedToolCalls(content=text or None, problems=problems, found_candidates=True)
    return ParsedToolCalls(content=outside, calls=calls, found_candidates=True)


# --------------------------------------------------------------------------------------------------
# Streaming


class ToolCallStreamSplitter:
    """Splits streamed model text into content that can be sent now and a held-back call section.

    A stream cannot take back text it has sent, so anything that might become a call is held: the
    start of the output while it could still turn into a tag, a JSON object or a JSON fence, and
    everything from a ``<tool_call>`` tag on. Plain answers stream through unchanged (less at most
    ``len(CALL_OPEN) - 1`` characters held at any moment). At the end, :attr:`held` is what to hand
    to :func:`parse_tool_calls`; if it yields no valid calls, send it as content.
    """

    def __init__(self) -> None:
        self._mode: Literal["undecided", "text", "call"] = "undecided"
        self._buf = ""

    @property
    def held(self) -> str:
        """Text not yet released (the call section, or a tail that might start one)."""
        return self._buf

    @property
    def in_call(self) -> bool:
        return self._mode == "call"

    def feed(self, delta: str) -> str:
        """Add model text; return the part that is safe to send as content now."""
        self._buf += delta
        if self._mode == "call":
            return ""
        if self._mode == "undecided":
            kind = classify_start(self._buf)
            if kind == "undecided":
                return ""
            if kind == "call":
                self._mode = "call"
                return ""
            self._mode = "text"
        idx = self._buf.find(CALL_OPEN)
        if idx >= 0:
            out, self._buf = self._buf[:idx], self._buf[idx:]
            self._mode = "call"
            return out
        keep = 0
        for n in range(min(len(CALL_OPEN) - 1, len(self._buf)), 0, -1):
            if CALL_OPEN.startswith(self._buf[-n:]):
                keep = n
                break
        out = self._buf[: len(self._buf) - keep]
        self._buf = self._buf[len(self._buf) - keep :]
        return out

    def finish(self) -> str:
        """End of output: return (and clear) whatever is held."""
        held, self._buf = self._buf, ""
        return held
