"""Shipped run configs (distributions)."""
