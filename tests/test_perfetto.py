"""The Perfetto writer: loaded in Perfetto's real trace processor, and byte-level checks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import timelines as fx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
from perfetto_tp import query_traces, require_trace_processor

from tracer.perfetto import TraceWriter
from tracer.timeline import (
    EventInfo,
    EventTable,
    Kind,
    QueueInfo,
    RpcInfo,
    RpcTable,
    ThreadInfo,
    Timeline,
)
from tracer.trace_check import check_file

DOCS = Path(__file__).resolve().parent.parent / "docs" / "perfetto.md"

BAD_STATS = """
SELECT name, severity, value FROM stats WHERE value > 0 AND (
  severity IN ('error', 'data_loss') OR name IN (
    'packet_skipped_seq_needs_incremental_state_invalid',
    'interned_data_tokenizer_errors', 'misplaced_end_event',
    'track_event_parser_errors', 'track_event_tokenizer_errors',
    'track_hierarchy_missing_uuid'))"""

THREAD_SLICES = """
SELECT p.name AS policy, s.name, s.ts, s.dur, s.category,
       EXTRACT_ARG(s.arg_set_id, 'debug.event') AS event,
       EXTRACT_ARG(s.arg_set_id, 'debug.rpc') AS rpc,
       EXTRACT_ARG(s.arg_set_id, 'debug.error') AS error,
       EXTRACT_ARG(s.arg_set_id, 'debug.unfinished') AS unfinished,
       EXTRACT_ARG(s.arg_set_id, 'debug.cut') AS cut,
       EXTRACT_ARG(s.arg_set_id, 'debug.dropped') AS dropped,
       EXTRACT_ARG(s.arg_set_id, 'debug.handled') AS handled,
       EXTRACT_ARG(s.arg_set_id, 'debug.stage') AS stage
FROM slice s JOIN thread_track tt ON s.track_id = tt.id
JOIN thread USING (utid) JOIN process p USING (upid)"""

QUERIES = {
    "bad_stats": BAD_STATS,
    "processes": "SELECT pid, name FROM process WHERE pid >= 10000 ORDER BY pid",
    "thread_slices": THREAD_SLICES,
    "unended": "SELECT count(*) AS n FROM slice WHERE dur < 0",
    "counter_peaks": """
        SELECT p.name AS policy, t.name AS track, max(c.value) AS peak
        FROM counter c JOIN process_counter_track t ON c.track_id = t.id
        JOIN process p USING (upid) GROUP BY t.id""",
    "flows": """
        SELECT p.name AS policy, count(*) AS n FROM flow f
        JOIN slice s ON f.slice_in = s.id JOIN thread_track tt ON s.track_id = tt.id
        JOIN thread USING (utid) JOIN process p USING (upid) GROUP BY p.name""",
    "findings": """
        SELECT p.name AS policy, s.ts, s.name,
               EXTRACT_ARG(s.arg_set_id, 'debug.kind') AS kind,
               EXTRACT_ARG(s.arg_set_id, 'debug.detail') AS detail,
               EXTRACT_ARG(s.arg_set_id, 'debug.vms') AS vms,
               EXTRACT_ARG(s.arg_set_id, 'debug.threads') AS threads
        FROM slice s JOIN process_track pt ON s.track_id = pt.id
        JOIN process p USING (upid) WHERE pt.name = 'findings'""",
}


def write_trace(path: Path, timelines: list[Timeline], chunk: int = 7) -> Path:
    """Write the timelines as one trace, feeding records in small chunks (streaming path)."""
    with TraceWriter(str(path)) as writer:
        for tl in timelines:
            policy = writer.begin_policy(tl)
            for start in range(0, len(tl.records), chunk):
                policy.feed(tl.records[start:start + chunk])
            policy.end()
    return path


def doc_queries() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOCS.read_text(), re.S)


def _records(tl: Timeline, kind: Kind) -> list[tuple[int, int, int, int, int, int]]:
    return [r for r in tl.records if r[1] == kind]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The fixture trace and the nesting trace, queried in one trace-processor process."""
    require_trace_processor()
    folder = tmp_path_factory.mktemp("perfetto")
    trace = write_trace(folder / "replay.pftrace", fx.timelines())
    nesting = write_trace(folder / "nesting.pftrace", [_overlapping_timeline()])
    names = list(QUERIES)
    fixture_rows, nesting_rows = query_traces([
        (trace, [QUERIES[n] for n in names] + doc_queries()),
        (nesting, [BAD_STATS, THREAD_SLICES]),
    ])
    result: dict[str, Any] = dict(zip(names, fixture_rows, strict=False))
    result["docs"] = fixture_rows[len(names):]
    result["nesting"] = nesting_rows
    result["path"] = trace
    return result


