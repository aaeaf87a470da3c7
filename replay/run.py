"""One replay: a workload through one policy spec, records streamed to consumers.

Each (session, policy spec) run gets a fresh engine and RNG seeded with ``seed``, so adding
a policy to a command line never changes another policy's numbers. The run ends when no
engine event is left, at the latest at the horizon: last record + job timeout + 1 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Final

from replay.engine import NEVER, Arrivals, Engine
from replay.host import Host, HostParams
from replay.policy import PolicySpec
from replay.profile import Profile
from replay.workload import Arrival, Event, Rpc, Workload
from tracer.session import Record as SessionRecord
from tracer.timeline import Kind, Timeline

RUN_END: Final = int(Kind.RUN_END)

#: A consumer of record chunks (``bytes``, six int64 per record: tracer.timeline.RECORD).
Consumer = Callable[[bytes], None]


@dataclass
class RunOutcome:
    """What a run leaves besides its records: tables, findings and timings."""

    timeline: Timeline
    end_ns: int
    first_ns: int
    last_ns: int
    messages: int
    summary: dict[str, Any]
    decode_s: float = 0.0
    simulate_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class SessionArrivals(Arrivals):
    """A workload's items, each handed to the host as the clock reaches it. The horizon
    follows the last record read: the run ends at most ``slack`` after the session."""

    def __init__(self, engine: Engine, host: Host, workload: Workload, slack: int) -> None:
        self.engine = engine
        self.host = host
        self.workload = workload
        self.slack = slack
        self.item: Arrival | None = None

    def next_time(self) -> int:
        item = self.item = self.workload.next_item()
        self.engine.horizon = self.workload.last_ns + self.slack
        return NEVER if item is None else item.due

    def arrive(self) -> None:
        item = self.item
        if isinstance(item, Rpc):
            self.host.arrive_rpc(item)
        elif isinstance(item, Event):
            self.host.arrive_event(item)


class TimedRecords:
    """Session records pulled in batches, the decoding time of each batch measured."""

    def __init__(self, records: Iterator[SessionRecord], batch: int = 2048) -> None:
        self.records = records
        self.batch = batch
        self.seconds = 0.0

    def __iter__(self) -> Iterator[SessionRecord]:
        records = self.records
        batch = self.batch
        clock = time.perf_counter
        while True:
            t0 = clock()
            chunk = list(islice(records, batch))
            self.seconds += clock() - t0
            if not chunk:
                return
            yield from chunk


def run(
    spec: PolicySpec,
    vms: list[str],
    records: Iterator[SessionRecord] | Workload,
    profile: Profile,
    *,
    seed: int = 0,
    starvation_k: int = 5,
    observe: Callable[[Timeline], Sequence[Consumer]] | None = None,
    rows: bool = True,
    on_progress: Callable[[int], None] | None = None,
) -> RunOutcome:
    """Replay ``records`` (a session's, header excluded) under ``spec``; a workload already
    read instead (:meth:`Workload.read_all`) times the engine alone.

    ``observe(timeline)`` returns the consumers of the run's records (none: records are
    discarded and the tables are not kept, the engine's fastest mode). ``rows=False``
    keeps no events and RPC rows in the timeline (consumers that need no names: metrics).
    """
    timeline = Timeline(spec=spec.label, vms=list(vms)) if observe is not None else None
    consumers = observe(timeline) if observe is not None and timeline is not None else ()
    engine = Engine(seed, keep=bool(consumers))
    params = HostParams(
        workers=spec.common["workers"], max_workers=spec.common["max_workers"],
        prio_workers=spec.common["prio_workers"], job_timeout=spec.common["job_timeout"],
        fifo=spec.fifo, max_queued=spec.common["max_queued"], starvation_k=starvation_k,
    )
    host = Host(engine, profile, params, vms, timeline, rows=rows)
    policy = spec.cls(host, **spec.own)
    host.policy = policy
    policy.start()
    timed = None
    if isinstance(records, Workload):
        workload = records
        workload.hooks = host.hooks
    else:
        timed = TimedRecords(records)
        workload = Workload(iter(timed), vms, profile, hooks=host.hooks)
    host.complete_rpc = workload.complete
    arrivals = SessionArrivals(engine, host, workload, params.job_timeout + 1_000_000_000)

    def flush(now: int) -> None:
        host.sync_threads()
        chunk = engine.take_records()
        if chunk:
            for consume in consumers:
                consume(chunk)
        if on_progress is not None:
            on_progress(now)

    t0 = time.perf_counter()
    end = engine.run(arrivals, progress=flush)
    host.watch.finish(workload.first_ns or 0, workload.last_ns,
                      {name: path.events for name, path in host.paths.items()})
    engine.record(end, RUN_END, -1, -1, -1, 0)
    flush(end)
    decode = timed.seconds if timed is not None else 0.0
    simulate = time.perf_counter() - t0 - decode
    if timeline is None:
        timeline = Timeline(spec=spec.label, vms=list(vms))
        timeline.findings = host.watch.findings
    timeline.end_ns = end
    return RunOutcome(
        timeline=timeline, end_ns=end, first_ns=workload.first_ns or 0,
        last_ns=workload.last_ns, messages=workload.records_read,
        summary=host.watch.summary(), decode_s=decode, simulate_s=simulate,
    )

