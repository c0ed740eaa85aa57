"""``Agent``: run turns of an agent through the Responses API, streamed, with client functions run here.

Why the Responses API and not a loop of our own: the server already runs the server-side tools
(file_search, mcp, web_search) and shields inside one response, so the same agent behaves the same
through this class, a deployed agent, or any OpenAI client. What only the caller can do is run its own
functions: when a response ends with ``function_call`` items, each is run locally and the outputs are
sent back as ``function_call_output`` in a follow-up response, until the model answers in text.

The client is any ``openai.OpenAI`` (an ``Underlay`` in process or against a URL); events are small
typed dataclasses so a CLI or a UI can show text and tool calls as they happen.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from underlay.agents.base import (
    AgentBase,
    AgentEvent,
    TextDelta,
    ToolCall,
    ToolResult,
    Turn,
    TurnDone,
    client_for,
)
from underlay.agents.spec import load_spec

__all__ = ["Agent", "TextDelta", "ToolCall", "ToolResult", "TurnDone"]


class Agent(AgentBase):
    """An agent bound to a sync client. ``tools`` are Responses API tool dicts or plain Python functions
    (run locally when the model calls them). :class:`~underlay.agents.AsyncAgent` is its async twin;
    what they share (requests, binding a folder, reading the stream) is :mod:`underlay.agents.base`."""

    # ---- from a folder ----------------------------------------------------------------------------------

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        env: str = "local",
        *,
        client: Any = None,
        environ: Mapping[str, str] | None = None,
        sync: bool = True,
    ) -> Agent:
        """Load an agent folder and bind it to environment ``env``: with no ``client``, one is made for
        it (the embedded stack in process when the environment has no ``base_url``; closed by
        :meth:`close`). Knowledge is synced first unless ``sync=False``."""
        from underlay.client import Underlay

        environ = environ if environ is not None else os.environ
        spec = load_spec(path, environ)
        environment = spec.environment(env, environ)
        owns = client is None
        if client is None:
            client = client_for(Underlay, spec, environment, environ)
        try:
            agent = cls._bind(spec, env, environment, client, client if sync else None)
        except BaseException:
            if owns:
                client.close()
            raise
        agent._owns_client = owns
        return agent

    # ---- turns ----------------------------------------------------------------------------------------

    def stream(self, input: str | list[Any], *, conversation: str | None = None) -> Iterator[AgentEvent]:
        """One turn, as events: text deltas and tool calls as they happen, client functions run here,
        and a final :class:`TurnDone`. With ``conversation`` the turn is added to that conversation."""
        turn = Turn(self, input, conversation)
        while True:
            with self.client.responses.create(**turn.request()) as stream:
                for event in stream:
                    mapped = turn.observe(event)
                    if mapped is not None:
                        yield mapped
            done = turn.end_round()
            if done is not None:
                yield done
                return
            for call in turn.calls:
                function = turn.function(call)
                yield turn.answer(call, function.invoke(call.arguments) if function else None)

    def run(self, input: str | list[Any], *, conversation: str | None = None) -> TurnDone:
        """One turn, waited for: the final :class:`TurnDone`."""
        done: TurnDone | None = None
        for event in self.stream(input, conversation=conversation):
            if isinstance(event, TurnDone):
                done = event
        assert done is not None  # stream() always ends with TurnDone or raises
        return done

    def close(self) -> None:
        """Close the client when :meth:`from_dir` made it (stopping an in-process stack)."""
        if self._owns_client:
            self._owns_client = False
            self.client.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
