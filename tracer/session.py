"""The QMP session format: a header line, then one JSON record per wire message.

A session is JSON Lines in UTF-8. The first line is the header; every other line is a
record. Records keep the exact wire text, so a session can be re-emitted byte for byte
(except redacted secrets, which are marked). Readers stream: a session is never loaded
whole, and every problem is reported as ``file:line: what is wrong``.

Header keys: ``format`` (``"qmpreplay-session"``), ``version`` (1), ``source``, ``clock``
(``monotonic`` or ``synthetic``), ``wall_start`` (ISO 8601 UTC), ``vms`` (names, in the
order the replay serves them), ``recorder`` (tool and version), ``redacted`` (bool), and
optionally ``cost_profile`` (a partial cost profile that overrides the user's, per key).

Record keys: ``t_ns`` (int), ``vm``, ``dir`` (``send`` = to QEMU, ``recv`` = from QEMU),
``kind``, ``wire`` (exact text, CRLF included; ``wire_b64`` instead when the bytes are not
UTF-8), and where they apply ``name`` (command, event or API name), ``id`` (the QMP id, any
JSON value), ``conn`` (proxy connection number), ``thread`` (API thread id), ``redacted``.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal, TypedDict

import orjson

FORMAT: Final = "qmpreplay-session"
VERSION: Final = 1

SOURCES: Final = ("proxy", "libvirt-log", "iotests", "replies", "capture", "scenario")
CLOCKS: Final = ("monotonic", "synthetic")
DIRECTIONS: Final = ("send", "recv")
KINDS: Final = (
    "greeting", "command", "reply", "error", "event", "eof", "unparsed",
    "connect", "disconnect", "api-begin", "api-end",
)
#: Kinds a record may have in each direction (``api-*`` are daemon-side: ``send``).
KINDS_BY_DIR: Final = {
    "send": frozenset({"command", "unparsed", "connect", "disconnect", "api-begin", "api-end"}),
    "recv": frozenset({"greeting", "reply", "error", "event", "eof", "unparsed"}),
}
#: Well-formed (dir, kind) pairs, and the kinds that need a name (the reader's fast path).
VALID: Final = frozenset((d, k) for d, kinds in KINDS_BY_DIR.items() for k in kinds)
NAMED: Final = frozenset({"command", "event", "api-begin", "api-end"})
#: Most problems ``validate`` lists before it stops.
MAX_PROBLEMS: Final = 50

#: The record keys the reader looks up, as the str objects orjson hands out for them: it
#: reuses one object per key (its key cache), so a lookup with these finds a record's key
#: by identity instead of comparing characters (if one were evicted from that cache, a
#: lookup would still find the key, by comparing).
_KEYS: Final = tuple(orjson.loads(b'{"t_ns":0,"vm":0,"dir":0,"kind":0,"name":0,"wire":0}'))
T_NS: Final[str] = _KEYS[0]
VM: Final[str] = _KEYS[1]
DIR: Final[str] = _KEYS[2]
KIND: Final[str] = _KEYS[3]
NAME: Final[str] = _KEYS[4]
WIRE: Final[str] = _KEYS[5]

Direction = Literal["send", "recv"]


class Record(TypedDict, total=False):
    """One session line after the header (a plain dict: decoding stays cheap)."""

    t_ns: int
    vm: str
    dir: Direction
    kind: str
    wire: str
    wire_b64: str
    name: str
    id: Any
    conn: int
    thread: int
    redacted: bool


@dataclass(slots=True)
class Header:
    """The session's first line: what the records are and where they came from."""

    source: str
    clock: str
    vms: list[str]
    wall_start: str = ""
    recorder: str = ""
    redacted: bool = True
    cost_profile: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "source": self.source,
            "clock": self.clock,
            "wall_start": self.wall_start or utc_now(),
            "vms": list(self.vms),
            "recorder": self.recorder or recorder_name(),
            "redacted": self.redacted,
        }
        if self.cost_profile is not None:
            out["cost_profile"] = self.cost_profile
        out.update(self.extra)
        return out


