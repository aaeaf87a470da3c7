"""Timeline records: the one stream from the replay engine to its observers.

The engine's primitives (mutex, job, condition, queue, monitor, threads) emit records; the
Perfetto writer, the metrics collector and the Parquet writer consume the same stream and
know nothing about policies. A record is six integers::

    (t_ns, kind, thread, vm, ref, value)

``thread`` indexes :attr:`Timeline.threads`, ``vm`` indexes the VM names (-1: none),
``ref`` is the subject (an event id, an RPC id, a queue id, a finding index; -1: none) and
``value`` a number whose meaning depends on the kind. Consumers get records in chunks:
``bytes`` of six little-endian int64 per record (:data:`RECORD`; :func:`rows` iterates them
as tuples, ``numpy.frombuffer`` reads them as they are). Ids index the tables of the
:class:`Timeline` (events, RPCs, queues, findings), so a record stays a flat row that goes
to Parquet and pandas as it is.

Kind            thread     vm   ref        value
--------------  ---------  ---  ---------  ----------------------------------------------
LOCK_WAIT       waiter     vm   -1         0
LOCK_ACQUIRE    holder     vm   -1         ns waited (0 when the lock was free)
LOCK_RELEASE    holder     vm   -1         ns held
JOB_WAIT        waiter     vm   owner      0              (owner: see below)
JOB_BEGIN       holder     vm   owner      ns waited
JOB_END         holder     vm   owner      ns held
JOB_TIMEOUT     waiter     vm   owner      ns waited (the wait failed)
HANDLER_BEGIN   handler    vm   event id   stage (0 = first stage, 1 = deferred stage)
HANDLER_END     handler    vm   event id   stage
EVENT_DONE      thread/-1  vm   event id   path (index into Timeline.paths): the event is handled
EVENT_ARRIVE    -1         vm   event id   message bytes
EVENT_DROPPED   thread/-1  vm   event id   reason (DROP_* below)
MSG_READ        reader     vm   event id (-1 for a reply)   message bytes
QUEUE_DEPTH     -1         vm   queue id   depth after the change
QUEUE_BYTES     -1         vm   queue id   bytes queued after the change
READ_PAUSED     -1         vm   -1         0
READ_RESUMED    -1         vm   -1         ns paused
RPC_ARRIVE      -1         vm   rpc id     1 for a high-priority API, else 0
RPC_START       worker     vm   rpc id     ns queued
RPC_END         worker     vm   rpc id     0 ok, 1 error
CMD_SEND        thread     vm   owner      command index within its owner
CMD_REPLY       thread     vm   owner      1 if the reply is an error (also EOF), else 0
SYNC_WAIT       thread     vm   rpc id     timeout ns
SYNC_WAKE       thread     vm   rpc id     event id, or -1 when it timed out
FINDING         -1         -1   finding    0

An *owner* (of a job, of a monitor command) is an RPC id ``r >= 0`` or an event handler
``-(event id) - 1``; :func:`owner_is_event` and :func:`owner_event` decode it.
``EVENT_DONE`` marks an event as handled: when its last stage ends (just before that
stage's HANDLER_END, same ns), or for a conditional event when the API waiting for it was
woken. ``EVENT_DROPPED`` by a handler likewise comes just before its HANDLER_END.
At the end of a run every open slice is closed by ``RUN_END`` (t = end of run).
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator, MutableSequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final, overload

from librt.strings import BytesWriter, write_i32_le, write_i64_le


class Kind(IntEnum):
    """Timeline record kinds (stable numbers: they are stored in Parquet)."""

    LOCK_WAIT = 1
    LOCK_ACQUIRE = 2
    LOCK_RELEASE = 3
    JOB_WAIT = 4
    JOB_BEGIN = 5
    JOB_END = 6
    JOB_TIMEOUT = 7
    HANDLER_BEGIN = 8
    HANDLER_END = 9
    EVENT_ARRIVE = 10
    EVENT_DROPPED = 11
    MSG_READ = 12
    QUEUE_DEPTH = 13
    QUEUE_BYTES = 14
    READ_PAUSED = 15
    READ_RESUMED = 16
    RPC_ARRIVE = 18
    RPC_START = 19
    RPC_END = 20
    CMD_SEND = 21
    CMD_REPLY = 22
    SYNC_WAIT = 23
    SYNC_WAKE = 24
    FINDING = 25
    RUN_END = 26
    EVENT_DONE = 27


#: EVENT_DROPPED reasons.
DROP_JOB_TIMEOUT: Final = 1   # its handler gave up waiting for the job
DROP_DESTROYED: Final = 2     # its VM was destroyed while it was queued
DROP_NOT_SENT: Final = 3      # caused by a command that the replay never sent

#: Event classes (from the cost profile).
CLASSES: Final = ("inline", "deferred", "conditional", "inline+deferred")
#: One record in a chunk: ``(t_ns, kind, thread, vm, ref, value)``, little-endian int64. The
#: compiled engine writes them as machine ints (``librt.strings.write_i64_le``): no int
#: object per field, and a chunk goes to numpy or Parquet without conversion.
RECORD: Final = struct.Struct("<6q")
RECORD_SIZE: Final = RECORD.size
#: Byte offsets of a record's fields, for consumers that read a chunk in place
#: (``librt.strings.read_i64_le``).
T_NS: Final = 0
KIND: Final = 8
THREAD: Final = 16
VM: Final = 24
REF: Final = 32
VALUE: Final = 40
#: Rows a table buffers before it moves them into its columns (see ``_Columns``).
PENDING_ROWS: Final = 4096


def owner_is_event(owner: int) -> bool:
    return owner < 0


def owner_event(owner: int) -> int:
    """The event id of an event-handler owner."""
    return -owner - 1


@dataclass(slots=True)
class ThreadInfo:
    """A modelled thread: ``role`` is one of mainloop, vm-thread, rpc-worker, prio-worker,
    event-worker, global-worker (``vm`` is set for a VM's own thread)."""

    name: str
    role: str
    vm: int = -1


@dataclass(slots=True)
class EventInfo:
    """One event of the workload: on which VM, what, which class, when it arrived."""

    vm: int
    name: str
    cls: str
    arrival_ns: int
    size: int


@dataclass(slots=True)
class RpcInfo:
    vm: int
    api: str
    arrival_ns: int
    priority: bool
    commands: list[str]


@dataclass(slots=True)
class QueueInfo:
    """An event queue: ``vm`` -1 for a global queue."""

    name: str
    vm: int


@dataclass(slots=True)
class Finding:
    kind: str
    time_ns: int
    vms: list[str]
    threads: list[str]
    detail: str
    #: For deadlocks: "closed" when the wait-for cycle closed, "broken" when a timeout cut it.
    phase: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "time_ns": self.time_ns, "vms": self.vms,
                               "threads": self.threads, "detail": self.detail}
        if self.phase is not None:
            out["phase"] = self.phase
        return out


