"""LlamaIndex's OpenAI embeddings (``llama-index-embeddings-openai``) run unchanged against Underlay.

Only the retrieval half of LlamaIndex installs here: its OpenAI *LLM* package
(``llama-index-llms-openai``, which ``llama-index-llms-openai-like`` builds on) requires ``openai<3``,
and this project runs openai 3.x; pip's only way round that is the 2024 line (llama-index-core 0.10),
which downgrades numpy and transformers. So this test builds a real ``VectorStoreIndex`` on Underlay's
MiniLM embeddings through the real ``OpenAIEmbedding`` class, with only ``api_base`` changed, and
retrieves from it. LlamaIndex's default tokenizer is tiktoken, which downloads its encodings; the test
sets a whitespace tokenizer so it stays offline.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.embeddings.openai import OpenAIEmbedding

from tests.integration.harness import MINILM, RunningServer, local_config, start_server

pytestmark = pytest.mark.slow

FACTS = [
    "Whiskers is the name of the cat that lives at the lighthouse. Whiskers is orange.",
    "A rocket reaches orbit by burning propellant in stages.",
    "Knead the bread dough for ten minutes, then let it rise for an hour.",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = local_config()
    config["providers"]["inference"] = [
        p for p in config["providers"]["inference"] if p["provider_id"] == "sentence-transformers"
    ]
    running = start_server(config, tmp_path_factory.mktemp("llamaindex"), timeout=300)
    yield running
    running.stop()


def test_vector_index_on_underlay_embeddings_retrieves_the_fact(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Settings, "tokenizer", str.split)  # offline: tiktoken would download its encodings
    embed = OpenAIEmbedding(model_name=MINILM, api_base=server.v1, api_key="unused", max_retries=0)
    assert len(embed.get_query_embedding("cat")) == 384  # MiniLM's width: the server's model answered
    index = VectorStoreIndex.from_documents([Document(text=fact) for fact in FACTS], embed_model=embed)
    (best,) = index.as_retriever(similarity_top_k=1).retrieve("What colour is the lighthouse cat?")
    assert best.node.get_content() == FACTS[0]
    assert best.score is not None and best.score > 0.3