def test_no_error_stats(loaded: dict[str, Any]) -> None:
    assert loaded["bad_stats"] == []
    assert loaded["unended"] == [{"n": 0}]


def test_processes_are_the_specs_in_order(loaded: dict[str, Any]) -> None:
    assert [row["name"] for row in loaded["processes"]] == [tl.spec for tl in fx.timelines()]


def test_handled_events_and_completed_rpcs(loaded: dict[str, Any]) -> None:
    for tl in fx.timelines():
        rows = [r for r in loaded["thread_slices"] if r["policy"] == tl.spec]
        done = {r[4] for r in _records(tl, Kind.EVENT_DONE)}
        handled = {r["event"] for r in rows if r["name"].startswith("handle:") and r["handled"]}
        assert handled == done
        # ``handled`` names the path that handled the event.
        paths = {(r["event"], r["handled"]) for r in rows if r["handled"]}
        assert paths == {(r[4], tl.paths[r[5]]) for r in _records(tl, Kind.EVENT_DONE)}
        # Only deferred stages say their stage (written at the stage's end).
        deferred = {r["event"] for r in rows if r["name"].startswith("handle:") and r["stage"]}
        assert deferred == {r[4] for r in _records(tl, Kind.HANDLER_END) if r[5]}
        # An RPC slice that is neither cut nor unfinished ended: ``error`` marks a failure.
        ended = _records(tl, Kind.RPC_END)
        completed = [r for r in rows
                     if r["category"] == "rpc" and not (r["unfinished"] or r["cut"])]
        assert sorted(r["rpc"] for r in completed) == sorted(r[4] for r in ended)
        assert sorted(r["rpc"] for r in completed if r["error"]) == sorted(
            r[4] for r in ended if r[5])
        unfinished = [r["rpc"] for r in rows if r["category"] == "rpc" and r["unfinished"]]
        started = {r[4] for r in _records(tl, Kind.RPC_START)}
        assert unfinished == sorted(started - {r[4] for r in _records(tl, Kind.RPC_END)})


def test_counter_peaks_are_queue_maxima(loaded: dict[str, Any]) -> None:
    for tl in fx.timelines():
        peaks = {r["track"]: r["peak"] for r in loaded["counter_peaks"] if r["policy"] == tl.spec}
        for kind, suffix in ((Kind.QUEUE_DEPTH, "depth"), (Kind.QUEUE_BYTES, "bytes")):
            for qid, queue in enumerate(tl.queues):
                expected = max(r[5] for r in _records(tl, kind) if r[4] == qid)
                assert peaks[f"{queue.name} {suffix}"] == expected


def test_flows_link_arrivals_to_handling(loaded: dict[str, Any]) -> None:
    flows = {r["policy"]: r["n"] for r in loaded["flows"]}
    for tl in fx.timelines():
        arrived = {r[4] for r in _records(tl, Kind.EVENT_ARRIVE)}
        handled = {r[4] for r in _records(tl, Kind.HANDLER_BEGIN)} & arrived
        rpcs = {r[4] for r in _records(tl, Kind.RPC_START)} & {
            r[4] for r in _records(tl, Kind.RPC_ARRIVE)}
        assert flows[tl.spec] == len(handled) + len(rpcs)


def test_findings_track_holds_the_findings(loaded: dict[str, Any]) -> None:
    for tl in fx.timelines():
        rows = [r for r in loaded["findings"] if r["policy"] == tl.spec]
        assert [(r["ts"], r["name"], r["kind"], r["detail"], r["vms"], r["threads"])
                for r in rows] == [
            (f.time_ns, f.kind, f.kind, f.detail, ", ".join(f.vms), ", ".join(f.threads))
            for f in tl.findings]


def test_documented_queries_return_rows(loaded: dict[str, Any]) -> None:
    assert len(loaded["docs"]) == 5
    for rows in loaded["docs"]:
        assert rows


def _overlapping_timeline() -> Timeline:
    """Records whose slices do not nest on one thread: a job wait ends inside a lock wait,
    a handler ends inside a lock wait."""
    tl = Timeline(spec="nesting", vms=["vm-a"], threads=[ThreadInfo("w", "event-worker")],
                  events=EventTable([EventInfo(0, "STOP", "inline", 0, 10)]), paths=["inline"])
    tl.records = [
        (10, Kind.JOB_WAIT, 0, 0, 5, 0),
        (20, Kind.LOCK_WAIT, 0, 0, -1, 0),
        (30, Kind.JOB_BEGIN, 0, 0, 5, 20),
        (45, Kind.LOCK_ACQUIRE, 0, 0, -1, 25),
        (50, Kind.HANDLER_BEGIN, 0, 0, 0, 0),
        (60, Kind.LOCK_WAIT, 0, 0, -1, 0),
        (70, Kind.HANDLER_END, 0, 0, 0, 0),
        (90, Kind.LOCK_ACQUIRE, 0, 0, -1, 30),
        (100, Kind.RUN_END, -1, -1, -1, 0),
    ]
    tl.rpcs = RpcTable([RpcInfo(0, f"api{i}", 0, False, []) for i in range(6)])
    return tl


