"""Continuous batching over a ModelRunner. No HTTP, no pydantic: typed records in, typed records out."""
