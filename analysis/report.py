"""The policy diff report: policies side by side, one row per metric, best marked, ratios
to a baseline, findings with their explanations and one summary sentence per policy.

Three renderings of one :class:`Report`: text (80 columns, for e-mail), Markdown (renders
on forges) and a self-contained HTML page with inline SVG plots. Wall-clock timings of
the replay are never printed, so the same run directory gives byte-identical reports.
"""

from __future__ import annotations

import html
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.frames import Frames, load_frames
from analysis.metrics import METRICS, Metric, lock_table, policy_metrics
from analysis.plots import report_plots
from tracer.rundir import read_json

WIDTH = 80
NAME_WIDTH = 23
MAX_FINDINGS = 8  # per policy and kind; the rest are counted
TOP_LOCKS = 5
EXTRA = (Metric("ordering_violations", "ordering violations"),)


@dataclass(frozen=True)
class Row:
    metric: Metric
    values: list[Any]
    best: list[bool]
    ratios: list[float | None]


@dataclass
class Report:
    title: str
    specs: list[str]
    baseline: int
    rows: list[Row]
    summaries: list[str]
    findings: pd.DataFrame
    locks: dict[str, pd.DataFrame]
    frames: Frames


class ReportError(Exception):
    """A run directory or option the report cannot use (one line for the user)."""


def build_report(run_dir: Path, baseline: str | None = None,
                 lock_sort: str = "wait_total") -> Report:
    """Read a run directory and compare its policies against ``baseline`` (a spec)."""
    for name in ("results.json", "tables.json", "timeline.parquet", "events.parquet"):
        if not (run_dir / name).is_file():
            raise ReportError(f"{run_dir}: not a run directory (no {name}; write one with "
                              "qmpreplay replay --out DIR)")
    results = read_json(run_dir / "results.json")
    frames = load_frames(run_dir)
    specs = frames.specs
    if baseline is None:
        base = 0
    elif baseline in specs:
        base = specs.index(baseline)
    else:
        raise ReportError(f"baseline {baseline!r} is not a policy of this run "
                          f"(policies: {', '.join(specs)})")
    per_policy = [policy_metrics(frames, s) | {"ordering_violations": p["ordering_violations"]}
                  for s, p in zip(specs, results["policies"], strict=True)]
    rows = [_row(m, [pm[m.key] for pm in per_policy], base) for m in (*METRICS, *EXTRA)]
    title = (f"Policy diff of {Path(results['session']).name} (seed {results['seed']}, "
             f"cost profile {results['cost_profile']})")
    return Report(title, specs, base, rows,
                  [summary(s, pm, per_policy[base], frames.findings[frames.findings["policy"]
                                                                     == s], base == i)
                   for i, (s, pm) in enumerate(zip(specs, per_policy, strict=True))],
                  frames.findings, {s: lock_table(frames, s, lock_sort) for s in specs}, frames)


def _row(metric: Metric, values: list[Any], base: int) -> Row:
    known = [v for v in values if v is not None]
    best = [False] * len(values)
    if metric.better and len(set(known)) > 1:
        target = min(known) if metric.better == "lower" else max(known)
        best = [v == target for v in values]
    b = values[base]
    ratios = [None if v is None or not b else v / b for v in values]
    return Row(metric, values, best, ratios)


def fmt(v: Any) -> str:
    """A value in at most 7 characters."""
    if v is None:
        return "-"
    if isinstance(v, int):
        return str(v) if abs(v) < 10**7 else f"{v:.2e}"
    if v == 0:
        return "0"
    if abs(v) >= 1e4:
        return f"{v:.0f}" if abs(v) < 1e7 else f"{v:.1e}"
    if abs(v) >= 1:
        return f"{v:.4g}"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.1e}"


def _num(v: Any) -> str:
    """A numpy number of a table cell, formatted as :func:`fmt` does."""
    return fmt(float(v) if isinstance(v, float) else int(v))


def fmt_ratio(r: float | None) -> str:
    """A ratio to the baseline in at most 5 characters."""
    if r is None:
        return ""
    if r < 0.01:
        return "x<.01" if r > 0 else "x0"
    if r < 10:
        return f"x{r:.2g}"
    return f"x{r:.0f}" if r < 10**4 else "x>1e4"


def _spec_params(spec: str) -> dict[str, str]:
    """``k=v`` parameters of a spec as typed (the part after a colon that contains ``=``)."""
    params = {}
    for part in spec.split(":")[1:]:
        if "=" in part:
            for item in part.split(","):
                k, _, v = item.partition("=")
                params[k.strip()] = v.strip()
    return params


