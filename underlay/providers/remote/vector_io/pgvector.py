"""``remote::pgvector``: vector stores in PostgreSQL, with pgvector for vectors and full-text search for BM25.

Layout. A registry table (``underlay_pgvector_indexes``) records each index: its table, dimension,
text-search configuration, and the two corpus statistics BM25 needs (chunk count and total length).
Each index is one table: ``chunk_id`` (primary key), ``document_id``, ``content``, ``attributes`` and
``metadata`` as ``jsonb``, the unit embedding as ``vector(dim)``, a ``tsvector`` of the content and its
length in words. Indexes: ``document_id`` (deletes, exclusion), GIN on the ``tsvector`` (keyword
search), and HNSW with cosine distance on the embedding (unless ``ann: exact`` or the dimension is
over pgvector's HNSW limit of 2,000).

Everything is pushed into PostgreSQL:

- **Filters** become a ``WHERE`` clause over the ``jsonb`` attributes (``filters.to_postgres_where``),
  with exactly the semantics of the Python reference.
- **Vector search** is exact (``ORDER BY`` similarity over the rows that pass the filter) whenever a
  filter is given, because pgvector 0.6's HNSW scan filters *after* collecting ``ef_search``
  candidates and would return fewer than k matches for a selective filter. Without a filter it uses
  HNSW with ``ef_search = max(ef_search, k)``; ``exclude_documents`` is applied to the HNSW
  candidates, and if that leaves fewer than k the query is answered exactly instead.
- **Keyword search** is Okapi BM25 (k1 = 1.2, b = 0.75, the same formula and IDF floor as SQLite
  FTS5's ``bm25()``) computed in SQL: PostgreSQL's text search tokenizes and stems (by default with
  ``underlay_english``, Snowball English stemming that keeps stop words, on accent-folded text), the
  GIN index finds the chunks holding any query term and each term's document frequency, and the term
  frequencies come from the ``tsvector`` positions. ``ts_rank_cd``
  is not used: it has no inverse document frequency, so a rare query word would count no more than a
  common one, and scores would not be comparable with the other backends' BM25.
- **Hybrid** is the shared fusion of the two (``VectorIOBase``).

Writes to one index are serialised by a row lock on its registry row (taken first in every write
transaction), which keeps the BM25 statistics exact and makes concurrent upserts of the same chunk id
safe across workers and replicas.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from underlay.api.errors import (
    InvalidRequestError,
    ProviderError,
    ServiceUnavailableError,
    UnderlayError,
    UpstreamError,
    UpstreamTimeoutError,
)
from underlay.api.vector_io import Chunk, Filter, IndexInfo, ScoredChunk
from underlay.providers.utils.vector.base import (
    VectorIOBase,
    check_chunks,
    dimension_conflict,
    not_found,
    sanitize_index_name,
    validate_dimension,
)
from underlay.providers.utils.vector.filters import to_postgres_where
from underlay.providers.utils.vector.keyword import MAX_QUERY_TERMS, dump_json
from underlay.providers.utils.vector.memindex import unit_vectors
from underlay.providers.utils.vector.textfold import fold_text

REGISTRY = "underlay_pgvector_indexes"
HNSW_MAX_DIMENSION = 2000  # pgvector's limit for HNSW on the ``vector`` type
MAX_EF_SEARCH = 1000  # pgvector's upper bound for hnsw.ef_search
BM25_K1 = 1.2
BM25_B = 0.75
_SCHEMA_LOCK = 0x756E_6465_726C_6179  # advisory lock id ("underlay") for creating the schema
DEFAULT_TS_CONFIG = "underlay_english"

# PostgreSQL's own 'english' drops stop words, so "the" or "is" could never be found; the default
# configuration here stems the same way (Snowball English, close to FTS5's Porter) but keeps every
# word, as the FTS5 keyword index of the other backends does, and lets BM25's IDF weigh them down.
_CREATE_TS_CONFIG = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_ts_dict WHERE dictname = '{DEFAULT_TS_CONFIG}_stem'
                   AND dictnamespace = current_schema()::regnamespace) THEN
        CREATE TEXT SEARCH DICTIONARY {DEFAULT_TS_CONFIG}_stem (TEMPLATE = snowball, LANGUAGE = english);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = '{DEFAULT_TS_CONFIG}'
                   AND cfgnamespace = current_schema()::regnamespace) THEN
        CREATE TEXT SEARCH CONFIGURATION {DEFAULT_TS_CONFIG} (COPY = pg_catalog.english);
        ALTER TEXT SEARCH CONFIGURATION {DEFAULT_TS_CONFIG}
            ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part
            WITH {DEFAULT_TS_CONFIG}_stem;
    END IF;
END
$$
"""


