"""Portable agents: an ``agent.yaml`` folder (prompts, knowledge, tools.py, evals) run anywhere.

:func:`load_spec` reads and checks a folder, :class:`Agent` runs its turns through the Responses API
(in process or against a URL) and :class:`AsyncAgent` is its asyncio twin (what they share is
:mod:`underlay.agents.base`), :mod:`underlay.agents.sync` keeps its knowledge in a vector store by
content hash. See docs/agents.md.
"""

from underlay.agents.agent import Agent, TextDelta, ToolCall, ToolResult, TurnDone
from underlay.agents.async_agent import AsyncAgent
from underlay.agents.spec import AgentSpec, Environment, load_spec

__all__ = [
    "Agent",
    "AgentSpec",
    "AsyncAgent",
    "Environment",
    "TextDelta",
    "ToolCall",
    "ToolResult",
    "TurnDone",
    "load_spec",
]
