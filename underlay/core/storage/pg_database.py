"""Create a PostgreSQL database on first start, so ``underlay run postgres`` needs no ``createdb`` step.

Why here and not in a set-up script: replicas and worker processes start together and each opens its
stores; the one that finds the database missing creates it, and the others must not fail because
someone else won the race. PostgreSQL reports the loser as ``duplicate_database`` or, when both
``CREATE DATABASE`` statements run at the same instant, as a unique violation on ``pg_database``; both
mean "it exists now", which is all we wanted.

Only a missing database triggers anything: a reachable database costs one extra connection at start,
and every other connection error is left for the store's own open, which reports it in one line.
"""

from __future__ import annotations

import logging
from typing import Any

from underlay.core.storage.kvstore import StorageUnavailableError

log = logging.getLogger("underlay.storage")

_MAINTENANCE_DATABASES = ("postgres", "template1")


def _quoted(name: str) -> str:
    """``name`` as a quoted SQL identifier (database names may hold '-' or '.')."""
    return '"' + name.replace('"', '""') + '"'


async def ensure_database(host: str, port: int, user: str, password: str | None, db: str) -> None:
    """Create ``db`` when it does not exist; safe when several processes call it at once."""
    try:
        import asyncpg
    except ImportError:
        return  # the store's own open names the missing driver
    connect: dict[str, Any] = {"host": host, "port": port, "user": user, "password": password, "timeout": 10}
    try:
        conn = await asyncpg.connect(database=db, **connect)
    except asyncpg.InvalidCatalogNameError:
        pass
    except Exception:
        return  # unreachable, wrong password, ...: the store's open reports it
    else:
        await conn.close()
        return
    admin = None
    for maintenance in _MAINTENANCE_DATABASES:
        try:
            admin = await asyncpg.connect(database=maintenance, **connect)
            break
        except Exception:  # try the next maintenance database
            continue
    if admin is None:
        return  # the store's open reports the missing database with a createdb hint
    try:
        await admin.execute(f"CREATE DATABASE {_quoted(db)}")
        log.info("created PostgreSQL database %s on %s:%s", db, host, port)
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        pass  # another process created it first
    except asyncpg.InsufficientPrivilegeError as exc:
        raise StorageUnavailableError(
            f"PostgreSQL database '{db}' does not exist on {host}:{port} and user '{user}' may not create it; "
            f"create it (createdb -h {host} -p {port} -U <admin> -O {user} {db}) or grant CREATEDB."
        ) from exc
    finally:
        await admin.close()
