"""The discrete-event engine: virtual time in integer ns and cooperative threads.

A thread is a generator. It spends CPU time with ``yield th.spend(ns)`` (or ``yield ns``),
and yields :data:`PARK` (``None``) to block until something calls :meth:`Thread.wake`.
Primitives return ``0`` when the thread may go on at once and ``PARK`` when it must wait,
so a thread writes ``yield vm.mutex.lock(th)`` and a free lock costs a flag test, not a
scheduled event.

Three things drive time: a heap of :class:`Entry` (a callback, or a thread's turn: a
thread is its own entry, so scheduling one allocates nothing), :class:`Arrivals` from the
workload merged outside the heap (so a session never sits in memory), and *settle*
callbacks that run once every callback at the current ns has run (a non-fair mutex draws
its next holder then, among every thread that contended during that ns).

A thread resumed by the engine loop that yields a cost ending before anything else can
happen (no callback, arrival or settle due until then) just moves the clock and goes on:
the heap would have handed it back next anyway, so the order of everything is unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, Final

from librt.strings import BytesWriter, write_i64_le

#: What a thread yields to block until woken.
PARK: Final = None
#: What a primitive returns when the thread may go on at once.
GO: Final = 0
#: What :meth:`Thread.spend` returns: spend the ns it set aside.
SPEND: Final = -1
#: A time after every run's end.
NEVER: Final = 1 << 62

Body = Generator[int | None, None, None]


class Arrivals:
    """What arrives from outside the heap, in time order (a session's workload). The engine
    pulls one arrival ahead: :meth:`next_time`, then :meth:`arrive` when the clock gets
    there. Compiled, both are native calls: no tuple and no Python-level call per arrival.
    This base has none."""

    def next_time(self) -> int:
        """Pull the next arrival; its time, or :data:`NEVER` when there is none left."""
        return NEVER

    def arrive(self) -> None:
        """Deliver the arrival pulled last (the clock is at its time)."""


class Calls(Arrivals):
    """Arrivals given as ``(t, fn, arg)`` in time order: ``fn(arg)`` at ``t``."""

    def __init__(self, calls: Iterable[tuple[int, Callable[[Any], None], Any]]) -> None:
        self.calls = iter(calls)
        self.fn: Callable[[Any], None] | None = None
        self.arg: Any = None

    def next_time(self) -> int:
        nxt = next(self.calls, None)
        if nxt is None:
            return NEVER
        t, self.fn, self.arg = nxt
        return t

    def arrive(self) -> None:
        assert self.fn is not None
        self.fn(self.arg)


class Entry:
    """Something due at :attr:`t` on the engine's heap; same-time entries run in the order
    they were scheduled (:attr:`seq`, 0 while not on the heap). A main loop's input waits
    on a heap of its own (:class:`replay.reader.Ready`)."""

    __slots__ = ("t", "seq")

    def __init__(self) -> None:
        self.t = 0
        self.seq = 0

    def fire(self) -> None:
        raise NotImplementedError


class Call(Entry):
    """``fn(arg)`` at a virtual time."""

    __slots__ = ("fn", "arg")

    def __init__(self, fn: Callable[[Any], None], arg: Any) -> None:
        super().__init__()
        self.fn = fn
        self.arg = arg

    def fire(self) -> None:
        self.fn(self.arg)


class Heap:
    """Entries in a binary heap by ``(t, seq)``, sifted here rather than by heapq: compiled,
    a comparison is two native int compares, not a rich comparison.

    Its list never shrinks: :attr:`size` says how much of it is the heap, and slots past it
    keep entries already taken until pushes overwrite them. (A list shrinking below half
    its capacity is reallocated, even to the same size, which a heap of a few entries would
    do on most pops.)
    """

    __slots__ = ("items", "size", "first_t")

    def __init__(self) -> None:
        self.items: list[Entry] = []
        self.size = 0
        #: When the first entry is due (:data:`NEVER` when there is none): one load to test.
        self.first_t = NEVER

    def push(self, entry: Entry) -> None:
        items = self.items
        i = self.size
        if i == len(items):
            items.append(entry)
        self.size = i + 1
        t, seq = entry.t, entry.seq
        while i:
            up = (i - 1) >> 1
            parent = items[up]
            if parent.t < t or (parent.t == t and parent.seq < seq):
                break
            items[i] = parent
            i = up
        items[i] = entry
        if not i:
            self.first_t = t

    def pop(self) -> Entry:
        """Take the first entry off (there is one)."""
        items = self.items
        n = self.size - 1
        self.size = n
        top = items[0]
        if not n:
            self.first_t = NEVER
            return top
        last = items[n]
        t, seq = last.t, last.seq
        i = 0
        c = 1
        while c < n:
            child = items[c]
            if c + 1 < n:
                right = items[c + 1]
                if right.t < child.t or (right.t == child.t and right.seq < child.seq):
                    c += 1
                    child = right
            if t < child.t or (t == child.t and seq < child.seq):
                break
            items[i] = child
            i = c
            c = 2 * i + 1
        items[i] = last
        self.first_t = items[0].t
        return top


class Engine:
    """Virtual clock, callback heap, settle list, the run's RNG and its record buffer."""

    def __init__(self, seed: int = 0, keep: bool = False) -> None:
        self.now = 0
        self.rng = random.Random(seed)
        #: Whether the run keeps timeline records, and where they go (``tracer.timeline``).
        self.keep = keep
        self.records = BytesWriter()
        self._heap = Heap()
        #: Entries scheduled so far (the tie-breaker of same-time entries).
        self.seq = 0
        self._settle: list[Callable[[], None]] = []
        self.threads: list[Thread] = []
        #: Last virtual time the run may reach (NEVER: no limit); may be raised while running.
        self.horizon = NEVER
        #: Time of the next workload arrival (:data:`NEVER` when none is pending).
        self.t_next = NEVER
        #: The thread whose step is running (None in callbacks outside any thread).
        self.stepping: Thread | None = None

    def record(self, t: int, kind: int, thread: int, vm: int, ref: int, value: int) -> None:
        """One timeline record, if the run keeps them. Compiled, the six fields go into the
        buffer as machine ints: no int object, no list."""
        if self.keep:
            out = self.records
            write_i64_le(out, t)
            write_i64_le(out, kind)
            write_i64_le(out, thread)
            write_i64_le(out, vm)
            write_i64_le(out, ref)
            write_i64_le(out, value)

    def take_records(self) -> bytes:
        """The records made since the last call, as one chunk (``tracer.timeline.RECORD``
        each; empty when the run keeps none)."""
        chunk = self.records.getvalue()
        self.records.truncate(0)
        return chunk

    def at(self, t: int, fn: Callable[[Any], None], arg: Any = None) -> None:
        """Call ``fn(arg)`` at virtual time ``t`` (same-time calls run in call order)."""
        self.push(Call(fn, arg), t)

    def push(self, entry: Entry, t: int) -> None:
        """Put ``entry`` on the heap, due at ``t``."""
        if entry.seq:
            raise RuntimeError(f"{entry!r} is scheduled twice")
        self.seq += 1
        entry.t = t
        entry.seq = self.seq
        self._heap.push(entry)

    def settle(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once every callback at the current ns has run."""
        self._settle.append(fn)

    def run(self, arrivals: Arrivals | None = None,
            progress: Callable[[int], None] | None = None) -> int:
        """Run until nothing is left to do (or :attr:`horizon`); return the end time.

        ``arrivals`` are pulled one ahead, as the clock reaches them (none: only what is
        scheduled already). ``progress(now)`` is called every 4,096 steps (consumers flush
        records then).
        """
        heap = self._heap
        settle = self._settle
        source = arrivals if arrivals is not None else Arrivals()
        t_next = self.t_next = source.next_time()
        steps = 0
        while True:
            t = heap.first_t
            if t < t_next:
                if t > self.now:
                    if settle:
                        self._run_settle()
                        continue
                    if t > self.horizon:
                        self.now = self.horizon
                        break
                    self.now = t
                entry = heap.pop()
                entry.seq = 0
                entry.fire()
                steps += 1
                if not steps & 0xFFF and progress is not None:
                    progress(t)
                continue
            if t_next == NEVER:
                if settle:
                    self._run_settle()
                    continue
                break
            if t_next > self.now:
                if settle:
                    self._run_settle()
                    continue
                if t_next > self.horizon:
                    self.now = self.horizon
                    break
                self.now = t_next
            source.arrive()
            t_next = self.t_next = source.next_time()
        return self.now

    def _run_settle(self) -> None:
        todo = self._settle[:]
        self._settle.clear()
        for fn in todo:
            fn()


class Thread(Entry):
    """A cooperative thread of the modelled daemon (a generator run by the engine).

    Wait bookkeeping lives here so primitives stay allocation-free: ``token`` invalidates
    stale timers, ``failed`` tells a body that its last wait ended in an error.
    """

    __slots__ = (
        "engine", "tid", "name", "role", "vm", "body", "token", "failed", "error",
        "wait_since", "job_req", "deadline", "overtakes", "blocked", "owner", "api", "busy_vm",
        "cost",
    )

    def __init__(self, engine: Engine, name: str, role: str, vm: int = -1) -> None:
        super().__init__()
        self.engine = engine
        self.tid = len(engine.threads)
        engine.threads.append(self)
        self.name = name
        self.role = role
        self.vm = vm
        #: The running body (None when none runs). The engine iterates it: compiled, a
        #: generator's ``tp_iternext`` is a C call, and its end is no StopIteration.
        self.body: Iterator[int | None] | None = None
        self.token = 0
        self.failed = False
        self.error = ""
        self.wait_since = 0
        self.job_req = 0
        self.deadline = 0
        self.overtakes = 0
        #: What the thread is blocked on, for deadlock detection: (what, object) or None.
        self.blocked: tuple[str, Any] | None = None
        #: The owner code of the work in hand (RPC id, or -(event id)-1).
        self.owner = 0
        #: The API name of the work in hand (job holder names, timeout messages).
        self.api = ""
        #: The VM whose work the thread is doing now (-1: none), for interference.
        self.busy_vm = -1
        #: The ns :meth:`spend` set aside.
        self.cost = 0

    def start(self, body: Body) -> None:
        self.body = body
        self.turn(self.engine.now)

    def spend(self, ns: int) -> int:
        """What a body yields to spend ``ns`` on the CPU: ``yield th.spend(ns)``. The ns stay
        a machine int here; compiled, yielding them (above 256) would allocate an int object
        per yield."""
        self.cost = ns
        return SPEND if ns else GO

    def turn(self, t: int) -> None:
        """Resume the thread at ``t`` (it has no turn pending: a thread runs, waits for a
        cost or is parked)."""
        self.engine.push(self, t)

    def fire(self) -> None:
        self.resume()

    def resume(self, ahead: bool = True) -> None:
        """Run the body up to its next wait or cost. From the engine loop (``ahead``), a
        cost that ends before anything else is due is spent at once and the body goes on.
        Scheduled by :meth:`turn`."""
        body = self.body
        assert body is not None
        engine = self.engine
        heap = engine._heap
        settle = engine._settle
        horizon = engine.horizon
        engine.stepping = self
        wait = 0
        for d in body:
            if d is None:
                break  # parked
            if d:
                ns = self.cost if d == SPEND else d  # a machine int (d is an object)
                t = engine.now + ns
                if (not ahead or heap.first_t <= t or engine.t_next <= t or settle
                        or t > horizon):
                    wait = ns
                    break
                engine.now = t
        else:
            self.body = None  # the body returned
        engine.stepping = None
        if wait:
            self.turn(engine.now + wait)

    def wake(self) -> None:
        """Make a parked thread runnable now (invalidating its pending timers).

        Woken by another thread, it runs after that thread's step, at the same ns. Woken
        from outside any thread (an arrival, a timer, a lock draw) it runs at once, up to
        its next wait, and the clock stays: the callback that woke it may not be done.
        """
        self.token += 1
        self.blocked = None
        engine = self.engine
        if engine.stepping is not None:
            self.turn(engine.now)
        else:
            self.resume(ahead=False)

    def __repr__(self) -> str:
        return f"<Thread {self.name}>"
