"""OpenAI wire models. Field names match OpenAI's exactly; extensions are few and documented."""
