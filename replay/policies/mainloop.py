"""``mainloop`` (libvirt ≤ 6.1): one main loop reads every monitor and dispatches RPCs.

Inline stages run on the main loop itself, under the VM's mutex: while it waits for one
VM's lock, no VM's monitor is read and no RPC is dispatched. Deferred stages go to the one
global worker.
"""

from __future__ import annotations

from replay.deferred import DeferredWorker
from replay.engine import Thread
from replay.host import VM
from replay.policy import Body, Policy
from replay.reader import MainLoopReader
from replay.workload import Event, Rpc


class MainLoop(Policy):
    name = "mainloop"
    wakeup = "broadcast"

    def start(self) -> None:
        self.deferred = DeferredWorker(self.host, "mainloop")
        self.reader = MainLoopReader(self.host, self)

    def on_event(self, th: Thread, ev: Event) -> Body | None:
        return self.deferred.inline_here(th, ev)

    def inbox_ready(self, vm: VM) -> None:
        self.reader.inbox_ready(vm)

    def rpc_arrived(self, rpc: Rpc) -> None:
        self.reader.rpc_arrived(rpc)

    def discard(self, vm: VM) -> list[Event]:
        return self.deferred.discard(vm.index)
