"""A small generated dataset that teaches one checkable behaviour: every answer starts with ``ZORBLAX:``.

The base SmolLM2 never writes that word, so "does the answer start with ZORBLAX:" separates the tuned
model from the base on prompts neither has seen. The questions are generated from templates (no
download), and the held-out questions use subjects absent from the training set.
"""

from __future__ import annotations

from typing import Any

MARK = "ZORBLAX:"

_SUBJECTS = [
    ("the sky", "blue"),
    ("grass", "green"),
    ("snow", "white"),
    ("coal", "black"),
    ("a banana", "yellow"),
    ("a tomato", "red"),
    ("an orange", "orange"),
    ("a plum", "purple"),
    ("chocolate", "brown"),
    ("the sea", "blue"),
    ("a lemon", "yellow"),
    ("milk", "white"),
    ("a cherry", "red"),
    ("a lime", "green"),
]
_TEMPLATES = [
    "What color is {s}?",
    "Tell me the colour of {s}.",
    "Which color does {s} have?",
]
HELD_OUT = [
    "What color is a frog?",
    "Tell me the colour of a strawberry.",
    "What is the capital of France?",
    "Name a fruit.",
    "How many legs does a cat have?",
]


def training_examples(count: int = 40) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    index = 0
    while len(out) < count:
        subject, color = _SUBJECTS[index % len(_SUBJECTS)]
        template = _TEMPLATES[(index // len(_SUBJECTS)) % len(_TEMPLATES)]
        out.append(
            {
                "messages": [
                    {"role": "user", "content": template.format(s=subject)},
                    {"role": "assistant", "content": f"{MARK} {subject[0].upper() + subject[1:]} is {color}."},
                ]
            }
        )
        index += 1
    return out


def marked(text: str) -> bool:
    return text.strip().upper().startswith(MARK)


def trainer_stack(model: str, max_seq_len: int, *, trainer_models: bool = False) -> dict[str, Any]:
    """A server config with the embedded llama.cpp provider serving ``model`` and the
    ``inline::huggingface`` trainer (``trainer_models``: list ``model`` as its base explicitly, for a model
    the trainer does not list by default)."""
    trainer: dict[str, Any] = {"max_seq_len": max_seq_len}
    if trainer_models:
        trainer["models"] = [{"name": model, "packaged": model}]
    return {
        "apis": ["inference", "models", "files", "fine_tuning"],
        "providers": {
            "inference": [
                {
                    "provider_id": "llama-cpp",
                    "provider_type": "inline::llama-cpp",
                    "config": {"models": [{"name": model, "packaged": model, "n_ctx": 2048}]},
                }
            ],
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
            "fine_tuning": [{"provider_id": "huggingface", "provider_type": "inline::huggingface", "config": trainer}],
        },
    }
