"""Typed resources for Underlay's own APIs, one module per API, each with a sync and an async class."""
