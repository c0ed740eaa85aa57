"""``POST /v1/responses/compact``: condense a long context into one ``compaction`` item, with the model.

OpenAI's compaction returns an item whose ``encrypted_content`` only its servers can read. Ours is
honest about what it is: the model's summary of the context, base64-encoded behind a version tag. It
is encoded (so clients treat it as opaque and a later format can change it), not encrypted: there is
nothing in it the client did not send or could not read from the model's own answers. A compaction
item sent back as input becomes one user message that introduces the summary, in the place the
condensed items had.

The SDK's type for the result holds output items only (a user message is not one), so the output is
the single compaction item; the summary is asked to keep the user's requests and open tasks.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from underlay.api.errors import InvalidRequestError, UpstreamError
from underlay.api.inference import ChatCompletionRequest
from underlay.api.response_items import item_id

_TAG = "underlay-compaction-v1:"

SUMMARY_INTRO = "Summary of the conversation so far (earlier messages were condensed into it):\n\n"

INSTRUCTION = (
    "Write a checkpoint summary of the conversation above so that it can replace it. Keep every fact, "
    "name, number, decision and result the conversation established, what the user asked for, and what is "
    "still open. Write plain text, no preamble, in the conversation's language."
)


def encode(summary: str) -> str:
    return _TAG + base64.b64encode(summary.encode("utf-8")).decode("ascii")


def decode(content: str, where: str) -> str:
    """The summary inside a compaction item's ``encrypted_content``, or a 400 naming the item."""
    if not content.startswith(_TAG):
        raise InvalidRequestError(
            "This compaction item was not made by this server's /v1/responses/compact (its encrypted_content "
            "is not in Underlay's format); send the items it replaced instead.",
            param=f"{where}.encrypted_content",
        )
    try:
        return base64.b64decode(content[len(_TAG) :], validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidRequestError(
            "The compaction item's encrypted_content is damaged; send the output of /v1/responses/compact unchanged.",
            param=f"{where}.encrypted_content",
        ) from None


def as_message(item: dict[str, Any]) -> dict[str, Any]:
    """The chat message a compaction item stands for."""
    summary = decode(str(item.get("encrypted_content") or ""), f"compaction item '{item.get('id')}'")
    return {"role": "user", "content": SUMMARY_INTRO + summary}


async def summarise(
    inference: Any, model: str, messages: list[dict[str, Any]], max_tokens: int
) -> tuple[dict[str, Any], int, int]:
    """(the compaction item, prompt tokens, completion tokens) for the chat ``messages``."""
    request = ChatCompletionRequest.model_validate(
        {
            "model": model,
            "messages": [*messages, {"role": "user", "content": INSTRUCTION}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": False,
        }
    )
    completion = await inference.openai_chat_completion(request)
    choice = completion.choices[0] if completion.choices else None
    summary = (choice.message.content or "").strip() if choice is not None else ""
    if not summary:
        raise UpstreamError(model, "the model returned an empty summary; try again or use a larger model")
    usage = completion.usage
    item = {"type": "compaction", "id": item_id("compaction"), "encrypted_content": encode(summary)}
    return item, (usage.prompt_tokens if usage else 0), (usage.completion_tokens if usage else 0)
