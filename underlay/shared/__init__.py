"""Helpers that both the providers and the control plane need, so neither has to import the other.

The layers are contract (``underlay.api``) → providers → control plane (``underlay.core``) → front
doors, and a provider may not import the control plane. Some code is needed on both sides: the
catalogue of packaged models (a provider loads its weights, the CLI pulls them, ingestion sizes its
chunks by their tokenizer), secret redaction (telemetry scrubs log lines, the MCP provider scrubs what
a server echoes) and document parsing (ingestion reads uploaded files, the Responses provider reads
attached ones). That code lives here. It imports only the standard library, third-party packages and
``underlay.api``; ``tests/unit/test_layering.py`` keeps it that way.
"""
