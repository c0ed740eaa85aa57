"""Routing tables: which provider serves which resource, persisted in the KV store."""
