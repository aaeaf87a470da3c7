"""Parameter sweeps: every combination of a policy's parameters, run on an executor, with
the Pareto front of p99 event latency against peak queue depth (latency vs memory).

The replay itself is passed in (``replay(label) -> results``, picklable for a process
pool), so this module knows no engine; results are put back in grid order, so the output
does not depend on which run finishes first.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass
from typing import Any


class SweepError(ValueError):
    """A ``--param`` that is not ``key=v1,v2,...``."""


def parse_grid(params: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["event_workers=1,2", "max_queue=8"]`` → ``[("event_workers", ["1", "2"]), ...]``."""
    grid: list[tuple[str, list[str]]] = []
    for text in params:
        key, eq, values = text.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not eq or not key.strip() or not items:
            raise SweepError(f"--param {text!r} is not key=value[,value...]")
        if any(key.strip() == k for k, _ in grid):
            raise SweepError(f"--param {key.strip()!r} given twice")
        grid.append((key.strip(), items))
    return grid


def combinations(policy: str, grid: Sequence[tuple[str, list[str]]]) -> list[str]:
    """Every spec label of the grid, first parameter varying slowest."""
    if not grid:
        return [policy]
    keys = [k for k, _ in grid]
    sep = "," if ":" in policy and "=" in policy.rsplit(":", 1)[1] else ":"
    return [policy + sep + ",".join(f"{k}={v}" for k, v in zip(keys, combo, strict=True))
            for combo in itertools.product(*(values for _, values in grid))]


@dataclass(frozen=True)
class Point:
    label: str
    p99_ms: float | None
    peak_depth: int
    deadlocks: int
    job_timeouts: int
    handled: int
    events: int
    pareto: bool


def run_sweep(labels: Sequence[str], replay: Callable[[str], dict[str, Any]],
              executor: Executor,
              on_done: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run ``replay`` for every label on ``executor``; results in ``labels`` order."""
    futures = {executor.submit(replay, label): i for i, label in enumerate(labels)}
    results: list[dict[str, Any] | None] = [None] * len(labels)
    for future in as_completed(futures):
        results[futures[future]] = future.result()
        if on_done is not None:
            on_done(labels[futures[future]])
    return [r for r in results if r is not None]


def points(labels: Sequence[str], results: Sequence[dict[str, Any]]) -> list[Point]:
    """One point per run; on the Pareto front when no other run is at least as good on
    both p99 event latency and peak queue depth and better on one."""
    raw = [(label, r["event_latency_ms"]["p99"], r["peak_queue_depth"], r)
           for label, r in zip(labels, results, strict=True)]

    def dominated(p99: float | None, depth: int) -> bool:
        if p99 is None:
            return True
        return any(q is not None and q <= p99 and d <= depth and (q < p99 or d < depth)
                   for _, q, d, _ in raw)

    return [Point(label, p99, depth, r["deadlocks"], r["job_timeouts"], r["events_handled"],
                  r["events"], not dominated(p99, depth)) for label, p99, depth, r in raw]


def render_table(pts: Sequence[Point]) -> list[list[str]]:
    """Table rows (header first) for the terminal or a file."""
    from analysis.report import fmt  # pandas, matplotlib: loaded when a sweep shows results

    rows = [["policy", "p99 ms", "peak depth", "deadlocks", "job timeouts", "handled",
             "Pareto"]]
    for p in pts:
        rows.append([p.label, fmt(p.p99_ms), str(p.peak_depth), str(p.deadlocks),
                     str(p.job_timeouts), f"{p.handled}/{p.events}", "*" if p.pareto else ""])
    return rows


def plot(pts: Sequence[Point]) -> str:
    """The Pareto plot as SVG text (runs without handled events are left out)."""
    from analysis.plots import pareto_svg  # matplotlib

    return pareto_svg([(p.label.split(":", 1)[-1], float(p.peak_depth), p.p99_ms, p.pareto)
                       for p in pts if p.p99_ms is not None])
