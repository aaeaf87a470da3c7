"""The scenario verdict table: every row passes on real replays; a failing row exits 1."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from conftest import RunCli

from analysis.verdicts import JUDGES, Case, judge
from replay import cli_analysis


def _results(**over: Any) -> dict[str, Any]:
    """A policy's results with nothing wrong, for judging by hand."""
    base: dict[str, Any] = {
        "event_latency_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 4.0},
        "rpc_latency_ms": {"p50": 1.0, "p90": 1.0, "p99": 1.0, "max": 1.0},
        "priority_rpc_latency_ms": {"p50": None, "p90": None, "p99": None, "max": None},
        "peak_queue_depth": 1, "findings": [], "deadlocks": 0, "job_timeouts": 0,
        "ordering_violations": 0, "rpc_errors": 0, "events": 10, "events_handled": 10,
    }
    return {**copy.deepcopy(base), **over}


def _case(scenario: str, policy: str, **policy_params: Any) -> Case:
    params = {"max_queue": 64, "job_timeout": 30_000_000_000, "prio_workers": 5,
              **policy_params}
    return Case(scenario, policy, policy, {"hung_rpcs": 8}, params)


def test_hol_blocking_thresholds_come_from_the_claim() -> None:
    slow = _results(event_latency_ms={"p50": 1.0, "p90": 1.0, "p99": 1000.0, "max": 1.0})
    assert judge(_case("hol-blocking", "mainloop"), slow).passed
    assert not judge(_case("hol-blocking", "pool"), slow).passed
    fast = _results(event_latency_ms={"p50": 1.0, "p90": 1.0, "p99": 9.99, "max": 1.0})
    assert judge(_case("hol-blocking", "pool"), fast).passed
    assert not judge(_case("hol-blocking", "mainloop"), fast).passed


def test_pool_flood_bound_is_the_spec_max_queue() -> None:
    assert judge(_case("event-flood", "pool", max_queue=8), _results(peak_queue_depth=8)).passed
    assert not judge(_case("event-flood", "pool", max_queue=8),
                     _results(peak_queue_depth=9)).passed


def test_starvation_counts_only_event_handler_waiters() -> None:
    rpc = {"kind": "starvation", "time_ns": 1, "vms": ["vm0"], "threads": ["t"],
           "detail": "overtaken 6 times; waiter: RPC"}
    handler = dict(rpc, detail="overtaken 6 times; waiter: event handler")
    assert not judge(_case("rpc-storm", "mainloop"), _results(findings=[rpc])).passed
    assert judge(_case("rpc-storm", "mainloop"), _results(findings=[handler])).passed
    assert not judge(_case("rpc-storm", "pool"), _results(findings=[handler])).passed


def test_destroy_needs_the_eof_errors_and_a_completed_destroy() -> None:
    fast = {"p50": 1.0, "p90": 1.0, "p99": 1.0, "max": 1.0}
    assert judge(_case("destroy-under-flood", "pool"),
                 _results(priority_rpc_latency_ms=fast, rpc_errors=8)).passed
    assert not judge(_case("destroy-under-flood", "pool"),
                     _results(priority_rpc_latency_ms=fast, rpc_errors=7)).passed
    assert not judge(_case("destroy-under-flood", "pool"), _results(rpc_errors=8)).passed
    assert not judge(_case("destroy-under-flood", "pool", prio_workers=0),
                     _results(priority_rpc_latency_ms=fast)).passed


def test_every_design_row_has_a_judge() -> None:
    assert list(JUDGES) == ["hol-blocking", "event-flood", "backpressure-deadlock", "rpc-storm",
                            "blockjob-sync-wait", "event-rpc-ordering", "destroy-under-flood",
                            "fleet"]
    assert cli_analysis.scenario_specs("backpressure-deadlock")[2] == "pool:max_queue=8"
    assert "pool:prio_workers=0" in cli_analysis.scenario_specs("destroy-under-flood")


@pytest.fixture(scope="module")
def table(run_cli: RunCli) -> dict[tuple[str, str], dict[str, Any]]:
    """The whole verdict table, replayed once (about a minute on two cores)."""
    code, out, err = run_cli("scenarios", "--json", "--jobs", "2")
    assert "Traceback" not in err
    rows = {(row["name"], row["policy"]): row for row in orjson.loads(out)["scenarios"]}
    return {**rows, ("", "exit"): {"code": code}}


ROWS = [(n, p) for n in JUDGES for p in cli_analysis.scenario_specs(n)]


@pytest.mark.slow
@pytest.mark.parametrize(("scenario", "policy"), ROWS, ids=[f"{n}-{p}" for n, p in ROWS])
def test_design_row_passes(table: dict[tuple[str, str], dict[str, Any]], scenario: str,
                           policy: str) -> None:
    row = table[(scenario, policy)]
    assert row["pass"], f"expected {row['expected']}; observed {row['observed']}"


@pytest.mark.slow
def test_whole_table_exits_0(table: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert table[("", "exit")]["code"] == 0


def test_a_broken_expectation_exits_1(run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Raise hol-blocking's mainloop bar far above any replay: the row fails, exit 1."""
    def impossible(case: Case, r: dict[str, Any]) -> tuple[str, str, bool]:
        return "p99 event latency >= 1 h", "measured", False

    monkeypatch.setitem(JUDGES, "hol-blocking", impossible)
    monkeypatch.setattr(cli_analysis, "_executor", _inline_executor)
    code, out, err = run_cli("scenarios", "--only", "hol-blocking", "--json")
    assert code == 1
    rows = orjson.loads(out)["scenarios"]
    assert [r["pass"] for r in rows] == [False] * 4
    assert "FAIL hol-blocking mainloop" in err


def _inline_executor(jobs: int) -> Any:
    """Run in this process, so the monkeypatched judge is the one used."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=1)


def test_unknown_scenario_is_one_error_line(run_cli: RunCli) -> None:
    code, _, err = run_cli("scenarios", "--only", "nope")
    assert code == 2 and err.startswith("error: unknown scenario") and err.count("\n") == 1
