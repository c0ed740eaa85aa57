"""The SQL store: tables for files metadata, responses, conversations, stored chat completions, jobs.

Why a small table API instead of handing out SQLAlchemy: every caller needs the same few shapes
(insert, upsert, filtered reads, OpenAI-style cursor pages, atomic job claiming), the same guarantees
(JSON round trips, SQLite that tolerates several worker processes, row locks on PostgreSQL), and
nothing that lets request data reach SQL text. Keeping the surface this narrow is what lets one suite
of contract tests prove both backends behave identically.

Ownership: every user-owned row records who owns it. Callers add the two columns in
:data:`OWNER_COLUMNS` (``owner_principal``, a string with an index, and ``owner_attributes``, JSON) to
their tables and filter reads, updates and deletes by them in the ``where`` argument, so that access
control happens in the query and never after it. The store does not enforce this itself:
:func:`underlay.core.access.rows_where` turns the access policy into such a ``where``.

Filters (``where``) are either a mapping of column to value (equality; ``None`` means ``IS NULL``) or a
list of conditions built with :class:`Where`, all of which must hold. Column and table names are
checked against the table, and values always travel as bound parameters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator
from sqlalchemy import (
    JSON,
    URL,
    BigInteger,
    Boolean,
    Column,
    ColumnElement,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    event,
    exists,
    false,
    func,
    insert,
    inspect,
    literal,
    not_,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Inspector
from sqlalchemy.exc import IntegrityError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.types import TypeEngine

from underlay.api.errors import ConflictError, InvalidRequestError
from underlay.core.storage.kvstore import (
    StorageUnavailableError,
    checked_identifier,
    missing_driver,
    sqlite_file_path,
)
from underlay.core.storage.pg_database import ensure_database
from underlay.core.storage.sql_async import AsyncConnection, AsyncEngine, create_async_engine

# SQLAlchemy's PostgreSQL dialect (JSONB, its INSERT ... ON CONFLICT) is imported where a PostgreSQL store
# needs it: opening one loads it anyway, and a SQLite deployment never pays for it (25 ms, 2.5 MB a start).

_SQLITE_BUSY_TIMEOUT_S = 30.0
_WRITE_OPTION = "underlay_write"
_AUTOCOMMIT_OPTION = "underlay_autocommit"

# ---------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------


class SqliteSqlStoreConfig(BaseModel):
    """A SQL store in one SQLite file (WAL mode); several worker processes may share it."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["sqlite"] = "sqlite"
    path: str = Field(description="Database file. '~' is expanded and parent directories are created.")


class PostgresSqlStoreConfig(BaseModel):
    """A SQL store in a PostgreSQL database; the choice for several workers and replicas."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["postgres"] = "postgres"
    host: str = "127.0.0.1"
    port: int = 5432
    db: str = "underlay"
    user: str = "postgres"
    password: str | None = None

    @field_validator("password")
    @classmethod
    def _empty_password_is_none(cls, value: str | None) -> str | None:
        """``${env.POSTGRES_PASSWORD:=}`` yields ""; treat it as "no password" (trust or .pgpass auth)."""
        return value or None

    create_database: bool = Field(
        default=False, description="Create 'db' at start when it does not exist (needs the CREATEDB privilege)."
    )


SqlStoreConfig = Annotated[SqliteSqlStoreConfig | PostgresSqlStoreConfig, Field(discriminator="type")]
"""Any SQL store config; the ``type`` key picks the backend."""

_SQL_CONFIG_ADAPTER: TypeAdapter[SqliteSqlStoreConfig | PostgresSqlStoreConfig] = TypeAdapter(SqlStoreConfig)


def parse_sqlstore_config(data: Mapping[str, Any]) -> SqliteSqlStoreConfig | PostgresSqlStoreConfig:
    """Validate a plain mapping (e.g. from YAML) into the matching SQL store config class."""
    return _SQL_CONFIG_ADAPTER.validate_python(dict(data))


# ---------------------------------------------------------------------------------------------------
# Schema description
# ---------------------------------------------------------------------------------------------------


class ColumnType(StrEnum):
    """Portable column types. TIMESTAMP holds epoch seconds as an integer, the unit OpenAI uses."""

    STRING = "string"
    TEXT = "text"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    JSON = "json"
    TIMESTAMP = "timestamp"


class ColumnDefinition(BaseModel):
    """A column with its constraints. A bare :class:`ColumnType` means a nullable, unindexed column."""

    model_config = ConfigDict(frozen=True)

    type: ColumnType
    primary_key: bool = False
    nullable: bool = True
    index: bool = False
    unique: bool = Field(default=False, description="Adds a unique index; a target for upsert conflicts.")


OWNER_COLUMNS: dict[str, ColumnType | ColumnDefinition] = {
    "owner_principal": ColumnDefinition(type=ColumnType.STRING, index=True),
    # Indexed (GIN, PostgreSQL only) for access policies that share rows by owner attributes.
    "owner_attributes": ColumnDefinition(type=ColumnType.JSON, index=True),
}
"""The ownership columns every table of user-owned rows should include (merge into its columns)."""


def _json_type(dialect: str) -> TypeEngine[Any]:
    """JSON for ``dialect``'s tables: JSONB on PostgreSQL (containment queries, GIN indexes)."""
    # none_as_null: a Python None is SQL NULL (filterable with IS NULL), not the JSON literal 'null'.
    json = JSON(none_as_null=True)
    if dialect != "postgresql":
        return json
    from sqlalchemy.dialects.postgresql import JSONB

    return json.with_variant(JSONB(none_as_null=True), "postgresql")


