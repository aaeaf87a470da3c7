"""The trace checker: one planted problem per rule, cross-checked with the real trace processor."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RunCli
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
from perfetto_tp import query_traces, require_trace_processor

from tracer.trace_check import check_file, check_packets

Packets = list[pb.TracePacket]
SEQ = 1
PROCESS, THREAD, COUNTER, CUSTOM = 1, 2, 3, 4
BEGIN, END, INSTANT, COUNT = (pb.TrackEvent.TYPE_SLICE_BEGIN, pb.TrackEvent.TYPE_SLICE_END,
                              pb.TrackEvent.TYPE_INSTANT, pb.TrackEvent.TYPE_COUNTER)

#: Stats that mean "something was dropped or misread" (reference: perfetto.md §1.11),
#: plus the notices TP gives for them.
TP_PROBLEMS = """
SELECT name, severity, value FROM stats WHERE value > 0 AND (
  severity IN ('error', 'data_loss') OR name IN (
    'packet_skipped_seq_needs_incremental_state_invalid',
    'interned_data_tokenizer_errors', 'misplaced_end_event',
    'track_event_parser_errors', 'track_event_tokenizer_errors',
    'track_hierarchy_missing_uuid'))"""


def packet(ts: int, **fields: Any) -> pb.TracePacket:
    return pb.TracePacket(timestamp=ts, trusted_packet_sequence_id=SEQ, **fields)


def base() -> Packets:
    """A valid trace: a process, a thread, a counter and a custom track; interned names."""
    first = packet(0, sequence_flags=3)
    first.track_descriptor.uuid = PROCESS
    first.track_descriptor.process.pid = 10000
    first.track_descriptor.process.process_name = "pool"
    thread = packet(0)
    thread.track_descriptor.uuid = THREAD
    thread.track_descriptor.thread.pid = 10000
    thread.track_descriptor.thread.tid = 10000001
    thread.track_descriptor.thread.thread_name = "worker"
    counter = packet(0)
    counter.track_descriptor.uuid = COUNTER
    counter.track_descriptor.parent_uuid = PROCESS
    counter.track_descriptor.name = "depth"
    counter.track_descriptor.counter.unit = pb.CounterDescriptor.UNIT_COUNT
    custom = packet(0)
    custom.track_descriptor.uuid = CUSTOM
    custom.track_descriptor.parent_uuid = PROCESS
    custom.track_descriptor.name = "vm-a mutex"
    return [first, thread, counter, custom]


def event(ts: int, kind: int, track: int, name_iid: int = 0, flags: int = 2,
          **fields: Any) -> pb.TracePacket:
    p = packet(ts, sequence_flags=flags) if flags else packet(ts)
    p.track_event.type = kind  # type: ignore[assignment]
    p.track_event.track_uuid = track
    if name_iid:
        p.track_event.name_iid = name_iid
    for key, value in fields.items():
        getattr(p.track_event, key).extend(value)
    return p


def good() -> Packets:
    packets = base()
    begin = event(10, BEGIN, THREAD, 1, flow_ids=[7])
    begin.interned_data.event_names.add(iid=1, name="handle:STOP")
    packets += [begin, event(20, END, THREAD, flags=0),
                event(30, INSTANT, CUSTOM, 1, terminating_flow_ids=[7]),
                event(40, COUNT, COUNTER, flags=0)]
    packets[-1].track_event.counter_value = 3
    return packets


def incremental() -> Packets:
    """``good()`` on an incremental sequence clock: the same times written as deltas."""
    packets = good()
    snapshot = pb.TracePacket(trusted_packet_sequence_id=SEQ, sequence_flags=3)
    snapshot.clock_snapshot.clocks.add(clock_id=64, timestamp=0, is_incremental=True)
    snapshot.clock_snapshot.clocks.add(clock_id=6, timestamp=0)
    packets[0].sequence_flags = 2
    packets[0].trace_packet_defaults.timestamp_clock_id = 64
    previous = 0
    for p in packets:
        p.timestamp, previous = p.timestamp - previous, p.timestamp
    return [snapshot, *packets]


def varint_flows() -> Packets:
    """``good()`` with its flow in the varint fields ``flow_ids_old`` and
    ``terminating_flow_ids_old``, as the writer emits them."""
    packets = good()
    for p in packets:
        if not p.HasField("track_event"):
            continue
        event = p.track_event
        event.flow_ids_old.extend(event.flow_ids)
        event.terminating_flow_ids_old.extend(event.terminating_flow_ids)
        event.ClearField("flow_ids")
        event.ClearField("terminating_flow_ids")
    return packets


def varint_flow_in_both_fields() -> Packets:
    packets = varint_flows()
    packets[4].track_event.terminating_flow_ids_old.append(7)
    return packets


def no_sequence() -> Packets:
    packets = good()
    packets[5].ClearField("trusted_packet_sequence_id")
    return packets


def needs_before_cleared() -> Packets:
    packets = good()
    packets[0].sequence_flags = 2
    return packets


def unknown_name() -> Packets:
    packets = good()
    packets[4].ClearField("interned_data")
    return packets


def clock_without_snapshot() -> Packets:
    packets = good()
    packets[4].timestamp_clock_id = 64
    return packets


def counter_on_slice_track() -> Packets:
    packets = good()
    packets[-1].track_event.track_uuid = CUSTOM
    return packets


def slice_on_counter_track() -> Packets:
    packets = good()
    packets[6].track_event.track_uuid = COUNTER
    return packets


def thread_without_tid() -> Packets:
    packets = good()
    packets[1].track_descriptor.thread.ClearField("tid")
    return packets


def undescribed_track() -> Packets:
    packets = good()
    del packets[3]
    return packets


def end_on_empty_track() -> Packets:
    return good() + [event(50, END, CUSTOM, flags=0)]


def begin_never_ended() -> Packets:
    packets = good()
    del packets[5]
    return packets


def descriptor_without_uuid() -> Packets:
    packets = good()
    extra = packet(0)
    extra.track_descriptor.name = "orphan"
    return packets[:4] + [extra] + packets[4:]


def descriptor_changed() -> Packets:
    renamed = packet(45)
    renamed.track_descriptor.uuid = CUSTOM
    renamed.track_descriptor.parent_uuid = PROCESS
    renamed.track_descriptor.name = "vm-b mutex"
    return good() + [renamed]


def pid_zero() -> Packets:
    packets = good()
    packets[0].track_descriptor.process.pid = 0
    packets[1].track_descriptor.thread.pid = 0
    return packets


def counter_without_value() -> Packets:
    packets = good()
    packets[-1].track_event.ClearField("counter_value")
    return packets


def flow_in_both_fields() -> Packets:
    packets = good()
    packets[4].track_event.terminating_flow_ids.append(7)
    return packets


def depth_exceeded() -> Packets:
    packets = base()
    first = event(1, BEGIN, THREAD, 1)
    first.interned_data.event_names.add(iid=1, name="deep")
    packets.append(first)
    packets += [event(1 + i, BEGIN, THREAD, 1) for i in range(1, 520)]
    packets += [event(600, END, THREAD, flags=0) for _ in range(520)]
    return packets


def default_clock_without_snapshot() -> Packets:
    packets = good()
    packets[0].trace_packet_defaults.timestamp_clock_id = 64
    return packets


def incremental_time_goes_back() -> Packets:
    """A packet on BOOTTIME before the time the sequence clock's deltas reached."""
    packets = incremental()
    packets[-1].timestamp_clock_id = 6
    packets[-1].timestamp = 25
    return packets


