"""Underlay: an open, run-anywhere API server for AI agents."""

__version__ = "0.1.0"