def test_overlapping_records_give_well_nested_slices(loaded: dict[str, Any]) -> None:
    bad, slices = loaded["nesting"]
    assert bad == []
    by_name: dict[str, list[tuple[int, int]]] = {}
    for row in slices:
        by_name.setdefault(row["name"], []).append((row["ts"], row["dur"]))
    # Each wait keeps its exact extent, split where an enclosing slice ended.
    assert by_name["job.wait"] == [(10, 20)]
    assert sorted(by_name["lock.wait"]) == [(20, 10), (30, 15), (60, 10), (70, 20)]
    assert by_name["handle:STOP"] == [(50, 20)]


def test_fast_path_is_byte_identical_to_trace_packets(tmp_path: Path) -> None:
    data = write_trace(tmp_path / "t.pftrace", fx.timelines()).read_bytes()
    trace = pb.Trace.FromString(data)
    assert trace.SerializeToString() == data
    rebuilt = pb.Trace()
    for packet in trace.packet:
        copy = rebuilt.packet.add()
        copy.CopyFrom(pb.TracePacket.FromString(packet.SerializeToString()))
    assert rebuilt.SerializeToString() == data


def test_packets_match_hand_built_trace_packets(tmp_path: Path) -> None:
    """A BEGIN with category, annotations and a terminating flow, built field by field."""
    tl = Timeline(spec="s", vms=["vm-a"], threads=[ThreadInfo("w", "rpc-worker")],
                  rpcs=RpcTable([RpcInfo(0, "virDomainSuspend", 0, False, ["stop"])]))
    tl.records = [(100, Kind.RPC_ARRIVE, -1, 0, 0, 0), (20_000_000_000, Kind.RPC_START, 0, 0, 0, 7)]
    data = write_trace(tmp_path / "b.pftrace", [tl]).read_bytes()
    packets = pb.Trace.FromString(data).packet
    # The sequence's first packet sets its clock; the next one interns categories and
    # annotation names.
    assert packets[1].HasField("clock_snapshot")
    interned = packets[2].interned_data
    category = {c.name: c.iid for c in interned.event_categories}["rpc"]
    arg = {a.name: a.iid for a in interned.debug_annotation_names}
    arrival, begin = packets[-3:-1]  # the last one is the END written by end()
    # Timestamps are deltas on the sequence's clock: this one follows the arrival at 100.
    expected = pb.TracePacket(timestamp=20_000_000_000 - 100, trusted_packet_sequence_id=2,
                              sequence_flags=2)
    event = expected.track_event
    event.category_iids.append(category)
    event.debug_annotations.add(name_iid=arg["rpc"], uint_value=0)
    event.type = pb.TrackEvent.TYPE_SLICE_BEGIN
    event.name_iid = 2  # iid 1 is the arrival's name, interned first
    event.track_uuid = begin.track_event.track_uuid
    # The flow the arrival began (varint ids: the deprecated fields, see the writer).
    assert list(arrival.track_event.flow_ids_old) == [1]
    event.terminating_flow_ids_old.append(1)
    expected.interned_data.event_names.add(iid=2, name="virDomainSuspend")
    assert begin.SerializeToString() == expected.SerializeToString()
    framed = b"\x0a" + bytes([expected.ByteSize()]) + expected.SerializeToString()
    assert framed in data


def test_track_uuids_are_short_and_unique_across_policies(tmp_path: Path) -> None:
    """0 for the root; threads and shared queues' counters take 1, 2, ... (one-byte
    varints), the other tracks 128, 129, ..., in the order they are described."""
    timelines = fx.timelines()
    packets = pb.Trace.FromString(write_trace(tmp_path / "u.pftrace", timelines).read_bytes())
    descriptors = [p.track_descriptor for p in packets.packet if p.HasField("track_descriptor")]
    shared = {f"{q.name} {s}" for tl in timelines for q in tl.queues if q.vm < 0
              for s in ("depth", "bytes")}
    uuids = [d.uuid for d in descriptors]
    assert uuids[0] == 0
    busy = [d.uuid for d in descriptors if d.HasField("thread") or d.name in shared]
    assert busy == list(range(1, len(busy) + 1))
    rest = [u for u in uuids[1:] if u not in busy]
    assert rest == list(range(128, 128 + len(rest)))
    used = {p.track_event.track_uuid for p in packets.packet if p.HasField("track_event")}
    assert used <= set(uuids[1:])


