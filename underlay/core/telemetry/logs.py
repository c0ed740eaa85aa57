"""Process-wide logging set-up: text or one JSON object per line, secrets redacted either way.

Redaction happens in a filter on the handler, so every record is cleaned whichever logger made it
(ours, uvicorn's, a provider SDK's) and whatever its arguments or traceback hold. The redactor also
bounds each line: a message is cut at ``MAX_TEXT`` characters and a traceback at ``MAX_TRACEBACK``, so a
client that sends a 100,000-character path or model name costs one bounded line, not a stalled server.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from underlay.api.context import request_id_var
from underlay.core.config import RunConfig
from underlay.shared.redact import MAX_TRACEBACK, redactor

try:  # trace ids in log lines when OpenTelemetry is installed
    from opentelemetry import trace as _otel_trace
except ImportError:  # pragma: no cover - the telemetry extra is missing
    _otel_trace = None  # type: ignore[assignment]

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (arguments merged in) and traceback with secrets masked."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_underlay_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = f"{record.msg} {record.args}"
        record.msg = redactor(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redactor(record.exc_text, MAX_TRACEBACK)
        if record.stack_info:
            record.stack_info = redactor(record.stack_info, MAX_TRACEBACK)
        record._underlay_redacted = True
        return True


def current_trace_ids() -> tuple[str | None, str | None]:
    """(trace id, span id) of the active span as hex, or ``(None, None)`` outside any recorded span."""
    if _otel_trace is None:
        return None, None
    context = _otel_trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, trace_id, span_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = record.created
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        trace_id, span_id = current_trace_ids()
        if trace_id:
            entry["trace_id"] = trace_id
            entry["span_id"] = span_id
        if record.exc_info and not record.exc_text:
            record.exc_text = redactor(self.formatException(record.exc_info), MAX_TRACEBACK)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def make_handler(log_format: str, stream: Any = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT))
    handler.addFilter(RedactingFilter())
    return handler


def configure_logging(config: RunConfig) -> None:
    """Route every logger through one redacting handler on the root logger, text or JSON."""
    server = config.server
    for provider_entries in config.providers.values():  # config secrets are masked wherever they show up
        for entry in provider_entries:
            redactor.add_from_config(entry.config)
    redactor.add_from_config(config.storage.model_dump())
    if server.auth is not None:
        redactor.add_from_config(server.auth.model_dump())
    for group in config.tool_groups:
        redactor.add_from_config({"headers": group.headers, "authorization": group.authorization})
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(server.log_format))
    root.setLevel(server.log_level.upper())
    if server.log_level != "debug":  # httpx logs every upstream request at info: noise, and cost per call
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
    _route_uvicorn_to_root(server.log_level)


def _route_uvicorn_to_root(level: str) -> None:
    """Make uvicorn's loggers use the root handler instead of their own plain-text ones.

    uvicorn applies its default logging dict when its Config is built (after this runs), so the dict is
    rewritten in place: its loggers then have no handlers of their own and propagate here.
    """
    try:
        from uvicorn.config import LOGGING_CONFIG
    except ImportError:  # pragma: no cover - uvicorn is a core dependency
        return
    LOGGING_CONFIG["handlers"] = {}
    LOGGING_CONFIG["loggers"] = {
        name: {"handlers": [], "level": level.upper(), "propagate": True}
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
    }
