"""Perfetto trace writer: timeline records in, a ``.pftrace`` out, streaming.

One file shows several policies side by side: one process and one trusted packet sequence
per policy, thread tracks for the policy's threads, per-VM custom tracks for what is held
or in flight (mutex holder, job holder, monitor command, reading paused, arrivals), a
counter pair per queue, flows from arrivals to handling, and a findings track.

Why the protobuf is encoded by hand: building ``TracePacket`` objects costs about 2 µs per
event, more than the replay spends per message. Fields are written in field-number order,
as the official serializer does, so the bytes are identical to ``SerializeToString`` of
the same packets (a test keeps it so). Track descriptors are rare and use the official
objects. The hot path costs one Python call per record: the packet head (timestamp delta
and sequence id) comes from tables of encoded heads, and each track caches the encoded
parts of its events per name, so most packets are a few cached byte strings appended to
the output (whole packets, for the common BEGIN or END at the time of the packet before).

Size: most packets are a bare slice BEGIN or END, so every byte they share counts.

- Timestamps are deltas on an incremental sequence clock (id 64): each sequence starts
  with a ClockSnapshot tying it to BOOTTIME at 0 and makes it the sequence's default
  clock, so a TrackEvent carries the ns since the previous one (0 within a record, a few
  bytes between records) instead of an absolute 5-6 byte time. Track descriptors, written
  in the middle of a record, carry their absolute time on BOOTTIME instead, so they leave
  the sequence clock alone.
- Track uuids come from counters per file, shared by all policies (0 is the root track):
  unique across the trace, deterministic, and a 1-2 byte varint instead of a
  policy-prefixed 6-byte one. Thread tracks and the counters of queues shared by all VMs
  (the busiest tracks) take the one-byte uuids 1-127 while they last.
- Flow ids come from one counter per file too, written as varints in ``flow_ids_old`` and
  ``terminating_flow_ids_old``: 2-3 bytes where the ``fixed64`` fields take 8. Those fields
  were superseded because hashed ids are long as varints; ours are small. The trace
  processor reads both.
- Categories and annotation names are interned in the first packet of the policy's
  sequence; slice names, VM names, paths and finding kinds when first used.
- Annotations carry what the trace cannot show otherwise (ids, outcome); what is
  derivable is left out. An arrival instant carries no id: its flow leads to the slice
  that does. Handler and RPC slices carry no VM and no queue time: their incoming flow
  starts at the arrival instant, on the VM's arrivals track, at the arrival time. The
  event class follows from the event name, the stage is only written (on the END) for a
  deferred stage, ``handled`` holds the path that handled the event, ``error`` is only
  written for an RPC that failed, and slices on per-VM tracks carry no category (the track
  says it).

Tracks are described where their first slice begins (an END on a track that never had
one is dropped with nothing to describe), so a record's descriptors always come before a
TrackEvent of the same record.

Slices on one track must nest: Perfetto closes the most recent open slice on an END and
silently mis-times overlapping ones. Every track keeps the stack of slices it opened; an
END for a slice that is not on top first closes the ones above it (marked ``cut``) and
re-opens them afterwards (marked ``resumed``), so the emitted BEGIN/END stream is
well nested by construction whatever the record order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable
from types import TracebackType
from typing import BinaryIO

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

from tracer.timeline import Kind, Timeline, owner_event, owner_is_event

_SLICE_BEGIN = 1
_SLICE_END = 2
_INSTANT = 3

_SEQ_INCREMENTAL_STATE_CLEARED = 1
_SEQ_NEEDS_INCREMENTAL_STATE = 2

#: Trace-level packets (the root descriptor) use their own sequence; policy p uses p + 2.
_ROOT_SEQUENCE = 1
_PID_BASE = 10000
#: Thread ids: (policy + 1) * _TID_STRIDE + index + 1, unique across the trace, never a pid.
_TID_STRIDE = 10_000_000
_INT32_MAX = 2**31 - 1
#: Track uuids below this are one-byte varints (kept for the busiest tracks).
_BUSY_UUIDS = 128

#: Interned in the first packet of every sequence: iid = position + 1.
_CATEGORIES = ("lock", "job", "event", "rpc", "sync", "finding")
_ARG_NAMES = ("event", "rpc", "vm", "error", "handled", "stage", "dropped",
              "unfinished", "cut", "resumed", "timed_out", "timeout_ns", "woken_by_event",
              "kind", "detail", "vms", "threads")


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint of an int (negative: 10-byte two's complement)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: Varints of 0 .. 2**14 - 1, and the same 14 bits as two bytes that both continue.
_SMALL = [_varint(v) for v in range(0x4000)]
_CONT = [bytes(((v & 0x7F) | 0x80, (v >> 7) | 0x80)) for v in range(0x4000)]
#: A timestamp field tag followed by the low 14 bits of a delta of 2**14 ns or more.
_TS_LOW = [b"\x40" + v for v in _CONT]
#: The incremental clock of every policy's sequence (sequence-scoped ids are 64-127).
_SEQUENCE_CLOCK = 64
_BOOTTIME = 6
#: ``timestamp_clock_id`` (field 58) = BOOTTIME.
_BOOTTIME_CLOCK = b"\xd0\x03\x06"
#: ``Trace.packet`` field headers of packets shorter than 2**14 bytes, by length.
_FRAMES = [b"\x0a" + v for v in _SMALL]
#: ``TracePacket.track_event`` field headers, likewise.
_TRACK_EVENT = [b"\x5a" + v for v in _SMALL]


def _uvarint(value: int) -> bytes:
    """Varint from the tables (14 bits at a time) below 2**42, computed above or if < 0."""
    if 0 <= value < 0x4000:
        return _SMALL[value]
    if 0x4000 <= value < 1 << 28:
        return _CONT[value & 0x3FFF] + _SMALL[value >> 14]
    if 1 << 28 <= value < 1 << 42:
        return _CONT[value & 0x3FFF] + _CONT[(value >> 14) & 0x3FFF] + _SMALL[value >> 28]
    return _varint(value)


def _field_bytes(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _uvarint(len(payload)) + payload


def _frame(packet: bytes) -> bytes:
    """A packet as one ``Trace.packet`` field."""
    n = len(packet)
    return (_FRAMES[n] if n < 0x4000 else b"\x0a" + _uvarint(n)) + packet


def _arg_iid(name: str) -> bytes:
    return _SMALL[_ARG_NAMES.index(name) + 1]


def _cat(name: str) -> bytes:
    """The ``category_iids`` field of a pre-interned category."""
    return b"\x18" + _SMALL[_CATEGORIES.index(name) + 1]


def _uint_prefixes(name: str) -> list[bytes]:
    """Everything before the value of a uint annotation, indexed by the value's varint size."""
    head = b"\x08" + _arg_iid(name) + b"\x18"
    return [b"\x22" + _SMALL[len(head) + size] + head for size in range(11)]


