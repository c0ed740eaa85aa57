"""Turning OpenAI chat messages into the prompt text a GGUF model was trained on.

We render the model's own Jinja chat template (``tokenizer.chat_template`` in the GGUF metadata)
ourselves rather than letting llama-cpp-python pick a chat handler: then the exact prompt is ours to
count, to cache, and to pair with a grammar, and tools are rendered the way the model was taught.
Templates come from model files, i.e. from outside, so they run in Jinja's immutable sandbox.

Conversion from the OpenAI shapes:

* ``developer`` becomes ``system`` (templates predate the role);
* content parts are joined as text; an image, audio or file part is a 400 naming the part, since these
  models read text only;
* assistant ``tool_calls`` are passed with ``arguments`` decoded to objects, as Hugging Face-style
  templates expect, and ``tool`` messages carry the function ``name`` looked up from their call id.

For a template that knows nothing of tools (no ``tools`` variable), we describe the tools in the
system message ourselves, write earlier calls into the assistant text as ``<tool_call>`` blocks, and
turn tool results into user turns that say plainly which call they answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from underlay.api.errors import InvalidRequestError
from underlay.api.inference import (
    AssistantMessage,
    AudioPart,
    ChatMessage,
    ChatTool,
    DeveloperMessage,
    FilePart,
    ImagePart,
    RefusalPart,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)
from underlay.providers.utils.tool_calls import CALL_CLOSE, CALL_OPEN

#: Used when a GGUF carries no template and the config gives none: ChatML, the most common format.
#: A base model without a template will still answer poorly; this only keeps requests from failing.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_PART_KIND = {ImagePart: "images", AudioPart: "audio", FilePart: "files"}


class _TemplateRaised(jinja2.TemplateError):
    """``raise_exception(...)`` inside a template: the template's own verdict on the conversation."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(value: Any, indent: int | None = None, separators: Any = None, sort_keys: bool = False) -> str:
    # Jinja's built-in tojson HTML-escapes <, > and &; templates were written against Hugging Face's,
    # which does not, and the difference would change the prompt the model sees.
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """A compiled chat template plus the special tokens it may refer to."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as exc:
            raise ValueError(f"the chat template does not compile: {exc}") from exc

    @property
    def supports_tools(self) -> bool:
        """Whether the template renders a ``tools`` list (and so knows how calls look to the model)."""
        return "tools" in self.source

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        """The prompt text; a template's ``raise_exception`` or a render error becomes a 400."""
        try:
            return self._template.render(
                messages=messages,
                tools=tools or None,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except jinja2.TemplateError as exc:
            raise InvalidRequestError(
                f"The model's chat template rejected this conversation: {exc}", param="messages"
            ) from None
        except (TypeError, KeyError, IndexError, AttributeError) as exc:
            raise InvalidRequestError(
                f"The model's chat template could not render this conversation ({type(exc).__name__}: {exc}).",
                param="messages",
            ) from None


def _text_of(content: Any, index: int, model: str) -> str:
    """Text of string-or-parts content; a non-text part is a 400 naming ``messages[i].content[j]``."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for j, part in enumerate(content):
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, RefusalPart):
            texts.append(part.refusal)
        else:
            kind = _PART_KIND.get(type(part), "this kind of content")
            part_type = getattr(part, "type", "unknown")
            raise InvalidRequestError(
                f"Model '{model}' reads text only and does not take {kind}: messages[{index}].content[{j}] "
                f"is a '{part_type}' part. Send text parts only, or use a model that accepts {kind}.",
                param=f"messages[{index}].content[{j}]",
                code="unsupported_content",
            )
    return "\n".join(texts)


def check_content(messages: Sequence[ChatMessage], model: str) -> None:
    """Reject non-text parts before any model work is queued (same errors as rendering would give)."""
    for i, message in enumerate(messages):
        _text_of(message.content, i, model)


def _decoded_arguments(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return arguments


def _call_block(name: str, arguments: Any) -> str:
    payload = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{CALL_OPEN}\n{payload}\n{CALL_CLOSE}"


def tools_for_template(tools: Sequence[ChatTool]) -> list[dict[str, Any]]:
    """Tools as the plain dicts templates iterate over (unset fields left out)."""
    return [t.model_dump(mode="json", exclude_none=True, by_alias=True) for t in tools]


def tools_system_text(tools: Sequence[ChatTool]) -> str:
    """How we describe tools to a model whose template has no tools section."""
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools_for_template(tools))
    return (
        "You can call functions to help with the request. These are the available functions, "
        f"one JSON description per line:\n<tools>\n{lines}\n</tools>\n\n"
        "To call functions, reply with nothing but one block per call, each in exactly this form:\n"
        f'{CALL_OPEN}\n{{"name": "<function name>", "arguments": {{<arguments as a JSON object>}}}}\n{CALL_CLOSE}\n'
        "The results come back in a later message starting with 'Tool result'."
    )


def build_template_messages(
    messages: Sequence[ChatMessage],
    *,
    model: str,
    native_tools: bool,
    tools: Sequence[ChatTool] = (),
) -> list[dict[str, Any]]:
    """OpenAI messages as the dicts a chat template renders.

    ``native_tools`` says the template handles ``tool_calls`` and ``tool`` messages itself; otherwise
    they are written out as text (and ``tools``, when given, are described in the system message).
    """
    call_names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        text = _text_of(message.content, i, model)
        if isinstance(message, SystemMessage | DeveloperMessage):
            out.append({"role": "system", "content": text})
        elif isinstance(message, UserMessage):
            out.append({"role": "user", "content": text})
        elif isinstance(message, AssistantMessage):
            if not text and message.refusal:
                text = message.refusal
            calls = message.tool_calls or []
            for call in calls:
                call_names[call.id] = call.function.name
            if not calls:
                out.append({"role": "assistant", "content": text})
            elif native_tools:
                out.append(
                    {
                        "role": "assistant",
                        "content": text,
                        "tool_calls": [
                            {
                                "id": c.id,
                                "type": "function",
                                "function": {
                                    "name": c.function.name,
                                    "arguments": _decoded_arguments(c.function.arguments),
                                },
                            }
                            for c in calls
                        ],
                    }
                )
            else:
                blocks = "\n".join(
                    _call_block(c.function.name, _decoded_arguments(c.function.arguments)) for c in calls
                )
                out.append({"role": "assistant", "content": f"{text}\n{blocks}" if text else blocks})
        elif isinstance(message, ToolMessage):
            name = call_names.get(message.tool_call_id, "")
            if native_tools:
                out.append({"role": "tool", "content": text, "tool_call_id": message.tool_call_id, "name": name})
            else:
                label = f"Tool result for {name or 'a call'} (call id {message.tool_call_id}):\n{text}"
                if out and out[-1].get("_tool_results"):
                    out[-1]["content"] += "\n\n" + label
                else:
                    out.append({"role": "user", "content": label, "_tool_results": True})
    for m in out:
        m.pop("_tool_results", None)
    if tools and not native_tools:
        intro = tools_system_text(tools)
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{intro}" if out[0]["content"] else intro
        else:
            out.insert(0, {"role": "system", "content": intro})
    return out
