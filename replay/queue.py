"""An event queue: FIFO, instrumented (depth and queued bytes), optionally bounded.

Bounds are the policy's business (a pool pauses the monitor's reading when a VM's queue
is full); the queue itself only counts, so every policy's queues are traced for free.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Final

from librt.strings import BytesWriter, read_i64_le, write_i64_le

from replay.engine import Engine
from replay.fifo import Fifo
from tracer.timeline import Kind

if TYPE_CHECKING:
    from replay.workload import Event

QUEUE_DEPTH: Final = int(Kind.QUEUE_DEPTH)
QUEUE_BYTES: Final = int(Kind.QUEUE_BYTES)
#: A depth history's most buckets (it halves them when a change falls beyond).
BUCKETS: Final = 1024
#: Bytes of a stored bucket: three little-endian int64.
STORED: Final = 24


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
    and to halve. Stored buckets are machine ints in a byte buffer: compiled, storing one
    is three inlined writes, not three list appends of int objects.
    """

    __slots__ = ("t0", "width", "stored", "stored_last", "open", "current", "bucket_end",
                 "last")

    def __init__(self) -> None:
        self.t0 = 0
        self.width = 16_000_000  # 1024 buckets of 16 ms cover 16 s before the first halving
        #: Finished buckets with a change, :data:`STORED` bytes each: index (rising), largest
        #: depth (counting the depth the bucket began with), depth at its end.
        self.stored = BytesWriter()
        #: Index of the last stored bucket (-1: none).
        self.stored_last = -1
        #: The open bucket: its index and largest depth so far.
        self.open = 0
        self.current = 0
        self.bucket_end = -1  # no bucket open yet
        self.last = 0

    def note(self, t: int, depth: int) -> None:
        """A depth change at ``t`` (callers handle ``t < bucket_end`` themselves)."""
        opened = self.bucket_end >= 0
        if opened:
            _store(self.stored, self.open, self.current, self.last)
            self.stored_last = self.open
        else:
            self.t0 = t
        b = (t - self.t0) // self.width
        while b >= BUCKETS:
            self._halve()
            b = (t - self.t0) // self.width
        last = self.last
        if self.stored_last == b:  # halving merged it into the last finished: reopen that
            data = self.stored.getvalue()
            n = len(data) - STORED
            m = read_i64_le(data, n + 8)
            self.stored.truncate(n)
            self.stored_last = read_i64_le(data, n - STORED) if n else -1
            self.current = m if m >= depth else depth
        elif opened:
            self.current = last if last >= depth else depth
        else:
            self.current = depth
        self.open = b
        self.bucket_end = self.t0 + (b + 1) * self.width
        self.last = depth

    def _halve(self) -> None:
        """Merge buckets in pairs; width doubles."""
        data = self.stored.getvalue()
        out = BytesWriter()
        b = m = e = -1
        for i in range(0, len(data), STORED):
            half = read_i64_le(data, i) // 2
            if half == b:
                largest = read_i64_le(data, i + 8)
                if largest > m:
                    m = largest
            else:
                if b >= 0:
                    _store(out, b, m, e)
                b, m = half, read_i64_le(data, i + 8)
            e = read_i64_le(data, i + 16)
        if b >= 0:
            _store(out, b, m, e)
        self.stored = out
        self.stored_last = b
        self.open //= 2
        self.width *= 2

    def window_maxima(self, start: int, end: int, windows: int = 10) -> list[int]:
        """Largest depth in each of ``windows`` equal windows of [start, end]."""
        if self.bucket_end < 0 or end <= start:
            return [0] * windows
        data = self.stored.getvalue()
        offsets = range(0, len(data), STORED)
        buckets = [*(read_i64_le(data, i) for i in offsets), self.open]
        maxima = [*(read_i64_le(data, i + 8) for i in offsets), self.current]
        ends = [*(read_i64_le(data, i + 16) for i in offsets), self.last]
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


def _store(out: BytesWriter, bucket: int, largest: int, end: int) -> None:
    write_i64_le(out, bucket)
    write_i64_le(out, largest)
    write_i64_le(out, end)
