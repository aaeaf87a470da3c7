"""The libvirt-like host: VMs, their monitors, the RPC bodies and the event handler stages.

What an API call and an event handler *do* is the same under every policy; a policy only
decides which thread reads which monitor and where each event stage runs. So the bodies
live here, written against the primitives, and policies stay short.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from replay.condition import DomainCondition
from replay.engine import Engine, Entry, Thread
from replay.fifo import Fifo
from replay.findings import Watch
from replay.job import Job
from replay.mutex import Mutex
from replay.profile import Profile
from replay.queue import EventQueue, Gauge
from replay.rpcpool import RpcPool
from replay.workload import (
    CONDITIONAL,
    DEFERRED,
    INLINE,
    NEVER_SENT,
    Command,
    Event,
    Hooks,
    Rpc,
)
from tracer.timeline import (
    DROP_DESTROYED,
    DROP_JOB_TIMEOUT,
    DROP_NOT_SENT,
    EventTable,
    Kind,
    QueueInfo,
    RpcTable,
    ThreadInfo,
    Timeline,
)

if TYPE_CHECKING:
    from replay.policy import Policy

Body = Generator[int | None, None, None]

EOF_ERROR: Final = "End of file from qemu monitor"

EVENT_ARRIVE: Final = int(Kind.EVENT_ARRIVE)
EVENT_DROPPED: Final = int(Kind.EVENT_DROPPED)
EVENT_DONE: Final = int(Kind.EVENT_DONE)
HANDLER_BEGIN: Final = int(Kind.HANDLER_BEGIN)
HANDLER_END: Final = int(Kind.HANDLER_END)
MSG_READ: Final = int(Kind.MSG_READ)
RPC_ARRIVE: Final = int(Kind.RPC_ARRIVE)
RPC_START: Final = int(Kind.RPC_START)
RPC_END: Final = int(Kind.RPC_END)
CMD_SEND: Final = int(Kind.CMD_SEND)
CMD_REPLY: Final = int(Kind.CMD_REPLY)
READ_PAUSED: Final = int(Kind.READ_PAUSED)
READ_RESUMED: Final = int(Kind.READ_RESUMED)


@dataclass(frozen=True, slots=True)
class HostParams:
    """Parameters every policy shares."""

    workers: int = 5
    max_workers: int = 0
    prio_workers: int = 5
    job_timeout: int = 30_000_000_000
    fifo: bool = False
    max_queued: int = 0
    starvation_k: int = 5


class Reply(Entry):
    """A QMP reply on its way from QEMU, on ``vm``'s monitor, to the thread waiting for it:
    on the engine's heap until it arrives (its own entry, so sending a command allocates
    no callback)."""

    __slots__ = ("host", "vm", "thread", "owner", "error", "size", "arrival")

    def __init__(self, host: Host, vm: VM, thread: Thread, owner: int, error: bool, size: int,
                 arrival: int) -> None:
        super().__init__()
        self.host = host
        self.vm = vm
        self.thread = thread
        self.owner = owner
        self.error = error
        self.size = size
        self.arrival = arrival

    def fire(self) -> None:
        self.host.reply_arrives(self)


class Path:
    """A path events take through a policy (its report shows each event's), and how many
    took it; the count is a machine int (compiled, counting in a list of int objects would
    allocate one per event above 256)."""

    __slots__ = ("id", "events")

    def __init__(self, pid: int) -> None:
        self.id = pid
        self.events = 0


class VM:
    """One domain: its lock, job, condition and monitor (one ordered inbound stream)."""

    __slots__ = (
        "index", "name", "mutex", "job", "cond", "inbox", "paused", "paused_since", "dead",
        "waiting", "waiting_cmd", "reply_unread", "unhandled", "queue", "served", "reader",
    )

    def __init__(self, index: int, name: str, engine: Engine, watch: Watch,
                 params: HostParams) -> None:
        self.index = index
        self.name = name
        self.mutex = Mutex(engine, index)
        self.job = Job(engine, index, self.mutex, watch, fifo=params.fifo,
                       timeout=params.job_timeout, max_queued=params.max_queued)
        self.cond = DomainCondition(engine, index, self.mutex, watch)
        #: Messages that arrived on the socket and are not read yet (replies and events).
        self.inbox: Fifo[Event | Reply] = Fifo()
        self.paused = False
        self.paused_since = 0
        self.dead = False
        #: The thread waiting for a reply on this monitor (one outstanding command).
        self.waiting: Thread | None = None
        self.waiting_cmd = ""
        #: The awaited reply has arrived on the socket but is not read yet.
        self.reply_unread = False
        #: Events that arrived and are not handled yet, in arrival order (ordering check).
        self.unhandled: Fifo[Event] = Fifo()
        #: The policy's per-VM event queue, if it has one.
        self.queue: EventQueue | None = None
        #: The event thread serving this VM (pool), if any.
        self.served: Thread | None = None
        #: The thread that reads this VM's monitor.
        self.reader: Thread | None = None


class Host:
    """The modelled daemon for one (session, policy) run."""

    def __init__(self, engine: Engine, profile: Profile, params: HostParams, vm_names: list[str],
                 timeline: Timeline | None, *, rows: bool = True) -> None:
        self.engine = engine
        self.profile = profile
        self.params = params
        self.timeline = timeline
        #: The timeline's events and RPC tables (columnar), filled as items arrive; a run
        #: whose consumers need no names (metrics only) keeps no rows at all.
        self.keep_rows = timeline is not None and rows
        self.event_rows = EventTable()
        self.rpc_rows = RpcTable()
        if timeline is not None:
            timeline.events = self.event_rows
            timeline.rpcs = self.rpc_rows
        self.watch = Watch(self, params.starvation_k)
        self.vms = [VM(i, name, engine, self.watch, params) for i, name in enumerate(vm_names)]
        self.pool = RpcPool(engine, self.rpc_body, workers=params.workers,
                            max_workers=params.max_workers, prio_workers=params.prio_workers)
        self.policy: Policy
        self.event_count = 0
        self.rpc_count = 0
        self.paths: dict[str, Path] = {}
        self.hooks = Hooks(late_reply=self._late_reply, late_cause=self._late_cause)
        self.complete_rpc: Callable[[Rpc], None] = lambda rpc: None
        self._unanswered: dict[Command, tuple[Thread, VM, int]] = {}

    # -- tables ---------------------------------------------------------------------------

    def thread(self, name: str, role: str, vm: int = -1) -> Thread:
        return Thread(self.engine, name, role, vm)

    def queue(self, name: str, vm: int = -1) -> EventQueue:
        """A traced event queue."""
        q = EventQueue(self.engine, len(self.watch.queues), vm)
        self._register_queue(name, q)
        return q

    def gauge(self, name: str, vm: int = -1) -> Gauge:
        """A traced count-only queue (its items live in other queues)."""
        q = Gauge(self.engine, len(self.watch.queues), vm)
        self._register_queue(name, q)
        return q

    def _register_queue(self, name: str, q: Gauge) -> None:
        self.watch.queues.append((name, q))
        if self.timeline is not None:
            self.timeline.queues.append(QueueInfo(name, q.vm))

    def _new_path(self, name: str) -> Path:
        path = self.paths[name] = Path(len(self.paths))
        if self.timeline is not None:
            self.timeline.paths.append(name)
        return path

    def sync_threads(self) -> None:
        """Copy new threads into the timeline's table (before their first record)."""
        if self.timeline is not None:
            table = self.timeline.threads
            for th in self.engine.threads[len(table):]:
                table.append(ThreadInfo(th.name, th.role, th.vm))

    # -- arrivals -------------------------------------------------------------------------

    def arrive_rpc(self, rpc: Rpc) -> None:
        rpc.id = self.rpc_count
        self.rpc_count += 1
        if self.keep_rows:
            self.rpc_rows.add(rpc.vm, rpc.api, rpc.arrival, rpc.costs.priority,
                              tuple([c.name for c in rpc.commands]))
        self.engine.record(self.engine.now, RPC_ARRIVE, -1, rpc.vm, rpc.id,
                           1 if rpc.costs.priority else 0)
        self.policy.rpc_arrived(rpc)

    def arrive_event(self, ev: Event) -> None:
        now = self.engine.now
        ev.arrival = now
        ev.id = self.event_count
        self.event_count += 1
        if self.keep_rows:
            self._event_row(ev, now)
        self.engine.record(now, EVENT_ARRIVE, -1, ev.vm, ev.id, ev.size)
        vm = self.vms[ev.vm]
        if vm.dead:
            self.drop(ev, DROP_DESTROYED)
            return
        vm.inbox.append(ev)
        vm.unhandled.append(ev)
        self.policy.inbox_ready(vm)

    # -- monitor --------------------------------------------------------------------------

    def send(self, th: Thread, vm: VM, owner: int, index: int, cmd: Command | None,
             name: str, service: int) -> int | None:
        """Send a QMP command; park until its reply is read (or fail at once on a dead VM).

        ``cmd`` is the recorded command (None for a command an event handler sends).
        """
        engine = self.engine
        now = engine.now
        if vm.dead:
            th.failed = True
            th.error = EOF_ERROR
            if cmd is not None:
                self._never_sent(cmd)
            return 0
        engine.record(now, CMD_SEND, th.tid, vm.index, owner, index)
        vm.waiting = th
        vm.waiting_cmd = name
        th.blocked = ("reply", vm)
        th.failed = False
        if cmd is not None:
            cmd.sent_at = now
            for offset, ev in cmd.caused:
                engine.at(now + offset, self.arrive_event, ev)
            if cmd.service is None:  # not read from the session yet: _late_reply schedules it
                self._unanswered[cmd] = (th, vm, owner)
                return None
            service, error, size = cmd.service, cmd.error, cmd.reply_size
        else:
            error, size = False, 40
        if service >= 0:
            engine.push(Reply(self, vm, th, owner, error, size, now + service), now + service)
        return None

    def _late_reply(self, cmd: Command) -> None:
        sender = self._unanswered.pop(cmd, None)
        if sender is None or cmd.service is None or cmd.service < 0:
            return
        th, vm, owner = sender
        at = max(self.engine.now, cmd.sent_at + cmd.service)
        self.engine.push(Reply(self, vm, th, owner, cmd.error, cmd.reply_size, at), at)

    def _late_cause(self, cmd: Command, offset: int, ev: Event) -> None:
        if cmd.sent_at == NEVER_SENT:
            self.engine.at(self.engine.now, self._drop_unsent, ev)
            return
        self.engine.at(max(self.engine.now, cmd.sent_at + offset), self.arrive_event, ev)

    def _event_row(self, ev: Event, now: int) -> None:
        self.event_rows.add(ev.vm, ev.name, ev.cls, now, ev.size)

    def _drop_unsent(self, ev: Event) -> None:
        ev.id = self.event_count
        self.event_count += 1
        if self.keep_rows:
            self._event_row(ev, self.engine.now)
        self.drop(ev, DROP_NOT_SENT)

    def _never_sent(self, cmd: Command) -> None:
        cmd.sent_at = NEVER_SENT
        for _, ev in cmd.caused:
            self.engine.at(self.engine.now, self._drop_unsent, ev)

    def reply_arrives(self, reply: Reply) -> None:
        vm = reply.vm
        if vm.dead or vm.waiting is not reply.thread:
            return
        vm.inbox.append(reply)
        vm.reply_unread = True
        self.policy.inbox_ready(vm)
        if vm.paused or (vm.reader is not None and vm.reader.blocked is not None):
            self.watch.waiting(reply.thread)

    def received(self, th: Thread, vm: VM, msg: Event | Reply) -> Event | None:
        """``th`` has read ``msg`` from ``vm``'s monitor (its read cost spent): a reply wakes
        its waiter, an event is returned for the policy to dispatch.

        Readers pop the inbox, spend ``profile.read_cost(msg.size)``, then call this (a
        generator per message would cost more than the read itself on the hot path).
        """
        if isinstance(msg, Event):
            self.engine.record(self.engine.now, MSG_READ, th.tid, vm.index, msg.id, msg.size)
            return msg
        self.engine.record(self.engine.now, MSG_READ, th.tid, vm.index, -1, msg.size)
        self._deliver(vm, msg)
        return None

    def _deliver(self, vm: VM, reply: Reply) -> None:
        th = reply.thread
        if vm.waiting is not th:
            return
        vm.waiting = None
        vm.reply_unread = False
        th.failed = reply.error
        self.engine.record(self.engine.now, CMD_REPLY, th.tid, vm.index, reply.owner,
                           1 if reply.error else 0)
        th.wake()

    def queued(self, vm: VM) -> None:
        """An event was queued for ``vm``: an API sync-waiting there may now be deadlocked."""
        for entry in vm.cond.waiters:
            self.watch.waiting(entry.thread)

    def pause_reading(self, vm: VM) -> None:
        vm.paused = True
        vm.paused_since = self.engine.now
        self.engine.record(self.engine.now, READ_PAUSED, -1, vm.index, -1, 0)
        if vm.waiting is not None:
            self.watch.waiting(vm.waiting)

    def resume_reading(self, vm: VM) -> None:
        vm.paused = False
        now = self.engine.now
        self.engine.record(now, READ_RESUMED, -1, vm.index, -1, now - vm.paused_since)
        self.policy.inbox_ready(vm)

    # -- event handling -------------------------------------------------------------------

    def handle(self, th: Thread, ev: Event, path: str) -> Body:
        """Run an event's stages on ``th``: its inline stage and, if it still needs one,
        its deferred stage."""
        if ev.cls != DEFERRED:
            yield from self.inline_stage(th, ev, path)
            if ev.done:
                return
        yield from self.deferred_stage(th, ev, path)

    def inline_stage(self, th: Thread, ev: Event, path: str,
                     defer: Callable[[Event], None] | None = None) -> Body:
        """An event's inline stage (VM mutex only). If the event still needs its deferred
        stage, ``defer(ev)`` queues it (without ``defer``, the caller runs it)."""
        engine = self.engine
        vm = self.vms[ev.vm]
        th.busy_vm = ev.vm
        engine.record(engine.now, HANDLER_BEGIN, th.tid, ev.vm, ev.id, 0)
        yield vm.mutex.lock(th)
        if ev.cls == CONDITIONAL and vm.cond.signal(ev.name, ev.id):
            cost = self.profile.wake_waiter
            finished = True
        else:
            cost = self.profile.handler_cost(ev.name, deferred=False)
            finished = ev.cls == INLINE
        if cost:
            yield th.spend(cost)
        vm.mutex.unlock(th)
        if finished:
            self.done(ev, path)
        engine.record(engine.now, HANDLER_END, th.tid, ev.vm, ev.id, 0)
        if not finished and defer is not None:
            defer(ev)

    def deferred_stage(self, th: Thread, ev: Event, path: str) -> Body:
        """An event's deferred stage (VM mutex and job): stage 1 after an inline stage."""
        engine = self.engine
        vm = self.vms[ev.vm]
        stage = 0 if ev.cls == DEFERRED else 1
        th.busy_vm = ev.vm
        owner = -ev.id - 1
        engine.record(engine.now, HANDLER_BEGIN, th.tid, ev.vm, ev.id, stage)
        yield vm.mutex.lock(th)
        api = "event:" + ev.name
        ok = vm.job.take(th, owner, api) or (yield from vm.job.begin(th, owner, api))
        if not ok:
            vm.mutex.unlock(th)
            self.drop(ev, DROP_JOB_TIMEOUT, th)
            engine.record(engine.now, HANDLER_END, th.tid, ev.vm, ev.id, stage)
            return
        yield from self._deferred_work(th, vm, ev, owner)
        vm.job.end(th)
        vm.mutex.unlock(th)
        self.done(ev, path)
        engine.record(engine.now, HANDLER_END, th.tid, ev.vm, ev.id, stage)

    def _deferred_work(self, th: Thread, vm: VM, ev: Event, owner: int) -> Body:
        """The deferred handler's work, job and mutex held: CPU, then the QMP it sends."""
        cost = self.profile.handler_cost(ev.name, deferred=True)
        if cost:
            yield th.spend(cost)
        for i, name in enumerate(self.profile.event_commands.get(ev.name, ())):
            vm.mutex.unlock(th)
            yield self.send(th, vm, owner, i, None, name, self.profile.handler_command)
            yield vm.mutex.lock(th)
            if th.failed:
                break

    def handle_locked(self, th: Thread, ev: Event, path: str) -> Body:
        """Handle an event on a thread that already holds its VM's mutex and job (an RPC
        draining its VM's queue before it ends its job)."""
        engine = self.engine
        vm = self.vms[ev.vm]
        engine.record(engine.now, HANDLER_BEGIN, th.tid, ev.vm, ev.id, 0)
        if ev.cls == CONDITIONAL and vm.cond.signal(ev.name, ev.id):
            cost = self.profile.wake_waiter
            if cost:
                yield th.spend(cost)
        else:
            if ev.cls != DEFERRED:
                cost = self.profile.handler_cost(ev.name, deferred=False)
                if cost:
                    yield th.spend(cost)
            if ev.cls != INLINE:
                yield from self._deferred_work(th, vm, ev, th.owner)
        self.done(ev, path)
        engine.record(engine.now, HANDLER_END, th.tid, ev.vm, ev.id, 0)

    def done(self, ev: Event, path: str) -> None:
        ev.done = True
        counted = self.paths.get(path)
        if counted is None:
            counted = self._new_path(path)
        counted.events += 1
        self.engine.record(self.engine.now, EVENT_DONE, -1, ev.vm, ev.id, counted.id)
        self._forget(ev)

    def drop(self, ev: Event, reason: int, th: Thread | None = None) -> None:
        ev.done = True
        self.engine.record(self.engine.now, EVENT_DROPPED, th.tid if th else -1, ev.vm, ev.id,
                           reason)
        self._forget(ev)

    def _forget(self, ev: Event) -> None:
        unhandled = self.vms[ev.vm].unhandled
        while unhandled and unhandled[0].done:
            unhandled.popleft()

    # -- RPCs -----------------------------------------------------------------------------

    def rpc_body(self, th: Thread, rpc: Rpc) -> Body:
        engine = self.engine
        vm = self.vms[rpc.vm]
        costs = rpc.costs
        th.owner = rpc.id
        th.api = rpc.api
        th.busy_vm = rpc.vm
        th.error = ""
        engine.record(engine.now, RPC_START, th.tid, rpc.vm, rpc.id, engine.now - rpc.arrival)
        if costs.pre:
            yield th.spend(costs.pre)
        yield vm.mutex.lock(th)
        if rpc.destroy:
            self.kill_qemu(vm)
        ok = vm.job.take(th, rpc.id, rpc.api) or (
            yield from vm.job.begin(th, rpc.id, rpc.api, destroy=rpc.destroy))
        if not ok:
            vm.mutex.unlock(th)
            self._abandon(rpc)
            self._end_rpc(th, rpc, error=True)
            return
        self.watch.job_begun(th, rpc, vm)
        if costs.locked:
            yield th.spend(costs.locked)
        error = False
        self.complete_rpc(rpc)
        commands = rpc.commands
        if rpc.api_call and self.keep_rows:  # its commands are all known now
            self.rpc_rows.set_commands(rpc.id, tuple(c.name for c in commands))
        for i, cmd in enumerate(commands):
            if i:
                gap = rpc.gaps[i - 1] if i - 1 < len(rpc.gaps) else costs.between
                if gap:
                    yield th.spend(gap)
            vm.mutex.unlock(th)
            yield self.send(th, vm, rpc.id, i, cmd, cmd.name, 0)
            yield vm.mutex.lock(th)
            if th.failed:
                error = True
                if vm.dead:
                    for rest in commands[i + 1:]:
                        self._never_sent(rest)
                    break
        # between (after the last reply) and post run back to back under the mutex: one step
        tail = costs.post + (costs.between if commands and not error else 0)
        if costs.sync_wait and not error:
            if tail != costs.post:
                yield th.spend(tail - costs.post)
            tail = costs.post
            timeout = costs.sync_timeout
            if timeout is None:
                timeout = self.params.job_timeout
            eid = yield from vm.cond.wait(th, rpc.id, costs.sync_wait, timeout)
            error = eid < 0
        if tail:
            yield th.spend(tail)
        drain = self.policy.before_job_end(th, vm)
        if drain is not None:
            yield from drain
        vm.job.end(th)
        vm.mutex.unlock(th)
        self._end_rpc(th, rpc, error)

    def _abandon(self, rpc: Rpc) -> None:
        self.complete_rpc(rpc)
        for cmd in rpc.commands:
            self._never_sent(cmd)

    def _end_rpc(self, th: Thread, rpc: Rpc, error: bool) -> None:
        self.engine.record(self.engine.now, RPC_END, th.tid, rpc.vm, rpc.id, 1 if error else 0)
        th.busy_vm = -1

    def kill_qemu(self, vm: VM) -> None:
        """Destroy, libvirt's order: kill QEMU first, so every reply wait ends with EOF."""
        if vm.dead:
            return
        vm.dead = True
        for msg in vm.inbox:
            if type(msg) is Event:
                self.drop(msg, DROP_DESTROYED)
        vm.inbox.clear()
        for ev in self.policy.discard(vm):
            self.drop(ev, DROP_DESTROYED)
        waiter = vm.waiting
        if waiter is not None:
            vm.waiting = None
            vm.reply_unread = False
            waiter.failed = True
            waiter.error = EOF_ERROR
            self.engine.record(self.engine.now, CMD_REPLY, waiter.tid, vm.index, waiter.owner, 1)
            waiter.wake()
        vm.cond.abort(EOF_ERROR)
