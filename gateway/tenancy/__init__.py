"""Tenants: keys, model routing, system-prompt policies, rate limits, usage."""
