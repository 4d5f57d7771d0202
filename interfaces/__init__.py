"""Entry points: HTTP API and command line."""
