"""The report's plots as inline SVG: same frames → byte-identical SVG text.

Determinism: a fixed ``svg.hashsalt`` (matplotlib otherwise salts element ids randomly),
no date in the metadata, fixed figure sizes, text kept as text. Long series are
downsampled to a fixed number of points so a flood of events still gives a small page.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import partial
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.frames import Frames  # noqa: E402

SIZE = (8.0, 3.6)
POINTS = 800
RC: dict[str, Any] = {"svg.hashsalt": "qmpreplay", "svg.fonttype": "none", "font.size": 9.0,
      "axes.grid": True, "grid.alpha": 0.3}
MARKERS = {"deadlock": "X", "starvation": "v", "ordering-violation": "o",
           "unbounded-growth": "^", "rare-path": "s", "qemu-no-reply": "D"}


def _svg(draw: Callable[[Axes], None]) -> str:
    with plt.rc_context(RC):  # type: ignore[arg-type]
        fig = Figure(figsize=SIZE)
        ax = fig.subplots()
        draw(ax)
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]  # inline: no XML declaration or doctype


def _cdf(ax: Axes, label: str, values: np.ndarray) -> None:
    """An empirical CDF drawn at ``POINTS`` evenly spaced probabilities (linear quantiles)."""
    probs = np.linspace(0.0, 1.0, min(POINTS, len(values)))
    ax.plot(np.maximum(np.quantile(values, probs, method="linear"), 1e-3), probs,
            label=label, drawstyle="steps-post")


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_yticks([])


def _latency(frames: Frames, ax: Axes) -> None:
    ev = frames.events
    for spec in frames.specs:
        mine = ev[(ev["policy"] == spec) & ev["end_ns"].notna()]
        if len(mine):
            _cdf(ax, spec, ((mine["end_ns"] - mine["arrival_ns"]) / 1e6).to_numpy(float))
    ax.set_xscale("log")
    ax.set_xlabel("event latency, arrival to end of last stage (ms, log)")
    ax.set_ylabel("share of handled events")
    ax.set_title("Event latency CDF")
    ax.legend(loc="lower right")


def _queues(frames: Frames, ax: Axes) -> None:
    q = frames.queues
    for spec in frames.specs:
        mine = q[q["policy"] == spec]
        if not len(mine):
            continue
        deepest = mine.groupby("queue", sort=True)["depth"].max().idxmax()
        series = mine[mine["queue"] == deepest]
        t = series["t_ns"].to_numpy() / 1e9
        d = series["depth"].to_numpy()
        if len(t) > POINTS:  # the max of each of POINTS equal time bins
            bins = np.minimum(((t - t[0]) / max(t[-1] - t[0], 1e-9) * POINTS).astype(int),
                              POINTS - 1)
            d = np.maximum.reduceat(d, np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]]))
            t = np.unique(bins) * (t[-1] - t[0]) / POINTS + t[0]
        ax.plot(t, d, drawstyle="steps-post", label=f"{spec} ({deepest})")
    if not len(q):
        _empty(ax, "no event queue")
    else:
        ax.legend(loc="upper right")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("depth (events)")
    ax.set_title("Depth of each policy's deepest event queue")


def _lock_waits(frames: Frames, ax: Axes) -> None:
    locks = frames.locks
    drawn = False
    for spec in frames.specs:
        waits = locks[(locks["policy"] == spec) & (locks["wait_ns"] > 0)]["wait_ns"]
        if len(waits):
            _cdf(ax, spec, (waits / 1e6).to_numpy(float))
            drawn = True
    if drawn:
        ax.set_xscale("log")
        ax.legend(loc="lower right")
    else:
        _empty(ax, "no contended lock acquisition")
    ax.set_xlabel("wait for a VM mutex or job (ms, log), contended acquisitions")
    ax.set_ylabel("share of waits")
    ax.set_title("Lock wait distribution")


def _findings(frames: Frames, ax: Axes) -> None:
    f = frames.findings
    for kind, marker in MARKERS.items():
        mine = f[f["kind"] == kind]
        if len(mine):
            y = [frames.specs.index(p) for p in mine["policy"]]
            ax.scatter(mine["time_ns"].to_numpy() / 1e9, y, marker=marker, label=kind)
    ax.set_yticks(range(len(frames.specs)), frames.specs)
    ax.set_ylim(-0.5, len(frames.specs) - 0.5)
    if len(f):
        ax.legend(loc="upper right")
    else:
        ax.text(0.5, 0.5, "no findings", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("time (s)")
    ax.set_title("Findings")


#: Plot title → drawing function, in page order.
PLOTS: dict[str, Callable[[Frames, Axes], None]] = {
    "Event latency CDF": _latency,
    "Queue depth over time": _queues,
    "Lock wait distribution": _lock_waits,
    "Findings on a time axis": _findings,
}


def report_plots(frames: Frames) -> dict[str, str]:
    """Every report plot as inline SVG text, by title."""
    return {title: _svg(partial(draw, frames)) for title, draw in PLOTS.items()}


def pareto_svg(points: list[tuple[str, float, float, bool]]) -> str:
    """Sweep plot: (label, peak queue depth, p99 event latency ms, on the Pareto front)."""

    def draw(ax: Axes) -> None:
        front = sorted((x, y) for _, x, y, on in points if on)
        for label, x, y, on in points:
            ax.scatter([x], [y], marker="o" if on else ".", color="C1" if on else "C0")
            ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if front:
            ax.plot(*zip(*front, strict=True), color="C1", drawstyle="steps-post",
                    label="Pareto front")
            ax.legend(loc="upper right")
        ax.set_xlabel("peak queue depth (events)")
        ax.set_ylabel("p99 event latency (ms)")
        ax.set_title("Sweep: latency vs memory")

    return _svg(draw)