def summary(spec: str, m: dict[str, Any], base: dict[str, Any], findings: pd.DataFrame,
            is_base: bool) -> str:
    """One sentence: latency and memory first, then what went wrong, measured."""
    p99 = m["event_p99_ms"]
    head = f"p99 event latency {fmt(p99)} ms"
    if not is_base and p99 is not None and base["event_p99_ms"]:
        head += f" ({fmt_ratio(p99 / base['event_p99_ms'])} the baseline's)"
    bound = _spec_params(spec).get("max_queue")
    head += (f", bounds memory at {bound} events per VM" if bound is not None
             else f", peak queue depth {m['peak_queue_depth']}")
    problems = []
    deadlocks = findings[findings["kind"] == "deadlock"]
    closed = deadlocks[deadlocks["phase"] == "closed"]
    if len(closed):
        broken = deadlocks[deadlocks["phase"] == "broken"]
        until = (f" until a timeout broke it after "
                 f"{fmt((broken['time_ns'].max() - closed['time_ns'].min()) / 1e9)} s"
                 if len(broken) else " (never broken)")
        problems.append(f"deadlocked {len(closed)}x{until}")
    other_timeouts = m["job_timeouts"] - len(closed)
    if other_timeouts > 0:
        problems.append(f"{other_timeouts} job timeout(s)")
    starved = findings[findings["kind"] == "starvation"]["detail"]
    for who in ("event handler", "RPC"):
        n = int(starved.str.endswith(f"waiter: {who}").sum())
        if n:
            problems.append(f"starved {n} {who} job wait(s)")
    if m["findings_unbounded-growth"]:
        problems.append("grew a queue without bound")
    if m["ordering_violations"]:
        problems.append(f"{m['ordering_violations']} ordering violation(s)")
    if m["events_dropped"]:
        problems.append(f"dropped {m['events_dropped']} event(s)")
    if m["events_pending"]:
        problems.append(f"left {m['events_pending']} event(s) pending")
    tail = " but " + ", ".join(problems) if problems else " with no findings"
    return f"{spec}: {head}{tail}."


# -- text ----------------------------------------------------------------------------------

def _legend(report: Report) -> list[str]:
    return [f"  [{i + 1}] {s}" + (" (baseline)" if i == report.baseline else "")
            for i, s in enumerate(report.specs)]


def _header(i: int, spec: str, width: int) -> str:
    return spec if len(spec) <= width else f"[{i + 1}]"


def _finding_lines(report: Report) -> list[tuple[str, list[str]]]:
    """Per policy: one line per finding (at most MAX_FINDINGS per kind, then a count)."""
    out = []
    f = report.findings
    for spec in report.specs:
        lines = []
        mine = f[f["policy"] == spec]
        for kind, group in mine.groupby("kind", sort=False):
            for _, r in group.head(MAX_FINDINGS).iterrows():
                phase = f" ({r['phase']})" if isinstance(r["phase"], str) else ""
                where = ", ".join(x for x in (r["vms"], r["threads"]) if x)
                lines.append(f"{kind}{phase} at {r['time_ns'] / 1e9:.6f} s"
                             f"{' on ' + where if where else ''}: {r['detail']}")
            if len(group) > MAX_FINDINGS:
                lines.append(f"... and {len(group) - MAX_FINDINGS} more {kind} findings")
        out.append((spec, lines))
    return out


def render_text(report: Report) -> str:
    n = len(report.specs)
    per_block = max(1, min(4, n))
    cell = (WIDTH - NAME_WIDTH - 1) // per_block
    out = [report.title[:WIDTH], "", "policies:", *_legend(report),
           "* best (lower is better; + rows: higher is better); xR: ratio to the baseline",
           ""]
    for start in range(0, n, per_block):
        cols = range(start, min(n, start + per_block))
        out.append("metric".ljust(NAME_WIDTH) + "".join(
            _header(i, report.specs[i], cell - 1).rjust(cell) for i in cols))
        out.append("-" * (NAME_WIDTH + cell * len(cols)))
        for row in report.rows:
            label = row.metric.label + (" +" if row.metric.better == "higher" else "")
            cells = []
            for i in cols:
                ratio = "" if i == report.baseline else fmt_ratio(row.ratios[i])
                text = f"{fmt(row.values[i])} {ratio}".rstrip() + ("*" if row.best[i] else " ")
                cells.append(text.rjust(cell))
            out.append(label.ljust(NAME_WIDTH)[:NAME_WIDTH] + "".join(cells))
        out.append("")
    out.append("summary")
    for s in report.summaries:
        out += textwrap.wrap(s, WIDTH, initial_indent="  ", subsequent_indent="    ")
    out += ["", "findings"]
    for spec, lines in _finding_lines(report):
        out.append(f"  {spec}: {'none' if not lines else ''}".rstrip())
        for line in lines:
            out += textwrap.wrap(line, WIDTH, initial_indent="    ", subsequent_indent="      ")
    out += ["", f"locks (top {TOP_LOCKS} per policy; times in ms)"]
    lock_cols = ["acquired", "contended", "wait_total", "wait_avg", "wait_max", "hold_total",
            "hold_max"]
    heads = ["acq", "cont", "wait tot", "wait avg", "wait max", "hold tot", "hold max"]
    for spec in report.specs:
        table = report.locks[spec].head(TOP_LOCKS)
        out.append(f"  {spec}:" + (" none" if not len(table) else ""))
        if len(table):
            out.append("    " + "lock".ljust(13) + "".join(h.rjust(9) for h in heads))
            for _, r in table.iterrows():
                out.append("    " + str(r["lock"])[:12].ljust(13)
                           + "".join(_num(r[c]).rjust(9) for c in lock_cols))
    return "\n".join(line.rstrip() for line in out) + "\n"


