"""``per-vm-thread`` (libvirt ≥ 6.2): each VM's monitor has its own reader thread.

Inline stages run on the VM's thread, so one VM's lock holder stalls only that VM; deferred
stages still go to the one global worker shared by all VMs.
"""

from __future__ import annotations

from replay.deferred import DeferredWorker
from replay.engine import Thread
from replay.host import VM
from replay.policy import Body, Policy
from replay.reader import VmReader
from replay.workload import Event


class PerVmThread(Policy):
    name = "per-vm-thread"
    wakeup = "broadcast"

    def start(self) -> None:
        self.deferred = DeferredWorker(self.host, "vm-thread")
        self.readers = [VmReader(self.host, vm, self) for vm in self.host.vms]

    def on_event(self, th: Thread, ev: Event) -> Body | None:
        return self.deferred.inline_here(th, ev)

    def inbox_ready(self, vm: VM) -> None:
        self.readers[vm.index].inbox_ready()

    def discard(self, vm: VM) -> list[Event]:
        return self.deferred.discard(vm.index)
