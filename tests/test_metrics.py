"""Metrics on hand-built timelines whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from timelines import as_chunk

from analysis.collector import Collector
from analysis.frames import build_frames
from analysis.metrics import interference, lock_table, policy_metrics
from replay.policy import parse_spec
from replay.profile import load_profile
from replay.run import run
from tracer.defaults import default_session
from tracer.session import read_session
from tracer.timeline import (
    RECORD_SIZE,
    EventInfo,
    EventTable,
    Finding,
    Kind,
    QueueInfo,
    RpcInfo,
    RpcTable,
    ThreadInfo,
    Timeline,
)

K = Kind
MAIN, W0, W1 = 0, 1, 2
A, B = 0, 1


def mainloop_blocked() -> Timeline:
    """A main loop handles vm-a's event 0 and blocks 1000 ns on vm-a's mutex, held by an
    RPC on worker 1; vm-b's events 1 and 2 arrive meanwhile and wait for the loop.

    Event 1 (vm-b) arrives at 200, starts at 1300: the loop ran vm-a's handler over
    [100, 1300] → 1100 ns of cross-VM interference. Event 2 (vm-b) arrives at 1250 and
    starts at 1400 after event 1's handler (same VM) over [1300, 1400] → 50 ns
    (1250..1300). Event 3 (vm-a) arrives at 1350 and starts at 1500: the loop served vm-b
    over [1350, 1500] → 150 ns. Event 0 itself arrived at 100 on an idle loop → 0.
    """
    tl = Timeline(spec="mainloop", vms=["vm-a", "vm-b"],
                  threads=[ThreadInfo("main-loop", "mainloop"), ThreadInfo("rpc-0", "rpc-worker"),
                           ThreadInfo("rpc-1", "rpc-worker")],
                  events=EventTable([EventInfo(A, "STOP", "inline", 100, 10),
                          EventInfo(B, "RTC_CHANGE", "inline", 200, 20),
                          EventInfo(B, "RTC_CHANGE", "inline", 1250, 30),
                          EventInfo(A, "RTC_CHANGE", "inline", 1350, 40)]),
                  rpcs=RpcTable([RpcInfo(A, "virDomainSlowOp", 0, False, [])]),
                  queues=[QueueInfo("global", -1)], paths=["mainloop"])
    tl.records = [
        (0, K.RPC_ARRIVE, -1, A, 0, 0),
        (0, K.RPC_START, W0, A, 0, 0),
        (0, K.LOCK_ACQUIRE, W0, A, -1, 0),
        (0, K.JOB_BEGIN, W0, A, 0, 0),
        (100, K.EVENT_ARRIVE, -1, A, 0, 10),
        (100, K.HANDLER_BEGIN, MAIN, A, 0, 0),
        (100, K.LOCK_WAIT, MAIN, A, -1, 0),
        (200, K.EVENT_ARRIVE, -1, B, 1, 20),
        (200, K.QUEUE_DEPTH, -1, -1, 0, 1),
        (200, K.QUEUE_BYTES, -1, -1, 0, 20),
        (1100, K.LOCK_RELEASE, W0, A, -1, 1100),
        (1100, K.LOCK_ACQUIRE, MAIN, A, -1, 1000),
        (1250, K.EVENT_ARRIVE, -1, B, 2, 30),
        (1250, K.QUEUE_DEPTH, -1, -1, 0, 2),
        (1250, K.QUEUE_BYTES, -1, -1, 0, 50),
        (1300, K.LOCK_RELEASE, MAIN, A, -1, 200),
        (1300, K.HANDLER_END, MAIN, A, 0, 0),
        (1300, K.EVENT_DONE, -1, A, 0, 0),
        (1300, K.QUEUE_DEPTH, -1, -1, 0, 1),
        (1300, K.QUEUE_BYTES, -1, -1, 0, 30),
        (1300, K.HANDLER_BEGIN, MAIN, B, 1, 0),
        (1300, K.LOCK_ACQUIRE, MAIN, B, -1, 0),
        (1350, K.EVENT_ARRIVE, -1, A, 3, 40),
        (1400, K.LOCK_RELEASE, MAIN, B, -1, 100),
        (1400, K.HANDLER_END, MAIN, B, 1, 0),
        (1400, K.EVENT_DONE, -1, B, 1, 0),
        (1400, K.QUEUE_DEPTH, -1, -1, 0, 0),
        (1400, K.QUEUE_BYTES, -1, -1, 0, 0),
        (1400, K.HANDLER_BEGIN, MAIN, B, 2, 0),
        (1400, K.LOCK_ACQUIRE, MAIN, B, -1, 0),
        (1500, K.LOCK_RELEASE, MAIN, B, -1, 100),
        (1500, K.HANDLER_END, MAIN, B, 2, 0),
        (1500, K.EVENT_DONE, -1, B, 2, 0),
        (1500, K.HANDLER_BEGIN, MAIN, A, 3, 0),
        (1500, K.LOCK_WAIT, MAIN, A, -1, 0),
        (2000, K.JOB_END, W0, A, 0, 2000),
        (2000, K.RPC_END, W0, A, 0, 0),
        (2000, K.LOCK_ACQUIRE, MAIN, A, -1, 500),
        (2100, K.LOCK_RELEASE, MAIN, A, -1, 100),
        (2100, K.HANDLER_END, MAIN, A, 3, 0),
        (2100, K.EVENT_DONE, -1, A, 3, 0),
        (3000, K.RUN_END, -1, -1, -1, 0),
    ]
    tl.findings = [Finding("deadlock", 500, ["vm-a"], ["main-loop"], "cycle", "closed"),
                   Finding("deadlock", 900, ["vm-a"], ["main-loop"], "broken", "broken")]
    tl.end_ns = 3000
    return tl


def test_cross_vm_interference_exact() -> None:
    frames = build_frames([mainloop_blocked()])
    assert interference(frames).tolist() == [0, 1100, 50, 150]


def test_event_and_rpc_metrics_exact() -> None:
    m = policy_metrics(build_frames([mainloop_blocked()]), "mainloop")
    latencies = np.array([1200, 1200, 250, 750]) / 1e6  # done − arrival, in ms
    assert m["event_p50_ms"] == pytest.approx(float(np.quantile(latencies, 0.5)))
    assert m["event_p50_ms"] == pytest.approx(975 / 1e6)  # linear: between 750 and 1200
    assert m["event_max_ms"] == pytest.approx(1200 / 1e6)
    assert m["start_p50_ms"] == pytest.approx(float(np.median([0, 1100, 150, 150])) / 1e6)
    assert m["interference_max_ms"] == pytest.approx(1100 / 1e6)
    assert m["interference_share"] == pytest.approx(100 * 1300 / 1400, abs=1e-6)
    assert m["rpc_max_ms"] == pytest.approx(2000 / 1e6)
    assert (m["events_handled"], m["events_dropped"], m["events_pending"]) == (4, 0, 0)
    assert m["peak_queue_depth"] == 2 and m["peak_queued_bytes"] == 50
    assert m["mutex_contended"] == 2
    assert m["mutex_wait_total_ms"] == pytest.approx(1500 / 1e6)
    # the main loop in handler stages: 1200 + 100 + 100 + 600 ns, lock waits included
    assert m["reader_stalled_ms"] == pytest.approx(2000 / 1e6)
    assert m["findings_deadlock"] == 1  # the "broken" instant is not a second deadlock


def test_lock_table_perf_style() -> None:
    frames = build_frames([mainloop_blocked()])
    table = lock_table(frames, "mainloop", "wait_total")
    rows = {r["lock"]: r for _, r in table.iterrows()}
    mutex_a = rows["vm-a mutex"]
    # vm-a mutex: RPC (0, held 1100), loop (waited 1000, held 200), loop (waited 500, 100)
    assert (mutex_a["acquired"], mutex_a["contended"]) == (3, 2)
    assert mutex_a["wait_total"] == pytest.approx(1500 / 1e6)
    assert mutex_a["wait_avg"] == pytest.approx(500 / 1e6)
    assert mutex_a["wait_max"] == pytest.approx(1000 / 1e6)
    assert mutex_a["hold_total"] == pytest.approx(1400 / 1e6)
    assert mutex_a["hold_max"] == pytest.approx(1100 / 1e6)
    assert rows["vm-a job"]["hold_total"] == pytest.approx(2000 / 1e6)
    assert table["lock"].tolist()[0] == "vm-a mutex"  # the largest total wait first
    by_acquired = lock_table(frames, "mainloop", "acquired")["acquired"].tolist()
    assert by_acquired == sorted(by_acquired, reverse=True)
    with pytest.raises(ValueError, match="unknown lock sort key"):
        lock_table(frames, "mainloop", "nope")


def test_overlapping_spans_of_two_other_vms_count_once() -> None:
    """A pool worker serves vm-b over [0, 100] and an RPC of vm-c over [50, 150]: an event
    of vm-a waiting over [20, 200] saw 130 ns of other VMs' work, not 180."""
    tl = Timeline(spec="pool", vms=["vm-a", "vm-b", "vm-c"],
                  threads=[ThreadInfo("w", "event-worker")],
                  events=EventTable([EventInfo(1, "RTC_CHANGE", "inline", 0, 1),
                          EventInfo(0, "RTC_CHANGE", "inline", 20, 1)]),
                  rpcs=RpcTable([RpcInfo(2, "query-status", 50, False, [])]), paths=["worker"])
    tl.records = [
        (0, K.HANDLER_BEGIN, 0, 1, 0, 0), (100, K.HANDLER_END, 0, 1, 0, 0),
        (100, K.EVENT_DONE, -1, 1, 0, 0),
        (50, K.RPC_START, 0, 2, 0, 0), (150, K.RPC_END, 0, 2, 0, 0),
        (200, K.HANDLER_BEGIN, 0, 0, 1, 0), (210, K.HANDLER_END, 0, 0, 1, 0),
        (210, K.EVENT_DONE, -1, 0, 1, 0),
    ]
    tl.records.sort(key=lambda r: r[0])
    tl.end_ns = 300
    assert interference(build_frames([tl])).tolist() == [0, 130]


