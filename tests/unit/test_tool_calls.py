"""Tool-call machinery without a model: policy, grammar building, start classification, parsing, streaming.

Grammars are checked for structure here; that llama.cpp accepts them and that decoding under them
yields valid calls is covered with a real model in tests/integration/test_llama_cpp_provider.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

from underlay.api.inference import ChatTool, NamedToolChoice
from underlay.providers.utils.tool_calls import (
    CALL_CLOSE,
    CALL_OPEN,
    MAX_PARALLEL_CALLS,
    CallSniffer,
    JsonFormat,
    SchemaGrammarError,
    ToolCallStreamSplitter,
    ToolPolicy,
    arguments_schema,
    check_schema,
    classify_start,
    could_be_cut_call,
    find_markup,
    grammar_gaps,
    markup_free_rule,
    new_call_id,
    parse_tool_calls,
    plan_decoding,
    schema_errors,
    visible_text,
)

WEATHER = ChatTool.model_validate(
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                "required": ["city"],
            },
        },
    }
)
ADD = ChatTool.model_validate(
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "$defs": {"n": {"type": "integer"}},
                "properties": {"a": {"$ref": "#/$defs/n"}, "b": {"$ref": "#/$defs/n"}},
                "required": ["a", "b"],
            },
        },
    }
)
NOW = ChatTool.model_validate({"type": "function", "function": {"name": "now"}})
TOOLS = [WEATHER, ADD, NOW]


def block(name: str, arguments: object) -> str:
    return f"{CALL_OPEN}\n{json.dumps({'name': name, 'arguments': arguments})}\n{CALL_CLOSE}"


# --------------------------------------------------------------------------------------------------
# Policy


def test_policy_resolves_openai_defaults() -> None:
    assert ToolPolicy.from_request(None, None, None).mode == "none"
    auto = ToolPolicy.from_request(TOOLS, None, None)
    assert auto.mode == "auto" and auto.parallel and auto.callable == ("get_weather", "add", "now")
    assert ToolPolicy.from_request(TOOLS, "none", None).active is False
    required = ToolPolicy.from_request(TOOLS, "required", False)
    assert required.mode == "required" and not required.parallel and required.max_calls == 1
    named = ToolPolicy.from_request(TOOLS, NamedToolChoice.model_validate({"function": {"name": "add"}}), True)
    assert named.mode == "required" and named.callable == ("add",) and named.max_calls == 1


def test_missing_parameters_mean_no_arguments() -> None:
    schema = arguments_schema(NOW)
    assert schema_errors(schema, {}) == []
    assert schema_errors(schema, {"x": 1})


def test_call_ids_look_like_openai_ones() -> None:
    ids = {new_call_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("call_") and len(i) == 29 and i[5:].isalnum() for i in ids)


# --------------------------------------------------------------------------------------------------
# Grammar


def rules_of(grammar: str) -> dict[str, str]:
    return dict(line.split(" ::= ", 1) for line in grammar.splitlines())


def test_required_grammar_admits_only_tagged_calls_of_declared_tools() -> None:
    plan = plan_decoding(ToolPolicy.from_request(TOOLS, "required", None))
    assert plan.call_grammar is None and plan.grammar is not None
    rules = rules_of(plan.grammar)
    assert rules["root"] == "tc-calls"
    assert rules["tc-block"].startswith('"\\x3Ctool_call\\x3E\\x0A"')
    assert f"{{0,{MAX_PARALLEL_CALLS - 1}}}" in rules["tc-calls"]
    # one alternative per tool, each pinning the name
    assert rules["tc-call"] == "tc-call-0 | tc-call-1 | tc-call-2"
    names = [v for k, v in rules.items() if k.endswith("-name")]
    assert sorted(names) == ['"\\"add\\""', '"\\"get_weather\\""', '"\\"now\\""']
    # local $refs of a tool are resolved inside its own parameters
    assert rules["tc-call-1-arguments-a"] == "integer"
    # a tool without parameters takes exactly {}
    assert rules["tc-call-2-arguments"].replace(" ", "") == '"{"space"}"space'


def test_named_choice_and_no_parallel_allow_exactly_one_call() -> None:
    named = NamedToolChoice.model_validate({"function": {"name": "get_weather"}})
    rules = rules_of(plan_decoding(ToolPolicy.from_request(TOOLS, named, True)).grammar or "")
    assert rules["tc-calls"] == "tc-block"
    assert "tc-call-0" not in rules and rules["tc-call-name"] == '"\\"get_weather\\""'


def test_auto_constrains_answer_or_call_and_keeps_a_call_grammar() -> None:
    plan = plan_decoding(ToolPolicy.from_request(TOOLS, "auto", None))
    rules = rules_of(plan.grammar or "")
    # text free of markup, then optionally calls: from the first token, not lazily at the tag
    assert rules["root"] == "tc-text tc-calls?"
    assert rules_of(plan.call_grammar or "")["root"] == "tc-calls"


def _text_automaton(grammar: str) -> Callable[[str], bool]:
    """A reader for the ``tc-text`` rules exactly as written into the grammar.

    Each rule is ``( alt | alt ... )?`` where an alternative is a one-character literal or a
    (negated) character class followed by the next rule; reading a string walks the rules, and the
    grammar is deterministic, so at most one alternative may match each character.
    """
    rules = {k: v for k, v in rules_of(grammar).items() if k.startswith("tc-text")}

    def unescape(body: str) -> str:
        return re.sub(r"\\x([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), body)

    table: dict[str, list[tuple[bool, str, str]]] = {}
    for name, body in rules.items():
        assert body.startswith("(") and body.endswith(")?"), body
        alts = []
        for alt in body[1:-2].split(" | "):
            matcher, target = alt.rsplit(" ", 1)
            if matcher.startswith("[^"):
                alts.append((True, unescape(matcher[2:-1]), target))
            else:
                assert matcher.startswith('"') and matcher.endswith('"'), matcher
                alts.append((False, unescape(matcher[1:-1]), target))
        table[name] = alts

    def accepts(text: str) -> bool:
        state = "tc-text"
        for ch in text:
            hits = [t for negated, chars, t in table[state] if (ch not in chars) == negated]
            assert len(hits) <= 1, (state, ch, hits)
            if not hits:
                return False
            state = hits[0]
        return True

    return accepts


@pytest.mark.parametrize(
    "text",
    [
        "Paris is sunny.",
        "if a < b and b > c: pass",
        "<div><p>html is fine</p></div>",
        "<tool is not a tag, nor <tool_, <toolbox> or </tool",
        "x <<tools <t> </to>",
        "unicode: été, 東京, 🙂",
        "",
    ],
)
def test_answer_text_admits_ordinary_text(text: str) -> None:
    accepts = _text_automaton(plan_decoding(ToolPolicy.from_request(TOOLS, "auto", None)).grammar or "")
    assert accepts(text)


@pytest.mark.parametrize(
    "text",
    [
        "<tools>",
        'I have these: <tools>\n{"type": "function"}',
        "done</tools>",
        "<tool_call>",
        "text then <<tool_call>",
        "}\n</tool_call>",
        "<tool_response>",
        "</tool_response>",
        "<|im_start|>user",
        "bye<|im_end|>",
        "<|endoftext|>",
        "<<|",
    ],
)
def test_answer_text_refuses_template_markup(text: str) -> None:
    grammar = plan_decoding(ToolPolicy.from_request(TOOLS, "auto", None)).grammar or ""
    accepts = _text_automaton(grammar)
    assert not accepts(text)
    assert find_markup(text) >= 0  # the grammar and the after-the-fact check agree
    # every proper prefix is still fine: the text is refused at the character that completes the markup
    assert accepts(text[:-1]) or find_markup(text[:-1]) >= 0


def test_markup_free_rule_for_other_words() -> None:
    from underlay.providers.utils.tool_calls import _Rules

    rules = _Rules()
    rules.set_root(markup_free_rule(rules, ("abab", "ba!")))
    accepts = _text_automaton(rules.text())
    assert accepts("aba") and accepts("abba") and accepts("bab") and accepts("ab!")
    assert not accepts("xababx") and not accepts("aabab") and not accepts("bba!")


@pytest.mark.parametrize(
    ("text", "cut_call"),
    [
        ('```json\n{\n  "name": "get', True),  # what Qwen writes for the weather prompt, cut at 10 tokens
        ("```json\n{\n ", True),
        ('{"na', True),
        ('{"name": "get_weather", "arguments": {"ci', True),
        ('[{"name": "get_weather"', True),
        ('<tool_call>\n{"na', True),
        ('{"name": "Bob", "age": 3', False),  # JSON naming no tool is an answer
        ('```json\n{\n  "name": "getx', False),
        ('{"title": "x"', False),
        ("```python\nimport os", False),
        ("Paris is sunny", False),
    ],
)
def test_a_call_cut_short_is_told_from_an_answer_cut_short(text: str, cut_call: bool) -> None:
    assert could_be_cut_call(text, ["get_weather", "add"]) is cut_call


def test_visible_text_cuts_at_markup() -> None:
    assert visible_text("The answer.") == "The answer."
    assert visible_text('Let me check.\n<tool_call>\n{"name": "get_wea') == "Let me check."
    assert visible_text('<tool_call>\n{"name": "x"') is None
    assert visible_text("I can use: <tools>[...]</tools>") == "I can use:"
    assert visible_text("") is None


def test_auto_with_json_format_chooses_between_calls_and_the_json() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    plan = plan_decoding(ToolPolicy.from_request(TOOLS, "auto", None), JsonFormat(schema=schema))
    rules = rules_of(plan.grammar or "")
    assert rules["root"] == "tc-calls | tc-json" and plan.call_grammar is None


def test_json_formats_without_tools() -> None:
    any_object = rules_of(plan_decoding(None, JsonFormat()).grammar or "")
    assert any_object["root"] == "tc-json" and any_object["tc-json"] == "object"
    assert plan_decoding(ToolPolicy.from_request(TOOLS, "none", None)).grammar is None
    # strings may not hold raw control characters (invalid JSON), unlike the converter's default
    assert "\\x00-\\x1F" in any_object["char"]


def test_unsupported_schema_is_reported_with_its_place() -> None:
    bad = ChatTool.model_validate(
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"$ref": "https://x/y"}}}},
        }
    )
    with pytest.raises(SchemaGrammarError) as info:
        plan_decoding(ToolPolicy.from_request([bad], "required", None))
    assert info.value.where == "tools[0].function.parameters"


def test_grammar_gaps_name_unenforced_keywords() -> None:
    assert grammar_gaps(WEATHER.function.parameters) == []
    schema = {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 0},
            "email": {"type": "string", "format": "email"},
            "when": {"type": "string", "format": "date"},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        },
    }
    assert sorted(grammar_gaps(schema)) == [
        "/properties/age/minimum",
        "/properties/email/format",
        "/properties/tags/uniqueItems",
    ]


def test_check_schema() -> None:
    assert check_schema({"type": "object"}) is None
    assert check_schema({"type": "objekt"})


# --------------------------------------------------------------------------------------------------
# Recognising calls as they start


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("", "undecided"),
        ("  \n", "undecided"),
        ("<tool", "undecided"),
        ("<tool_call>", "call"),
        ('{"name"', "call"),
        ("[{", "call"),
        ("```", "undecided"),
        ("```xml", "undecided"),
        ("```xml\n", "undecided"),
        ('```xml\n{"name"', "call"),
        ("```python\ndef f():", "text"),
        ("The weather", "text"),
        ("<b>bold</b>", "text"),
        ("``inline``", "text"),
    ],
)
def test_classify_start(text: str, kind: str) -> None:
    assert classify_start(text) == kind


def test_sniffer_stops_only_for_calls_naming_a_declared_tool() -> None:
    sniff = CallSniffer(["get_weather"], tag_constrained=True)
    assert not sniff('```json\n{"name": "get_wea')
    assert sniff('```json\n{"name": "get_weather"')
    example = CallSniffer(["get_weather"], tag_constrained=True)
    assert not example('{"name": "Bob", "age": 3}')
    tagged = CallSniffer(["get_weather"], tag_constrained=True)
    assert not tagged('<tool_call>\n{"name": "get_weather"')  # the lazy grammar already has it
    untagged_model = CallSniffer(["get_weather"], tag_constrained=False)
    assert untagged_model('<tool_call>\n{"name": "get_weather"')
    text = CallSniffer(["get_weather"], tag_constrained=False)
    assert not text("I will call ") and not text('I will call "get_weather"')


# --------------------------------------------------------------------------------------------------
# Parsing


def test_tagged_calls_with_surrounding_text() -> None:
    text = "Let me check.\n" + block("get_weather", {"city": "Paris"}) + "\n" + block("add", {"a": 1, "b": 2})
    parsed = parse_tool_calls(text, TOOLS)
    assert parsed.content == "Let me check."
    assert [c.function.name for c in parsed.calls] == ["get_weather", "add"]
    assert json.loads(parsed.calls[0].function.arguments) == {"city": "Paris"}
    assert parsed.calls[0].id != parsed.calls[1].id


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        '```xml\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        '[{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        '{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}',
        '<tool_call>\n```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```\n</tool_call>',
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}',  # unterminated but complete
        '{"name": "get_weather", "arguments": {"city": "Par\nis"}}',  # raw newline in a string
    ],
)
def test_lenient_forms(text: str) -> None:
    parsed = parse_tool_calls(text, TOOLS)
    assert [c.function.name for c in parsed.calls] == ["get_weather"], parsed.problems
    assert json.loads(parsed.calls[0].function.arguments)["city"].replace("\n", "") == "Paris"
    assert parsed.content is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"name": "get_time", "arguments": {}}', "not a declared tool"),
        ('{"name": "get_weather", "arguments": {"unit": "c"}}', "'city' is a required property"),
        ('{"name": "get_weather", "arguments": {"city": "x", "unit": "k"}}', "is not one of"),
        ('{"name": "get_weather", "arguments": "{not json"}', "not valid JSON"),
        ('{"name": "get_weather", "arguments": [1]}', "must be a JSON object"),
        ('<tool_call>\n{"name": "get_weather", "argu\n</tool_call>', "does not hold a JSON call"),
    ],
)
def test_invalid_calls_stay_text(text: str, problem: str) -> None:
    parsed = parse_tool_calls(text, TOOLS)
    assert parsed.calls == [] and parsed.content == text
    assert any(problem in p for p in parsed.problems), parsed.problems


def test_calls_are_all_or_nothing() -> None:
    text = block("get_weather", {"city": "Paris"}) + "\n" + block("get_weather", {})
    parsed = parse_tool_calls(text, TOOLS)
    assert parsed.calls == [] and parsed.content == text


def test_allowed_names_and_call_count() -> None:
    text = block("get_weather", {"city": "Paris"}) + "\n" + block("add", {"a": 1, "b": 2})
    assert parse_tool_calls(text, TOOLS, allowed={"add"}).calls == []
    one = parse_tool_calls(text, TOOLS, max_calls=1)
    assert [c.function.name for c in one.calls] == ["get_weather"]
    policy = ToolPolicy.from_request(TOOLS, "auto", False)
    assert len(policy.parse(text).calls) == 1


def test_plain_text_and_json_answers_are_content() -> None:
    assert parse_tool_calls("Sunny, 21 °C.", TOOLS).content == "Sunny, 21 °C."
    assert parse_tool_calls("", TOOLS).content is None
    data = '{"city": "Paris", "temp": 21}'
    parsed = parse_tool_calls(data, TOOLS)
    assert parsed.calls == [] and parsed.content == data


# --------------------------------------------------------------------------------------------------
# Streaming


def feed_all(splitter: ToolCallStreamSplitter, text: str, step: int = 3) -> str:
    out = "".join(splitter.feed(text[i : i + step]) for i in range(0, len(text), step))
    return out


@pytest.mark.parametrize("step", [1, 2, 5, 50])
def test_plain_text_streams_through(step: int) -> None:
    splitter = ToolCallStreamSplitter()
    text = "Hello <b>there</b>, a < b and c > d."
    sent = feed_all(splitter, text, step)
    assert sent + splitter.finish() == text
    assert len(text) - len(sent) < len(CALL_OPEN)


@pytest.mark.parametrize("step", [1, 4, 100])
def test_call_sections_are_held(step: int) -> None:
    call = block("get_weather", {"city": "Paris"})
    splitter = ToolCallStreamSplitter()
    sent = feed_all(splitter, "Checking. " + call, step)
    assert sent == "Checking. "
    held = splitter.finish()
    assert held == call and parse_tool_calls(held, TOOLS).calls

    untagged = ToolCallStreamSplitter()
    body = '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'
    assert feed_all(untagged, body, step) == ""
    assert untagged.finish() == body


def test_streamed_and_whole_parsing_agree() -> None:
    for text in ["Just text.", "Text then " + block("add", {"a": 1, "b": 2}), block("now", {}), "<tool_call>broken"]:
        splitter = ToolCallStreamSplitter()
        sent = feed_all(splitter, text, 2)
        parsed = parse_tool_calls(splitter.finish(), TOOLS)
        whole = parse_tool_calls(text, TOOLS)
        assert [c.function.name for c in parsed.calls] == [c.function.name for c in whole.calls]
        streamed_content = sent + (parsed.content or "" if parsed.calls else parsed.content or "")
        assert streamed_content.strip() == (whole.content or "").strip()
