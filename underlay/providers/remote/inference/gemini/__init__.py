"""``remote::gemini``: Google's Gemini through its native Generative Language API.

Two modules: :mod:`.wire` translates OpenAI's chat and embeddings formats to Google's and back (pure
functions), :mod:`.provider` does the HTTP on the shared adapter base. The spec in the parent package
names the two objects re-exported here.
"""

from __future__ import annotations

from underlay.providers.remote.inference.gemini.provider import Config, GeminiInferenceProvider, create_provider

__all__ = ["Config", "GeminiInferenceProvider", "create_provider"]
