"""``qmpreplay scenarios`` (the verdict table: one row per scenario and policy) and
``qmpreplay sweep``: the commands that run many replays and judge or compare them."""

from __future__ import annotations

import os
import sys
import tempfile
from concurrent.futures import Executor, ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from analysis.sweep import (
    SweepError,
    combinations,
    parse_grid,
    plot,
    points,
    render_table,
    run_sweep,
)
from analysis.verdicts import JUDGES, POLICIES, Case, Verdict, judge
from replay.cli_replay import UserError, parse_specs, replay_session
from replay.scenarios import SCENARIOS
from tracer.cli_common import fail
from tracer.defaults import default_session
from tracer.session import SessionError

#: Smaller fleet for the verdict table (the full default takes minutes per policy).
TABLE_OVERRIDES: dict[str, dict[str, str]] = {"fleet": {"vms": "100", "duration_s": "10"}}


def scenario_specs(name: str) -> list[str]:
    """The four policies, with the scenario's own pool spec and variant ."""
    extra = SCENARIOS[name].extra
    specs = [extra.get("pool", "pool") if p == "pool" else p for p in POLICIES]
    if "variant" in extra:
        specs += [f"{s}{',' if ':' in s else ':'}{extra['variant']}" for s in specs]
    return specs


def scenario_verdicts(name: str, overrides: dict[str, str], seed: int) -> list[Verdict]:
    """Generate a scenario's session, replay it under its policies and judge each run.

    A top-level function so that a process pool can run scenarios side by side."""
    scenario = SCENARIOS[name]
    params = scenario.params(overrides)
    specs = parse_specs(scenario_specs(name))
    with tempfile.TemporaryDirectory(prefix="qmpreplay-") as tmp:
        session = Path(tmp) / f"{name}.qmp.jsonl"
        scenario.write(session, params, seed)
        results = replay_session(session, specs, seed=seed)
    out = []
    for spec, result in zip(specs, results["policies"], strict=True):
        case = Case(name, spec.label.split(":", 1)[0], spec.label, params,
                    {**spec.common, **spec.own})
        out.append(judge(case, result))
    return out


def replay_label(session: Path, seed: int, cost_profile: str, label: str) -> dict[str, Any]:
    """One sweep point: the results of ``label`` on ``session`` (top level: picklable)."""
    return replay_session(session, parse_specs([label]), seed=seed,
                          cost_profile=cost_profile)["policies"][0]


def _progress(console: Console, show: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, disable=not show, transient=True)


def _executor(jobs: int) -> Executor:
    return ProcessPoolExecutor(max_workers=jobs)


JUDGED = ", ".join(JUDGES)


