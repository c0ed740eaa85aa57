"""Chat examples → token ids and labels, learning only from the assistant turns.

Why render text and then tokenise, turn by turn: a chat template is text, and the tokens an assistant
turn adds are exactly the difference between the conversation rendered up to that turn and the
conversation rendered up to the turn before it (with the generation prompt). Everything else (system,
user, tool turns, the template's own markup before an answer) gets label ``-100``, so the loss is the
model's error on the answers alone, and an assistant turn with ``weight: 0`` is context, not a target.

A preference line (``dpo``) becomes two such sequences, the prompt followed by each answer, labelled
the same way: only the final answer's tokens count, so the two log-probabilities DPO compares differ
only by the answers and never by the shared prompt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from underlay.api.fine_tuning_data import message_text

IGNORE = -100


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Messages as ``{role, content}`` strings: tool calls written as ``<tool_call>`` blocks (Hermes style),
    which every template renders and which the served model then learns to emit."""
    out: list[dict[str, str]] = []
    for message in messages:
        role = str(message["role"])
        text = message_text(message.get("content"))
        for call in message.get("tool_calls") or []:
            function = call.get("function", {})
            try:
                arguments = json.loads(function.get("arguments") or "{}")
            except ValueError:
                arguments = function.get("arguments")
            block = json.dumps({"name": function.get("name"), "arguments": arguments})
            text = f"{text}\n<tool_call>\n{block}\n</tool_call>" if text else f"<tool_call>\n{block}\n</tool_call>"
        out.append({"role": "system" if role == "developer" else role, "content": text})
    return out


def tokenize_example(tokenizer: Any, example: dict[str, Any], max_len: int) -> Tokenized:
    """One supervised example as ids and labels, cut at ``max_len`` tokens."""
    messages = plain_messages(example["messages"])
    tools = example.get("tools") or None

    def render(upto: int, generation_prompt: bool) -> str:
        kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": generation_prompt}
        if tools:
            kwargs["tools"] = tools
        return str(tokenizer.apply_chat_template(messages[:upto], **kwargs))

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    ids: list[int] = []
    labels: list[int] = []
    for index, message in enumerate(example["messages"]):
        if message.get("role") != "assistant":
            continue
        before = encode(render(index, True))
        through = encode(render(index + 1, False))
        if through[: len(before)] != before:  # a template that is not prefix-stable: learn the whole turn span
            before = before[: len(ids)]
        ids.extend(before[len(ids) :])
        labels.extend([IGNORE] * (len(before) - len(labels)))
        answer = through[len(before) :]
        ids.extend(answer)
        learn = message.get("weight", 1) == 1
        labels.extend(answer if learn else [IGNORE] * len(answer))
    return Tokenized(ids[:max_len], labels[:max_len])


@dataclass
class PreferencePair:
    """One preference line as two sequences that share the prompt and differ in the answer."""

    chosen: Tokenized
    rejected: Tokenized
    reference: tuple[float, float] | None = None
    """The reference model's (chosen, rejected) answer log-probabilities, once the trainer computed them."""

    @property
    def tokens(self) -> int:
        return len(self.chosen.input_ids) + len(self.rejected.input_ids)


def _completion(example: dict[str, Any], key: str) -> dict[str, Any]:
    """The prompt with ``key``'s answer appended, where only that answer is a target.

    The prompt's own assistant turns (earlier answers in a multi-turn input) are set to ``weight: 0``:
    in a preference line they are context, and DPO compares the two final answers alone.
    """
    source = example["input"]
    context = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in source["messages"]]
    out: dict[str, Any] = {"messages": [*context, {**example[key][0], "weight": 1}]}
    if source.get("tools"):
        out["tools"] = source["tools"]
    return out


def tokenize_preference(tokenizer: Any, example: dict[str, Any], max_len: int) -> PreferencePair | None:
    """A ``dpo`` line (``input``, ``preferred_output``, ``non_preferred_output``) as a pair of labelled
    sequences, or ``None`` when cutting at ``max_len`` leaves either answer without a token to score."""
    chosen = tokenize_example(tokenizer, _completion(example, "preferred_output"), max_len)
    rejected = tokenize_example(tokenizer, _completion(example, "non_preferred_output"), max_len)
    if not chosen.trained or not rejected.trained:
        return None
    return PreferencePair(chosen, rejected)
