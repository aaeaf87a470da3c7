"""Metrics computed from the frames, one policy at a time.

Everything here reads :class:`analysis.frames.Frames` only, so a report's numbers can be
recomputed from an export. Percentiles: numpy ``quantile`` with ``method="linear"`` (the
collector's :func:`analysis.collector.stats`), in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.collector import LOCK_SORT_KEYS, stats
from analysis.frames import Frames

MS = 1e6
#: Finding kinds, in report order .
FINDING_KINDS = ("deadlock", "starvation", "ordering-violation", "unbounded-growth",
                 "rare-path", "qemu-no-reply")
#: Thread roles that read monitors: time in handler stages stalls reading
#: (``reader_stalled``, lock waits included).
READER_ROLES = ("mainloop", "vm-thread")
#: Sort keys of the lock table (``perf lock contention -k``), all sorted largest first.


@dataclass(frozen=True)
class Metric:
    """One row of a report: ``better`` is "lower", "higher" or None (not ranked)."""

    key: str
    label: str
    better: str | None = "lower"


METRICS: tuple[Metric, ...] = (
    Metric("event_p50_ms", "event latency p50 ms"),
    Metric("event_p90_ms", "event latency p90 ms"),
    Metric("event_p99_ms", "event latency p99 ms"),
    Metric("event_max_ms", "event latency max ms"),
    Metric("start_p50_ms", "event start p50 ms"),
    Metric("start_p99_ms", "event start p99 ms"),
    Metric("interference_p99_ms", "interference p99 ms"),
    Metric("interference_max_ms", "interference max ms"),
    Metric("interference_share", "interference share %"),
    Metric("events_handled", "events handled", "higher"),
    Metric("events_dropped", "events dropped"),
    Metric("events_pending", "events pending"),
    Metric("rpc_p50_ms", "RPC latency p50 ms"),
    Metric("rpc_p99_ms", "RPC latency p99 ms"),
    Metric("rpc_max_ms", "RPC latency max ms"),
    Metric("rpc_queue_wait_p99_ms", "RPC queue wait p99 ms"),
    Metric("job_wait_p99_ms", "job wait p99 ms"),
    Metric("job_wait_max_ms", "job wait max ms"),
    Metric("priority_rpc_max_ms", "priority RPC max ms"),
    Metric("rpcs_completed", "RPCs completed", "higher"),
    Metric("rpc_errors", "RPC errors"),
    Metric("rpcs_unfinished", "RPCs unfinished"),
    Metric("job_timeouts", "job timeouts"),
    Metric("mutex_contended", "mutex contended"),
    Metric("mutex_wait_total_ms", "mutex wait total ms"),
    Metric("mutex_wait_max_ms", "mutex wait max ms"),
    Metric("peak_queue_depth", "peak queue depth"),
    Metric("peak_queued_bytes", "peak queued bytes"),
    Metric("read_paused_ms", "reading paused ms"),
    Metric("reader_stalled_ms", "reader stalled ms"),
    *(Metric(f"findings_{k}", f"{k} (n)") for k in FINDING_KINDS),
)


def _ms(a: pd.Series | np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64) / MS


def _r(x: float) -> float:
    return round(float(x), 6)


def policy_metrics(frames: Frames, spec: str) -> dict[str, Any]:
    """Every :data:`METRICS` value of one policy (None where there is nothing to measure)."""
    f = frames.of(spec)
    ev, rpcs, locks = f.events, f.rpcs, f.locks
    handled = ev["end_ns"].notna().to_numpy()
    started = ev["start_ns"].notna().to_numpy()
    latency = _ms(ev["end_ns"][handled] - ev["arrival_ns"][handled])
    to_start = _ms(ev["start_ns"][started] - ev["arrival_ns"][started])
    interf_ns = interference(f).to_numpy()[handled & started]
    waits_ns = (ev["start_ns"] - ev["arrival_ns"]).to_numpy()[handled & started]
    done = rpcs["end_ns"].notna().to_numpy()
    rpc_lat = _ms(rpcs["end_ns"][done] - rpcs["arrival_ns"][done])
    prio_lat = rpc_lat[rpcs["priority"].to_numpy()[done]]
    queued = rpcs["start_ns"].notna().to_numpy()
    queue_wait = _ms(rpcs["start_ns"][queued] - rpcs["arrival_ns"][queued])
    job = locks[locks["lock"] == "job"]
    mutex = locks[locks["lock"] == "mutex"]
    job_wait = stats(_ms(job["wait_ns"]))
    reading = f.handlers[f.handlers["role"].isin(READER_ROLES)]
    paused = f.pauses
    out: dict[str, Any] = {}
    for name, values in (("event", latency), ("start", to_start),
                         ("interference", _ms(interf_ns)), ("rpc", rpc_lat)):
        out.update({f"{name}_{q}_ms": v for q, v in stats(values).items()})
    out.update({
        "interference_share": _r(100 * interf_ns.sum() / waits_ns.sum())
        if waits_ns.sum() else None,
        "events_handled": int(handled.sum()),
        "events_dropped": int(ev["dropped"].sum()),
        "events_pending": int(len(ev) - handled.sum() - ev["dropped"].sum()),
        "rpc_queue_wait_p99_ms": stats(queue_wait)["p99"],
        "job_wait_p99_ms": job_wait["p99"],
        "job_wait_max_ms": job_wait["max"],
        "priority_rpc_max_ms": stats(prio_lat)["max"],
        "rpcs_completed": int(done.sum()),
        "rpc_errors": int(rpcs["error"].sum()),
        "rpcs_unfinished": int((~done).sum()),
        "job_timeouts": int(rpcs["timed_out"].sum() + (ev["drop_reason"] == "job-timeout").sum()),
        "mutex_contended": int((mutex["wait_ns"] > 0).sum()),
        "mutex_wait_total_ms": _r(mutex["wait_ns"].sum() / MS),
        "mutex_wait_max_ms": _r(mutex["wait_ns"].max() / MS) if len(mutex) else None,
        "peak_queue_depth": int(f.queues["depth"].max()) if len(f.queues) else 0,
        "peak_queued_bytes": int(f.queues["bytes"].max()) if len(f.queues) else 0,
        "read_paused_ms": _r((paused["resumed_ns"] - paused["paused_ns"]).sum() / MS),
        "reader_stalled_ms": _r((reading["end_ns"] - reading["begin_ns"]).sum() / MS),
    })
    kinds = f.findings["kind"].where(
        (f.findings["kind"] != "deadlock") | (f.findings["phase"] == "closed"))
    for k in FINDING_KINDS:
        out[f"findings_{k}"] = int((kinds == k).sum())
    return {m.key: out[m.key] for m in METRICS}


def lock_table(frames: Frames, spec: str, sort: str = "wait_total") -> pd.DataFrame:
    """Per lock (each VM's mutex and job), ``perf lock contention`` style: acquired,
    contended, wait total/avg/max and hold total/max in ms, largest ``sort`` first."""
    if sort not in LOCK_SORT_KEYS:
        raise ValueError(f"unknown lock sort key {sort!r} (known: {', '.join(LOCK_SORT_KEYS)})")
    locks = frames.of(spec).locks
    name = locks["vm"].astype(str) + " " + locks["lock"].astype(str)
    g = locks.assign(name=name, contended=locks["wait_ns"] > 0).groupby("name", sort=True)
    table = pd.DataFrame({
        "acquired": g.size(),
        "contended": g["contended"].sum(),
        "wait_total": g["wait_ns"].sum() / MS,
        "wait_avg": g["wait_ns"].mean() / MS,
        "wait_max": g["wait_ns"].max() / MS,
        "hold_total": g["hold_ns"].sum() / MS,
        "hold_max": g["hold_ns"].max() / MS,
    }).rename_axis("lock").reset_index()
    table = table.astype({"acquired": np.int64, "contended": np.int64})
    return table.sort_values([sort, "lock"], ascending=[False, True],
                             kind="stable").reset_index(drop=True)


def interference(frames: Frames) -> pd.Series:
    """Per event (aligned with ``frames.events``): ns of [arrival, handler start] during
    which the thread that handles it ran a handler, held or waited for a lock, or served
    an RPC of another VM. 0 for events never started."""
    ev = frames.events
    big = np.iinfo(np.int64).max // 4  # an RPC still running is busy until the run ends
    spans = pd.concat([
        pd.DataFrame({"policy": frames.handlers["policy"], "thread": frames.handlers["thread"],
                      "vm": frames.handlers["vm"], "b": frames.handlers["begin_ns"],
                      "e": frames.handlers["end_ns"]}),
        pd.DataFrame({"policy": frames.locks["policy"], "thread": frames.locks["thread"],
                      "vm": frames.locks["vm"], "b": frames.locks["wait_start_ns"],
                      "e": frames.locks["released_ns"]}),
        pd.DataFrame({"policy": frames.rpcs["policy"], "thread": frames.rpcs["thread"],
                      "vm": frames.rpcs["vm"], "b": frames.rpcs["start_ns"],
                      "e": frames.rpcs["end_ns"].fillna(big)}),
    ], ignore_index=True)
    spans = spans[spans["b"].notna() & spans["thread"].notna()]
    out = np.zeros(len(ev), dtype=np.int64)
    started = ev["start_ns"].notna().to_numpy()
    if not len(spans) or not started.any():
        return pd.Series(out, index=ev.index, name="interference_ns")
    # Threads and VMs as small integer codes shared by spans and events.
    thread_codes, _ = pd.factorize(pd.concat([spans["policy"] + "\0" + spans["thread"],
                                              ev["policy"] + "\0" + ev["thread"].fillna("")]))
    vm_codes, vms = pd.factorize(pd.concat([spans["vm"], ev["vm"]]))
    n = len(spans)
    g, v = thread_codes[:n], vm_codes[:n]
    b = spans["b"].to_numpy(dtype=np.int64)
    e = spans["e"].to_numpy(dtype=np.int64)
    ub, ue, ug, uv = _union_per_key(g, v, b, e)
    seg = _segments(ug, uv, ub, ue)
    qg, qv = thread_codes[n:][started], vm_codes[n:][started]
    arrival = ev["arrival_ns"].to_numpy(dtype=np.int64)[started]
    start = ev["start_ns"].to_numpy(dtype=np.int64, na_value=0)[started]
    busy = seg["n"] >= 1
    only = seg["n"] == 1
    nv = len(vms) + 1
    total = (_measure_upto(seg["g"][busy], seg["b"][busy], seg["e"][busy], qg, start)
             - _measure_upto(seg["g"][busy], seg["b"][busy], seg["e"][busy], qg, arrival))
    own_key = seg["g"][only] * nv + seg["code"][only]
    own = (_measure_upto(own_key, seg["b"][only], seg["e"][only], qg * nv + qv, start)
           - _measure_upto(own_key, seg["b"][only], seg["e"][only], qg * nv + qv, arrival))
    out[started] = total - own
    return pd.Series(out, index=ev.index, name="interference_ns")


def _union_per_key(g: np.ndarray, v: np.ndarray, b: np.ndarray,
                   e: np.ndarray) -> tuple[np.ndarray, ...]:
    """Merge overlapping intervals of each (thread, VM): disjoint begin, end, thread, VM."""
    order = np.lexsort((b, v, g))
    g, v, b, e = g[order], v[order], b[order], e[order]
    same = np.r_[False, (g[1:] == g[:-1]) & (v[1:] == v[:-1])]
    reach = pd.Series(e).groupby(np.cumsum(~same)).cummax().to_numpy()  # ends so far
    new = ~same | (b > np.r_[-1, reach[:-1]])
    run_id = np.cumsum(new) - 1
    ub = b[new]
    ue = pd.Series(e).groupby(run_id).max().to_numpy()
    return ub, ue, g[new], v[new]


def _segments(g: np.ndarray, v: np.ndarray, b: np.ndarray, e: np.ndarray) -> dict[str, np.ndarray]:
    """Elementary segments per thread with the number of distinct VMs busy on it and, when
    one, its code (intervals of one VM are disjoint, so counts are distinct VMs)."""
    t = np.r_[b, e]
    gg = np.r_[g, g]
    dn = np.r_[np.ones(len(b), np.int64), -np.ones(len(e), np.int64)]
    dc = np.r_[v, -v].astype(np.int64)
    df = pd.DataFrame({"g": gg, "t": t, "dn": dn, "dc": dc}).groupby(["g", "t"], sort=True).sum()
    gs = df.index.get_level_values("g").to_numpy()
    ts = df.index.get_level_values("t").to_numpy()
    n = np.cumsum(df["dn"].to_numpy())
    code = np.cumsum(df["dc"].to_numpy())
    has_next = np.r_[gs[1:] == gs[:-1], False]
    end = np.r_[ts[1:], 0]
    keep = has_next & (n > 0)
    return {"g": gs[keep], "b": ts[keep], "e": end[keep], "n": n[keep], "code": code[keep]}


def _measure_upto(key: np.ndarray, b: np.ndarray, e: np.ndarray, qkey: np.ndarray,
                  qt: np.ndarray) -> np.ndarray:
    """Per query (key, t): the length of the key's disjoint segments that lies before t."""
    order = np.lexsort((b, key))
    key, b, e = key[order], b[order], e[order]
    length = e - b
    cum = np.cumsum(length) - length
    first = np.r_[True, key[1:] != key[:-1]]
    cum -= np.maximum.accumulate(np.where(first, cum, 0))
    ns, nq = len(key), len(qkey)
    allkey = np.r_[key, qkey]
    allt = np.r_[b, qt]
    tag = np.r_[np.zeros(ns, np.int64), np.ones(nq, np.int64)]
    combined = np.lexsort((tag, allt, allkey))
    rank = np.where(combined < ns, combined, -1)
    last = np.maximum.accumulate(rank)
    at = np.empty(nq, dtype=np.int64)
    queries = combined >= ns
    at[combined[queries] - ns] = last[queries]
    safe = np.maximum(at, 0)
    ok = (at >= 0) & (key[safe] == qkey) if ns else np.zeros(nq, dtype=bool)
    inside = np.clip(qt - b[safe], 0, length[safe]) if ns else np.zeros(nq, np.int64)
    return np.where(ok, cum[safe] + inside, 0) if ns else np.zeros(nq, np.int64)
