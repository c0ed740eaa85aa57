"""Scoring providers; the specs the entry points name. Their code is one backend package,
:mod:`underlay.providers.scoring.builtin`, because the judge-backed functions share the judge client and
the text metrics share the answer normalisers."""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

_BUILTIN = "underlay.providers.scoring.builtin"

BASIC = ProviderSpec(
    api="scoring",
    provider_type="inline::basic",
    config_class=f"{_BUILTIN}.basic:BasicConfig",
    factory=f"{_BUILTIN}.basic:create_provider",
    pip_packages=("sacrebleu==2.6.0", "rouge-score==0.1.2"),
    extras=("local",),
    description="Equality (exact, normalised), subset-of, multiple-choice and math answer parsers, "
    "token F1, BLEU, ROUGE; users' regex-parser functions.",
)

EMBEDDING_SIMILARITY = ProviderSpec(
    api="scoring",
    provider_type="inline::embedding-similarity",
    config_class=f"{_BUILTIN}.embedding:EmbeddingConfig",
    factory=f"{_BUILTIN}.embedding:create_provider",
    api_dependencies=("inference",),
    description="Cosine similarity of answer and reference embeddings, from any embedding model.",
)

LLM_AS_JUDGE = ProviderSpec(
    api="scoring",
    provider_type="inline::llm-as-judge",
    config_class=f"{_BUILTIN}.judge:JudgeConfig",
    factory=f"{_BUILTIN}.judge:create_provider",
    api_dependencies=("inference",),
    description="A chat model grades each row with a prompt template and score regexes; users' judge functions.",
)

RAG = ProviderSpec(
    api="scoring",
    provider_type="inline::rag",
    config_class=f"{_BUILTIN}.rag:RagConfig",
    factory=f"{_BUILTIN}.rag:create_provider",
    api_dependencies=("inference",),
    description="RAG metrics: faithfulness, answer relevance, context precision and recall (judge + embeddings).",
)
