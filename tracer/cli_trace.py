"""``qmpreplay check-trace``: check a Perfetto trace against the TrackEvent import rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from tracer.cli_common import fail


def check_trace(
    file: Annotated[Path, typer.Argument(help="The .pftrace to check.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the problems as JSON.")] = False,
) -> None:
    """Check a trace: exit 0 without errors, 1 with errors, 2 when it cannot be read."""
    from tracer.trace_check import TraceReadError, check_file, has_errors

    try:
        problems = check_file(str(file))
    except TraceReadError as exc:
        fail(f"{file}: {exc}")
    if as_json:
        typer.echo(orjson.dumps({"file": str(file), "errors": has_errors(problems),
                                 "problems": [p.to_json() for p in problems]}).decode())
    else:
        for problem in problems:
            typer.echo(f"{file}: {problem}")
        if not problems:
            typer.echo(f"{file}: ok")
    if has_errors(problems):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("check-trace")(check_trace)
