"""``qmpreplay report`` and ``qmpreplay export``: a run directory as a diff report or as
frame files."""

from __future__ import annotations

from contextlib import nullcontext
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from analysis.collector import LOCK_SORT_KEYS
from tracer.cli_common import fail


class ReportFormat(StrEnum):
    text = "text"
    md = "md"
    html = "html"


class ExportFormat(StrEnum):
    csv = "csv"
    parquet = "parquet"


def _check_run_dir(run_dir: Path) -> None:
    if not (run_dir / "tables.json").is_file():
        fail(f"{run_dir}: not a run directory (write one with qmpreplay replay --out DIR)")


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        run_dir: Annotated[Path, typer.Argument(help="Run directory of [bold]qmpreplay replay "
                                                "--out[/].", show_default=False)],
        baseline: Annotated[str | None, typer.Option(
            help="Policy spec the ratios compare to (default: the first policy).",
            show_default=False)] = None,
        fmt: Annotated[ReportFormat, typer.Option(
            "--format", "-f", help="text (80 columns), md (Markdown) or html (one file "
            "with plots).")] = ReportFormat.text,
        output: Annotated[Path | None, typer.Option(
            "-o", "--output", help="File to write (default: standard output).",
            show_default=False)] = None,
        lock_sort: Annotated[str, typer.Option(
            help=f"Sort key of the lock tables: {', '.join(LOCK_SORT_KEYS)}.")] = "wait_total",
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
    ) -> None:
        """Compare the policies of a run side by side: one row per metric, best marked,
        ratios to a baseline, findings explained, one summary sentence per policy.

        Example: [bold]qmpreplay replay --out run1 && qmpreplay report run1 -f html -o
        run1.html[/]
        """
        if lock_sort not in LOCK_SORT_KEYS:
            fail(f"--lock-sort {lock_sort!r}: expected one of {', '.join(LOCK_SORT_KEYS)}")
        from analysis.report import RENDERERS, ReportError, build_report  # pandas, matplotlib

        console = Console(stderr=True)
        with console.status("building the report", spinner="dots") if (
                not quiet and console.is_terminal) else nullcontext():
            try:
                report = build_report(run_dir, baseline, lock_sort)
            except ReportError as exc:
                fail(str(exc))
            text = RENDERERS[fmt.value](report)
        if output is None:
            typer.echo(text, nl=False)
        else:
            output.write_text(text, encoding="utf-8")

    @app.command("export")
    def export_cmd(
        run_dir: Annotated[Path, typer.Argument(help="Run directory of [bold]qmpreplay replay "
                                                "--out[/].", show_default=False)],
        fmt: Annotated[ExportFormat, typer.Option(
            "--format", "-f", help="csv or parquet.")] = ExportFormat.csv,
        output: Annotated[Path | None, typer.Option(
            "-o", "--output", help="Directory to write (default: RUN_DIR/frames).",
            show_default=False)] = None,
    ) -> None:
        """Write the analysis frames (events, handlers, rpcs, locks, queues, pauses,
        findings) of every policy, one file per frame (see docs/analysis.md).

        Example: [bold]qmpreplay export run1 --format parquet -o frames[/]
        """
        _check_run_dir(run_dir)
        from analysis.frames import export, load_frames  # pandas

        for path in export(load_frames(run_dir), output or run_dir / "frames", fmt.value):
            typer.echo(f"wrote {path}")

