"""Route tables: each API declares its HTTP surface as data, and the server builds endpoints from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel


@dataclass(frozen=True)
class Route:
    """One HTTP endpoint of an API.

    The server calls ``handler`` on the API's router with the path parameters as keyword arguments,
    plus ``params=<body model>`` when ``body`` is set and ``query=<query model>`` when ``query`` is set.
    When ``streaming`` is true and the handler returns an async iterator, the server sends SSE.
    """

    method: str
    path: str
    handler: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type | None = None
    streaming: bool = False
    summary: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    status_code: int = 200
