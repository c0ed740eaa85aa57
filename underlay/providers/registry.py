"""The built-in provider registry: one ``ProviderSpec`` per provider type.

Factories and config classes are dotted strings so that listing providers imports nothing heavy.
A factory is ``async def create_provider(provider_id: str, config, deps: dict[str, Any])``.
External packages add specs through the ``underlay.providers`` entry-point group.
"""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

_INLINE = "underlay.providers.inline.inference"
_REMOTE = "underlay.providers.remote.inference"


def _remote_inference(name: str, module: str, description: str) -> ProviderSpec:
    return ProviderSpec(
        api="inference",
        provider_type=f"remote::{name}",
        config_class=f"{_REMOTE}.{module}:Config",
        factory=f"{_REMOTE}.{module}:create_provider",
        description=description,
    )


BUILTIN_PROVIDERS: list[ProviderSpec] = [
    ProviderSpec(
        api="inference",
        provider_type="inline::llama-cpp",
        config_class=f"{_INLINE}.llama_cpp:LlamaCppConfig",
        factory=f"{_INLINE}.llama_cpp:create_provider",
        pip_packages=("llama-cpp-python==0.3.36",),
        extras=("local",),
        description="Embedded llama.cpp (GGUF chat models), in-process, with grammar-constrained tool calls.",
    ),
    ProviderSpec(
        api="inference",
        provider_type="inline::sentence-transformers",
        config_class=f"{_INLINE}.sentence_transformers:SentenceTransformersConfig",
        factory=f"{_INLINE}.sentence_transformers:create_provider",
        pip_packages=("sentence-transformers", "torch==2.13.0", "onnxruntime", "onnx"),
        extras=("local",),
        description="Embedded embedding models (all-MiniLM-L6-v2 packaged) via sentence-transformers.",
    ),
    _remote_inference("openai", "openai", "OpenAI's API (or any service that clones it exactly)."),
    _remote_inference("vllm", "vllm", "A vLLM server's OpenAI-compatible endpoint."),
    _remote_inference("llama-cpp-server", "llama_cpp_server", "llama.cpp's llama-server or llama-cpp-python's server."),
    _remote_inference("ollama", "ollama", "Ollama: its OpenAI endpoint plus its own model listing."),
    _remote_inference("passthrough", "passthrough", "Any OpenAI-compatible base URL."),
]


def _vector_io(kind: str, name: str, module: str, pip: tuple[str, ...], description: str) -> ProviderSpec:
    return ProviderSpec(
        api="vector_io",
        provider_type=f"{kind}::{name}",
        config_class=f"underlay.providers.{kind}.vector_io.{module}:Config",
        factory=f"underlay.providers.{kind}.vector_io.{module}:create_provider",
        pip_packages=pip,
        extras=("vector",) if pip else (),
        description=description,
    )


BUILTIN_PROVIDERS += [
    _vector_io(
        "inline",
        "sqlite-vec",
        "sqlite_vec",
        ("sqlite-vec", "pysqlite3-binary", "numpy"),
        "SQLite with sqlite-vec and FTS5 (the local default).",
    ),
    _vector_io("inline", "faiss", "faiss", ("faiss-cpu",), "FAISS in-process, persisted to disk."),
    _vector_io("remote", "pgvector", "pgvector", ("asyncpg",), "PostgreSQL with pgvector and full-text search."),
    _vector_io("inline", "milvus", "milvus", ("pymilvus", "milvus-lite"), "Milvus Lite, embedded."),
    _vector_io("remote", "milvus", "milvus", ("pymilvus",), "A Milvus server."),
    _vector_io("inline", "qdrant", "qdrant", ("qdrant-client",), "Qdrant's local mode, embedded."),
    _vector_io("remote", "qdrant", "qdrant", ("qdrant-client",), "A Qdrant server."),
    _vector_io("inline", "chromadb", "chromadb", ("chromadb",), "Chroma's persistent client, embedded."),
    _vector_io("remote", "chromadb", "chromadb", ("chromadb",), "A Chroma server."),
    ProviderSpec(
        api="files",
        provider_type="inline::localfs",
        config_class="underlay.providers.inline.files.localfs:Config",
        factory="underlay.providers.inline.files.localfs:create_provider",
        description="Files on the local filesystem (the default).",
    ),
    ProviderSpec(
        api="files",
        provider_type="remote::s3",
        config_class="underlay.providers.remote.files.s3:Config",
        factory="underlay.providers.remote.files.s3:create_provider",
        pip_packages=("aiobotocore==3.10.0",),
        extras=("s3",),
        description="Any S3-compatible object store.",
    ),
]