def _sa_type(column_type: ColumnType, dialect: str) -> TypeEngine[Any]:
    """The SQLAlchemy type of ``column_type`` in a table of ``dialect`` (``"sqlite"``, ``"postgresql"``)."""
    if column_type in (ColumnType.INTEGER, ColumnType.TIMESTAMP):
        # SQLite's INTEGER is already 64-bit, and only that spelling makes a primary key a rowid alias.
        return BigInteger().with_variant(Integer(), "sqlite")
    if column_type is ColumnType.STRING:
        return String()
    if column_type is ColumnType.TEXT:
        return Text()
    if column_type is ColumnType.FLOAT:
        return Double()
    if column_type is ColumnType.BOOLEAN:
        return Boolean()
    if column_type is ColumnType.JSON:
        return _json_type(dialect)
    raise ValueError(f"Unknown column type {column_type!r}")


def _definition(spec: ColumnType | ColumnDefinition | str) -> ColumnDefinition:
    if isinstance(spec, ColumnDefinition):
        return spec
    return ColumnDefinition(type=ColumnType(spec))


def _index_name(prefix: str, table: str, column: str) -> str:
    """A deterministic index name within PostgreSQL's 63-byte limit (so 'create if missing' works)."""
    name = f"{prefix}_{table}_{column}"
    if len(name) <= 63:
        return name
    import hashlib

    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{name[:52]}_{digest}"


# ---------------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------------

Operator = Literal[
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "is_null", "is_not_null", "like", "json_overlaps"
]


@dataclass(frozen=True)
class Condition:
    """One comparison of a column with a bound value. Build with :class:`Where`."""

    column: str
    op: Operator
    value: Any = None


@dataclass(frozen=True)
class ConditionGroup:
    """Conditions combined with AND or OR (or one negated with NOT). Build with :class:`Where`."""

    combinator: Literal["and", "or", "not"]
    conditions: tuple[Condition | ConditionGroup, ...]


Filter = Condition | ConditionGroup
WhereArg = Mapping[str, Any] | Sequence[Filter] | None
"""A ``where`` argument: column->value equalities, a list of conditions (all must hold), or nothing."""

OrderBy = Sequence[tuple[str, Literal["asc", "desc"]]]


class Where:
    """Typed condition builders, so callers never write SQL text: ``[Where.gt("created_at", t)]``."""

    @staticmethod
    def eq(column: str, value: Any) -> Condition:
        return Condition(column, "eq", value)

    @staticmethod
    def ne(column: str, value: Any) -> Condition:
        return Condition(column, "ne", value)

    @staticmethod
    def gt(column: str, value: Any) -> Condition:
        return Condition(column, "gt", value)

    @staticmethod
    def gte(column: str, value: Any) -> Condition:
        return Condition(column, "gte", value)

    @staticmethod
    def lt(column: str, value: Any) -> Condition:
        return Condition(column, "lt", value)

    @staticmethod
    def lte(column: str, value: Any) -> Condition:
        return Condition(column, "lte", value)

    @staticmethod
    def in_(column: str, values: Sequence[Any]) -> Condition:
        return Condition(column, "in", tuple(values))

    @staticmethod
    def not_in(column: str, values: Sequence[Any]) -> Condition:
        return Condition(column, "not_in", tuple(values))

    @staticmethod
    def is_null(column: str) -> Condition:
        return Condition(column, "is_null")

    @staticmethod
    def is_not_null(column: str) -> Condition:
        return Condition(column, "is_not_null")

    @staticmethod
    def like(column: str, pattern: str) -> Condition:
        """SQL LIKE with ``\\`` as escape (SQLite compares ASCII letters case-insensitively)."""
        return Condition(column, "like", pattern)

    @staticmethod
    def json_overlaps(column: str, key: str, values: Sequence[str]) -> Condition:
        """The JSON object in ``column`` has, under ``key``, one of ``values`` (a list or a single string)."""
        return Condition(column, "json_overlaps", (key, tuple(values)))

    @staticmethod
    def not_(condition: Filter) -> ConditionGroup:
        return ConditionGroup("not", (condition,))

    @staticmethod
    def all_of(*conditions: Filter) -> ConditionGroup:
        return ConditionGroup("and", conditions)

    @staticmethod
    def any_of(*conditions: Filter) -> ConditionGroup:
        """At least one must hold; e.g. "owned by me, or shared with everyone"."""
        return ConditionGroup("or", conditions)


