"""Import JSON Lines captures written by other QMP tools as sessions.

Each line is ``{"t_ns": int, "vm": str, "dir": "send"|"recv", "msg": {...}, "raw": str}``
(``raw`` optional, other keys ignored). ``raw`` is the exact wire text, CRLF included, and
wins over ``msg``; without it the wire text is ``msg`` as compact JSON + CRLF (the bytes
QEMU or a client would have sent for that object, up to key order and spacing). Times are
kept as given (clock ``monotonic``; the capture has no wall clock, so ``wall_start`` is
the epoch). The header needs every VM name before the first record, so a first pass
reads only the ``vm`` of each line (VMs in order of first appearance); the second pass
converts. Lines that are not such objects are skipped with their line numbers. Example::

    qmpreplay import capture host1.jsonl -o host1.qmp.jsonl
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from tracer.importers.sink import EPOCH, ImportResult, ImportSink, open_lines, output_path
from tracer.session import Header, Record, SessionError, make_record


def _problem(obj: Any) -> str | None:
    """What makes a decoded line unusable, or None."""
    if not isinstance(obj, dict):
        return "line is not a JSON object"
    t = obj.get("t_ns")
    if type(t) is not int or t < 0:
        return f"t_ns must be a non-negative integer, got {t!r}"
    vm = obj.get("vm")
    if not isinstance(vm, str) or not vm:
        return f"vm must be a non-empty string, got {vm!r}"
    if obj.get("dir") not in ("send", "recv"):
        return f"dir must be 'send' or 'recv', got {obj.get('dir')!r}"
    if "raw" in obj:
        if not isinstance(obj["raw"], str):
            return "raw must be a string"
    elif not isinstance(obj.get("msg"), dict):
        return "line has neither raw wire text nor a msg object"
    return None


def _record(obj: dict[str, Any]) -> Record:
    wire = obj["raw"] if "raw" in obj else orjson.dumps(obj["msg"]).decode() + "\r\n"
    return make_record(obj["t_ns"], obj["vm"], obj["dir"], wire)


def import_file(source: str | os.PathLike[str], output: str | os.PathLike[str], *,
                strict: bool = False, vm: str | None = None) -> ImportResult:
    """Import a JSON Lines capture into the session ``output`` (``vm``: only that VM)."""
    names: dict[str, None] = {}
    with open_lines(source) as lines:
        for _, text in lines:
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict) and isinstance(obj.get("vm"), str) and obj["vm"]:
                names.setdefault(obj["vm"], None)
    vms = list(names) or [vm or "vm0"]
    if vm is not None:
        if names and vm not in names:
            raise SessionError(source, 0, f"no VM named {vm!r} in the capture "
                               f"(VMs: {', '.join(names)})")
        vms = [vm]
    header = Header(source="capture", clock="monotonic", vms=vms, wall_start=EPOCH,
                    redacted=False, extra={"imported_from": os.path.basename(source)})
    out = output_path(output)
    with open_lines(source) as lines, ImportSink(source, out, header, strict=strict) as sink:
        for number, text in lines:
            if not text.strip():
                continue
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                sink.skip(number, f"invalid JSON ({exc.args[0]})")
                continue
            problem = _problem(obj)
            if problem is not None:
                sink.skip(number, problem)
            elif vm is None or obj["vm"] == vm:
                sink.write(_record(obj))
        return sink.result
