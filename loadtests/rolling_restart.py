"""Zero lost streams in a rolling restart, under real Locust load.

Two real ``loragate serve`` gateways (remote mode, a paced fake replica behind them)
behind a real HAProxy that health-checks ``/ready`` (``loadtests.haproxy_rig``).
Locust (headless, one process, ``loadtests/locustfile.py`` with the scenario's
pinned tenants) streams through HAProxy while each gateway in turn gets SIGTERM,
drains, exits 0, starts again on its port, answers ``/ready`` and is back UP in
HAProxy before the next one goes. Every request must complete or be refused before it
starts; none may be cut mid-stream (``loadtests.report_rolling`` classifies Locust's
per-request records and writes the report)::

    python -m loadtests.rolling_restart --run-time 90s --out loadtest-results/rolling-restart

Exit status 0 when nothing was cut or failed and every gateway exited 0; 1 otherwise.
``--signal KILL`` restarts abruptly instead (no drain): the negative control, which
must fail. Blocking; every process it starts is stopped on the way out.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loadtests.haproxy_rig import GatewayProcess, Rig
from loadtests.paced_target import export_keys
from loadtests.report import step_prefix
from loadtests.report_reliability import Row, read_rows
from loadtests.report_rolling import Restart, verdict, write_report
from loadtests.run import REPO_ROOT, locust_command, parse_duration, run_time_arg
from loadtests.scenario import Scenario, load_scenario
from loadtests.stat_names import REQUESTS_SUFFIX

# Read by loadtests/locustfile.py (importing it here would import Locust, which
# monkey-patches the standard library for gevent).
CLOCK_ZERO_ENV = "LOADTEST_CLOCK_ZERO"
DEFAULT_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "rolling-restart.yaml"
# Locust's own bound, far past any run: the orchestrator ends it with SIGTERM.
LOCUST_SAFETY_S = 3600
LOCUST_GRACE_S = 60
IN_FLIGHT_WAIT_S = 10.0


@dataclass(frozen=True)
class Plan:
    """How one run goes. Times in seconds."""

    warmup_s: float = 5.0  # load before the first restart
    settle_s: float = 2.0  # load after a gateway is back UP, before the next one goes
    min_run_s: float = 0.0  # keep the load at least this long in all
    stop_signal: signal.Signals = signal.SIGTERM
    drain_wait_s: float = 120.0  # for a gateway's exit after the signal
    ready_timeout_s: float = 900.0
    stop_timeout_s: int = 30  # Locust: for requests in flight at the end
    gateways: tuple[int, ...] | None = None  # which to restart, in order (None: all)
    in_flight_at_least: int = 1  # streams on a gateway before its signal (bounded wait)
    bring_back: bool = True  # False: stop only (a short negative control)


@dataclass(frozen=True)
class RunResult:
    rows: list[Row]
    restarts: list[Restart]
    locust_exit: int
    load_s: float
    requests_csv: Path


class _Locust:
    """The Locust process (its requests' ``t_s`` is on the orchestrator's clock)."""

    def __init__(self, scenario_path: Path, url: str, users: int, out: Path, plan: Plan):
        self.zero = time.monotonic()
        self.prefix = out / step_prefix(users)
        Path(f"{self.prefix}{REQUESTS_SUFFIX}").unlink(missing_ok=True)
        command = locust_command(
            scenario=scenario_path,
            url=url,
            users=users,
            spawn_rate=users,
            run_time=f"{LOCUST_SAFETY_S}s",
            stop_timeout=plan.stop_timeout_s,
            prefix=self.prefix,
        )
        paths = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            CLOCK_ZERO_ENV: repr(self.zero),
        }
        with open(f"{self.prefix}.log", "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
            )

    def now(self) -> float:
        return time.monotonic() - self.zero

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"locust exited early ({self.process.returncode}); see its .log")

    def finish(self, timeout: float) -> int:
        """SIGTERM: users finish the request in hand (``--stop-timeout``), files written."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _wait_for_load(rig: Rig, locust: _Locust, requests: int, timeout: float) -> None:
    """Until ``requests`` more requests went through HAProxy: Locust's users are running."""
    before = rig.stats()[0]
    deadline = time.monotonic() + timeout
    while rig.stats()[0] - before < requests:
        locust.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"no Locust load through HAProxy within {timeout:.0f} s")
        time.sleep(0.1)


def _in_flight(gateway: GatewayProcess, locust: _Locust, at_least: int) -> int:
    """Streams mid-body on ``gateway`` (its own metrics), waiting (bounded) until there
    are ``at_least``: the signal then meets answers that have begun. (A stream killed
    before its first token, when a gateway sends its headers, is only re-sent by HAProxy,
    not cut; HAProxy's own counters cannot tell the two apart.)"""
    deadline = time.monotonic() + IN_FLIGHT_WAIT_S
    while True:
        streams = gateway.streams_mid_body()
        if streams >= at_least or time.monotonic() > deadline:
            return streams
        locust.check_alive()
        time.sleep(0.01)


