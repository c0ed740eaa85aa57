"""Stores for user-owned rows in the SQL store; each filters by owner inside its queries."""