def timestamps_decreasing() -> Packets:
    packets = good()
    packets[-1].timestamp = 5
    return packets


def missing_parent() -> Packets:
    packets = good()
    packets[3].track_descriptor.parent_uuid = 99
    return packets


def interned_use_without_flag() -> Packets:
    packets = good()
    packets[6].ClearField("sequence_flags")
    return packets


#: (planted problem, checker rule, checker severity)
CASES: list[tuple[Callable[[], Packets], str, str]] = [
    (no_sequence, "event-without-sequence", "error"),
    (needs_before_cleared, "incremental-state-invalid", "error"),
    (unknown_name, "unknown-name-iid", "error"),
    (clock_without_snapshot, "clock-without-snapshot", "error"),
    (default_clock_without_snapshot, "clock-without-snapshot", "error"),
    (incremental_time_goes_back, "timestamp-decreasing", "warning"),
    (counter_on_slice_track, "counter-on-slice-track", "error"),
    (slice_on_counter_track, "slice-on-counter-track", "error"),
    (thread_without_tid, "thread-without-pid-tid", "error"),
    (undescribed_track, "undescribed-track", "error"),
    (end_on_empty_track, "end-on-empty-track", "error"),
    (begin_never_ended, "begin-never-ended", "warning"),
    (descriptor_without_uuid, "descriptor-without-uuid", "error"),
    (descriptor_changed, "descriptor-changed", "error"),
    (pid_zero, "pid-zero", "warning"),
    (counter_without_value, "counter-without-value", "error"),
    (flow_in_both_fields, "flow-in-both-fields", "error"),
    (varint_flow_in_both_fields, "flow-in-both-fields", "error"),
    (depth_exceeded, "depth-exceeded", "error"),
    (timestamps_decreasing, "timestamp-decreasing", "warning"),
    (missing_parent, "missing-parent", "error"),
    (interned_use_without_flag, "interned-use-without-flag", "error"),
]


