"""Secret redaction and the JSON log format."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from underlay.api.context import request_id_var
from underlay.core.config import RunConfig
from underlay.core.stack import redact as redact_config
from underlay.core.telemetry.logs import JsonFormatter, RedactingFilter, configure_logging, make_handler
from underlay.shared.redact import Redactor


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.def-ghi_123", "abc.def-ghi_123"),
        ("calling with key sk-proj-AbCdEf123456 now", "AbCdEf123456"),
        ("postgresql://app:s3cr3t-pw@db:5432/underlay", "s3cr3t-pw"),
        ('{"openai_api_key": "my-provider-key", "other": 1}', "my-provider-key"),
        ("api_key=plainvalue123&x=1", "plainvalue123"),
        ("password: hunter22 and more", "hunter22"),
        ('X-Underlay-Provider-Data: {"together_api_key": "tg-123456"}', "tg-123456"),
        ("access_token='tok-abcdef'", "tok-abcdef"),
        ("Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    ],
)
def test_patterns_mask_secrets(text: str, secret: str) -> None:
    masked = Redactor()(text)
    assert secret not in masked
    assert "***" in masked


def test_ordinary_text_is_left_alone() -> None:
    text = "prompt_tokens=12 completion_tokens: 30 max_tokens=5 model=sk model http://host:8080/v1"
    assert Redactor()(text) == text


def test_known_values_from_the_config_are_masked_anywhere() -> None:
    redactor = Redactor()
    redactor.add_from_config({"providers": [{"api_key": "zzTopSecretValue"}], "headers": {"X-Api-Key": "hdr-value-1"}})
    masked = redactor("upstream said: invalid credential zzTopSecretValue (header hdr-value-1)")
    assert "zzTopSecretValue" not in masked and "hdr-value-1" not in masked
    redactor.add("abc")  # too short to mask safely: it would eat ordinary words
    assert redactor("abc") == "abc"


def _logger(stream: io.StringIO, log_format: str) -> logging.Logger:
    logger = logging.getLogger(f"underlay.test.{log_format}.{id(stream)}")
    logger.handlers = [make_handler(log_format, stream)]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_json_lines_carry_request_and_trace_ids_and_no_secret() -> None:
    stream = io.StringIO()
    logger = _logger(stream, "json")
    tracer = TracerProvider().get_tracer("test")
    token = request_id_var.set("req_0123456789abcdef")
    try:
        with tracer.start_as_current_span("work") as span:
            logger.warning("calling %s with key %s", "http://u:pw-secret-1@host/v1", "sk-live-123456789")
        logger.info("outside any span")
    finally:
        request_id_var.reset(token)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "warning" and first["logger"].startswith("underlay.test.json")
    assert first["request_id"] == "req_0123456789abcdef"
    assert first["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert "pw-secret-1" not in first["message"] and "sk-live-123456789" not in first["message"]
    assert first["message"].startswith("calling http://u:***@host/v1 with key sk-***")
    assert "trace_id" not in second and second["message"] == "outside any span"


def test_tracebacks_are_redacted_too() -> None:
    stream = io.StringIO()
    logger = _logger(stream, "json")
    try:
        raise RuntimeError("upstream refused Bearer tok_abcdefgh123")
    except RuntimeError:
        logger.exception("provider failed")
    entry = json.loads(stream.getvalue())
    assert "RuntimeError" in entry["exception"] and "tok_abcdefgh123" not in entry["exception"]

    text_stream = io.StringIO()
    text_logger = _logger(text_stream, "text")
    try:
        raise ValueError("password=opensesame1")
    except ValueError:
        text_logger.exception("failed for %s", "Bearer tok_abcdefgh123")
    assert "opensesame1" not in text_stream.getvalue() and "tok_abcdefgh123" not in text_stream.getvalue()


def test_filter_keeps_a_line_whose_arguments_do_not_fit() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", ("sk-notanumber999",), None)
    assert RedactingFilter().filter(record)
    assert "sk-notanumber999" not in record.getMessage()


def test_json_formatter_handles_odd_values() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "value %s", (object(),), None)
    assert json.loads(JsonFormatter().format(record))["message"].startswith("value <object")


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers = handlers
    root.setLevel(level)


def test_configure_logging_registers_config_secrets(restore_root_logging: None) -> None:
    config = RunConfig.model_validate(
        {
            "providers": {
                "inference": [
                    {"provider_id": "x", "provider_type": "remote::openai", "config": {"api_key": "cfg-key-xyz987"}}
                ]
            },
            "server": {"log_format": "json"},
        }
    )
    configure_logging(config)
    root = logging.getLogger()
    assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, JsonFormatter)
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    logging.getLogger("underlay.anything").warning("upstream rejected cfg-key-xyz987")
    assert "cfg-key-xyz987" not in stream.getvalue() and "***" in stream.getvalue()


def test_provider_listing_redaction_reaches_inside_values() -> None:
    config = {"base_url": "https://user:pw-in-url@example.com/v1", "api_key": "sk-abcdef123456", "n": 3}
    shown = redact_config(config, ("api_key", "password"))
    assert shown["api_key"] == "********" and "pw-in-url" not in shown["base_url"] and shown["n"] == 3
