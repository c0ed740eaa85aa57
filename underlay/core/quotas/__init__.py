"""Per-principal quotas and rate limits, counted atomically in Redis or the KV store."""
