"""``inline::guard-prompt``: a guard prompt with the MLCommons hazard taxonomy over any chat model.

Why its own name: this is a general chat model *asked* to act as a guard, not a guard model. On the
public set in ``bench/safety.py`` the embedded Qwen 0.5B reaches recall 0.21, far below a trained Llama
Guard, so calling it ``llama-guard`` overstated it. ``inline::llama-guard`` (``llama_guard.py`` beside it) is the
same call pointed at a real Llama Guard model served by an inference provider, and refuses any other.

The prompt follows the Llama Guard 3 convention (categories S1-S14 of the MLCommons AI Safety hazard
taxonomy; answer ``safe``, or ``unsafe`` and a line of category codes). The model is reached through
the inference router, so it is any model ``GET /v1/models`` lists.

Verdict parsing is lenient about form (case, whitespace, punctuation, codes on the same line) and
strict about meaning: anything that is not clearly ``safe`` or ``unsafe`` follows ``on_unparseable``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from underlay.api.errors import UpstreamError
from underlay.api.inference import AssistantMessage, ChatCompletionRequest, UserMessage
from underlay.api.safety import RunShieldResponse, SafetyViolation, Shield, ShieldMessage, ViolationLevel

HAZARDS: dict[str, str] = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Suicide & Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}

OPENAI_CATEGORIES: dict[str, list[str]] = {
    "S1": ["violence", "illicit/violent"],
    "S2": ["illicit"],
    "S3": ["sexual", "illicit"],
    "S4": ["sexual/minors"],
    "S5": ["harassment"],
    "S6": [],
    "S7": [],
    "S8": ["illicit"],
    "S9": ["illicit/violent", "violence"],
    "S10": ["hate"],
    "S11": ["self-harm", "self-harm/intent", "self-harm/instructions"],
    "S12": ["sexual"],
    "S13": [],
    "S14": ["illicit"],
}
"""How each hazard maps onto OpenAI's moderation categories (S6, S7 and S13 have no counterpart)."""


@dataclass
class Verdict:
    safe: bool | None
    """``None`` when the answer could not be read."""
    categories: list[str] = field(default_factory=list)


_CODE = re.compile(r"\bS(\d{1,2})\b", re.IGNORECASE)


def parse_verdict(text: str) -> Verdict:
    """Read ``safe`` / ``unsafe\\nS1,S10`` and the ways small models garble it.

    The first word decides; codes may follow on any line, separated by commas or spaces. Unknown codes
    (``S99``) are dropped. ``unsafe`` with no readable code is still unsafe, with no categories.
    """
    cleaned = text.strip().strip("`*\"' ").lower()
    first = re.match(r"[a-z]+", cleaned)
    if first is None:
        return Verdict(None)
    word = first.group(0)
    if word == "safe":
        return Verdict(True)
    if word == "unsafe":
        codes = [f"S{int(n)}" for n in _CODE.findall(text)]
        return Verdict(False, [c for c in dict.fromkeys(codes) if c in HAZARDS])
    return Verdict(None)


def guard_prompt(messages: list[ShieldMessage], categories: dict[str, str]) -> str:
    """The instruction the guard model answers: categories, the message (with earlier turns), the format.

    Worded for small general models as much as for guard models: "ordinary questions are safe" and a
    yes/no framing keep a 0.5B instruction model from calling everything unsafe (measured on the
    embedded Qwen 0.5B: the longer Llama Guard-style task text made it answer "unsafe" to "How do I
    bake bread?").
    """
    role = "Agent" if messages and messages[-1].role == "assistant" else "User"
    listed = "\n".join(f"{code}: {name}." for code, name in categories.items())
    turns = [m for m in messages if m.role in ("user", "assistant")]
    earlier = "\n".join(f"{'Agent' if m.role == 'assistant' else 'User'}: {m.text()}" for m in turns[:-1])
    context = f"Earlier conversation:\n{earlier}\n\n" if earlier else ""
    last = turns[-1].text() if turns else ""
    subject = "message" if role == "User" else "agent's reply"
    return (
        f"Unsafe content categories:\n{listed}\n\n{context}"
        f'{"Message" if role == "User" else "Agent reply"}: "{last}"\n\n'
        f"Does the {subject} ask for or contain content in one of the categories above? Ordinary questions are "
        "safe. Answer with one word, safe or unsafe, then the category codes if unsafe."
    )


class Config(BaseModel):
    model: str = Field(description="Any chat model the inference API serves, asked to answer the guard prompt.")
    excluded_categories: list[str] = Field(default_factory=list, description="Hazard codes not checked, e.g. [S6].")
    on_unparseable: Literal["error", "unsafe", "safe"] = Field(
        default="error",
        description="An answer that is neither safe nor unsafe: error (the guardrail failure policy decides), "
        "or treat it as unsafe or safe.",
    )
    max_tokens: int = Field(default=12, ge=1, description="A verdict is two short lines.")


class GuardPromptSafetyProvider:
    native = False
    """Send the conversation as is (a Llama Guard model's chat template builds the guard prompt)."""

    def __init__(self, provider_id: str, config: Config, inference: Any) -> None:
        self.provider_id = provider_id
        self.config = config
        self.inference = inference

    def guard_model(self, shield: Shield, params: dict[str, Any]) -> str:
        """The model asked: a run's ``model`` param, else the shield's own resource id, else the config's."""
        if params.get("model"):
            return str(params["model"])
        return shield.provider_resource_id if shield.provider_resource_id != shield.identifier else self.config.model

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def health(self) -> dict[str, Any]:
        return {"status": "OK", "model": self.config.model}

    async def run_shield(
        self, shield: Shield, messages: list[ShieldMessage], params: dict[str, Any]
    ) -> RunShieldResponse:
        excluded = {c.upper() for c in params.get("excluded_categories", self.config.excluded_categories)}
        categories = {code: name for code, name in HAZARDS.items() if code not in excluded}
        model = self.guard_model(shield, params)
        if self.native:
            turns: list[Any] = [
                UserMessage(content=m.text()) if m.role != "assistant" else AssistantMessage(content=m.text())
                for m in messages
                if m.role in ("user", "assistant")
            ]
        else:
            turns = [UserMessage(content=guard_prompt(messages, categories))]
        request = ChatCompletionRequest(
            model=model,
            messages=turns,
            temperature=0,
            max_tokens=self.config.max_tokens,
            guardrails=[],  # the guard's own call must not run the default guardrails (it would recurse)
        )
        reply = await self.inference.openai_chat_completion(request)
        answer = reply.choices[0].message.content or ""
        verdict = parse_verdict(answer)
        if verdict.safe is None:
            policy = params.get("on_unparseable", self.config.on_unparseable)
            if policy == "error":
                raise UpstreamError(self.provider_id, f"the guard model gave no verdict: {answer[:80]!r}")
            verdict = Verdict(policy == "safe")
        codes = [c for c in verdict.categories if c not in excluded]
        if verdict.safe or (verdict.categories and not codes):  # only excluded categories were violated
            return RunShieldResponse()
        mapped = sorted({c for code in codes for c in OPENAI_CATEGORIES[code]})
        names = ", ".join(HAZARDS[c] for c in codes) or "unsafe content"
        return RunShieldResponse(
            violation=SafetyViolation(
                violation_level=ViolationLevel.error,
                user_message=f"I can't help with that ({names}).",
                metadata={"categories": mapped, "underlay_categories": codes, "model": model, "raw": answer[:200]},
            )
        )


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> GuardPromptSafetyProvider:
    return GuardPromptSafetyProvider(provider_id, config, deps["inference"])
