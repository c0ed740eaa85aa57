"""Translation between OpenAI's chat format and Google's Generative Language API (Gemini), both ways.

Pure functions, no I/O, so every mapping is unit-testable on its own; :mod:`.provider` does the HTTP.
The shapes follow Google's public REST reference for ``v1beta`` (``GenerateContentRequest``,
``GenerateContentResponse``, ``Schema``, ``google.rpc.Status``):

- messages: system and developer text becomes ``systemInstruction``; ``assistant`` is role ``model``;
  tool calls become ``functionCall`` parts and tool results ``functionResponse`` parts of a ``user``
  turn (consecutive results share one turn, as Gemini pairs them with the calls of the turn before);
- a Gemini function call may carry a ``thoughtSignature`` that must come back with it on the next
  turn; it travels in the tool call's ``extra_content.google.thought_signature``, the place Google's
  own OpenAI-compatible endpoint uses, so clients that echo the assistant message keep it;
- tools become ``functionDeclarations`` whose JSON Schema is cut down to the OpenAPI subset Gemini
  accepts (``$ref`` inlined, nullable unions folded, unsupported keywords dropped);
- ``finishReason`` and ``usageMetadata`` map onto OpenAI's finish reasons and usage.
"""

from __future__ import annotations

import json
import mimetypes
import re
import time
import uuid
from typing import Any

from underlay.api.errors import InvalidRequestError
from underlay.api.inference import (
    AssistantMessage,
    AudioPart,
    ChatCompletionRequest,
    DeveloperMessage,
    FilePart,
    ImagePart,
    NamedToolChoice,
    RefusalPart,
    ResponseFormatJSONObject,
    ResponseFormatJSONSchema,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
    content_text,
)

__all__ = [
    "EMBED_TASK_TYPES",
    "candidate_parts",
    "chat_request",
    "completion_from_response",
    "completion_id",
    "finish_reason",
    "model_path",
    "parse_duration",
    "to_gemini_schema",
    "usage_from_metadata",
]

#: Gemini's finish reasons that mean the output was withheld or cut for policy reasons.
_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"})
#: The string formats Gemini's Schema accepts per type; any other ``format`` is dropped.
_FORMATS = {"STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"}, "INTEGER": {"int32", "int64"}}
_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
_COPIED = (
    "title",
    "description",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "minProperties",
    "maxProperties",
    "default",
    "example",
)
_MAX_SCHEMA_DEPTH = 32
_MODEL_NAME = re.compile(r"^(?:models/|tunedModels/)?([A-Za-z0-9][A-Za-z0-9._-]{0,127})$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")

