"""The contract layer: pydantic models, provider protocols and route tables, one module per API.

Nothing here imports server, storage or provider code, so a third-party provider can depend on
``underlay.api`` alone.
"""

__all__ = [
    "agents",
    "batches",
    "context",
    "conversations",
    "errors",
    "files",
    "ids",
    "inference",
    "models",
    "omit",
    "pagination",
    "prompts",
    "providers",
    "response_items",
    "responses",
    "routes",
    "safety",
    "telemetry",
    "tool_runtime",
    "vector_io",
    "vector_stores",
]