class _Names:
    """Strings stored once; tables keep their index (names repeat millions of times)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.ids: dict[str, int] = {}

    def id(self, name: str) -> int:
        i = self.ids.get(name)
        if i is None:
            i = self.ids[name] = len(self.names)
            self.names.append(sys.intern(name))
        return i


class _Columns:
    """A table's five int columns (``array`` typecodes ``i``, ``q`` or ``B``). New rows are
    written as machine ints into one buffer per column (``librt.strings``: compiled, no
    int object per value) and moved into the columns :data:`PENDING_ROWS` at a time, or
    before a read."""

    def __init__(self, typecodes: str) -> None:
        self.columns = tuple(array(code) for code in typecodes)
        self.pending = tuple(BytesWriter() for _ in typecodes)
        self.sizes = tuple(column.itemsize for column in self.columns)
        assert all(code in "iqB" for code in typecodes), typecodes  # what _write writes
        self.rows = 0

    def add(self, a: int, b: int, c: int, d: int, e: int) -> None:
        pending, sizes = self.pending, self.sizes
        _write(pending[0], sizes[0], a)
        _write(pending[1], sizes[1], b)
        _write(pending[2], sizes[2], c)
        _write(pending[3], sizes[3], d)
        _write(pending[4], sizes[4], e)
        self.rows += 1
        if self.rows >= PENDING_ROWS:
            self.settle()

    def settle(self) -> None:
        """Move the buffered rows into the columns (call before reading a column)."""
        if self.rows:
            for column, out in zip(self.columns, self.pending, strict=True):
                rows = array(column.typecode, out.getvalue())
                if sys.byteorder == "big":  # written little-endian
                    rows.byteswap()
                column.extend(rows)
                out.truncate(0)
            self.rows = 0


def _write(out: BytesWriter, size: int, value: int) -> None:
    """``value`` as a little-endian int of ``size`` bytes."""
    if size == 8:
        write_i64_le(out, value)
    elif size == 4:
        write_i32_le(out, value)
    else:
        out.append(value)  # (1-byte columns are unsigned)


class EventTable(MutableSequence[EventInfo]):
    """The events table in columns: about 20 bytes per event, whatever the run's length.

    Indexing builds an :class:`EventInfo`; only ``append`` adds rows (ids never move).
    """

    def __init__(self, rows: list[EventInfo] | None = None) -> None:
        self._rows = _Columns("iiBqq")
        self._vm, self._name, self._cls, self._arrival, self._size = self._rows.columns
        self._names = _Names()
        for row in rows or ():
            self.append(row)

    def __len__(self) -> int:
        self._rows.settle()
        return len(self._vm)

    @overload
    def __getitem__(self, i: int) -> EventInfo: ...
    @overload
    def __getitem__(self, i: slice) -> list[EventInfo]: ...
    def __getitem__(self, i: int | slice) -> EventInfo | list[EventInfo]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        self._rows.settle()
        return EventInfo(self._vm[i], self._names.names[self._name[i]], CLASSES[self._cls[i]],
                         self._arrival[i], self._size[i])

    def __iter__(self) -> Iterator[EventInfo]:
        return (self[i] for i in range(len(self)))

    def name(self, i: int) -> str:
        """Event ``i``'s name without building its row (trace writers need only that)."""
        self._rows.settle()
        return self._names.names[self._name[i]]

    def append(self, row: EventInfo) -> None:
        self.add(row.vm, row.name, CLASSES.index(row.cls), row.arrival_ns, row.size)

    def add(self, vm: int, name: str, cls: int, arrival_ns: int, size: int) -> None:
        """Append a row without building an EventInfo (``cls`` indexes CLASSES)."""
        self._rows.add(vm, self._names.id(name), cls, arrival_ns, size)

    def __setitem__(self, i: Any, row: Any) -> None:
        raise TypeError("event rows are appended, never replaced")

    def __delitem__(self, i: Any) -> None:
        raise TypeError("event rows are appended, never removed")

    def insert(self, i: int, row: EventInfo) -> None:
        raise TypeError("event rows are appended, never inserted")


