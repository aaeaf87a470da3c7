"""Sweeps: the grid, Pareto front, order independence and the CLI."""

from __future__ import annotations

from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import RunCli

from analysis.sweep import SweepError, combinations, parse_grid, points, run_sweep


def test_grid_and_labels() -> None:
    grid = parse_grid(["event_workers=1,2", "max_queue=8,64"])
    assert combinations("pool", grid) == [
        "pool:event_workers=1,max_queue=8", "pool:event_workers=1,max_queue=64",
        "pool:event_workers=2,max_queue=8", "pool:event_workers=2,max_queue=64"]
    assert combinations("pool:wakeup=fifo", parse_grid(["max_queue=8"])) == [
        "pool:wakeup=fifo,max_queue=8"]
    for bad in (["max_queue"], ["=1"], ["max_queue="], ["a=1", "a=2"]):
        with pytest.raises(SweepError):
            parse_grid(bad)


def _result(p99: float, depth: int) -> dict[str, Any]:
    return {"event_latency_ms": {"p99": p99}, "peak_queue_depth": depth, "deadlocks": 0,
            "job_timeouts": 0, "events_handled": 1, "events": 1}


def test_pareto_front() -> None:
    pts = points(["a", "b", "c", "d"], [_result(1.0, 100), _result(5.0, 10), _result(5.0, 100),
                                        _result(1.0, 100)])
    assert [p.pareto for p in pts] == [True, True, False, True]


class ReversedExecutor(Executor):
    """Completes submissions in reverse order: results must still come back in grid order."""

    def __init__(self) -> None:
        self.pending: list[tuple[Future[Any], Any, tuple[Any, ...]]] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.pending.append((future, fn, args))
        if len(self.pending) == 3:
            for f, g, a in reversed(self.pending):
                f.set_result(g(*a))
        return future


def test_results_come_back_in_grid_order() -> None:
    done: list[str] = []
    out = run_sweep(["x", "y", "z"], lambda label: {"label": label}, ReversedExecutor(),
                    on_done=done.append)
    assert [r["label"] for r in out] == ["x", "y", "z"]
    assert sorted(done) == ["x", "y", "z"]


def test_sweep_cli_is_deterministic_and_plots(run_cli: RunCli, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from replay import cli_analysis

    monkeypatch.setattr(cli_analysis, "_executor", lambda jobs: ThreadPoolExecutor(jobs))
    args = ["sweep", "--policy", "pool", "--param", "event_workers=1,4", "--param",
            "max_queue=2,64", "--jobs", "2", "--json"]
    code, out, err = run_cli(*args, "-o", tmp_path / "a.svg")
    assert code == 0, err
    again = run_cli(*args, "-o", tmp_path / "b.svg")
    assert again[1] == out
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()
    assert (tmp_path / "a.svg").read_text().startswith("<svg")
    doc = orjson.loads(out)
    assert [p["spec"] for p in doc["points"]] == [
        "pool:event_workers=1,max_queue=2", "pool:event_workers=1,max_queue=64",
        "pool:event_workers=4,max_queue=2", "pool:event_workers=4,max_queue=64"]
    assert any(p["pareto"] for p in doc["points"])
    assert all(p["peak_queue_depth"] <= 64 for p in doc["points"])


def test_sweep_in_a_process_pool(run_cli: RunCli) -> None:
    code, out, err = run_cli("sweep", "--param", "max_queue=4,8", "--jobs", "2", "--json")
    assert code == 0, err
    assert [p["spec"] for p in orjson.loads(out)["points"]] == ["pool:max_queue=4",
                                                                "pool:max_queue=8"]


@pytest.mark.parametrize("args", [("--param", "max_queue"), ("--param", "nope=1"),
                                  ("/no/such/session",)])
def test_bad_sweeps_are_one_error_line(run_cli: RunCli, args: tuple[str, ...]) -> None:
    code, _, err = run_cli("sweep", *args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
