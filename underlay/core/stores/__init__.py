"""Stores for user-owned rows in the SQL store; each filters by the access policy inside its queries."""