class RpcTable(MutableSequence[RpcInfo]):
    """The RPCs table in columns (API names and command lists stored once each)."""

    def __init__(self, rows: list[RpcInfo] | None = None) -> None:
        self._rows = _Columns("iiqBi")
        self._vm, self._api, self._arrival, self._priority, self._commands = self._rows.columns
        self._names = _Names()
        self._lists: list[tuple[str, ...]] = []
        self._list_ids: dict[tuple[str, ...], int] = {}
        for row in rows or ():
            self.append(row)

    def __len__(self) -> int:
        self._rows.settle()
        return len(self._vm)

    @overload
    def __getitem__(self, i: int) -> RpcInfo: ...
    @overload
    def __getitem__(self, i: slice) -> list[RpcInfo]: ...
    def __getitem__(self, i: int | slice) -> RpcInfo | list[RpcInfo]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        self._rows.settle()
        return RpcInfo(self._vm[i], self._names.names[self._api[i]], self._arrival[i],
                       bool(self._priority[i]), list(self._lists[self._commands[i]]))

    def __iter__(self) -> Iterator[RpcInfo]:
        return (self[i] for i in range(len(self)))

    def append(self, row: RpcInfo) -> None:
        self.add(row.vm, row.api, row.arrival_ns, row.priority, tuple(row.commands))

    def add(self, vm: int, api: str, arrival_ns: int, priority: bool,
            commands: tuple[str, ...]) -> None:
        """Append a row without building an RpcInfo."""
        self._rows.add(vm, self._names.id(api), arrival_ns, 1 if priority else 0,
                       self._list_id(commands))

    def api(self, i: int) -> str:
        """RPC ``i``'s API name without building its row."""
        self._rows.settle()
        return self._names.names[self._api[i]]

    def command(self, i: int, n: int) -> str:
        """The name of RPC ``i``'s ``n``-th QMP command."""
        self._rows.settle()
        return self._lists[self._commands[i]][n]

    def set_commands(self, i: int, commands: tuple[str, ...]) -> None:
        """The commands of an API call, once the session has shown them all."""
        self._rows.settle()
        self._commands[i] = self._list_id(commands)

    def _list_id(self, commands: tuple[str, ...]) -> int:
        j = self._list_ids.get(commands)
        if j is None:
            j = self._list_ids[commands] = len(self._lists)
            self._lists.append(commands)
        return j

    def __setitem__(self, i: Any, row: Any) -> None:
        raise TypeError("RPC rows are appended, never replaced")

    def __delitem__(self, i: Any) -> None:
        raise TypeError("RPC rows are appended, never removed")

    def insert(self, i: int, row: RpcInfo) -> None:
        raise TypeError("RPC rows are appended, never inserted")


def rows(chunk: bytes) -> Iterator[tuple[int, int, int, int, int, int]]:
    """The records of a chunk as tuples."""
    return RECORD.iter_unpack(chunk)


@dataclass
class Timeline:
    """A run's records plus the tables their ids point into.

    ``records`` holds the records of a timeline read back from a run directory (or built
    by hand); a run hands its records to consumers in chunks instead.
    """

    spec: str
    vms: list[str]
    threads: list[ThreadInfo] = field(default_factory=list)
    events: EventTable = field(default_factory=EventTable)
    rpcs: RpcTable = field(default_factory=RpcTable)
    queues: list[QueueInfo] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    records: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)
    end_ns: int = 0

    def __post_init__(self) -> None:
        # rows given as lists (hand-built timelines, run directories) become tables
        if not isinstance(self.events, EventTable):
            self.events = EventTable(list(self.events))
        if not isinstance(self.rpcs, RpcTable):
            self.rpcs = RpcTable(list(self.rpcs))
