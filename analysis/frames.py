"""Timelines as pandas frames: one row per event, handler stage, RPC, lock hold, queue
change, reading pause and finding, for every policy of a run.

Frames are the analysis' one view of a replay: metrics, reports and exports read them and
never the raw records, so every number in a report can be recomputed from an export.
Times are integer nanoseconds of virtual time (columns end in ``_ns``); a time that never
happened (an event never started, an RPC still running at the end) is null (``<NA>``).
Columns, per frame (``policy`` is the spec as typed, in run order):

``events``    policy, id, vm, name, class, arrival_ns, start_ns (first stage began),
              end_ns (EVENT_DONE: the event was handled), thread (of the first stage),
              path, dropped, drop_reason, bytes
``handlers``  policy, event, vm, thread, role (of the thread), stage, begin_ns, end_ns
              (run end if still running; one row per stage)
``rpcs``      policy, id, api, vm, priority, thread (the worker), arrival_ns, start_ns
              (a worker took it), job_wait_ns, job_begin_ns, end_ns, error, timed_out
              (its job or sync wait timed out)
``locks``     policy, lock (``mutex`` or ``job``), vm, thread, role, wait_start_ns,
              acquired_ns, released_ns (run end if still held), wait_ns, hold_ns
``queues``    policy, queue, vm, t_ns, depth, bytes (after each change)
``pauses``    policy, vm, paused_ns, resumed_ns (run end if never resumed)
``findings``  policy, kind, time_ns, vms, threads, phase, detail
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from tracer.rundir import load_timelines
from tracer.timeline import DROP_DESTROYED, DROP_JOB_TIMEOUT, DROP_NOT_SENT, Kind, Timeline

K = Kind
DROP_REASONS = {DROP_JOB_TIMEOUT: "job-timeout", DROP_DESTROYED: "destroyed",
                DROP_NOT_SENT: "not-sent"}
NA = pd.NA


@dataclass
class Frames:
    """Every frame of a run (rows of all policies; ``specs`` gives their order)."""

    specs: list[str]
    events: pd.DataFrame
    handlers: pd.DataFrame
    rpcs: pd.DataFrame
    locks: pd.DataFrame
    queues: pd.DataFrame
    pauses: pd.DataFrame
    findings: pd.DataFrame

    def named(self) -> dict[str, pd.DataFrame]:
        """The frames by name, in documentation order (``specs`` excluded)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "specs"}

    def of(self, spec: str) -> Frames:
        """The frames of one policy."""
        return Frames([spec], **{name: df[df["policy"] == spec].reset_index(drop=True)
                                 for name, df in self.named().items()})


def load_frames(run_dir: Path) -> Frames:
    """The frames of every policy in a run directory."""
    return build_frames(load_timelines(run_dir))


def build_frames(timelines: Sequence[Timeline]) -> Frames:
    """The frames of every timeline, concatenated in the given (run) order."""
    parts = [_Builder(tl).frames() for tl in timelines]
    names = [f.name for f in fields(Frames) if f.name != "specs"]
    joined = {}
    for name in names:
        dfs = [p[name] for p in parts]
        joined[name] = (pd.concat(dfs, ignore_index=True) if dfs else _empty(name))
    return Frames([tl.spec for tl in timelines], **joined)


def _opt(values: np.ndarray) -> pd.Series:
    """Times with -1 for "never" as a nullable integer column."""
    s = pd.Series(values, dtype="Int64")
    return s.mask(s < 0)


_COLUMNS = {
    "events": ["policy", "id", "vm", "name", "class", "arrival_ns", "start_ns", "end_ns",
               "thread", "path", "dropped", "drop_reason", "bytes"],
    "handlers": ["policy", "event", "vm", "thread", "role", "stage", "begin_ns", "end_ns"],
    "rpcs": ["policy", "id", "api", "vm", "priority", "thread", "arrival_ns", "start_ns",
             "job_wait_ns", "job_begin_ns", "end_ns", "error", "timed_out"],
    "locks": ["policy", "lock", "vm", "thread", "role", "wait_start_ns", "acquired_ns",
              "released_ns", "wait_ns", "hold_ns"],
    "queues": ["policy", "queue", "vm", "t_ns", "depth", "bytes"],
    "pauses": ["policy", "vm", "paused_ns", "resumed_ns"],
    "findings": ["policy", "kind", "time_ns", "vms", "threads", "phase", "detail"],
}


def _empty(name: str) -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in _COLUMNS[name]})


