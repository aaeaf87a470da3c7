"""``pool`` (2017 counter-proposal): a pool of event threads, bounded per-VM queues.

The main loop only reads and enqueues. A free event thread takes the VM whose head event
is oldest among VMs no other event thread serves, handles one event (all its stages), then
releases the VM: at most one thread per VM, per-VM order kept. When a VM's queue reaches
``max_queue`` its monitor is no longer read — replies behind the events included — until
the queue is down to ``resume_at``. Job waiters are served in FIFO order.
"""

from __future__ import annotations

from typing import Any

from replay.engine import PARK, Thread
from replay.host import VM
from replay.policy import Body, Param, Policy, _int, at_least
from replay.reader import MainLoopReader
from replay.vmqueues import VmQueues
from replay.workload import Event


class _UnservedVms(VmQueues):
    """An event thread serves a VM no other one serves (per-VM order kept)."""

    def eligible(self, vm: VM) -> bool:
        return vm.served is None


class Pool(Policy):
    name = "pool"
    wakeup = "fifo"
    params = {
        "event_workers": Param(4, _int, at_least(1), "event threads"),
        "max_queue": Param(64, _int, at_least(1), "per-VM queue depth that pauses reading"),
        "resume_at": Param(None, _int, at_least(0), "depth at which reading resumes"),
    }

    @staticmethod
    def check_params(own: dict[str, Any]) -> str | None:
        if own["resume_at"] is None:
            own["resume_at"] = own["max_queue"] // 2
        if own["resume_at"] >= own["max_queue"]:
            return f"resume_at={own['resume_at']} must be below max_queue={own['max_queue']}"
        return None

    def start(self) -> None:
        host = self.host
        self.max_queue: int = self.p["max_queue"]
        self.resume_at: int = self.p["resume_at"]
        self.queues = _UnservedVms(host)
        self.reader = MainLoopReader(host, self)
        self.idle: list[Thread] = []
        for i in range(self.p["event_workers"]):
            th = host.thread(f"event-{i}", "event-worker")
            th.start(self._work(th))

    def on_event(self, th: Thread, ev: Event) -> Body | None:
        vm = self.host.vms[ev.vm]
        self.queues.push(vm, ev)
        if vm.cond.waiters:
            self.host.queued(vm)
        assert vm.queue is not None
        if len(vm.queue) >= self.max_queue and not vm.paused:
            self.host.pause_reading(vm)
        if vm.served is None and self.idle:
            self.idle.pop().wake()
        return None

    def _work(self, th: Thread) -> Body:
        host = self.host
        queues = self.queues
        while True:
            vm = queues.oldest()
            if vm is None:
                self.idle.append(th)
                th.blocked = None
                th.busy_vm = -1
                yield PARK
                continue
            vm.served = th
            ev = queues.pop(vm)
            assert vm.queue is not None
            if vm.paused and len(vm.queue) <= self.resume_at:
                host.resume_reading(vm)
            yield from host.handle(th, ev, "event-worker")
            vm.served = None
            if self.idle and queues.has_events(vm):
                self.idle.pop().wake()

    def inbox_ready(self, vm: VM) -> None:
        self.reader.inbox_ready(vm)

    def discard(self, vm: VM) -> list[Event]:
        return self.queues.discard(vm)

    def why_unread(self, vm: VM) -> tuple[str, Thread] | None:
        served = vm.served
        if vm.paused and served is not None:
            assert vm.queue is not None
            return (f"reading {vm.name} is paused (its queue holds {len(vm.queue)} events, "
                    f"max_queue={self.max_queue}) and it drains only as {served.name} "
                    "handles them", served)
        return super().why_unread(vm)

    def why_undelivered(self, vm: VM, names: frozenset[str]) -> tuple[str, Thread] | None:
        served = vm.served
        if served is not None and self.queues.holds(vm, names):
            return f"is queued behind the event {served.name} is handling", served
        return super().why_undelivered(vm, names)
