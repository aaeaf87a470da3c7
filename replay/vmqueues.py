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
    from replay.workload import Event


@mypyc_attr(allow_interpreted_subclasses=True)
class VmQueues:
    def __init__(self, host: Host) -> None:
        self.host = host
        for vm in host.vms:
            vm.queue = host.queue(f"{vm.name} events", vm.index)
        #: Every VM, those with queued events first (the first :attr:`pending`, in no
        #: particular order: see oldest()), and where each VM is in it. Adding or removing
        #: a VM swaps two places: no allocation, no hashing.
        self.order = list(host.vms)
        self.place = list(range(len(host.vms)))
        self.pending = 0

    def push(self, vm: VM, ev: Event) -> None:
        q = vm.queue
        assert q is not None
        q.push(ev)
        if q.depth == 1:
            self._enter(vm)

    def pop(self, vm: VM) -> Event:
        q = vm.queue
        assert q is not None
        ev = q.pop()
        if not q.depth:
            self._leave(vm)
        return ev

    def _enter(self, vm: VM) -> None:
        """``vm`` now has queued events: it joins the first :attr:`pending`."""
        self._swap(vm, self.pending)
        self.pending += 1

    def _leave(self, vm: VM) -> None:
        """``vm`` has no queued events left: it leaves the first :attr:`pending`."""
        self.pending -= 1
        self._swap(vm, self.pending)

    def _swap(self, vm: VM, i: int) -> None:
        """Put ``vm`` at place ``i`` and the VM there at ``vm``'s place."""
        order, place = self.order, self.place
        j = place[vm.index]
        other = order[i]
        order[i], order[j] = vm, other
        place[vm.index], place[other.index] = i, j

    def has_events(self, vm: VM) -> bool:
        """Whether ``vm`` has queued events."""
        q = vm.queue
        return q is not None and q.depth > 0

    def eligible(self, vm: VM) -> bool:
        """Whether a thread may serve ``vm`` now (every VM, unless a policy says otherwise)."""
        return True

    def oldest(self) -> VM | None:
        """The eligible VM whose head event arrived first (ties: VM order)."""
        best: VM | None = None
        best_t = 0
        order = self.order
        for i in range(self.pending):
            vm = order[i]
            assert vm.queue is not None
            t = vm.queue.items[0].arrival
            if (best is None or t < best_t or (t == best_t and vm.index < best.index)) \
                    and self.eligible(vm):
                best, best_t = vm, t
        return best

    def discard(self, vm: VM) -> list[Event]:
        assert vm.queue is not None
        if not vm.queue.depth:
            return []
        self._leave(vm)
        return vm.queue.clear()

    def holds(self, vm: VM, names: frozenset[str]) -> bool:
        assert vm.queue is not None
        return any(ev.name in names for ev in vm.queue.items)
