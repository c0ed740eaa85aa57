"""``AsyncAgent``: the async twin of :class:`~underlay.agents.Agent`, for asyncio frameworks and servers.

Same agent, same events, on ``openai.AsyncOpenAI`` (an ``AsyncUnderlay`` in process or against a URL):
turns stream with ``async for``, many turns can run at once on one agent (each turn keeps its state in
its own :class:`~underlay.agents.base.Turn`), and client functions never block the loop: ``async def``
ones are awaited, plain ones run in a thread. Everything that decides what is sent and what an event
means is :mod:`underlay.agents.base`, shared with ``Agent``, so the two cannot answer differently.

Knowledge sync stays sync, on purpose: :func:`underlay.agents.sync.sync_knowledge` runs once per
:meth:`AsyncAgent.from_dir`, in a worker thread, with a sync client made for the same server (same
base URL, key, headers and timeouts). An async copy of it would repeat its store lookup, uploads and
ingestion wait call for call, which is exactly the drift this module exists to avoid, and would gain
nothing: nothing else on the loop waits for an agent that is still being made.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from underlay.agents.base import AgentBase, AgentEvent, Turn, TurnDone, client_for
from underlay.agents.spec import AgentSpec, Environment, load_spec

if TYPE_CHECKING:
    from underlay.client import AsyncUnderlay, Underlay

__all__ = ["AsyncAgent"]


class AsyncAgent(AgentBase):
    """An agent bound to an async client (``openai.AsyncOpenAI``, such as ``AsyncUnderlay``). ``tools`` are
    Responses API tool dicts or Python functions, plain or ``async def`` (run here when the model calls
    them). See :class:`~underlay.agents.Agent` for the sync twin."""

    # ---- from a folder ----------------------------------------------------------------------------------

    @classmethod
    async def from_dir(
        cls,
        path: str | Path,
        env: str = "local",
        *,
        client: Any = None,
        environ: Mapping[str, str] | None = None,
        sync: bool = True,
    ) -> AsyncAgent:
        """Load an agent folder and bind it to environment ``env``, as :meth:`Agent.from_dir` does: with no
        ``client``, an ``AsyncUnderlay`` is made for it (the embedded stack in process, started in a
        thread, when the environment has no ``base_url``; closed by :meth:`aclose`). Knowledge is synced
        first unless ``sync=False``; the sync needs ``client`` to be an ``openai.AsyncOpenAI``."""
        environ = environ if environ is not None else os.environ
        spec, environment = await asyncio.to_thread(_load, path, env, environ)
        owns = client is None
        if client is None:
            client = await _start_client(spec, environment, environ)
        try:
            agent = await asyncio.to_thread(cls._bind_synced, spec, env, environment, client, sync)
        except BaseException:
            if owns:
                await client.close()
            raise
        agent._owns_client = owns
        return agent

    @classmethod
    def _bind_synced(cls, spec: AgentSpec, env: str, environment: Environment, client: Any, sync: bool) -> AsyncAgent:
        """:meth:`_bind`, with a sync twin of ``client`` for the knowledge sync (in a worker thread)."""
        twin = sync_client_like(client) if sync and spec.uses_knowledge() else None
        try:
            return cls._bind(spec, env, environment, client, twin)
        finally:
            if twin is not None:
                twin.close()

    # ---- turns ----------------------------------------------------------------------------------------

    async def stream(self, input: str | list[Any], *, conversation: str | None = None) -> AsyncIterator[AgentEvent]:
        """One turn, as events (``async for``): text deltas and tool calls as they happen, client
        functions run here, and a final :class:`~underlay.agents.TurnDone`. With ``conversation`` the turn
        is added to that conversation."""
        turn = Turn(self, input, conversation)
        while True:
            async with await self.client.responses.create(**turn.request()) as stream:
                async for event in stream:
                    mapped = turn.observe(event)
                    if mapped is not None:
                        yield mapped
            done = turn.end_round()
            if done is not None:
                yield done
                return
            for call in turn.calls:
                function = turn.function(call)
                yield turn.answer(call, await function.ainvoke(call.arguments) if function else None)

    async def run(self, input: str | list[Any], *, conversation: str | None = None) -> TurnDone:
        """One turn, waited for: the final :class:`~underlay.agents.TurnDone`."""
        done: TurnDone | None = None
        async for event in self.stream(input, conversation=conversation):
            if isinstance(event, TurnDone):
                done = event
        assert done is not None  # stream() always ends with TurnDone or raises
        return done

    async def aclose(self) -> None:
        """Close the client when :meth:`from_dir` made it (stopping an in-process stack)."""
        if self._owns_client:
            self._owns_client = False
            await self.client.close()

    async def __aenter__(self) -> AsyncAgent:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


async def _start_client(spec: AgentSpec, environment: Environment, environ: Mapping[str, str]) -> AsyncUnderlay:
    """The environment's ``AsyncUnderlay``, made in a worker thread (an in-process stack takes seconds to
    start). A thread cannot be cancelled: when the caller is (a request timing out in a server), the
    client is handed over to nobody, so whichever side sees it last stops the stack it started."""
    from underlay.client import AsyncUnderlay

    lock = threading.Lock()
    state: dict[str, Any] = {}

    def start() -> AsyncUnderlay:
        client = client_for(AsyncUnderlay, spec, environment, environ)
        with lock:
            if "abandoned" not in state:
                state["client"] = client
                return client
        _stop_stack(client)
        return client

    try:
        return await asyncio.to_thread(start)
    except asyncio.CancelledError:
        with lock:
            state["abandoned"] = True
            client = state.pop("client", None)
        if client is not None:  # made, but the caller was cancelled before it got it
            threading.Thread(target=_stop_stack, args=(client,), name="underlay-agent-abandoned", daemon=True).start()
        raise


def _stop_stack(client: AsyncUnderlay) -> None:
    """Stop the in-process stack of a client nobody will use (it has opened no connection to close)."""
    server, client._underlay_server = client._underlay_server, None
    if server is not None:
        server.stop()


def _load(path: str | Path, env: str, environ: Mapping[str, str]) -> tuple[AgentSpec, Environment]:
    spec = load_spec(path, environ)
    return spec, spec.environment(env, environ)


def sync_client_like(client: Any) -> Underlay:
    """A sync ``Underlay`` for the server ``client`` (an ``openai.AsyncOpenAI``) talks to: its base URL,
    key, organization, project, extra headers and query, timeout and retries (not its ``http_client``,
    which is async). Close it when done."""
    import openai

    from underlay.client import Underlay

    if not isinstance(client, openai.AsyncOpenAI):
        raise TypeError(
            f"AsyncAgent.from_dir: syncing knowledge needs an openai.AsyncOpenAI client (such as AsyncUnderlay), "
            f"not {type(client).__name__}; pass one, or sync=False"
        )
    return Underlay(
        base_url=client.base_url,
        api_key=client.api_key,
        organization=client.organization,
        project=client.project,
        # the headers and query the caller gave (auth proxies, tenants); the SDK keeps them only here
        default_headers=dict(client._custom_headers),
        default_query=dict(client._custom_query),
        timeout=client.timeout,
        max_retries=client.max_retries,
    )