def test_same_input_gives_byte_identical_traces(tmp_path: Path) -> None:
    first = write_trace(tmp_path / "a.pftrace", fx.timelines(), chunk=65_536).read_bytes()
    second = write_trace(tmp_path / "b.pftrace", fx.timelines(), chunk=3).read_bytes()
    assert first == second


def test_writer_traces_pass_the_checker(tmp_path: Path) -> None:
    problems = check_file(str(write_trace(tmp_path / "t.pftrace", fx.timelines())))
    assert [p for p in problems if p.severity != "info"] == []
    # Only arrivals nobody handled leave a one-event flow.
    assert {p.rule for p in problems} <= {"flow-never-terminated"}


THREADS = 3
VM_COUNT = 2
EVENTS = 4
RPCS = 3


def random_timeline(draw: st.DrawFn) -> Timeline:
    """Records of any kind in any order, with valid ids and non-decreasing times."""
    tl = Timeline(
        spec=draw(st.sampled_from(["pool", "mainloop", "two-stage:x=1"])), vms=["vm-a", "vm-b"],
        threads=[ThreadInfo(f"t{i}", "rpc-worker") for i in range(THREADS)],
        events=EventTable([EventInfo(i % VM_COUNT, f"E{i}", "inline", 0, 1)
                           for i in range(EVENTS)]),
        rpcs=RpcTable([RpcInfo(i % VM_COUNT, f"api{i}", 0, False, ["c0", "c1"])
                       for i in range(RPCS)]),
        queues=[QueueInfo("q", -1)], paths=["inline", "worker"],
    )
    owners = st.integers(-EVENTS, RPCS - 1)
    kinds = {
        Kind.LOCK_WAIT: st.just(-1), Kind.LOCK_ACQUIRE: st.just(-1), Kind.LOCK_RELEASE: st.just(-1),
        Kind.JOB_WAIT: owners, Kind.JOB_BEGIN: owners, Kind.JOB_END: owners,
        Kind.JOB_TIMEOUT: owners, Kind.HANDLER_BEGIN: st.integers(0, EVENTS - 1),
        Kind.HANDLER_END: st.integers(0, EVENTS - 1), Kind.EVENT_ARRIVE: st.integers(0, EVENTS - 1),
        Kind.EVENT_DROPPED: st.integers(0, EVENTS - 1), Kind.QUEUE_DEPTH: st.just(0),
        Kind.QUEUE_BYTES: st.just(0), Kind.READ_PAUSED: st.just(-1), Kind.READ_RESUMED: st.just(-1),
        Kind.RPC_ARRIVE: st.integers(0, RPCS - 1), Kind.RPC_START: st.integers(0, RPCS - 1),
        Kind.RPC_END: st.integers(0, RPCS - 1), Kind.CMD_SEND: owners, Kind.CMD_REPLY: owners,
        Kind.SYNC_WAIT: st.integers(0, RPCS - 1), Kind.SYNC_WAKE: st.integers(0, RPCS - 1),
    }
    t = 0
    for _ in range(draw(st.integers(0, 60))):
        kind = draw(st.sampled_from(sorted(kinds)))
        t += draw(st.integers(0, 50))
        ref = draw(kinds[kind])
        value = draw(st.integers(0, 1)) if kind != Kind.SYNC_WAKE else draw(st.integers(-1, 3))
        tl.records.append((t, kind, draw(st.integers(0, THREADS - 1)),
                           draw(st.integers(0, VM_COUNT - 1)), ref, value))
    tl.records.append((t + 1, Kind.RUN_END, -1, -1, -1, 0))
    return tl


random_timelines = st.composite(random_timeline)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(timelines=st.lists(random_timelines(), min_size=1, max_size=3))
def test_any_record_sequence_gives_a_clean_trace(tmp_path: Path, timelines: list[Timeline]) -> None:
    path = write_trace(tmp_path / "h.pftrace", timelines)
    problems = check_file(str(path))
    assert [p for p in problems if p.severity != "info"] == []


@settings(max_examples=1, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(runs=st.lists(st.lists(random_timelines(), min_size=1, max_size=3), min_size=2, max_size=2))
def test_random_record_sequences_load_cleanly_in_trace_processor(
    tmp_path: Path, runs: list[list[Timeline]]
) -> None:
    require_trace_processor()
    traces = [write_trace(tmp_path / f"r{i}.pftrace", timelines)
              for i, timelines in enumerate(runs)]
    results = query_traces([(t, [BAD_STATS, "SELECT count(*) AS n FROM slice WHERE dur < 0"])
                            for t in traces])
    for bad, unended in results:
        assert bad == []
        assert unended == [{"n": 0}]