def _arg_uint(name: str, value: int) -> bytes:
    encoded = _uvarint(value)
    return _uint_prefixes(name)[len(encoded)] + encoded


def _arg_bool(name: str) -> bytes:
    """A ``true`` marker (false markers are never written)."""
    entry = b"\x08" + _arg_iid(name) + b"\x10\x01"
    return b"\x22" + _SMALL[len(entry)] + entry


def _arg_str_iid(name: str, iid: int) -> bytes:
    entry = b"\x08" + _arg_iid(name) + b"\x88\x01" + _uvarint(iid)
    return b"\x22" + _SMALL[len(entry)] + entry


def _arg_text(name: str, value: str) -> bytes:
    """A string annotation written literally (finding details are unique)."""
    entry = b"\x08" + _arg_iid(name) + _field_bytes(b"\x32", value.encode())
    return b"\x22" + _uvarint(len(entry)) + entry


_CAT_LOCK, _CAT_JOB, _CAT_EVENT, _CAT_RPC, _CAT_SYNC, _CAT_FINDING = (
    _cat(c) for c in _CATEGORIES)
_EVENT_PFX = _uint_prefixes("event")
_RPC_PFX = _uint_prefixes("rpc")
_ERROR = _arg_bool("error")
_DROPPED = _arg_bool("dropped")
_UNFINISHED = _arg_bool("unfinished")
_CUT = _arg_bool("cut")
_RESUMED = _arg_bool("resumed")
_TIMED_OUT = _arg_bool("timed_out")
_FLAG = b"\x68\x02"
#: Field tags of ``flow_ids_old`` (36) and ``terminating_flow_ids_old`` (42): varint ids.
_FLOW_OUT = b"\xa0\x02"
_FLOW_IN = b"\xd0\x02"


class _Interner:
    """Interned strings of one kind on one sequence (iids from 1)."""

    __slots__ = ("ids", "field_tag", "field", "pending")

    def __init__(self, field: int, pending: list[tuple[int, bytes]]) -> None:
        self.ids: dict[str, int] = {}
        self.field = field
        self.field_tag = _uvarint(field << 3 | 2)
        self.pending = pending

    def iid(self, name: str) -> int:
        iid = self.ids.get(name)
        if iid is None:
            iid = len(self.ids) + 1
            self.ids[name] = iid
            entry = b"\x08" + _uvarint(iid) + _field_bytes(b"\x12", name.encode())
            self.pending.append((self.field, _field_bytes(self.field_tag, entry)))
        return iid


