"""Adapters to PostgreSQL, bcrypt, JWT and the process environment."""
