"""Files providers that store bytes in another service (S3-compatible object stores)."""
