"""Engine speed on the ``fleet`` workload, against an idiomatic SimPy model of it.

The fleet session (200 VMs, 200,000 QMP messages by default) is generated in-process
once per worker process, so JSON decoding is excluded. Timed: one replay per policy with
its records discarded (``observe=None``, the engine's fastest mode), kept as record chunks
only (``records``, what DESIGN §10's "timeline kept" measures) and kept with the metrics
collector too (``kept``, what ``qmpreplay replay`` does), and the SimPy model
(``simpy_fleet.py``, per-vm-thread semantics).

Each is timed on the workload already read (``Workload.read_all`` before the clock starts:
the engine alone, the goals' measure) and, suffixed ``from-records``, on the session's
records, building the workload as it goes (the builder is shared code: both models call
it). Prints messages/s and the ratio of each to SimPy's messages/s on the same input
(goals, engine alone: ≥ 15× discarded, ≥ 10× with the timeline kept).

    python benchmarks/bench_replay.py --fast
    python benchmarks/bench_replay.py -p 1 -n 1 -w 0 -l 1   # one timing each
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path

import pyperf

import replay.engine
from analysis.collector import Collector
from replay.policy import parse_spec
from replay.profile import load_profile
from replay.run import Consumer, run
from replay.scenarios import SCENARIOS
from replay.workload import Workload
from tracer.session import Record as SessionRecord
from tracer.timeline import Timeline

sys.path.insert(0, str(Path(__file__).parent))
import simpy_fleet  # noqa: E402

VMS = 200
MESSAGES = 200_000
POLICIES = ("mainloop", "two-stage", "pool", "per-vm-thread")


@cache
def fleet() -> tuple[list[str], list[SessionRecord]]:
    scenario = SCENARIOS["fleet"]
    params = scenario.params({"vms": str(VMS), "messages": str(MESSAGES)})
    return scenario.vms(params), list(scenario.records(params, 0))


def _store() -> Consumer:
    """Keeps every chunk of records as handed out."""
    chunks: list[bytes] = []
    return chunks.append


def _records(timeline: Timeline) -> list[Consumer]:
    return [_store()]


def _keep(timeline: Timeline) -> list[Consumer]:
    return [Collector(timeline), _store()]


#: How each mode observes a run: records discarded, kept as a list, kept with metrics.
MODES: dict[str, Callable[[Timeline], Sequence[Consumer]] | None] = {
    "discarded": None, "records": _records, "kept": _keep}


def _input(read: bool) -> Iterator[SessionRecord] | Workload:
    """The fleet's records, or its workload already read (a replay changes its items, so
    each replay gets a fresh one)."""
    vms, records = fleet()
    if not read:
        return iter(records)
    workload = Workload(iter(records), vms, load_profile("default"))
    workload.read_all()
    return workload


def _timer(simulate: Callable[[Iterator[SessionRecord] | Workload], object],
           read: bool) -> Callable[[int], float]:
    def bench(loops: int) -> float:
        total = 0.0
        for _ in range(loops):
            source = _input(read)
            t0 = time.perf_counter()
            simulate(source)
            total += time.perf_counter() - t0
        return total

    return bench


def time_replay(policy: str, mode: str, read: bool) -> Callable[[int], float]:
    spec, profile, observe = parse_spec(policy), load_profile("default"), MODES[mode]
    return _timer(lambda source: run(spec, fleet()[0], source, profile, observe=observe), read)


def time_simpy(read: bool) -> Callable[[int], float]:
    return _timer(lambda source: simpy_fleet.simulate(fleet()[0], source), read)


def main() -> None:
    runner = pyperf.Runner()
    runner.metadata["description"] = f"fleet replay, {VMS} VMs, {MESSAGES} messages"
    results = {}
    for suffix, read in (("", True), ("-from-records", False)):
        name = f"simpy-fleet{suffix}"
        results[name] = runner.bench_time_func(name, time_simpy(read))
        for policy in POLICIES:
            for mode in MODES:
                name = f"replay-{policy}-{mode}{suffix}"
                results[name] = runner.bench_time_func(name, time_replay(policy, mode, read))
    if any(b is None for b in results.values()):
        return  # a worker process: the parent prints the summary
    messages = len(fleet()[1])
    compiled = not replay.engine.__file__.endswith(".py")
    print(f"\n{messages} messages; replay modules "
          f"{'compiled with mypyc' if compiled else 'plain Python'}")
    for name, bench in results.items():
        simpy = results["simpy-fleet-from-records" if name.endswith("-from-records")
                        else "simpy-fleet"]
        rate = messages / bench.mean()
        ratio = simpy.mean() / bench.mean()
        print(f"{name:44} {rate:12,.0f} messages/s  {ratio:6.2f}x SimPy")


if __name__ == "__main__":
    main()
