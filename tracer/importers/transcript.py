"""Import QMP transcripts: JSON objects printed one after another, without times.

QEMU iotests outputs and libvirt ``.replies`` files are both this shape: each message is
a JSON object that starts on a line beginning with ``{`` and may span lines until its
braces balance (strings in either quote style are respected); lines outside objects are
other output and are ignored. An object that parses and is QMP (``execute``/``exec-oob``
is a command, ``return``/``error``/``event``/``QMP`` come from QEMU) becomes a record on
one VM with times from :class:`tracer.importers.latency.SyntheticClock`; an object that
does not parse, or is cut by a blank line or the end of the file, is a skipped line.

The stored wire text is the object as printed (lines joined by LF, masks resolved by the
source's ``unmask``) followed by CRLF, as QEMU terminates its messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tracer.importers.latency import SyntheticClock
from tracer.importers.sink import EPOCH, ImportResult, ImportSink, open_lines, output_path
from tracer.qmp import loads_qmp
from tracer.session import Header, make_record

#: Turns a printed object into valid QMP text, given the time assigned to it.
Unmask = Callable[[str, int], str]

_QEMU_KEYS = ("return", "error", "event", "QMP")


def json_objects(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, str | None]]:
    """Yield (first line, object text) per printed object; text None when it is cut off."""
    start = 0
    buf: list[str] = []
    depth = 0
    quote = ""
    for number, line in lines:
        if not buf:
            if not line.lstrip().startswith("{"):
                continue
            start, depth, quote = number, 0, ""
        elif not line.strip():
            yield start, None
            buf = []
            continue
        buf.append(line)
        depth, quote = _scan(line, depth, quote)
        if depth <= 0:
            yield start, "\n".join(buf)
            buf = []
    if buf:
        yield start, None


def _scan(line: str, depth: int, quote: str) -> tuple[int, str]:
    """Brace depth after a line, outside strings in either quote style."""
    escaped = False
    for c in line:
        if quote:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                break
    return depth, quote


def _direction(msg: Any) -> str | None:
    """``send`` for a command, ``recv`` for a QEMU message, None for other JSON output."""
    if not isinstance(msg, dict):
        return None
    if "execute" in msg or "exec-oob" in msg:
        return "send"
    if any(key in msg for key in _QEMU_KEYS):
        return "recv"
    return None


def import_transcript(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    kind: str,
    strict: bool,
    vm: str | None,
    unmask: Unmask | None = None,
) -> ImportResult:
    """Import one transcript into a session with synthetic times on one VM."""
    vm_name = vm or "vm0"
    header = Header(source=kind, clock="synthetic", vms=[vm_name], wall_start=EPOCH,
                    redacted=False, extra={"imported_from": os.path.basename(source)})
    clock = SyntheticClock()
    with open_lines(source) as lines:
        out = output_path(output)
        with ImportSink(source, out, header, strict=strict) as sink:
            for line, text in json_objects(lines):
                if text is None:
                    sink.skip(line, "JSON object cut off before its braces balance")
                    continue
                try:
                    msg = loads_qmp(unmask(text, 0) if unmask else text)
                except (ValueError, RecursionError):
                    sink.skip(line, "not valid JSON")
                    continue
                direction = _direction(msg)
                if direction is None:
                    continue
                if direction == "send":
                    name = msg.get("execute", msg.get("exec-oob"))
                    t = clock.command(name if isinstance(name, str) else "")
                elif "event" in msg:
                    t = clock.event()
                elif "return" in msg or "error" in msg:
                    t = clock.reply()
                else:
                    t = clock.event()
                wire = (unmask(text, t) if unmask else text) + "\r\n"
                sink.write(make_record(t, vm_name, "send" if direction == "send" else "recv", wire))
            return sink.result
