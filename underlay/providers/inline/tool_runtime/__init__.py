"""In-process tool-runtime providers: the builtin tools (file_search, web_search)."""
