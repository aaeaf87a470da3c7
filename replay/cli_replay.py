"""``qmpreplay replay`` and ``qmpreplay scenario``: run sessions through policies.

This module is where replay, trace writing and metrics meet: each policy's records stream
to the metrics collector, the Perfetto writer and the run directory's Parquet files.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from analysis.collector import Collector
from replay.policy import PolicySpec, SpecError, parse_spec
from replay.profile import ProfileError, load_profile
from replay.run import Consumer, RunOutcome, run
from replay.scenarios import SCENARIOS
from tracer import __version__
from tracer.cli_common import fail
from tracer.defaults import default_session
from tracer.session import SessionError, SessionReader
from tracer.timeline import Timeline, rows

if TYPE_CHECKING:
    from tracer.perfetto import TraceWriter
    from tracer.rundir import EventTableWriter, TimelineWriter

DEFAULT_POLICIES = ("mainloop", "two-stage", "pool", "per-vm-thread")


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def parse_specs(specs: Sequence[str]) -> list[PolicySpec]:
    try:
        return [parse_spec(s) for s in specs]
    except SpecError as exc:
        raise UserError(str(exc)) from None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def replay_session(
    session: Path,
    specs: Sequence[PolicySpec],
    *,
    seed: int = 0,
    cost_profile: str = "default",
    starvation_k: int = 5,
    out: Path | None = None,
    trace: Path | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Replay ``session`` under each spec; return the ``--json`` object.

    ``progress(policy index, fraction of the session read)`` is called as the run goes.
    """
    try:
        with SessionReader(session) as reader:
            header = reader.header
    except SessionError as exc:
        raise UserError(str(exc)) from None
    try:
        profile = load_profile(cost_profile, header.cost_profile)
    except ProfileError as exc:
        raise UserError(str(exc)) from None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if trace is None:
            trace = out / "replay.pftrace"
    size = max(1, session.stat().st_size)
    policies: list[dict[str, Any]] = []
    tables: list[dict[str, Any]] = []
    # The Perfetto protos and pyarrow take about 0.08 s to import: a replay that writes no
    # trace and no run directory does not load them.
    if trace is not None:
        from tracer.perfetto import TraceWriter
    if out is not None:
        from tracer import rundir
    started = time.perf_counter()
    with ExitStack() as stack:
        tracer_out = stack.enter_context(TraceWriter(str(trace))) if trace else None
        parquet = rundir.TimelineWriter(out / "timeline.parquet") if out else None
        events_out = rundir.EventTableWriter(out / "events.parquet") if out else None
        for w in (parquet, events_out):
            if w is not None:
                stack.callback(w.close)
        for p, spec in enumerate(specs):
            reader = stack.enter_context(SessionReader(session))

            def report(_now: int, p: int = p, reader: SessionReader = reader) -> None:
                if progress is not None:
                    progress(p, reader.position / size)

            outcome = _run_one(p, spec, reader, header.vms, profile, seed, starvation_k,
                               tracer_out, parquet, events_out, report)
            result = {"spec": spec.label, **outcome.extra["results"]}
            result["timing"] = {"decode_s": round(outcome.decode_s, 6),
                                "simulate_s": round(outcome.simulate_s, 6)}
            result["messages"] = outcome.messages
            policies.append(result)
            if out is not None:
                tables.append(rundir.tables_json(outcome.timeline))
    write_s = time.perf_counter() - started - sum(
        p["timing"]["decode_s"] + p["timing"]["simulate_s"] for p in policies)
    results = {"session": str(session), "seed": seed, "cost_profile": profile.name,
               "policies": policies, "timing": {"write_s": round(max(0.0, write_s), 6)}}
    if out is not None:
        rundir.write_json(out / "run.json", {
            "session": str(session), "session_sha256": sha256(session),
            "specs": [s.label for s in specs], "seed": seed, "cost_profile": cost_profile,
            "starvation_k": starvation_k, "tool": f"qmpreplay {__version__}",
        })
        rundir.write_json(out / "results.json", results)
        rundir.write_json(out / "tables.json", tables)
    return results


