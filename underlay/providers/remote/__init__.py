"""Underlay package."""
