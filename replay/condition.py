"""The domain condition: where a sync API sleeps, job held and mutex released, for an event.

libvirt's ``virDomainObjWait``: a device unplug waits for DEVICE_DELETED (5 s), a block job
abort for BLOCK_JOB_CANCELLED/COMPLETED. A conditional event handler that finds a waiter
for its name wakes it instead of deferring the event. The wait is bounded by a timeout
(for block jobs, the model bounds libvirt's unbounded wait by the job timeout, so a
deadlock ends and the run completes).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Final

from replay.engine import PARK, Engine, Thread
from replay.mutex import Mutex
from tracer.timeline import Kind

if TYPE_CHECKING:
    from replay.findings import Watch

SYNC_WAIT: Final = int(Kind.SYNC_WAIT)
SYNC_WAKE: Final = int(Kind.SYNC_WAKE)


class SyncWaiter:
    """An API sleeping on the condition: the events it waits for, the one that woke it."""

    __slots__ = ("thread", "names", "event")

    def __init__(self, thread: Thread, names: frozenset[str]) -> None:
        self.thread = thread
        self.names = names
        self.event = -1


class DomainCondition:
    __slots__ = ("engine", "vm", "mutex", "watch", "waiters")

    def __init__(self, engine: Engine, vm: int, mutex: Mutex, watch: Watch) -> None:
        self.engine = engine
        self.vm = vm
        self.mutex = mutex
        self.watch = watch
        self.waiters: list[SyncWaiter] = []

    def wait(self, th: Thread, rpc: int, names: frozenset[str], timeout: int
             ) -> Generator[int | None, None, int]:
        """Sleep until an event named in ``names`` arrives; return its id, or -1 on timeout
        (or when the VM was destroyed: ``th.error`` then says so)."""
        engine = self.engine
        engine.record(engine.now, SYNC_WAIT, th.tid, self.vm, rpc, timeout)
        entry = SyncWaiter(th, names)
        self.waiters.append(entry)
        th.blocked = ("sync", (self, names))
        self.mutex.unlock(th)
        self.watch.waiting(th)
        engine.at(engine.now + timeout, self._expire, (entry, th.token))
        yield PARK
        yield self.mutex.lock(th)
        eid = entry.event
        engine.record(engine.now, SYNC_WAKE, th.tid, self.vm, rpc, eid)
        if eid < 0:
            if not th.error:
                th.error = "timed out waiting for " + " or ".join(sorted(names))
            self.watch.sync_timeout(th)
        return eid

    def _expire(self, arg: tuple[SyncWaiter, int]) -> None:
        entry, token = arg
        th = entry.thread
        if th.token != token:
            return
        self.waiters.remove(entry)
        th.wake()

    def signal(self, name: str, eid: int) -> bool:
        """Wake the first API waiting for ``name``; False if none waits."""
        for entry in self.waiters:
            if name in entry.names:
                self.waiters.remove(entry)
                entry.event = eid
                entry.thread.wake()
                return True
        return False

    def abort(self, error: str) -> None:
        """Wake every waiter with an error (the domain is being destroyed)."""
        for entry in self.waiters:
            entry.thread.error = error
            entry.thread.wake()
        self.waiters.clear()
