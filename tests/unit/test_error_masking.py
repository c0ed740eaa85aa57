"""Error text from a provider reaches clients with secrets masked, as JSON and as a stream's error event."""

from __future__ import annotations

import json

from underlay.api.errors import UpstreamError
from underlay.server.errors import error_response
from underlay.server.sse import _error_frame

SECRET = "sk-proj-abcdefghijklmnop1234567890"


def test_json_error_masks_keys_and_url_passwords() -> None:
    exc = UpstreamError("openai", f"401 from https://user:hunter2pass@api.example.com/v1: bad key {SECRET}")
    body = json.loads(error_response(exc).body)
    message = body["error"]["message"]
    assert SECRET not in message and "hunter2pass" not in message
    assert "openai" in message and "api.example.com" in message  # still says who failed and where


def test_stream_error_event_masks_too() -> None:
    frame = _error_frame(UpstreamError("vllm", f"upstream said: Authorization: Bearer {SECRET}"))
    payload = json.loads(frame.removeprefix(b"data: ").strip())
    assert SECRET not in payload["error"]["message"] and "vllm" in payload["error"]["message"]