class Config(BaseModel):
    """Where PostgreSQL is and how indexes are built. Give a DSN, or host/port/db/user/password."""

    model_config = ConfigDict(extra="forbid")

    dsn: SecretStr | None = Field(
        default=None,
        description="postgresql://user:password@host:port/db (may name a socket: ?host=/run/postgresql). "
        "Overrides the separate fields.",
    )
    host: str = Field(default="127.0.0.1", description="Host name, or a Unix socket directory (starts with '/').")
    port: int = Field(default=5432, ge=1, le=65535)
    db: str = "underlay"
    user: str = "postgres"
    password: SecretStr | None = None
    socket_dir: str | None = Field(default=None, description="Unix socket directory; overrides host.")
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    connect_timeout: float = Field(default=10.0, gt=0)
    command_timeout: float = Field(default=60.0, gt=0)
    text_search_config: str = Field(
        default=DEFAULT_TS_CONFIG,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$",
        description="PostgreSQL text search configuration for keyword search, fixed per index at creation. "
        f"The default, '{DEFAULT_TS_CONFIG}', is created at start-up: English stemming that keeps stop words.",
    )
    ann: Literal["hnsw", "exact"] = Field(
        default="hnsw", description="'hnsw': an HNSW index for unfiltered vector search; 'exact': always scan."
    )
    hnsw_m: int = Field(default=16, ge=2, le=100)
    hnsw_ef_construction: int = Field(default=64, ge=4, le=1000)
    ef_search: int = Field(
        default=400,
        ge=1,
        le=MAX_EF_SEARCH,
        description="HNSW candidate list size; raised to k when k is larger (100 gave recall@10 0.94 at 100k).",
    )

    @field_validator("password")
    @classmethod
    def _empty_password_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        """``${env.PGPASSWORD:=}`` yields ""; that means "no password" (trust, peer or .pgpass auth)."""
        return value if value is not None and value.get_secret_value() else None

    @model_validator(mode="after")
    def _pool_sizes(self) -> Config:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size must not exceed pool_max_size")
        return self

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.create_pool`` (without the pool sizes)."""
        if self.dsn is not None:
            return {"dsn": self.dsn.get_secret_value()}
        return {
            "host": self.socket_dir or self.host,
            "port": self.port,
            "database": self.db,
            "user": self.user,
            "password": self.password.get_secret_value() if self.password else None,
        }

    def where(self) -> str:
        """Where the server is, for error messages (never the password)."""
        if self.dsn is not None:
            return "the configured DSN"
        return f"{self.socket_dir or self.host}:{self.port}/{self.db}"


def vector_literal(values: Sequence[float]) -> str:
    """pgvector's text form, ``[x,y,...]``; ``repr`` keeps every float32 digit that matters."""
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def tsquery_term(lexeme: str) -> str:
    """One lexeme as a quoted ``tsquery`` operand: taken literally, never parsed as an operator."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Index:
    """An index's registry row: its table (and index names derived from it), dimension and settings."""

    def __init__(self, index_id: str, table: str, dimension: int, ts_config: str) -> None:
        self.index_id = index_id
        self.name = table
        self.table = _quote(table)
        self.dimension = dimension
        self.ts_config = ts_config


_CHUNK_COLUMNS = "c.chunk_id, c.document_id, c.content, c.attributes::text, c.metadata::text"


def _chunk(row: Any) -> Chunk:
    return Chunk.model_construct(
        chunk_id=row[0],
        document_id=row[1],
        content=row[2],
        embedding=None,
        attributes=json.loads(row[3]),
        metadata=json.loads(row[4]),
    )


