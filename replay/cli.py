"""The ``qmpreplay`` command line: the one place that knows tracer, replay and analysis."""

from __future__ import annotations

import gc
import sys
from typing import Annotated

import typer

from tracer import __version__

app = typer.Typer(
    name="qmpreplay",
    help=(
        "Record QEMU Machine Protocol (QMP) sessions, replay them through libvirt-like "
        "event-dispatch policies in virtual time, and compare the policies."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"qmpreplay {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Record QMP sessions, replay them through dispatch policies, compare the policies."""


def _register() -> None:
    from analysis import cli_report
    from replay import cli_analysis, cli_replay
    from tracer import cli_record, cli_session, cli_trace

    cli_replay.register(app)
    cli_replay.register_scenario(app)
    cli_session.register(app)
    cli_record.register(app)
    cli_trace.register(app)
    cli_report.register(app)
    cli_analysis.register(app)


def main() -> None:
    # Replays allocate millions of short-lived objects that form few cycles: collecting the
    # youngest generation every 10,000 allocations instead of 700 takes a third off
    # decoding a long session (about 10% of a whole replay), at the same peak memory.
    gc.set_threshold(10_000, 10, 10)
    _register()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
