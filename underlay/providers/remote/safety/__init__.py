"""Safety providers that call other services."""