def _restart(rig: Rig, gateway: GatewayProcess, locust: _Locust, plan: Plan) -> Restart:
    # in rotation first: a gateway HAProxy took out (a slow check on a busy machine) has
    # no streams, and signalling it would prove nothing
    rig.wait_up([gateway.name], 60)
    looking_s = locust.now()
    in_flight = _in_flight(gateway, locust, plan.in_flight_at_least)
    signal_s = locust.now()
    code = gateway.stop(plan.stop_signal, plan.drain_wait_s)
    exit_s = ready_s = up_s = locust.now()
    if plan.bring_back:
        gateway.start()
        gateway.wait_ready(plan.ready_timeout_s)
        ready_s = locust.now()
        rig.wait_up([gateway.name], 60)
        up_s = locust.now()
    locust.check_alive()
    back = f"in rotation again after {up_s - signal_s:.1f} s" if plan.bring_back else "left out"
    print(
        f"rolling restart: {gateway.name} {plan.stop_signal.name} with {in_flight} streams"
        f" mid-body (after {signal_s - looking_s:.1f} s waiting for them),"
        f" exit {code} after {exit_s - signal_s:.1f} s, {back}",
        flush=True,
    )
    name = plan.stop_signal.name.removeprefix("SIG")
    return Restart(gateway.name, name, in_flight, signal_s, exit_s, code, ready_s, up_s)


def run_rolling_restart(
    rig: Rig, scenario_path: Path, scenario: Scenario, out: Path, plan: Plan
) -> RunResult:
    """Locust through ``rig`` (started) while its gateways restart one at a time."""
    users = scenario.pinned_users or 8
    locust = _Locust(scenario_path, rig.url, users, out, plan)
    restarts: list[Restart] = []
    try:
        _wait_for_load(rig, locust, users, plan.ready_timeout_s)
        load_began = locust.now()
        time.sleep(plan.warmup_s)
        order = plan.gateways if plan.gateways is not None else range(len(rig.gateways))
        for index in order:
            restarts.append(_restart(rig, rig.gateways[index], locust, plan))
            time.sleep(plan.settle_s)
        while locust.now() - load_began < plan.min_run_s:
            locust.check_alive()
            time.sleep(0.2)
        load_s = locust.now() - load_began
        code = locust.finish(plan.stop_timeout_s + LOCUST_GRACE_S)
    finally:
        locust.kill()
    if code not in (0, 1):  # 1: some requests failed, which the verdict reports
        raise RuntimeError(f"locust failed (exit {code}); see {locust.prefix}.log")
    requests_csv = Path(f"{locust.prefix}{REQUESTS_SUFFIX}")
    return RunResult(read_rows(requests_csv), restarts, code, load_s, requests_csv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.rolling_restart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO)
    parser.add_argument(
        "--run-time", type=run_time_arg, default="60s", help="load in all, at least (e.g. 90s)"
    )
    parser.add_argument("--warmup", type=float, default=10.0, help="s of load before a restart")
    parser.add_argument("--settle", type=float, default=5.0, help="s between two restarts")
    parser.add_argument(
        "--signal",
        choices=["TERM", "KILL"],
        default="TERM",
        help="TERM: graceful drain; KILL: the abrupt negative control (must fail)",
    )
    parser.add_argument("--gateways", type=int, default=2, help="gateways behind HAProxy")
    parser.add_argument("--out", type=Path, default=Path("loadtest-results/rolling-restart"))
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="base model folder (default: the demo's)"
    )
    parser.add_argument("--ready-timeout", type=float, default=900, help="s for a gateway start")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keys = export_keys(args.scenario)  # before Locust starts: it inherits the keys
    scenario = load_scenario(args.scenario)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.model_dir is None:
        from loadtests.run import demo_base_dir

        args.model_dir = demo_base_dir()
    plan = Plan(
        warmup_s=args.warmup,
        settle_s=args.settle,
        min_run_s=parse_duration(args.run_time),
        stop_signal=signal.Signals[f"SIG{args.signal}"],
        ready_timeout_s=args.ready_timeout,
    )
    load_before = os.getloadavg()
    rig = Rig(args.out, args.model_dir, scenario, keys, ready_timeout=args.ready_timeout)
    try:
        rig.start(args.gateways)
        result = run_rolling_restart(rig, args.scenario, scenario, args.out, plan)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"rolling restart: {exc}", file=sys.stderr)
        return 1
    finally:
        rig.stop()
    load_after = os.getloadavg()
    notes = [
        f"scenario `{args.scenario}`: {scenario.pinned_users or 8} Locust users (headless),"
        f" {result.load_s:.0f} s of load; {args.gateways} `loragate serve` gateways (remote"
        " mode, one paced fake replica) behind HAProxy checking `/ready` every 250 ms",
        f"Locust exit code {result.locust_exit} (1 when any request failed or was refused);"
        f" per-request records `{result.requests_csv.name}`",
        "load average (1, 5, 15 min) before "
        + ", ".join(f"{v:.2f}" for v in load_before)
        + "; after "
        + ", ".join(f"{v:.2f}" for v in load_after)
        + f"; {os.cpu_count()} CPUs",
    ]
    tenants = [t.name for t in scenario.tenants]
    report = write_report(args.out, result.rows, result.restarts, tenants, notes)
    print(report.read_text(encoding="utf-8"))
    return 0 if verdict(result.rows, result.restarts).passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
