"""The principal behind the current request.

Authentication (a later layer) sets :data:`principal_var`; without it every request runs as the
anonymous principal. Stores record the owner of every user-owned row from day one and filter by it
inside their queries.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Principal:
    id: str
    attributes: dict[str, Any] = field(default_factory=dict)


ANONYMOUS = Principal(id="anonymous")
principal_var: ContextVar[Principal] = ContextVar("underlay_principal", default=ANONYMOUS)


def current_principal() -> Principal:
    return principal_var.get()