_TOOLS = "underlay.providers"
BUILTIN_PROVIDERS += [
    ProviderSpec(
        api="tool_runtime",
        provider_type="remote::model-context-protocol",
        config_class=f"{_TOOLS}.remote.tool_runtime.model_context_protocol:Config",
        factory=f"{_TOOLS}.remote.tool_runtime.model_context_protocol:create_provider",
        pip_packages=("mcp==2.3.0",),
        description="Tools of MCP servers (streamable HTTP, SSE, stdio), with pooled sessions.",
        secret_fields=("api_key", "password", "token", "secret", "authorization", "headers", "private_key"),
    ),
    ProviderSpec(
        api="tool_runtime",
        provider_type="builtin::file_search",
        config_class=f"{_TOOLS}.inline.tool_runtime.file_search:Config",
        factory=f"{_TOOLS}.inline.tool_runtime.file_search:create_provider",
        api_dependencies=("vector_stores",),
        description="The file_search tool over vector stores (needs the vector_stores API to answer).",
    ),
    ProviderSpec(
        api="tool_runtime",
        provider_type="builtin::websearch",
        config_class=f"{_TOOLS}.inline.tool_runtime.websearch:Config",
        factory=f"{_TOOLS}.inline.tool_runtime.websearch:create_provider",
        description="The web_search tool: SearXNG, Brave, Tavily, or an offline SQLite FTS5 index.",
    ),
]

BUILTIN_PROVIDERS += [
    ProviderSpec(
        api="responses",
        provider_type="inline::builtin",
        config_class="underlay.providers.inline.responses:BuiltinResponsesConfig",
        factory="underlay.providers.inline.responses:create_provider",
        api_dependencies=("inference", "vector_stores", "tool_runtime", "conversations", "files"),
        optional_api_dependencies=("vector_stores", "tool_runtime", "files", "safety"),
        description="The Responses API's agent loop: model turns plus file_search, mcp and web_search tools.",
    ),
]

_SAFETY = "underlay.providers"
BUILTIN_PROVIDERS += [
    ProviderSpec(
        api="safety",
        provider_type="inline::pii",
        config_class=f"{_SAFETY}.inline.safety.pii:Config",
        factory=f"{_SAFETY}.inline.safety.pii:create_provider",
        description="Personal data (emails, phones, cards with Luhn, IBAN with mod-97, US SSN, IPs); redaction.",
    ),
    ProviderSpec(
        api="safety",
        provider_type="inline::code-scanner",
        config_class=f"{_SAFETY}.inline.safety.code_scanner:Config",
        factory=f"{_SAFETY}.inline.safety.code_scanner:create_provider",
        description="Insecure-code rules (injection, shell=True, secrets, weak hashes, TLS off...), each with a CWE.",
    ),
    ProviderSpec(
        api="safety",
        provider_type="inline::guard-prompt",
        config_class=f"{_SAFETY}.inline.safety.guard_prompt:Config",
        factory=f"{_SAFETY}.inline.safety.guard_prompt:create_provider",
        api_dependencies=("inference",),
        description="Any chat model asked a guard prompt with the MLCommons hazards (S1-S14); weak on small models.",
    ),
    ProviderSpec(
        api="safety",
        provider_type="inline::llama-guard",
        config_class=f"{_SAFETY}.inline.safety.llama_guard:Config",
        factory=f"{_SAFETY}.inline.safety.llama_guard:create_provider",
        api_dependencies=("inference",),
        description="A real Llama Guard model served by an inference provider (vLLM, Ollama...); refuses other models.",
    ),
    ProviderSpec(
        api="safety",
        provider_type="remote::passthrough",
        config_class=f"{_SAFETY}.remote.safety.passthrough:Config",
        factory=f"{_SAFETY}.remote.safety.passthrough:create_provider",
        description="Any OpenAI-compatible /v1/moderations endpoint.",
    ),
    ProviderSpec(
        api="safety",
        provider_type="inline::prompt-guard",
        config_class=f"{_SAFETY}.inline.safety.prompt_guard:Config",
        factory=f"{_SAFETY}.inline.safety.prompt_guard:create_provider",
        description="Prompt-injection and jailbreak detection by a small classifier trained on public prompts.",
    ),
    ProviderSpec(
        api="safety",
        provider_type="remote::bedrock",
        config_class=f"{_SAFETY}.remote.safety.bedrock:Config",
        factory=f"{_SAFETY}.remote.safety.bedrock:create_provider",
        pip_packages=("aiobotocore==3.10.0",),
        extras=("s3",),
        description="An Amazon Bedrock guardrail (ApplyGuardrail).",
    ),
]
