"""Traces of real replays in Perfetto's real trace processor: the default session and every
built-in scenario, four policies side by side, checked against the replay's own numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from perfetto_tp import query_traces, require_trace_processor
from test_perfetto import BAD_STATS, THREAD_SLICES

from replay.cli_replay import parse_specs, replay_session
from replay.scenarios import SCENARIOS
from tracer.defaults import default_session
from tracer.timeline import Kind
from tracer.trace_check import check_file

SPECS = ["mainloop", "two-stage", "pool:max_queue=8", "per-vm-thread"]
#: Every scenario, shrunk where its default shape is long (the trace checks do not need it).
SHAPES: dict[str, dict[str, str]] = {
    "hol-blocking": {"vms": "5", "duration_s": "3"},
    "event-flood": {"vms": "3", "events": "3000", "duration_s": "1"},
    "backpressure-deadlock": {},
    "rpc-storm": {"duration_s": "1"},
    "blockjob-sync-wait": {},
    "event-rpc-ordering": {"vms": "2", "duration_s": "1"},
    "destroy-under-flood": {"flood_per_s": "500"},
    "fleet": {"vms": "20", "duration_s": "2"},
    "poisson": {"count": "2000", "vms": "50"},
}

QUERIES = {
    "bad_stats": BAD_STATS,
    "unended": "SELECT count(*) AS n FROM slice WHERE dur < 0",
    "processes": "SELECT name FROM process WHERE pid >= 10000 ORDER BY pid",
    "slices": THREAD_SLICES,
    "depth_peaks": """
        SELECT p.name AS policy, max(c.value) AS peak
        FROM counter c JOIN process_counter_track t ON c.track_id = t.id
        JOIN process p USING (upid) WHERE t.name GLOB '* depth' GROUP BY p.name""",
    "flows": """
        SELECT p.name AS policy, count(*) AS n FROM flow f
        JOIN slice s ON f.slice_in = s.id JOIN thread_track tt ON s.track_id = tt.id
        JOIN thread USING (utid) JOIN process p USING (upid) GROUP BY p.name""",
    "findings": """
        SELECT p.name AS policy, s.ts, EXTRACT_ARG(s.arg_set_id, 'debug.kind') AS kind,
               EXTRACT_ARG(s.arg_set_id, 'debug.detail') AS detail
        FROM slice s JOIN process_track pt ON s.track_id = pt.id
        JOIN process p USING (upid) WHERE pt.name = 'findings' ORDER BY p.name, s.ts, s.id""",
}


@pytest.fixture(scope="module")
def replays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each session replayed into a run directory, all traces queried in one TP process."""
    require_trace_processor()
    folder = tmp_path_factory.mktemp("replays")
    sessions = {"default": default_session()}
    for name, shape in SHAPES.items():
        scenario = SCENARIOS[name]
        sessions[name] = folder / f"{name}.qmp.jsonl"
        scenario.write(sessions[name], scenario.params(shape), seed=0)
    runs: dict[str, dict[str, Any]] = {}
    for name, session in sessions.items():
        out = folder / name
        results = replay_session(Path(session), parse_specs(SPECS), out=out)
        runs[name] = {"results": results, "out": out}
    names = list(QUERIES)
    rows = query_traces([(run["out"] / "replay.pftrace", [QUERIES[n] for n in names])
                         for run in runs.values()])
    for run, trace_rows in zip(runs.values(), rows, strict=True):
        run.update(zip(names, trace_rows, strict=True))
    return runs


CASES = ["default", *SHAPES]


@pytest.mark.parametrize("name", CASES)
def test_loads_cleanly_with_one_process_per_policy(replays: dict[str, Any], name: str) -> None:
    run = replays[name]
    assert run["bad_stats"] == []
    assert run["unended"] == [{"n": 0}]
    assert [r["name"] for r in run["processes"]] == SPECS
    assert not [p for p in check_file(run["out"] / "replay.pftrace") if p.severity == "error"]


@pytest.mark.parametrize("name", CASES)
def test_slices_counters_flows_and_findings_match_the_replay(replays: dict[str, Any],
                                                              name: str) -> None:
    run = replays[name]
    records = pq.read_table(run["out"] / "timeline.parquet").to_pandas()
    peaks = {r["policy"]: r["peak"] for r in run["depth_peaks"]}
    flows = {r["policy"]: r["n"] for r in run["flows"]}
    for p, result in enumerate(run["results"]["policies"]):
        spec = result["spec"]
        rows = [r for r in run["slices"] if r["policy"] == spec]
        handled = {r["event"] for r in rows if r["name"].startswith("handle:") and r["handled"]}
        assert len(handled) == result["events_handled"]
        ended = [r for r in rows
                 if r["category"] == "rpc" and r["unfinished"] is None and r["cut"] is None]
        completed = {r["rpc"] for r in ended}
        assert len(completed) == len(ended) == result["rpcs_completed"]
        mine = records[records["policy"] == p]
        # Times are deltas on the sequence clock: each RPC slice must still span exactly its
        # RPC_START .. RPC_END, to the ns.
        start = mine[mine["kind"] == Kind.RPC_START].set_index("ref")["t_ns"]
        end = mine[mine["kind"] == Kind.RPC_END].set_index("ref")["t_ns"]
        spans = {(r["rpc"], r["ts"], r["ts"] + r["dur"]) for r in ended}
        assert spans == {(rpc, int(start[rpc]), int(end[rpc])) for rpc in completed}
        assert peaks.get(spec, 0) == result["peak_queue_depth"]
        with_handler = mine.loc[mine["kind"] == Kind.HANDLER_BEGIN, "ref"].nunique()
        started = (mine["kind"] == Kind.RPC_START).sum()
        assert flows.get(spec, 0) == with_handler + started
        traced = [(r["ts"], r["kind"], r["detail"]) for r in run["findings"]
                  if r["policy"] == spec]
        assert sorted(traced) == sorted((f["time_ns"], f["kind"], f["detail"])
                                        for f in result["findings"])


def test_the_scenarios_show_their_findings_in_the_trace(replays: dict[str, Any]) -> None:
    """The deadlocks of the two deadlock claims are on the findings track of their policy."""
    kinds = {(name, r["policy"], r["kind"]) for name in ("backpressure-deadlock",
                                                         "blockjob-sync-wait")
             for r in replays[name]["findings"]}
    assert ("backpressure-deadlock", "pool:max_queue=8", "deadlock") in kinds
    assert ("blockjob-sync-wait", "two-stage", "deadlock") in kinds
