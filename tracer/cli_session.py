"""Session commands of the ``qmpreplay`` CLI: ``validate``, ``inspect`` and ``import``.

Every problem with the user's input is one line ``error: FILE:LINE: what is wrong`` on
stderr and exit status 2.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from tracer.cli_common import fail
from tracer.defaults import default_session
from tracer.importers import import_session
from tracer.inspect import SessionStats, inspect_session
from tracer.session import MAX_PROBLEMS, SessionError, sort_session, validate

SessionArg = Annotated[
    Path | None,
    typer.Argument(help="Session file ([bold]*.qmp.jsonl[/]); default: the first session "
                   "in the repository's [bold]traces/[/] folder.", show_default=False),
]


class Source(enum.StrEnum):
    """What kind of file ``import`` reads."""

    libvirt_log = "libvirt-log"
    iotests = "iotests"
    replies = "replies"
    capture = "capture"


def _session(path: Path | None) -> Path:
    try:
        return path if path is not None else default_session()
    except SessionError as exc:
        fail(str(exc))


def validate_cmd(session: SessionArg = None) -> None:
    """Check a session file and list [bold]all[/] its problems, one per line.

    Each problem is printed as [bold]FILE:LINE: problem[/] (at most 50); the exit status
    is 2 if there is any, else the command prints [bold]ok: N records[/]. A truncated last
    line (a recorder killed mid-write) is a problem here, while other commands only warn.

    Example: [bold]qmpreplay validate traces/basic-2vm.qmp.jsonl[/]
    """
    path = _session(session)
    good, problems = validate(path, MAX_PROBLEMS)
    if problems:
        for problem in problems:
            typer.echo(f"error: {problem}", err=True)
        if len(problems) >= MAX_PROBLEMS:
            typer.echo(f"error: {path}: stopped after {MAX_PROBLEMS} problems", err=True)
        raise typer.Exit(2)
    typer.echo(f"ok: {good} records")


def inspect_cmd(
    session: SessionArg = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of "
                                          "tables.")] = False,
) -> None:
    """Show what a session holds: VMs, duration, messages, reply latencies, event causes.

    Reply latency pairs each reply with its command (by QMP id, else in order per VM);
    [bold]attributed[/] lists the (command, event) record index pairs that the cause
    table explains, e.g. [italic]stop→STOP[/]. With [bold]--json[/] the output is one
    object with keys [bold]vms, commands, replies, errors, events, duration_ns,
    reply_latency_ms, attributed[/] and more.

    Example: [bold]qmpreplay inspect traces/basic-2vm.qmp.jsonl --json[/]
    """
    path = _session(session)
    try:
        stats = inspect_session(path)
    except SessionError as exc:
        fail(str(exc))
    if as_json:
        sys.stdout.write(orjson.dumps(stats.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_tables(stats)


def _print_tables(stats: SessionStats) -> None:
    console = Console(width=100)
    summary = Table(title=f"Session {stats.path}", show_header=False)
    summary.add_row("source / clock", f"{stats.header.source} / {stats.header.clock}")
    summary.add_row("VMs", ", ".join(stats.header.vms))
    summary.add_row("records", str(stats.records))
    summary.add_row("duration", f"{stats.duration_ns / 1e9:.6f} s")
    summary.add_row("commands / replies / errors",
                    f"{stats.commands} / {stats.replies} / {stats.errors}")
    summary.add_row("commands without a reply", str(stats.unanswered))
    console.print(summary)
    if stats.events:
        events = Table(title="Events")
        for column in ("event", "count", "per second"):
            events.add_column(column, justify="left" if column == "event" else "right")
        rates = stats.event_rates()
        for name, count in sorted(stats.events.items()):
            rate = rates[name]
            events.add_row(name, str(count), "-" if rate is None else f"{rate:.3f}")
        console.print(events)
    latency = stats.reply_latency_ms()
    if latency:
        table = Table(title="Reply latency (ms)")
        for column in ("command", "n", "p50", "p99", "max"):
            table.add_column(column, justify="left" if column == "command" else "right")
        for name, row in latency.items():
            table.add_row(name, str(row["n"]), f"{row['p50']:.3f}", f"{row['p99']:.3f}",
                          f"{row['max']:.3f}")
        console.print(table)
    if stats.attributed_by_cause:
        causes = Table(title="Events attributed to commands")
        causes.add_column("cause")
        causes.add_column("events", justify="right")
        for cause, count in sorted(stats.attributed_by_cause.items()):
            causes.add_row(cause, str(count))
        console.print(causes)


def import_cmd(
    source: Annotated[Source, typer.Argument(help="Kind of input.", show_default=False)],
    file: Annotated[Path, typer.Argument(help="File to import.", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Session file to write.",
                                         show_default=False)],
    strict: Annotated[bool, typer.Option("--strict", help="Fail (exit 2) at the first line "
                                         "that cannot be imported instead of skipping it.")]
    = False,
    vm: Annotated[str | None, typer.Option("--vm", help="VM name for inputs that name none "
                                           "(iotests, replies; default vm0); for libvirt-log "
                                           "and capture, import only this VM.")] = None,
) -> None:
    """Import QMP traffic recorded by other tools as a session.

    Sources: [bold]libvirt-log[/] (libvirtd/virtqemud debug logs, syslog, KubeVirt JSON
    lines), [bold]iotests[/] (QEMU iotests [italic].out[/] transcripts), [bold]replies[/]
    (libvirt [italic].replies[/] files), [bold]capture[/] (JSON Lines with t_ns, vm, dir,
    msg, raw). Inputs without times get synthetic ones (clock [italic]synthetic[/]).
    Lines that look like QMP but cannot be read are skipped and counted; the command
    ends with one line: [bold]imported N records from FILE (M lines skipped: ...)[/].

    Example: [bold]qmpreplay import libvirt-log libvirtd.log -o vm.qmp.jsonl --strict[/]
    """
    try:
        result = import_session(source.value, file, output, strict=strict, vm=vm)
    except SessionError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename or output}:0: {exc.strerror}")
    typer.echo(result.summary())


def sort_cmd(
    session: Annotated[Path, typer.Argument(help="Session whose times go backwards.",
                                            show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Sorted session to write.")],
) -> None:
    """Write a copy of a session with its records in time order (ties keep file order).

    Replays need times that never go backwards within a VM; a merged or hand-made
    session may break that. This reads the whole session into memory to sort it.

    Example: [bold]qmpreplay sort merged.qmp.jsonl -o sorted.qmp.jsonl[/]
    """
    try:
        n = sort_session(session, output)
    except SessionError as exc:
        fail(str(exc))
    typer.echo(f"sorted {n} records into {output}")


def register(app: typer.Typer) -> None:
    """Add the session commands to the ``qmpreplay`` app."""
    app.command("sort")(sort_cmd)
    app.command("validate")(validate_cmd)
    app.command("inspect")(inspect_cmd)
    app.command("import")(import_cmd)
