"""The reliability scenarios' pieces: pinned tenants, the per-request report."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from loadtests.report_reliability import write_reliability_report
from loadtests.scenario import parse_scenario
from loadtests.stat_names import REQUEST_COLUMNS

SCENARIO: dict[str, Any] = {
    "name": "nn",
    "tenants": [
        {"name": "light", "api_key": "k1", "users": 1},
        {"name": "flood", "api_key": "k2", "users": 3, "start_after_s": 10},
    ],
    "models": {"names": ["m"]},
}


def test_users_are_pinned_to_tenants_by_range():
    scenario = parse_scenario(SCENARIO)
    assert scenario.pinned_users == 4
    names = [scenario.tenant_of_user(k).name for k in range(8)]  # type: ignore[union-attr]
    assert names == ["light", "flood", "flood", "flood"] * 2
    with pytest.raises(ValueError, match="every tenant or to none"):
        parse_scenario({**SCENARIO, "tenants": [SCENARIO["tenants"][0], {"name": "x"}]})


def test_report_compares_the_light_tenant_alone_and_under_load(tmp_path: Path):
    rows: list[tuple[object, ...]] = [(t, "light", 1, "ok", 200, 120.0, 100.0) for t in range(10)]
    rows += [(t, "light", 1, "ok", 200, 170.0, 150.0) for t in range(21, 40)]
    rows += [(t, "flood", 1, "refused", 503, 8.0, "") for t in range(10, 40)]
    with (tmp_path / "u004_requests.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(REQUEST_COLUMNS)
        writer.writerows(rows)
    report = write_reliability_report(tmp_path, parse_scenario(SCENARIO), "t", users=[4])
    assert report is not None
    text = report.read_text()
    assert "| light | 100 | 150 | 1.50x |" in text
    assert "| flood | 30 | 0 | 30 | 0 |" in text
    assert (tmp_path / "reliability_latency.png").stat().st_size > 0
    assert (tmp_path / "reliability_refusals.png").stat().st_size > 0
