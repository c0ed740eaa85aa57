"""Vector-io backends on other services: PostgreSQL with pgvector, Milvus, Qdrant and Chroma servers."""
