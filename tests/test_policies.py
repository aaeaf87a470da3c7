"""The four policies on tiny sessions, with exact times derived from the default profile.

Costs (the default cost profile, in µs): read 10 + 0.001/byte, inline 30, deferred 100,
wake 10, pre 50, locked 20, between 20, post 50. An RPC: pre → lock → job → locked → per
command: unlock, send, reply read by the monitor's reader, re-lock → between → [sync wait]
→ post → end job → unlock. A command without API boundaries is an RPC arriving at send − pre. The
read cost of a message is ``read_ns(record)``; everything else is spelled out per case.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from statistics import fmean
from types import ModuleType
from typing import Any

import pytest
from replay_helpers import (
    BETWEEN,
    DEFERRED,
    INLINE,
    LOCKED,
    MS,
    POST,
    PRE,
    WAKE,
    Replayed,
    Session,
    read_ns,
    replay,
)

from replay.policy import parse_spec
from replay.profile import load_profile
from replay.run import run
from replay.scenarios import SCENARIOS
from replay.workload import LOOKAHEAD_NS, Workload
from tracer.session import Record as SessionRecord
from tracer.timeline import Kind

POLICIES = ("mainloop", "two-stage", "pool", "per-vm-thread")
SLOW_POST = 2 * MS
#: virDomainSlowOp holds its VM's mutex for 2 ms in ``post`` (as the hol-blocking scenario).
SLOW_PROFILE = {"apis": {"virDomainSlowOp": {"post": SLOW_POST / 1000}}}


def _event_done(run: Replayed, eid: int) -> tuple[int, str]:
    """When an event was handled and on which path."""
    rec = run.one(Kind.EVENT_DONE, ref=eid)
    return rec[0], run.timeline.paths[rec[5]]


def _slow_op_session(*events: tuple[int, int, str]) -> Session:
    """vm0 runs virDomainSlowOp from 1 ms (no QMP); ``events`` are (vm, t, name)."""
    s = Session(["vm0", "vm1"])
    s.api(0, 1 * MS, "virDomainSlowOp", 1, 4 * MS)
    for vm, t, name in events:
        s.event(vm, t, name)
    return s


@pytest.mark.parametrize("policy", POLICIES)
def test_inline_event_while_an_rpc_holds_the_mutex(policy: str) -> None:
    s = _slow_op_session((0, 1_100_000, "RTC_CHANGE"), (1, 1_200_000, "RTC_CHANGE"))
    recs = s.records()
    run = replay(policy, s.vms, recs, profile=load_profile("default", SLOW_PROFILE))
    r0 = read_ns(next(r for r in recs if r["vm"] == "vm0" and r["kind"] == "event"))
    r1 = read_ns(next(r for r in recs if r["vm"] == "vm1"))
    e0, e1 = run.event_id("RTC_CHANGE", 0), run.event_id("RTC_CHANGE", 1)
    rpc = run.rpc_id("virDomainSlowOp")

    # The RPC arrives at 1 ms and starts at once (mainloop dispatches it at the same ns);
    # it locks at +pre, holds the mutex through locked + post: released at 3.07 ms.
    release = 1 * MS + PRE + LOCKED + SLOW_POST
    assert run.one(Kind.RPC_START, ref=rpc)[0] == 1 * MS
    # e0's handler begins once it is read, then waits for the mutex until the release.
    e0_begin, e0_done = 1_100_000 + r0, release + INLINE
    # e1 on vm1 runs on its own thread at once ...
    e1_begin = 1_200_000 + r1
    rpc_end = release
    if policy == "mainloop":
        # ... except in the main loop, blocked on vm0's mutex until e0 is done.
        e1_begin = e0_done + r1
    if policy == "two-stage":
        # vm0's queue runs only when its job is free: the RPC drains it after post.
        e0_begin, e0_done = release, release + INLINE
        rpc_end = e0_done
    paths = {"mainloop": ("mainloop", "mainloop"), "two-stage": ("rpc-drain", "worker"),
             "pool": ("event-worker", "event-worker"),
             "per-vm-thread": ("vm-thread", "vm-thread")}[policy]

    assert run.times(Kind.HANDLER_BEGIN, ref=e0) == [e0_begin]
    assert run.times(Kind.HANDLER_BEGIN, ref=e1) == [e1_begin]
    assert _event_done(run, e0) == (e0_done, paths[0])
    assert _event_done(run, e1) == (e1_begin + INLINE, paths[1])
    assert run.one(Kind.RPC_END, ref=rpc)[0] == rpc_end


@pytest.mark.parametrize("policy", POLICIES)
def test_deferred_event_waits_for_the_job_until_the_rpc_ends(policy: str) -> None:
    s = Session(["vm0"])
    s.command(0, 1 * MS, "query-block", reply_ns=2 * MS)
    s.event(0, 1_500_000, "VSERPORT_CHANGE")
    recs = s.records()
    run = replay(policy, s.vms, recs)
    rr = read_ns(next(r for r in recs if r["kind"] == "reply"))
    re = read_ns(next(r for r in recs if r["kind"] == "event"))
    ev, rpc = run.event_id("VSERPORT_CHANGE"), run.rpc_id("query-block")

    # RPC: arrives at send − pre = 0.95 ms, locks at 1 ms, sends after locked (1.02 ms),
    # the reply is on the socket 2 ms later and read by the idle reader (+rr), then
    # between + post: its job ends at 3.09 ms + rr.
    send = 1 * MS + LOCKED
    assert run.one(Kind.RPC_ARRIVE, ref=rpc)[0] == 1 * MS - PRE
    assert run.times(Kind.CMD_SEND, ref=rpc) == [send]
    assert run.times(Kind.CMD_REPLY, ref=rpc) == [send + 2 * MS + rr]
    job_end = send + 2 * MS + rr + BETWEEN + POST
    begin = 1_500_000 + re  # the event is read when it arrives
    if policy == "two-stage":
        # queued until the job is free; the RPC drains it on its own thread with its job
        assert run.times(Kind.HANDLER_BEGIN, ref=ev) == [job_end]
        assert _event_done(run, ev) == (job_end + DEFERRED, "rpc-drain")
        assert run.one(Kind.RPC_END, ref=rpc)[0] == job_end + DEFERRED
        assert run.of(Kind.JOB_WAIT) == []
        return
    # the handler asks for the job when it is read, and gets it when the RPC ends its job
    handler = run.one(Kind.HANDLER_BEGIN, ref=ev)
    assert handler[0] == begin
    assert run.one(Kind.JOB_WAIT, ref=-ev - 1)[0] == begin
    assert run.one(Kind.JOB_BEGIN, ref=-ev - 1)[0::5] == (job_end, job_end - begin)
    path = {"mainloop": "global-worker", "pool": "event-worker",
            "per-vm-thread": "global-worker"}[policy]
    assert _event_done(run, ev) == (job_end + DEFERRED, path)
    assert run.one(Kind.RPC_END, ref=rpc)[0] == job_end


def test_pool_pauses_reading_at_max_queue_and_resumes_at_resume_at() -> None:
    s = _slow_op_session(*[(0, t, "RTC_CHANGE") for t in (1_100_000, 1_200_000, 1_300_000,
                                                          1_400_000)])
    recs = s.records()
    run = replay("pool:max_queue=2,resume_at=1,event_workers=1", s.vms, recs,
                 profile=load_profile("default", SLOW_PROFILE))
    r1, r2, r3, r4 = (read_ns(r) for r in recs if r["kind"] == "event")
    release = 1 * MS + PRE + LOCKED + SLOW_POST  # the RPC unlocks vm0 at 3.07 ms
    # e1 is read and taken by the one event thread, which waits for the mutex; e2 and e3
    # queue (depth 1, 2): reading pauses when e3 is queued. e4 stays unread.
    # At the release: e1 done at +inline; popping e2 leaves depth 1 = resume_at: reading
    # resumes, e4 is read (+r4) and queued behind e3 (depth 2): paused again; popping e3
    # (depth 1) resumes it. Each event then takes inline on the event thread.
    paused1 = 1_300_000 + r3
    e1_done = release + INLINE
    paused2 = e1_done + r4
    assert run.times(Kind.READ_PAUSED) == [paused1, paused2]
    assert [(r[0], r[5]) for r in run.of(Kind.READ_RESUMED)] == [
        (e1_done, e1_done - paused1), (e1_done + INLINE, e1_done + INLINE - paused2)]
    eids = [run.event_id("RTC_CHANGE", 0, i) for i in range(4)]
    assert [r[0] for r in run.of(Kind.MSG_READ)] == [
        1_100_000 + r1, 1_200_000 + r2, paused1, paused2]
    assert [_event_done(run, e)[0] for e in eids] == [
        e1_done, e1_done + INLINE, e1_done + 2 * INLINE, e1_done + 3 * INLINE]
    assert max(r[5] for r in run.of(Kind.QUEUE_DEPTH)) == 2


@pytest.mark.parametrize("policy", POLICIES)
def test_block_job_abort_is_woken_by_its_event(policy: str) -> None:
    s = Session(["vm0"])
    s.api(0, 1 * MS, "virDomainBlockJobAbort", 1, 5 * MS)
    s.command(0, 1 * MS + PRE + LOCKED, "block-job-cancel", reply_ns=2 * MS, thread=1,
              events=((3 * MS, "BLOCK_JOB_CANCELLED", {"device": "drive0"}),))
    recs = s.records()
    run = replay(f"{policy}:job_timeout=100ms", s.vms, recs)
    rr = read_ns(next(r for r in recs if r["kind"] == "reply"))
    re = read_ns(next(r for r in recs if r["kind"] == "event"))
    rpc, ev = run.rpc_id("virDomainBlockJobAbort"), run.event_id("BLOCK_JOB_CANCELLED")
    # arrives at 1 ms (api-begin); sends at 1 ms + pre + locked = 1.07 ms; reply read at
    # 3.07 ms + rr; between; then waits on the domain condition. The event arrives 3 ms
    # after the replayed send.
    send = 1 * MS + PRE + LOCKED
    sync = send + 2 * MS + rr + BETWEEN
    assert run.one(Kind.SYNC_WAIT, ref=rpc)[0] == sync
    arrival = send + 3 * MS
    assert run.one(Kind.EVENT_ARRIVE, ref=ev)[0] == arrival
    if policy == "two-stage":
        # the event is queued until the RPC ends its job, which it cannot: the sync wait
        # times out after job_timeout; then post, and the RPC drains the event itself
        assert run.one(Kind.SYNC_WAKE, ref=rpc)[0::5] == (sync + 100 * MS, -1)
        assert run.times(Kind.HANDLER_BEGIN, ref=ev) == [sync + 100 * MS + POST]
        assert _event_done(run, ev)[1] == "rpc-drain"
        assert run.one(Kind.RPC_END, ref=rpc)[5] == 1
        assert [f.phase for f in run.timeline.findings if f.kind == "deadlock"] == [
            "closed", "broken"]
        return
    # read on arrival (+re); the handler takes the mutex, wakes the API (wake cost) and
    # unlocks; the API re-takes the mutex then, runs post and ends
    woken = arrival + re + WAKE
    assert _event_done(run, ev)[0] == woken
    assert run.one(Kind.SYNC_WAKE, ref=rpc)[0::5] == (woken, ev)
    assert run.one(Kind.RPC_END, ref=rpc)[0::5] == (woken + POST, 0)
    assert [f for f in run.timeline.findings if f.kind == "deadlock"] == []


def _simpy_fleet() -> ModuleType:
    """The SimPy baseline model of ``benchmarks/`` (not a package: loaded from its file)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "simpy_fleet.py"
    spec = importlib.util.spec_from_file_location("simpy_fleet", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("simpy_fleet", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("policy", ["mainloop", "two-stage", "pool", "per-vm-thread"])
def test_a_workload_read_in_full_replays_as_the_session_streamed(policy: str) -> None:
    # The benchmarks time the engine alone on a workload read before the clock starts: that
    # must be the very replay that reads the session as it goes (208 s of fleet session,
    # read 10 s ahead of the replay's clock).
    fleet = SCENARIOS["fleet"]
    params = fleet.params({"vms": "20", "messages": "20000"})
    vms, records = fleet.vms(params), list(fleet.records(params, 0))
    profile = load_profile("default")

    def replay_of(source: Iterator[SessionRecord] | Workload) -> tuple[bytes, Any]:
        kept: list[bytes] = []
        outcome = run(parse_spec(policy), vms, source, profile,
                      observe=lambda timeline: [kept.append])
        return b"".join(kept), outcome.summary

    workload = Workload(iter(records), vms, profile)
    workload.read_all()
    assert workload.last_ns - (workload.first_ns or 0) > 10 * LOOKAHEAD_NS
    streamed = replay_of(iter(records))
    assert len(streamed[0]) > 6 * len(records)
    assert replay_of(workload) == streamed


@pytest.mark.parametrize("policy", ["per-vm-thread", "mainloop"])
def test_simpy_baseline_models_the_same_fleet_workload(policy: str) -> None:
    # The SimPy model differs only where SimPy's FIFO resources differ from the engine's
    # non-fair mutex and broadcast job wake-up, and (mainloop) in not routing RPCs through
    # the main loop: on a lightly contended fleet the means agree closely.
    fleet = SCENARIOS["fleet"]
    params = fleet.params({"vms": "20", "messages": "10000"})
    records = list(fleet.records(params, 0))
    baseline = _simpy_fleet().simulate(fleet.vms(params), iter(records), policy=policy)
    run = replay(policy, fleet.vms(params), records)
    arrive = {r[4]: r[0] for r in run.of(Kind.RPC_ARRIVE)}
    rpc_lat = [r[0] - arrive[r[4]] for r in run.of(Kind.RPC_END)]
    ev_arrive = {r[4]: r[0] for r in run.of(Kind.EVENT_ARRIVE)}
    ev_lat = [r[0] - ev_arrive[r[4]] for r in run.of(Kind.EVENT_DONE)]
    assert baseline.messages == run.outcome.messages == len(records)
    assert len(baseline.rpc_latency) == len(rpc_lat) > 0
    assert len(baseline.event_latency) == len(ev_lat) > 0
    assert fmean(baseline.rpc_latency) == pytest.approx(fmean(rpc_lat), rel=0.01)
    assert fmean(baseline.event_latency) == pytest.approx(fmean(ev_lat), rel=0.05)
