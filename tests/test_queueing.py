"""The RPC pool is exact where queueing theory is exact.

A Poisson session (the ``poisson`` scenario, generated in-process: query-status commands
round-robin over 1,000 VMs, so no two RPCs of one VM ever overlap and no lock is
contended) replayed with zero costs, ``c`` normal workers, no priority workers and FIFO
job hand-off is a FCFS c-server queue: every RPC's queue wait must equal, to the ns, the
wait of the recursion in :func:`tests.replay_helpers.fcfs_waits` over the session's own
send and service times; and the mean wait must agree with Erlang C.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from replay_helpers import (
    Fcfs,
    QueueWaits,
    S,
    batch_means,
    commands_and_services,
    erlang_c_wait,
    fcfs_waits,
)

from replay.policy import parse_spec
from replay.profile import load_profile
from replay.run import run
from replay.scenarios import SCENARIOS
from tracer.session import Record as SessionRecord

POISSON = SCENARIOS["poisson"]
SERVICE_MS = 1.0
MU = 1000 / SERVICE_MS  # services per second
#: Sizes tried for the Erlang C runs, smallest first (about 0.3–1.6 M RPCs;
#: M/M/5 at 0.8 needs a little more).
SIZES = range(300_000, 2_400_001, 50_000)
MAX_HALF_WIDTH = 0.03


def _session(count: int, c: int, rho: float, seed: int
             ) -> tuple[list[str], Iterator[SessionRecord]]:
    """A Poisson session of ``count`` RPCs at utilisation ``rho`` of ``c`` servers."""
    params = POISSON.params({"count": str(count), "rate": str(rho * c * MU),
                             "service_ms": str(SERVICE_MS), "vms": "1000"})
    return POISSON.vms(params), POISSON.records(params, seed)


def _replay_waits(spec: str, vms: list[str], records: Iterator[SessionRecord]) -> list[int]:
    waits = QueueWaits()
    outcome = run(parse_spec(spec), vms, records, load_profile("zero"),
                  observe=lambda timeline: [waits])
    assert outcome.summary["counts"] == {}  # no finding: no deadlock, no timeout
    return waits.waits()


def _spec(policy: str, c: int) -> str:
    return f"{policy}:workers={c},prio_workers=0,wakeup=fifo"


@pytest.mark.parametrize("c", [1, 2, 5])
@pytest.mark.parametrize("policy", ["mainloop", "two-stage", "pool", "per-vm-thread"])
def test_queue_waits_equal_the_fcfs_recursion_to_the_ns(policy: str, c: int) -> None:
    vms, records = _session(20_000, c, 0.8, seed=c)
    session = list(records)
    arrivals, services = commands_and_services(session)
    expected = fcfs_waits(arrivals, services, c)
    # a real queue forms (Erlang C: 80 %, 71 %, 55 % of RPCs wait for c = 1, 2, 5)
    assert sum(1 for w in expected if w > 0) > len(expected) // 2
    got = _replay_waits(_spec(policy, c), vms, iter(session))
    assert len(got) == len(expected) == 20_000
    mismatches = [(i, g, e) for i, (g, e) in enumerate(zip(got, expected, strict=True))
                  if g != e]
    assert mismatches[:5] == []


def _smallest_size(c: int, rho: float, seed: int, target: float) -> int:
    """The smallest of :data:`SIZES` whose batch-means half-width is ≤ 3 % of ``target``.

    Found with the FCFS recursion over the session's own times (which the replay matches
    to the ns, see above), reading the session only as far as needed: the first n RPCs of
    a longer Poisson session are the n-RPC session, and their waits ignore later ones.
    """
    _, records = _session(SIZES[-1], c, rho, seed)
    queue = Fcfs(c)
    arrivals: list[int] = []
    services: list[int] = []
    unanswered: dict[object, int] = {}
    waits: list[int] = []
    sizes = iter(SIZES)
    n = next(sizes)
    for rec in records:
        if rec["kind"] == "command":
            unanswered[rec["id"]] = len(arrivals)
            arrivals.append(rec["t_ns"])
            services.append(-1)
            continue
        i = unanswered.pop(rec["id"])
        services[i] = rec["t_ns"] - arrivals[i]
        # RPCs whose service is known, in order, enter the recursion
        while len(waits) < len(arrivals) and services[len(waits)] >= 0:
            waits.append(queue.wait(arrivals[len(waits)], services[len(waits)]))
        if len(waits) >= n:
            if batch_means(waits[:n])[1] <= MAX_HALF_WIDTH * target:
                return n
            n = next(sizes, 0)
            if not n:
                break
    raise AssertionError(f"c={c} rho={rho}: no size up to {SIZES[-1]} reaches ±3 %")


@pytest.mark.slow
@pytest.mark.parametrize(("c", "rho"), [(1, 0.5), (1, 0.8), (2, 0.5), (2, 0.8), (5, 0.5),
                                        (5, 0.8)])
def test_mean_queue_wait_agrees_with_erlang_c(c: int, rho: float) -> None:
    seed = 1000 + c * 10 + round(rho * 10)
    erlang = erlang_c_wait(rho * c * MU, MU, c) * S  # in ns
    n = _smallest_size(c, rho, seed, erlang)
    vms, records = _session(n, c, rho, seed)
    waits = _replay_waits(_spec("per-vm-thread", c), vms, records)
    assert len(waits) == n
    mean, half = batch_means([float(w) for w in waits])
    assert half <= MAX_HALF_WIDTH * erlang
    assert mean - half <= erlang <= mean + half
