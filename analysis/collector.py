"""The metrics collector: a consumer of the timeline stream that keeps what results need.

It takes record chunks as the replay runs (vectorised with numpy per chunk) and keeps the
results per finished event and RPC (latencies, 8 bytes each), the arrival times of those
still in flight, per-VM lock counters and queue peaks — never the records themselves.
:meth:`Collector.results` turns them into the replay's ``--json`` object for one policy.
Percentiles: numpy ``quantile``, linear.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tracer.timeline import DROP_JOB_TIMEOUT, Kind, Timeline

K = Kind
READER_ROLES = ("mainloop", "vm-thread")
#: What lock tables sort by (columns of :func:`lock_row`, without units).
LOCK_SORT_KEYS = ("acquired", "contended", "wait_total", "wait_avg", "wait_max",
                  "hold_total", "hold_max")


class InFlight:
    """Arrival times and flags of the items (events or RPCs) by id, for those still in flight.

    Ids are dense, given in arrival order, and items finish in roughly that order, so the
    arrays cover only the ids from the oldest unfinished one up and slide past finished
    ones: memory follows how many items are in flight, not how long the session is.
    """

    def __init__(self) -> None:
        self.base = 0
        self.top = 0
        self.arrival = np.zeros(1024, np.int64)
        self.open = np.zeros(1024, bool)
        self.started = np.zeros(1024, bool)
        self.priority = np.zeros(1024, bool)

    def index(self, ids: np.ndarray) -> np.ndarray:
        """Positions of ``ids`` in the arrays (room made for new ids)."""
        if not len(ids):
            return ids
        top = int(ids.max()) + 1
        if top - self.base > len(self.arrival):
            self._slide(top)
        self.top = max(self.top, top)
        idx = ids - self.base
        if idx.min() < 0:
            raise ValueError(f"item {int(ids.min())} referenced after it finished")
        return idx

    def _slide(self, top: int) -> None:
        """Drop the finished ids below the oldest open one, then grow to fit ``top``."""
        used = self.top - self.base
        still = np.flatnonzero(self.open[:used])
        drop = int(still[0]) if len(still) else used
        size = max(1024, 2 * (top - self.base - drop))
        for name in ("arrival", "open", "started", "priority"):
            old = getattr(self, name)
            new = np.zeros(size, old.dtype)
            new[: used - drop] = old[drop:used]
            setattr(self, name, new)
        self.base += drop

    def arrive(self, ids: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Items ``ids`` arrived at ``times``; their positions."""
        idx = self.index(ids)
        self.arrival[idx] = times
        self.open[idx] = True
        return idx

    def still_open(self) -> np.ndarray:
        """Positions of the items not finished yet."""
        return np.flatnonzero(self.open[: self.top - self.base])


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
        #: Counts kept as they come (no per-event arrays needed for them).
        self.path_counts = np.zeros(0, dtype=np.int64)
        self.dropped: dict[int, int] = {}
        self.rpc_errors = 0
        self.n_events = 0
        self.n_rpcs = 0
        self.job_timeouts = 0
        self.sync_timeouts = 0
        self.job_waits: list[np.ndarray] = []
        self.peak_depth = 0
        self.peak_bytes = 0
        self.read_paused_ns = 0
        self.reader_stalled_ns = 0
        #: Per VM: acquired, contended, wait sum, wait max, hold sum, hold max (ns).
        self.lock_stats = np.zeros((0, 6), dtype=np.int64)
        self.paused_since: dict[int, int] = {}
        self._is_reader = np.zeros(0, dtype=bool)
        self._reader_open: dict[int, int] = {}

    def __call__(self, chunk: Sequence[int]) -> None:
        """Take a chunk of records (a flat list, six ints per record)."""
        if not chunk:
            return
        a = np.fromiter(chunk, np.int64, len(chunk)).reshape(-1, 6)  # 1.5x np.array
        t, kind, thread, vm, ref, value = a.T
        self._events(t, kind, ref, value)
        self._rpcs(t, kind, ref, value)
        self.job_timeouts += int((kind == K.JOB_TIMEOUT).sum())
        self.sync_timeouts += int(((kind == K.SYNC_WAKE) & (value < 0)).sum())
        sel = kind == K.JOB_BEGIN
        if sel.any():
            self.job_waits.append(value[sel])
        sel = kind == K.QUEUE_DEPTH
        if sel.any():
            self.peak_depth = max(self.peak_depth, int(value[sel].max()))
        sel = kind == K.QUEUE_BYTES
        if sel.any():
            self.peak_bytes = max(self.peak_bytes, int(value[sel].max()))
        self.read_paused_ns += int(value[kind == K.READ_RESUMED].sum())
        for i in np.flatnonzero(kind == K.READ_PAUSED):
            self.paused_since[int(vm[i])] = int(t[i])
        for i in np.flatnonzero(kind == K.READ_RESUMED):
            self.paused_since.pop(int(vm[i]), None)
        self._locks(kind, vm, value)
        self._reader_stalls(t, kind, thread)

    def _events(self, t: np.ndarray, kind: np.ndarray, ref: np.ndarray,
                value: np.ndarray) -> None:
        events = self.events
        sel = kind == K.EVENT_ARRIVE
        events.arrive(ref[sel], t[sel])
        sel = (kind == K.HANDLER_BEGIN) & (value == 0)
        if sel.any():  # the first handler stage of each event that had none yet
            ids, first = np.unique(ref[sel], return_index=True)
            idx = events.index(ids)
            new = ~events.started[idx]
            idx = idx[new]
            events.started[idx] = True
            self.event_start_latency.append(t[sel][first][new] - events.arrival[idx])
        sel = kind == K.EVENT_DONE
        if sel.any():
            idx = events.index(ref[sel])
            self.event_latency.append(t[sel] - events.arrival[idx])
            events.open[idx] = False
            counts = np.bincount(value[sel])
            if len(counts) > len(self.path_counts):
                counts[: len(self.path_counts)] += self.path_counts
                self.path_counts = counts
            else:
                self.path_counts[: len(counts)] += counts
        sel = kind == K.EVENT_DROPPED
        if sel.any():
            events.open[events.index(ref[sel])] = False
            for reason, count in zip(*np.unique(value[sel], return_counts=True), strict=True):
                self.dropped[int(reason)] = self.dropped.get(int(reason), 0) + int(count)
        self.n_events = events.top

    def _rpcs(self, t: np.ndarray, kind: np.ndarray, ref: np.ndarray,
              value: np.ndarray) -> None:
        rpcs = self.rpcs
        sel = kind == K.RPC_ARRIVE
        idx = rpcs.arrive(ref[sel], t[sel])  # may move the arrays: index them after
        rpcs.priority[idx] = value[sel] > 0
        self.n_rpcs = rpcs.top
        sel = kind == K.RPC_START
        if sel.any():
            idx = rpcs.index(ref[sel])
            rpcs.started[idx] = True
            self.rpc_queue_wait.append(t[sel] - rpcs.arrival[idx])
        sel = kind == K.RPC_END
        if sel.any():
            idx = rpcs.index(ref[sel])
            self.rpc_latency.append(t[sel] - rpcs.arrival[idx])
            self.rpc_priority.append(rpcs.priority[idx])
            rpcs.open[idx] = False
            self.rpc_errors += int(value[sel].sum())

    def _locks(self, kind: np.ndarray, vm: np.ndarray, value: np.ndarray) -> None:
        """Per-VM mutex counters, grouped with numpy (one pass per chunk, any VM count)."""
        acq = kind == K.LOCK_ACQUIRE
        rel = kind == K.LOCK_RELEASE
        if not (acq.any() or rel.any()):
            return
        n = int(vm[acq | rel].max()) + 1
        stats = self.lock_stats
        if len(stats) < n:
            stats = self.lock_stats = np.vstack([stats, np.zeros((n - len(stats), 6), np.int64)])
        wv, waits = vm[acq], value[acq]
        hv, holds = vm[rel], value[rel]
        stats[:, 0] += np.bincount(wv, minlength=len(stats))
        stats[:, 1] += np.bincount(wv, weights=waits > 0, minlength=len(stats)).astype(np.int64)
        stats[:, 2] += np.bincount(wv, weights=waits, minlength=len(stats)).astype(np.int64)
        np.maximum.at(stats[:, 3], wv, waits)
        stats[:, 4] += np.bincount(hv, weights=holds, minlength=len(stats)).astype(np.int64)
        np.maximum.at(stats[:, 5], hv, holds)

    def _reader_stalls(self, t: np.ndarray, kind: np.ndarray, thread: np.ndarray) -> None:
        """Time monitor readers spend in handler stages (lock waits included): reading
        nothing meanwhile."""
        roles = self.timeline.threads
        if len(self._is_reader) < len(roles):
            self._is_reader = np.array([r.role in READER_ROLES for r in roles], dtype=bool)
        sel = (kind == K.HANDLER_BEGIN) | (kind == K.HANDLER_END)
        sel &= thread >= 0
        if not sel.any() or not len(self._is_reader):
            return
        idx = np.flatnonzero(sel)
        idx = idx[self._is_reader[thread[idx]]]
        # Each reader's records in order (a stable sort by thread): an END closes the BEGIN
        # just before it; one first in the chunk closes what the last chunk left open.
        order = np.argsort(thread[idx], kind="stable")
        th, ts, begin = thread[idx][order], t[idx][order], kind[idx][order] == K.HANDLER_BEGIN
        first = np.ones(len(th), bool)
        first[1:] = th[1:] != th[:-1]
        closes = ~begin & ~first
        closes[1:] &= begin[:-1]
        at = np.flatnonzero(closes)
        stalled = int((ts[at] - ts[at - 1]).sum())
        open_at = self._reader_open
        for i in np.flatnonzero(first & ~begin).tolist():
            stalled += int(ts[i]) - open_at.pop(int(th[i]), int(ts[i]))
        last = np.ones(len(th), bool)
        last[:-1] = first[1:]
        for i in np.flatnonzero(last).tolist():
            if begin[i]:
                open_at[int(th[i])] = int(ts[i])
            else:
                open_at.pop(int(th[i]), None)
        self.reader_stalled_ns += stalled

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
        waiting = rpcs.still_open()  # never taken by a worker: they waited until the end
        waiting = waiting[~rpcs.started[waiting]]
        queue_wait = _ms([*self.rpc_queue_wait, end_ns - rpcs.arrival[waiting]])
        waits = np.concatenate(self.job_waits) / 1e6 if self.job_waits else np.zeros(0)
        paused = self.read_paused_ns + sum(end_ns - t for t in self.paused_since.values())
        paths = {self.timeline.paths[pid]: int(count)
                 for pid, count in enumerate(self.path_counts) if count}
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
            "locks": {self.timeline.vms[v]: lock_row([int(x) for x in s])
                      for v, s in enumerate(self.lock_stats) if s[0] or s[4]},
            "findings": findings,
            "findings_suppressed": watch["suppressed"],
            "end_ns": end_ns,
        }


def lock_row(s: list[int]) -> dict[str, Any]:
    acquired, contended, wait_sum, wait_max, hold_sum, hold_max = s
    return {"acquired": acquired, "contended": contended, "wait_total_ms": wait_sum / 1e6,
            "wait_avg_ms": wait_sum / 1e6 / acquired if acquired else 0.0,
            "wait_max_ms": wait_max / 1e6, "hold_total_ms": hold_sum / 1e6,
            "hold_max_ms": hold_max / 1e6}


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