class PgVectorIO(VectorIOBase):
    """A ``VectorIOProvider`` over PostgreSQL + pgvector through an asyncpg pool."""

    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config
        self._pool: Any = None
        self._indexes: dict[str, _Index] = {}

    # ---- lifecycle --------------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Connect, then create the extension and the registry (once, under an advisory lock)."""
        try:
            import asyncpg
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ProviderError(self.provider_id, "remote::pgvector needs asyncpg: pip install asyncpg") from exc
        try:
            self._pool = await asyncpg.create_pool(
                **self.config.connect_kwargs(),
                min_size=self.config.pool_min_size,
                max_size=self.config.pool_max_size,
                timeout=self.config.connect_timeout,
                command_timeout=self.config.command_timeout,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ServiceUnavailableError(
                self.provider_id, f"cannot connect to PostgreSQL at {self.config.where()}: {exc}"
            ) from exc
        async with self._connection("create the pgvector schema") as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except asyncpg.InsufficientPrivilegeError as exc:
                raise ProviderError(
                    self.provider_id,
                    "the pgvector extension is not installed in this database and this user may not create it; "
                    "ask a superuser to run: CREATE EXTENSION vector",
                ) from exc
            except asyncpg.FeatureNotSupportedError as exc:  # the server has no pgvector files at all
                raise ProviderError(
                    self.provider_id,
                    f"the PostgreSQL server at {self.config.where()} does not have the pgvector extension; "
                    "install pgvector on it (for example the postgresql-NN-pgvector package or the "
                    "pgvector/pgvector image), or use another vector_io provider",
                ) from exc
            if self.config.text_search_config == DEFAULT_TS_CONFIG:
                await conn.execute(_CREATE_TS_CONFIG)
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {REGISTRY} (index_id text PRIMARY KEY, table_name text NOT NULL UNIQUE, "
                "dimension integer NOT NULL, ts_config text NOT NULL, doc_count bigint NOT NULL DEFAULT 0, "
                "total_length bigint NOT NULL DEFAULT 0)"
            )

    async def shutdown(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self, action: str) -> AsyncIterator[Any]:
        """A pooled connection; database failures become the provider errors the API maps to 502/503/504."""
        import asyncpg

        if self._pool is None:
            raise ServiceUnavailableError(self.provider_id, "the provider is not initialized (or was shut down).")
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except UnderlayError:
            raise
        except (TimeoutError, asyncpg.QueryCanceledError) as exc:
            raise UpstreamTimeoutError(self.provider_id, f"PostgreSQL timed out trying to {action}.") from exc
        except (OSError, asyncpg.ConnectionDoesNotExistError, asyncpg.CannotConnectNowError) as exc:
            raise ServiceUnavailableError(
                self.provider_id, f"lost PostgreSQL at {self.config.where()} trying to {action}: {exc}"
            ) from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise UpstreamError(self.provider_id, f"PostgreSQL failed to {action}: {exc}") from exc

    # ---- registry ---------------------------------------------------------------------------------

    async def _lookup(self, conn: Any, index_id: str, *, lock: bool = False) -> _Index:
        row = await conn.fetchrow(
            f"SELECT table_name, dimension, ts_config FROM {REGISTRY} WHERE index_id = $1"
            + (" FOR UPDATE" if lock else ""),
            index_id,
        )
        if row is None:
            self._indexes.pop(index_id, None)
            raise not_found(index_id)
        index = _Index(index_id, row[0], int(row[1]), row[2])
        self._indexes[index_id] = index
        return index

    async def _index(self, conn: Any, index_id: str) -> _Index:
        """The index, from the cache when possible (a dropped table then surfaces as not found)."""
        cached = self._indexes.get(index_id)
        return cached if cached is not None else await self._lookup(conn, index_id)

    async def _index_dimension(self, index_id: str) -> int:
        async with self._connection("look up an index") as conn:
            return (await self._lookup(conn, index_id)).dimension

    async def index_info(self, index_id: str) -> IndexInfo:
        async with self._connection("describe an index") as conn:
            row = await conn.fetchrow(f"SELECT dimension, doc_count FROM {REGISTRY} WHERE index_id = $1", index_id)
        if row is None:
            raise not_found(index_id)
        return IndexInfo(index_id=index_id, dimension=int(row[0]), chunk_count=int(row[1]))

    async def create_index(self, index_id: str, dimension: int) -> None:
        """Create the table and its indexes; again with the same dimension is a no-op, another a conflict."""
        validate_dimension(dimension)
        # Leave room for the "_doc" / "_tsv" / "_hnsw" suffixes of the table's own index names.
        name = sanitize_index_name(index_id, prefix="uv", max_length=57)
        table = _quote(name)
        async with self._connection("create an index") as conn, conn.transaction():
            # Concurrent creators of one id wait here on the primary key until the first commits.
            created = await conn.fetchval(
                f"INSERT INTO {REGISTRY} (index_id, table_name, dimension, ts_config) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (index_id) DO NOTHING RETURNING true",
                index_id,
                name,
                dimension,
                self.config.text_search_config,
            )
            if not created:
                existing = await self._lookup(conn, index_id)
                if existing.dimension != dimension:
                    raise dimension_conflict(index_id, existing.dimension, dimension)
                return
            await conn.execute(
                f"CREATE TABLE {table} (chunk_id text PRIMARY KEY, document_id text NOT NULL, content text NOT NULL, "
                f"attributes jsonb NOT NULL, metadata jsonb NOT NULL, embedding vector({dimension}) NOT NULL, "
                "tsv tsvector NOT NULL, doc_len integer NOT NULL)"
            )
            await conn.execute(f"CREATE INDEX {_quote(name + '_doc')} ON {table} (document_id)")
            await conn.execute(f"CREATE INDEX {_quote(name + '_tsv')} ON {table} USING gin (tsv)")
            if self.config.ann == "hnsw" and dimension <= HNSW_MAX_DIMENSION:
                await conn.execute(
                    f"CREATE INDEX {_quote(name + '_hnsw')} ON {table} USING hnsw (embedding vector_cosine_ops) "
                    f"WITH (m = {self.config.hnsw_m}, ef_construction = {self.config.hnsw_ef_construction})"
                )
        self._indexes[index_id] = _Index(index_id, name, dimension, self.config.text_search_config)

    async def delete_index(self, index_id: str) -> None:
        async with self._connection("delete an index") as conn, conn.transaction():
            index = await self._lookup(conn, index_id, lock=True)
            await conn.execute(f"DROP TABLE IF EXISTS {index.table}")
            await conn.execute(f"DELETE FROM {REGISTRY} WHERE index_id = $1", index_id)
        self._indexes.pop(index_id, None)

    # ---- writes -----------------------------------------------------------------------------------

    async def insert_chunks(self, index_id: str, chunks: list[Chunk]) -> None:
        """Upsert by ``chunk_id`` in one transaction, keeping the BM25 statistics exact."""
        async with self._connection("insert chunks") as conn, conn.transaction():
            index = await self._lookup(conn, index_id, lock=True)
            batch = check_chunks(chunks, index.dimension)
            if not batch:
                return
            _reject_nul(batch)
            vectors = unit_vectors([chunk.embedding or () for chunk in batch], index.dimension)
            ids = [chunk.chunk_id for chunk in batch]
            removed = await conn.fetch(
                f"DELETE FROM {index.table} WHERE chunk_id = ANY($1::text[]) RETURNING doc_len", ids
            )
            added = await conn.fetch(
                f"INSERT INTO {index.table} "
                "(chunk_id, document_id, content, attributes, metadata, embedding, tsv, doc_len) "
                "SELECT r.chunk_id, r.document_id, r.content, r.attributes::jsonb, r.metadata::jsonb, "
                f"r.embedding::vector({index.dimension}), v.tsv, "
                "(SELECT coalesce(sum(cardinality(u.positions)), 0) FROM unnest(v.tsv) AS u)::integer "
                "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $8::text[]) "
                "AS r(chunk_id, document_id, content, attributes, metadata, embedding, folded) "
                "CROSS JOIN LATERAL (SELECT to_tsvector($7::regconfig, r.folded) AS tsv) AS v "
                "RETURNING doc_len",
                ids,
                [chunk.document_id for chunk in batch],
                [chunk.content for chunk in batch],
                [dump_json(chunk.attributes) for chunk in batch],
                [dump_json(chunk.metadata) for chunk in batch],
                [vector_literal(vector) for vector in vectors.tolist()],
                index.ts_config,
                [fold_text(chunk.content) for chunk in batch],
            )
            await self._adjust_stats(
                conn, index_id, len(added) - len(removed), sum(r[0] for r in added) - sum(r[0] for r in removed)
            )

    async def delete_document(self, index_id: str, document_id: str) -> None:
        async with self._connection("delete a document") as conn, conn.transaction():
            index = await self._lookup(conn, index_id, lock=True)
            removed = await conn.fetch(
                f"DELETE FROM {index.table} WHERE document_id = $1 RETURNING doc_len", document_id
            )
            if removed:
                await self._adjust_stats(conn, index_id, -len(removed), -sum(r[0] for r in removed))

    @staticmethod
    async def _adjust_stats(conn: Any, index_id: str, count: int, length: int) -> None:
        await conn.execute(
            f"UPDATE {REGISTRY} SET doc_count = doc_count + $2, total_length = total_length + $3 WHERE index_id = $1",
            index_id,
            count,
            length,
        )

    # ---- searches ---------------------------------------------------------------------------------

    def _where(self, filters: Filter | None, exclude_documents: list[str], first_param: int) -> tuple[str, list[Any]]:
        where, params = to_postgres_where(filters, column="c.attributes", first_param=first_param)
        if exclude_documents:
            where = f"({where}) AND c.document_id <> ALL(${first_param + len(params)}::text[])"
            params = [*params, exclude_documents]
        return where, params

    async def _vector_search(
        self, index_id: str, embedding: list[float], k: int, filters: Filter | None, exclude_documents: list[str]
    ) -> list[ScoredChunk]:
        async with self._connection("search vectors") as conn:
            index = await self._index(conn, index_id)
            query = vector_literal(unit_vectors([embedding], index.dimension)[0].tolist())
            use_hnsw = (
                self.config.ann == "hnsw"
                and index.dimension <= HNSW_MAX_DIMENSION
                and filters is None
                and k <= MAX_EF_SEARCH
            )
            try:
                if use_hnsw:
                    rows = await self._hnsw(conn, index, query, k, exclude_documents)
                    if rows is not None:
                        return rows
                return await self._exact(conn, index, query, k, filters, exclude_documents)
            except _undefined_table() as exc:
                self._indexes.pop(index_id, None)
                raise not_found(index_id) from exc

    async def _exact(
        self, conn: Any, index: _Index, query: str, k: int, filters: Filter | None, exclude_documents: list[str]
    ) -> list[ScoredChunk]:
        """Every row that passes the filter, ranked by similarity: ordering by the score (not the
        distance operator) keeps the planner off the HNSW index, so the answer is exact."""
        where, params = self._where(filters, exclude_documents, first_param=3)
        rows = await conn.fetch(
            f"SELECT {_CHUNK_COLUMNS}, 1 - (c.embedding <=> $1::vector({index.dimension})) AS score "
            f"FROM {index.table} AS c WHERE {where} ORDER BY score DESC, c.chunk_id LIMIT $2",
            query,
            k,
            *params,
        )
        return [ScoredChunk(chunk=_chunk(row), score=float(row[5])) for row in rows]

    async def _hnsw(
        self, conn: Any, index: _Index, query: str, k: int, exclude_documents: list[str]
    ) -> list[ScoredChunk] | None:
        """HNSW top-k, or None when exclusion left fewer than k of its candidates (answer exactly then)."""
        where, params = self._where(None, exclude_documents, first_param=3)
        async with conn.transaction():
            await conn.execute(f"SET LOCAL hnsw.ef_search = {max(self.config.ef_search, k)}")
            rows = await conn.fetch(
                f"SELECT {_CHUNK_COLUMNS}, c.embedding <=> $1::vector({index.dimension}) AS distance "
                f"FROM {index.table} AS c WHERE {where} "
                f"ORDER BY c.embedding <=> $1::vector({index.dimension}) LIMIT $2",
                query,
                k,
                *params,
            )
        if len(rows) < k and exclude_documents:
            return None
        hits = [ScoredChunk(chunk=_chunk(row), score=1.0 - float(row[5])) for row in rows]
        hits.sort(key=lambda hit: (-hit.score, hit.chunk.chunk_id))
        return hits

    async def _keyword_search(
        self, index_id: str, query_text: str, k: int, filters: Filter | None, exclude_documents: list[str]
    ) -> list[ScoredChunk]:
        async with self._connection("search keywords") as conn:
            index = await self._index(conn, index_id)
            lexemes: list[str] = [
                row[0]
                for row in await conn.fetch(
                    "SELECT lexeme FROM unnest(to_tsvector($1::regconfig, $2)) LIMIT $3",
                    index.ts_config,
                    fold_text(query_text),
                    MAX_QUERY_TERMS,
                )
            ]
            if not lexemes:
                return []  # only stop words or punctuation
            terms = [tsquery_term(lexeme) for lexeme in lexemes]
            where, params = self._where(filters, exclude_documents, first_param=5)
            # idf and the BM25 sum follow SQLite FTS5's bm25(): idf = ln((N - n + 0.5) / (n + 0.5)),
            # floored at 1e-6, and tf from the tsvector positions (at most 256 per word). Only the query's
            # words are unnested (setweight marks them, ts_filter keeps them), and only the top k rows
            # are read in full.
            sql = f"""
                WITH terms AS (
                    SELECT t.lexeme, t.q FROM unnest($1::text[], $2::tsquery[]) AS t(lexeme, q)
                ), stats AS MATERIALIZED (
                    SELECT doc_count::float8 AS n,
                           CASE WHEN doc_count > 0 THEN greatest(total_length::float8 / doc_count, 1.0) ELSE 1.0 END
                           AS avgdl
                    FROM {REGISTRY} WHERE index_id = $3
                ), idf AS MATERIALIZED (
                    SELECT terms.lexeme, greatest(ln((s.n - d.df + 0.5) / (d.df + 0.5)), 1e-6) AS idf
                    FROM terms CROSS JOIN stats AS s
                    CROSS JOIN LATERAL (
                        SELECT count(*)::float8 AS df FROM {index.table} AS x WHERE x.tsv @@ terms.q
                    ) AS d
                )
                , scored AS (
                    SELECT c.chunk_id,
                           (SELECT sum(idf.idf * (cardinality(u.positions) * {BM25_K1 + 1})
                                       / (cardinality(u.positions)
                                          + {BM25_K1} * (1 - {BM25_B} + {BM25_B} * c.doc_len / s.avgdl)))
                            FROM unnest(ts_filter(setweight(c.tsv, 'A', $1::text[]), '{{a}}')) AS u
                            JOIN idf ON idf.lexeme = u.lexeme) AS score
                    FROM {index.table} AS c CROSS JOIN stats AS s
                    WHERE c.tsv @@ $4::tsquery AND {where}
                    ORDER BY score DESC, c.chunk_id
                    LIMIT ${5 + len(params)}
                )
                SELECT {_CHUNK_COLUMNS}, scored.score
                FROM scored JOIN {index.table} AS c ON c.chunk_id = scored.chunk_id
                ORDER BY scored.score DESC, c.chunk_id
            """
            try:
                rows = await conn.fetch(sql, lexemes, terms, index_id, " | ".join(terms), *params, k)
            except _undefined_table() as exc:
                self._indexes.pop(index_id, None)
                raise not_found(index_id) from exc
        return [ScoredChunk(chunk=_chunk(row), score=float(row[5])) for row in rows if math.isfinite(float(row[5]))]


def _undefined_table() -> type[Exception]:
    import asyncpg

    return asyncpg.UndefinedTableError


def _reject_nul(chunks: Sequence[Chunk]) -> None:
    """PostgreSQL text and jsonb cannot hold U+0000; say so instead of failing with a driver error."""
    for i, chunk in enumerate(chunks):
        if "\x00" in chunk.content or "\x00" in chunk.document_id or "\x00" in chunk.chunk_id:
            raise InvalidRequestError(
                f"chunks[{i}] contains a NUL character, which PostgreSQL cannot store.", param=f"chunks[{i}]"
            )
        if "\\u0000" in dump_json(chunk.attributes) or "\\u0000" in dump_json(chunk.metadata):
            raise InvalidRequestError(
                f"chunks[{i}] has a NUL character in its attributes or metadata, which PostgreSQL cannot store.",
                param=f"chunks[{i}]",
            )


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> PgVectorIO:
    """The registry's factory; the stack calls ``initialize()`` (which connects) next."""
    return PgVectorIO(provider_id, config)
