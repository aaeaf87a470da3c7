"""Shared pieces of the replay tests: tiny hand-built sessions, replays that keep their
records, a bare host for primitive tests, and the queueing formulas the model is checked
against (FCFS c-server recursion, Erlang C, batch means)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from heapq import heapreplace
from statistics import fmean, stdev
from typing import Any

from replay.engine import Engine, Thread
from replay.host import Host, HostParams
from replay.policy import Policy, parse_spec
from replay.profile import Profile, load_profile
from replay.run import RunOutcome, run
from replay.scenarios import Recorder
from tracer.session import Record as SessionRecord
from tracer.session import wire_bytes
from tracer.timeline import Kind, Timeline, rows

US = 1_000
MS = 1_000_000
S = 1_000_000_000
#: A timeline record: (t, kind, thread, vm, ref, value).
Record = tuple[int, int, int, int, int, int]

# The default cost profile as replay/profiles/default.toml documents it, in ns (the tests
# derive every expected time from these numbers, not from the shipped TOML).
READ = 10 * US
INLINE = 30 * US
DEFERRED = 100 * US
WAKE = 10 * US
PRE = 50 * US
LOCKED = 20 * US
BETWEEN = 20 * US
POST = 50 * US


def read_ns(rec: SessionRecord) -> int:
    """Reading a message costs 10 µs + 0.001 µs (1 ns) per byte of its wire text."""
    return READ + len(wire_bytes(rec))


class Session:
    """A tiny session built record by record (times in ns); records come out in time order."""

    def __init__(self, vms: list[str]) -> None:
        self.vms = vms
        self.recorder = Recorder(vms)

    def command(self, vm: int, t: int, name: str, reply_ns: int | None,
                events: tuple[tuple[int, str, dict[str, Any]], ...] = (),
                thread: int | None = None) -> None:
        self.recorder.command(vm, t, name, reply_ns=reply_ns, events=events, thread=thread)

    def event(self, vm: int, t: int, name: str) -> None:
        self.recorder.event(vm, t, name)

    def api(self, vm: int, t: int, name: str, thread: int, end: int) -> None:
        self.recorder.api(vm, t, name, thread, end)

    def records(self) -> list[SessionRecord]:
        return list(self.recorder.upto(None))


@dataclass
class Replayed:
    """A run's records and tables, with the look-ups the tests need."""

    records: list[Record]
    timeline: Timeline
    outcome: RunOutcome

    def of(self, kind: Kind, *, ref: int | None = None, vm: int | None = None,
           thread: int | None = None) -> list[Record]:
        return [r for r in self.records if r[1] == kind and (ref is None or r[4] == ref)
                and (vm is None or r[3] == vm) and (thread is None or r[2] == thread)]

    def times(self, kind: Kind, **match: int) -> list[int]:
        return [r[0] for r in self.of(kind, **match)]

    def one(self, kind: Kind, **match: int) -> Record:
        found = self.of(kind, **match)
        assert len(found) == 1, (kind, match, found)
        return found[0]

    def event_id(self, name: str, vm: int = 0, nth: int = 0) -> int:
        ids = [i for i, e in enumerate(self.timeline.events) if e.name == name and e.vm == vm]
        return ids[nth]

    def rpc_id(self, api: str, vm: int = 0, nth: int = 0) -> int:
        ids = [i for i, r in enumerate(self.timeline.rpcs) if r.api == api and r.vm == vm]
        return ids[nth]


def replay(spec: str, vms: list[str], session: Iterable[SessionRecord], *,
           profile: Profile | None = None, seed: int = 0) -> Replayed:
    """Replay ``session`` under ``spec`` and keep every timeline record."""
    chunks: list[bytes] = []
    outcome = run(parse_spec(spec), vms, iter(session), profile or load_profile("default"),
                  seed=seed, observe=lambda timeline: [chunks.append])
    return Replayed(list(rows(b"".join(chunks))), outcome.timeline, outcome)


class _Idle(Policy):
    """A policy that wires nothing: the primitives are driven by the test itself."""

    def inbox_ready(self, vm: Any) -> None:
        """No reader: the primitive tests deliver nothing on monitors."""


@dataclass
class Rig:
    """A bare host (VMs with mutex, job and condition) whose records are kept."""

    engine: Engine
    host: Host

    @property
    def records(self) -> list[Record]:
        """The records so far, as tuples."""
        return list(rows(self.engine.records.getvalue()))

    def thread(self, name: str) -> Thread:
        return Thread(self.engine, name, "rpc-worker")

    def of(self, kind: Kind) -> list[Record]:
        return [r for r in self.records if r[1] == kind]

    def run(self) -> int:
        return self.engine.run()


