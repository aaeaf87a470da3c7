"""The verdict table: each built-in scenario × policy judged from its replay results.

Pure functions of a policy's results (one entry of ``results.json`` ``policies``): the
expectation is the pass criterion of that scenario's claim, the observation is built from the
measured numbers and findings, and ``passed`` compares the two. Nothing here looks at
what a run happened to print before: thresholds come from the claims.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MS_PER_S = 1000.0
POLICIES = ("mainloop", "two-stage", "pool", "per-vm-thread")


@dataclass(frozen=True)
class Case:
    """What a verdict needs besides the results: the scenario's parameters and the
    policy's (``max_queue``, ``job_timeout`` in ns, ``prio_workers``, ...)."""

    scenario: str
    policy: str          # base name: mainloop, two-stage, pool, per-vm-thread
    label: str           # the spec as typed
    scenario_params: dict[str, Any]
    policy_params: dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    scenario: str
    policy: str
    expected: str
    observed: str
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.scenario, "policy": self.policy, "expected": self.expected,
                "observed": self.observed, "pass": self.passed}


Judge = Callable[[Case, dict[str, Any]], tuple[str, str, bool]]


def _ms(v: float | None) -> str:
    return "none" if v is None else f"{v:.3f} ms"


def _findings(r: dict[str, Any], kind: str, phase: str | None = None) -> list[dict[str, Any]]:
    return [f for f in r["findings"] if f["kind"] == kind
            and (phase is None or f.get("phase") == phase)]


def _hol(case: Case, r: dict[str, Any]) -> tuple[str, str, bool]:
    p99 = r["event_latency_ms"]["p99"]
    observed = f"p99 event latency {_ms(p99)}"
    if case.policy == "mainloop":
        return "p99 event latency >= 1 s", observed, p99 is not None and p99 >= MS_PER_S
    return "p99 event latency < 10 ms", observed, p99 is not None and p99 < 10.0


def _flood(case: Case, r: dict[str, Any]) -> tuple[str, str, bool]:
    peak = r["peak_queue_depth"]
    growth = len(_findings(r, "unbounded-growth"))
    observed = f"peak queue depth {peak}, {growth} unbounded-growth finding(s)"
    if case.policy == "two-stage":
        return ("unbounded-growth found and peak queue depth >= 50000", observed,
                growth > 0 and peak >= 50_000)
    if case.policy == "pool":
        bound = case.policy_params["max_queue"]
        return f"peak queue depth <= max_queue ({bound})", observed, peak <= bound
    return "peak queue depth <= 100", observed, peak <= 100


def _deadlocks(r: dict[str, Any]) -> tuple[int, int, list[float]]:
    """Closed and broken deadlock findings, and the seconds each broken one came after the
    first closed one."""
    closed = _findings(r, "deadlock", "closed")
    broken = _findings(r, "deadlock", "broken")
    first = min((f["time_ns"] for f in closed), default=0)
    return len(closed), len(broken), [(f["time_ns"] - first) / 1e9 for f in broken]


def _backpressure(case: Case, r: dict[str, Any]) -> tuple[str, str, bool]:
    closed, broken, _ = _deadlocks(r)
    latency = r["rpc_latency_ms"]["max"]
    observed = (f"{closed} deadlock(s), {broken} broken by a timeout; RPC latency "
                f"{_ms(latency)}")
    if case.policy == "pool":
        return ("deadlock found and broken by a timeout; the RPC's latency >= 30 s", observed,
                closed > 0 and broken > 0 and latency is not None and latency >= 30 * MS_PER_S)
    return ("no deadlock; the RPC's latency < 1 s", observed,
            closed == 0 and latency is not None and latency < MS_PER_S)


def _storm(case: Case, r: dict[str, Any]) -> tuple[str, str, bool]:
    starved = [f for f in _findings(r, "starvation")
               if f["detail"].endswith("waiter: event handler")]
    observed = f"{len(starved)} starvation finding(s) with an event-handler waiter"
    if case.policy in ("mainloop", "per-vm-thread"):
        return "starvation with an event-handler waiter", observed, len(starved) > 0
    return "no event-handler starvation", observed, not starved


def _blockjob(case: Case, r: dict[str, Any]) -> tuple[str, str, bool]:
    closed, broken, after = _deadlocks(r)
    latency = r["rpc_latency_ms"]["max"]
    timeout_ms = case.policy_params["job_timeout"] / 1e6
    observed = (f"{closed} deadlock(s), {broken} broken by a timeout "
                f"{', '.join(f'{a:.3f} s' for a in after) or '-'} after closing; "
                f"{r['job_timeouts']} job timeout(s); RPC latency {_ms(latency)}")
    if case.policy == "two-stage":
        # The timeout runs from the start of the RPC's wait: the RPC lasting job_timeout
        # shows the deadlock held until the timeout broke it.
        return (f"deadlock, broken after job_timeout ({timeout_ms / 1000:g} s), "
                "job timeouts >= 1", observed,
                closed > 0 and broken > 0 and latency is not None and latency >= timeout_ms
                and r["job_timeouts"] >= 1)
    return ("no deadlock; RPC latency < 100 ms", observed,
            closed == 0 and latency is not None and latency < 100.0)


def _ordering(case: Case, r: dict[str, Any]) -> tuple[str, str, bool]:
    n = r["ordering_violations"]
    observed = f"{n} ordering violation(s)"
    if case.policy == "mainloop":
        return "0 ordering violations", observed, n == 0
    if case.policy == "pool":
        return "ordering violations reported", observed, isinstance(n, int) and n >= 0
    return "ordering violations > 0", observed, n > 0


def _destroy(case: Case, r: dict[str, Any]) -> tuple[str, str, bool]:
    latency = r["priority_rpc_latency_ms"]["max"]
    hung = case.scenario_params["hung_rpcs"]
    if case.policy_params["prio_workers"] == 0:
        observed = f"destroy latency {_ms(latency)}"
        return ("destroy latency >= 20 s", observed,
                latency is not None and latency >= 20 * MS_PER_S)
    observed = f"destroy latency {_ms(latency)}; {r['rpc_errors']} RPC error(s)"
    return (f"destroy latency < 100 ms and the {hung} hung RPCs end with the EOF error",
            observed, latency is not None and latency < 100.0 and r["rpc_errors"] >= hung)


def _fleet(case: Case, r: dict[str, Any]) -> tuple[str, str, bool]:
    observed = (f"{r['deadlocks']} deadlock(s), {r['job_timeouts']} job timeout(s), "
                f"{r['events_handled']}/{r['events']} events handled")
    return ("no deadlock, no job timeout, every event handled", observed,
            r["deadlocks"] == 0 and r["job_timeouts"] == 0 and r["events_handled"] == r["events"])


#: The scenario rows, in table order.
JUDGES: dict[str, Judge] = {
    "hol-blocking": _hol,
    "event-flood": _flood,
    "backpressure-deadlock": _backpressure,
    "rpc-storm": _storm,
    "blockjob-sync-wait": _blockjob,
    "event-rpc-ordering": _ordering,
    "destroy-under-flood": _destroy,
    "fleet": _fleet,
}


def judge(case: Case, result: dict[str, Any]) -> Verdict:
    """The verdict of one scenario × policy from that policy's results."""
    expected, observed, passed = JUDGES[case.scenario](case, result)
    return Verdict(case.scenario, case.label, expected, observed, bool(passed))
