"""Plain-text tables for the benchmark output."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a Markdown table (readable in a terminal, pasteable into the README)."""
    cells = [[_format(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")


def percentiles_ms(seconds: Sequence[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    values = np.asarray(seconds) * 1000.0
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def _format(value: object) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)
