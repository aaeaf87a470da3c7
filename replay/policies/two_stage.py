"""``two-stage`` (2017 RFC): a per-VM queue and a global queue, one global worker.

The main loop only reads and enqueues. The worker takes the oldest event whose VM's mutex
and job are both free (and sleeps, without polling, until one is released otherwise). The
RPC holding a VM's job drains that VM's queue on its own thread before ending its job —
the second, rarely exercised path. A sync API waiting for an event with its job held
therefore waits for an event that cannot run before the API ends.
"""

from __future__ import annotations

from replay.engine import PARK, Thread
from replay.host import VM
from replay.policy import Body, Policy
from replay.reader import MainLoopReader
from replay.vmqueues import VmQueues
from replay.workload import INLINE, Event


class _FreeVms(VmQueues):
    """The worker serves a VM only while its mutex and job are both free."""

    def eligible(self, vm: VM) -> bool:
        return vm.mutex.free() and vm.job.free()


class TwoStage(Policy):
    name = "two-stage"
    wakeup = "broadcast"

    def start(self) -> None:
        host = self.host
        self.queues = _FreeVms(host)
        self.global_queue = host.gauge("global events")
        self.reader = MainLoopReader(host, self)
        self.worker = host.thread("event-worker", "global-worker")
        self.sleeping = False
        #: Bound once: what a VM's mutex and job call on release while it has queued events.
        self.kick = self._kick
        self.worker.start(self._work())

    def on_event(self, th: Thread, ev: Event) -> Body | None:
        vm = self.host.vms[ev.vm]
        self.queues.push(vm, ev)
        self.global_queue.add(ev.size)
        if vm.cond.waiters:
            self.host.queued(vm)
        vm.mutex.on_release = vm.job.on_release = self.kick
        self._kick()
        return None

    def _kick(self) -> None:
        if self.sleeping:
            self.sleeping = False
            self.worker.wake()

    def _take(self, vm: VM) -> Event:
        ev = self.queues.pop(vm)
        self.global_queue.sub(ev.size)
        if not self.queues.has_events(vm):
            vm.mutex.on_release = vm.job.on_release = None
        return ev

    def _work(self) -> Body:
        th = self.worker
        host = self.host
        while True:
            vm = self.queues.oldest()
            if vm is None:
                self.sleeping = True
                th.blocked = None
                th.busy_vm = -1
                yield PARK
                continue
            ev = self._take(vm)
            th.busy_vm = vm.index
            th.owner = -ev.id - 1
            yield vm.mutex.lock(th)
            needs_job = ev.cls != INLINE
            if needs_job:
                vm.job.take(th, th.owner, "event:" + ev.name)  # free: checked by _work
            yield from host.handle_locked(th, ev, "worker")
            if needs_job:
                vm.job.end(th)
            vm.mutex.unlock(th)

    def inbox_ready(self, vm: VM) -> None:
        self.reader.inbox_ready(vm)

    def before_job_end(self, th: Thread, vm: VM) -> Body:
        while self.queues.has_events(vm):
            yield from self.host.handle_locked(th, self._take(vm), "rpc-drain")

    def discard(self, vm: VM) -> list[Event]:
        dropped = self.queues.discard(vm)
        for ev in dropped:
            self.global_queue.sub(ev.size)
        return dropped

    def why_undelivered(self, vm: VM, names: frozenset[str]) -> tuple[str, Thread] | None:
        holder = vm.job.holder
        if holder is not None and self.queues.holds(vm, names):
            return (f"is queued until {holder.name} ({vm.job.api}) ends its job: two-stage "
                    "runs a VM's events only while its job is free", holder)
        return super().why_undelivered(vm, names)