def write(path: Path, packets: Packets) -> Path:
    path.write_bytes(pb.Trace(packet=packets).SerializeToString())
    return path


@pytest.mark.parametrize("valid", [good, incremental, varint_flows])
def test_valid_trace_has_no_problems(valid: Callable[[], Packets]) -> None:
    assert check_packets(p.SerializeToString() for p in valid()) == []


@pytest.mark.parametrize(("plant", "rule", "severity"), CASES, ids=[c[1] for c in CASES])
def test_each_planted_problem_is_reported(plant: Callable[[], Packets], rule: str,
                                          severity: str) -> None:
    problems = check_packets(p.SerializeToString() for p in plant())
    assert (rule, severity) in {(p.rule, p.severity) for p in problems}


def test_checker_agrees_with_trace_processor(tmp_path: Path) -> None:
    """Whatever TP reports as dropped or misread, the checker reports as an error."""
    require_trace_processor()
    traces = [write(tmp_path / f"{rule}.pftrace", plant()) for plant, rule, _ in CASES]
    traces.append(write(tmp_path / "good.pftrace", good()))
    traces.append(write(tmp_path / "incremental.pftrace", incremental()))
    traces.append(write(tmp_path / "varint-flows.pftrace", varint_flows()))
    results = query_traces([(t, [TP_PROBLEMS]) for t in traces])
    flagged = 0
    for trace, (stats,) in zip(traces, results, strict=True):
        errors = [p for p in check_file(str(trace)) if p.severity == "error"]
        if stats:
            flagged += 1
            assert errors, f"{trace.name}: TP reports {stats}, the checker no error"
    assert results[-3:] == [[[]], [[]], [[]]]
    # The planted problems TP itself notices (sequence, interning, clocks, descriptors...).
    assert flagged >= 5


def test_cli_exit_codes(tmp_path: Path, run_cli: RunCli) -> None:
    ok = write(tmp_path / "ok.pftrace", good())
    code, out, err = run_cli("check-trace", ok)
    assert (code, err) == (0, "")
    assert out.strip() == f"{ok}: ok"

    bad = write(tmp_path / "bad.pftrace", unknown_name())
    code, out, _ = run_cli("check-trace", bad)
    assert code == 1
    assert "packet 4: error: unknown-name-iid" in out

    code, out, _ = run_cli("check-trace", bad, "--json")
    report = json.loads(out)
    assert code == 1 and report["errors"] is True
    assert {"packet": 4, "severity": "error", "rule": "unknown-name-iid"} .items() <= \
        report["problems"][0].items()


@pytest.mark.parametrize("content", [b"\x12\x00", b"\x0a\x05ab", b"\x0a\xff"])
def test_unreadable_input_is_one_line_exit_2(tmp_path: Path, run_cli: RunCli,
                                            content: bytes) -> None:
    path = tmp_path / "broken.pftrace"
    path.write_bytes(content)
    code, out, err = run_cli("check-trace", path)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and str(path) in err
    code, _, err = run_cli("check-trace", tmp_path / "missing.pftrace")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