class _Builder:
    """Builds one timeline's frames from its records, vectorised per record kind."""

    def __init__(self, tl: Timeline) -> None:
        self.tl = tl
        rec = np.array(tl.records, dtype=np.int64).reshape(-1, 6)
        self.t, self.kind, self.thread, self.vm, self.ref, self.value = rec.T
        self.vm_names = np.array(list(tl.vms) + [""], dtype=object)  # index -1 → ""
        self.thread_names = np.array([th.name for th in tl.threads] + [""], dtype=object)
        self.roles = np.array([th.role for th in tl.threads] + [""], dtype=object)

    def sel(self, kind: Kind) -> np.ndarray:
        return np.flatnonzero(self.kind == kind)

    def frames(self) -> dict[str, pd.DataFrame]:
        return {"events": self.events(), "handlers": self.handlers(), "rpcs": self.rpcs(),
                "locks": self.locks(), "queues": self.queues(), "pauses": self.pauses(),
                "findings": self.findings()}

    def _first_by_ref(self, idx: np.ndarray, n: int, column: np.ndarray) -> np.ndarray:
        """Per id in ``0..n-1``: ``column`` at the first record of ``idx`` with that ref."""
        out = np.full(n, -1, dtype=np.int64)
        refs = self.ref[idx]
        ok = (refs >= 0) & (refs < n)
        refs, idx = refs[ok], idx[ok]
        uniq, first = np.unique(refs, return_index=True)
        out[uniq] = column[idx[first]]
        return out

    def _last_by_ref(self, idx: np.ndarray, n: int, column: np.ndarray) -> np.ndarray:
        return self._first_by_ref(idx[::-1], n, column)

    def events(self) -> pd.DataFrame:
        tl = self.tl
        n = len(tl.events)
        begins = self.sel(K.HANDLER_BEGIN)
        done = self.sel(K.EVENT_DONE)
        dropped = self.sel(K.EVENT_DROPPED)
        thread = self._first_by_ref(begins, n, self.thread)
        path = self._last_by_ref(done, n, self.value)
        reason = self._last_by_ref(dropped, n, self.value)
        paths = np.array(list(tl.paths) + [None], dtype=object)
        return pd.DataFrame({
            "policy": tl.spec,
            "id": np.arange(n, dtype=np.int64),
            "vm": self.vm_names[np.array([e.vm for e in tl.events], dtype=np.int64)]
            if n else np.array([], dtype=object),
            "name": [e.name for e in tl.events],
            "class": [e.cls for e in tl.events],
            "arrival_ns": np.array([e.arrival_ns for e in tl.events], dtype=np.int64),
            "start_ns": _opt(self._first_by_ref(begins, n, self.t)),
            "end_ns": _opt(self._last_by_ref(done, n, self.t)),
            "thread": np.where(thread >= 0, self.thread_names[thread], None),
            "path": paths[path],
            "dropped": reason > 0,
            "drop_reason": [DROP_REASONS.get(int(r)) for r in reason],
            "bytes": np.array([e.size for e in tl.events], dtype=np.int64),
        }, columns=_COLUMNS["events"])

    def _pairs(self, opens: np.ndarray, closes: np.ndarray,
               *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pair the k-th open with the k-th close of the same key (record order); -1 when a
        slice is still open at the end of the run."""
        names = [f"k{i}" for i in range(len(keys))]

        def numbered(idx: np.ndarray) -> pd.DataFrame:
            df = pd.DataFrame({n: k[idx] for n, k in zip(names, keys, strict=True)})
            df["n"] = df.groupby(names).cumcount()
            df["i"] = idx
            return df

        merged = numbered(opens).merge(numbered(closes), on=[*names, "n"], how="left",
                                       suffixes=("", "_close"), sort=False)
        return opens, merged["i_close"].fillna(-1).to_numpy(dtype=np.int64)

    def handlers(self) -> pd.DataFrame:
        opens = self.sel(K.HANDLER_BEGIN)
        closes = self.sel(K.HANDLER_END)
        opens, close_at = self._pairs(opens, closes, self.ref, self.value)
        end = np.where(close_at >= 0, self.t[np.maximum(close_at, 0)], self.tl.end_ns)
        return pd.DataFrame({
            "policy": self.tl.spec, "event": self.ref[opens], "vm": self.vm_names[self.vm[opens]],
            "thread": self.thread_names[self.thread[opens]],
            "role": self.roles[self.thread[opens]], "stage": self.value[opens],
            "begin_ns": self.t[opens], "end_ns": end,
        }, columns=_COLUMNS["handlers"])

    def rpcs(self) -> pd.DataFrame:
        tl = self.tl
        n = len(tl.rpcs)
        start = self.sel(K.RPC_START)
        end = self.sel(K.RPC_END)
        job = self.sel(K.JOB_BEGIN)
        job = job[self.ref[job] >= 0]
        timeouts = self.sel(K.JOB_TIMEOUT)
        timeouts = timeouts[self.ref[timeouts] >= 0]
        sync_timeouts = self.sel(K.SYNC_WAKE)
        sync_timeouts = sync_timeouts[self.value[sync_timeouts] < 0]
        timed_out = np.zeros(n, dtype=bool)
        for idx in (timeouts, sync_timeouts):
            refs = self.ref[idx]
            timed_out[refs[refs < n]] = True
        worker = self._first_by_ref(start, n, self.thread)
        return pd.DataFrame({
            "policy": tl.spec,
            "id": np.arange(n, dtype=np.int64),
            "api": [r.api for r in tl.rpcs],
            "vm": self.vm_names[np.array([r.vm for r in tl.rpcs], dtype=np.int64)]
            if n else np.array([], dtype=object),
            "priority": np.array([r.priority for r in tl.rpcs], dtype=bool),
            "thread": np.where(worker >= 0, self.thread_names[worker], None),
            "arrival_ns": np.array([r.arrival_ns for r in tl.rpcs], dtype=np.int64),
            "start_ns": _opt(self._first_by_ref(start, n, self.t)),
            "job_wait_ns": _opt(self._first_by_ref(job, n, self.value)),
            "job_begin_ns": _opt(self._first_by_ref(job, n, self.t)),
            "end_ns": _opt(self._first_by_ref(end, n, self.t)),
            "error": self._first_by_ref(end, n, self.value) == 1,
            "timed_out": timed_out,
        }, columns=_COLUMNS["rpcs"])

    def locks(self) -> pd.DataFrame:
        parts = []
        # A VM's mutex has one holder at a time (pair per VM); a job pairs by VM and owner.
        for lock, acquire, release, keys in (
                ("mutex", K.LOCK_ACQUIRE, K.LOCK_RELEASE, (self.vm,)),
                ("job", K.JOB_BEGIN, K.JOB_END, (self.vm, self.ref))):
            opens, close_at = self._pairs(self.sel(acquire), self.sel(release), *keys)
            released = np.where(close_at >= 0, self.t[np.maximum(close_at, 0)], self.tl.end_ns)
            acquired = self.t[opens]
            wait = self.value[opens]
            parts.append(pd.DataFrame({
                "policy": self.tl.spec, "lock": lock, "vm": self.vm_names[self.vm[opens]],
                "thread": self.thread_names[self.thread[opens]],
                "role": self.roles[self.thread[opens]],
                "wait_start_ns": acquired - wait, "acquired_ns": acquired,
                "released_ns": released, "wait_ns": wait, "hold_ns": released - acquired,
                "_order": opens,
            }))
        df = pd.concat(parts, ignore_index=True).sort_values("_order", kind="stable")
        return df.drop(columns="_order").reset_index(drop=True)[_COLUMNS["locks"]]

    def queues(self) -> pd.DataFrame:
        idx = np.flatnonzero((self.kind == K.QUEUE_DEPTH) | (self.kind == K.QUEUE_BYTES))
        is_depth = self.kind[idx] == K.QUEUE_DEPTH
        df = pd.DataFrame({
            "q": self.ref[idx], "t_ns": self.t[idx],
            "depth": pd.Series(np.where(is_depth, self.value[idx], -1)).replace(-1, np.nan),
            "bytes": pd.Series(np.where(~is_depth, self.value[idx], -1)).replace(-1, np.nan),
        })
        df[["depth", "bytes"]] = df.groupby("q")[["depth", "bytes"]].ffill().fillna(0)
        # A depth and a bytes record at the same time are one change: keep the last state.
        df = df[~df.duplicated(["q", "t_ns"], keep="last")]
        queues = self.tl.queues
        names = np.array([q.name for q in queues] + [""], dtype=object)
        qvm = np.array([q.vm for q in queues] + [-1], dtype=np.int64)
        q = df["q"].to_numpy()
        return pd.DataFrame({
            "policy": self.tl.spec, "queue": names[q], "vm": self.vm_names[qvm[q]],
            "t_ns": df["t_ns"].to_numpy(), "depth": df["depth"].to_numpy(dtype=np.int64),
            "bytes": df["bytes"].to_numpy(dtype=np.int64),
        }, columns=_COLUMNS["queues"])

    def pauses(self) -> pd.DataFrame:
        opens, close_at = self._pairs(self.sel(K.READ_PAUSED), self.sel(K.READ_RESUMED),
                                      self.vm)
        resumed = np.where(close_at >= 0, self.t[np.maximum(close_at, 0)], self.tl.end_ns)
        return pd.DataFrame({"policy": self.tl.spec, "vm": self.vm_names[self.vm[opens]],
                             "paused_ns": self.t[opens], "resumed_ns": resumed},
                            columns=_COLUMNS["pauses"])

    def findings(self) -> pd.DataFrame:
        fs = self.tl.findings
        return pd.DataFrame({
            "policy": self.tl.spec, "kind": [f.kind for f in fs],
            "time_ns": np.array([f.time_ns for f in fs], dtype=np.int64),
            "vms": [", ".join(f.vms) for f in fs], "threads": [", ".join(f.threads) for f in fs],
            "phase": [f.phase for f in fs], "detail": [f.detail for f in fs],
        }, columns=_COLUMNS["findings"])


def export(frames: Frames, out_dir: Path, fmt: str) -> list[Path]:
    """Write one file per frame (``events.csv``, ...); return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in frames.named().items():
        path = out_dir / f"{name}.{fmt}"
        if fmt == "csv":
            df.to_csv(path, index=False, lineterminator="\n")
        else:
            df.to_parquet(path, index=False, compression="zstd")
        written.append(path)
    return written
