"""Files providers that store bytes in-process (on the local filesystem)."""