def _run_one(p: int, spec: PolicySpec, reader: SessionReader, vms: list[str], profile: Any,
             seed: int, starvation_k: int, trace: TraceWriter | None,
             parquet: TimelineWriter | None, events_out: EventTableWriter | None,
             on_progress: Callable[[int], None] | None) -> RunOutcome:
    observers: dict[str, Any] = {}

    def observe(timeline: Timeline) -> list[Consumer]:
        collector = observers["collector"] = Collector(timeline)
        consumers: list[Consumer] = [collector]
        if trace is not None:
            policy_trace = observers["trace"] = trace.begin_policy(timeline)
            consumers.append(lambda chunk: policy_trace.feed(rows(chunk)))
        if parquet is not None:
            consumers.append(lambda chunk: parquet.write(p, chunk))
        if events_out is not None:
            written = [0]

            def events(_: bytes) -> None:
                events_out.write(p, written[0], timeline.events[written[0]:])
                written[0] = len(timeline.events)

            consumers.append(events)
        return consumers

    outcome = run(spec, vms, iter(reader), profile, seed=seed, starvation_k=starvation_k,
                  observe=observe, on_progress=on_progress,
                  rows=trace is not None or parquet is not None)
    if "trace" in observers:
        observers["trace"].end()
    outcome.extra["results"] = observers["collector"].results(outcome.end_ns, outcome.summary)
    return outcome


def _table(results: dict[str, Any]) -> Table:
    table = Table(title=f"replay of {results['session']} (seed {results['seed']}, "
                  f"cost profile {results['cost_profile']})")
    table.add_column("metric")
    pols = results["policies"]
    for p in pols:
        table.add_column(p["spec"], justify="right")

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("event latency p50 ms", lambda p: ms(p["event_latency_ms"]["p50"])),
        ("event latency p99 ms", lambda p: ms(p["event_latency_ms"]["p99"])),
        ("event latency max ms", lambda p: ms(p["event_latency_ms"]["max"])),
        ("RPC latency p50 ms", lambda p: ms(p["rpc_latency_ms"]["p50"])),
        ("RPC latency p99 ms", lambda p: ms(p["rpc_latency_ms"]["p99"])),
        ("RPC latency max ms", lambda p: ms(p["rpc_latency_ms"]["max"])),
        ("events handled/dropped/pending", lambda p: f"{p['events_handled']}/"
         f"{p['events_dropped']}/{p['events_pending']}"),
        ("RPCs completed (errors)", lambda p: f"{p['rpcs_completed']} ({p['rpc_errors']})"),
        ("job timeouts", lambda p: str(p["job_timeouts"])),
        ("peak queue depth", lambda p: str(p["peak_queue_depth"])),
        ("findings", lambda p: _findings_text(p)),
    ]
    for name, cell in rows:
        table.add_row(name, *(cell(p) for p in pols))
    kinds = sorted({f["kind"] for p in pols for f in p["findings"]})
    if kinds:  # say what the short names mean and where the details are
        table.caption = ("findings: " + ", ".join(f"{SHORT[k]} = {k}" for k in kinds)
                         + "; each one explained: --json, or --out DIR then qmpreplay report DIR")
    return table


SHORT = {"deadlock": "deadlock", "starvation": "starved", "ordering-violation": "order",
         "unbounded-growth": "growth", "rare-path": "rare", "qemu-no-reply": "no-reply"}


