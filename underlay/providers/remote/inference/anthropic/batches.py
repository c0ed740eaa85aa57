"""OpenAI's batch lines ⇄ Anthropic's Message Batches, for ``remote::anthropic``'s native pass-through.

Underlay's batches router hands a provider OpenAI's batch JSONL and expects OpenAI's output lines back;
Anthropic's Message Batches API takes ``{"requests": [{"custom_id", "params"}]}`` in its create call and
answers one result per request (``succeeded`` with a message, ``errored``, ``canceled`` or ``expired``).
This module is the translation both ways, kept free of I/O so it is tested on its own:

- each line's body becomes Messages ``params`` through the same translation a live chat request gets
  (:func:`~underlay.providers.remote.inference.anthropic.wire.messages_payload`), and each succeeded
  message the same chat completion (:func:`~.wire.completion_from_message`);
- ``custom_id``: Anthropic allows 1 to 64 of ``A-Z a-z 0-9 _ -``, OpenAI up to 512 of anything. An id
  Anthropic accepts goes as it is; any other (and one starting with the escape ``x-``) goes as ``x-`` and
  its base64url, which is reversible without state and fits for ids of up to 46 bytes. A longer one
  cannot be spelt, so its batch runs inline;
- the batch object: ``processing_status`` ``in_progress``/``canceling``/``ended`` and the five
  ``request_counts`` become OpenAI's status and counts (an ended batch is ``cancelled`` if a cancel was
  asked, ``expired`` if requests expired, else ``completed``); the RFC 3339 times become Unix seconds;
- results: one upstream results file serves as two local ones, ``{id}:output`` (succeeded) and
  ``{id}:errors`` (the rest), each line in OpenAI's output format with an error that names the provider.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from underlay.api.batches import Batch, BatchRequestCounts, BatchStatus
from underlay.api.errors import InvalidRequestError
from underlay.api.inference import ChatCompletionRequest
from underlay.api.messages import Message
from underlay.providers.remote.inference.anthropic.wire import completion_from_message, messages_payload

__all__ = [
    "ENDPOINT",
    "batch_from_anthropic",
    "client_custom_id",
    "input_reference",
    "parse_reference",
    "requests_from_lines",
    "result_record",
    "results_file",
    "translate_line",
    "upstream_custom_id",
]

ENDPOINT = "/v1/chat/completions"
"""The one endpoint Anthropic batches: its Messages API is what chat completions translate to."""
_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ESCAPE = "x-"
_OUTPUT, _ERRORS = "output", "errors"
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 502,
    "timeout_error": 504,
    "overloaded_error": 503,
}
_ERROR_TYPE = {
    400: "invalid_request_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


# -- custom ids -----------------------------------------------------------------------------------------


def upstream_custom_id(custom_id: str) -> str | None:
    """The id sent to Anthropic for ``custom_id``; ``None`` if it cannot be spelt there reversibly."""
    if _CUSTOM_ID.fullmatch(custom_id) and not custom_id.startswith(_ESCAPE):
        return custom_id
    encoded = _ESCAPE + base64.urlsafe_b64encode(custom_id.encode()).decode().rstrip("=")
    return encoded if len(encoded) <= 64 else None


def client_custom_id(sent: str) -> str:
    """The client's ``custom_id`` back from the one sent (an unknown form is returned as it is)."""
    if not sent.startswith(_ESCAPE):
        return sent
    data = sent[len(_ESCAPE) :]
    try:
        return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return sent


# -- requests -------------------------------------------------------------------------------------------


def translate_line(custom_id: str, body: dict[str, Any], provider_id: str, default_max_tokens: int) -> dict[str, Any]:
    """One request of the create call; ``InvalidRequestError`` if the line has no Anthropic form."""
    sent = upstream_custom_id(custom_id)
    if sent is None:
        raise InvalidRequestError(
            f"custom_id {custom_id[:64]!r} is too long for Anthropic's batches (46 bytes at most unless it is "
            "64 letters, digits, '_' or '-').",
            param="custom_id",
        )
    try:
        params = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise InvalidRequestError(f"body.{where}: {first['msg']}", param=f"body.{where}") from None
    payload = messages_payload(params, provider_id, default_max_tokens)
    payload.pop("stream", None)
    return {"custom_id": sent, "params": payload}


def requests_from_lines(content: bytes, provider_id: str, default_max_tokens: int) -> list[dict[str, Any]]:
    """The ``requests`` of ``POST /v1/messages/batches`` for the router's JSONL (OpenAI's batch lines)."""
    requests = []
    for raw in content.splitlines():
        if not raw.strip():
            continue
        item = json.loads(raw)
        requests.append(translate_line(str(item["custom_id"]), item["body"], provider_id, default_max_tokens))
    return requests


def input_reference(content: bytes, count: int, now: int) -> str:
    """What stands for the input file Anthropic has no upload for: its size, when it was made, a digest.

    The count and time let :func:`parse_reference`'s caller look for a batch a crash left behind.
    """
    return f"inline:{count}:{now}:{hashlib.sha256(content).hexdigest()[:24]}"


def parse_reference(reference: str) -> tuple[int, int] | None:
    """``(count, made_at)`` of an :func:`input_reference`, or ``None`` for anything else."""
    parts = reference.split(":")
    if len(parts) != 4 or parts[0] != "inline" or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    return int(parts[1]), int(parts[2])


# -- batch objects --------------------------------------------------------------------------------------