def test_collector_results_exact_with_an_event_never_handled() -> None:
    """200,000 events in chunks, one never handled (it keeps the in-flight window open
    from its id on): counts and latencies stay exact."""
    tl = Timeline(spec="s", vms=["vm-a"], threads=[ThreadInfo("w", "event-worker")])
    tl.paths = ["event-worker"]
    collector = Collector(tl)
    n = 200_000
    chunk: list[int] = []
    for i in range(n):
        t = i * 1000
        chunk += [t, K.EVENT_ARRIVE, -1, A, i, 10]
        if i != 5:  # event 5 is never handled
            chunk += [t + 10, K.HANDLER_BEGIN, 0, A, i, 0,
                      t + 10 + i % 7, K.EVENT_DONE, -1, A, i, 0]
        if len(chunk) >= 6 * 3000:
            collector(as_chunk(chunk))
            chunk = []
    collector(as_chunk(chunk))
    assert collector.events.base == 5
    results = collector.results(n * 1000, {"ordering_violations": 0, "suppressed": {}})
    assert results["events"] == n
    assert results["events_handled"] == n - 1
    assert results["events_pending"] == 1
    assert results["event_latency_ms"]["max"] == pytest.approx((10 + 6) / 1e6)
    assert results["event_start_latency_ms"]["p50"] == pytest.approx(10 / 1e6)
    assert results["event_paths"] == {"event-worker": n - 1}