def _findings_text(p: dict[str, Any]) -> str:
    """Findings counted by kind (a deadlock counts once, not again when it is broken)."""
    counts: dict[str, int] = {}
    for f in p["findings"]:
        if f.get("phase") != "broken":
            counts[f["kind"]] = counts.get(f["kind"], 0) + 1
    return " ".join(f"{SHORT[k]}:{v}" for k, v in sorted(counts.items())) or "none"


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay_cmd(
        session: Annotated[Path | None, typer.Argument(
            help="Session file; default: the first session in [bold]traces/[/].",
            show_default=False)] = None,
        policy: Annotated[list[str] | None, typer.Option(
            "--policy", "-p", help="Policy spec [bold]NAME[:k=v,...][/] or "
            "[bold]MODULE:CLASS[:k=v,...][/]; repeat for several (default: all four).",
            show_default=False)] = None,
        seed: Annotated[int, typer.Option(help="Seed of each run's RNG.")] = 0,
        cost_profile: Annotated[str, typer.Option(
            help="Cost profile: [bold]default[/], [bold]zero[/] or a TOML file.")] = "default",
        starvation_k: Annotated[int, typer.Option(
            help="Overtakes that make a job waiter starved.")] = 5,
        out: Annotated[Path | None, typer.Option(
            help="Run directory to write (run.json, results.json, timeline.parquet, "
            "replay.pftrace).")] = None,
        trace: Annotated[Path | None, typer.Option(
            help="Perfetto trace to write (default: replay.pftrace in --out).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Replay a session through dispatch policies in virtual time and compare them.

        Prints, per policy, event and RPC latency, job timeouts, peak queue depth and
        findings (deadlocks, starvation, ordering violations, unbounded growth).

        Example: [bold]qmpreplay replay traces/basic-2vm.qmp.jsonl -p mainloop -p
        pool:max_queue=8 --out run1[/]
        """
        try:
            path = session if session is not None else default_session()
            specs = parse_specs(policy or DEFAULT_POLICIES)
            if starvation_k < 1:
                raise UserError("--starvation-k must be at least 1")
        except (SessionError, UserError) as exc:
            fail(str(exc))
        console = Console(stderr=True)
        show = not (quiet or as_json) and console.is_terminal
        with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=console, disable=not show, transient=True) as bar:
            tasks = [bar.add_task(s.label, total=1.0) for s in specs]
            try:
                results = replay_session(
                    path, specs, seed=seed, cost_profile=cost_profile,
                    starvation_k=starvation_k, out=out, trace=trace,
                    progress=lambda p, f: bar.update(tasks[p], completed=f))
            except (SessionError, UserError) as exc:
                fail(str(exc))
        if as_json:
            typer.echo(orjson.dumps(results, option=orjson.OPT_SORT_KEYS).decode())
        else:
            Console().print(_table(results))


SCENARIO_NAMES = ", ".join(SCENARIOS)


def register_scenario(app: typer.Typer) -> None:
    names = SCENARIO_NAMES

    @app.command("scenario")
    def scenario_cmd(
        name: Annotated[str, typer.Argument(help=f"One of: {SCENARIO_NAMES}.",
                                            show_default=False)],
        output: Annotated[Path, typer.Option("-o", "--output", help="Session file to write.")],
        param: Annotated[list[str] | None, typer.Option(
            "-p", "--param", help="Change a parameter of the scenario's shape: key=value.",
            show_default=False)] = None,
        seed: Annotated[int, typer.Option(help="Seed of the generator.")] = 0,
    ) -> None:
        """Write a built-in scenario's session (a seeded generator tied to one claim).

        Example: [bold]qmpreplay scenario hol-blocking -p vms=50 -o hol.qmp.jsonl[/]
        """
        scenario = SCENARIOS.get(name)
        try:
            if scenario is None:
                raise UserError(f"unknown scenario {name!r} (known: {names})")
            overrides = {}
            for item in param or []:
                key, eq, value = item.partition("=")
                if not eq:
                    raise UserError(f"parameter {item!r} is not key=value")
                overrides[key] = value
            params = scenario.params(overrides)
        except (UserError, ValueError) as exc:
            fail(str(exc))
        n = scenario.write(output, params, seed)
        typer.echo(f"wrote {n} records of scenario {name} to {output}")