def _seconds(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field}: expected an RFC 3339 time, got {type(value).__name__}")
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        raise ValueError(f"{field}: {value[:40]!r} is not an RFC 3339 time") from None


def batch_from_anthropic(body: Any) -> Batch:
    """Anthropic's ``message_batch`` as OpenAI's batch object; ``ValueError`` naming the field if malformed."""
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
        raise ValueError("id: missing")
    counts = body.get("request_counts")
    if not isinstance(counts, dict):
        raise ValueError("request_counts: missing")
    n = {k: counts.get(k, 0) for k in ("processing", "succeeded", "errored", "canceled", "expired")}
    if not all(isinstance(v, int) and v >= 0 for v in n.values()):
        raise ValueError("request_counts: expected counts")
    state = body.get("processing_status")
    status: BatchStatus
    created = _seconds(body.get("created_at"), "created_at")
    if created is None:
        raise ValueError("created_at: missing")
    ended = _seconds(body.get("ended_at"), "ended_at")
    cancel_asked = _seconds(body.get("cancel_initiated_at"), "cancel_initiated_at")
    if state == "in_progress":
        status = "in_progress"
    elif state == "canceling":
        status = "cancelling"
    elif state == "ended":
        status = "cancelled" if cancel_asked is not None else "expired" if n["expired"] else "completed"
    else:
        raise ValueError(f"processing_status: {str(state)[:40]!r} is not in_progress, canceling or ended")
    failed = n["errored"] + n["canceled"] + n["expired"]
    batch_id = body["id"]
    batch = Batch(
        id=batch_id,
        endpoint=ENDPOINT,
        input_file_id=batch_id,
        completion_window="24h",
        status=status,
        created_at=created,
        in_progress_at=created,
        cancelling_at=cancel_asked,
        expires_at=_seconds(body.get("expires_at"), "expires_at"),
        output_file_id=f"{batch_id}:{_OUTPUT}" if state == "ended" and n["succeeded"] else None,
        error_file_id=f"{batch_id}:{_ERRORS}" if state == "ended" and failed else None,
        request_counts=BatchRequestCounts(total=sum(n.values()), completed=n["succeeded"], failed=failed),
    )
    if state == "ended":
        setattr(batch, f"{status}_at", ended)
    return batch


def results_file(file_id: str) -> tuple[str, bool]:
    """``(batch id, wants succeeded lines)`` of a file id from :func:`batch_from_anthropic`."""
    batch_id, _, kind = file_id.rpartition(":")
    if not batch_id or kind not in (_OUTPUT, _ERRORS):
        raise ValueError(f"'{file_id}' is not a results file of an Anthropic batch")
    return batch_id, kind == _OUTPUT


# -- results --------------------------------------------------------------------------------------------


def _line(
    batch_id: str, custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None
) -> dict[str, Any]:
    digest = hashlib.sha256(f"{batch_id}\n{custom_id}".encode()).hexdigest()[:32]
    return {"id": f"batch_req_{digest}", "custom_id": custom_id, "response": response, "error": error}


def _failed(batch_id: str, custom_id: str, status: int, message: str, kind: str, request_id: str) -> dict[str, Any]:
    error_type = _ERROR_TYPE.get(status, "upstream_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": error_type, "param": None, "code": kind}}
    return _line(batch_id, custom_id, {"status_code": status, "request_id": request_id, "body": body}, None)


def result_record(item: dict[str, Any], batch_id: str, provider_id: str, created: int) -> tuple[bool, dict[str, Any]]:
    """One line of Anthropic's results as ``(succeeded, OpenAI's output line)``."""
    custom_id = client_custom_id(str(item.get("custom_id", "")))
    result = item.get("result") if isinstance(item.get("result"), dict) else {}
    kind = result.get("type")
    if kind == "succeeded":
        try:
            message = Message.model_validate(result.get("message"))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "message"
            said = f"Provider '{provider_id}': malformed message in Anthropic's batch results: {where}: {first['msg']}"
            return False, _failed(batch_id, custom_id, 502, said, "malformed_upstream_response", "")
        completion = completion_from_message(message, created)
        body = completion.model_dump(mode="json", by_alias=True)
        return True, _line(batch_id, custom_id, {"status_code": 200, "request_id": message.id, "body": body}, None)
    if kind == "errored":
        error = result.get("error") if isinstance(result.get("error"), dict) else {}
        inner = error.get("error") if isinstance(error.get("error"), dict) else error
        error_kind = str(inner.get("type") or "api_error")
        text = str(inner.get("message") or "no message")[:1000]
        status = _ERROR_STATUS.get(error_kind, 502)
        if status < 500:
            said = f"Provider '{provider_id}' rejected the request; Anthropic said {error_kind}: {text}"
        else:
            said = f"Provider '{provider_id}': Anthropic failed the request ({error_kind}): {text}"
        request_id = str(error.get("request_id") or "")
        return False, _failed(batch_id, custom_id, status, said, error_kind, request_id)
    if kind == "canceled":
        said = f"Provider '{provider_id}': the batch was cancelled before this request ran."
        return False, _line(batch_id, custom_id, None, {"code": "batch_cancelled", "message": said})
    if kind == "expired":
        said = f"Provider '{provider_id}': the batch's 24-hour window ended before this request ran."
        return False, _line(batch_id, custom_id, None, {"code": "batch_expired", "message": said})
    said = f"Provider '{provider_id}': Anthropic's batch results have a result of unknown type {str(kind)[:40]!r}."
    return False, _failed(batch_id, custom_id, 502, said, "malformed_upstream_response", "")
