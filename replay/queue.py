"""An event queue: FIFO, instrumented (depth and queued bytes), optionally bounded.

Bounds are the policy's business (a pool pauses the monitor's reading when a VM's queue
is full); the queue itself only counts, so every policy's queues are traced for free.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Final

from replay.engine import Engine
from replay.fifo import Fifo
from tracer.timeline import Kind

if TYPE_CHECKING:
    from replay.workload import Event

QUEUE_DEPTH: Final = int(Kind.QUEUE_DEPTH)
QUEUE_BYTES: Final = int(Kind.QUEUE_BYTES)
#: A depth history's most buckets (it halves them when a change falls beyond).
BUCKETS: Final = 1024


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
        if engine.keep:  # (two calls saved per change when records go unkept)
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
    at most 1/512 of the run. Only buckets with a change are stored (a bucket without one
    keeps the depth the queue had), so a queue that changes rarely costs little to note
    and to halve.
    """

    __slots__ = ("t0", "width", "buckets", "maxima", "ends", "open", "current", "bucket_end",
                 "last")

    def __init__(self) -> None:
        self.t0 = 0
        self.width = 16_000_000  # 1024 buckets of 16 ms cover 16 s before the first halving
        #: Finished buckets with a change: index (rising), largest depth (counting the depth
        #: the bucket began with), depth at its end.
        self.buckets: list[int] = []
        self.maxima: list[int] = []
        self.ends: list[int] = []
        #: The open bucket: its index and largest depth so far.
        self.open = 0
        self.current = 0
        self.bucket_end = -1  # no bucket open yet
        self.last = 0

    def note(self, t: int, depth: int) -> None:
        """A depth change at ``t`` (callers handle ``t < bucket_end`` themselves)."""
        opened = self.bucket_end >= 0
        if opened:
            self.buckets.append(self.open)
            self.maxima.append(self.current)
            self.ends.append(self.last)
        else:
            self.t0 = t
        b = (t - self.t0) // self.width
        while b >= BUCKETS:
            self._halve()
            b = (t - self.t0) // self.width
        last = self.last
        if self.buckets and self.buckets[-1] == b:  # halving merged it into the last finished
            self.buckets.pop()
            self.ends.pop()
            m = self.maxima.pop()
            self.current = m if m >= depth else depth
        elif opened:
            self.current = last if last >= depth else depth
        else:
            self.current = depth
        self.open = b
        self.bucket_end = self.t0 + (b + 1) * self.width
        self.last = depth

    def _halve(self) -> None:
        """Merge buckets in pairs, in place; width doubles. A plain loop: compiled, it runs
        on machine ints (``map(max, ...)`` would call the builtin per pair)."""
        buckets, maxima, ends = self.buckets, self.maxima, self.ends
        n = 0
        for i in range(len(buckets)):
            b = buckets[i] // 2
            if n and buckets[n - 1] == b:
                if maxima[i] > maxima[n - 1]:
                    maxima[n - 1] = maxima[i]
            else:
                buckets[n] = b
                maxima[n] = maxima[i]
                n += 1
            ends[n - 1] = ends[i]
        del buckets[n:]
        del maxima[n:]
        del ends[n:]
        self.open //= 2
        self.width *= 2

    def window_maxima(self, start: int, end: int, windows: int = 10) -> list[int]:
        """Largest depth in each of ``windows`` equal windows of [start, end]."""
        if self.bucket_end < 0 or end <= start:
            return [0] * windows
        buckets = [*self.buckets, self.open]
        maxima = [*self.maxima, self.current]
        ends = [*self.ends, self.last]
        # Bucket b (from t0 + b * width) is in window (t0 + b * width - start) * windows // span,
        # clamped to [0, windows - 1]; that rises with b, so window k >= 1 begins at the first
        # bucket with b * width * windows >= k * span + (start - t0) * windows. The buckets
        # run to the one holding ``end`` at least: after its last change a queue keeps its
        # depth (a queue that stays full has not shrunk).
        span = end - start
        scale = self.width * windows
        offset = (start - self.t0) * windows
        count = max(self.open, (end - self.t0) // self.width) + 1
        firsts = [min(count, max(0, -(-(k * span + offset) // scale))) for k in range(1, windows)]
        out = []
        for a, b in zip([0, *firsts], [*firsts, count], strict=True):
            if a >= b:
                out.append(0)
                continue
            i = bisect_left(buckets, a)  # the first stored bucket in the window
            j = bisect_left(buckets, b)
            # a bucket without a change holds the depth the last stored one ended with
            inside = max(maxima[i:j], default=0)
            out.append(max(inside, ends[i - 1]) if i and (i == j or buckets[i] > a) else inside)
        return out