def rig(*, seed: int = 0, vms: int = 1, **params: Any) -> Rig:
    """A host with ``vms`` VMs and no RPC workers unless ``params`` ask for them."""
    engine = Engine(seed, keep=True)
    defaults: dict[str, Any] = {"workers": 0, "prio_workers": 0}
    host = Host(engine, load_profile("default"), HostParams(**{**defaults, **params}),
                [f"vm{i}" for i in range(vms)], None)
    host.policy = _Idle(host)
    return Rig(engine, host)


# -- queueing theory ----------------------------------------------------------------------

class Fcfs:
    """A FCFS queue with ``c`` servers, fed customers in arrival order.

    Each customer takes the server that frees first: wait = max(0, free - arrival), and
    that server is then busy until arrival + wait + service.
    """

    def __init__(self, c: int) -> None:
        self.free = [0] * c  # a heap of the times the servers become free

    def wait(self, arrival: int, service: int) -> int:
        start = max(arrival, self.free[0])
        heapreplace(self.free, start + service)
        return start - arrival


def fcfs_waits(arrivals: Iterable[int], services: Iterable[int], c: int) -> list[int]:
    """Queue waits of every customer of a FCFS c-server queue."""
    queue = Fcfs(c)
    return [queue.wait(a, s) for a, s in zip(arrivals, services, strict=True)]


def erlang_c_wait(lam: float, mu: float, c: int) -> float:
    """Mean queue wait of M/M/c (Erlang C probability of waiting / (cμ - λ))."""
    a = lam / mu
    rho = a / c
    term = 1.0
    total = 1.0
    for k in range(1, c):
        term *= a / k
        total += term
    last = term * a / c / (1 - rho)  # a^c / c! / (1 - ρ)
    return last / (total + last) / (c * mu - lam)


#: Student t quantiles for a two-sided 99 % interval, by degrees of freedom (batches - 1).
T_995 = {19: 2.860935, 29: 2.756386}


def batch_means(samples: Sequence[float], batches: int = 30, warmup: float = 0.05
                ) -> tuple[float, float]:
    """Mean and 99 % half-width by batch means: drop the first ``warmup`` share, cut the
    rest into ``batches`` equal consecutive batches, t-interval over their means."""
    start = int(len(samples) * warmup)
    size = (len(samples) - start) // batches
    means = [fmean(samples[start + i * size:start + (i + 1) * size]) for i in range(batches)]
    mean = fmean(means)
    return mean, T_995[batches - 1] * stdev(means) / math.sqrt(batches)


RPC_ARRIVE = int(Kind.RPC_ARRIVE)
RPC_START = int(Kind.RPC_START)


class QueueWaits:
    """A lean run consumer: each RPC's arrival and start times, by RPC id (what a queue
    wait needs, without keeping a long run's records)."""

    def __init__(self) -> None:
        self.arrive: list[int] = []
        self.start: dict[int, int] = {}

    def __call__(self, chunk: bytes) -> None:
        arrive, start = self.arrive, self.start
        for t, kind, _, _, ref, _ in rows(chunk):
            if kind == RPC_ARRIVE:
                assert ref == len(arrive)  # ids are given in arrival order
                arrive.append(t)
            elif kind == RPC_START:
                start[ref] = t

    def waits(self) -> list[int]:
        """RPC_START − RPC_ARRIVE per RPC, in arrival order (every RPC must have started)."""
        return [self.start[i] - a for i, a in enumerate(self.arrive)]


def commands_and_services(records: Iterable[SessionRecord]) -> tuple[list[int], list[int]]:
    """Send times and recorded service times (reply − send) of a session's commands, in
    send order, paired by QMP id: the queueing view of the session, read off the records."""
    sent: dict[Any, int] = {}
    arrivals: list[int] = []
    services: list[int] = []
    for rec in records:
        if rec["kind"] == "command":
            sent[rec["id"]] = len(arrivals)
            arrivals.append(rec["t_ns"])
            services.append(-1)
        elif rec["kind"] == "reply":
            i = sent.pop(rec["id"])
            services[i] = rec["t_ns"] - arrivals[i]
    assert not sent, "every command has its reply"
    return arrivals, services
