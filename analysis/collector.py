"""The metrics collector: a consumer of the timeline stream that keeps what results need.

It takes record chunks as the replay runs (vectorised with numpy per chunk) and keeps
per-event and per-RPC time arrays (8 bytes per field), per-VM lock counters and queue
peaks — never the records themselves. :meth:`Collector.results` turns them into the
replay's ``--json`` object for one policy. Percentiles: numpy ``quantile``, linear.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tracer.timeline import DROP_JOB_TIMEOUT, Kind, Timeline

K = Kind
READER_ROLES = ("mainloop", "vm-thread")


class Grow:
    """An array indexed by id, growing as ids appear (``fill`` where unset)."""

    def __init__(self, fill: int = -1, dtype: type = np.int64) -> None:
        self.fill = fill
        self.a: np.ndarray = np.full(1024, fill, dtype=dtype)

    def ensure(self, n: int) -> None:
        if n > len(self.a):
            size = max(n, len(self.a) + len(self.a) // 2)
            b = np.full(size, self.fill, dtype=self.a.dtype)
            b[: len(self.a)] = self.a
            self.a = b

    def view(self, n: int) -> np.ndarray:
        """The first ``n`` values (unset ones as ``fill``)."""
        self.ensure(n)
        return self.a[:n]

    def set(self, ids: np.ndarray, values: np.ndarray) -> None:
        if len(ids):
            self.ensure(int(ids.max()) + 1)
            self.a[ids] = values

    def set_first(self, ids: np.ndarray, values: np.ndarray) -> None:
        """Set only where still unset (the first value per id wins; chunks are in order)."""
        if len(ids):
            self.ensure(int(ids.max()) + 1)
            order = np.unique(ids, return_index=True)
            ids, first = order
            values = values[first]
            unset = self.a[ids] == self.fill
            self.a[ids[unset]] = values[unset]


class Collector:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.ev_arrival = Grow()
        self.ev_start = Grow()
        self.ev_done = Grow()
        self.rpc_arrival = Grow()
        self.rpc_start = Grow()
        self.rpc_end = Grow()
        self.rpc_priority = Grow(0, np.int8)
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
        a = np.array(chunk, dtype=np.int64).reshape(-1, 6)
        t, kind, thread, vm, ref, value = a.T
        sel = kind == K.EVENT_ARRIVE
        self.ev_arrival.set(ref[sel], t[sel])
        if sel.any():
            self.n_events = max(self.n_events, int(ref[sel].max()) + 1)
        sel = (kind == K.HANDLER_BEGIN) & (value == 0)
        self.ev_start.set_first(ref[sel], t[sel])
        sel = kind == K.EVENT_DONE
        self.ev_done.set(ref[sel], t[sel])
        if sel.any():
            counts = np.bincount(value[sel])
            if len(counts) > len(self.path_counts):
                counts[: len(self.path_counts)] += self.path_counts
                self.path_counts = counts
            else:
                self.path_counts[: len(counts)] += counts
        sel = kind == K.EVENT_DROPPED
        if sel.any():
            self.n_events = max(self.n_events, int(ref[sel].max()) + 1)
            for reason, count in zip(*np.unique(value[sel], return_counts=True), strict=True):
                self.dropped[int(reason)] = self.dropped.get(int(reason), 0) + int(count)
        sel = kind == K.RPC_ARRIVE
        self.rpc_arrival.set(ref[sel], t[sel])
        self.rpc_priority.set(ref[sel], value[sel])
        if sel.any():
            self.n_rpcs = max(self.n_rpcs, int(ref[sel].max()) + 1)
        sel = kind == K.RPC_START
        self.rpc_start.set(ref[sel], t[sel])
        sel = kind == K.RPC_END
        self.rpc_end.set(ref[sel], t[sel])
        self.rpc_errors += int(value[sel].sum())
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
        open_at = self._reader_open
        for ts, k, th in zip(t[idx].tolist(), kind[idx].tolist(), thread[idx].tolist(),
                             strict=True):
            if k == K.HANDLER_BEGIN:
                open_at[th] = ts
            else:
                self.reader_stalled_ns += ts - open_at.pop(th, ts)

    def results(self, end_ns: int, watch: dict[str, Any]) -> dict[str, Any]:
        """The ``--json`` object of one policy (without ``spec`` and ``timing``)."""
        n = self.n_events
        arrival = self.ev_arrival.view(n)
        done = self.ev_done.view(n)
        start = self.ev_start.view(n)
        handled = done >= 0
        dropped = sum(self.dropped.values())
        latency = (done[handled] - arrival[handled]) / 1e6
        started = start >= 0
        to_start = (start[started] - arrival[started]) / 1e6
        m = self.n_rpcs
        r_arr = self.rpc_arrival.view(m)
        r_end = self.rpc_end.view(m)
        r_start = self.rpc_start.view(m)
        completed = r_end >= 0
        rpc_lat = (r_end[completed] - r_arr[completed]) / 1e6
        queue_wait = np.where(r_start >= 0, r_start, end_ns)[: m] - r_arr
        prio = self.rpc_priority.view(m) > 0
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
            "priority_rpc_latency_ms": {**stats(rpc_lat[prio[completed]]),
                                        "mean": _mean(rpc_lat[prio[completed]])},
            "rpc_queue_wait_ms": {"mean": _mean(queue_wait / 1e6), **stats(queue_wait / 1e6)},
            "job_wait_ms": {"mean": _mean(waits), **stats(waits)},
            "job_timeouts": self.job_timeouts + self.sync_timeouts,
            "peak_queue_depth": self.peak_depth,
            "peak_queued_bytes": self.peak_bytes,
            "read_paused_ns": paused,
            "reader_stalled_ns": self.reader_stalled_ns,
            "events": n,
            "events_handled": int(handled.sum()),
            "events_dropped": dropped,
            "events_dropped_job_timeout": self.dropped.get(DROP_JOB_TIMEOUT, 0),
            "events_pending": int(n - handled.sum() - dropped),
            "event_paths": paths,
            "rpcs": m,
            "rpcs_completed": int(completed.sum()),
            "rpc_errors": self.rpc_errors,
            "rpcs_unfinished": int(m - completed.sum()),
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


def _mean(a: np.ndarray) -> float | None:
    return round(float(a.mean()), 6) if len(a) else None


def stats(a: np.ndarray) -> dict[str, float | None]:
    """p50/p90/p99/max in one percentile method (numpy quantile, linear); None when empty."""
    if not len(a):
        return {"p50": None, "p90": None, "p99": None, "max": None}
    q = np.quantile(a, [0.5, 0.9, 0.99], method="linear")
    return {"p50": round(float(q[0]), 6), "p90": round(float(q[1]), 6),
            "p99": round(float(q[2]), 6), "max": round(float(a.max()), 6)}
