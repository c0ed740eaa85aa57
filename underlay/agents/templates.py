"""The folders ``underlay agent init --template rag|mcp|support`` writes: small, and working as written.

Each template runs on the embedded ``local`` stack offline; ``rag`` is the one the end-to-end test runs,
so what a user gets from ``init`` is what is tested.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TEMPLATES", "write_template"]

_ENVIRONMENTS = """\
environments:
  local: {}                 # the embedded stack, in this process, state in .underlay/
  server:                   # a running server (underlay run local), same agent
    base_url: ${env.UNDERLAY_AGENT_URL:=http://127.0.0.1:8321/v1}
    api_key: ${env.UNDERLAY_API_KEY:=none}
"""

_RAG_YAML = """\
name: {name}
description: Answers questions about the Lumen Bakery from its handbook.
model: qwen2.5-coder-0.5b-instruct
instructions: >-
  You answer questions about the Lumen Bakery. Search the handbook first and answer in one short
  sentence using only what it says.
tools:
  - type: file_search       # over this folder's knowledge/
    max_num_results: 2
tool_choice: file_search    # search before answering (a small model needs the nudge)
knowledge: ["**/*.md", "**/*.txt"]
temperature: 0
max_output_tokens: 80
max_infer_iters: 3
"""

_HANDBOOK = """\
# Lumen Bakery handbook

The Lumen Bakery opens at 6:40 in the morning and closes at 3 in the afternoon.
The secret ingredient of the Lumen sourdough is roasted buckwheat flour.
The staff door code is 7316.
"""

_RAG_EVAL = """\
{"input": "What time does the Lumen Bakery open?", "expected": "6:40"}
{"input": "What is the secret ingredient of the Lumen sourdough?", "expected_regex": "(?i)buckwheat"}
{"input": "What is the staff door code of the Lumen Bakery?", "expected": "7316"}
{"input": "At what time does the Lumen Bakery close?", "expected_regex": "(?i)\\\\b(3|three)\\\\b"}
"""

_MCP_YAML = """\
name: {name}
description: Uses the tools of an MCP server.
model: qwen2.5-coder-0.5b-instruct
instructions: Use the server's tools to answer, then answer in one sentence.
tools:
  - type: mcp
    server_label: docs
    server_url: ${env.MCP_URL:=http://127.0.0.1:9000/mcp}
    authorization: ${env.MCP_TOKEN:=}
temperature: 0
max_output_tokens: 120
"""

_SUPPORT_YAML = """\
name: {name}
description: A support agent with a handbook, an order-lookup function and a templated prompt.
model: qwen2.5-coder-0.5b-instruct
prompt:
  file: system.md
  variables:
    company: Lumen Bakery
tools:
  - type: file_search
  - type: functions         # every public function in tools.py
knowledge: ["**/*.md"]
temperature: 0
max_output_tokens: 120
"""

_SUPPORT_PROMPT = """\
You are the support assistant of {{company}}. Use the handbook for questions about {{company}} and the
order_status function for questions about an order. Answer briefly.
"""

_SUPPORT_TOOLS = '''\
"""Client-side functions of this agent: run on your machine when the model calls them."""


def order_status(order_id: str) -> str:
    """The delivery status of an order, by its id (for example A-1001)."""
    orders = {"A-1001": "delivered", "A-1002": "out for delivery"}
    return orders.get(order_id.strip().upper(), "unknown order")
'''

_SUPPORT_EVAL = """\
{"input": "Is order A-1001 delivered?", "expected_regex": "(?i)deliver"}
"""

TEMPLATES: dict[str, dict[str, str]] = {
    "rag": {
        "agent.yaml": _RAG_YAML + _ENVIRONMENTS,
        "knowledge/handbook.md": _HANDBOOK,
        "evals/basics.jsonl": _RAG_EVAL,
    },
    "mcp": {"agent.yaml": _MCP_YAML + _ENVIRONMENTS},
    "support": {
        "agent.yaml": _SUPPORT_YAML + _ENVIRONMENTS,
        "prompts/system.md": _SUPPORT_PROMPT,
        "tools.py": _SUPPORT_TOOLS,
        "knowledge/handbook.md": _HANDBOOK,
        "evals/basics.jsonl": _SUPPORT_EVAL,
    },
}

_GITIGNORE = ".underlay/\n"


def write_template(folder: Path, template: str) -> list[Path]:
    """Write ``template`` into ``folder`` (created); refuses to overwrite an existing agent.yaml."""
    if template not in TEMPLATES:
        raise ValueError(f"no template {template!r}; choose one of {', '.join(sorted(TEMPLATES))}")
    if (folder / "agent.yaml").exists():
        raise FileExistsError(f"{folder / 'agent.yaml'}: already exists; choose another folder")
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in folder.resolve().name.lower()).strip("-.")
    written = []
    for rel, text in {**TEMPLATES[template], ".gitignore": _GITIGNORE}.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("{name}", name or "agent"), encoding="utf-8")
        written.append(path)
    return written
