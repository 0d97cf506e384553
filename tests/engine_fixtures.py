"""Fixtures that start the real vLLM engine: once per test session, shared."""
