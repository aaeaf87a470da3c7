"""The engine and its primitives on tiny hand-computed cases, to the ns.

Every expected value follows from the documented semantics (module docstrings of
``replay/engine.py``, ``mutex.py``, ``job.py``, ``condition.py``, ``queue.py``,
``rpcpool.py``); comments say how each is derived.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from replay_helpers import Rig, rig

from replay.engine import GO, NEVER, PARK, Calls, Engine, Entry, Heap, Thread
from replay.job import timeout_message
from replay.profile import ApiCosts
from replay.rpcpool import RpcPool
from replay.workload import INLINE, Event, Rpc
from tracer.timeline import Kind

Body = Generator[int | None, None, None]


# -- engine -------------------------------------------------------------------------------

def test_callbacks_run_in_time_order_and_same_ns_in_call_order() -> None:
    engine = Engine()
    seen: list[tuple[int, str]] = []
    for t, tag in ((5, "a"), (3, "b"), (5, "c"), (4, "d"), (5, "e")):
        engine.at(t, lambda tag: seen.append((engine.now, tag)), tag)
    assert engine.run() == 5
    assert seen == [(3, "b"), (4, "d"), (5, "a"), (5, "c"), (5, "e")]


def test_a_thread_scheduled_twice_is_refused_and_runs_once_after() -> None:
    engine = Engine()
    th = Thread(engine, "t", "rpc-worker")
    steps: list[int] = []

    def body() -> Body:
        steps.append(engine.now)
        yield 7
        steps.append(engine.now)

    th.start(body())
    with pytest.raises(RuntimeError, match="scheduled twice"):
        th.turn(3)  # it already has a turn pending: a second one would corrupt the heap
    assert engine.run() == 7
    assert steps == [0, 7]
    th.turn(9)  # off the heap again: it may be scheduled


def test_settle_runs_once_every_callback_of_the_ns_has_run() -> None:
    engine = Engine()
    seen: list[Any] = []

    def first(_: object) -> None:
        seen.append("first")
        engine.settle(lambda: seen.append(("settle", engine.now)))
        # scheduled during the ns, for the same ns: still before the settle callback
        engine.at(engine.now, lambda _: seen.append("late same-ns"))

    engine.at(10, first)
    engine.at(10, lambda _: seen.append("second"))
    engine.at(11, lambda _: seen.append("next ns"))
    engine.run()
    assert seen == ["first", "second", "late same-ns", ("settle", 10), "next ns"]


def test_settle_runs_before_a_later_arrival_and_at_the_end() -> None:
    engine = Engine()
    seen: list[Any] = []

    def arrive(tag: str) -> None:
        seen.append((engine.now, tag))
        engine.settle(lambda: seen.append((engine.now, "settle " + tag)))

    arrivals = Calls([(7, arrive, "x"), (9, arrive, "y")])
    engine.run(arrivals)
    assert seen == [(7, "x"), (7, "settle x"), (9, "y"), (9, "settle y")]


def test_arrivals_merge_with_callbacks_in_time_order() -> None:
    engine = Engine()
    seen: list[tuple[int, str]] = []

    def note(tag: str) -> None:
        seen.append((engine.now, tag))

    engine.at(5, note, "heap")
    engine.at(15, note, "heap")
    assert engine.run(Calls([(10, note, "arrival"), (20, note, "arrival")])) == 20
    assert seen == [(5, "heap"), (10, "arrival"), (15, "heap"), (20, "arrival")]


def test_horizon_stops_the_run_there() -> None:
    engine = Engine()
    seen: list[int] = []
    engine.at(50, lambda _: seen.append(engine.now))
    engine.at(150, lambda _: seen.append(engine.now))
    engine.horizon = 100
    assert engine.run() == 100
    assert seen == [50]


def test_thread_spends_cpu_goes_on_at_go_parks_and_is_woken() -> None:
    engine = Engine()
    th = Thread(engine, "t", "rpc-worker")
    marks: list[tuple[str, int]] = []

    def body() -> Body:
        marks.append(("start", engine.now))
        yield 100
        marks.append(("after 100 ns of CPU", engine.now))
        yield GO
        marks.append(("after GO", engine.now))
        yield PARK
        marks.append(("woken", engine.now))
        yield 25
        marks.append(("after 25", engine.now))
        yield th.spend(1_000)
        marks.append(("after spending 1,000", engine.now))
        yield th.spend(0)
        marks.append(("end", engine.now))

    th.start(body())
    engine.at(500, lambda _: th.wake())
    # start at 0; CPU to 100; GO continues at 100; parked until the wake at 500; +25;
    # spend() as a plain number does: +1,000, and +0 is GO
    assert engine.run() == 1_525
    assert marks == [("start", 0), ("after 100 ns of CPU", 100), ("after GO", 100),
                     ("woken", 500), ("after 25", 525), ("after spending 1,000", 1_525),
                     ("end", 1_525)]


@given(st.lists(st.one_of(st.tuples(st.just("push"), st.integers(0, 20)),
                          st.tuples(st.just("pop"), st.just(0))), max_size=200))
def test_heap_hands_out_entries_by_time_then_seq(ops: list[tuple[str, int]]) -> None:
    """Against a sorted list: pops give the least (t, seq), first_t is the least t."""
    heap = Heap()
    model: list[tuple[int, int]] = []
    for seq, (op, t) in enumerate(ops, 1):
        if op == "push":
            entry = Entry()
            entry.t, entry.seq = t, seq
            heap.push(entry)
            model.append((t, seq))
        elif model:
            model.sort()
            got = heap.pop()
            assert (got.t, got.seq) == model.pop(0)
        assert heap.size == len(model)
        assert heap.first_t == (min(model)[0] if model else NEVER)


# -- mutex --------------------------------------------------------------------------------

def _after(delay: int, then: Callable[[], Body]) -> Body:
    """A thread body that first spends ``delay`` ns, then runs ``then()``."""
    if delay:
        yield delay
    yield from then()


def _hold(r: Rig, th: Thread, at: int, hold: int | None) -> None:
    """``th`` locks vm0's mutex at ``at`` and releases it ``hold`` ns after getting it
    (None: keeps it)."""
    mutex = r.host.vms[0].mutex

    def body() -> Body:
        yield mutex.lock(th)
        if hold is not None:
            yield hold
            mutex.unlock(th)

    th.start(_after(at, body))


def test_free_mutex_is_taken_at_once_with_a_flag_test() -> None:
    r = rig()
    a = r.thread("a")
    assert r.host.vms[0].mutex.lock(a) == GO
    assert r.host.vms[0].mutex.holder is a
    b = r.thread("b")
    _hold(r, b, 40, 60)
    r.host.vms[0].mutex.unlock(a)
    r.run()
    # a: acquired at 0 (waited 0), released at 0 (held 0); b: 40 → 100, held 60
    assert r.of(Kind.LOCK_ACQUIRE) == [(0, Kind.LOCK_ACQUIRE, a.tid, 0, -1, 0),
                                       (40, Kind.LOCK_ACQUIRE, b.tid, 0, -1, 0)]
    assert r.of(Kind.LOCK_RELEASE) == [(0, Kind.LOCK_RELEASE, a.tid, 0, -1, 0),
                                       (100, Kind.LOCK_RELEASE, b.tid, 0, -1, 60)]
    assert r.of(Kind.LOCK_WAIT) == []


def test_one_contender_gets_the_mutex_at_release_time_without_a_draw() -> None:
    r = rig(seed=3)
    a, b = r.thread("a"), r.thread("b")
    _hold(r, a, 0, 100)
    _hold(r, b, 10, None)
    state = r.engine.rng.getstate()
    r.run()
    # b waits from 10 until a releases at 100: acquired at 100 after 90 ns
    assert r.of(Kind.LOCK_WAIT) == [(10, Kind.LOCK_WAIT, b.tid, 0, -1, 0)]
    assert r.of(Kind.LOCK_ACQUIRE)[1] == (100, Kind.LOCK_ACQUIRE, b.tid, 0, -1, 90)
    assert r.engine.rng.getstate() == state  # no draw with one contender
    assert r.host.vms[0].mutex.overtakes == 0


def test_several_contenders_draw_sorted_by_wait_start_then_tid() -> None:
    winners = set()
    for seed in range(40):
        r = rig(seed=seed)
        a, b = r.thread("a"), r.thread("b")
        d, c = r.thread("d"), r.thread("c")  # d has the lower tid
        e = r.thread("e")
        _hold(r, a, 0, 100)  # holder, releases at 100
        _hold(r, b, 10, None)
        _hold(r, c, 20, None)  # c asks before d within ns 20 ...
        _hold(r, d, 20, None)
        _hold(r, e, 100, None)  # ... e asks at 100, after a's release: joins the draw
        r.run()
        # sorted by (wait start, tid): b (10), d (20, lower tid), c (20), e (100)
        contenders = [b, d, c, e]
        winner = contenders[random.Random(seed).randrange(len(contenders))]
        winners.add(winner.name)
        acquired = r.of(Kind.LOCK_ACQUIRE)
        assert acquired[-1] == (100, Kind.LOCK_ACQUIRE, winner.tid, 0, -1,
                                100 - winner.wait_since)
        assert len(acquired) == 2  # a, then the winner; the others still wait
        earlier = sum(1 for w in contenders if w.wait_since < winner.wait_since)
        assert r.host.vms[0].mutex.overtakes == earlier
        assert sorted(w.name for w in r.host.vms[0].mutex.waiters) == sorted(
            w.name for w in contenders if w is not winner)
    assert winners == {"b", "c", "d", "e"}


# -- job ----------------------------------------------------------------------------------

def _job_user(r: Rig, th: Thread, at: int, work: int | None, log: list[tuple[str, int, Any]],
              api: str = "api", keep_mutex: int = 0) -> None:
    """``th`` at ``at``: lock, begin the job, unlock, work ``work`` ns (None: forever), lock,
    end the job, keep the mutex ``keep_mutex`` ns more, unlock."""
    vm = r.host.vms[0]

    def body() -> Body:
        yield vm.mutex.lock(th)
        ok = yield from vm.job.begin(th, th.tid, api)
        log.append((th.name, r.engine.now, ok))
        vm.mutex.unlock(th)
        if not ok or work is None:
            return
        yield work
        yield vm.mutex.lock(th)
        vm.job.end(th)
        if keep_mutex:
            yield keep_mutex
        vm.mutex.unlock(th)

    th.start(_after(at, body))


def test_fifo_job_is_handed_to_the_first_waiter() -> None:
    r = rig(fifo=True)
    log: list[tuple[str, int, Any]] = []
    h, w1, w2 = r.thread("h"), r.thread("w1"), r.thread("w2")
    _job_user(r, h, 0, 100, log)
    _job_user(r, w1, 10, 100, log)
    _job_user(r, w2, 20, 100, log)
    r.run()
    # h holds [0, 100); w1 (asked at 10) gets it at 100, w2 (asked at 20) at 200
    assert log == [("h", 0, True), ("w1", 100, True), ("w2", 200, True)]
    assert r.of(Kind.JOB_BEGIN) == [(0, Kind.JOB_BEGIN, h.tid, 0, h.tid, 0),
                                    (100, Kind.JOB_BEGIN, w1.tid, 0, w1.tid, 90),
                                    (200, Kind.JOB_BEGIN, w2.tid, 0, w2.tid, 180)]
    assert r.of(Kind.JOB_WAIT) == [(10, Kind.JOB_WAIT, w1.tid, 0, w1.tid, 0),
                                   (20, Kind.JOB_WAIT, w2.tid, 0, w2.tid, 0)]


def test_broadcast_wakes_every_waiter_and_the_mutex_draw_decides() -> None:
    winners = set()
    for seed in range(12):
        r = rig(seed=seed, fifo=False, starvation_k=1)
        log: list[tuple[str, int, Any]] = []
        h, w1, w2 = r.thread("h"), r.thread("w1"), r.thread("w2")
        # h ends its job at 100 and keeps the mutex until 110
        _job_user(r, h, 0, 100, log, keep_mutex=10)
        _job_user(r, w1, 10, 1000, log)
        _job_user(r, w2, 20, 1000, log)
        r.run()
        # both wake at 100 and wait for the mutex from 100; at 110 the draw picks among
        # them sorted by (100, tid): w1 then w2
        first = [w1, w2][random.Random(seed).randrange(2)]
        second = w2 if first is w1 else w1
        winners.add(first.name)
        # the winner takes the job at 110; the loser re-waits and gets it when the winner
        # ends at 110 + 1000
        assert log[1:] == [(first.name, 110, True), (second.name, 1110, True)]
        assert r.of(Kind.JOB_BEGIN)[1:] == [
            (110, Kind.JOB_BEGIN, first.tid, 0, first.tid, 110 - first.job_req),
            (1110, Kind.JOB_BEGIN, second.tid, 0, second.tid, 1110 - second.job_req)]
        assert len(r.of(Kind.JOB_WAIT)) == 2  # one per request, not per wake-up
        # w2 (asked at 20) overtaking w1 (asked at 10) counts once: a starvation finding
        # with K = 1
        starved = [f for f in r.host.watch.findings if f.kind == "starvation"]
        if first is w2:
            assert [f.threads for f in starved] == [["w1"]]
            assert "overtaken by 1 later" in starved[0].detail
        else:
            assert starved == []
    assert winners == {"w1", "w2"}


def test_job_wait_times_out_at_request_plus_timeout_with_libvirt_text() -> None:
    r = rig(job_timeout=5000)
    log: list[tuple[str, int, Any]] = []
    h, w = r.thread("h"), r.thread("w")
    _job_user(r, h, 0, None, log, api="virDomainSuspend")  # never ends its job
    _job_user(r, w, 1000, 100, log)
    r.run()
    # w asks at 1000: gives up at 1000 + 5000, mutex re-taken (free) at once
    assert log == [("h", 0, True), ("w", 6000, False)]
    assert r.of(Kind.JOB_TIMEOUT) == [(6000, Kind.JOB_TIMEOUT, w.tid, 0, w.tid, 5000)]
    assert w.error == ("Timed out during operation: cannot acquire state change lock "
                       "(held by monitor=virDomainSuspend)")
    assert timeout_message("virDomainSuspend") == w.error
    assert (6000, Kind.LOCK_ACQUIRE, w.tid, 0, -1, 0) in r.records


# -- domain condition ---------------------------------------------------------------------

def test_signal_wakes_the_waiter_for_that_event_and_the_other_times_out() -> None:
    r = rig()
    cond = r.host.vms[0].cond
    mutex = r.host.vms[0].mutex
    got: dict[str, tuple[int, int]] = {}

    def waiter(th: Thread, rpc: int, names: frozenset[str], timeout: int) -> Body:
        yield mutex.lock(th)
        eid = yield from cond.wait(th, rpc, names, timeout)
        got[th.name] = (r.engine.now, eid)
        mutex.unlock(th)

    unplug, blockjob = r.thread("unplug"), r.thread("blockjob")
    unplug.start(waiter(unplug, 1, frozenset({"DEVICE_DELETED"}), 5000))
    blockjob.start(waiter(blockjob, 2, frozenset({"BLOCK_JOB_CANCELLED",
                                                  "BLOCK_JOB_COMPLETED"}), 9000))
    signalled: list[bool] = []
    r.engine.at(500, lambda _: signalled.append(cond.signal("BLOCK_JOB_CANCELLED", 7)))
    r.engine.at(600, lambda _: signalled.append(cond.signal("RTC_CHANGE", 8)))
    r.run()
    assert signalled == [True, False]  # nobody waits for RTC_CHANGE
    # blockjob woken at 500 with event 7; unplug times out at 0 + 5000 with -1
    assert got == {"blockjob": (500, 7), "unplug": (5000, -1)}
    assert r.of(Kind.SYNC_WAKE) == [(500, Kind.SYNC_WAKE, blockjob.tid, 0, 2, 7),
                                    (5000, Kind.SYNC_WAKE, unplug.tid, 0, 1, -1)]
    assert r.of(Kind.SYNC_WAIT) == [(0, Kind.SYNC_WAIT, unplug.tid, 0, 1, 5000),
                                    (0, Kind.SYNC_WAIT, blockjob.tid, 0, 2, 9000)]
    assert unplug.error == "timed out waiting for DEVICE_DELETED"


# -- queue --------------------------------------------------------------------------------

def test_queue_records_depth_and_bytes_after_each_change() -> None:
    r = rig()
    q = r.host.queue("vm0 events", 0)
    qid = len(r.host.watch.queues) - 1
    a, b = Event(0, "STOP", INLINE, 0, 100), Event(0, "RESUME", INLINE, 0, 60)
    r.engine.at(10, lambda _: q.push(a))
    r.engine.at(20, lambda _: q.push(b))
    popped: list[Event] = []
    r.engine.at(30, lambda _: popped.append(q.pop()))
    r.run()
    assert popped == [a]  # FIFO
    # depths 1, 2, 1; bytes 100, 160, 60
    assert r.of(Kind.QUEUE_DEPTH) == [(10, Kind.QUEUE_DEPTH, -1, 0, qid, 1),
                                      (20, Kind.QUEUE_DEPTH, -1, 0, qid, 2),
                                      (30, Kind.QUEUE_DEPTH, -1, 0, qid, 1)]
    assert r.of(Kind.QUEUE_BYTES) == [(10, Kind.QUEUE_BYTES, -1, 0, qid, 100),
                                      (20, Kind.QUEUE_BYTES, -1, 0, qid, 160),
                                      (30, Kind.QUEUE_BYTES, -1, 0, qid, 60)]
    assert q.peak == 2 and len(q) == 1


# -- RPC pool -----------------------------------------------------------------------------

def _costs(priority: bool) -> ApiCosts:
    return ApiCosts(pre=0, locked=0, between=0, post=0, priority=priority)


def _pool() -> tuple[Engine, RpcPool, list[tuple[str, str, int]]]:
    """One normal and one prio worker whose RPCs each take 1000 ns; runs records
    (worker, API, start time)."""
    engine = Engine()
    runs: list[tuple[str, str, int]] = []

    def body(th: Thread, rpc: Rpc) -> Body:
        runs.append((th.name, rpc.api, engine.now))
        yield 1000

    return engine, RpcPool(engine, body, workers=1, max_workers=0, prio_workers=1), runs


def test_prio_workers_take_only_high_priority_rpcs_normal_workers_the_head() -> None:
    engine, pool, runs = _pool()
    rpcs = [Rpc(0, "n1", 10, _costs(False)), Rpc(0, "n2", 20, _costs(False)),
            Rpc(0, "destroy", 30, _costs(True)), Rpc(0, "n3", 40, _costs(False)),
            Rpc(0, "lookup", 2500, _costs(True))]
    engine.run(Calls([(rpc.arrival, pool.submit, rpc) for rpc in rpcs]))
    # rpc-0 runs n1 [10, 1010); n2 queues; the prio worker skips n2 and takes destroy at
    # 30 [30, 1030); it does not take n3 at 1030 (not high priority); rpc-0 takes the head
    # n2 at 1010, then n3 at 2010; at 2500 the idle prio worker is not first in line: the
    # normal worker is busy, so lookup goes to the prio worker.
    assert runs == [("rpc-0", "n1", 10), ("prio-rpc-0", "destroy", 30),
                    ("rpc-0", "n2", 1010), ("rpc-0", "n3", 2010),
                    ("prio-rpc-0", "lookup", 2500)]


def test_normal_worker_takes_a_high_priority_rpc_at_the_head() -> None:
    engine, pool, runs = _pool()
    destroy = Rpc(0, "destroy", 10, _costs(True))
    engine.run(Calls([(10, pool.submit, destroy)]))
    # an idle normal worker takes whatever is at the head, priority or not
    assert runs == [("rpc-0", "destroy", 10)]
