"""System-prompt policies applied server side, where no client can bypass them.

The rendered policy text goes into the prompt the engine receives and nowhere else:
never into a response, an error message or a log line.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import ContextLengthError, InvalidRequestError
from gateway.settings.tenancy import (
    TEMPLATE_VARIABLE,
    PolicyConfig,
    RagPolicyConfig,
    Range,
    TenancyConfig,
)

DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0


@dataclass(frozen=True)
class SamplingRequest:
    """The client's sampling fields that a policy may bound (None: not sent)."""

    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    max_tokens_param: str = "max_tokens"


@dataclass(frozen=True)
class BoundedSampling:
    temperature: float | None
    top_p: float | None
    max_tokens: int | None


class Policy:
    """A tenant's (or alias's) effective policy, built once per config version."""

    def __init__(self, config: PolicyConfig, tenancy: TenancyConfig) -> None:
        self.config = config
        blocks = [tenancy.prompt(ref) for ref in config.prompts or ()]
        if config.system_prompt:
            blocks.append(config.system_prompt)
        self._template = "\n\n".join(blocks) if blocks else None
        self.mode = config.client_system or "keep"
        self.stop = tuple(config.stop or ())
        self.rag: RagPolicyConfig | None = config.rag

    @property
    def has_system_prompt(self) -> bool:
        return self._template is not None

    @property
    def has_sources_slot(self) -> bool:
        """The system prompt places retrieved sources itself, with ``{sources}``."""
        return self._template is not None and "{sources}" in self._template

    def system_text(
        self, *, tenant: str, model: str, sources: str = "", today: dt.date | None = None
    ) -> str | None:
        if self._template is None:
            return None
        values = {
            "tenant": tenant,
            "model": model,
            "sources": sources,
            "date": (today or dt.date.today()).isoformat(),
        }
        return TEMPLATE_VARIABLE.sub(lambda m: values[m.group(1)], self._template)

    def apply_messages(
        self, messages: list[dict[str, str]], system_text: str | None
    ) -> list[dict[str, str]]:
        """Put the policy first; handle client system messages per ``mode``."""
        client_system = [m for m in messages if m["role"] == "system"]
        others = [m for m in messages if m["role"] != "system"]
        if self.mode == "drop":
            kept = others
        elif self.mode == "merge" and system_text is not None:
            merged = "\n\n".join([system_text, *(m["content"] for m in client_system)])
            return [{"role": "system", "content": merged}, *others]
        else:
            kept = messages
        if system_text is None:
            return kept
        return [{"role": "system", "content": system_text}, *kept]

    def bound_sampling(self, request: SamplingRequest) -> BoundedSampling:
        """Refuse values outside the policy (400 naming the field); fill omitted ones."""
        temperature = _bounded(
            "temperature", request.temperature, self.config.temperature, DEFAULT_TEMPERATURE
        )
        top_p = _bounded("top_p", request.top_p, self.config.top_p, DEFAULT_TOP_P)
        cap = self.config.max_tokens
        max_tokens = request.max_tokens
        if cap is not None:
            if max_tokens is not None and max_tokens > cap:
                raise InvalidRequestError(
                    f"{request.max_tokens_param} must be at most {cap} for this model.",
                    param=request.max_tokens_param,
                )
            max_tokens = max_tokens or cap
        return BoundedSampling(temperature, top_p, max_tokens)

    def check_tools(self, names: Sequence[str], param: str = "tools") -> None:
        """Refuse tools this policy forbids, too many of them, or functions it does not
        name (400 naming ``param``)."""
        rules = self.config.tools
        if rules is None or not names:
            return
        if not rules.allowed:
            raise InvalidRequestError(
                "Function tools are not allowed for this model.",
                param=param,
                code="tools_not_allowed",
            )
        if rules.max_tools is not None and len(names) > rules.max_tools:
            raise InvalidRequestError(
                f"At most {rules.max_tools} tools are allowed for this model.", param=param
            )
        if rules.functions is not None:
            for i, name in enumerate(names):
                if name not in rules.functions:
                    raise InvalidRequestError(
                        f"Function '{name}' is not allowed for this model.",
                        param=f"{param}[{i}].function.name",
                        code="tools_not_allowed",
                    )

    def check_prompt_tokens(self, prompt_tokens: int, param: str = "messages") -> None:
        cap = self.config.max_prompt_tokens
        if cap is not None and prompt_tokens > cap:
            raise ContextLengthError(
                f"The prompt has {prompt_tokens} tokens; at most {cap} are allowed.", param=param
            )


def _bounded(name: str, value: float | None, allowed: Range | None, default: float) -> float | None:
    if allowed is None:
        return value
    if value is None:
        low = allowed.min if allowed.min is not None else default
        high = allowed.max if allowed.max is not None else default
        return min(max(default, low), high)
    if not allowed.contains(value):
        raise InvalidRequestError(
            f"{name} must be between {allowed.min} and {allowed.max} for this model.", param=name
        )
    return value
