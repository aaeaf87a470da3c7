"""Perfetto trace writer: timeline records in, a ``.pftrace`` out, streaming.

One file shows several policies side by side: one process and one trusted packet sequence
per policy, thread tracks for the policy's threads, per-VM custom tracks for what is held
or in flight (mutex holder, job holder, monitor command, reading paused, arrivals), a
counter pair per queue, flows from arrivals to handling, and a findings track.

Why the protobuf is encoded by hand: building ``TracePacket`` objects costs about 2 µs per
event, more than the replay spends per message. Fields are written in field-number order,
as the official serializer does, so the bytes are identical to ``SerializeToString`` of
the same packets (a test keeps it so). Track descriptors are rare and use the official
objects.

Slices on one track must nest: Perfetto closes the most recent open slice on an END and
silently mis-times overlapping ones. Every track keeps the stack of slices it opened; an
END for a slice that is not on top first closes the ones above it (marked ``cut``) and
re-opens them afterwards (marked ``resumed``), so the emitted BEGIN/END stream is
well nested by construction whatever the record order.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from types import TracebackType
from typing import BinaryIO, ClassVar

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

from tracer.timeline import Kind, Timeline, owner_event, owner_is_event

_SLICE_BEGIN = 1
_SLICE_END = 2
_INSTANT = 3
_COUNTER = 4

_SEQ_INCREMENTAL_STATE_CLEARED = 1
_SEQ_NEEDS_INCREMENTAL_STATE = 2

#: Trace-level packets (the root descriptor) use their own sequence; policy p uses p + 2.
_ROOT_SEQUENCE = 1
_PID_BASE = 10000
#: Thread ids: (policy + 1) * _TID_STRIDE + index + 1, unique across the trace, never a pid.
_TID_STRIDE = 10_000_000
_INT32_MAX = 2**31 - 1
_LOCAL_BITS = 40
_FLOW_ID_BITS = 40
_FLOW_EVENT = 0
_FLOW_RPC = 1


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (negative: 10-byte two's complement)."""
    if value < 0:
        value += 1 << 64
    if value < 0x80:
        return _SMALL[value] if value < len(_SMALL) else bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL: list[bytes] = []
_SMALL.extend(bytes((v,)) for v in range(0x80))
_SMALL.extend(bytes(((v & 0x7F) | 0x80, v >> 7)) for v in range(0x80, 0x4000))
_SMALL_LIMIT = len(_SMALL)


def _uvarint(value: int) -> bytes:
    """Hot-path varint for values known to be non-negative."""
    if value < _SMALL_LIMIT:
        return _SMALL[value]
    return _varint(value)


