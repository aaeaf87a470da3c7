"""Import libvirt debug logs (libvirtd / virtqemud) as sessions.

Line shapes read (libvirt's debug log and its QEMU monitor probes), each optionally
preceded by a line number (``329344 2020-09-07 ...``):

- file prefix ``YYYY-MM-DD HH:MM:SS.mmm+0000: TID: level : func:line : message``, also
  without the date (``libvirtd(8) 19:03:07.261+0000: ...``, old ``10:49:35.755: ...``);
- syslog/journald text ``Mon DD HH:MM:SS host libvirtd[PID]: message`` (second resolution);
- KubeVirt virt-launcher JSON lines (``msg``, ``pos``, ``thread``, ``timestamp``);
- bare, prefix-stripped ``QEMU_MONITOR_*`` lines (no time).

Messages turned into records:

- ``QEMU_MONITOR_SEND_MSG`` / ``QEMU_MONITOR_IO_WRITE`` → ``command``. Both carry the
  same command; it is recorded once, at its SEND_MSG line (the API thread that sent it;
  in the logs seen the IO_WRITE follows within the same millisecond). An IO_WRITE that
  repeats a SEND_MSG of its monitor (or the rest of a partial write) is dropped; an
  IO_WRITE without SEND_MSG (filtered or prefix-stripped logs) is the command. libvirt
  terminates commands with CRLF (logged as a literal CR, ``^M`` in pastes; ``fd=`` /
  ``len=`` continue on the next line), so the stored wire text is the command + CRLF.
- ``QEMU_MONITOR_RECV_REPLY`` → ``reply``/``error``, ``QEMU_MONITOR_RECV_EVENT`` →
  ``event`` (wire text + CRLF, as QEMU sends it); ``QEMU_MONITOR_CLOSE`` → ``eof``.
- API entry lines (``virDomainXxx:N : dom=0x..., (VM: name=NAME, uuid=...)``) and job
  lines with an API (``Starting job: API=remoteDispatchXxx job=...``) → ``api-begin``
  named after the API, with ``thread`` = TID; a thread runs one API at a time, so its
  next API begins after an ``api-end``. ``Stopping job`` / ``Stopping async job`` on that
  thread (not of an ``async nested`` job) → ``api-end``. APIs still open at the end of the
  log get no ``api-end``. Commands sent by a thread while it runs an API carry ``thread``.

VMs: a ``mon=0x...`` pointer is named by ``Entering/Exited monitor (mon=%p vm=%p
name=%s)`` lines, or by ``Connect monitor to vm=%p name='%s'`` followed by
``QEMU_MONITOR_NEW: mon=%p``, wherever they appear in the log (a first pass collects
them); an unnamed pointer becomes the VM ``mon-0x...``.

Times: log times have millisecond (syslog: second) resolution; ``t_ns`` counts from the
first record, whose wall time is the header's ``wall_start``; the clock is
``monotonic``. A line without a time (bare lines) takes the last time seen in the log
(``synthetic`` clock if the log has no time at all); a line without a date takes the
last date seen (1970-01-01 before any). Times going backwards within a VM keep file
order and are clamped to the VM's previous time (counted in the summary).

Other lines are ignored; QMP lines whose message is missing or is not valid JSON (a
command cut off in the source) are skipped and reported by line number.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson

from tracer.importers.sink import EPOCH, ImportResult, ImportSink, open_lines, output_path
from tracer.qmp import loads_qmp
from tracer.session import Header, Record, SessionError, make_record

_LINE_NUMBER = re.compile(r"^\d+ (?=\S| (?:fd|len)=)")
_PREFIX = re.compile(
    r"^(?:(\d{4})-(\d\d)-(\d\d) )?(?:\S+\(\d\) )?(\d\d):(\d\d):(\d\d)\.(\d{3})(?:\+0000)?: "
    r"(?:(\d+): )?(?:debug|info|warning|error) : ([A-Za-z0-9_]+):\d+ :(?: (.*))?$"
)
_SYSLOG = re.compile(
    r"^([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d) \S+ (?:libvirtd|virtqemud)\[\d+\]: (.*)$"
)
_KUBEVIRT_MSG = re.compile(r'"msg":"((?:[^"\\]|\\.)*)"')
_KUBEVIRT_FIELD = re.compile(r'"(pos|thread|timestamp)":"([^"]*)"')
_ISO = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z?$")
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

_QMP = re.compile(r"^(QEMU_MONITOR_[A-Z_]+): mon=(0x[0-9a-fA-F]+)(?: (msg|buf|reply|event)=(.*))?")
_TAIL = re.compile(r"(?:\^M|\r)?(?: fd=-?\d+| len=\d+ ret=-?\d+ errno=\d+)?$")
_MONITOR = re.compile(r"^(?:Entering|Exited) monitor \(mon=(0x[0-9a-fA-F]+) vm=0x[0-9a-fA-F]+ "
                      r"name=(.*)\)$")
_CONNECT = re.compile(r"^Connect monitor to vm=0x[0-9a-fA-F]+ name='([^']*)'")
_API = re.compile(r"^dom=0x[0-9a-fA-F]+, \(VM: name=(.*?), uuid=")
_JOB_START = re.compile(r"^Starting job: (?:API=(\S+) )?job=.+? \(vm=0x[0-9a-fA-F]+ name=(.+?), ")
_JOB_STOP = re.compile(r"^Stopping (?:async )?job: (.+?) \((?:async=.+? )?vm=0x[0-9a-fA-F]+ "
                       r"name=(.+?)\)$")

#: QMP record types that carry a message, and the direction they travel.
_MESSAGES = {"QEMU_MONITOR_SEND_MSG": "send", "QEMU_MONITOR_IO_WRITE": "send",
             "QEMU_MONITOR_RECV_REPLY": "recv", "QEMU_MONITOR_RECV_EVENT": "recv"}


@dataclass(slots=True)
class _Line:
    """One log line: where it is, when (absolute ns, if known), which thread, what it says."""

    number: int
    time_ns: int | None
    tid: int | None
    func: str
    msg: str


def _epoch_ns(y: int, mo: int, d: int, h: int, mi: int, s: int, frac_ns: int) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 1_000_000_000 + frac_ns


class _LineParser:
    """Split raw lines into time, thread, function and message, whatever their shape."""

    def __init__(self) -> None:
        self.date = (1970, 1, 1)

    def parse(self, number: int, text: str) -> _Line:
        text = _LINE_NUMBER.sub("", text, count=1)
        m = _PREFIX.match(text)
        if m:
            if m.group(1):
                self.date = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
            t = _epoch_ns(*self.date, int(m.group(4)), int(m.group(5)), int(m.group(6)),
                          int(m.group(7)) * 1_000_000)
            tid = int(m.group(8)) if m.group(8) else None
            return _Line(number, t, tid, m.group(9), m.group(10) or "")
        if text.startswith("{") and '"msg":' in text:
            return self._kubevirt(number, text)
        m = _SYSLOG.match(text)
        if m and m.group(1) in _MONTHS:
            t = _epoch_ns(self.date[0], _MONTHS[m.group(1)], int(m.group(2)), int(m.group(3)),
                          int(m.group(4)), int(m.group(5)), 0)
            return _Line(number, t, None, "", m.group(6))
        return _Line(number, None, None, "", text)

    def _kubevirt(self, number: int, text: str) -> _Line:
        m = _KUBEVIRT_MSG.search(text)
        if not m:
            return _Line(number, None, None, "", text)
        try:
            msg = orjson.loads(b'"' + m.group(1).encode() + b'"')
        except orjson.JSONDecodeError:
            return _Line(number, None, None, "", text)
        fields = dict(_KUBEVIRT_FIELD.findall(text))
        t = None
        iso = _ISO.match(fields.get("timestamp", ""))
        if iso:
            y, mo, d, h, mi, s = (int(iso.group(i)) for i in range(1, 7))
            self.date = (y, mo, d)
            t = _epoch_ns(y, mo, d, h, mi, s, int((iso.group(7) or "0").ljust(9, "0")))
        thread = fields.get("thread", "")
        return _Line(number, t, int(thread) if thread.isdigit() else None,
                     fields.get("pos", "").split(":")[0], msg)


@dataclass(slots=True)
class _Item:
    """What a log line means for the session (``what`` says which of the fields apply)."""

    what: str  # "qmp", "close", "name-mon", "connect", "new-mon", "api", "job-start", "job-stop"
    line: _Line
    key: str = ""  # monitor pointer, or VM name for api/job items
    name: str = ""  # QMP record type, VM name, API or job name
    payload: str | None = None


def _items(lines: Iterable[tuple[int, str]]) -> Iterator[_Item]:
    """The lines that matter, decoded; every other line is dropped here."""
    parser = _LineParser()
    for number, text in lines:
        line = parser.parse(number, text)
        msg = line.msg.removesuffix("\r")
        if msg.startswith("QEMU_MONITOR_"):
            m = _QMP.match(msg)
            if not m:
                continue
            rtype, mon = m.group(1), m.group(2).lower()
            if rtype in _MESSAGES:
                payload = m.group(4)
                if payload is not None:
                    payload = _TAIL.sub("", payload, count=1)
                yield _Item("qmp", line, mon, rtype, payload)
            elif rtype == "QEMU_MONITOR_CLOSE":
                yield _Item("close", line, mon)
            elif rtype == "QEMU_MONITOR_NEW":
                yield _Item("new-mon", line, mon)
        elif m := _MONITOR.match(msg):
            yield _Item("name-mon", line, m.group(1).lower(), m.group(2))
        elif m := _CONNECT.match(msg):
            yield _Item("connect", line, "", m.group(1))
        elif line.func.startswith("virDomain") and (m := _API.match(msg)):
            yield _Item("api", line, m.group(1), line.func)
        elif m := _JOB_START.match(msg):
            if m.group(1):
                yield _Item("job-start", line, m.group(2), m.group(1))
        elif m := _JOB_STOP.match(msg):
            yield _Item("job-stop", line, m.group(2), m.group(1))


@dataclass
class _Scan:
    """What the first pass learns: monitor names, the VMs in order, the time base."""

    mon_names: dict[str, str]
    vms: list[str]
    first_ns: int | None
    timed: bool


def _scan(items: Iterable[_Item]) -> _Scan:
    mon_names: dict[str, str] = {}
    keys: dict[tuple[str, str], None] = {}
    first_ns: int | None = None
    timed = False
    connecting: str | None = None
    for item in items:
        timed = timed or item.line.time_ns is not None
        if item.what == "name-mon":
            mon_names.setdefault(item.key, item.name)
        elif item.what == "connect":
            connecting = item.name
        elif item.what == "new-mon" and connecting is not None:
            mon_names.setdefault(item.key, connecting)
            connecting = None
        elif item.what in ("qmp", "close", "api", "job-start", "job-stop"):
            is_mon = item.what in ("qmp", "close")
            if item.what == "qmp" and item.payload is None:
                continue
            keys.setdefault(("mon" if is_mon else "vm", item.key), None)
            if first_ns is None and item.line.time_ns is not None:
                first_ns = item.line.time_ns
    vms: dict[str, None] = {}
    for kind, key in keys:
        vms.setdefault(mon_names.get(key, f"mon-{key}") if kind == "mon" else key, None)
    return _Scan(mon_names, list(vms), first_ns, timed)


def _iso(t_ns: int) -> str:
    moment = _dt.datetime.fromtimestamp(t_ns // 1_000_000_000, _dt.UTC)
    micros = (t_ns % 1_000_000_000) // 1000
    return moment.replace(microsecond=micros).isoformat().replace("+00:00", "Z")


class _Converter:
    """Second pass: items to records, pairing SEND_MSG with IO_WRITE and APIs with threads."""

    def __init__(self, scan: _Scan, sink: ImportSink, only_vm: str | None) -> None:
        self.scan = scan
        self.sink = sink
        self.only_vm = only_vm
        self.base = scan.first_ns or 0
        self.now = self.base
        self.unwritten: dict[str, deque[str]] = {}  # SEND_MSG texts not yet seen in IO_WRITE
        self.written: dict[str, str] = {}  # last command written per monitor (partial writes)
        self.apis: dict[int, tuple[str, str]] = {}  # tid → (vm, API) while an API runs

    def vm_of(self, mon: str) -> str:
        return self.scan.mon_names.get(mon, f"mon-{mon}")

    def t_ns(self, line: _Line) -> int:
        if line.time_ns is not None:
            self.now = line.time_ns
        return max(0, self.now - self.base)

    def emit(self, record: Record) -> None:
        if self.only_vm is None or record["vm"] == self.only_vm:
            self.sink.write(record)

    def api_record(self, kind: str, t: int, vm: str, api: str, tid: int | None) -> Record:
        rec: Record = {"t_ns": t, "vm": vm, "dir": "send", "kind": kind, "wire": "", "name": api}
        if tid is not None:
            rec["thread"] = tid
        return rec

    def feed(self, item: _Item) -> None:
        line = item.line
        t = self.t_ns(line)
        if item.what == "qmp":
            self.message(item, t)
        elif item.what == "close":
            self.emit({"t_ns": t, "vm": self.vm_of(item.key), "dir": "recv", "kind": "eof",
                       "wire": ""})
        elif item.what in ("api", "job-start"):
            if item.what == "job-start" and line.tid in self.apis:
                return
            self.end_api(line.tid, t)
            self.emit(self.api_record("api-begin", t, item.key, item.name, line.tid))
            if line.tid is not None:
                self.apis[line.tid] = (item.key, item.name)
        elif item.what == "job-stop" and item.name != "async nested":
            running = self.apis.get(line.tid) if line.tid is not None else None
            if running is not None and running[0] == item.key:
                self.end_api(line.tid, t)

    def end_api(self, tid: int | None, t: int) -> None:
        if tid is not None and tid in self.apis:
            vm, api = self.apis.pop(tid)
            self.emit(self.api_record("api-end", t, vm, api, tid))

    def message(self, item: _Item, t: int) -> None:
        mon, payload = item.key, item.payload
        if payload is None:
            self.sink.skip(item.line.number, f"{item.name} without its message")
            return
        if item.name == "QEMU_MONITOR_IO_WRITE" and self.repeats_send(mon, payload):
            return
        try:
            loads_qmp(payload)
        except (ValueError, RecursionError):
            self.sink.skip(item.line.number, f"{item.name} message is not valid JSON "
                           "(cut off in the log?)")
            return
        direction = _MESSAGES[item.name]
        record = make_record(t, self.vm_of(mon), "send" if direction == "send" else "recv",
                             payload + "\r\n")
        if item.name == "QEMU_MONITOR_SEND_MSG":
            self.unwritten.setdefault(mon, deque()).append(payload)
            tid = item.line.tid
            if tid is not None and tid in self.apis:
                record["thread"] = tid
        self.emit(record)

    def repeats_send(self, mon: str, payload: str) -> bool:
        """Whether an IO_WRITE only repeats (part of) a command already sent by SEND_MSG."""
        pending = self.unwritten.get(mon)
        if pending and pending[0].endswith(payload):
            self.written[mon] = pending.popleft()
            return True
        return bool(payload) and self.written.get(mon, "").endswith(payload) \
            and len(payload) < len(self.written[mon])


def import_file(source: str | os.PathLike[str], output: str | os.PathLike[str], *,
                strict: bool = False, vm: str | None = None) -> ImportResult:
    """Import a libvirt debug log into the session ``output`` (``vm``: only that VM)."""
    with open_lines(source) as lines:
        scan = _scan(_items(lines))
    vms = scan.vms or [vm or "vm0"]
    if vm is not None:
        if scan.vms and vm not in scan.vms:
            raise SessionError(source, 0, f"no VM named {vm!r} in the log "
                               f"(VMs: {', '.join(scan.vms)})")
        vms = [vm]
    header = Header(
        source="libvirt-log",
        clock="monotonic" if scan.timed else "synthetic",
        vms=vms,
        wall_start=_iso(scan.first_ns) if scan.first_ns is not None else EPOCH,
        redacted=False,
        extra={"imported_from": os.path.basename(source)},
    )
    out = output_path(output)
    with open_lines(source) as lines, ImportSink(source, out, header, strict=strict) as sink:
        converter = _Converter(scan, sink, vm)
        for item in _items(lines):
            converter.feed(item)
        return sink.result
