"""Inference providers laid out by backend: ``inference/<backend>/`` holds one backend's specs and code.

Used where one package declares several provider types from shared data, as the OpenAI-compatible
host presets do (one table, eleven ``remote::`` types); single adapters stay under ``remote/inference``.
"""
