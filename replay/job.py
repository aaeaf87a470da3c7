"""The VM job: libvirt's state-change lock, a condition variable guarded by the VM mutex.

At most one job at a time. A thread that finds the job taken waits on the job condition
with the mutex released, for at most ``timeout`` from its first request (one deadline, as
``virDomainObjBeginJobInternal``), then fails with libvirt's text. Wake-up on job end is
``broadcast`` (every waiter wakes and races for the mutex; whoever gets the mutex while the
job is free takes it) or ``fifo`` (the job is handed to the first waiter).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Final

from replay.engine import PARK, Engine, Thread
from replay.mutex import Mutex
from tracer.timeline import Kind

if TYPE_CHECKING:
    from replay.findings import Watch

JOB_WAIT: Final = int(Kind.JOB_WAIT)
JOB_BEGIN: Final = int(Kind.JOB_BEGIN)
JOB_END: Final = int(Kind.JOB_END)
JOB_TIMEOUT: Final = int(Kind.JOB_TIMEOUT)


def timeout_message(api: str) -> str:
    return f"Timed out during operation: cannot acquire state change lock (held by monitor={api})"


class Job:
    __slots__ = (
        "engine", "vm", "mutex", "watch", "fifo", "timeout", "max_queued",
        "holder", "owner", "api", "since", "waiters", "requesters", "on_release",
    )

    def __init__(self, engine: Engine, vm: int, mutex: Mutex, watch: Watch, *,
                 fifo: bool, timeout: int, max_queued: int = 0) -> None:
        self.engine = engine
        self.vm = vm
        self.mutex = mutex
        self.watch = watch
        self.fifo = fifo
        self.timeout = timeout
        self.max_queued = max_queued
        self.holder: Thread | None = None
        self.owner = 0
        self.api = ""
        self.since = 0
        #: Threads parked on the job condition, in the order they started waiting.
        self.waiters: list[Thread] = []
        #: Every thread that asked for the job and does not have it yet (woken ones too).
        self.requesters: list[Thread] = []
        self.on_release: Callable[[], None] | None = None

    def free(self) -> bool:
        return self.holder is None

    def take(self, th: Thread, owner: int, api: str) -> bool:
        """Take the job if it is free (the caller holds the VM mutex); no waiting."""
        if self.holder is not None:
            return False
        th.job_req = self.engine.now
        self._take(th, owner, api, 0)
        return True

    def begin(self, th: Thread, owner: int, api: str, *, destroy: bool = False
              ) -> Generator[int | None, None, bool]:
        """Take the job, waiting for it if needed (the caller holds the VM mutex, and holds
        it again on return). Callers try :meth:`take` first: a free job needs no generator.

        Returns False when the wait failed (``th.error`` says why).
        """
        engine = self.engine
        if self.take(th, owner, api):
            return True
        if self.max_queued and not destroy and 1 + len(self.requesters) >= self.max_queued:
            th.error = (f"cannot acquire state change lock (held by monitor={self.api}) "
                        "due to max_queued limit")
            return False
        now = engine.now
        th.owner = owner
        th.api = api
        th.job_req = now
        th.deadline = now + self.timeout
        th.overtakes = 0
        self.requesters.append(th)
        engine.record(now, JOB_WAIT, th.tid, self.vm, owner, 0)
        while True:
            self.waiters.append(th)
            th.blocked = ("job", self)
            self.mutex.unlock(th)
            self.watch.waiting(th)
            engine.at(th.deadline, self._expire, (th, th.token))
            yield PARK
            yield self.mutex.lock(th)
            if self.holder is th:
                return True
            if engine.now >= th.deadline:
                break
            if self.holder is None:
                self._take(th, owner, api, engine.now - th.job_req)
                return True
        self.requesters.remove(th)
        th.error = timeout_message(self.api)
        engine.record(engine.now, JOB_TIMEOUT, th.tid, self.vm, owner, engine.now - th.job_req)
        self.watch.job_timeout(th, self)
        return False

    def _expire(self, arg: tuple[Thread, int]) -> None:
        th, token = arg
        if th.token != token:
            return
        self.waiters.remove(th)
        th.wake()

    def _take(self, th: Thread, owner: int, api: str, waited: int) -> None:
        now = self.engine.now
        self.holder = th
        self.owner = owner
        self.api = api
        self.since = now
        requesters = self.requesters
        if requesters:
            if th in requesters:
                requesters.remove(th)
            for w in requesters:
                if w.job_req < th.job_req:
                    w.overtakes += 1
        if th.overtakes:
            self.watch.overtaken(th, self)
            th.overtakes = 0
        self.engine.record(now, JOB_BEGIN, th.tid, self.vm, owner, waited)

    def end(self, th: Thread) -> None:
        """End the job and wake its waiters (the caller holds the VM mutex)."""
        engine = self.engine
        now = engine.now
        engine.record(now, JOB_END, th.tid, self.vm, self.owner, now - self.since)
        self.holder = None
        waiters = self.waiters
        if waiters:
            if self.fifo:
                nxt = waiters.pop(0)
                self._take(nxt, nxt.owner, nxt.api, now - nxt.job_req)
                nxt.wake()
            else:
                for w in waiters:
                    w.wake()
                waiters.clear()
        if self.on_release is not None:
            self.on_release()