#: ``taskType`` values of ``embedContent`` a client may pass as the extra field ``task_type``.
EMBED_TASK_TYPES = frozenset(
    {
        "RETRIEVAL_QUERY",
        "RETRIEVAL_DOCUMENT",
        "SEMANTIC_SIMILARITY",
        "CLASSIFICATION",
        "CLUSTERING",
        "QUESTION_ANSWERING",
        "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    }
)


def model_path(model: str) -> str:
    """``models/<name>`` for a URL; a name that could escape the path is a 400, not a request."""
    match = _MODEL_NAME.match(model)
    if match is None:
        raise InvalidRequestError(
            f"'{model[:80]}' is not a Gemini model name (letters, digits, '.', '_' and '-'; e.g. gemini-2.5-flash)",
            param="model",
        )
    prefix = "tunedModels" if model.startswith("tunedModels/") else "models"
    return f"{prefix}/{match.group(1)}"


def parse_duration(value: Any) -> float | None:
    """Seconds in a protobuf ``Duration`` as JSON writes it (``"37s"``, ``"1.5s"``)."""
    if isinstance(value, str) and (match := _DURATION.match(value)):
        return float(match.group(1))
    return None


# ---------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------


def chat_request(params: ChatCompletionRequest) -> dict[str, Any]:
    """The ``generateContent`` body for an OpenAI chat request."""
    if params.logprobs:
        raise InvalidRequestError("remote::gemini does not return logprobs; leave logprobs unset", param="logprobs")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    calls: dict[str, str] = {}  # tool_call_id -> function name, to label the results
    for index, message in enumerate(params.messages):
        where = f"messages[{index}]"
        if isinstance(message, SystemMessage | DeveloperMessage):
            text = content_text(message.content)
            if text:
                system.append({"text": text})
        elif isinstance(message, UserMessage):
            _append(contents, "user", _user_parts(message.content, where))
        elif isinstance(message, AssistantMessage):
            parts = _assistant_parts(message, where, calls)
            if parts:
                _append(contents, "model", parts)
        elif isinstance(message, ToolMessage):
            name = calls.get(message.tool_call_id)
            if name is None:
                raise InvalidRequestError(
                    f"{where}.tool_call_id '{message.tool_call_id[:80]}' answers no tool call of an earlier "
                    "assistant message; Gemini needs the function's name for each result",
                    param=f"{where}.tool_call_id",
                )
            response = _tool_result(content_text(message.content))
            part = {"functionResponse": {"name": name, "response": response}}
            if contents and contents[-1]["role"] == "user" and "functionResponse" in contents[-1]["parts"][-1]:
                contents[-1]["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
    if not contents:
        raise InvalidRequestError("Gemini needs at least one user or assistant message", param="messages")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if params.tools:
        declarations = [
            _declaration(tool.function.model_dump(exclude_none=True), i) for i, tool in enumerate(params.tools)
        ]
        body["tools"] = [{"functionDeclarations": declarations}]
        if params.tool_choice is not None:
            body["toolConfig"] = {"functionCallingConfig": _tool_config(params.tool_choice)}
    config = _generation_config(params)
    if config:
        body["generationConfig"] = config
    return body


def _append(contents: list[dict[str, Any]], role: str, parts: list[dict[str, Any]]) -> None:
    """Add a turn, merging into the previous one of the same role (Gemini wants turns to alternate)."""
    if contents and contents[-1]["role"] == role and "functionResponse" not in contents[-1]["parts"][-1]:
        contents[-1]["parts"].extend(parts)
    else:
        contents.append({"role": role, "parts": parts})


def _user_parts(content: str | list[Any], where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        if isinstance(part, TextPart):
            parts.append({"text": part.text})
        elif isinstance(part, RefusalPart):
            parts.append({"text": part.refusal})
        elif isinstance(part, ImagePart):
            parts.append(_media(part.image_url.url, f"{where}.content[{i}].image_url.url"))
        elif isinstance(part, AudioPart):
            fmt = part.input_audio.format.lower()
            parts.append({"inlineData": {"mimeType": f"audio/{fmt}", "data": part.input_audio.data}})
        elif isinstance(part, FilePart) and isinstance(part.file.get("file_data"), str):
            parts.append(_media(part.file["file_data"], f"{where}.content[{i}].file.file_data"))
        else:
            kind = getattr(part, "type", type(part).__name__)
            raise InvalidRequestError(
                f"remote::gemini cannot send a '{kind}' content part; send text, images, audio or inline file data",
                param=f"{where}.content[{i}]",
            )
    return parts or [{"text": ""}]


def _media(url: str, param: str) -> dict[str, Any]:
    """A ``data:`` URL inline; an http(s) or Files API URL by reference."""
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        if not sep or ";base64" not in header:
            raise InvalidRequestError("a data URL must be base64: data:<mime>;base64,<data>", param=param)
        return {"inlineData": {"mimeType": header[5:].split(";")[0] or "application/octet-stream", "data": data}}
    if url.startswith(("https://", "http://", "gs://")):
        guessed = mimetypes.guess_type(url.split("?")[0])[0]
        return {"fileData": {"fileUri": url, **({"mimeType": guessed} if guessed else {})}}
    raise InvalidRequestError("a media URL must be a data: URL or an http(s) URL", param=param)


def _assistant_parts(message: AssistantMessage, where: str, calls: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    text = content_text(message.content)
    if text:
        parts.append({"text": text})
    for i, call in enumerate(message.tool_calls or []):
        try:
            args = json.loads(call.function.arguments) if call.function.arguments.strip() else {}
        except ValueError:
            args = None
        if not isinstance(args, dict):
            raise InvalidRequestError(
                "tool call arguments must be a JSON object for Gemini",
                param=f"{where}.tool_calls[{i}].function.arguments",
            )
        calls[call.id] = call.function.name
        part: dict[str, Any] = {"functionCall": {"name": call.function.name, "args": args}}
        signature = _thought_signature(call.model_extra or {})
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _thought_signature(extra: dict[str, Any]) -> str | None:
    google = (extra.get("extra_content") or {}).get("google") if isinstance(extra.get("extra_content"), dict) else None
    value = google.get("thought_signature") if isinstance(google, dict) else None
    return value if isinstance(value, str) and value else None


def _tool_result(text: str) -> dict[str, Any]:
    """``functionResponse.response`` must be a JSON object: an object result as is, else wrapped."""
    try:
        value = json.loads(text)
    except ValueError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


def _declaration(function: dict[str, Any], index: int) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": function["name"]}
    if function.get("description"):
        declaration["description"] = function["description"]
    parameters = function.get("parameters")
    if parameters:
        converted = to_gemini_schema(parameters, param=f"tools[{index}].function.parameters")
        if converted.get("properties") or converted.get("type") != "OBJECT":
            declaration["parameters"] = converted
    return declaration


def _tool_config(choice: Any) -> dict[str, Any]:
    if isinstance(choice, NamedToolChoice):
        return {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(str(choice))
    if mode is None:
        raise InvalidRequestError(
            f"tool_choice '{str(choice)[:40]}' is not one of auto, none, required", param="tool_choice"
        )
    return {"mode": mode}


def _generation_config(params: ChatCompletionRequest) -> dict[str, Any]:
    extra = params.model_extra or {}
    config: dict[str, Any] = {}
    if params.temperature is not None:
        config["temperature"] = params.temperature
    if params.top_p is not None:
        config["topP"] = params.top_p
    top_k = extra.get("top_k")
    if top_k is not None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 1000:
            raise InvalidRequestError("top_k must be an integer from 1 to 1000", param="top_k")
        config["topK"] = top_k
    if params.token_limit is not None:
        config["maxOutputTokens"] = params.token_limit
    stops = params.stop_list
    if stops:
        if len(stops) > 5:
            raise InvalidRequestError("Gemini accepts at most 5 stop sequences", param="stop")
        config["stopSequences"] = stops
    if params.n is not None and params.n > 1:
        config["candidateCount"] = params.n
    if params.presence_penalty is not None:
        config["presencePenalty"] = params.presence_penalty
    if params.frequency_penalty is not None:
        config["frequencyPenalty"] = params.frequency_penalty
    if params.seed is not None:
        config["seed"] = params.seed
    fmt = params.response_format
    if isinstance(fmt, ResponseFormatJSONObject):
        config["responseMimeType"] = "application/json"
    elif isinstance(fmt, ResponseFormatJSONSchema):
        config["responseMimeType"] = "application/json"
        if fmt.json_schema.schema_:
            config["responseSchema"] = to_gemini_schema(
                fmt.json_schema.schema_, param="response_format.json_schema.schema"
            )
    return config


# ---------------------------------------------------------------------------------------------------
# JSON Schema -> Gemini Schema
# ---------------------------------------------------------------------------------------------------


def to_gemini_schema(schema: dict[str, Any], *, param: str) -> dict[str, Any]:
    """Cut a JSON Schema down to the OpenAPI 3.0 subset Gemini's ``Schema`` accepts.

    ``$ref`` to ``$defs``/``definitions`` is inlined (a recursive schema is a 400: Gemini has no
    references); ``type: [X, "null"]`` and ``anyOf``/``oneOf`` with a null branch become
    ``nullable``; ``const`` becomes a one-value enum; keywords Gemini lacks (``additionalProperties``,
    ``$schema``, unknown formats…) are dropped rather than sent to be refused.
    """
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            defs.update({f"#/{key}/{name}": value for name, value in schema[key].items()})
    return _convert(schema, defs, param, 0)


def _convert(node: Any, defs: dict[str, Any], param: str, depth: int) -> dict[str, Any]:
    if depth > _MAX_SCHEMA_DEPTH:
        raise InvalidRequestError(
            f"the schema nests deeper than {_MAX_SCHEMA_DEPTH} levels (or is recursive); Gemini needs it flat",
            param=param,
        )
    if not isinstance(node, dict):
        return {}
    ref = node.get("$ref")
    if isinstance(ref, str):
        if ref not in defs:
            raise InvalidRequestError(f"the schema's $ref '{ref[:80]}' points to no $defs entry", param=param)
        merged = {**defs[ref], **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs, param, depth + 1)
    out: dict[str, Any] = {}
    nullable = bool(node.get("nullable"))
    raw_type = node.get("type")
    types = [raw_type] if isinstance(raw_type, str) else list(raw_type) if isinstance(raw_type, list) else []
    if "null" in types:
        nullable = True
        types = [t for t in types if t != "null"]
    branches = node.get("anyOf") or node.get("oneOf")
    if isinstance(branches, list):
        kept = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
        nullable = nullable or len(kept) < len(branches)
        if len(kept) == 1:
            inner = _convert(kept[0], defs, param, depth + 1)
            rest = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf", "type")}
            out = {**inner, **_convert(rest, defs, param, depth + 1)} if rest else inner
            if nullable:
                out["nullable"] = True
            return out
        if kept:
            out["anyOf"] = [_convert(b, defs, param, depth + 1) for b in kept]
    all_of = node.get("allOf")
    if isinstance(all_of, list):
        combined: dict[str, Any] = {}
        for branch in all_of:
            piece = _convert(branch, defs, param, depth + 1)
            merged_properties = {**combined.get("properties", {}), **piece.get("properties", {})}
            merged_required = [*combined.get("required", []), *piece.get("required", [])]
            combined.update(piece)
            if merged_properties:
                combined["properties"] = merged_properties
            if merged_required:
                combined["required"] = list(dict.fromkeys(merged_required))
        out.update(combined)
    if len(types) > 1:
        out["anyOf"] = [{"type": t.upper()} for t in types if t in _TYPES]
    elif types and types[0] in _TYPES:
        out["type"] = types[0].upper()
    if "const" in node and isinstance(node["const"], str):
        out.update(type="STRING", format="enum", enum=[node["const"]])
    enum = node.get("enum")
    if isinstance(enum, list) and enum and all(isinstance(v, str) for v in enum):
        out.update(type="STRING", format="enum", enum=list(enum))
    if "type" not in out and "anyOf" not in out:
        if isinstance(node.get("properties"), dict):
            out["type"] = "OBJECT"
        elif "items" in node:
            out["type"] = "ARRAY"
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS.get(out.get("type", ""), set()) and "format" not in out:
        out["format"] = fmt
    for key in _COPIED:
        if key in node and key not in out:
            out[key] = node[key]
    properties = node.get("properties")
    if isinstance(properties, dict) and properties:
        out["properties"] = {str(name): _convert(value, defs, param, depth + 1) for name, value in properties.items()}
        required = node.get("required")
        if isinstance(required, list):
            kept_required = [r for r in required if r in properties]
            if kept_required:
                out["required"] = kept_required
    items = node.get("items")
    if isinstance(items, list):
        items = items[0] if items else None
    if isinstance(items, dict):
        out["items"] = _convert(items, defs, param, depth + 1)
    if nullable:
        out["nullable"] = True
    return out


# ---------------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------------


def finish_reason(reason: Any, has_calls: bool) -> str | None:
    """OpenAI's finish reason for a Gemini candidate's ``finishReason`` (None while it is unfinished)."""
    if not isinstance(reason, str) or not reason:
        return None
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    # STOP, and the reasons OpenAI has no word for (OTHER, MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL…).
    return "tool_calls" if has_calls else "stop"


def usage_from_metadata(metadata: Any) -> dict[str, Any] | None:
    """OpenAI usage from ``usageMetadata``; thinking tokens count as completion tokens, as OpenAI counts
    reasoning tokens, and are also reported under ``completion_tokens_details.reasoning_tokens``."""
    if not isinstance(metadata, dict):
        return None
    prompt = _int(metadata.get("promptTokenCount")) + _int(metadata.get("toolUsePromptTokenCount"))
    thoughts = _int(metadata.get("thoughtsTokenCount"))
    completion = _int(metadata.get("candidatesTokenCount")) + thoughts
    total = _int(metadata.get("totalTokenCount")) or prompt + completion
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    cached = _int(metadata.get("cachedContentTokenCount"))
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def candidate_parts(candidate: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A candidate's visible text (thought summaries left out) and its function calls, as tool calls."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or part.get("thought") is True:
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        call = part.get("functionCall")
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            tool_call: dict[str, Any] = {
                "id": str(call.get("id") or f"call_{uuid.uuid4().hex[:24]}"),
                "type": "function",
                "function": {"name": call["name"], "arguments": json.dumps(call.get("args") or {})},
            }
            if isinstance(part.get("thoughtSignature"), str):
                tool_call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
            calls.append(tool_call)
    return "".join(texts), calls


def completion_from_response(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` dict from a ``GenerateContentResponse``.

    A prompt blocked before generation (``promptFeedback.blockReason``, no candidates) is one empty
    choice finished by ``content_filter``, which is how OpenAI reports filtered output.
    """
    choices: list[dict[str, Any]] = []
    candidates = body.get("candidates")
    for position, candidate in enumerate(candidates if isinstance(candidates, list) else []):
        if not isinstance(candidate, dict):
            continue
        text, calls = candidate_parts(candidate)
        message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
        if calls:
            message["tool_calls"] = calls
        reason = finish_reason(candidate.get("finishReason"), bool(calls)) or "stop"
        raw_index = candidate.get("index")
        index = raw_index if isinstance(raw_index, int) else position
        choices.append({"index": index, "message": message, "finish_reason": reason})
    if not choices:
        choices.append(
            {"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "content_filter"}
        )
    completion: dict[str, Any] = {
        "id": completion_id(body),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    usage = usage_from_metadata(body.get("usageMetadata"))
    if usage is not None:
        completion["usage"] = usage
    return completion


def completion_id(body: dict[str, Any]) -> str:
    response_id = body.get("responseId")
    if isinstance(response_id, str) and response_id and len(response_id) <= 128:
        return f"chatcmpl-{response_id}"
    return f"chatcmpl-{uuid.uuid4().hex}"
