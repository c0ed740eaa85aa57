"""Tool-runtime adapters to remote services (MCP servers); the spec the entry point names."""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

MODEL_CONTEXT_PROTOCOL = ProviderSpec(
    api="tool_runtime",
    provider_type="remote::model-context-protocol",
    config_class="underlay.providers.remote.tool_runtime.model_context_protocol:Config",
    factory="underlay.providers.remote.tool_runtime.model_context_protocol:create_provider",
    pip_packages=("mcp==2.3.0",),
    description="Tools of MCP servers (streamable HTTP, SSE, stdio), with pooled sessions.",
    secret_fields=("api_key", "password", "token", "secret", "authorization", "headers", "private_key"),
)