def register(app: typer.Typer) -> None:

    @app.command("scenarios")
    def scenarios_cmd(
        only: Annotated[list[str] | None, typer.Option(
            "--only", help=f"Run only this scenario (repeatable): {JUDGED}.",
            show_default=False)] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
        output: Annotated[Path | None, typer.Option(
            "-o", "--output", help="Also write the table as JSON to this file.",
            show_default=False)] = None,
        seed: Annotated[int, typer.Option(help="Seed of the generators and the runs.")] = 0,
        jobs: Annotated[int, typer.Option(
            "--jobs", "-j", help="Scenarios replayed in parallel (default: CPU count).",
            show_default=False)] = 0,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Replay every built-in scenario under the four policies and judge each claim.

        Prints claim, expected, observed and pass/fail per scenario × policy; exit status
        1 when a verdict fails. [bold]fleet[/] runs smaller here (vms=100, duration_s=10).

        Example: [bold]qmpreplay scenarios --only hol-blocking --only rpc-storm[/]
        """
        chosen = list(dict.fromkeys(only or JUDGES))
        unknown = [n for n in chosen if n not in JUDGES]
        if unknown:
            fail(f"unknown scenario {unknown[0]!r} (known: {JUDGED})")
        console = Console(stderr=True)
        verdicts: dict[str, list[Verdict]] = {}
        workers = max(1, min(len(chosen), jobs or os.cpu_count() or 1))
        with _progress(console, not (quiet or as_json) and console.is_terminal) as bar, \
                _executor(workers) as pool:
            task = bar.add_task("scenarios", total=len(chosen))
            futures = {n: pool.submit(scenario_verdicts, n, TABLE_OVERRIDES.get(n, {}), seed)
                       for n in chosen}
            for name in chosen:  # collected in table order: output is independent of timing
                verdicts[name] = futures[name].result()
                bar.advance(task)
        rows = [v for n in chosen for v in verdicts[n]]
        doc = {"scenarios": [v.to_json() for v in rows]}
        if output is not None:
            output.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        if as_json:
            typer.echo(orjson.dumps(doc).decode())
        else:
            table = Table(title="Scenario verdicts" + (
                " (fleet: vms=100, duration_s=10)" if "fleet" in chosen else ""))
            for col in ("scenario / claim", "policy", "expected", "observed", "verdict"):
                table.add_column(col)
            for name in chosen:
                for i, v in enumerate(verdicts[name]):
                    first = f"[bold]{name}[/]\n{SCENARIOS[name].claim}" if i == 0 else ""
                    table.add_row(first, v.policy, v.expected, v.observed,
                                  "[green]pass[/]" if v.passed else "[red]FAIL[/]",
                                  end_section=i == len(verdicts[name]) - 1)
            Console(width=max(120, Console().width)).print(table)
        failed = [v for v in rows if not v.passed]
        if failed:
            for v in failed:
                typer.echo(f"FAIL {v.scenario} {v.policy}: expected {v.expected}; observed "
                           f"{v.observed}", err=True)
            raise typer.Exit(1)

    @app.command("sweep")
    def sweep_cmd(
        session: Annotated[Path | None, typer.Argument(
            help="Session file; default: the first session in [bold]traces/[/].",
            show_default=False)] = None,
        policy: Annotated[str, typer.Option(
            "--policy", "-p", help="Policy spec the parameters are added to.")] = "pool",
        param: Annotated[list[str] | None, typer.Option(
            "--param", help="A parameter and its values: key=v1,v2,... (repeatable).",
            show_default=False)] = None,
        output: Annotated[Path | None, typer.Option(
            "-o", "--output", help="Pareto plot to write (SVG).", show_default=False)] = None,
        jobs: Annotated[int, typer.Option(
            "--jobs", "-j", help="Replays in parallel (default: CPU count).",
            show_default=False)] = 0,
        seed: Annotated[int, typer.Option(help="Seed of each run's RNG.")] = 0,
        cost_profile: Annotated[str, typer.Option(help="Cost profile.")] = "default",
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Replay a session under every combination of policy parameters and show which
        combinations are Pareto-optimal in p99 event latency vs peak queue depth.

        Example: [bold]qmpreplay sweep --policy pool --param event_workers=1,2,4,8
        --param max_queue=8,64,512 -o pareto.svg[/]
        """
        try:
            path = session if session is not None else default_session()
            if not path.is_file():
                raise UserError(f"{path}: no such session file")
            labels = combinations(policy, parse_grid(param or []))
            parse_specs(labels)
        except (SessionError, UserError, SweepError) as exc:
            fail(str(exc))
        console = Console(stderr=True)
        workers = max(1, min(len(labels), jobs or os.cpu_count() or 1))
        with _progress(console, not (quiet or as_json) and console.is_terminal) as bar, \
                _executor(workers) as pool:
            task = bar.add_task("sweep", total=len(labels))
            try:
                results = run_sweep(labels, partial(replay_label, path, seed, cost_profile),
                                    pool, on_done=lambda _: bar.advance(task))
            except (SessionError, UserError) as exc:
                fail(str(exc))
        pts = points(labels, results)
        if output is not None:
            output.write_text(plot(pts), encoding="utf-8")
        if as_json:
            typer.echo(orjson.dumps({"session": str(path), "points": [
                {"spec": p.label, "event_p99_ms": p.p99_ms, "peak_queue_depth": p.peak_depth,
                 "deadlocks": p.deadlocks, "job_timeouts": p.job_timeouts,
                 "events_handled": p.handled, "events": p.events, "pareto": p.pareto}
                for p in pts]}).decode())
            return
        header, *rows = render_table(pts)
        table = Table(title=f"sweep of {path.name} (* Pareto front: p99 event latency vs "
                      "peak queue depth)")
        for i, col in enumerate(header):
            table.add_column(col, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        Console(file=sys.stdout).print(table)