class _Track:
    """A track, the stack of slices open on it and its cached encodings.

    ``keys``/``bodies`` are the open slices, innermost last: the caller's key and the
    BEGIN body without flows, so a resumed copy can be written again.
    """

    __slots__ = ("uuid_field", "end_body", "end_rest", "end_now", "keys", "bodies", "tails",
                 "handler_tails", "begins", "ends")

    def __init__(self, uuid: int, zero: bytes) -> None:
        self.uuid_field = b"\x58" + _uvarint(uuid)
        self.end_body = b"\x48\x02" + self.uuid_field
        #: The ``track_event`` field of a bare END.
        self.end_rest = b"\x5a" + _SMALL[len(self.end_body)] + self.end_body
        #: A whole bare END at the time of the packet before (``zero`` head): most are.
        self.end_now = _frame(zero + self.end_rest)
        self.keys: list[Hashable] = []
        self.bodies: list[bytes] = []
        #: type, name_iid and track_uuid, per name (or per event name / API).
        self.tails: dict[Hashable, bytes] = {}
        #: The same for handler slices, per event name (the slice name has a prefix).
        self.handler_tails: dict[str, bytes] = {}
        #: Argument-less BEGINs per name: body, ``track_event`` + flags fields, and the
        #: whole packet at the time of the packet before.
        self.begins: dict[Hashable, tuple[bytes, bytes, bytes]] = {}
        #: ``track_event`` + flags fields of ENDs, per annotation bytes.
        self.ends: dict[bytes, bytes] = {}


class TraceWriter:
    """Writes one ``.pftrace``; each policy added with :meth:`begin_policy` is one process."""

    def __init__(self, path: str) -> None:
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._policies = 0
        self._next_busy_uuid = 1
        self._next_uuid = _BUSY_UUIDS
        #: Flow ids: one counter for the whole file, as for uuids.
        self.flow_ids = itertools.count(1)
        root = pb.TracePacket()
        root.timestamp = 0
        root.trusted_packet_sequence_id = _ROOT_SEQUENCE
        root.track_descriptor.uuid = 0
        root.track_descriptor.process_ordering = pb.TrackDescriptor.PROCESS_ORDERING_EXPLICIT
        root.track_descriptor.thread_ordering = pb.TrackDescriptor.THREAD_ORDERING_EXPLICIT
        self.write(_frame(root.SerializeToString()))

    def begin_policy(self, timeline: Timeline) -> PolicyTrace:
        """Start the next policy's process; its records then go to the returned object."""
        policy = self._policies
        self._policies += 1
        return PolicyTrace(self, policy, timeline)

    def new_uuid(self, busy: bool = False) -> int:
        """The next track uuid: counters for the whole file keep uuids short and unique.

        ``busy`` tracks (threads) get the one-byte uuids while they last."""
        if busy and self._next_busy_uuid < _BUSY_UUIDS:
            self._next_busy_uuid += 1
            return self._next_busy_uuid - 1
        uuid = self._next_uuid
        self._next_uuid += 1
        return uuid

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _field_number(entry: tuple[int, bytes]) -> int:
    return entry[0]


def _head(delta: int, seq: bytes) -> bytes:
    """Timestamp and sequence id fields: the start of a TrackEvent packet ``delta`` ns after
    the previous one of its sequence."""
    return b"\x40" + _uvarint(delta) + seq


_Handler = Callable[[int, bytes, int, int, int, int], None]


