"""PNG plots of a stepped load test: latency percentiles and throughput vs users."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

if TYPE_CHECKING:
    from loadtests.report import StepStats

Series = tuple[str, Callable[["StepStats"], float | None], str]
TITLE_WIDTH = 95


def _title(kind: str, title: str) -> str:
    return f"{kind}\n{textwrap.shorten(title, TITLE_WIDTH, placeholder=' ...')}"


def _plot_series(axis: Axes, steps: list[StepStats], series: list[Series]) -> None:
    for label, value, style in series:
        points = [(s.users, value(s)) for s in steps if value(s) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            axis.plot(xs, ys, style, label=label)
    axis.set_xticks([s.users for s in steps])
    axis.set_xlabel("concurrent users")
    axis.set_ylim(bottom=0)
    axis.grid(True, alpha=0.3)
    axis.legend(loc="best")


def plot_latency(steps: list[StepStats], path: Path, title: str) -> None:
    """End-to-end p50/p90/p99 and TTFT p50/p99 (ms) against the number of users."""
    figure, (e2e, ttft) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    _plot_series(
        e2e,
        steps,
        [
            ("p50", lambda s: s.p50_ms, "o-"),
            ("p90", lambda s: s.p90_ms, "s-"),
            ("p99", lambda s: s.p99_ms, "^-"),
        ],
    )
    e2e.set_title("End-to-end latency")
    e2e.set_ylabel("milliseconds")
    _plot_series(
        ttft,
        steps,
        [("TTFT p50", lambda s: s.ttft_p50_ms, "o-"), ("TTFT p99", lambda s: s.ttft_p99_ms, "^-")],
    )
    ttft.set_title("Time to first token (streamed requests)")
    ttft.set_ylabel("milliseconds")
    figure.suptitle(_title("Latency vs users", title))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_throughput(steps: list[StepStats], path: Path, title: str) -> None:
    """Requests/s (left axis) and output tokens/s (right axis) against users."""
    figure, requests_axis = plt.subplots(figsize=(8.5, 4.6), constrained_layout=True)
    users = [s.users for s in steps]
    (requests_line,) = requests_axis.plot(
        users, [s.requests_per_s for s in steps], "o-", color="tab:blue", label="requests/s"
    )
    requests_axis.set_ylabel("requests/s", color="tab:blue")
    requests_axis.set_xlabel("concurrent users")
    requests_axis.set_xticks(users)
    requests_axis.set_ylim(bottom=0)
    requests_axis.grid(True, alpha=0.3)
    tokens_axis = requests_axis.twinx()
    (tokens_line,) = tokens_axis.plot(
        users,
        [s.output_tokens_per_s for s in steps],
        "s--",
        color="tab:orange",
        label="output tokens/s",
    )
    tokens_axis.set_ylabel("output tokens/s", color="tab:orange")
    tokens_axis.set_ylim(bottom=0)
    requests_axis.legend(handles=[requests_line, tokens_line], loc="upper left")
    figure.suptitle(_title("Throughput vs users", title))
    figure.savefig(path, dpi=110)
    plt.close(figure)
