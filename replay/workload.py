"""Session → workload: the RPCs and events a replay feeds to the modelled daemon.

Rules:

- With API boundaries (``api-begin``/``api-end``, from libvirt logs and scenarios) an RPC
  is the API call, arriving at its ``api-begin`` time, with the commands its thread sent
  (possibly none); the recorded gap between two of its commands is replayed as CPU time
  under the VM mutex. Without, each command is one RPC named after it, arriving at the
  command's send time minus the API's ``pre`` cost.
- A command's QEMU service time is its recorded reply time minus its send time; a command
  never answered in the session waits forever (until its VM is destroyed).
- Events caused by a command (:mod:`tracer.causes`) move with it: they arrive at the
  command's *replayed* send time plus their recorded offset; events of a command that the
  replay never sends are dropped. Every other event keeps its recorded time.
- A monitor ``eof`` becomes the deferred event ``MONITOR_EOF``.

The session is streamed: the builder reads ``lookahead`` of session time ahead of the
replay's clock (caused events and late replies are attached within that window), so
memory depends on the session's rate, not its length. Records of different VMs may
interleave out of time order (each VM's own times never go backwards); one that lags by
more than the lookahead is delivered as soon as possible instead of in the past.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from replay.profile import ApiCosts, Profile
from tracer.causes import CAUSES, Attributor
from tracer.session import Record, wire_bytes

#: How far ahead of the replay clock the session is read (and the cause window).
LOOKAHEAD_NS = 10_000_000_000

INLINE, DEFERRED, CONDITIONAL, BOTH = range(4)
CLASS_CODES = {"inline": INLINE, "deferred": DEFERRED, "conditional": CONDITIONAL,
               "inline+deferred": BOTH}

NOT_SENT = -1
NEVER_SENT = -2


class Event:
    """One QMP event (or monitor EOF) on its way through the daemon."""

    __slots__ = ("id", "vm", "name", "cls", "arrival", "size", "done", "counted", "started")

    def __init__(self, vm: int, name: str, cls: int, arrival: int, size: int) -> None:
        self.id = -1  # assigned on arrival
        self.vm = vm
        self.name = name
        self.cls = cls
        self.arrival = arrival
        self.size = size
        self.done = False
        self.counted = False
        self.started = False


class Command:
    """A QMP command an RPC sends: its recorded service time and the events it causes."""

    __slots__ = ("name", "service", "error", "reply_size", "caused", "sent_at", "t_send", "rpc")

    def __init__(self, name: str, t_send: int) -> None:
        self.name = name
        self.t_send = t_send
        #: The API call that sent it (None for a command that is its own RPC).
        self.rpc: Rpc | None = None
        #: ns from send to reply as recorded; None while unknown, -1 when never answered.
        self.service: int | None = None
        self.error = False
        self.reply_size = 0
        #: (offset from send, event) for every event this command caused.
        self.caused: list[tuple[int, Event]] = []
        #: Replayed send time; NOT_SENT before, NEVER_SENT once its RPC gave up.
        self.sent_at = NOT_SENT


class Rpc:
    """An API call: arrives, waits for a worker, takes the VM's job, sends its commands."""

    __slots__ = ("id", "vm", "api", "arrival", "commands", "gaps", "costs", "complete",
                 "api_call", "destroy", "t_last_reply")

    def __init__(self, vm: int, api: str, arrival: int, costs: ApiCosts,
                 commands: list[Command] | None = None, complete: bool = True) -> None:
        self.id = -1  # assigned on arrival
        self.vm = vm
        self.api = api
        self.arrival = arrival
        self.commands: list[Command] = commands if commands is not None else []
        #: Recorded gap after each command's reply until the next command (API calls).
        self.gaps: list[int] = []
        self.costs = costs
        self.complete = complete
        #: An API call from the session's boundaries (its commands come in as read).
        self.api_call = not complete
        self.destroy = api in ("virDomainDestroy", "virDomainDestroyFlags")
        self.t_last_reply = -1


@dataclass(slots=True)
class Hooks:
    """What the builder tells the replay about commands already sent."""

    late_reply: Callable[[Command], None]
    late_cause: Callable[[Command, int, Event], None]


Item = Rpc | Event


