"""Zero lost streams in a rolling restart, under real Locust load: two real ``loragate
serve`` gateways (remote mode, a paced fake replica behind them) behind a real HAProxy
health-checking ``/ready``; headless Locust (the shipped rolling-restart scenario)
streams through HAProxy while each gateway in turn gets SIGTERM, drains, exits 0 and
comes back. Every request completes or is refused before it starts.

The negative control restarts a gateway with SIGKILL instead (no drain): the same
check must then see streams cut mid-way, so it can fail."""

from __future__ import annotations

import shutil
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.settings.keys import generate_key
from loadtests.haproxy_rig import Rig, mid_body, parse_stats
from loadtests.paced_target import export_keys
from loadtests.report_reliability import Row
from loadtests.report_rolling import Restart, classify, verdict, write_report
from loadtests.rolling_restart import (
    CLOCK_ZERO_ENV,
    DEFAULT_SCENARIO,
    Plan,
    RunResult,
    run_rolling_restart,
)
from loadtests.scenario import load_scenario
from tests.conftest import FakeKit

needs_haproxy = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")


def row(t: float, outcome: str, status: int, stream: bool = True, tenant: str = "acme") -> Row:
    return Row(t, tenant, stream, outcome, status, 500.0, 50.0 if outcome == "ok" else None)


def restart(code: int = 0) -> Restart:
    return Restart("g0", "TERM", 2, 5.0, 5.5, code, 8.0, 8.5)


def test_requests_are_classified_by_when_they_failed():
    assert classify(row(1, "ok", 200)) == "completed"
    assert classify(row(1, "refused", 503)) == "refused"
    assert classify(row(1, "refused", 429)) == "refused"
    assert classify(row(1, "failed", 200)) == "cut"  # began, then error event / no [DONE]
    assert classify(row(1, "failed", 0)) == "failed"  # no answer at all
    assert classify(row(1, "failed", 502)) == "failed"
    assert classify(row(1, "failed", 200, stream=False)) == "failed"


def test_verdict_passes_only_without_cut_or_failed_requests_and_with_clean_exits():
    fine = [row(1, "ok", 200), row(2, "refused", 503)]
    assert verdict(fine, [restart()]).passed
    assert not verdict([*fine, row(3, "failed", 200)], [restart()]).passed
    assert not verdict([*fine, row(3, "failed", 502)], [restart()]).passed
    assert not verdict(fine, [restart(-9)]).passed
    assert not verdict([row(2, "refused", 503)], [restart()]).passed  # nothing completed


def test_report_counts_per_tenant_and_restart_window(tmp_path: Path):
    rows = [row(1, "ok", 200), row(6, "ok", 200, tenant="globex"), row(7, "failed", 200)]
    report = write_report(tmp_path, rows, [restart()], ["acme", "globex"], ["a note"])
    text = report.read_text(encoding="utf-8")
    assert "**FAIL: 2 completed, 0 refused before start, 1 cut mid-stream" in text
    assert "| all | 3 | 2 | 0 | 1 | 0 |" in text
    assert "| g0 | SIGTERM at 5.0 s | 2 | 0.5 | 0 | 3.0 | 3.5 | 2 | 1 |" in text
    assert (tmp_path / "rolling-restart.png").stat().st_size > 10_000


def test_haproxy_stats_csv_is_read_by_column_name():
    text = (
        "# pxname,svname,scur,bout,status,req_tot,\n"
        "loragate,FRONTEND,3,900,OPEN,120,\n"
        "gateways,g0,2,500,UP,,\n"
        "gateways,g1,0,400,DOWN,,\n"
        "gateways,BACKEND,2,900,UP,,\n"
    )
    requests, servers = parse_stats(text)
    assert requests == 120
    assert servers["g0"].current == 2 and servers["g0"].status == "UP"
    assert servers["g1"].status == "DOWN" and set(servers) == {"g0", "g1"}


def test_streams_mid_body_are_first_tokens_less_answers_done():
    from gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics(also_render=None)
    for tenant in ("acme", "acme", "globex"):  # three streams sent their first token
        metrics.first_token(metrics.series(tenant=tenant, adapter=None), 0.05)
    for tenant, status in (("acme", 200), ("globex", 429)):  # one ended; one refused
        metrics.request_done(
            tenant=tenant,
            model="paced-base",
            adapter=None,
            endpoint="chat",
            status=status,
            duration=0.5,
        )

    assert mid_body(metrics.render().decode()) == 2


def test_locustfile_reads_the_clock_zero_the_orchestrator_sets():
    # Not imported: importing Locust monkey-patches the standard library.
    text = (Path(__file__).parent.parent / "loadtests" / "locustfile.py").read_text("utf-8")
    assert f'"{CLOCK_ZERO_ENV}"' in text


@pytest.fixture(scope="module")
def rig(fake_kit: FakeKit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    workdir = tmp_path_factory.mktemp("rolling-restart")
    with pytest.MonkeyPatch.context() as patch:
        # Keys for the scenario's tenants, for the gateways' config and Locust (inherited).
        for var in ("LOADTEST_KEY_ACME", "LOADTEST_KEY_GLOBEX"):
            patch.setenv(var, generate_key().key)
        keys = export_keys(DEFAULT_SCENARIO)
        rig = Rig(workdir, fake_kit.base, load_scenario(DEFAULT_SCENARIO), keys, ready_timeout=300)
        try:
            rig.start(2)
            yield rig
        finally:
            rig.stop()


def run(rig: Rig, plan: Plan, out: Path) -> tuple[RunResult, Counter[str]]:
    result = run_rolling_restart(rig, DEFAULT_SCENARIO, rig.scenario, out, plan)
    counts = Counter(classify(r) for r in result.rows)
    print(dict(counts), result.restarts)
    return result, counts


@pytest.mark.system  # gateway processes, HAProxy and Locust
@needs_haproxy
def test_rolling_restart_under_locust_loses_no_stream(rig: Rig, tmp_path: Path):
    result, counts = run(rig, Plan(warmup_s=1, settle_s=1, stop_timeout_s=10), tmp_path)
    assert counts["cut"] == 0 and counts["failed"] == 0, counts
    assert counts["completed"] > 20
    assert [r.exit_code for r in result.restarts] == [0, 0]
    assert all(r.in_flight > 0 for r in result.restarts)  # each drain had streams to finish
    for r in result.restarts:  # the load went on through each restart
        assert any(r.signal_s <= x.t <= r.up_s and x.outcome == "ok" for x in result.rows)
    assert verdict(result.rows, result.restarts).passed


@pytest.mark.system  # gateway processes, HAProxy and Locust
@needs_haproxy
def test_abrupt_kill_instead_of_drain_is_caught(rig: Rig, tmp_path: Path):
    # Last in the module: g0 is not brought back (saves a gateway start). The signal
    # waits for streams mid-body on g0 (a stream killed before its first token, when
    # the gateway sends its headers, is re-sent by HAProxy: not cut).
    plan = Plan(
        warmup_s=1,
        settle_s=2,
        stop_signal=signal.SIGKILL,
        gateways=(0,),
        in_flight_at_least=3,
        bring_back=False,
    )
    result, counts = run(rig, plan, tmp_path)
    assert [r.exit_code for r in result.restarts] == [-signal.SIGKILL]
    assert counts["cut"] >= 1, (counts, result.restarts)
    assert not verdict(result.rows, result.restarts).passed
