"""The daemon's RPC worker pool: one FIFO request queue, normal and priority workers.

As ``virThreadPool``: normal workers take the head of the queue whatever its priority;
priority workers take only high-priority calls (the first one queued). The pool grows by
one normal worker when every worker is busy and a call is queued, up to ``max_workers``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

from replay.engine import PARK, Engine, Thread
from replay.fifo import Fifo

if TYPE_CHECKING:
    from replay.workload import Rpc

RunRpc = Callable[[Thread, "Rpc"], Generator[int | None, None, None]]


class RpcPool:
    def __init__(self, engine: Engine, run: RunRpc, *, workers: int, max_workers: int,
                 prio_workers: int) -> None:
        self.engine = engine
        self.run = run
        self.max_workers = max(workers, max_workers)
        self.queue: Fifo[Rpc] = Fifo()
        self.idle: list[Thread] = []
        self.idle_prio: list[Thread] = []
        self.normal = 0
        for _ in range(workers):
            self._spawn(priority=False)
        for i in range(prio_workers):
            th = Thread(engine, f"prio-rpc-{i}", "prio-worker")
            th.start(self._worker(th, priority=True))

    def _spawn(self, priority: bool) -> None:
        th = Thread(self.engine, f"rpc-{self.normal}", "rpc-worker")
        self.normal += 1
        th.start(self._worker(th, priority=False))

    def submit(self, rpc: Rpc) -> None:
        self.queue.append(rpc)
        if self.idle:
            self.idle.pop().wake()
        elif rpc.costs.priority and self.idle_prio:
            self.idle_prio.pop().wake()
        elif self.normal < self.max_workers:
            self._spawn(priority=False)

    def _take(self, priority: bool) -> Rpc | None:
        queue = self.queue
        if not queue:
            return None
        if not priority:
            return queue.popleft()
        for rpc in queue:
            if rpc.costs.priority:
                queue.remove(rpc)
                return rpc
        return None

    def _worker(self, th: Thread, priority: bool) -> Generator[int | None, None, None]:
        idle = self.idle_prio if priority else self.idle
        run = self.run
        while True:
            rpc = self._take(priority)
            if rpc is None:
                idle.append(th)
                th.blocked = None
                yield PARK
                continue
            yield from run(th, rpc)
