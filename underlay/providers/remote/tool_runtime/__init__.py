"""Tool-runtime adapters to remote services (MCP servers)."""
