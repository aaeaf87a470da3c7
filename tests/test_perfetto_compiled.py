"""The trace writer as built (compiled with mypyc where a compiler is available) writes the
same bytes as its Python source, so a stale or miscompiled build cannot go unnoticed."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
import timelines as fx

import tracer.perfetto
from replay.policy import parse_spec
from replay.profile import load_profile
from replay.run import Consumer, run
from replay.scenarios import SCENARIOS
from tracer.timeline import Timeline, rows

SOURCE = Path(tracer.perfetto.__file__).with_name("perfetto.py")


def compiled() -> bool:
    return not tracer.perfetto.__file__.endswith(".py")


def source_module() -> ModuleType:
    """``tracer/perfetto.py`` run as plain Python, whatever the import system picks."""
    spec = importlib.util.spec_from_file_location("perfetto_source", SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fleet_runs() -> list[tuple[Timeline, list[int]]]:
    """A real replay of a small fleet under every built-in policy, records kept."""
    scenario = SCENARIOS["fleet"]
    params = scenario.params({"vms": "20", "messages": "4000"})
    header = scenario.header(params, 0)
    runs = []
    for spec in ("mainloop", "two-stage", "pool:max_queue=8", "per-vm-thread"):
        records: list[int] = []

        def keep(_timeline: Timeline, kept: list[int] = records) -> list[Consumer]:
            return [kept.extend]

        outcome = run(parse_spec(spec), header.vms, scenario.records(params, 0),
                      load_profile("default", header.cost_profile), seed=0, observe=keep)
        runs.append((outcome.timeline, records))
    return runs


def write(module: ModuleType, path: Path, runs: list[tuple[Timeline, list[int]]]) -> bytes:
    with module.TraceWriter(str(path)) as writer:
        for timeline, records in runs:
            policy = writer.begin_policy(timeline)
            for start in range(0, len(records), 6 * 1000):
                policy.feed(rows(records[start:start + 6 * 1000]))
            policy.end()
    return path.read_bytes()


def test_built_writer_writes_the_bytes_of_its_source(tmp_path: Path) -> None:
    if os.environ.get("CI"):
        assert compiled(), "CI installs the package with its mypyc-compiled trace writer"
    elif not compiled():
        pytest.skip("the trace writer is not compiled here (no C compiler at install time)")
    flat = [(tl, [v for record in tl.records for v in record]) for tl in fx.timelines()]
    for name, runs in (("fixture", flat), ("fleet", fleet_runs())):
        built = write(tracer.perfetto, tmp_path / f"{name}-built.pftrace", runs)
        source = write(source_module(), tmp_path / f"{name}-source.pftrace", runs)
        assert len(built) > 1000
        assert built == source, f"{name}: rebuild the writer (pip install -e .)"
