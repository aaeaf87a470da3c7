"""The VM object lock: a non-fair mutex, as libvirt's ``virObjectLock`` behaves.

A free lock goes to whoever asks. A released lock with contenders is not handed to the
longest waiter: once every callback at the current ns has run, the next holder is drawn by
the run's RNG among all contenders (sorted by wait start, then thread id, before drawing;
no draw when there is one). The winner gets the lock directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from replay.engine import GO, PARK, Engine, Thread
from tracer.timeline import Kind

LOCK_WAIT: Final = int(Kind.LOCK_WAIT)
LOCK_ACQUIRE: Final = int(Kind.LOCK_ACQUIRE)
LOCK_RELEASE: Final = int(Kind.LOCK_RELEASE)


def _wait_key(th: Thread) -> tuple[int, int]:
    return th.wait_since, th.tid


class Mutex:
    __slots__ = ("engine", "vm", "holder", "since", "waiters", "pending", "overtakes", "on_release")

    def __init__(self, engine: Engine, vm: int) -> None:
        self.engine = engine
        self.vm = vm
        self.holder: Thread | None = None
        self.since = 0
        self.waiters: list[Thread] = []
        self.pending = False
        #: Contenders that lost a draw to a thread that started waiting later.
        self.overtakes = 0
        #: Called after every release (a two-stage worker sleeps on it); usually None.
        self.on_release: Callable[[], None] | None = None

    def free(self) -> bool:
        """True when a lock attempt would succeed at once (a try-lock)."""
        return self.holder is None and not self.waiters

    def lock(self, th: Thread) -> int | None:
        engine = self.engine
        now = engine.now
        if self.holder is None and not self.waiters:
            self.holder = th
            self.since = now
            engine.record(now, LOCK_ACQUIRE, th.tid, self.vm, -1, 0)
            return GO
        th.wait_since = now
        th.blocked = ("mutex", self)
        self.waiters.append(th)
        engine.record(now, LOCK_WAIT, th.tid, self.vm, -1, 0)
        return PARK

    def unlock(self, th: Thread) -> None:
        engine = self.engine
        now = engine.now
        engine.record(now, LOCK_RELEASE, th.tid, self.vm, -1, now - self.since)
        self.holder = None
        if self.waiters and not self.pending:
            self.pending = True
            engine.settle(self._draw)
        if self.on_release is not None:
            self.on_release()

    def _draw(self) -> None:
        self.pending = False
        waiters = self.waiters
        if len(waiters) == 1:
            th = waiters.pop()
        else:
            waiters.sort(key=_wait_key)
            th = waiters.pop(self.engine.rng.randrange(len(waiters)))
            self.overtakes += sum(1 for w in waiters if w.wait_since < th.wait_since)
        now = self.engine.now
        self.holder = th
        self.since = now
        self.engine.record(now, LOCK_ACQUIRE, th.tid, self.vm, -1, now - th.wait_since)
        th.wake()
