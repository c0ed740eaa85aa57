"""Shared building blocks for vector-io backends.

- ``filters``: the reference semantics of attribute filters and their SQLite / PostgreSQL translations.
- ``fusion``: reciprocal-rank and weighted fusion for hybrid search.
- ``keyword``: BM25 on SQLite FTS5, as a chunk table inside a backend's database or standalone.
- ``base``: validation, index-name sanitising and mode dispatch (``VectorIOBase``).
- ``memindex`` / ``sqlite_backend``: the engine of the embedded backends (SQLite as the source of truth,
  vectors searched in memory).
"""
