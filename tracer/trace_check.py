"""Trace checker: replays Perfetto's TrackEvent import rules over a ``.pftrace``.

The trace processor drops or mis-parses technically invalid packets, often with a stat of
severity ``info`` or none at all, so a trace can look fine and be wrong. This checker
parses the file with the official protos, one packet at a time (memory does not grow with
the trace), and reports each rule broken with the packet index and a severity:

- ``error``: the trace processor drops or misreads data, or the format forbids it;
- ``warning``: suspicious, shown wrongly in the UI, or checked less strictly than TP does;
- ``info``: harmless, e.g. an arrival flow that no handler ever terminated.

Slices are replayed per track in file order (TP's order for a track whose timestamps do
not go back, which is what every sequence-ordered writer produces). Times are compared on
BOOTTIME: a sequence's ClockSnapshot, its default clock and incremental (delta) clocks are
followed as the trace processor follows them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from google.protobuf.message import DecodeError
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

MAX_DEPTH = 512
_BOOTTIME = 6
#: Clock ids scoped to the sequence whose ClockSnapshot defines them.
_SEQUENCE_CLOCKS = (64, 128)
_FLAG_CLEARED = 1
_FLAG_NEEDS = 2
_TYPE = pb.TrackEvent
_SLICE_TYPES = (_TYPE.TYPE_SLICE_BEGIN, _TYPE.TYPE_SLICE_END, _TYPE.TYPE_INSTANT)


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule; ``packet`` is the 0-based packet index (-1: the trace as a whole)."""

    packet: int
    severity: str
    rule: str
    message: str

    def __str__(self) -> str:
        where = "end of trace" if self.packet < 0 else f"packet {self.packet}"
        return f"{where}: {self.severity}: {self.rule}: {self.message}"

    def to_json(self) -> dict[str, object]:
        return {"packet": self.packet, "severity": self.severity, "rule": self.rule,
                "message": self.message}


class TraceReadError(Exception):
    """The file is not a readable trace (missing, or its framing is broken)."""


def read_packets(stream: BinaryIO) -> Iterator[bytes]:
    """The serialized packets of a ``Trace``, framing parsed here so one packet is in memory."""
    offset = 0
    while True:
        tag = stream.read(1)
        if not tag:
            return
        if tag != b"\x0a":
            raise TraceReadError(f"byte {offset}: expected a packet field, found 0x{tag[0]:02x}")
        length = 0
        shift = 0
        header = 1
        while True:
            byte = stream.read(1)
            if not byte:
                raise TraceReadError(f"byte {offset}: truncated packet length")
            header += 1
            length |= (byte[0] & 0x7F) << shift
            if byte[0] < 0x80:
                break
            shift += 7
            if shift > 63:
                raise TraceReadError(f"byte {offset}: packet length varint too long")
        payload = stream.read(length)
        if len(payload) != length:
            raise TraceReadError(f"byte {offset}: truncated packet ({len(payload)} of {length} "
                                 "bytes)")
        offset += header + length
        yield payload


@dataclass(slots=True)
class _Clock:
    """A sequence-scoped clock: its current value and how far BOOTTIME is ahead of it."""

    incremental: bool
    value: int
    offset: int


@dataclass
class _Sequence:
    cleared: bool = False
    last_ts: int = -1
    #: Sequence-scoped clocks (ids 64-127) from this sequence's ClockSnapshots.
    clocks: dict[int, _Clock] = field(default_factory=dict)
    #: ``trace_packet_defaults.timestamp_clock_id`` (incremental state: reset on a clear).
    default_clock: int = 0
    names: set[int] = field(default_factory=set)
    categories: set[int] = field(default_factory=set)
    arg_names: set[int] = field(default_factory=set)
    arg_strings: set[int] = field(default_factory=set)

    def reset(self) -> None:
        self.default_clock = 0
        self.names.clear()
        self.categories.clear()
        self.arg_names.clear()
        self.arg_strings.clear()


@dataclass
class _Track:
    descriptor: bytes
    packet: int
    counter: bool
    depth: int = 0
    last_ts: int = -1
    out_of_order: bool = False