class PolicyTrace:
    """One policy's process: turns its timeline records into TrackEvents as they come.

    Record handlers take ``(ts, head, thread, vm, ref, value)``, ``head`` being the
    encoded start of a packet at ``ts``.
    """

    def __init__(self, writer: TraceWriter, policy: int, timeline: Timeline) -> None:
        self._writer = writer
        self._policy = policy
        self._tl = timeline
        self._pid = _PID_BASE + policy
        self._seq_field = b"\x50" + _uvarint(policy + 2)
        #: Packet heads by delta below 2**14 ns (0: the same time as the packet before).
        self._heads = [b"\x40" + v + self._seq_field for v in _SMALL]
        self._zero = self._heads[0]
        #: Bits 14-27 of a larger delta as the varint's last byte(s), then the sequence id.
        self._ts_high = [v + self._seq_field for v in _SMALL]
        #: Time of the sequence clock: that of the last TrackEvent written.
        self._clock = 0
        self._out: list[bytes] = []
        self._append = self._out.append
        self._extend = self._out.extend
        #: Interned entries not written yet: (InternedData field number, bytes).
        self._pending: list[tuple[int, bytes]] = []
        self._names = _Interner(2, self._pending)
        self._strings = _Interner(29, self._pending)
        self._now = 0
        self._ended = False
        self._process_uuid = writer.new_uuid()
        self._threads: list[_Track] = []
        self._thread_names: list[str] = []
        self._depth_rests: list[list[bytes]] = []
        self._bytes_rests: list[list[bytes]] = []
        # Per-VM tracks, described on first use, indexed by VM (-1, no VM: the last entry).
        slots: list[_Track | None] = [None] * (len(timeline.vms) + 1)
        self._mutex = list(slots)
        self._job = list(slots)
        self._monitor = list(slots)
        self._paused = list(slots)
        self._arrivals = list(slots)
        self._rpc_arrivals = list(slots)
        self._slice_tracks: list[_Track] = []
        #: ``handled`` annotations per path index.
        self._handled: dict[int, bytes] = {}
        #: Events and RPCs that arrived and whose flow is not terminated yet (in flight):
        #: id → the encoded flow id.
        self._open_event_flows: dict[int, bytes] = {}
        self._open_rpc_flows: dict[int, bytes] = {}
        self._flow_ids = writer.flow_ids
        #: Events dropped by the handler that still runs (its slice ends marked dropped).
        self._dropped_in_handler: set[int] = set()
        #: Events whose EVENT_DONE came just before their last HANDLER_END: event id → path.
        self._done_path: dict[int, int] = {}
        self._describe_process()
        #: ``vm`` annotations by VM, interned on first use; index -1 (no VM) gives none.
        self._vm_args: list[bytes | None] = [None] * len(timeline.vms) + [b""]
        self._findings = self._instant_track(0, -1, "findings", 1 << 30)
        self._describe_new_rows(0)
        self._handlers = self._dispatch_table()
        self._flush()

    # -- descriptors -------------------------------------------------------------------

    def _descriptor(self, ts: int, fill: pb.TrackDescriptor) -> None:
        """A descriptor packet at ``ts`` on BOOTTIME (fields in field-number order: 8
        timestamp, 10 sequence id, 58 clock id, 60 the descriptor)."""
        self._append(_frame(b"\x40" + _uvarint(ts) + self._seq_field + _BOOTTIME_CLOCK
                            + _field_bytes(b"\xe2\x03", fill.SerializeToString())))

    def _describe_process(self) -> None:
        """The sequence's first packets: its clock, then its defaults, interned strings and
        process descriptor."""
        packet = pb.TracePacket()
        packet.trusted_packet_sequence_id = self._policy + 2
        packet.clock_snapshot.clocks.add(clock_id=_SEQUENCE_CLOCK, timestamp=0,
                                         is_incremental=True)
        packet.clock_snapshot.clocks.add(clock_id=_BOOTTIME, timestamp=0)
        packet.sequence_flags = _SEQ_INCREMENTAL_STATE_CLEARED | _SEQ_NEEDS_INCREMENTAL_STATE
        self._append(_frame(packet.SerializeToString()))
        packet = pb.TracePacket()
        packet.timestamp = 0
        packet.trusted_packet_sequence_id = self._policy + 2
        packet.trace_packet_defaults.timestamp_clock_id = _SEQUENCE_CLOCK
        interned = packet.interned_data
        for iid, name in enumerate(_CATEGORIES, 1):
            interned.event_categories.add(iid=iid, name=name)
        for iid, name in enumerate(_ARG_NAMES, 1):
            interned.debug_annotation_names.add(iid=iid, name=name)
        packet.sequence_flags = _SEQ_NEEDS_INCREMENTAL_STATE
        desc = packet.track_descriptor
        desc.uuid = self._process_uuid
        desc.sibling_order_rank = self._policy
        desc.process.pid = self._pid
        desc.process.process_name = self._tl.spec
        desc.child_ordering = pb.TrackDescriptor.EXPLICIT
        self._append(_frame(packet.SerializeToString()))

    def _custom_track(self, name: str, rank: int, busy: bool = False) -> pb.TrackDescriptor:
        return pb.TrackDescriptor(
            uuid=self._writer.new_uuid(busy), parent_uuid=self._process_uuid, name=name,
            sibling_order_rank=rank,
        )

    def _describe_new_rows(self, ts: int) -> None:
        """Describe the threads and queues added to the timeline's tables since last time."""
        threads = self._tl.threads
        for index in range(len(self._threads), len(threads)):
            tid = (self._policy + 1) * _TID_STRIDE + index + 1
            if index + 1 >= _TID_STRIDE or tid > _INT32_MAX:
                raise ValueError("too many threads or policies for unique thread ids")
            desc = pb.TrackDescriptor(uuid=self._writer.new_uuid(busy=True),
                                      sibling_order_rank=index)
            desc.thread.pid = self._pid
            desc.thread.tid = tid
            desc.thread.thread_name = threads[index].name
            self._descriptor(ts, desc)
            track = _Track(desc.uuid, self._zero)
            self._threads.append(track)
            self._thread_names.append(threads[index].name)
            self._slice_tracks.append(track)
        queues = self._tl.queues
        for index in range(len(self._depth_rests), len(queues)):
            for suffix, unit, rests in (
                ("depth", pb.CounterDescriptor.UNIT_COUNT, self._depth_rests),
                ("bytes", pb.CounterDescriptor.UNIT_SIZE_BYTES, self._bytes_rests),
            ):
                # A queue of every VM's items is as busy as a thread.
                desc = self._custom_track(f"{queues[index].name} {suffix}", 1 << 29,
                                          busy=queues[index].vm < 0)
                desc.counter.unit = unit
                self._descriptor(ts, desc)
                body = b"\x48\x04\x58" + _uvarint(desc.uuid) + b"\xf0\x01"
                # The track_event field up to the counter value, by the value's varint size.
                rests.append([b"\x5a" + _SMALL[len(body) + size] + body for size in range(11)])

    def _vm_name(self, vm: int, what: str) -> str:
        return what if vm < 0 else f"{self._tl.vms[vm]} {what}"

    def _vm_track(self, ts: int, vm: int, what: str, slot: int,
                  tracks: list[_Track | None]) -> _Track:
        """Describe VM ``vm``'s slice track ``what``, stored in ``tracks[vm]``."""
        track = tracks[vm] = self._instant_track(ts, vm, what, (vm + 1) * 8 + slot)
        self._slice_tracks.append(track)
        return track

    def _instant_track(self, ts: int, vm: int, what: str, rank: int,
                       tracks: list[_Track | None] | None = None) -> _Track:
        """Describe a track; instant-only ones have no slices to close at the end."""
        desc = self._custom_track(self._vm_name(vm, what), rank)
        self._descriptor(ts, desc)
        track = _Track(desc.uuid, self._zero)
        if tracks is not None:
            tracks[vm] = track
        return track

    # -- TrackEvent encoding -----------------------------------------------------------

    def _emit_flagged(self, head: bytes, body: bytes) -> None:
        """A TrackEvent packet that uses interned state: built inline when no new interned
        entry has to go with it (the common case)."""
        if self._pending:
            self._emit(head, body, True)
        else:
            te = _TRACK_EVENT[len(body)]
            size = len(head) + len(te) + len(body) + len(_FLAG)
            self._extend((_FRAMES[size], head, te, body, _FLAG))

    def _begin_ending_flow(self, head: bytes, track: _Track, key: Hashable, body: bytes,
                           subject: int, flows: dict[int, bytes]) -> None:
        """Open a slice; if the subject's arrival flow is still open, this slice ends it."""
        track.keys.append(key)
        track.bodies.append(body)
        flow = flows.pop(subject, None)
        if flow is not None:
            body += _FLOW_IN + flow
        self._emit_flagged(head, body)

    def _emit(self, head: bytes, body: bytes, interned: bool) -> None:
        """One TrackEvent packet; interned entries not written yet go with it."""
        packet = head + _field_bytes(b"\x5a", body)
        if self._pending:
            # Field-number order, as the official serializer writes InternedData.
            data = b"".join(entry for _, entry in sorted(self._pending, key=_field_number))
            self._pending.clear()
            packet += _field_bytes(b"\x62", data)
            interned = True
        if interned:
            packet += _FLAG
        self._append(_frame(packet))

    def _tail(self, track: _Track, kind: int, name: str) -> bytes:
        """type, name_iid and track_uuid of a TrackEvent (the caller caches it)."""
        return (b"\x48" + _SMALL[kind] + b"\x50" + _uvarint(self._names.iid(name))
                + track.uuid_field)

    def _new_tail(self, track: _Track, key: Hashable, kind: int, name: str) -> bytes:
        tail = track.tails[key] = self._tail(track, kind, name)
        return tail

    def _vm_arg(self, vm: int) -> bytes:
        arg = self._vm_args[vm]
        if arg is None:
            arg = self._vm_args[vm] = self._string("vm", self._tl.vms[vm])
        return arg

    def _string(self, name: str, value: str) -> bytes:
        """A string annotation with an interned value (paths and kinds recur)."""
        return _arg_str_iid(name, self._strings.iid(value))

    # -- slices ------------------------------------------------------------------------

    def _begin(self, head: bytes, track: _Track, key: Hashable, cat: bytes, name: str,
               args: bytes) -> None:
        tail = track.tails.get(name) or self._new_tail(track, name, _SLICE_BEGIN, name)
        body = cat + args + tail
        track.keys.append(key)
        track.bodies.append(body)
        self._emit(head, body, True)

    def _begin_fixed(self, head: bytes, track: _Track, key: Hashable, name: str) -> None:
        """A BEGIN without category, annotations or flows: its bytes are cached per name."""
        entry = track.begins.get(name)
        track.keys.append(key)
        if entry is None:
            body = self._tail(track, _SLICE_BEGIN, name)
            rest = _field_bytes(b"\x5a", body) + _FLAG
            track.begins[name] = (body, rest, _frame(self._zero + rest))
            track.bodies.append(body)
            self._emit(head, body, True)
        else:
            track.bodies.append(entry[0])
            if head is self._zero:
                self._append(entry[2])
            else:
                rest = entry[1]
                self._extend((_FRAMES[len(head) + len(rest)], head, rest))

    def _end(self, head: bytes, track: _Track, key: Hashable, args: bytes = b"") -> None:
        """Close the slice opened with ``key``; slices opened after it are cut and resumed."""
        keys = track.keys
        if keys and keys[-1] == key:
            keys.pop()
            track.bodies.pop()
            self._close(head, track, args)
        elif key in keys:
            self._cut(head, track, key, args)

    def _cut(self, head: bytes, track: _Track, key: Hashable, args: bytes) -> None:
        keys, bodies = track.keys, track.bodies
        depth = len(keys) - 1 - keys[::-1].index(key)
        inner = list(zip(keys[depth + 1:], bodies[depth + 1:], strict=True))
        del keys[depth:]
        del bodies[depth:]
        for _ in inner:
            self._close(head, track, _CUT)
            head = self._zero
        self._close(head, track, args)
        head = self._zero
        for key_inner, body in inner:
            # The marker goes first among the annotations, after the category if any.
            at = 2 if body[:1] == b"\x18" else 0
            if not body.startswith(_RESUMED, at):
                body = body[:at] + _RESUMED + body[at:]
            keys.append(key_inner)
            bodies.append(body)
            self._emit(head, body, True)

    def _close(self, head: bytes, track: _Track, args: bytes) -> None:
        """Write the END of the slice on top of ``track`` (already taken off its stack)."""
        if not args:
            if head is self._zero:
                self._append(track.end_now)
            else:
                rest = track.end_rest
                self._extend((_FRAMES[len(head) + len(rest)], head, rest))
        elif self._pending:
            self._emit(head, args + track.end_body, True)
        else:
            cached = track.ends.get(args)
            if cached is None:
                cached = track.ends[args] = _field_bytes(b"\x5a", args + track.end_body) + _FLAG
            self._extend((_FRAMES[len(head) + len(cached)], head, cached))

    def _close_all(self, head: bytes) -> None:
        for track in self._slice_tracks:
            while track.keys:
                track.keys.pop()
                track.bodies.pop()
                self._close(head, track, _UNFINISHED)
                head = self._zero

    def _end_wait(self, head: bytes, waiter: _Track, key: str) -> bytes:
        """End ``waiter``'s open wait slice; the head for the record's next packet."""
        self._end(head, waiter, key)
        return self._zero

    # -- records -----------------------------------------------------------------------

    def feed(self, records: Iterable[tuple[int, int, int, int, int, int]]) -> None:
        """Encode a chunk of records (in time order) and write it out."""
        if self._ended:
            raise ValueError("records fed after end()")
        self._describe_new_rows(self._now)
        handlers = self._handlers
        low, high, heads, zero = _TS_LOW, self._ts_high, self._heads, self._zero
        out = self._out
        clock = self._clock
        ts = -1
        for ts, kind, thread, vm, ref, value in records:
            if ts == clock:
                handlers[kind](ts, zero, thread, vm, ref, value)
                continue
            # The first packet at a new time carries the delta, the record's others 0.
            delta = ts - clock
            head = (heads[delta] if 0 < delta < 0x4000
                    else low[delta & 0x3FFF] + high[delta >> 14] if 0x4000 <= delta < 0x10000000
                    else self._far_head(delta))
            written = len(out)
            handlers[kind](ts, head, thread, vm, ref, value)
            if len(out) != written:
                clock = ts
        self._clock = clock
        if ts >= 0:
            self._now = ts
        self._flush()

    def _far_head(self, delta: int) -> bytes:
        if delta < 0:
            raise ValueError(f"record at {self._clock + delta} ns after one at {self._clock} ns: "
                             "records must come in time order")
        return _head(delta, self._seq_field)

    def end(self) -> None:
        """Close whatever is still open (normally ``RUN_END`` did) and write it out."""
        if not self._ended:
            self._describe_new_rows(self._now)
            self._close_all(_head(self._now - self._clock, self._seq_field))
            self._ended = True
            self._flush()

    def _flush(self) -> None:
        if self._out:
            self._writer.write(b"".join(self._out))
            self._out.clear()

    def _owner_name(self, owner: int) -> str:
        if owner_is_event(owner):
            return "event:" + self._tl.events.name(owner_event(owner))
        return self._tl.rpcs.api(owner)

    def _lock_wait(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                   value: int) -> None:
        self._begin(head, self._threads[thread], "lock.wait", _CAT_LOCK, "lock.wait",
                    self._vm_arg(vm))

    def _lock_acquire(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                      value: int) -> None:
        waiter = self._threads[thread]
        if "lock.wait" in waiter.keys:
            head = self._end_wait(head, waiter, "lock.wait")
        track = self._mutex[vm] or self._vm_track(ts, vm, "mutex", 0, self._mutex)
        self._begin_fixed(head, track, thread, self._thread_names[thread])

    def _lock_release(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                      value: int) -> None:
        track = self._mutex[vm]
        if track is not None:
            self._end(head, track, thread)

    def _job_wait(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                  value: int) -> None:
        self._begin(head, self._threads[thread], "job.wait", _CAT_JOB, "job.wait",
                    self._vm_arg(vm))

    def _job_begin(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                   value: int) -> None:
        waiter = self._threads[thread]
        if "job.wait" in waiter.keys:
            head = self._end_wait(head, waiter, "job.wait")
        track = self._job[vm] or self._vm_track(ts, vm, "job", 1, self._job)
        name = self._tl.rpcs.api(ref) if ref >= 0 else self._owner_name(ref)
        self._begin_fixed(head, track, ref, name)

    def _job_end(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                 value: int) -> None:
        track = self._job[vm]
        if track is not None:
            self._end(head, track, ref)

    def _job_timeout(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                     value: int) -> None:
        self._end(head, self._threads[thread], "job.wait", _TIMED_OUT)

    def _handler_begin(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                       value: int) -> None:
        track = self._threads[thread]
        name = self._tl.events.name(ref)
        tail = track.handler_tails.get(name)
        if tail is None:
            tail = track.handler_tails[name] = self._tail(track, _SLICE_BEGIN, "handle:" + name)
        encoded = _SMALL[ref] if ref < 0x4000 else _uvarint(ref)
        body = _CAT_EVENT + _EVENT_PFX[len(encoded)] + encoded + tail
        self._begin_ending_flow(head, track, ref << 1, body, ref, self._open_event_flows)

    def _handler_end(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                     value: int) -> None:
        track = self._threads[thread]
        args = b""
        path = self._done_path.pop(ref, None)
        if path is not None:
            args = self._handled.get(path) or self._handled_arg(path)
        if value:
            args += _arg_uint("stage", value)
        if ref in self._dropped_in_handler:
            self._dropped_in_handler.discard(ref)
            args += _DROPPED
        self._end(head, track, ref << 1, args)

    def _handled_arg(self, path: int) -> bytes:
        arg = self._handled[path] = self._string("handled", self._tl.paths[path])
        return arg

    def _event_done(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                    value: int) -> None:
        self._done_path[ref] = value

    def _event_arrive(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                      value: int) -> None:
        self._arrival(ts, head, vm, ref, self._tl.events.name(ref), self._arrivals, "arrivals",
                      (vm + 1) * 8 + 4, self._open_event_flows)

    def _arrival(self, ts: int, head: bytes, vm: int, ref: int, name: str,
                 tracks: list[_Track | None], what: str, rank: int,
                 flows: dict[int, bytes]) -> None:
        """An ``arrive:<name>`` instant that starts the flow to the subject's first slice
        (which carries the subject's id)."""
        track = tracks[vm] or self._instant_track(ts, vm, what, rank, tracks)
        tail = track.tails.get(name) or self._new_tail(track, name, _INSTANT, "arrive:" + name)
        flow = flows[ref] = _uvarint(next(self._flow_ids))
        self._emit_flagged(head, tail + _FLOW_OUT + flow)

    def _event_dropped(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                       value: int) -> None:
        self._open_event_flows.pop(ref, None)
        if thread >= 0:
            self._dropped_in_handler.add(ref)

    def _ignore(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                value: int) -> None:
        """Records shown through other kinds (message reads)."""

    def _queue_depth(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                     value: int) -> None:
        encoded = _SMALL[value] if 0 <= value < 0x4000 else _uvarint(value)
        rest = self._depth_rests[ref][len(encoded)]
        self._extend((_FRAMES[len(head) + len(rest) + len(encoded)], head, rest, encoded))

    def _queue_bytes(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                     value: int) -> None:
        encoded = _SMALL[value] if 0 <= value < 0x4000 else _uvarint(value)
        rest = self._bytes_rests[ref][len(encoded)]
        self._extend((_FRAMES[len(head) + len(rest) + len(encoded)], head, rest, encoded))

    def _read_paused(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                     value: int) -> None:
        track = self._paused[vm] or self._vm_track(ts, vm, "reading paused", 3, self._paused)
        self._begin_fixed(head, track, "paused", "paused")

    def _read_resumed(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                      value: int) -> None:
        track = self._paused[vm]
        if track is not None:
            self._end(head, track, "paused")

    def _rpc_arrive(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                    value: int) -> None:
        self._arrival(ts, head, vm, ref, self._tl.rpcs.api(ref), self._rpc_arrivals,
                      "rpc arrivals", (vm + 1) * 8 + 5, self._open_rpc_flows)

    def _rpc_start(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                   value: int) -> None:
        track = self._threads[thread]
        api = self._tl.rpcs.api(ref)
        tail = track.tails.get(api) or self._new_tail(track, api, _SLICE_BEGIN, api)
        encoded = _SMALL[ref] if ref < 0x4000 else _uvarint(ref)
        body = _CAT_RPC + _RPC_PFX[len(encoded)] + encoded + tail
        self._begin_ending_flow(head, track, ref << 1 | 1, body, ref, self._open_rpc_flows)

    def _rpc_end(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                 value: int) -> None:
        self._end(head, self._threads[thread], ref << 1 | 1, _ERROR if value else b"")

    def _cmd_send(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                  value: int) -> None:
        track = self._monitor[vm] or self._vm_track(ts, vm, "monitor", 2, self._monitor)
        name = "handler command" if ref < 0 else self._tl.rpcs.command(ref, value)
        self._begin_fixed(head, track, ref, name)

    def _cmd_reply(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                   value: int) -> None:
        track = self._monitor[vm]
        if track is None:
            return
        self._end(head, track, ref, _ERROR if value else b"")

    def _sync_wait(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                   value: int) -> None:
        self._begin(head, self._threads[thread], "sync.wait", _CAT_SYNC, "sync.wait",
                    _arg_uint("rpc", ref) + self._vm_arg(vm) + _arg_uint("timeout_ns", value))

    def _sync_wake(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                   value: int) -> None:
        args = _TIMED_OUT if value < 0 else _arg_uint("woken_by_event", value)
        self._end(head, self._threads[thread], "sync.wait", args)

    def _finding(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                 value: int) -> None:
        finding = self._tl.findings[ref]
        track = self._findings
        tail = track.tails.get(finding.kind) or self._new_tail(
            track, finding.kind, _INSTANT, finding.kind)
        args = (self._string("kind", finding.kind) + _arg_text("detail", finding.detail)
                + _arg_text("vms", ", ".join(finding.vms))
                + _arg_text("threads", ", ".join(finding.threads)))
        self._emit(head, _CAT_FINDING + args + tail, True)

    def _run_end(self, ts: int, head: bytes, thread: int, vm: int, ref: int,
                 value: int) -> None:
        self._close_all(head)

    def _dispatch_table(self) -> list[_Handler]:
        """Record handlers indexed by kind number (a list: the hot loop indexes it per record)."""
        by_kind: dict[Kind, _Handler] = {
            Kind.LOCK_WAIT: self._lock_wait,
            Kind.LOCK_ACQUIRE: self._lock_acquire,
            Kind.LOCK_RELEASE: self._lock_release,
            Kind.JOB_WAIT: self._job_wait,
            Kind.JOB_BEGIN: self._job_begin,
            Kind.JOB_END: self._job_end,
            Kind.JOB_TIMEOUT: self._job_timeout,
            Kind.HANDLER_BEGIN: self._handler_begin,
            Kind.HANDLER_END: self._handler_end,
            Kind.EVENT_ARRIVE: self._event_arrive,
            Kind.EVENT_DROPPED: self._event_dropped,
            Kind.QUEUE_DEPTH: self._queue_depth,
            Kind.QUEUE_BYTES: self._queue_bytes,
            Kind.READ_PAUSED: self._read_paused,
            Kind.READ_RESUMED: self._read_resumed,
            Kind.EVENT_DONE: self._event_done,
            Kind.RPC_ARRIVE: self._rpc_arrive,
            Kind.RPC_START: self._rpc_start,
            Kind.RPC_END: self._rpc_end,
            Kind.CMD_SEND: self._cmd_send,
            Kind.CMD_REPLY: self._cmd_reply,
            Kind.SYNC_WAIT: self._sync_wait,
            Kind.SYNC_WAKE: self._sync_wake,
            Kind.FINDING: self._finding,
            Kind.RUN_END: self._run_end,
        }
        table: list[_Handler] = [self._ignore] * (max(Kind) + 1)
        for kind, handler in by_kind.items():
            table[kind] = handler
        return table
