"""What every importer shares: opening the input, writing records, counting what it skipped.

An importer reads its input line by line and hands records to an :class:`ImportSink`,
which keeps times non-decreasing per VM (a record earlier than its VM's previous one is
clamped to it, keeping file order, and counted), writes through
:class:`tracer.session.SessionWriter` and remembers the lines it could not import. With
``strict`` the first skipped line raises :class:`tracer.session.SessionError`; what was
already written stays on disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tracer.session import Header, Record, SessionError, SessionWriter, open_input

#: Wall-clock start of sessions whose source has no wall clock.
EPOCH = "1970-01-01T00:00:00.000000Z"
#: How many skipped line numbers the summary names.
SUMMARY_LINES = 3


@dataclass
class ImportResult:
    """How an import went: records written, lines skipped (line numbers), times clamped."""

    source: str
    records: int = 0
    skipped: list[int] = field(default_factory=list)
    clamped: int = 0

    def summary(self) -> str:
        """The one line an import prints when it is done."""
        n = len(self.skipped)
        detail = f"{n} line{'s' if n != 1 else ''} skipped"
        if n:
            first = ", ".join(str(line) for line in self.skipped[:SUMMARY_LINES])
            detail += f": first at line{'s' if n != 1 else ''} {first}"
        if self.clamped:
            detail += f"; {self.clamped} times clamped to keep each VM's time non-decreasing"
        return f"imported {self.records} records from {self.source} ({detail})"


class ImportSink:
    """Write imported records to a session, clamping times and tracking skipped lines."""

    def __init__(self, source: str | os.PathLike[str], output: str | os.PathLike[str],
                 header: Header, *, strict: bool) -> None:
        self.source = str(source)
        self.strict = strict
        self.result = ImportResult(self.source)
        self._writer = SessionWriter(output, header, flush=False)
        self._last: dict[str, int] = {}

    def __enter__(self) -> ImportSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def write(self, record: Record) -> None:
        """Write one record; a time earlier than its VM's last one is raised to it."""
        vm = record["vm"]
        last = self._last.get(vm, 0)
        if record["t_ns"] < last:
            record["t_ns"] = last
            self.result.clamped += 1
        self._last[vm] = record["t_ns"]
        self._writer.write(record)
        self.result.records += 1

    def skip(self, line: int, problem: str) -> None:
        """Note a line that looks like QMP but cannot be imported (an error with strict)."""
        if self.strict:
            raise SessionError(self.source, line, f"{problem} (without --strict it is skipped)")
        self.result.skipped.append(line)


@contextmanager
def open_lines(path: str | os.PathLike[str]) -> Iterator[Iterator[tuple[int, str]]]:
    """An importer's input as (1-based line number, text without its end of line).

    Lines end at LF only (a CR inside a line is kept); bytes that are not UTF-8 become
    U+FFFD, so a binary file yields text that matches no format instead of crashing.
    """
    file = open_input(path, "a file to import")

    def lines() -> Iterator[tuple[int, str]]:
        for number, raw in enumerate(file, 1):
            text = raw.decode("utf-8", "replace")
            yield number, text.removesuffix("\n").removesuffix("\r")

    with file:
        yield lines()


def output_path(path: str | os.PathLike[str]) -> Path:
    """Check that the session can be created where the user asked."""
    out = Path(path)
    if out.is_dir():
        raise SessionError(out, 0, "is a directory; give a session file name")
    if not out.parent.exists():
        raise SessionError(out, 0, f"folder {out.parent} does not exist")
    return out
