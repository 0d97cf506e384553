"""Token accounting and finish reasons, shared by chat and completions."""

from __future__ import annotations

from gateway.protocol.common import PromptTokensDetails, Usage


def usage(prompt_tokens: int, completion_tokens: int, cached: int = 0) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )


def finish_reason(reason: str) -> str:
    """vLLM says ``stop`` for EOS and stop strings and ``length`` at max_tokens, as OpenAI."""
    return "length" if reason == "length" else "stop" if reason in ("stop", "eos") else reason
