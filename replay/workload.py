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
from typing import Final

from replay.engine import NEVER
from replay.fifo import Fifo
from replay.profile import ApiCosts, Profile
from tracer.causes import CAUSED_EVENTS, CAUSES, Attributor
from tracer.session import Record, wire_bytes

#: How far ahead of the replay clock the session is read (and the cause window).
LOOKAHEAD_NS: Final = 10_000_000_000

#: Event class codes (Final: compiled code reads them as constants, not module globals).
INLINE: Final = 0
DEFERRED: Final = 1
CONDITIONAL: Final = 2
BOTH: Final = 3
CLASS_CODES: Final = {"inline": INLINE, "deferred": DEFERRED, "conditional": CONDITIONAL,
                      "inline+deferred": BOTH}

#: Kinds of the records that pair a command with its reply.
PAIRED: Final = frozenset({"command", "reply", "error"})

NOT_SENT: Final = -1
NEVER_SENT: Final = -2


class Arrival:
    """What the workload hands the replay, at :attr:`due`: an RPC, or an event no command
    causes."""

    __slots__ = ("due",)

    def __init__(self) -> None:
        #: When it arrives: its recorded time, or later for one read after the replay's
        #: clock passed that time.
        self.due = 0


class Event(Arrival):
    """One QMP event (or monitor EOF) on its way through the daemon."""

    __slots__ = ("id", "vm", "name", "cls", "arrival", "size", "done", "counted")

    def __init__(self, vm: int, name: str, cls: int, arrival: int, size: int) -> None:
        super().__init__()
        self.id = -1  # assigned on arrival
        self.vm = vm
        self.name = name
        self.cls = cls
        self.arrival = arrival
        self.size = size
        self.done = False
        self.counted = False


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


