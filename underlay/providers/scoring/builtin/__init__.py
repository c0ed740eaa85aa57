"""The built-in scoring providers: ``inline::basic``, ``inline::embedding-similarity``,
``inline::llm-as-judge`` and ``inline::rag`` (specs in :mod:`underlay.providers.scoring`)."""
