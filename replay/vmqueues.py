"""Per-VM event queues with "which VM's head event is oldest" selection.

The two 2017 proposals both queue events per VM and pick, among the VMs a thread may
serve, the one whose oldest event is oldest; this is that shared part. A policy says which
VMs a thread may serve by overriding :meth:`VmQueues.eligible` (compiled, a method is a
native call where a callback would be a Python-level one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from replay.host import VM, Host
    from replay.queue import EventQueue
    from replay.workload import Event


@mypyc_attr(allow_interpreted_subclasses=True)
class VmQueues:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.queues: list[EventQueue] = []
        for vm in host.vms:
            vm.queue = host.queue(f"{vm.name} events", vm.index)
            self.queues.append(vm.queue)
        #: VMs with queued events, by index (insertion order is irrelevant: see oldest()).
        self.pending: dict[int, VM] = {}

    def push(self, vm: VM, ev: Event) -> None:
        assert vm.queue is not None
        vm.queue.push(ev)
        self.pending[vm.index] = vm

    def pop(self, vm: VM) -> Event:
        q = vm.queue
        assert q is not None
        ev = q.pop()
        if not q.items:
            del self.pending[vm.index]
        return ev

    def has_events(self, vm: VM) -> bool:
        """Whether ``vm`` has queued events (as ``vm.index in pending``, without a lookup)."""
        q = vm.queue
        return q is not None and q.depth > 0

    def eligible(self, vm: VM) -> bool:
        """Whether a thread may serve ``vm`` now (every VM, unless a policy says otherwise)."""
        return True

    def oldest(self) -> VM | None:
        """The eligible VM whose head event arrived first (ties: VM order)."""
        best: VM | None = None
        best_t = 0
        for vm in self.pending.values():
            assert vm.queue is not None
            t = vm.queue.items[0].arrival
            if (best is None or t < best_t or (t == best_t and vm.index < best.index)) \
                    and self.eligible(vm):
                best, best_t = vm, t
        return best

    def discard(self, vm: VM) -> list[Event]:
        self.pending.pop(vm.index, None)
        assert vm.queue is not None
        return vm.queue.clear() if vm.queue.items else []

    def holds(self, vm: VM, names: frozenset[str]) -> bool:
        assert vm.queue is not None
        return any(ev.name in names for ev in vm.queue.items)