def test_collector_window_slides_past_finished_items() -> None:
    tl = Timeline(spec="s", vms=["vm-a"], threads=[ThreadInfo("w", "event-worker")])
    collector = Collector(tl)
    for start in range(0, 100_000, 1000):
        chunk: list[int] = []
        for i in range(start, start + 1000):
            chunk += [i, K.EVENT_ARRIVE, -1, A, i, 10, i + 1, K.EVENT_DONE, -1, A, i, 0]
        collector(as_chunk(chunk))
    # Memory follows the items in flight: the arrays never grew past a few chunks' ids.
    assert len(collector.events.arrival) <= 4096
    assert collector.events.base >= 90_000
    with pytest.raises(ValueError, match="after it finished"):
        collector(as_chunk([5, K.EVENT_DONE, -1, A, 3, 0]))


@pytest.mark.parametrize("policy", ["mainloop", "per-vm-thread", "pool"])
def test_collector_results_do_not_depend_on_chunking(policy: str) -> None:
    """A real replay's records fed at once or a few at a time give the same results (the
    in-flight window and the readers' open handler stages carry across chunks)."""
    session = default_session()
    header, records = read_session(session)
    spec = parse_spec(policy)
    kept: list[bytes] = []
    outcome = run(spec, header.vms, records, load_profile("default", header.cost_profile),
                  observe=lambda _tl: [kept.append])
    whole, pieces = Collector(outcome.timeline), Collector(outcome.timeline)
    chunk = b"".join(kept)
    whole(chunk)
    for start in range(0, len(chunk), RECORD_SIZE * 7):
        pieces(chunk[start:start + RECORD_SIZE * 7])
    watch = {"ordering_violations": 0, "suppressed": {}}
    assert whole.results(outcome.end_ns, watch) == pieces.results(outcome.end_ns, watch)
    assert whole.results(outcome.end_ns, watch)["events_handled"] > 0


def test_collector_keeps_a_pause_that_reopens_within_a_chunk() -> None:
    """Paused, resumed and paused again in one chunk: the second pause stays open to the
    end (records are taken in order, not grouped by kind)."""
    tl = Timeline(spec="s", vms=["vm-a"], threads=[ThreadInfo("main-loop", "mainloop")])
    collector = Collector(tl)
    collector(as_chunk([10, K.READ_PAUSED, 0, A, -1, 0,
                        20, K.READ_RESUMED, 0, A, -1, 10,
                        30, K.READ_PAUSED, 0, A, -1, 0]))
    results = collector.results(100, {"ordering_violations": 0, "suppressed": {}})
    assert results["read_paused_ns"] == 10 + (100 - 30)