def _field_bytes(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _uvarint(len(payload)) + payload


def _fixed64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def flow_id(policy: int, space: int, subject: int) -> int:
    """Flow id of an event (space 0) or an RPC (space 1), unique across the whole trace."""
    return ((policy + 1) << (_FLOW_ID_BITS + 1)) | (subject << 1) | space


def track_uuid(policy: int, local: int) -> int:
    """Track uuid of a policy's ``local``-th track, unique across the whole trace."""
    return ((policy + 1) << _LOCAL_BITS) | local


class _Interner:
    """Interned strings of one kind on one sequence (iids from 1)."""

    __slots__ = ("ids", "field", "field_tag", "pending")

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


class _SliceTrack:
    """A slice track and the stack of slices open on it."""

    __slots__ = ("uuid_field", "end_body", "stack")

    def __init__(self, uuid: int) -> None:
        self.uuid_field = b"\x58" + _uvarint(uuid)
        self.end_body = b"\x48\x02" + self.uuid_field
        #: Open slices, innermost last: (key, category field, rest of the BEGIN body
        #: without flows), so a resumed copy can put its annotation in field order.
        self.stack: list[tuple[Hashable, bytes, bytes]] = []


class TraceWriter:
    """Writes one ``.pftrace``; each policy added with :meth:`begin_policy` is one process."""

    def __init__(self, path: str) -> None:
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._policies = 0
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


def _frame(packet: bytes) -> bytes:
    """A packet as one ``Trace.packet`` field."""
    return b"\x0a" + _uvarint(len(packet)) + packet


_Handler = Callable[["PolicyTrace", int, int, int, int, int], None]


class PolicyTrace:
    """One policy's process: turns its timeline records into TrackEvents as they come."""

    def __init__(self, writer: TraceWriter, policy: int, timeline: Timeline) -> None:
        self._writer = writer
        self._policy = policy
        self._tl = timeline
        self._pid = _PID_BASE + policy
        self._seq_field = b"\x50" + _uvarint(policy + 2)
        self._out: list[bytes] = []
        #: Interned entries not written yet: (InternedData field number, bytes).
        self._pending: list[tuple[int, bytes]] = []
        self._categories = _Interner(1, self._pending)
        self._names = _Interner(2, self._pending)
        self._arg_names = _Interner(3, self._pending)
        self._arg_strings = _Interner(29, self._pending)
        self._next_local = 0
        self._now = 0
        self._ended = False
        self._process_uuid = self._new_uuid()
        self._threads: list[_SliceTrack] = []
        self._queue_tracks: list[tuple[bytes, bytes]] = []
        self._vm_tracks: dict[tuple[int, str], _SliceTrack] = {}
        self._instant_tracks: dict[tuple[int, str], bytes] = {}
        self._slice_tracks: list[_SliceTrack] = []
        self._bodies: dict[tuple[int, bytes, int], bytes] = {}
        self._cat: dict[str, bytes] = {}
        #: Events and RPCs that arrived and whose flow is not terminated yet (in flight).
        self._open_event_flows: set[int] = set()
        self._open_rpc_flows: set[int] = set()
        #: Events dropped by the handler that still runs (its slice ends marked dropped).
        self._dropped_in_handler: set[int] = set()
        #: Events whose EVENT_DONE came just before their last HANDLER_END: event id → path.
        self._done_path: dict[int, int] = {}
        self._describe_process()
        self._findings_track = self._instant_track(-1, "findings", 1 << 30)
        self._describe_new_rows()
        self._flush()

    # -- descriptors -------------------------------------------------------------------

    def _new_uuid(self) -> int:
        uuid = track_uuid(self._policy, self._next_local)
        self._next_local += 1
        if self._next_local >= 1 << _LOCAL_BITS:
            raise ValueError("too many tracks in one policy")
        return uuid

    def _descriptor(self, fill: pb.TrackDescriptor, flags: int = 0) -> None:
        packet = pb.TracePacket()
        packet.timestamp = self._now
        packet.trusted_packet_sequence_id = self._policy + 2
        packet.track_descriptor.CopyFrom(fill)
        if flags:
            packet.sequence_flags = flags
        self._out.append(_frame(packet.SerializeToString()))

    def _describe_process(self) -> None:
        desc = pb.TrackDescriptor(uuid=self._process_uuid, sibling_order_rank=self._policy)
        desc.process.pid = self._pid
        desc.process.process_name = self._tl.spec
        desc.child_ordering = pb.TrackDescriptor.EXPLICIT
        # The first packet of the sequence: it clears the (empty) interning state.
        self._descriptor(desc, _SEQ_INCREMENTAL_STATE_CLEARED | _SEQ_NEEDS_INCREMENTAL_STATE)

    def _custom_track(self, name: str, rank: int) -> pb.TrackDescriptor:
        return pb.TrackDescriptor(
            uuid=self._new_uuid(), parent_uuid=self._process_uuid, name=name,
            sibling_order_rank=rank,
        )

    def _describe_new_rows(self) -> None:
        """Describe the threads and queues added to the timeline's tables since last time."""
        threads = self._tl.threads
        for index in range(len(self._threads), len(threads)):
            tid = (self._policy + 1) * _TID_STRIDE + index + 1
            if index + 1 >= _TID_STRIDE or tid > _INT32_MAX:
                raise ValueError("too many threads or policies for unique thread ids")
            desc = pb.TrackDescriptor(uuid=self._new_uuid(), sibling_order_rank=index)
            desc.thread.pid = self._pid
            desc.thread.tid = tid
            desc.thread.thread_name = threads[index].name
            self._descriptor(desc)
            track = _SliceTrack(desc.uuid)
            self._threads.append(track)
            self._slice_tracks.append(track)
        queues = self._tl.queues
        for index in range(len(self._queue_tracks), len(queues)):
            pair = []
            for suffix, unit in (("depth", pb.CounterDescriptor.UNIT_COUNT),
                                 ("bytes", pb.CounterDescriptor.UNIT_SIZE_BYTES)):
                desc = self._custom_track(f"{queues[index].name} {suffix}", 1 << 29)
                desc.counter.unit = unit
                self._descriptor(desc)
                pair.append(b"\x48\x04\x58" + _uvarint(desc.uuid) + b"\xf0\x01")
            self._queue_tracks.append((pair[0], pair[1]))

    def _vm_name(self, vm: int, what: str) -> str:
        return what if vm < 0 else f"{self._tl.vms[vm]} {what}"

    def _vm_track(self, vm: int, what: str, slot: int) -> _SliceTrack:
        track = self._vm_tracks.get((vm, what))
        if track is None:
            desc = self._custom_track(self._vm_name(vm, what), (vm + 1) * 8 + slot)
            self._descriptor(desc)
            track = _SliceTrack(desc.uuid)
            self._vm_tracks[(vm, what)] = track
            self._slice_tracks.append(track)
        return track

    def _instant_track(self, vm: int, what: str, rank: int) -> bytes:
        """The ``track_uuid`` field of an instant-only track."""
        field = self._instant_tracks.get((vm, what))
        if field is None:
            desc = self._custom_track(self._vm_name(vm, what), rank)
            self._descriptor(desc)
            field = b"\x58" + _uvarint(desc.uuid)
            self._instant_tracks[(vm, what)] = field
        return field

    # -- TrackEvent encoding -----------------------------------------------------------

    def _packet(self, ts: int, body: bytes, interned: bool) -> None:
        packet = b"\x40" + _uvarint(ts) + self._seq_field + b"\x5a" + _uvarint(len(body)) + body
        if self._pending:
            # Field-number order, as the official serializer writes InternedData.
            data = b"".join(entry for _, entry in sorted(self._pending, key=_field_number))
            self._pending.clear()
            packet += b"\x62" + _uvarint(len(data)) + data
            interned = True
        if interned:
            packet += b"\x68\x02"
        self._out.append(b"\x0a" + _uvarint(len(packet)) + packet)

    def _body_tail(self, kind: int, name: str, track_field: bytes) -> bytes:
        """type, name_iid and track_uuid of a TrackEvent, cached per (type, track, name)."""
        iid = self._names.iid(name)
        key = (kind, track_field, iid)
        tail = self._bodies.get(key)
        if tail is None:
            tail = b"\x48" + _uvarint(kind) + b"\x50" + _uvarint(iid) + track_field
            self._bodies[key] = tail
        return tail

    def _category(self, name: str) -> bytes:
        field = self._cat.get(name)
        if field is None:
            field = b"\x18" + _uvarint(self._categories.iid(name))
            self._cat[name] = field
        return field

    def _arg_uint(self, name: str, value: int) -> bytes:
        entry = b"\x08" + _uvarint(self._arg_names.iid(name)) + b"\x18" + _uvarint(value)
        return b"\x22" + _uvarint(len(entry)) + entry

    def _arg_int(self, name: str, value: int) -> bytes:
        entry = b"\x08" + _uvarint(self._arg_names.iid(name)) + b"\x20" + _varint(value)
        return b"\x22" + _uvarint(len(entry)) + entry

    def _arg_bool(self, name: str, value: bool) -> bytes:
        entry = (b"\x08" + _uvarint(self._arg_names.iid(name))
                 + (b"\x10\x01" if value else b"\x10\x00"))
        return b"\x22" + _uvarint(len(entry)) + entry

    def _arg_str(self, name: str, value: str) -> bytes:
        """A string annotation with an interned value (VM names, paths, classes recur)."""
        entry = (b"\x08" + _uvarint(self._arg_names.iid(name))
                 + b"\x88\x01" + _uvarint(self._arg_strings.iid(value)))
        return b"\x22" + _uvarint(len(entry)) + entry

    def _arg_text(self, name: str, value: str) -> bytes:
        """A string annotation written literally (finding details are unique)."""
        entry = (b"\x08" + _uvarint(self._arg_names.iid(name))
                 + _field_bytes(b"\x32", value.encode()))
        return b"\x22" + _uvarint(len(entry)) + entry

    def _vm_arg(self, vm: int) -> bytes:
        return self._arg_str("vm", self._tl.vms[vm]) if vm >= 0 else b""

    # -- slices ------------------------------------------------------------------------

    def _begin(
        self, ts: int, track: _SliceTrack, key: Hashable, category: str, name: str,
        args: bytes, flows: bytes = b"",
    ) -> None:
        cat = self._category(category)
        rest = args + self._body_tail(_SLICE_BEGIN, name, track.uuid_field)
        track.stack.append((key, cat, rest))
        self._packet(ts, cat + rest + flows, True)

    def _end(self, ts: int, track: _SliceTrack, key: Hashable, args: bytes = b"") -> None:
        """Close the slice opened with ``key``; slices opened after it are cut and resumed."""
        stack = track.stack
        if not stack:
            return
        if stack[-1][0] == key:
            stack.pop()
            self._close(ts, track, args)
            return
        depth = next((i for i in range(len(stack) - 1, -1, -1) if stack[i][0] == key), -1)
        if depth < 0:
            return
        inner = stack[depth + 1:]
        del stack[depth:]
        cut = self._arg_bool("cut", True)
        for _ in inner:
            self._close(ts, track, cut)
        self._close(ts, track, args)
        resumed = self._arg_bool("resumed", True)
        for key_inner, cat, rest in inner:
            rest = resumed + rest
            stack.append((key_inner, cat, rest))
            self._packet(ts, cat + rest, True)

    def _close(self, ts: int, track: _SliceTrack, args: bytes) -> None:
        if args:
            self._packet(ts, args + track.end_body, True)
        else:
            self._packet(ts, track.end_body, False)

    def _instant(self, ts: int, track_field: bytes, category: str, name: str, args: bytes,
                 flows: bytes = b"") -> None:
        body = self._category(category) + args + self._body_tail(_INSTANT, name, track_field)
        self._packet(ts, body + flows, True)

    def _close_all(self, ts: int) -> None:
        unfinished = self._arg_bool("unfinished", True)
        for track in self._slice_tracks:
            while track.stack:
                track.stack.pop()
                self._close(ts, track, unfinished)

    # -- records -----------------------------------------------------------------------

    def feed(self, records: Iterable[tuple[int, int, int, int, int, int]]) -> None:
        """Encode a chunk of records (in time order) and write it out."""
        if self._ended:
            raise ValueError("records fed after end()")
        self._describe_new_rows()
        handlers = _HANDLERS
        for ts, kind, thread, vm, ref, value in records:
            self._now = ts
            handlers[kind](self, ts, thread, vm, ref, value)
        self._flush()

    def end(self) -> None:
        """Close whatever is still open (normally ``RUN_END`` did) and write it out."""
        if not self._ended:
            self._describe_new_rows()
            self._close_all(self._now)
            self._ended = True
            self._flush()

    def _flush(self) -> None:
        if self._out:
            self._writer.write(b"".join(self._out))
            self._out.clear()

    def _owner_name(self, owner: int) -> str:
        if owner_is_event(owner):
            return "event:" + self._tl.events[owner_event(owner)].name
        return self._tl.rpcs[owner].api

    def _lock_wait(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._begin(ts, self._threads[thread], "lock.wait", "lock", "lock.wait", self._vm_arg(vm))

    def _lock_acquire(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._end(ts, self._threads[thread], "lock.wait")
        self._begin(ts, self._vm_track(vm, "mutex", 0), thread, "lock",
                    self._tl.threads[thread].name, b"")

    def _lock_release(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._end(ts, self._vm_track(vm, "mutex", 0), thread)

    def _job_wait(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._begin(ts, self._threads[thread], "job.wait", "job", "job.wait", self._vm_arg(vm))

    def _job_begin(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._end(ts, self._threads[thread], "job.wait")
        self._begin(ts, self._vm_track(vm, "job", 1), ref, "job", self._owner_name(ref), b"")

    def _job_end(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._end(ts, self._vm_track(vm, "job", 1), ref)

    def _job_timeout(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._end(ts, self._threads[thread], "job.wait", self._arg_bool("timed_out", True))

    def _handler_begin(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        event = self._tl.events[ref]
        args = (self._arg_uint("event", ref) + self._vm_arg(vm) + self._arg_uint("stage", value)
                + self._arg_str("class", event.cls))
        flows = b""
        if ref in self._open_event_flows:
            self._open_event_flows.discard(ref)
            flows = b"\x81\x03" + _fixed64(flow_id(self._policy, _FLOW_EVENT, ref))
        self._begin(ts, self._threads[thread], ("handler", ref), "event", "handle:" + event.name,
                    args, flows)

    def _handler_end(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        args = b""
        path = self._done_path.pop(ref, None)
        if path is not None:
            args = self._arg_str("path", self._tl.paths[path]) + self._arg_bool("handled", True)
        if ref in self._dropped_in_handler:
            self._dropped_in_handler.discard(ref)
            args += self._arg_bool("dropped", True)
        self._end(ts, self._threads[thread], ("handler", ref), args)

    def _event_done(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._done_path[ref] = value

    def _event_arrive(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._open_event_flows.add(ref)
        self._instant(ts, self._instant_track(vm, "arrivals", (vm + 1) * 8 + 4), "event",
                      "arrive:" + self._tl.events[ref].name,
                      self._arg_uint("event", ref) + self._arg_uint("bytes", value),
                      b"\xf9\x02" + _fixed64(flow_id(self._policy, _FLOW_EVENT, ref)))

    def _event_dropped(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._open_event_flows.discard(ref)
        if thread >= 0:
            self._dropped_in_handler.add(ref)

    def _ignore(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        """Records shown through other kinds (message reads)."""

    def _queue_depth(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._packet(ts, self._queue_tracks[ref][0] + _uvarint(value), False)

    def _queue_bytes(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._packet(ts, self._queue_tracks[ref][1] + _uvarint(value), False)

    def _read_paused(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._begin(ts, self._vm_track(vm, "reading paused", 3), "paused", "monitor", "paused", b"")

    def _read_resumed(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._end(ts, self._vm_track(vm, "reading paused", 3), "paused")

    def _rpc_arrive(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._open_rpc_flows.add(ref)
        self._instant(ts, self._instant_track(vm, "rpc arrivals", (vm + 1) * 8 + 5), "rpc",
                      "arrive:" + self._tl.rpcs[ref].api, self._arg_uint("rpc", ref),
                      b"\xf9\x02" + _fixed64(flow_id(self._policy, _FLOW_RPC, ref)))

    def _rpc_start(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        args = self._arg_uint("rpc", ref) + self._vm_arg(vm) + self._arg_uint("queue_ns", value)
        flows = b""
        if ref in self._open_rpc_flows:
            self._open_rpc_flows.discard(ref)
            flows = b"\x81\x03" + _fixed64(flow_id(self._policy, _FLOW_RPC, ref))
        self._begin(ts, self._threads[thread], ("rpc", ref), "rpc", self._tl.rpcs[ref].api,
                    args, flows)

    def _rpc_end(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._end(ts, self._threads[thread], ("rpc", ref), self._arg_bool("error", value != 0))

    def _cmd_send(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        name = "handler command" if owner_is_event(ref) else self._tl.rpcs[ref].commands[value]
        self._begin(ts, self._vm_track(vm, "monitor", 2), ref, "monitor", name, b"")

    def _cmd_reply(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._end(ts, self._vm_track(vm, "monitor", 2), ref,
                  self._arg_bool("error", True) if value else b"")

    def _sync_wait(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._begin(ts, self._threads[thread], "sync.wait", "sync", "sync.wait",
                    self._arg_uint("rpc", ref) + self._vm_arg(vm)
                    + self._arg_uint("timeout_ns", value))

    def _sync_wake(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        args = (self._arg_bool("timed_out", True) if value < 0
                else self._arg_uint("woken_by_event", value))
        self._end(ts, self._threads[thread], "sync.wait", args)

    def _finding(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        finding = self._tl.findings[ref]
        args = (self._arg_str("kind", finding.kind) + self._arg_text("detail", finding.detail)
                + self._arg_text("vms", ", ".join(finding.vms))
                + self._arg_text("threads", ", ".join(finding.threads)))
        self._instant(ts, self._findings_track, "finding", finding.kind, args)

    def _run_end(self, ts: int, thread: int, vm: int, ref: int, value: int) -> None:
        self._close_all(ts)

    by_kind: ClassVar[dict[Kind, _Handler]] = {
        Kind.LOCK_WAIT: _lock_wait,
        Kind.LOCK_ACQUIRE: _lock_acquire,
        Kind.LOCK_RELEASE: _lock_release,
        Kind.JOB_WAIT: _job_wait,
        Kind.JOB_BEGIN: _job_begin,
        Kind.JOB_END: _job_end,
        Kind.JOB_TIMEOUT: _job_timeout,
        Kind.HANDLER_BEGIN: _handler_begin,
        Kind.HANDLER_END: _handler_end,
        Kind.EVENT_ARRIVE: _event_arrive,
        Kind.EVENT_DROPPED: _event_dropped,
        Kind.MSG_READ: _ignore,
        Kind.QUEUE_DEPTH: _queue_depth,
        Kind.QUEUE_BYTES: _queue_bytes,
        Kind.READ_PAUSED: _read_paused,
        Kind.READ_RESUMED: _read_resumed,
        Kind.EVENT_DONE: _event_done,
        Kind.RPC_ARRIVE: _rpc_arrive,
        Kind.RPC_START: _rpc_start,
        Kind.RPC_END: _rpc_end,
        Kind.CMD_SEND: _cmd_send,
        Kind.CMD_REPLY: _cmd_reply,
        Kind.SYNC_WAIT: _sync_wait,
        Kind.SYNC_WAKE: _sync_wake,
        Kind.FINDING: _finding,
        Kind.RUN_END: _run_end,
    }


def _dispatch_table() -> list[_Handler]:
    """Record handlers indexed by kind number (a list: the hot loop indexes it per record)."""
    table: list[_Handler] = [PolicyTrace._ignore] * (max(Kind) + 1)
    for kind, handler in PolicyTrace.by_kind.items():
        table[kind] = handler
    return table


_HANDLERS = _dispatch_table()