@dataclass
class Workload:
    """A time-ordered stream of RPCs and independent events, built from session records."""

    records: Iterator[Record]
    vms: list[str]
    profile: Profile
    lookahead: int = LOOKAHEAD_NS
    hooks: Hooks | None = None
    #: Session time of the first and of the last record read (for growth windows).
    first_ns: int | None = None
    last_ns: int = 0
    records_read: int = 0
    #: Items read and not yet handed out, in time order (same times: in reading order).
    _ready: deque[tuple[int, Item]] = field(default_factory=deque)
    _attributor: Attributor = field(init=False)
    #: Commands that may still be the cause of an event, by record index, in send order.
    _commands: dict[int, Command] = field(default_factory=dict)
    _command_order: deque[tuple[int, int]] = field(default_factory=deque)
    _awaiting: dict[tuple[str, int | None, str], deque[Command]] = field(default_factory=dict)
    _apis: dict[tuple[str, int], Rpc] = field(default_factory=dict)
    _vm_index: dict[str, int] = field(init=False)
    _exhausted: bool = False
    _classes: dict[str, int] = field(default_factory=dict)
    #: Time of the last item handed out: a later item never arrives before it.
    _handed_ns: int = 0

    def __post_init__(self) -> None:
        self._attributor = Attributor(window_ns=self.lookahead)
        self._vm_index = {name: i for i, name in enumerate(self.vms)}

    def items(self) -> Iterator[tuple[int, Item]]:
        """Yield ``(time, item)`` in time order, reading the session ``lookahead`` ahead."""
        ready = self._ready
        while True:
            if ready:
                if self.last_ns <= ready[0][0] + self.lookahead:
                    self._read_until(ready[0][0] + self.lookahead)
                item = ready.popleft()
                self._handed_ns = item[0]
                yield item
            elif self._exhausted:
                return
            else:
                self._read_until(None if self.first_ns is None else self.last_ns + self.lookahead)

    def complete(self, rpc: Rpc) -> None:
        """Read on until ``rpc``'s API call has ended (its later commands are needed now)."""
        while not rpc.complete and not self._exhausted:
            self._read_one()

    def _read_until(self, t: int | None) -> None:
        while not self._exhausted and (t is None or self.last_ns <= t):
            self._read_one()
            if t is None and self._ready:
                return

    def _read_one(self) -> None:
        try:
            rec = next(self.records)
        except StopIteration:
            self._finish()
            return
        index = self.records_read
        self.records_read += 1
        t = rec["t_ns"]
        if self.first_ns is None:
            self.first_ns = t
        if t > self.last_ns:
            self.last_ns = t
        kind = rec["kind"]
        vm_name = rec["vm"]
        vm = self._vm_index[vm_name]
        if kind == "event" or kind == "eof":
            name = rec["name"] if kind == "event" else "MONITOR_EOF"
            ev = Event(vm, name, self._class_code(name), t, _size(rec))
            cause = self._attributor.feed(index, rec) if self._commands else None
            cmd = self._commands.get(cause) if cause is not None else None
            if cmd is None:
                self._push(t, ev)
            else:
                self._attach(cmd, t - cmd.t_send, ev)
        elif kind == "reply" or kind == "error":
            self._reply(rec, t, kind == "error")
        elif kind == "command":
            self._attributor.feed(index, rec)
            self._command(rec, index, vm, t)
        elif kind == "api-begin":
            costs = self.profile.api(rec["name"], qmp_command=False)
            rpc = Rpc(vm, rec["name"], t, costs, complete=False)
            self._apis[(vm_name, rec.get("thread", -1))] = rpc
            self._push(t, rpc)
        elif kind == "api-end":
            rpc_done = self._apis.pop((vm_name, rec.get("thread", -1)), None)
            if rpc_done is not None:
                rpc_done.complete = True
        order = self._command_order
        while order and order[0][0] < t - self.lookahead:
            del self._commands[order.popleft()[1]]

    def _class_code(self, name: str) -> int:
        code = self._classes.get(name)
        if code is None:
            code = self._classes[name] = CLASS_CODES[self.profile.event_class(name)]
        return code

    def _command(self, rec: Record, index: int, vm: int, t: int) -> None:
        name = rec["name"]
        cmd = Command(name, t)
        if name in CAUSES:
            self._commands[index] = cmd
            self._command_order.append((t, index))
        key = (rec["vm"], rec.get("conn"), _id_key(rec))
        self._awaiting.setdefault(key, deque()).append(cmd)
        rpc = self._apis.get((rec["vm"], rec.get("thread", -1)))
        if rpc is not None:
            cmd.rpc = rpc
            if rpc.commands:
                last = rpc.t_last_reply
                rpc.gaps.append(max(0, t - last) if last >= 0 else 0)
            rpc.commands.append(cmd)
            return
        costs = self.profile.api(name, qmp_command=True)
        rpc = Rpc(vm, name, max(0, t - costs.pre), costs, [cmd])
        self._push(rpc.arrival, rpc)

    def _push(self, t: int, item: Item) -> None:
        """Queue an item in time order. Items come nearly sorted (an RPC named after its
        command arrives ``pre`` before it), so an out-of-order one goes in near the end."""
        ready = self._ready
        if t < self._handed_ns:  # older than what the replay already has: it arrives late
            t = self._handed_ns
        if not ready or ready[-1][0] <= t:
            ready.append((t, item))
            return
        i = len(ready) - 1
        while i > 0 and ready[i - 1][0] > t:
            i -= 1
        ready.insert(i, (t, item))

    def _reply(self, rec: Record, t: int, error: bool) -> None:
        key = (rec["vm"], rec.get("conn"), _id_key(rec))
        waiting = self._awaiting.get(key)
        if not waiting:
            return
        cmd = waiting.popleft()
        if not waiting:
            del self._awaiting[key]
        cmd.service = t - cmd.t_send
        cmd.error = error
        cmd.reply_size = _size(rec)
        if cmd.rpc is not None:
            cmd.rpc.t_last_reply = t
        if cmd.sent_at >= 0 and self.hooks is not None:
            self.hooks.late_reply(cmd)

    def _attach(self, cmd: Command, offset: int, ev: Event) -> None:
        cmd.caused.append((offset, ev))
        if cmd.sent_at != NOT_SENT and self.hooks is not None:
            self.hooks.late_cause(cmd, offset, ev)

    def _finish(self) -> None:
        self._exhausted = True
        for waiting in self._awaiting.values():
            for cmd in waiting:
                cmd.service = -1
                if cmd.sent_at >= 0 and self.hooks is not None:
                    self.hooks.late_reply(cmd)
        self._awaiting.clear()
        for rpc in self._apis.values():
            rpc.complete = True
        self._apis.clear()


def _size(rec: Record) -> int:
    """Bytes of a record's wire text (QMP output is ASCII: no encoding needed then)."""
    wire = rec.get("wire")
    if wire is None:
        return len(wire_bytes(rec))
    return len(wire) if wire.isascii() else len(wire.encode())


def _id_key(rec: Record) -> str:
    """QMP ids may be any JSON value: pair replies by their JSON text ("" when absent)."""
    if "id" not in rec:
        return ""
    qid = rec["id"]
    return qid if isinstance(qid, str) else repr(qid)

