"""Routers: the thin layer between the server routes and the providers."""
