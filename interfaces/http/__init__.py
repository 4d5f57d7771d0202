"""The HTTP interface: a thin FastAPI layer over the application and its read models."""
