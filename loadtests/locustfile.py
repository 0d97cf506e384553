"""Locust users that send a scenario's chat requests and record client-side LLM timings.

Run it headless (``python -m loadtests.run`` does this per user count)::

    python -m locust -f loadtests/locustfile.py --headless -u 4 -r 4 -t 30s \\
        --host http://127.0.0.1:8000 --scenario loadtests/scenarios/demo.yaml

Statistics (see ``loadtests.stat_names``): ``POST /v1/chat/completions`` rows hold the
end-to-end latency and, as "content size", the output tokens of each request; ``TTFT``
and ``TPOT`` rows hold time to first token and time per output token of streamed
requests, in milliseconds.

Locust rewrites its ``<prefix>_stats.csv`` once a second while it runs, so that file
can miss the last second of requests. On quit this file also writes
``<prefix>_summary.csv`` and ``<prefix>_summary_failures.csv`` (the columns of
``_stats.csv`` and ``_failures.csv``) from the final statistics; the report reads them.
Every request is also one row of ``<prefix>_requests.csv`` (seconds since the run
began, tenant, outcome ``ok``/``refused`` (429 or 503)/``failed``, HTTP status,
latency, TTFT): the reliability report reads those.

A scenario whose tenants have ``users`` pins each Locust user to one tenant (user k
of the run to the tenant whose range holds k), with that tenant's think time, from
``start_after_s`` on.
"""

from __future__ import annotations

import csv
import itertools
import os
import random
import time
from functools import lru_cache
from typing import IO, Any

import requests
from locust import User, events, task
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from loadtests.chat_outcome import (
    ChatOutcome,
    http_failure,
    read_completion,
    read_stream,
    split_lines,
)
from loadtests.scenario import Scenario, load_scenario
from loadtests.stat_names import (
    CHAT_NAME,
    CHAT_PATH,
    E2E_TYPE,
    FAILURES_SUFFIX,
    REQUEST_COLUMNS,
    REQUESTS_SUFFIX,
    SUMMARY_SUFFIX,
    TPOT_TYPE,
    TTFT_TYPE,
)
from loadtests.target import require_loopback
from loadtests.workload import PlannedRequest, Workload

SCENARIO_ENV = "LOADTEST_SCENARIO"
REFUSAL_STATUSES = (429, 503)
CLOCK_ZERO_ENV = "LOADTEST_CLOCK_ZERO"
_user_numbers = itertools.count()
# A driver that marks its own events on the requests' time axis (the rolling restart's
# signals) sets the zero: time.monotonic() is one clock for all processes (Linux).
_run_started = float(os.environ.get(CLOCK_ZERO_ENV) or time.monotonic())


class RequestLog:
    """``<prefix>_requests.csv``, one row per request (gevent: one writer at a time)."""

    handle: IO[str] | None = None
    writer: Any = None

    @classmethod
    def open(cls, prefix: str) -> None:
        cls.handle = open(prefix + REQUESTS_SUFFIX, "w", newline="", encoding="utf-8")  # noqa: SIM115
        cls.writer = csv.writer(cls.handle)
        cls.writer.writerow(REQUEST_COLUMNS)

    @classmethod
    def row(cls, *values: Any) -> None:
        if cls.writer is not None:
            cls.writer.writerow(values)

    @classmethod
    def close(cls) -> None:
        if cls.handle is not None:
            cls.handle.close()
            cls.handle = cls.writer = None


class ChatFailure(Exception):
    """A failed chat request; Locust groups failures by this message."""


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any, **_kwargs: Any) -> None:
    parser.add_argument(
        "--scenario",
        type=str,
        env_var=SCENARIO_ENV,
        default="",
        help="Load-test scenario YAML (loadtests/scenarios/demo.yaml)",
    )


@lru_cache(maxsize=4)
def _scenario(path: str) -> Scenario:
    return load_scenario(path)


def _scenario_of(environment: Environment) -> Scenario:
    options = environment.parsed_options
    path = getattr(options, "scenario", "") if options is not None else ""
    if not path:
        raise SystemExit(f"loadtests: give --scenario FILE (or set {SCENARIO_ENV})")
    return _scenario(path)