class Rpc(Arrival):
    """An API call: arrives, waits for a worker, takes the VM's job, sends its commands."""

    __slots__ = ("id", "vm", "api", "arrival", "commands", "gaps", "costs", "complete",
                 "api_call", "destroy", "t_last_reply")

    def __init__(self, vm: int, api: str, arrival: int, costs: ApiCosts,
                 commands: list[Command] | None = None, complete: bool = True) -> None:
        super().__init__()
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
    #: Items read and not yet handed out, by due time (same times: in reading order).
    _ready: Fifo[Arrival] = field(default_factory=Fifo)
    _attributor: Attributor = field(init=False)
    #: Commands that may still be the cause of an event, by record number, in send order.
    _commands: dict[int, Command] = field(default_factory=dict)
    _command_order: deque[tuple[int, int]] = field(default_factory=deque)
    #: Unanswered commands by (VM, connection, id text), oldest first (rarely more than one).
    _awaiting: dict[tuple[str, int | None, str], list[Command]] = field(default_factory=dict)
    _apis: dict[tuple[str, int], Rpc] = field(default_factory=dict)
    _vm_index: dict[str, int] = field(init=False)
    _reader: Iterator[None] = field(init=False)
    #: Where the reader pauses: after the first record later than this (None: after each).
    _until: int | None = None
    _exhausted: bool = False
    _classes: dict[str, int] = field(default_factory=dict)
    #: Time of the last item handed out: a later item never arrives before it.
    _handed_ns: int = 0

    def __post_init__(self) -> None:
        self._attributor = Attributor(window_ns=self.lookahead)
        self._vm_index = {name: i for i, name in enumerate(self.vms)}
        self._reader = self._read()

    def next_item(self) -> Arrival | None:
        """The next item by due time, reading the session ``lookahead`` ahead; None when
        there is none left. A method, not a generator of ``(time, item)``: compiled, it is
        a native call, and nothing is allocated per item."""
        ready = self._ready
        while not ready:
            if self._exhausted:
                return None
            # none ready: read one record if none was read yet, else a lookahead further
            self._read_past(None if self.first_ns is None else self.last_ns + self.lookahead)
        ahead = ready[0].due + self.lookahead
        if self.last_ns <= ahead and not self._exhausted:
            self._read_past(ahead)
        item = ready.popleft()
        self._handed_ns = item.due
        return item

    def read_all(self) -> None:
        """Read the rest of the session now: the replay then runs apart from building its
        workload (how the benchmarks time the engine alone)."""
        self._read_past(NEVER)  # a time after every record

    def complete(self, rpc: Rpc) -> None:
        """Read on until ``rpc``'s API call has ended (its later commands are needed now)."""
        while not rpc.complete and not self._exhausted:
            self._read_past(None)

    def _read_past(self, t: int | None) -> None:
        """Read on until a record after ``t`` (not before ``last_ns``) has been read; None:
        read one record. Nothing once the records have run out."""
        if self._exhausted:
            return
        self._until = t
        for _ in self._reader:
            return
        self._finish()  # the records have run out (or have raised)

    def _read(self) -> Iterator[None]:
        """Read the session's records, pausing after the first one later than ``_until``.

        This is the builder's hot path: one generator reads the whole session, so the
        state each record touches is bound once, and events, commands and replies (nearly
        all records) are handled inline rather than by a call each.
        """
        vm_index, classes, profile, hooks = self._vm_index, self._classes, self.profile, self.hooks
        commands, order, attributor = self._commands, self._command_order, self._attributor
        awaiting, apis, ready = self._awaiting, self._apis, self._ready
        lookahead = self.lookahead
        #: Costs of the RPCs named after a command (``profile.api`` builds a key per call).
        command_costs: dict[str, ApiCosts] = {}
        first_ns, last_ns, until = self.first_ns, self.last_ns, self._until
        #: When the oldest command that may cause an event expires (while there is one).
        expiry = 0
        for number, rec in enumerate(self.records, self.records_read + 1):
            self.records_read = number
            t = rec["t_ns"]
            if first_ns is None:
                self.first_ns = first_ns = t
            if t > last_ns:
                self.last_ns = last_ns = t
            kind = rec["kind"]
            item: Arrival | None = None  # to queue at ``at``
            if kind == "event" or kind == "eof":
                name = rec["name"] if kind == "event" else "MONITOR_EOF"
                code = classes.get(name)
                if code is None:
                    code = classes[name] = CLASS_CODES[profile.event_class(name)]
                wire = rec.get("wire")
                size = len(wire) if wire is not None and wire.isascii() else _size(rec)
                ev = Event(vm_index[rec["vm"]], name, code, t, size)
                # No command causes any other event: fed one, the attributor would only
                # expire old rules, which the VM's next event fed does as well (its times
                # never go backwards).
                attributable = commands and name in CAUSED_EVENTS
                cause = attributor.event(number, rec) if attributable else None
                cmd = commands.get(cause) if cause is not None else None
                if cmd is None:
                    item, at = ev, t
                else:
                    self._attach(cmd, t - cmd.t_send, ev)
            elif kind in PAIRED:
                vm_name = rec["vm"]
                qid = rec.get("id", "")  # any JSON value: paired by its JSON text
                key = (vm_name, rec.get("conn"), qid if isinstance(qid, str) else repr(qid))
                if kind == "command":
                    name = rec["name"]
                    cmd = Command(name, t)
                    if name in CAUSES:
                        attributor.command(number, rec)
                        commands[number] = cmd
                        if not order:
                            expiry = t + lookahead
                        order.append((t, number))
                    waiting = awaiting.get(key)
                    if waiting is None:
                        awaiting[key] = [cmd]
                    else:
                        waiting.append(cmd)
                    rpc = apis.get((vm_name, rec.get("thread", -1))) if apis else None
                    if rpc is None:  # an RPC of its own
                        costs = command_costs.get(name)
                        if costs is None:
                            costs = command_costs[name] = profile.api(name, qmp_command=True)
                        at = t - costs.pre
                        if at < 0:  # (not max(): a call per command)
                            at = 0
                        item = Rpc(vm_index[vm_name], name, at, costs, [cmd])
                    else:
                        cmd.rpc = rpc
                        if rpc.commands:
                            last = rpc.t_last_reply
                            rpc.gaps.append(max(0, t - last) if last >= 0 else 0)
                        rpc.commands.append(cmd)
                else:
                    waiting = awaiting.get(key)
                    if waiting:
                        cmd = waiting.pop(0)
                        if not waiting:
                            del awaiting[key]
                        cmd.service = t - cmd.t_send
                        cmd.error = kind == "error"
                        wire = rec.get("wire")
                        size = len(wire) if wire is not None and wire.isascii() else _size(rec)
                        cmd.reply_size = size
                        if cmd.rpc is not None:
                            cmd.rpc.t_last_reply = t
                        if cmd.sent_at >= 0 and hooks is not None:
                            hooks.late_reply(cmd)
            elif kind == "api-begin":
                vm_name = rec["vm"]
                costs = profile.api(rec["name"], qmp_command=False)
                item = apis[(vm_name, rec.get("thread", -1))] = Rpc(
                    vm_index[vm_name], rec["name"], t, costs, complete=False)
                at = t
            elif kind == "api-end":
                rpc = apis.pop((rec["vm"], rec.get("thread", -1)), None)
                if rpc is not None:
                    rpc.complete = True
            if item is not None:
                item.due = at
                if ready and ready[-1].due <= at:  # in order: the common case of _push
                    ready.append(item)
                else:
                    self._push(item)
            if t > expiry and order:
                while order and order[0][0] < t - lookahead:
                    del commands[order.popleft()[1]]
                if order:
                    expiry = order[0][0] + lookahead
            if until is None or last_ns > until:
                yield
                until = self._until

    def _push(self, item: Arrival) -> None:
        """Queue an item by due time. Items come nearly sorted (an RPC named after its
        command arrives ``pre`` before it), so an out-of-order one goes in near the end;
        the reader appends one in order itself."""
        ready = self._ready
        t = item.due
        if t < self._handed_ns:  # older than what the replay already has: it arrives late
            t = item.due = self._handed_ns
        if not ready or ready[-1].due <= t:
            ready.append(item)
            return
        i = len(ready) - 1
        while i > 0 and ready[i - 1].due > t:
            i -= 1
        ready.insert(i, item)

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
    """Bytes of a record's wire text (QMP output is ASCII: the reader takes the length of
    such a text itself)."""
    wire = rec.get("wire")
    if wire is None:
        return len(wire_bytes(rec))
    return len(wire) if wire.isascii() else len(wire.encode())
