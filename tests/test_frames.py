"""Frames from hand-built timelines (tests/timelines.py) and from a real run directory."""

from __future__ import annotations

from pathlib import Path

import orjson
import pandas as pd
import pytest
from conftest import RunCli
from timelines import (
    E_DEVDEL,
    E_NIC,
    E_RESET,
    E_RTC,
    E_STOP,
    E_VSERPORT,
    POOL_SPEC,
    R_DETACH,
    R_STATUS,
    R_SUSPEND,
    mainloop_timeline,
    pool_timeline,
)

from analysis.frames import build_frames, load_frames
from analysis.metrics import policy_metrics


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A replay of the default session under the four policies."""
    from replay.cli_replay import parse_specs, replay_session
    from tracer.defaults import default_session

    out = tmp_path_factory.mktemp("run")
    replay_session(default_session(), parse_specs(["mainloop", "two-stage", "pool",
                                                   "per-vm-thread"]), out=out)
    return out


def test_events_frame_columns_and_values() -> None:
    frames = build_frames([pool_timeline(), mainloop_timeline()])
    ev = frames.of("mainloop").events
    assert list(ev["name"]) == ["STOP", "NIC_RX_FILTER_CHANGED", "RESET", "DEVICE_DELETED",
                                "VSERPORT_CHANGE", "RTC_CHANGE"]
    reset = ev.loc[E_RESET]
    assert (reset["start_ns"], reset["thread"]) == (3_000, "mainloop")  # first stage
    vserport = ev.loc[E_VSERPORT]
    assert vserport["dropped"] and vserport["drop_reason"] == "job-timeout"
    assert pd.isna(ev.loc[E_RTC, "start_ns"])  # never started
    pool = frames.of(POOL_SPEC).events
    assert pool.loc[E_STOP, "start_ns"] == 1_200 and pool.loc[E_NIC, "thread"] == "event-worker-0"
    assert pool.loc[E_DEVDEL, "vm"] == "vm-b"


def test_handlers_rpcs_locks_queues() -> None:
    frames = build_frames([pool_timeline(), mainloop_timeline()]).of("mainloop")
    stages = frames.handlers[frames.handlers["event"] == E_RESET]
    assert stages[["thread", "stage", "begin_ns", "end_ns"]].values.tolist() == [
        ["mainloop", 0, 3_000, 3_040], ["global-worker", 1, 3_050, 3_180]]
    rpcs = frames.rpcs.set_index("id")
    assert rpcs.loc[R_SUSPEND, "start_ns"] == 150 and rpcs.loc[R_SUSPEND, "end_ns"] == 2_220
    assert rpcs.loc[R_DETACH, "job_begin_ns"] == 4_070
    assert rpcs.loc[R_DETACH, "thread"] == "rpc-worker-1"
    assert pd.isna(rpcs.loc[R_STATUS, "end_ns"])  # QEMU never answered
    gw_wait = frames.locks[(frames.locks["thread"] == "global-worker")
                           & (frames.locks["lock"] == "mutex") & (frames.locks["wait_ns"] > 0)]
    assert gw_wait[["wait_start_ns", "acquired_ns", "released_ns"]].values.tolist()[0] == [
        2_060, 2_210, 2_240]
    locks = frames.locks
    held = locks[(locks["lock"] == "job") & (locks["thread"] == "rpc-worker-0")]
    assert held["released_ns"].tolist()[-1] == 60_000  # still held at the end of the run
    q = frames.queues
    assert q["depth"].max() == 1 and q.loc[q["depth"].idxmax(), "bytes"] == 200


def test_frames_agree_with_the_collector(run_dir: Path) -> None:
    """The frames recompute the replay's own results (a second, independent path)."""
    results = orjson.loads((run_dir / "results.json").read_bytes())
    frames = load_frames(run_dir)
    assert frames.specs == [p["spec"] for p in results["policies"]]
    for p in results["policies"]:
        m = policy_metrics(frames, p["spec"])
        for q in ("p50", "p90", "p99", "max"):
            assert m[f"event_{q}_ms"] == p["event_latency_ms"][q]
        for q in ("p50", "p99", "max"):
            assert m[f"rpc_{q}_ms"] == p["rpc_latency_ms"][q]
        assert m["start_p50_ms"] == p["event_start_latency_ms"]["p50"]
        assert m["start_p99_ms"] == p["event_start_latency_ms"]["p99"]
        assert m["job_wait_p99_ms"] == p["job_wait_ms"]["p99"]
        for key in ("events_handled", "events_dropped", "events_pending", "rpcs_completed",
                    "rpc_errors", "rpcs_unfinished", "job_timeouts", "peak_queue_depth",
                    "peak_queued_bytes"):
            assert m[key] == p[key], key
        assert m["reader_stalled_ms"] == pytest.approx(p["reader_stalled_ns"] / 1e6)
        assert m["read_paused_ms"] == pytest.approx(p["read_paused_ns"] / 1e6)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_writes_one_file_per_frame(run_dir: Path, tmp_path: Path, run_cli: RunCli,
                                          fmt: str) -> None:
    code, out, err = run_cli("export", run_dir, "--format", fmt, "-o", tmp_path / fmt)
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / fmt).iterdir())
    assert names == sorted(f"{n}.{fmt}" for n in ("events", "handlers", "rpcs", "locks",
                                                  "queues", "pauses", "findings"))
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    events = read(tmp_path / fmt / f"events.{fmt}")
    assert len(events) == sum(p["events"] for p in orjson.loads(
        (run_dir / "results.json").read_bytes())["policies"])


def test_export_of_a_missing_run_dir_is_one_error_line(tmp_path: Path, run_cli: RunCli) -> None:
    code, _, err = run_cli("export", tmp_path / "nope")
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