@events.init.add_listener
def _check_setup(environment: Environment, **_kwargs: Any) -> None:
    """Fail at start-up, not per request, on a bad scenario or a non-loopback host."""
    _scenario_of(environment)
    if environment.host:
        require_loopback(environment.host)
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        RequestLog.open(prefix)

        def write_summary(**_kwargs: Any) -> None:
            _write_summary(environment, prefix)
            RequestLog.close()

        environment.events.quit.add_listener(write_summary)


def _write_summary(environment: Environment, prefix: str) -> None:
    """The final request statistics and failures, in the columns of Locust's own CSVs."""
    tables = StatsCSV(environment, PERCENTILES_TO_REPORT)
    with open(prefix + SUMMARY_SUFFIX, "w", newline="", encoding="utf-8") as handle:
        tables.requests_csv(csv.writer(handle))
    with open(prefix + FAILURES_SUFFIX, "w", newline="", encoding="utf-8") as handle:
        tables.failures_csv(csv.writer(handle))


def _millis(seconds: float) -> float:
    return seconds * 1000.0


class ChatUser(User):
    """A closed-loop caller: send a chat request, read it to the end, think, repeat."""

    def on_start(self) -> None:
        self.scenario = _scenario_of(self.environment)
        if not self.host:
            raise SystemExit("loadtests: give --host URL")
        self.base_url = require_loopback(self.host)
        number = next(_user_numbers)
        scenario = self.scenario
        tenant = scenario.tenant_of_user(number)
        if tenant is not None:  # this user sends only its tenant's requests
            scenario = scenario.model_copy(
                update={"tenants": [tenant], "think_time": tenant.think_time or scenario.think_time}
            )
            time.sleep(tenant.start_after_s)  # gevent-patched: only this user waits
        self.workload = Workload(scenario, random.Random(f"{self.scenario.seed}/{number}"))
        self.session = requests.Session()
        self.last_status = 0

    def on_stop(self) -> None:
        self.session.close()

    def wait_time(self) -> float:
        return self.workload.think_time()

    @task
    def chat(self) -> None:
        planned = self.workload.next_request()
        outcome = self._send(planned)
        context = {"tenant": planned.tenant, "model": planned.model, "stream": planned.stream}
        outcome_name = "ok" if outcome.ok else "failed"
        if self.last_status in REFUSAL_STATUSES:
            outcome_name = "refused"
        RequestLog.row(
            round(time.monotonic() - _run_started - outcome.latency_s, 3),
            planned.tenant,
            int(planned.stream),
            outcome_name,
            self.last_status,
            round(_millis(outcome.latency_s), 2),
            "" if outcome.ttft_s is None else round(_millis(outcome.ttft_s), 2),
        )
        fire = self.environment.events.request.fire
        fire(
            request_type=E2E_TYPE,
            name=CHAT_NAME,
            response_time=_millis(outcome.latency_s),
            response_length=outcome.output_tokens,
            exception=None if outcome.ok else ChatFailure(outcome.error),
            context=context,
        )
        if outcome.ok and outcome.ttft_s is not None:
            fire(
                request_type=TTFT_TYPE,
                name=CHAT_NAME,
                response_time=_millis(outcome.ttft_s),
                response_length=0,
                exception=None,
                context=context,
            )
        if outcome.ok and outcome.tpot_s is not None:
            fire(
                request_type=TPOT_TYPE,
                name=CHAT_NAME,
                response_time=_millis(outcome.tpot_s),
                response_length=0,
                exception=None,
                context=context,
            )

    def _send(self, planned: PlannedRequest) -> ChatOutcome:
        started = time.perf_counter()
        self.last_status = 0
        try:
            with self.session.post(
                self.base_url + CHAT_PATH,
                json=planned.body,
                headers=planned.headers,
                stream=planned.stream,
                timeout=self.scenario.request.timeout_s,
            ) as response:
                self.last_status = response.status_code
                if not 200 <= response.status_code < 300:
                    failure = http_failure(response.status_code, response.content)
                    return ChatOutcome(time.perf_counter() - started, error=failure)
                if planned.stream:
                    # chunk_size=None: hand over each chunk as it arrives (for TTFT).
                    lines = split_lines(response.iter_content(chunk_size=None))
                    return read_stream(lines, started, time.perf_counter)
                return read_completion(response.content, started, time.perf_counter)
        except (requests.RequestException, UnicodeDecodeError) as exc:
            message = f"{type(exc).__name__}: {exc}"[:200]
            return ChatOutcome(time.perf_counter() - started, error=message)
