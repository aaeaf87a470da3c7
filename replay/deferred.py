"""The global deferred-event worker (libvirt's one ``qemu-event`` thread for all VMs).

Deferred stages of every VM's events run here in FIFO order; while one waits for its VM's
job (up to the job timeout), every other VM's deferred events wait too.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Final

from replay.engine import PARK, Thread
from replay.workload import DEFERRED

if TYPE_CHECKING:
    from replay.host import Host
    from replay.workload import Event

PATH: Final = "global-worker"


class DeferredWorker:
    def __init__(self, host: Host, inline_path: str, name: str = "qemu-event") -> None:
        self.host = host
        #: The path of the inline stages that readers run (:meth:`inline_here`).
        self.inline_path = inline_path
        self.queue = host.queue("deferred")
        self.thread = host.thread(name, "global-worker")
        self.idle = False
        #: :meth:`push` bound once (a bound method per inline stage would be an allocation).
        self.defer = self.push
        self.thread.start(self._run())

    def push(self, ev: Event) -> None:
        self.queue.push(ev)
        if self.idle:
            self.idle = False
            self.thread.wake()

    def inline_here(self, th: Thread, ev: Event) -> Generator[int | None, None, None] | None:
        """The work of ``ev``'s inline stage on ``th`` (a reader), which queues its deferred
        stage here; None when it has no inline stage (it is queued at once). What a
        policy's ``on_event`` returns."""
        if ev.cls == DEFERRED:
            self.push(ev)
            return None
        return self.host.inline_stage(th, ev, self.inline_path, self.defer)

    def discard(self, vm: int) -> list[Event]:
        keep = [ev for ev in self.queue.items if ev.vm != vm]
        if len(keep) == len(self.queue.items):
            return []
        dropped = [ev for ev in self.queue.items if ev.vm == vm]
        self.queue.clear()
        for ev in keep:
            self.queue.push(ev)
        return dropped

    def _run(self) -> Generator[int | None, None, None]:
        th = self.thread
        queue = self.queue
        host = self.host
        while True:
            if not queue.items:
                self.idle = True
                th.blocked = None
                th.busy_vm = -1
                yield PARK
                continue
            yield from host.deferred_stage(th, queue.pop(), PATH)
