"""An event queue: FIFO, instrumented (depth and queued bytes), optionally bounded.

Bounds are the policy's business (a pool pauses the monitor's reading when a VM's queue
is full); the queue itself only counts, so every policy's queues are traced for free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from replay.engine import Engine
from replay.fifo import Fifo
from tracer.timeline import Kind

if TYPE_CHECKING:
    from replay.workload import Event

QUEUE_DEPTH: Final = int(Kind.QUEUE_DEPTH)
QUEUE_BYTES: Final = int(Kind.QUEUE_BYTES)


class Gauge:
    """A queue's depth and bytes, traced: for a queue whose items live elsewhere (the
    two-stage global queue holds one entry per event of the per-VM queues)."""

    __slots__ = ("engine", "qid", "vm", "depth", "bytes", "peak", "history")

    def __init__(self, engine: Engine, qid: int, vm: int) -> None:
        self.engine = engine
        self.qid = qid
        self.vm = vm
        self.depth = 0
        self.bytes = 0
        self.peak = 0
        self.history = DepthHistory()

    def add(self, size: int) -> None:
        self.depth += 1
        self.bytes += size
        self._changed()

    def sub(self, size: int) -> None:
        self.depth -= 1
        self.bytes -= size
        self._changed()

    def _changed(self) -> None:
        engine = self.engine
        now = engine.now
        depth = self.depth
        if depth > self.peak:
            self.peak = depth
        history = self.history
        if now < history.bucket_end:  # the common case, inlined: same bucket as before
            if depth > history.current:
                history.current = depth
            history.last = depth
        else:
            history.note(now, depth)
        engine.record(now, QUEUE_DEPTH, -1, self.vm, self.qid, depth)
        engine.record(now, QUEUE_BYTES, -1, self.vm, self.qid, self.bytes)


class EventQueue(Gauge):
    """A FIFO of events with its depth and bytes traced."""

    __slots__ = ("items",)

    def __init__(self, engine: Engine, qid: int, vm: int) -> None:
        super().__init__(engine, qid, vm)
        self.items: Fifo[Event] = Fifo()

    def __len__(self) -> int:
        return self.depth

    def push(self, ev: Event) -> None:
        self.items.append(ev)
        self.add(ev.size)

    def pop(self) -> Event:
        ev = self.items.popleft()
        self.sub(ev.size)
        return ev

    def clear(self) -> list[Event]:
        dropped = list(self.items)
        self.items.clear()
        self.depth = 0
        self.bytes = 0
        self._changed()
        return dropped


class DepthHistory:
    """Largest depth per time bucket, in bounded memory (buckets double in width).

    Enough to tell whether a queue's maximum keeps growing over a run (the unbounded-growth
    finding) without keeping every depth change: windows are exact to one bucket width,
    at most 1/512 of the run.
    """

    __slots__ = ("t0", "width", "maxima", "current", "bucket_end", "last")
    BUCKETS = 1024

    def __init__(self) -> None:
        self.t0 = 0
        self.width = 16_000_000  # 1024 buckets of 16 ms cover 16 s before the first halving
        #: Largest depth of each finished bucket; ``current`` is the open bucket's.
        self.maxima: list[int] = []
        self.current = 0
        self.bucket_end = -1  # no bucket open yet
        self.last = 0

    def note(self, t: int, depth: int) -> None:
        """A depth change at ``t`` (callers handle ``t < bucket_end`` themselves)."""
        if self.bucket_end < 0:
            self.t0 = t
        else:
            self.maxima.append(self.current)
        b = (t - self.t0) // self.width
        while b >= self.BUCKETS:
            self._halve()
            b = (t - self.t0) // self.width
        opened = self.bucket_end >= 0
        if b < len(self.maxima):  # halving merged the new bucket into the last finished one
            self.current = max(self.maxima.pop(), self.last, depth)
        else:
            # buckets without a change keep the depth the queue had
            self.maxima.extend([self.last] * (b - len(self.maxima)))
            self.current = max(self.last, depth) if opened else depth
        self.bucket_end = self.t0 + (b + 1) * self.width
        self.last = depth

    def _halve(self) -> None:
        """Merge buckets in pairs, in place (the odd one out stays last); width doubles. A
        plain loop: compiled, it runs on machine ints (``map(max, ...)`` would call the
        builtin per pair, which cost more than the rest of a replay with 200 queues)."""
        m = self.maxima
        n = len(m)
        half = n // 2
        for i in range(half):
            a = m[2 * i]
            b = m[2 * i + 1]
            m[i] = a if a >= b else b
        if n & 1:
            m[half] = m[n - 1]
            half += 1
        del m[half:]
        self.width *= 2

    def window_maxima(self, start: int, end: int, windows: int = 10) -> list[int]:
        """Largest depth in each of ``windows`` equal windows of [start, end]."""
        if self.bucket_end < 0 or end <= start:
            return [0] * windows
        depths = [*self.maxima, self.current]
        # Bucket b (from t0 + b * width) is in window (t0 + b * width - start) * windows // span,
        # clamped to [0, windows - 1]; that rises with b, so window k >= 1 begins at the first
        # bucket with b * width * windows >= k * span + (start - t0) * windows.
        span = end - start
        scale = self.width * windows
        offset = (start - self.t0) * windows
        firsts = [min(len(depths), max(0, -(-(k * span + offset) // scale)))
                  for k in range(1, windows)]
        bounds = zip([0, *firsts], [*firsts, len(depths)], strict=True)
        return [max(depths[a:b], default=0) for a, b in bounds]
