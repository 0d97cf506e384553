"""The comparison's figures (matplotlib, Agg backend: no display needed):

- ``quality_latency.png``: fact accuracy (circles) and style adherence (squares)
  against end-to-end latency p50, one colour per variant;
- ``by_language.png``: fact accuracy and style adherence per language, one bar per
  variant.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend

from gateway.compare.report import Report

QUALITY_LATENCY_PNG = "quality_latency.png"
BY_LANGUAGE_PNG = "by_language.png"


def _num(v: float | None) -> float:
    return float("nan") if v is None else v


def quality_latency(report: Report, path: Path) -> Path:
    """One colour per variant (legend); circles: fact accuracy, squares: style."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(report.names):
        row = report.overall[name]
        x = _num(row["latency_p50"])
        colour = colours[i % len(colours)]
        ax.scatter([x], [_num(row["fact_accuracy"]) * 100], marker="o", s=70, color=colour,
                   label=name)  # fmt: skip
        ax.scatter([x], [_num(row["style_adherence"]) * 100], marker="s", s=45, color=colour,
                   facecolors="none")  # fmt: skip
    ax.set_xlabel("end-to-end latency p50 (s)")
    ax.set_ylabel("% of items (o fact accuracy, \u25a1 style adherence)")
    ax.set_ylim(-5, 105)
    ax.set_title("Quality against latency, one colour per variant")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def by_language(report: Report, path: Path) -> Path:
    langs = report.languages
    names = report.names
    keys = [("fact_accuracy", "Fact accuracy"), ("style_adherence", "Style adherence")]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys) + 1, 4), sharey=True)
    width = 0.8 / max(1, len(names))
    for ax, (key, title) in zip(axes, keys, strict=True):
        for i, name in enumerate(names):
            heights = [_num(report.by_language[name][lang][key]) * 100 for lang in langs]
            xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(langs))]
            ax.bar(xs, [0 if math.isnan(h) else h for h in heights], width, label=name)
        ax.set_xticks(range(len(langs)), langs)
        ax.set_title(title)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("% of items")
    axes[-1].legend(fontsize="small", loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(report: Report, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [
        quality_latency(report, out / QUALITY_LATENCY_PNG),
        by_language(report, out / BY_LANGUAGE_PNG),
    ]