class Page(NamedTuple):
    """One page of rows and whether more follow; unpacks as ``rows, has_more``."""

    rows: list[dict[str, Any]]
    has_more: bool


# ---------------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------------


def _is_unique_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "23505" or getattr(orig, "pgcode", None) == "23505":
        return True
    return "UNIQUE constraint failed" in str(orig)


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    """Per-connection pragmas plus explicit BEGIN, for SQLite shared by several processes.

    pysqlite's own transaction handling starts transactions lazily and always DEFERRED. A deferred
    transaction that reads and then writes cannot wait for another process's write lock (SQLite fails
    it at once with "database is locked"), so write transactions here say ``BEGIN IMMEDIATE`` and wait
    up to the busy timeout instead. Read transactions stay deferred so they never block writers.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(_SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get(_AUTOCOMMIT_OPTION, False):
            return  # one statement: SQLite runs it atomically in its own implicit transaction
        connection.exec_driver_sql("BEGIN IMMEDIATE" if options.get(_WRITE_OPTION, False) else "BEGIN")

    # Every COMMIT/ROLLBACK is a round trip to aiosqlite's thread, and SQLAlchemy sends a ROLLBACK when
    # a connection goes back to the pool even after a COMMIT. Skip the ones with nothing to end.
    dialect = engine.sync_engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def _in_transaction(dbapi_connection: Any) -> bool:
        try:
            return bool(dbapi_connection.driver_connection.in_transaction)
        except Exception:  # closed or not aiosqlite: let the driver decide
            return True

    def _do_commit(dbapi_connection: Any) -> None:
        if _in_transaction(dbapi_connection):
            commit(dbapi_connection)

    def _do_rollback(dbapi_connection: Any) -> None:
        if _in_transaction(dbapi_connection):
            rollback(dbapi_connection)

    dialect.do_commit = _do_commit  # type: ignore[method-assign]
    dialect.do_rollback = _do_rollback  # type: ignore[method-assign]


class SqlStore:
    """Tables on SQLAlchemy async, SQLite (aiosqlite) or PostgreSQL (asyncpg). Open with :meth:`open`."""

    def __init__(self, engine: AsyncEngine, single_connection: bool = False) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._tables: dict[str, Table] = {}
        # An in-memory SQLite database lives in exactly one connection, which SQLAlchemy shares
        # (StaticPool); transactions on it must take turns or they would nest.
        self._turns: asyncio.Lock | None = asyncio.Lock() if single_connection else None
        self._upserts: dict[tuple[Any, ...], Any] = {}
        self._batch_inserts: dict[tuple[Table, tuple[str, ...]], tuple[str, tuple[str, ...], list[Any]]] = {}

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._dialect

    @classmethod
    async def open(cls, config: SqliteSqlStoreConfig | PostgresSqlStoreConfig) -> SqlStore:
        """Create the engine and connect once, so a bad config fails the start with a clear message."""
        if isinstance(config, SqliteSqlStoreConfig):
            try:
                path = sqlite_file_path(config.path)
            except OSError as exc:
                raise StorageUnavailableError(f"Cannot create the SQLite SQL store at {config.path}: {exc}") from exc
            where = f"SQLite file {path}"
            engine = create_async_engine(
                URL.create("sqlite+aiosqlite", database=str(path)),
                connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S},
            )
            _install_sqlite_hooks(engine)
        else:
            try:
                import asyncpg  # noqa: F401
            except ImportError as exc:
                raise missing_driver("asyncpg", "postgres") from exc
            where = f"PostgreSQL at {config.user}@{config.host}:{config.port}/{config.db}"
            if config.create_database:
                await ensure_database(config.host, config.port, config.user, config.password, config.db)
            engine = create_async_engine(
                URL.create(
                    "postgresql+asyncpg",
                    username=config.user,
                    password=config.password,
                    host=config.host,
                    port=config.port,
                    database=config.db,
                ),
                pool_size=10,
                max_overflow=10,
                pool_pre_ping=True,
            )
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            # The driver's own message, without SQLAlchemy's multi-line "background" link.
            reason = str(getattr(exc, "orig", None) or exc).strip().rstrip(".")
            hint = ""
            if "does not exist" in reason and isinstance(config, PostgresSqlStoreConfig):
                hint = f" Create it (createdb -h {config.host} -p {config.port} -U {config.user} {config.db})."
            raise StorageUnavailableError(f"Cannot open the SQL store ({where}): {reason}.{hint}") from exc
        return cls(engine, single_connection=isinstance(config, SqliteSqlStoreConfig) and config.path == ":memory:")

    async def close(self) -> None:
        await self._engine.dispose()

    @asynccontextmanager
    async def _transaction(self, write: bool) -> AsyncIterator[AsyncConnection]:
        if self._turns is not None:
            async with self._turns, self._connection(write) as conn:
                yield conn
        else:
            async with self._connection(write) as conn:
                yield conn

    @asynccontextmanager
    async def _connection(self, write: bool) -> AsyncIterator[AsyncConnection]:
        async with self._engine.connect() as conn:
            if write:
                await conn.execution_options(**{_WRITE_OPTION: True})
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def _statement(self, write: bool) -> AsyncIterator[AsyncConnection]:
        """A connection for exactly one statement.

        Why: on SQLite a lone statement is atomic without BEGIN/COMMIT (the connection is in
        autocommit mode), and leaving them out saves two of the few thread round trips an operation
        costs. PostgreSQL keeps its explicit transaction.
        """
        if self._dialect != "sqlite":
            async with self._transaction(write) as conn:
                yield conn
            return
        if self._turns is not None:
            async with self._turns, self._engine.connect() as conn:
                await conn.execution_options(**{_AUTOCOMMIT_OPTION: True})
                yield conn
                await conn.commit()
        else:
            async with self._engine.connect() as conn:
                await conn.execution_options(**{_AUTOCOMMIT_OPTION: True})
                yield conn
                await conn.commit()

    # ---- schema -----------------------------------------------------------------------------------

    async def create_table(self, name: str, columns: Mapping[str, ColumnType | ColumnDefinition]) -> None:
        """Create ``name`` if missing, else add any missing columns and indexes (idempotent).

        Columns added to an existing table are always nullable (existing rows have no value for them)
        and cannot be primary keys. Columns are never dropped or retyped. Safe to run from several
        processes at once: SQLite serializes it with its write lock, PostgreSQL with an advisory lock.
        """
        checked_identifier(name)
        if not columns:
            raise ValueError(f"Table '{name}' needs at least one column.")
        definitions = {checked_identifier(col, "column name"): _definition(spec) for col, spec in columns.items()}
        async with self._transaction(write=True) as conn:
            if self._dialect == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"underlay:sqlstore:{name}"}
                )
            table = await conn.run_sync(_create_or_migrate, name, definitions)
        self._tables[name] = table

    async def _table(self, name: str, columns: Iterable[str] = ()) -> Table:
        """The table's columns, reflected from the database when unknown or missing ``columns``.

        Re-reflecting on a missing column lets this worker use columns another (newer) worker added
        with ``create_table`` after this one cached the table.
        """
        table = self._tables.get(name)
        if table is not None and all(col in table.c for col in columns):
            return table
        checked_identifier(name)
        async with self._transaction(write=False) as conn:
            try:
                table = await conn.run_sync(_runtime_table, name, {})
            except NoSuchTableError:
                raise ValueError(f"Table '{name}' does not exist; call create_table first.") from None
        self._tables[name] = table
        return table

    # ---- writes -----------------------------------------------------------------------------------

    async def insert(self, table: str, row: Mapping[str, Any]) -> None:
        """Insert one row. A duplicate primary key or unique value raises ``ConflictError`` (409)."""
        t = await self._table(table, row)
        _check_columns(t, row)
        try:
            async with self._statement(write=True) as conn:
                await conn.execute(insert(t).values(dict(row)))
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise ConflictError(f"A row with the same key already exists in '{table}'.") from exc
            raise

    async def insert_many(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert ``rows`` as one batch: all of them or, on any error, none.

        Why: a caller writing hundreds of rows at once (the span writer) should pay for one
        transaction and one executemany, not a statement round trip and a commit per row. Every row
        must name the same columns (missing ones are not filled with NULL, so a typo cannot pass
        silently). A duplicate primary key or unique value anywhere raises ``ConflictError`` (409) and
        leaves the table as it was. An empty ``rows`` writes nothing.
        """
        if not rows:
            return
        columns = tuple(rows[0])
        t = await self._table(table, columns)
        _check_columns(t, columns)
        if not columns:
            raise ValueError(f"insert_many into '{table}' needs rows with at least one column.")
        names = set(columns)
        for index, row in enumerate(rows):
            if len(row) != len(names) or not names.issuperset(row):
                raise ValueError(
                    f"insert_many into '{table}': row {index} has columns {sorted(row)}, "
                    f"but row 0 has {sorted(names)}; give every row the same columns."
                )
        sql, order, processors = self._batch_insert(t, columns)
        params = _positional_rows(rows, order, processors)
        try:
            # An explicit transaction even on SQLite: in autocommit mode each row would commit alone.
            async with self._transaction(write=True) as conn:
                await conn.exec_driver_sql(sql, params)
        except IntegrityError as exc:
            if _is_unique_violation(exc):
                raise ConflictError(
                    f"A row with the same key already exists in '{table}'; none were inserted."
                ) from exc
            raise

    def _batch_insert(self, t: Table, columns: tuple[str, ...]) -> tuple[str, tuple[str, ...], list[Any]]:
        """The INSERT text for ``columns`` in the driver's parameter style, its parameter order, converters.

        Why: SQLAlchemy's executemany re-processes every row's parameters by name; compiling once and
        handing the driver positional tuples saves about a third of the writer's CPU per row. The converters are the
        column types' own (JSON, booleans), so values are stored exactly as :meth:`insert` stores them.
        """
        key = (t, columns)
        cached = self._batch_inserts.get(key)
        if cached is None:
            compiled = insert(t).compile(dialect=self._engine.dialect, column_keys=list(columns))
            # The statement lists the columns in the table's order, which need not be the rows' order.
            order = tuple(compiled.positiontup or ())
            if sorted(order) != sorted(columns):
                raise ValueError(f"Cannot batch-insert into '{t.name}': unexpected parameters {order}.")
            dialect = self._engine.dialect
            processors = [compiled.binds[name].type._cached_bind_processor(dialect) for name in order]
            cached = (compiled.string, order, processors)
            if len(self._batch_inserts) >= 256:
                self._batch_inserts.clear()
            self._batch_inserts[key] = cached
        return cached

    async def upsert(self, table: str, row: Mapping[str, Any], conflict_columns: Sequence[str]) -> None:
        """Insert ``row``, or update the other columns of the row it collides with on ``conflict_columns``.

        ``conflict_columns`` must be the primary key or carry a unique index.
        """
        t = await self._table(table, row)
        _check_columns(t, row)
        _check_columns(t, conflict_columns)
        if not conflict_columns:
            raise ValueError("upsert needs at least one conflict column.")
        # The statement depends only on the table and the column names, so it is built once and the
        # row travels as parameters (building an ON CONFLICT clause costs more than running it).
        key = (t, tuple(row), tuple(conflict_columns))
        stmt = self._upserts.get(key)
        if stmt is None:
            base: Any
            if self._dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                base = pg_insert(t)
            else:
                base = sqlite_dialect.insert(t)
            updates = {col: base.excluded[col] for col in row if col not in conflict_columns}
            if updates:
                stmt = base.on_conflict_do_update(index_elements=list(conflict_columns), set_=updates)
            else:
                stmt = base.on_conflict_do_nothing(index_elements=list(conflict_columns))
            if len(self._upserts) >= 256:
                self._upserts.clear()
            self._upserts[key] = stmt
        async with self._statement(write=True) as conn:
            await conn.execute(stmt, dict(row))

    async def update(self, table: str, values: Mapping[str, Any], where: WhereArg) -> int:
        """Set ``values`` on the rows matching ``where``; returns how many rows changed.

        An empty ``where`` is refused: updating every row is almost always a missing filter.
        """
        t = await self._table(table, [*values, *_where_columns(where)])
        if not values:
            raise ValueError("update needs at least one value to set.")
        _check_columns(t, values)
        conditions = _required_conditions(t, where, "update")
        async with self._statement(write=True) as conn:
            result = await conn.execute(update(t).where(*conditions).values(dict(values)))
        return int(result.rowcount)

    async def delete(self, table: str, where: WhereArg) -> int:
        """Delete the rows matching ``where`` (which must not be empty); returns how many were deleted."""
        t = await self._table(table, _where_columns(where))
        conditions = _required_conditions(t, where, "delete")
        async with self._statement(write=True) as conn:
            result = await conn.execute(delete(t).where(*conditions))
        return int(result.rowcount)

    async def claim(
        self,
        table: str,
        where: WhereArg,
        values: Mapping[str, Any],
        order_by: OrderBy | None = None,
    ) -> dict[str, Any] | None:
        """Atomically pick the first row matching ``where`` and apply ``values`` to it; ``None`` if none.

        Two claimers never get the same row, across processes and replicas: PostgreSQL locks the row
        with ``FOR UPDATE SKIP LOCKED`` (concurrent claimers move on to the next row instead of
        queueing), SQLite holds its database write lock for the whole pick-and-update. ``values``
        should make the row stop matching ``where`` (e.g. ``status: queued -> running``). The table
        needs a primary key. Returns the row as updated.
        """
        t = await self._table(table, [*values, *_where_columns(where), *(col for col, _ in order_by or ())])
        if not values:
            raise ValueError("claim needs values that mark the row as taken.")
        _check_columns(t, values)
        key_columns = list(t.primary_key.columns)
        if not key_columns:
            raise ValueError(f"claim needs a primary key on '{table}'.")
        pick = select(*key_columns).where(*_conditions(t, where)).order_by(*_order(t, order_by)).limit(1)
        if self._dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        async with self._transaction(write=True) as conn:
            key = (await conn.execute(pick)).first()
            if key is None:
                return None
            stmt = (
                update(t)
                .where(*[col == key[i] for i, col in enumerate(key_columns)])
                .values(dict(values))
                .returning(*t.columns)
            )
            row = (await conn.execute(stmt)).mappings().first()
        return dict(row) if row is not None else None

    # ---- reads ------------------------------------------------------------------------------------

    async def fetch_one(
        self, table: str, where: WhereArg = None, order_by: OrderBy | None = None
    ) -> dict[str, Any] | None:
        """The first row matching ``where`` (in ``order_by`` order, if given), or ``None``."""
        rows = await self.fetch_all(table, where, order_by=order_by, limit=1)
        return rows[0] if rows else None

    async def fetch_all(
        self,
        table: str,
        where: WhereArg = None,
        order_by: OrderBy | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows matching ``where``, ordered by ``order_by`` (``[(column, "asc" | "desc"), ...]``)."""
        t = await self._table(table, [*_where_columns(where), *(col for col, _ in order_by or ())])
        stmt = select(t).where(*_conditions(t, where)).order_by(*_order(t, order_by))
        if limit is not None:
            stmt = stmt.limit(limit)
        async with self._statement(write=False) as conn:
            result = await conn.execute(stmt)
            return [dict(row) for row in result.mappings().all()]

    async def count(self, table: str, where: WhereArg = None) -> int:
        """How many rows match ``where``."""
        t = await self._table(table, _where_columns(where))
        async with self._statement(write=False) as conn:
            value = await conn.scalar(select(func.count()).select_from(t).where(*_conditions(t, where)))
        return int(value or 0)

    async def fetch_page(
        self,
        table: str,
        where: WhereArg = None,
        order_column: str = "created_at",
        order: Literal["asc", "desc"] = "desc",
        limit: int = 20,
        after_id: str | None = None,
        id_column: str = "id",
    ) -> Page:
        """One page of an OpenAI-style list: rows after the row ``after_id``, and whether more follow.

        Rows are ordered by ``order_column`` then ``id_column`` (so rows created in the same second
        still page deterministically, without repeats or gaps). The cursor row must itself match
        ``where``: a caller cannot page from, or learn about, a row it may not see. An unknown cursor
        raises ``InvalidRequestError`` for ``after``. ``order_column`` must not be NULL.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1.")
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', not {order!r}.")
        t = await self._table(table, [*_where_columns(where), order_column, id_column])
        order_col = _column(t, order_column)
        id_col = _column(t, id_column)
        conditions = _conditions(t, where)
        async with self._transaction(write=False) as conn:
            if after_id is not None:
                cursor = (await conn.execute(select(order_col).where(id_col == after_id, *conditions))).first()
                if cursor is None:
                    raise InvalidRequestError(
                        f"No object with id '{after_id}' to list after; pass an id from a previous page.",
                        param="after",
                    )
                value = cursor[0]
                if order == "desc":
                    conditions.append(or_(order_col < value, and_(order_col == value, id_col < after_id)))
                else:
                    conditions.append(or_(order_col > value, and_(order_col == value, id_col > after_id)))
            ordering = [order_col.desc(), id_col.desc()] if order == "desc" else [order_col.asc(), id_col.asc()]
            stmt = select(t).where(*conditions).order_by(*ordering).limit(limit + 1)
            rows = [dict(row) for row in (await conn.execute(stmt)).mappings().all()]
        return Page(rows[:limit], len(rows) > limit)


async def sqlstore_from_config(
    config: SqliteSqlStoreConfig | PostgresSqlStoreConfig | Mapping[str, Any],
) -> SqlStore:
    """Open the SQL store described by ``config`` (a config object or a plain mapping)."""
    if isinstance(config, Mapping):
        config = parse_sqlstore_config(config)
    return await SqlStore.open(config)


# ---------------------------------------------------------------------------------------------------
# Helpers (the sync ones run inside ``AsyncConnection.run_sync``)
# ---------------------------------------------------------------------------------------------------


def _create_or_migrate(conn: Connection, name: str, definitions: dict[str, ColumnDefinition]) -> Table:
    """Create the table or add what it lacks; return it as :func:`_runtime_table` describes it.

    Every store calls this at start-up for each of its tables, so it asks the database as little as
    it can: one inspector for the whole call (its cache answers repeated questions), a table it has
    just created is the table it created it with rather than reflected back, and an existing one is
    reflected once (columns and indexes), not once for the DDL and again for the runtime table.
    """
    inspector = inspect(conn)
    dialect = conn.dialect.name
    if not inspector.has_table(name):
        ddl_table = Table(
            name,
            MetaData(),
            *[
                Column(
                    col, _sa_type(d.type, dialect), primary_key=d.primary_key, nullable=d.nullable and not d.primary_key
                )
                for col, d in definitions.items()
            ],
        )
        # Under this transaction's write lock nothing else made the table, so none of its indexes exist:
        # they join the table's own DDL run (one pass of SQLAlchemy's DDL machinery, not one per index).
        _create_indexes(conn, name, ddl_table, definitions, existing=None)
        ddl_table.create(conn)
        # The statements need only its columns, types and primary key, exactly what it was created with (its
        # NOT NULL flags and indexes play no part in them): built once, not again (a tenth of a table's cost).
        return ddl_table
    present = {info["name"] for info in inspector.get_columns(name)}
    ddl_table = Table(name, MetaData(), *[Column(col) for col in present])
    quote = conn.dialect.identifier_preparer.quote
    altered = False
    for col, d in definitions.items():
        if col in present:
            continue
        if d.primary_key:
            raise ValueError(f"Cannot add primary key column '{col}' to existing table '{name}'.")
        column_sql = _sa_type(d.type, dialect).compile(dialect=conn.dialect)
        conn.exec_driver_sql(f"ALTER TABLE {quote(name)} ADD COLUMN {quote(col)} {column_sql}")
        ddl_table.append_column(Column(col, _sa_type(d.type, dialect)), replace_existing=True)
        altered = True
    existing_indexes = {n for ix in inspector.get_indexes(name) if (n := ix.get("name"))}
    _create_indexes(conn, name, ddl_table, definitions, existing=existing_indexes)
    if altered:
        inspector.clear_cache()  # the columns it read are out of date now
    return _runtime_table(conn, name, definitions, inspector)


def _create_indexes(
    conn: Connection, name: str, ddl_table: Table, definitions: dict[str, ColumnDefinition], existing: set[str] | None
) -> None:
    """The unique and plain indexes ``definitions`` ask for that are missing.

    ``existing=None`` means a new table not created yet: its indexes are only attached to ``ddl_table``,
    whose ``create`` then emits them after the table.
    """
    for col, d in definitions.items():
        if d.unique or d.index:
            options: dict[str, Any] = {}
            if d.type is ColumnType.JSON:
                # JSON is indexed for containment (``@>``) on PostgreSQL, where a GIN index answers it;
                # SQLite cannot use an index on a JSON column, so it gets none.
                if conn.dialect.name != "postgresql":
                    continue
                options = {"postgresql_using": "gin"}
            ix_name = _index_name("ux" if d.unique else "ix", name, col)
            if existing is None:
                Index(ix_name, ddl_table.c[col], unique=d.unique, **options)  # attached to ddl_table
            elif ix_name not in existing:
                Index(ix_name, ddl_table.c[col], unique=d.unique, **options).create(conn, checkfirst=True)


def _runtime_table(
    conn: Connection, name: str, definitions: dict[str, ColumnDefinition], inspector: Inspector | None = None
) -> Table:
    """The table as it is in the database, with our own types for the columns we know.

    Reflection picks up columns added by other (newer) versions; declared types win so JSON and
    booleans convert the same way whatever the database reports.
    """
    inspector = inspector or inspect(conn)
    if not inspector.has_table(name):
        raise NoSuchTableError(name)
    primary_key = set(inspector.get_pk_constraint(name).get("constrained_columns") or [])
    columns: list[Column[Any]] = []
    for info in inspector.get_columns(name):
        col_name = info["name"]
        if col_name in definitions:
            col_type = _sa_type(definitions[col_name].type, conn.dialect.name)
        elif isinstance(info["type"], JSON):
            col_type = _json_type(conn.dialect.name)
        else:
            col_type = info["type"]
        columns.append(Column(col_name, col_type, primary_key=col_name in primary_key))
    return Table(name, MetaData(), *columns)


def _positional_rows(
    rows: Sequence[Mapping[str, Any]], columns: tuple[str, ...], processors: list[Any]
) -> list[tuple[Any, ...]]:
    """Rows as tuples in ``columns`` order, each value converted for the driver.

    A JSON value shared by many rows (one caller's ``owner_attributes`` on every row of a batch) is
    serialised once: the result is remembered by the object's identity for the length of the batch,
    while ``rows`` keeps every such object alive.
    """
    converters = list(zip(columns, processors, strict=True))
    memo: dict[tuple[int, int], Any] = {}
    out: list[tuple[Any, ...]] = []
    for row in rows:
        values = []
        for index, (name, process) in enumerate(converters):
            value = row[name]
            if process is not None and value is not None:
                if isinstance(value, dict | list):
                    key = (index, id(value))
                    converted = memo.get(key, memo)
                    if converted is memo:
                        converted = memo[key] = process(value)
                    value = converted
                else:
                    value = process(value)
            values.append(value)
        out.append(tuple(values))
    return out


def _column(table: Table, name: str) -> Column[Any]:
    try:
        return table.c[name]
    except KeyError:
        raise ValueError(f"Unknown column '{name}' in table '{table.name}'.") from None


def _check_columns(table: Table, names: Mapping[str, Any] | Sequence[str]) -> None:
    for name in names:
        _column(table, name)


def _condition(table: Table, item: Filter) -> ColumnElement[bool]:
    if isinstance(item, ConditionGroup):
        parts = [_condition(table, sub) for sub in item.conditions]
        if not parts:
            raise ValueError(f"An empty '{item.combinator}' group is ambiguous; leave it out.")
        if item.combinator == "not":
            # NULL counts as false before negating, so NOT over a NULL column is true (not unknown).
            return not_(func.coalesce(and_(*parts), false()))
        return and_(*parts) if item.combinator == "and" else or_(*parts)
    if not isinstance(item, Condition):
        raise TypeError(f"where items must be Where.* conditions, not {type(item).__name__}.")
    col = _column(table, item.column)
    op, value = item.op, item.value
    if op == "eq":
        return col.is_(None) if value is None else col == value
    if op == "ne":
        return col.is_not(None) if value is None else or_(col != value, col.is_(None))
    # Comparisons call the column's operator methods directly: with ``value`` untyped, ``col > value``
    # would also consult ``value``'s reflected operator and lose SQLAlchemy's ColumnElement[bool] type.
    if op == "gt":
        return col.__gt__(value)
    if op == "gte":
        return col.__ge__(value)
    if op == "lt":
        return col.__lt__(value)
    if op == "lte":
        return col.__le__(value)
    if op == "in":
        return col.in_(list(value))
    if op == "not_in":
        return col.not_in(list(value))
    if op == "is_null":
        return col.is_(None)
    if op == "is_not_null":
        return col.is_not(None)
    if op == "like":
        return col.like(value, escape="\\")
    if op == "json_overlaps":
        return _json_overlaps(col, value[0], value[1])
    raise ValueError(f"Unknown operator {op!r}.")


class _JsonOverlaps(ColumnElement[bool]):
    """``col[key]`` (a string or a list of strings) holds one of ``values``; compiled per dialect below.

    PostgreSQL asks JSONB containment (``@>``), which a GIN index on the column can answer; SQLite
    walks the (short) attribute list with ``json_each``. Values always travel as bound parameters.
    """

    inherit_cache = False
    type = Boolean()

    def __init__(self, col: Column[Any], key: str, values: Sequence[str]) -> None:
        self.col = col
        self.key = key
        self.values = list(values)


@compiles(_JsonOverlaps, "postgresql")
def _json_overlaps_pg(element: _JsonOverlaps, compiler: Any, **kw: Any) -> str:
    from sqlalchemy.dialects.postgresql import JSONB

    jsonb = JSONB()
    either = or_(
        *[element.col.op("@>")(literal({element.key: [v]}, type_=jsonb)) for v in element.values],
        *[element.col.op("@>")(literal({element.key: v}, type_=jsonb)) for v in element.values],
    )
    return str(compiler.process(either.self_group(), **kw))


@compiles(_JsonOverlaps)
def _json_overlaps_sqlite(element: _JsonOverlaps, compiler: Any, **kw: Any) -> str:
    each = func.json_each(element.col, literal(f'$."{element.key}"')).table_valued("value")
    found = exists(select(literal(1)).select_from(each).where(each.c.value.in_(element.values)))
    return str(compiler.process(found, **kw))


def _json_overlaps(col: Column[Any], key: str, values: Sequence[str]) -> ColumnElement[bool]:
    return _JsonOverlaps(col, key, values) if values else false()


def _where_columns(where: WhereArg) -> list[str]:
    """Every column a ``where`` mentions (to notice columns added since the table was cached)."""
    if where is None or isinstance(where, str | bytes):
        return []
    if isinstance(where, Mapping):
        return list(where)
    names: list[str] = []
    stack: list[Any] = list(where)
    while stack:
        item = stack.pop()
        if isinstance(item, Condition):
            names.append(item.column)
        elif isinstance(item, ConditionGroup):
            stack.extend(item.conditions)
    return names


def _conditions(table: Table, where: WhereArg) -> list[ColumnElement[bool]]:
    if where is None:
        return []
    if isinstance(where, Mapping):
        return [_condition(table, Condition(col, "eq", value)) for col, value in where.items()]
    if isinstance(where, str | bytes):
        raise TypeError("where must be a mapping or a list of Where.* conditions, not a string.")
    return [_condition(table, item) for item in where]


def _required_conditions(table: Table, where: WhereArg, action: str) -> list[ColumnElement[bool]]:
    conditions = _conditions(table, where)
    if not conditions:
        raise ValueError(f"{action} without a filter would touch every row of '{table.name}'; pass where.")
    return conditions


def _order(table: Table, order_by: OrderBy | None) -> list[ColumnElement[Any]]:
    clauses: list[ColumnElement[Any]] = []
    for name, direction in order_by or ():
        col = _column(table, name)
        if direction == "asc":
            clauses.append(col.asc())
        elif direction == "desc":
            clauses.append(col.desc())
        else:
            raise ValueError(f"Order direction for '{name}' must be 'asc' or 'desc', not {direction!r}.")
    return clauses
