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

import heapq
from collections.abc import Generator
from typing import TYPE_CHECKING, Final

from replay.engine import PARK

if TYPE_CHECKING:
    from replay.host import VM, Host
    from replay.policy import Policy
    from replay.workload import Rpc


#: heapq's functions bound once (compiled, a module global is a dict lookup per use).
heappush: Final = heapq.heappush
heappop: Final = heapq.heappop


class Ready:
    """Input waiting for the main loop, served by arrival, then VM, then a VM's monitor
    before its RPCs, then order of readiness: ``(t, key)``, the last three packed in
    :attr:`key` (compiled, a comparison is two native int compares, no tuple is built)."""

    __slots__ = ("t", "key", "item")

    def __init__(self, arrival: int, vm: int, rpc: bool, n: int, item: VM | Rpc) -> None:
        self.t = arrival
        self.key = (vm << 41) | (int(rpc) << 40) | n
        self.item = item

    def __lt__(self, other: Ready) -> bool:
        return self.t < other.t or (self.t == other.t and self.key < other.key)


class MainLoopReader:
    def __init__(self, host: Host, policy: Policy, *, name: str = "main-loop") -> None:
        self.host = host
        self.policy = policy
        self.thread = host.thread(name, "mainloop")
        self.ready: list[Ready] = []
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
        heappush(self.ready, Ready(vm.inbox[0].arrival, vm.index, False, self.seq, vm))
        self._kick()

    def rpc_arrived(self, rpc: Rpc) -> None:
        """Serve an RPC request like monitor input (the main loop dispatches RPCs)."""
        self.seq += 1
        heappush(self.ready, Ready(rpc.arrival, rpc.vm, True, self.seq, rpc))
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
            if not ready:
                self.idle = True
                th.blocked = None
                th.busy_vm = -1
                yield PARK
                continue
            item = heappop(ready).item
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
                yield cost
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
                yield cost
            ev = host.received(th, vm, msg)
            if ev is not None:
                work = policy.on_event(th, ev)
                if work is not None:
                    yield from work