class SessionError(Exception):
    """A problem in a session file, located as ``file:line``."""

    def __init__(self, path: str | os.PathLike[str], line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        super().__init__(f"{self.path}:{line}: {message}")


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def recorder_name() -> str:
    from tracer import __version__

    return f"qmpreplay {__version__}"


def wire_bytes(record: Record) -> bytes:
    """The exact bytes of a record as they crossed the socket."""
    if "wire_b64" in record:
        import base64

        return base64.b64decode(record["wire_b64"])
    return record.get("wire", "").encode("utf-8")


def parse_header(path: str | os.PathLike[str], line: bytes) -> Header:
    """Decode and check the header line; raise :class:`SessionError` naming line 1."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise SessionError(path, 1, f"header is not valid JSON ({exc.args[0]})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise SessionError(path, 1, f"not a qmpreplay session (first line lacks format {FORMAT!r})")
    if obj.get("version") != VERSION:
        raise SessionError(path, 1, f"unsupported session version {obj.get('version')!r}")
    for key, allowed in (("source", SOURCES), ("clock", CLOCKS)):
        if obj.get(key) not in allowed:
            raise SessionError(path, 1, f"header {key} {obj.get(key)!r} is not one of {allowed}")
    vms = obj.get("vms")
    if not isinstance(vms, list) or not all(isinstance(v, str) for v in vms) or not vms:
        raise SessionError(path, 1, "header vms must be a non-empty list of names")
    if len(set(vms)) != len(vms):
        raise SessionError(path, 1, "header vms has duplicate names")
    profile = obj.get("cost_profile")
    if profile is not None and not isinstance(profile, dict):
        raise SessionError(path, 1, "header cost_profile must be an object")
    known = {"format", "version", "source", "clock", "wall_start", "vms", "recorder",
             "redacted", "cost_profile"}
    return Header(
        source=obj["source"],
        clock=obj["clock"],
        vms=vms,
        wall_start=str(obj.get("wall_start", "")),
        recorder=str(obj.get("recorder", "")),
        redacted=bool(obj.get("redacted", False)),
        cost_profile=profile,
        extra={k: v for k, v in obj.items() if k not in known},
    )


def open_input(path: str | os.PathLike[str], what: str) -> IO[bytes]:
    """Open a file to read; when that fails, a :class:`SessionError` says why in one line."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        raise SessionError(path, 0, "no such file") from None
    except IsADirectoryError:
        raise SessionError(path, 0, f"is a directory, not {what}") from None
    except OSError as exc:
        raise SessionError(path, 0, f"cannot open: {exc.strerror}") from None


def backwards(record: Record, last: int) -> str:
    """The problem of a record whose time is before its VM's previous one."""
    return (f"time goes backwards for vm {record['vm']!r}: {record['t_ns']} < {last} "
            "(qmpreplay sort puts a session in time order)")


def check_record(obj: Any, vms: frozenset[str]) -> str | None:
    """Return what is wrong with a decoded record, or None when it is well formed."""
    if not isinstance(obj, dict):
        return "record is not a JSON object"
    t = obj.get("t_ns")
    if type(t) is not int or t < 0:
        return f"t_ns must be a non-negative integer, got {t!r}"
    vm = obj.get("vm")
    if vm not in vms:
        return f"vm {vm!r} is not in the header's vms"
    d = obj.get("dir")
    if d not in KINDS_BY_DIR:
        return f"dir must be 'send' or 'recv', got {d!r}"
    kind = obj.get("kind")
    if kind not in KINDS:
        return f"unknown record kind {kind!r}"
    if kind not in KINDS_BY_DIR[d]:
        return f"kind {kind!r} cannot have dir {d!r}"
    if "wire" in obj:
        if not isinstance(obj["wire"], str):
            return "wire must be a string"
    elif "wire_b64" not in obj:
        return "record has no wire text"
    if kind in NAMED and not isinstance(obj.get("name"), str):
        return f"a {kind} record needs a string name"
    return None


class SessionReader:
    """Stream the records of a session file, checking each as it is read.

    ``truncated``: what to do with a last line that has no newline and does not parse
    (a recorder killed mid-write): ``"error"`` raises, ``"warn"`` prints one warning line
    on stderr and stops before it. Times must not go backwards within a VM.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        truncated: Literal["error", "warn"] = "warn",
        check: bool = True,
    ) -> None:
        self.path = Path(path)
        self.truncated = truncated
        self.check = check
        self._file = open_input(path, "a session file")
        first = self._file.readline()
        if not first:
            self._file.close()
            raise SessionError(path, 1, "empty file (no header)")
        self.header = parse_header(path, first)
        self._vms = frozenset(self.header.vms)
        #: Line number of the record last yielded.
        self.line = 1

    def __enter__(self) -> SessionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def position(self) -> int:
        """Bytes of the file read so far (for progress bars)."""
        return 0 if self._file.closed else self._file.tell()

    def __iter__(self) -> Iterator[Record]:
        loads = orjson.loads
        check = self.check
        vms = self._vms
        # (a comprehension, not dict.fromkeys: from a set, that builds a dict for keys of
        # any type, whose lookups compare keys by a rich comparison)
        last = {vm: 0 for vm in vms}
        lineno = 1
        for raw in self._file:
            lineno += 1
            if raw[0] != 0x7B and not raw.strip():  # blank (a record starts with "{")
                continue
            try:
                obj = loads(raw)
            except orjson.JSONDecodeError as exc:
                if not raw.endswith(b"\n") and self.truncated == "warn":
                    print(f"warning: {self.path}:{lineno}: truncated last line ignored",
                          file=sys.stderr)
                    return
                if not raw.endswith(b"\n"):
                    raise SessionError(self.path, lineno, "truncated last line") from None
                raise SessionError(self.path, lineno, f"invalid JSON ({exc.args[0]})") from None
            if check and not _in_order(obj, last):
                problem = check_record(obj, vms) or backwards(obj, last[obj["vm"]])
                raise SessionError(self.path, lineno, problem)
            self.line = lineno
            yield obj


def _in_order(obj: Any, last: dict[str, int]) -> bool:
    """The reader's fast path: True, and ``last`` moved on, for a well-formed record not
    before its VM's previous one (:func:`check_record` explains anything else).

    Typed so that compiled, the lookups are dict lookups and the kind and direction are
    string compares: the decoder's fresh strings would each be hashed for a set lookup.
    """
    if type(obj) is not dict:
        return False
    rec: dict[str, Any] = obj
    t = rec.get(T_NS)
    vm = rec.get(VM)
    kind = rec.get(KIND)
    d = rec.get(DIR)
    if type(t) is not int or type(vm) is not str or type(kind) is not str or type(d) is not str:
        return False
    t_ns: int = t
    vm_name: str = vm
    name: str = kind
    direction: str = d
    if name == "event" or name == "reply":  # nearly every record is one of these three
        ok = direction == "recv" and (name == "reply" or type(rec.get(NAME)) is str)
    elif name == "command":
        ok = direction == "send" and type(rec.get(NAME)) is str
    else:
        ok = (direction, name) in VALID and (name not in NAMED or type(rec.get(NAME)) is str)
    if not ok or not (type(rec.get(WIRE)) is str or "wire_b64" in rec):
        return False
    prev = last.get(vm_name)
    if prev is None or t_ns < prev:
        return False
    last[vm_name] = t  # the decoded int itself: t_ns, a machine int, would be boxed again
    return True


def read_session(path: str | os.PathLike[str], **kw: Any) -> tuple[Header, Iterator[Record]]:
    """Open a session: its header now, its records as a stream."""
    reader = SessionReader(path, **kw)
    return reader.header, _records(reader)


def _records(reader: SessionReader) -> Iterator[Record]:
    """The reader's records, the file closed once they are read (at module level: compiled,
    the same generator nested in ``read_session`` could not reach its closure)."""
    with reader:
        yield from reader


def validate(path: str | os.PathLike[str],
             limit: int = MAX_PROBLEMS) -> tuple[int, list[SessionError]]:
    """Check a whole session and list its problems (up to ``limit``), not just the first.

    Returns the number of valid records and the problems. A truncated last line is an error.
    """
    problems: list[SessionError] = []
    try:
        reader = SessionReader(path, truncated="error", check=False)
    except SessionError as error:  # (a name of its own: compiled, a name has one type)
        return 0, [error]
    good = 0
    last: dict[str, int] = {}
    with reader:
        lineno = 1
        for raw in reader._file:
            lineno += 1
            if len(problems) >= limit:
                break
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                msg = ("truncated last line" if not raw.endswith(b"\n")
                       else f"invalid JSON ({exc.args[0]})")
                problems.append(SessionError(path, lineno, msg))
                continue
            problem = check_record(obj, reader._vms)
            if problem is None:
                vm, t = obj["vm"], obj["t_ns"]
                if t < last.get(vm, 0):
                    problem = backwards(obj, last[vm])
                else:
                    last[vm] = t
            if problem is not None:
                problems.append(SessionError(path, lineno, problem))
            else:
                good += 1
    return good, problems


def sort_session(path: str | os.PathLike[str], output: str | os.PathLike[str]) -> int:
    """Write ``path``'s records in time order (stable) to ``output``; return their number.

    Records are checked as usual except for time order; the whole session is held in
    memory (sorting is the one operation that cannot stream).
    """
    with SessionReader(path, truncated="error", check=False) as reader:
        header = reader.header
        records: list[Record] = []
        for rec in reader:
            problem = check_record(rec, reader._vms)
            if problem is not None:
                raise SessionError(path, reader.line, problem)
            records.append(rec)
    records.sort(key=_time)
    with SessionWriter(output, header, flush=False) as out:
        for rec in records:
            out.write(rec)
    return len(records)


def _time(rec: Record) -> int:
    return rec["t_ns"]


class SessionWriter:
    """Append records to a session file, flushing each line so a kill loses at most one.

    The header is written on open. ``flush=False`` buffers (for importers and generators,
    where speed matters more than surviving a kill).
    """

    def __init__(self, path: str | os.PathLike[str], header: Header, *, flush: bool = True) -> None:
        self.path = Path(path)
        self._flush = flush
        self._file: IO[bytes] = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._vms = set(header.vms)
        self.count = 0
        self._file.write(orjson.dumps(header.to_json()) + b"\n")
        self._file.flush()

    def __enter__(self) -> SessionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, record: Record) -> None:
        """Write one record (its ``vm`` must be in the header)."""
        if record["vm"] not in self._vms:
            raise ValueError(f"vm {record['vm']!r} is not in the session header")
        self._file.write(orjson.dumps(record) + b"\n")
        self.count += 1
        if self._flush:
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


def make_record(
    t_ns: int,
    vm: str,
    direction: Direction,
    wire: bytes | str,
    *,
    conn: int | None = None,
    redacted_wire: str | None = None,
) -> Record:
    """Build a record from wire bytes: classify the message and pick out its name and id.

    ``redacted_wire`` replaces the stored text (the wire itself is never altered).
    """
    from tracer.qmp import classify

    text: str | None
    if isinstance(wire, bytes):
        try:
            text = wire.decode("utf-8")
        except UnicodeDecodeError:
            text = None
    else:
        text = wire
    rec: Record = {"t_ns": t_ns, "vm": vm, "dir": direction}
    kind, name, qid, has_id = classify(text if text is not None else "", direction)
    rec["kind"] = kind
    if name is not None:
        rec["name"] = name
    if has_id:
        rec["id"] = qid
    if conn is not None:
        rec["conn"] = conn
    if redacted_wire is not None:
        rec["wire"] = redacted_wire
        rec["redacted"] = True
    elif text is not None:
        rec["wire"] = text
    else:
        import base64

        rec["wire_b64"] = base64.b64encode(wire if isinstance(wire, bytes) else b"").decode()
    return rec