class Checker:
    """Feed packets in file order, then :meth:`finish`; problems accumulate in ``problems``."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.packets = 0
        self._sequences: dict[int, _Sequence] = {}
        self._tracks: dict[int, _Track] = {}
        self._tids: dict[int, int] = {}
        self._clocks: set[int] = {_BOOTTIME}
        self._flows_open: dict[int, tuple[int, int]] = {}  # id -> (first packet, events)

    def _report(self, severity: str, rule: str, message: str) -> None:
        self.problems.append(Problem(self.packets, severity, rule, message))

    def feed(self, data: bytes) -> None:
        try:
            packet = pb.TracePacket.FromString(data)
        except DecodeError as exc:
            self._report("error", "unparsable-packet", str(exc))
        else:
            self._check_packet(packet)
        self.packets += 1

    def _check_packet(self, packet: pb.TracePacket) -> None:
        seq_id = packet.trusted_packet_sequence_id
        seq = self._sequences.setdefault(seq_id, _Sequence()) if seq_id else None
        if packet.HasField("clock_snapshot"):
            self._clock_snapshot(packet.clock_snapshot, seq)
        flags = packet.sequence_flags
        ts: int | None = None
        if seq is not None:
            if flags & _FLAG_CLEARED:
                seq.cleared = True
                seq.reset()
            elif flags & _FLAG_NEEDS and not seq.cleared:
                self._report("error", "incremental-state-invalid",
                             f"sequence {seq_id}: SEQ_NEEDS_INCREMENTAL_STATE before any "
                             "SEQ_INCREMENTAL_STATE_CLEARED: the packet is skipped")
                return
            if packet.HasField("trace_packet_defaults"):
                seq.default_clock = packet.trace_packet_defaults.timestamp_clock_id
            if packet.HasField("timestamp"):
                ts = self._trace_time(packet, seq)
                if ts is not None:
                    if ts < seq.last_ts:
                        self._report("warning", "timestamp-decreasing",
                                     f"sequence {seq_id}: timestamp {ts} after {seq.last_ts}")
                    seq.last_ts = max(seq.last_ts, ts)
        elif (packet.HasField("timestamp_clock_id")
              and packet.timestamp_clock_id not in self._clocks):
            self._clock_missing(packet.timestamp_clock_id)
        if packet.HasField("interned_data"):
            self._intern(packet, seq)
        if packet.HasField("track_descriptor"):
            self._descriptor(packet.track_descriptor)
        if packet.HasField("track_event"):
            self._event(packet, seq, ts)

    def _clock_snapshot(self, snapshot: pb.ClockSnapshot, seq: _Sequence | None) -> None:
        boottime = next((c.timestamp for c in snapshot.clocks if c.clock_id == _BOOTTIME), None)
        for clock in snapshot.clocks:
            if not _SEQUENCE_CLOCKS[0] <= clock.clock_id < _SEQUENCE_CLOCKS[1]:
                self._clocks.add(clock.clock_id)
            elif seq is None:
                self._report("error", "sequence-clock-without-sequence",
                             f"clock {clock.clock_id} is sequence-scoped: the snapshot needs a "
                             "trusted_packet_sequence_id")
            else:
                offset = 0 if boottime is None else boottime - clock.timestamp
                seq.clocks[clock.clock_id] = _Clock(clock.is_incremental, clock.timestamp, offset)

    def _clock_missing(self, clock_id: int) -> None:
        self._report("error", "clock-without-snapshot",
                     f"timestamp_clock_id {clock_id} without a ClockSnapshot defining it: the "
                     "packet is dropped")

    def _trace_time(self, packet: pb.TracePacket, seq: _Sequence) -> int | None:
        """The packet's time on BOOTTIME (None: its clock is undefined); advances an
        incremental clock by the packet's delta."""
        clock_id = (packet.timestamp_clock_id if packet.HasField("timestamp_clock_id")
                    else seq.default_clock)
        if not clock_id or clock_id == _BOOTTIME:
            return packet.timestamp
        clock = seq.clocks.get(clock_id)
        if clock is None:
            if clock_id in self._clocks:
                return packet.timestamp  # another global clock: its offset is not tracked
            self._clock_missing(clock_id)
            return None
        if clock.incremental:
            clock.value += packet.timestamp
            return clock.value + clock.offset
        return packet.timestamp + clock.offset

    def _intern(self, packet: pb.TracePacket, seq: _Sequence | None) -> None:
        if seq is None:
            self._report("error", "interning-without-sequence",
                         "interned_data on a packet without trusted_packet_sequence_id")
            return
        if not packet.sequence_flags & _FLAG_NEEDS:
            self._report("warning", "interning-without-flag",
                         "interned_data on a packet without SEQ_NEEDS_INCREMENTAL_STATE")
        data = packet.interned_data
        seq.names.update(e.iid for e in data.event_names)
        seq.categories.update(e.iid for e in data.event_categories)
        seq.arg_names.update(e.iid for e in data.debug_annotation_names)
        seq.arg_strings.update(e.iid for e in data.debug_annotation_string_values)

    def _descriptor(self, desc: pb.TrackDescriptor) -> None:
        if not desc.HasField("uuid"):
            self._report("error", "descriptor-without-uuid",
                         "track descriptor without uuid: dropped")
            return
        blob = desc.SerializeToString(deterministic=True)
        known = self._tracks.get(desc.uuid)
        if known is not None:
            if known.descriptor != blob:
                self._report("error", "descriptor-changed",
                             f"track {desc.uuid} described again differently (first in packet "
                             f"{known.packet})")
            return
        if desc.HasField("process"):
            if not desc.process.HasField("pid"):
                self._report("error", "process-without-pid",
                             f"track {desc.uuid}: process without pid")
            elif desc.process.pid == 0:
                self._report("warning", "pid-zero", f"track {desc.uuid}: pid 0 becomes 'swapper'")
        if desc.HasField("thread"):
            thread = desc.thread
            if not (thread.HasField("pid") and thread.HasField("tid")):
                self._report("error", "thread-without-pid-tid",
                             f"track {desc.uuid}: thread descriptor needs pid and tid: its events "
                             "are dropped")
            else:
                if thread.pid == 0:
                    self._report("warning", "pid-zero",
                                 f"track {desc.uuid}: pid 0 becomes 'swapper'")
                owner = self._tids.setdefault(thread.tid, thread.pid)
                if owner != thread.pid:
                    self._report("warning", "tid-reused",
                                 f"tid {thread.tid} in pid {owner} and pid {thread.pid}")
        if (desc.HasField("thread") or desc.HasField("process")) and desc.HasField("parent_uuid"):
            self._report("warning", "parent-on-root-track",
                         f"track {desc.uuid}: parent_uuid is ignored on thread/process tracks")
        self._tracks[desc.uuid] = _Track(blob, self.packets, desc.HasField("counter"))

    def _event(self, packet: pb.TracePacket, seq: _Sequence | None, ts: int | None) -> None:
        if seq is None:
            self._report("error", "event-without-sequence",
                         "track_event without trusted_packet_sequence_id: dropped")
            return
        if not packet.HasField("timestamp"):
            self._report("error", "event-without-timestamp", "track_event without timestamp")
        event = packet.track_event
        self._check_interned(event, seq, packet.sequence_flags)
        track = self._tracks.get(event.track_uuid)
        if track is None:
            self._report("error", "undescribed-track",
                         f"event on track {event.track_uuid} before its descriptor")
            return
        self._flows(event, track)
        if ts is not None:
            if ts < track.last_ts and not track.out_of_order:
                track.out_of_order = True
                self._report("warning", "track-out-of-order",
                             f"track {event.track_uuid}: events go back in time; nesting is "
                             "checked in file order")
            track.last_ts = max(track.last_ts, ts)
        kind = event.type
        if kind == _TYPE.TYPE_COUNTER:
            self._counter(event, track)
        elif kind in _SLICE_TYPES:
            self._slice(event, track, kind)
        else:
            self._report("error", "event-type-unspecified",
                         f"track {event.track_uuid}: event without a type")

    def _check_interned(self, event: pb.TrackEvent, seq: _Sequence, flags: int) -> None:
        used = False
        if event.HasField("name_iid"):
            used = True
            if event.name_iid not in seq.names:
                self._report("error", "unknown-name-iid",
                             f"name_iid {event.name_iid} not interned on this sequence")
        for iid in event.category_iids:
            used = True
            if iid not in seq.categories:
                self._report("error", "unknown-category-iid", f"category iid {iid} not interned")
        for arg in event.debug_annotations:
            if arg.HasField("name_iid"):
                used = True
                if arg.name_iid not in seq.arg_names:
                    self._report("error", "unknown-annotation-name-iid",
                                 f"debug annotation name_iid {arg.name_iid} not interned")
            elif not arg.HasField("name"):
                self._report("error", "annotation-without-name", "debug annotation without a name")
            if arg.HasField("string_value_iid"):
                used = True
                if arg.string_value_iid not in seq.arg_strings:
                    self._report("error", "unknown-string-iid",
                                 f"debug annotation string iid {arg.string_value_iid} not interned")
        if used and not flags & _FLAG_NEEDS:
            self._report("error", "interned-use-without-flag",
                         "interned ids used on a packet without SEQ_NEEDS_INCREMENTAL_STATE")

    def _flows(self, event: pb.TrackEvent, track: _Track) -> None:
        # Varint ids (the superseded ``*_old`` fields) and fixed64 ids share one space.
        ids = [*event.flow_ids, *event.flow_ids_old]
        ends = [*event.terminating_flow_ids, *event.terminating_flow_ids_old]
        if not ids and not ends:
            return
        if track.counter:
            self._report("error", "flow-on-counter", "flows cannot attach to counter events")
        for flow in set(ids) & set(ends):
            self._report("error", "flow-in-both-fields",
                         f"flow {flow} in flow_ids and terminating_flow_ids of one event")
        for flow in ids:
            first, count = self._flows_open.get(flow, (self.packets, 0))
            self._flows_open[flow] = (first, count + 1)
        for flow in ends:
            opened = self._flows_open.pop(flow, None)
            if opened is None:
                self._report("warning", "flow-end-without-start",
                             f"flow {flow} terminated but never begun: nothing is drawn")

    def _counter(self, event: pb.TrackEvent, track: _Track) -> None:
        if not track.counter:
            self._report("error", "counter-on-slice-track",
                         f"counter event on non-counter track {event.track_uuid}")
        if event.HasField("double_counter_value"):
            if not math.isfinite(event.double_counter_value):
                self._report("error", "counter-not-finite", f"track {event.track_uuid}: "
                             f"counter value {event.double_counter_value}")
        elif not event.HasField("counter_value"):
            self._report("error", "counter-without-value",
                         f"counter event on track {event.track_uuid} without a value")

    def _slice(self, event: pb.TrackEvent, track: _Track, kind: int) -> None:
        if track.counter:
            self._report("error", "slice-on-counter-track",
                         f"slice event on counter track {event.track_uuid}")
        if kind == _TYPE.TYPE_SLICE_BEGIN:
            track.depth += 1
            if track.depth > MAX_DEPTH:
                self._report("error", "depth-exceeded",
                             f"track {event.track_uuid}: nesting depth {track.depth} > {MAX_DEPTH}")
        elif kind == _TYPE.TYPE_SLICE_END:
            if track.depth == 0:
                self._report("error", "end-on-empty-track",
                             f"END on track {event.track_uuid} with no open slice: ignored")
            else:
                track.depth -= 1

    def finish(self) -> list[Problem]:
        """Report what the end of the trace leaves open; return every problem."""
        self.packets = -1
        for uuid, track in self._tracks.items():
            if track.depth:
                self._report("warning", "begin-never-ended",
                             f"track {uuid}: {track.depth} slice(s) never ended (dur = -1)")
        for flow, (first, count) in sorted(self._flows_open.items()):
            if count == 1:
                self.problems.append(Problem(
                    first, "info", "flow-never-terminated",
                    f"flow {flow} has only its first event: nothing is drawn"))
        parents = {uuid for uuid in self._tracks}
        for uuid, track in self._tracks.items():
            desc = pb.TrackDescriptor.FromString(track.descriptor)
            if desc.HasField("parent_uuid") and desc.parent_uuid not in parents:
                self.problems.append(Problem(track.packet, "error", "missing-parent",
                                             f"track {uuid}: parent {desc.parent_uuid} never "
                                             "described"))
        return self.problems


def check_packets(packets: Iterable[bytes]) -> list[Problem]:
    """Check serialized packets (in file order)."""
    checker = Checker()
    for data in packets:
        checker.feed(data)
    return checker.finish()


def check_file(path: str) -> list[Problem]:
    """Check a ``.pftrace``; raises :class:`TraceReadError` when it cannot be read."""
    try:
        with open(path, "rb") as stream:
            return check_packets(read_packets(stream))
    except OSError as exc:
        raise TraceReadError(exc.strerror or str(exc)) from exc


def has_errors(problems: Iterable[Problem]) -> bool:
    return any(p.severity == "error" for p in problems)