# -- Markdown ------------------------------------------------------------------------------

def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_md(report: Report) -> str:
    out = [f"# {report.title}", "",
           f"Baseline: `{report.specs[report.baseline]}`. **Bold**: best (lower is better, "
           "except rows marked ↑). (×R): ratio to the baseline.", "",
           "| metric | " + " | ".join(f"`{_md_escape(s)}`" for s in report.specs) + " |",
           "|---|" + "---:|" * len(report.specs)]
    for row in report.rows:
        cells = []
        for i, v in enumerate(row.values):
            text = fmt(v)
            if i != report.baseline and row.ratios[i] is not None:
                text += f" ({fmt_ratio(row.ratios[i]).replace('x', '×', 1)})"
            cells.append(f"**{text}**" if row.best[i] else text)
        label = row.metric.label + (" ↑" if row.metric.better == "higher" else "")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", "## Summary", ""] + [f"- {_md_escape(s)}" for s in report.summaries]
    out += ["", "## Findings", ""]
    for spec, lines in _finding_lines(report):
        out.append(f"- `{spec}`: " + ("none" if not lines else ""))
        out += [f"  - {line}" for line in lines]
    out += ["", "## Locks", "", f"Top {TOP_LOCKS} per policy by total wait; times in ms.", ""]
    for spec in report.specs:
        out += [f"### `{spec}`", "", _md_table(report.locks[spec].head(TOP_LOCKS)), ""]
    return "\n".join(out).rstrip() + "\n"


def _md_table(df: pd.DataFrame) -> str:
    if not len(df):
        return "none"
    lines = ["| " + " | ".join(df.columns) + " |", "|---|" + "---:|" * (len(df.columns) - 1)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(
            v if isinstance(v, str) else _num(v) for v in r) + " |")
    return "\n".join(lines)


# -- HTML ----------------------------------------------------------------------------------

CSS = """body{font-family:sans-serif;max-width:60em;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.15em .6em;border-bottom:1px solid #ddd}
td.n{text-align:right;font-variant-numeric:tabular-nums}td.best{font-weight:bold;background:#e6f4ea}
.r{color:#777;font-size:85%}figure{margin:1em 0}svg{max-width:100%;height:auto}"""


def render_html(report: Report) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(report.title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{e(report.title)}</h1>",
           f"<p>Baseline: <code>{e(report.specs[report.baseline])}</code>. Best values are "
           "highlighted (lower is better, except rows marked ↑); grey: ratio to the "
           "baseline.</p>", "<table><thead><tr><th>metric</th>"
           + "".join(f"<th>{e(s)}</th>" for s in report.specs) + "</tr></thead><tbody>"]
    for row in report.rows:
        cells = []
        for i, v in enumerate(row.values):
            ratio = ("" if i == report.baseline or row.ratios[i] is None
                     else f' <span class="r">{e(fmt_ratio(row.ratios[i]))}</span>')
            cls = "n best" if row.best[i] else "n"
            cells.append(f'<td class="{cls}">{e(fmt(v))}{ratio}</td>')
        label = row.metric.label + (" ↑" if row.metric.better == "higher" else "")
        out.append(f"<tr><td>{e(label)}</td>{''.join(cells)}</tr>")
    out.append("</tbody></table><h2>Summary</h2><ul>")
    out += [f"<li>{e(s)}</li>" for s in report.summaries]
    out.append("</ul><h2>Plots</h2>")
    for title, svg in report_plots(report.frames).items():
        out.append(f"<figure><figcaption>{e(title)}</figcaption>{svg}</figure>")
    out.append("<h2>Findings</h2><ul>")
    for spec, lines in _finding_lines(report):
        out.append(f"<li><code>{e(spec)}</code>: " + ("none" if not lines else "<ul>"
                   + "".join(f"<li>{e(x)}</li>" for x in lines) + "</ul>") + "</li>")
    out.append(f"</ul><h2>Locks</h2><p>Top {TOP_LOCKS} per policy by total wait; times in "
               "ms.</p>")
    for spec in report.specs:
        table = report.locks[spec].head(TOP_LOCKS)
        out.append(f"<h3><code>{e(spec)}</code></h3>")
        if not len(table):
            out.append("<p>none</p>")
            continue
        out.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in table.columns) + "</tr>")
        for _, r in table.iterrows():
            out.append("<tr>" + "".join(
                f"<td>{e(v)}</td>" if isinstance(v, str)
                else f'<td class="n">{e(_num(v))}</td>'
                for v in r) + "</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


RENDERERS = {"text": render_text, "md": render_md, "html": render_html}
