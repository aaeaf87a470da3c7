"""The metrics collector: a consumer of the timeline stream that keeps what results need.

It takes record chunks as the replay runs, in one compiled pass per chunk that reads a
record's kind and only the fields that kind needs, as machine ints in place (converting a
chunk to numpy first cost more than the rest of the pass). It keeps the results per
finished event and RPC (latencies, 8 bytes each, as numpy arrays per chunk), the arrival
times of those still in flight, per-VM lock counters and queue peaks — never the records
themselves.
:meth:`Collector.results` turns them into the replay's ``--json`` object for one policy.
Percentiles: numpy ``quantile``, linear.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from librt.strings import BytesWriter, read_i64_le, write_i64_le

from tracer.timeline import (
    DROP_JOB_TIMEOUT,
    KIND,
    RECORD_SIZE,
    REF,
    T_NS,
    THREAD,
    VALUE,
    VM,
    Kind,
    Timeline,
)

READER_ROLES = ("mainloop", "vm-thread")
#: What lock tables sort by (columns of :meth:`LockCounts.row`, without units).
LOCK_SORT_KEYS = ("acquired", "contended", "wait_total", "wait_avg", "wait_max",
                  "hold_total", "hold_max")

LOCK_ACQUIRE: Final = int(Kind.LOCK_ACQUIRE)
LOCK_RELEASE: Final = int(Kind.LOCK_RELEASE)
JOB_BEGIN: Final = int(Kind.JOB_BEGIN)
JOB_TIMEOUT: Final = int(Kind.JOB_TIMEOUT)
HANDLER_BEGIN: Final = int(Kind.HANDLER_BEGIN)
HANDLER_END: Final = int(Kind.HANDLER_END)
EVENT_ARRIVE: Final = int(Kind.EVENT_ARRIVE)
EVENT_DROPPED: Final = int(Kind.EVENT_DROPPED)
EVENT_DONE: Final = int(Kind.EVENT_DONE)
QUEUE_DEPTH: Final = int(Kind.QUEUE_DEPTH)
QUEUE_BYTES: Final = int(Kind.QUEUE_BYTES)
READ_PAUSED: Final = int(Kind.READ_PAUSED)
READ_RESUMED: Final = int(Kind.READ_RESUMED)
RPC_ARRIVE: Final = int(Kind.RPC_ARRIVE)
RPC_START: Final = int(Kind.RPC_START)
RPC_END: Final = int(Kind.RPC_END)
SYNC_WAKE: Final = int(Kind.SYNC_WAKE)

#: Flags of an item in flight.
OPEN: Final = 1
STARTED: Final = 2
PRIORITY: Final = 4


class InFlight:
    """Arrival times and flags of the items (events or RPCs) by id, for those still in flight.

    Ids are dense, given in arrival order, and items finish in roughly that order, so the
    lists cover only the ids from the oldest unfinished one up and slide past finished
    ones: memory follows how many items are in flight, not how long the session is.
    """

    def __init__(self) -> None:
        #: The id at position 0.
        self.base = 0
        self.arrival: list[int] = []
        self.flags: list[int] = []
        #: Length past which the next new id first drops the finished ids below the oldest
        #: open one (doubles when they cannot be dropped: amortised O(1) per id).
        self.limit = 1024

    @property
    def top(self) -> int:
        """One past the largest id seen."""
        return self.base + len(self.arrival)

    def index(self, item: int) -> int:
        """Position of ``item`` (room made for a new id)."""
        i = item - self.base
        if i < 0:
            raise ValueError(f"item {item} referenced after it finished")
        if i >= len(self.arrival):
            if i >= self.limit:
                self._slide()
                i = item - self.base
            while len(self.arrival) <= i:
                self.arrival.append(0)
                self.flags.append(0)
        return i

    def _slide(self) -> None:
        """Drop the finished ids below the oldest open one."""
        flags = self.flags
        drop = 0
        n = len(flags)
        while drop < n and not flags[drop] & OPEN:
            drop += 1
        del self.arrival[:drop]
        del flags[:drop]
        self.base += drop
        self.limit = max(1024, 2 * len(flags))

    def still_open(self) -> list[int]:
        """Positions of the items not finished yet."""
        return [i for i, f in enumerate(self.flags) if f & OPEN]


class LockCounts:
    """One VM mutex's acquisitions and their waits and holds, in ns: machine ints (compiled,
    sums kept in a list would be int objects, a new one per record)."""

    __slots__ = ("acquired", "contended", "wait_sum", "wait_max", "hold_sum", "hold_max")

    def __init__(self) -> None:
        self.acquired = 0
        self.contended = 0
        self.wait_sum = 0
        self.wait_max = 0
        self.hold_sum = 0
        self.hold_max = 0

    def row(self) -> dict[str, Any]:
        acquired, wait_sum = self.acquired, self.wait_sum
        return {"acquired": acquired, "contended": self.contended,
                "wait_total_ms": wait_sum / 1e6,
                "wait_avg_ms": wait_sum / 1e6 / acquired if acquired else 0.0,
                "wait_max_ms": self.wait_max / 1e6, "hold_total_ms": self.hold_sum / 1e6,
                "hold_max_ms": self.hold_max / 1e6}


class Tally:
    """A count kept as a machine int."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class Collector:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.events = InFlight()
        self.rpcs = InFlight()
        #: Per finished item, in ns: arrival to done, to the first handler stage, to the
        #: RPC's end and to a worker taking it; with each ended RPC's priority.
        self.event_latency: list[np.ndarray] = []
        self.event_start_latency: list[np.ndarray] = []
        self.rpc_latency: list[np.ndarray] = []
        self.rpc_priority: list[np.ndarray] = []
        self.rpc_queue_wait: list[np.ndarray] = []
        self.job_waits: list[np.ndarray] = []
        #: Counts kept as they come (no per-event arrays needed for them), first the
        #: events done per path id.
        self.path_counts: list[Tally] = []
        self.dropped: dict[int, int] = {}
        self.rpc_errors = 0
        self.job_timeouts = 0
        self.sync_timeouts = 0
        self.peak_depth = 0
        self.peak_bytes = 0
        self.read_paused_ns = 0
        self.reader_stalled_ns = 0
        self.locks: list[LockCounts] = []
        self.paused_since: dict[int, int] = {}
        self._is_reader: list[bool] = []
        #: Per reader thread: when its open handler stage began (-1: none open).
        self._reader_open: list[int] = []

    @property
    def n_events(self) -> int:
        return self.events.top

    @property
    def n_rpcs(self) -> int:
        return self.rpcs.top

    def __call__(self, chunk: bytes) -> None:
        """Take a chunk of records (``tracer.timeline.RECORD`` each), read in place."""
        self._readers()
        events, rpcs = self.events, self.rpcs
        is_reader, reader_open = self._is_reader, self._reader_open
        ev_lat, ev_start, rpc_lat = BytesWriter(), BytesWriter(), BytesWriter()
        rpc_wait, job_waits = BytesWriter(), BytesWriter()
        rpc_prio: list[bool] = []
        at = 0
        end = len(chunk)
        while at < end:  # (compiled, a range with a step that is not a literal is generic)
            kind: int = read_i64_le(chunk, at + KIND)
            if kind in (LOCK_ACQUIRE, LOCK_RELEASE):
                self._lock(kind, read_i64_le(chunk, at + VM), read_i64_le(chunk, at + VALUE))
            elif kind == EVENT_ARRIVE:
                i = events.index(read_i64_le(chunk, at + REF))
                events.arrival[i] = read_i64_le(chunk, at + T_NS)
                events.flags[i] = OPEN
            elif kind in (HANDLER_BEGIN, HANDLER_END):
                t: int = read_i64_le(chunk, at + T_NS)
                th: int = read_i64_le(chunk, at + THREAD)
                if kind == HANDLER_BEGIN and read_i64_le(chunk, at + VALUE) == 0:
                    i = events.index(read_i64_le(chunk, at + REF))
                    if not events.flags[i] & STARTED:  # the event's first handler stage
                        events.flags[i] = events.flags[i] | STARTED
                        write_i64_le(ev_start, t - events.arrival[i])
                if 0 <= th < len(is_reader) and is_reader[th]:
                    # time a monitor reader spends in handler stages, reading nothing
                    if kind == HANDLER_BEGIN:
                        reader_open[th] = t
                    elif reader_open[th] >= 0:
                        self.reader_stalled_ns += t - reader_open[th]
                        reader_open[th] = -1
            elif kind == EVENT_DONE:
                i = events.index(read_i64_le(chunk, at + REF))
                write_i64_le(ev_lat, read_i64_le(chunk, at + T_NS) - events.arrival[i])
                events.flags[i] = events.flags[i] & ~OPEN
                path: int = read_i64_le(chunk, at + VALUE)
                while len(self.path_counts) <= path:
                    self.path_counts.append(Tally())
                self.path_counts[path].n += 1
            elif kind == JOB_BEGIN:
                write_i64_le(job_waits, read_i64_le(chunk, at + VALUE))
            elif kind == QUEUE_DEPTH:
                depth: int = read_i64_le(chunk, at + VALUE)
                if depth > self.peak_depth:
                    self.peak_depth = depth
            elif kind == QUEUE_BYTES:
                queued: int = read_i64_le(chunk, at + VALUE)
                if queued > self.peak_bytes:
                    self.peak_bytes = queued
            elif kind == RPC_ARRIVE:
                i = rpcs.index(read_i64_le(chunk, at + REF))
                rpcs.arrival[i] = read_i64_le(chunk, at + T_NS)
                rpcs.flags[i] = OPEN | PRIORITY if read_i64_le(chunk, at + VALUE) > 0 else OPEN
            elif kind == RPC_START:
                i = rpcs.index(read_i64_le(chunk, at + REF))
                rpcs.flags[i] = rpcs.flags[i] | STARTED
                write_i64_le(rpc_wait, read_i64_le(chunk, at + T_NS) - rpcs.arrival[i])
            elif kind == RPC_END:
                i = rpcs.index(read_i64_le(chunk, at + REF))
                write_i64_le(rpc_lat, read_i64_le(chunk, at + T_NS) - rpcs.arrival[i])
                rpc_prio.append(bool(rpcs.flags[i] & PRIORITY))
                rpcs.flags[i] = rpcs.flags[i] & ~OPEN
                self.rpc_errors += read_i64_le(chunk, at + VALUE)
            elif kind == EVENT_DROPPED:
                i = events.index(read_i64_le(chunk, at + REF))
                events.flags[i] = events.flags[i] & ~OPEN
                reason: int = read_i64_le(chunk, at + VALUE)
                self.dropped[reason] = self.dropped.get(reason, 0) + 1
            elif kind == JOB_TIMEOUT:
                self.job_timeouts += 1
            elif kind == SYNC_WAKE:
                if read_i64_le(chunk, at + VALUE) < 0:
                    self.sync_timeouts += 1
            elif kind == READ_PAUSED:
                self.paused_since[read_i64_le(chunk, at + VM)] = read_i64_le(chunk, at + T_NS)
            elif kind == READ_RESUMED:
                self.read_paused_ns += read_i64_le(chunk, at + VALUE)
                self.paused_since.pop(read_i64_le(chunk, at + VM), None)
            at += RECORD_SIZE
        _keep(self.event_latency, ev_lat)
        _keep(self.event_start_latency, ev_start)
        _keep(self.rpc_latency, rpc_lat)
        _keep(self.rpc_queue_wait, rpc_wait)
        _keep(self.job_waits, job_waits)
        if rpc_prio:
            self.rpc_priority.append(np.array(rpc_prio, bool))

    def _lock(self, kind: int, vm: int, value: int) -> None:
        """Count a mutex acquisition (``value``: its wait) or release (its hold)."""
        while len(self.locks) <= vm:
            self.locks.append(LockCounts())
        s = self.locks[vm]
        if kind == LOCK_ACQUIRE:
            s.acquired += 1
            if value > 0:
                s.contended += 1
            s.wait_sum += value
            if value > s.wait_max:
                s.wait_max = value
        else:
            s.hold_sum += value
            if value > s.hold_max:
                s.hold_max = value

    def _readers(self) -> None:
        """Note which threads read a monitor (threads registered since the last chunk)."""
        roles = self.timeline.threads
        while len(self._is_reader) < len(roles):
            self._is_reader.append(roles[len(self._is_reader)].role in READER_ROLES)
            self._reader_open.append(-1)

    def results(self, end_ns: int, watch: dict[str, Any]) -> dict[str, Any]:
        """The ``--json`` object of one policy (without ``spec`` and ``timing``)."""
        n = self.n_events
        latency = _ms(self.event_latency)
        handled = len(latency)
        dropped = sum(self.dropped.values())
        to_start = _ms(self.event_start_latency)
        m = self.n_rpcs
        rpc_lat = _ms(self.rpc_latency)
        completed = len(rpc_lat)
        prio = np.concatenate(self.rpc_priority) if self.rpc_priority else np.zeros(0, bool)
        rpcs = self.rpcs
        # never taken by a worker: they waited until the end
        waiting = [end_ns - rpcs.arrival[i] for i in rpcs.still_open()
                   if not rpcs.flags[i] & STARTED]
        queue_wait = _ms([*self.rpc_queue_wait, np.array(waiting, np.int64)])
        waits = _ms(self.job_waits)
        paused = self.read_paused_ns + sum(end_ns - t for t in self.paused_since.values())
        paths = {self.timeline.paths[pid]: count.n
                 for pid, count in enumerate(self.path_counts) if count.n}
        findings = [f.to_json() for f in self.timeline.findings]
        deadlocks = sum(1 for f in self.timeline.findings
                        if f.kind == "deadlock" and f.phase == "closed")
        return {
            "event_latency_ms": stats(latency),
            "event_start_latency_ms": stats(to_start),
            "rpc_latency_ms": {**stats(rpc_lat), "mean": _mean(rpc_lat)},
            "priority_rpc_latency_ms": {**stats(rpc_lat[prio]), "mean": _mean(rpc_lat[prio])},
            "rpc_queue_wait_ms": {"mean": _mean(queue_wait), **stats(queue_wait)},
            "job_wait_ms": {"mean": _mean(waits), **stats(waits)},
            "job_timeouts": self.job_timeouts + self.sync_timeouts,
            "peak_queue_depth": self.peak_depth,
            "peak_queued_bytes": self.peak_bytes,
            "read_paused_ns": paused,
            "reader_stalled_ns": self.reader_stalled_ns,
            "events": n,
            "events_handled": handled,
            "events_dropped": dropped,
            "events_dropped_job_timeout": self.dropped.get(DROP_JOB_TIMEOUT, 0),
            "events_pending": n - handled - dropped,
            "event_paths": paths,
            "rpcs": m,
            "rpcs_completed": completed,
            "rpc_errors": self.rpc_errors,
            "rpcs_unfinished": m - completed,
            "deadlocks": deadlocks,
            "ordering_violations": watch["ordering_violations"],
            "locks": {self.timeline.vms[v]: s.row()
                      for v, s in enumerate(self.locks) if s.acquired or s.hold_sum},
            "findings": findings,
            "findings_suppressed": watch["suppressed"],
            "end_ns": end_ns,
        }


def _keep(parts: list[np.ndarray], values: BytesWriter) -> None:
    """A chunk's values (int64 written as they came), kept as one array."""
    if len(values):
        parts.append(np.frombuffer(values.getvalue(), "<i8"))


def _ms(parts: list[np.ndarray]) -> np.ndarray:
    """ns values kept in chunks, as one array of ms."""
    return np.concatenate(parts) / 1e6 if parts else np.zeros(0)


def _mean(a: np.ndarray) -> float | None:
    return round(float(a.mean()), 6) if len(a) else None


def stats(a: np.ndarray) -> dict[str, float | None]:
    """p50/p90/p99/max in one percentile method (numpy quantile, linear); None when empty."""
    if not len(a):
        return {"p50": None, "p90": None, "p99": None, "max": None}
    q = np.quantile(a, [0.5, 0.9, 0.99], method="linear")
    return {"p50": round(float(q[0]), 6), "p90": round(float(q[1]), 6),
            "p99": round(float(q[2]), 6), "max": round(float(a.max()), 6)}
