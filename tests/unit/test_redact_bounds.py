"""The secret redactor does bounded, linear work on any text, counted (not timed).

A client controls much of what is redacted: paths and ids (access log lines), model names (error
messages), headers and bodies (logged or echoed by upstreams). The redactor counts the characters each
of its rules examines (``Redactor.scanned``) and the longest text it was given (``Redactor.largest``);
these tests feed adversarial text of 100,000 characters through every path that redacts (log lines
and tracebacks, span attributes, client error envelopes and stream error events, ``/v1/providers``)
and bound those counts. The old patterns (``[A-Za-z0-9_-]*(api_key|...)`` and the URL pattern) read a
run of word characters again from every starting position: quadratic, 80 s for 3,000 characters.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from underlay.api.errors import InvalidRequestError, UpstreamError
from underlay.api.tool_runtime import McpConnection, ToolCallContext
from underlay.core.stack import redact as redact_config
from underlay.core.telemetry.instrument import _request_attributes
from underlay.core.telemetry.logs import make_handler
from underlay.server.errors import masked_envelope
from underlay.server.sse import _error_frame
from underlay.shared.redact import (
    MASK,
    MAX_TEXT,
    MAX_TRACEBACK,
    RULE_NAMES,
    Redactor,
    record_error,
    redactor,
    request_secrets,
)

N = 100_000
SECRET = "zqSecretValue-93x"

ADVERSARIAL = {
    "word run": "a" * N,
    "id": "vs_" + "a" * N,
    "keyword run": "token" * (N // 5),
    "keyword then separator": "api_key=" * (N // 8),
    "separator, no value": "password: ," * (N // 11),
    "unclosed double quotes": 'secret: "' * (N // 9),
    "unclosed single quotes": "token='a," * (N // 9),
    "unclosed braces": "x-underlay-provider-data: {" * (N // 27),
    "scheme runs": "://" * (N // 3),
    "user without password": "http://" + "u" * N,
    "password without host": "http://u:" + "p" * N,
    "bearer runs": "Bearer " * (N // 7),
    "bearer, short tokens": "Bearer ab " * (N // 10),
    "key prefixes": "sk-" * (N // 3),
    "spaces": " " * N,
    "newlines": "\n" * N,
    "mixed": ("Authorization: Bearer x api_key='y sk-z http://a:b" * (N // 50)),
}


@pytest.fixture(autouse=True)
def _fresh_counts() -> Iterator[None]:
    redactor.reset_counts()
    yield
    redactor.reset_counts()


def _total(r: Redactor) -> int:
    return sum(r.scanned.values())


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_each_rule_is_one_left_to_right_pass(name: str) -> None:
    """Uncut (limit lifted): each rule examines at most a small constant times the text, and doubling the
    text at most doubles the work. A quadratic rule would show 100,000x the text here."""
    text = ADVERSARIAL[name]
    counts: list[int] = []
    for size in (len(text) // 2, len(text)):
        r = Redactor([SECRET])
        r(text[:size], limit=10 * N)
        for rule in RULE_NAMES:
            assert r.scanned[rule] <= 12 * size + 64, (rule, r.scanned[rule], size)
        counts.append(_total(r))
    assert counts[1] <= 2 * counts[0] + 256, counts


def test_text_past_the_limit_is_cut_before_it_is_scanned() -> None:
    r = Redactor([SECRET])
    out = r("a" * N + SECRET)
    assert r.largest <= MAX_TEXT + 256 and _total(r) <= len(RULE_NAMES) * (MAX_TEXT + 256)
    assert len(out) < MAX_TEXT + 64 and out.endswith(f"[cut: {N + len(SECRET)} characters in all]")
    assert SECRET not in out


@pytest.mark.parametrize("offset", [-40, -17, -9, -3, 0, 1, 5, 200, 255, 256, 300])
@pytest.mark.parametrize(
    ("secret", "value"),
    [
        (SECRET, SECRET),
        ("sk-" + "K7" * 15, "K7" * 15),
        ("Bearer tok9tok9tok9", "tok9tok9tok9"),
        ("api_key=v4lue-v4lue", "v4lue-v4lue"),
    ],
)
def test_a_secret_straddling_the_cut_is_never_shown_in_part(offset: int, secret: str, value: str) -> None:
    r = Redactor([SECRET])
    out = r("w" * (MAX_TEXT + offset - 1) + " " + secret + " tail" * 100)
    for k in range(4, len(value) + 1):
        assert value[:k] not in out, (offset, secret, value[:k])


def test_log_lines_of_huge_client_text_are_bounded_and_masked() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("underlay.test.bounds")
    logger.handlers = [make_handler("json", stream)]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    redactor.add(SECRET)
    path = "/v1/vector_stores/vs_" + "a" * N
    logger.info('%s - "GET %s HTTP/1.1" %d', "127.0.0.1:5000", path, 401)
    logger.info("headers: Authorization: Bearer %s x-api-key=%s %s", "t" * N, SECRET, "h" * N)
    try:
        raise ValueError("model '" + "m" * N + "' not found; key " + SECRET)
    except ValueError:
        logger.exception("request failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    for line in lines:
        entry = json.loads(line)
        assert len(entry["message"]) <= MAX_TEXT + 64
        assert len(entry.get("exception", "")) <= MAX_TRACEBACK + 64
        assert SECRET not in line
    assert redactor.largest <= MAX_TRACEBACK + 256
    assert _total(redactor) <= 16 * (2 * (MAX_TEXT + 256) + MAX_TRACEBACK + 256)


def test_span_attributes_are_bounded_and_masked() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("call") as span:
        description = record_error(span, UpstreamError("p", "upstream said api_key=" + SECRET + " " + "e" * N))
    server = "http://u:" + SECRET + "@" + "h" * N + "/mcp"
    context = ToolCallContext(connection=McpConnection(name=server, uri=server))
    attributes = _request_attributes(("tool",), {"tool_name": "tool", "context": context}, "invoke_tool")
    event = exporter.get_finished_spans()[0].events[0]
    for text in (description, str(event.attributes["exception.message"]), attributes["underlay.tool.server"]):
        assert SECRET not in text and len(text) <= MAX_TEXT + 128
    assert redactor.largest <= MAX_TEXT + 256


def test_client_error_messages_and_stream_error_events_are_bounded_and_masked() -> None:
    model = "m" * N
    errors = [
        InvalidRequestError(f"Model '{model}' not found; GET /v1/models lists them."),
        UpstreamError("openai", f"upstream echoed Authorization: Bearer {SECRET} for model {model}"),
        UpstreamError("mcp", f"X-Underlay-Provider-Data: {{{model} {SECRET}"),
    ]
    for error in errors:
        envelope = masked_envelope(error)
        frame = _error_frame(error)
        assert len(envelope["error"]["message"]) <= MAX_TEXT + 64 and len(frame) <= MAX_TEXT + 512
        assert SECRET.encode() not in frame and SECRET not in json.dumps(envelope)
    assert redactor.largest <= MAX_TEXT + 256 and _total(redactor) <= 16 * len(errors) * 2 * (MAX_TEXT + 256)


def test_provider_listing_is_bounded_and_masked() -> None:
    config = {"base_url": "https://u:" + SECRET + "@" + "h" * N, "notes": ["a" * N], "api_key": SECRET}
    shown = redact_config(config, ("api_key",))
    assert SECRET not in json.dumps(shown) and shown["api_key"] == "********"
    assert len(shown["base_url"]) <= MAX_TEXT + 64 and len(shown["notes"][0]) <= MAX_TEXT + 64
    assert redactor.largest <= MAX_TEXT + 256


def test_request_secrets_are_masked_only_while_the_block_runs() -> None:
    plain = "ws-ordinary-word"
    with request_secrets([plain, "abc"]):
        assert redactor(f"tenant {plain} abc") == f"tenant {MASK} abc"
    assert redactor(f"tenant {plain}") == f"tenant {plain}"
