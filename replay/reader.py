"""Monitor readers: who reads the QMP stream of each VM.

:class:`MainLoopReader` is the daemon's one main loop: it serves ready input of every VM in
(arrival ns, VM order) order, one message per iteration, and, when asked, incoming RPCs too
(libvirt ≤ 6.1). While it runs a handler or waits for a lock it reads nothing.
:class:`VmReader` is one thread per VM (libvirt ≥ 6.2). Both hand each event they read to
their policy's ``on_event``, which returns the work to run on the reader's own thread (a
generator), or None when there is none there (the event was queued for another thread).
A policy method, not a callback: compiled, a callback is a Python-level call per event.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, cast

from replay.engine import PARK, Entry, Heap

if TYPE_CHECKING:
    from replay.host import VM, Host
    from replay.policy import Policy
    from replay.workload import Rpc


class Ready(Entry):
    """Input waiting for the main loop, on its heap: served by arrival (:attr:`t`), then VM,
    then a VM's monitor before its RPCs, then order of readiness, the last three packed in
    :attr:`seq`. Each VM has one, reused (a VM is on the heap at most once)."""

    __slots__ = ("item",)

    def __init__(self, item: VM | Rpc) -> None:
        super().__init__()
        self.item = item

    def due(self, arrival: int, vm: int, rpc: bool, n: int) -> Ready:
        self.t = arrival
        self.seq = (vm << 41) | (int(rpc) << 40) | n
        return self


class MainLoopReader:
    def __init__(self, host: Host, policy: Policy, *, name: str = "main-loop") -> None:
        self.host = host
        self.policy = policy
        self.thread = host.thread(name, "mainloop")
        self.ready = Heap()
        self.entries = [Ready(vm) for vm in host.vms]
        #: Whether each VM is on ``ready`` (its monitor has input the loop will serve).
        self.queued = [False] * len(host.vms)
        #: Entries pushed on ``ready`` so far (the tie-breaker after arrival and VM).
        self.seq = 0
        self.idle = False
        for vm in host.vms:
            vm.reader = self.thread
        self.thread.start(self._run())

    def inbox_ready(self, vm: VM) -> None:
        if not vm.inbox or self.queued[vm.index] or vm.paused:
            return
        self.queued[vm.index] = True
        self.seq += 1
        self.ready.push(self.entries[vm.index].due(vm.inbox[0].arrival, vm.index, False,
                                                   self.seq))
        self._kick()

    def rpc_arrived(self, rpc: Rpc) -> None:
        """Serve an RPC request like monitor input (the main loop dispatches RPCs)."""
        self.seq += 1
        self.ready.push(Ready(rpc).due(rpc.arrival, rpc.vm, True, self.seq))
        self._kick()

    def _kick(self) -> None:
        if self.idle:
            self.idle = False
            self.thread.wake()

    def _run(self) -> Generator[int | None, None, None]:
        th = self.thread
        host = self.host
        # Methods of compiled classes are called on their objects, not bound to locals:
        # compiled, a bound method is a Python-level call that parses its arguments.
        profile = host.profile
        pool = host.pool
        ready = self.ready
        queued = self.queued
        policy = self.policy
        from replay.host import VM

        while True:
            if not ready.size:
                self.idle = True
                th.blocked = None
                th.busy_vm = -1
                yield PARK
                continue
            item = cast(Ready, ready.pop()).item
            if type(item) is not VM:
                pool.submit(item)  # type: ignore[arg-type]
                continue
            vm = item
            index = vm.index
            queued[index] = False
            if vm.paused or not vm.inbox:
                continue
            msg = vm.inbox.popleft()
            cost = profile.read_cost(msg.size)
            if cost:
                th.busy_vm = index
                yield th.spend(cost)
            ev = host.received(th, vm, msg)
            self.inbox_ready(vm)
            if ev is not None:
                work = policy.on_event(th, ev)
                if work is not None:
                    yield from work


class VmReader:
    """One thread that reads one VM's monitor and runs what its policy's ``on_event`` says."""

    def __init__(self, host: Host, vm: VM, policy: Policy) -> None:
        self.host = host
        self.vm = vm
        self.policy = policy
        self.thread = host.thread(f"vm-{vm.name}"[:15], "vm-thread", vm.index)
        self.idle = False
        vm.reader = self.thread
        self.thread.start(self._run())

    def inbox_ready(self) -> None:
        if self.idle:
            self.idle = False
            self.thread.wake()

    def _run(self) -> Generator[int | None, None, None]:
        th = self.thread
        vm = self.vm
        host = self.host
        profile = host.profile
        inbox = vm.inbox
        policy = self.policy
        while True:
            if not inbox or vm.paused:
                self.idle = True
                th.blocked = None
                yield PARK
                continue
            msg = inbox.popleft()
            cost = profile.read_cost(msg.size)
            if cost:
                th.busy_vm = vm.index
                yield th.spend(cost)
            ev = host.received(th, vm, msg)
            if ev is not None:
                work = policy.on_event(th, ev)
                if work is not None:
                    yield from work
