"""The contract layer: pydantic models, provider protocols and route tables, one module per API.

Nothing here imports server, storage or provider code, so a third-party provider can depend on
``underlay.api`` alone.
"""
