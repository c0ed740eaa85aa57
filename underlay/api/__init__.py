"""The contract layer: pydantic models, provider protocols and route tables, one module per API.

Nothing here imports server, storage or provider code, so a third-party provider can depend on
``underlay.api`` alone.
"""

__all__ = [
    "agents",
    "base",
    "batches",
    "context",
    "conversations",
    "datasets",
    "errors",
    "eval",
    "evals",
    "files",
    "fine_tuning",
    "fine_tuning_data",
    "ids",
    "inference",
    "messages",
    "models",
    "omit",
    "pagination",
    "post_training",
    "prompts",
    "providers",
    "response_items",
    "responses",
    "routes",
    "safety",
    "scoring",
    "synthetic_data_generation",
    "telemetry",
    "tool_runtime",
    "vector_io",
    "vector_stores",
]
