#!/usr/bin/env bash
# Run the public MCP conformance suite (server mode) against a real Underlay; see mcp_conformance.py.
# Usage: scripts/mcp_conformance.sh [--url URL] [--json PATH] [--min-pass N]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python scripts/mcp_conformance.py "$@"
