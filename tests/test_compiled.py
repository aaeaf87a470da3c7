"""The modules compiled at install time (``[tool.qmpreplay] compiled``, mypyc) give the same
outputs as their Python source: a stale or miscompiled build cannot go unnoticed.

One replay of a real scenario under every built-in policy, ``--out`` kept, runs twice in
fresh processes: as installed, and with the compiled modules imported from their ``.py``
files. The run directories (results without wall-clock timings, Parquet files, tables,
trace) must be byte-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from replay.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
COMPILED = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["qmpreplay"]["compiled"]
NAMES = [m.removesuffix(".py").replace("/", ".") for m in COMPILED]

#: Runs the CLI; with module names as first argument, those are imported from their sources.
LAUNCH = """
import importlib.abc, importlib.util, sys
from pathlib import Path

class Sources(importlib.abc.MetaPathFinder):
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path, target=None):
        if name not in self.names:
            return None
        return importlib.util.spec_from_file_location(
            name, Path(path[0]) / (name.rpartition(".")[2] + ".py"))

names = sys.argv.pop(1)
if names:
    sys.meta_path.insert(0, Sources(set(names.split(","))))
import importlib
print(",".join(n for n in sys.argv.pop(1).split(",")
               if not importlib.import_module(n).__file__.endswith(".py")), file=sys.stderr)
from replay.cli import main
sys.argv[0] = "qmpreplay"
main()
"""


def replay(session: Path, out: Path, sources: bool) -> str:
    """Replay ``session`` into ``out``; return the modules that ran compiled."""
    specs = ["-p", "mainloop", "-p", "two-stage", "-p", "pool:max_queue=8", "-p", "per-vm-thread"]
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH, ",".join(NAMES) if sources else "", ",".join(NAMES),
         "replay", str(session), *specs, "--out", str(out), "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    return done.stderr.strip().splitlines()[0] if done.stderr.strip() else ""


def test_compiled_modules_give_the_outputs_of_their_sources(tmp_path: Path) -> None:
    scenario = SCENARIOS["fleet"]
    session = tmp_path / "fleet.qmp.jsonl"
    scenario.write(session, scenario.params({"vms": "20", "messages": "6000"}), seed=0)
    built = replay(session, tmp_path / "built", sources=False)
    if os.environ.get("CI"):
        assert built.split(",") == NAMES, "CI installs the package with its modules compiled"
    elif not built:
        pytest.skip("nothing is compiled here (no C compiler at install time)")
    assert replay(session, tmp_path / "source", sources=True) == ""
    files = sorted(p.name for p in (tmp_path / "built").iterdir())
    assert "replay.pftrace" in files and "timeline.parquet" in files
    assert files == sorted(p.name for p in (tmp_path / "source").iterdir())
    for name in files:
        built_bytes = (tmp_path / "built" / name).read_bytes()
        source_bytes = (tmp_path / "source" / name).read_bytes()
        if name == "results.json":
            built_bytes, source_bytes = (_without_timing(b) for b in (built_bytes, source_bytes))
        assert built_bytes == source_bytes, f"{name} differs: rebuild (pip install -e .)"


def _without_timing(data: bytes) -> bytes:
    results = json.loads(data)
    results.pop("timing", None)
    for policy in results["policies"]:
        policy.pop("timing", None)
    return json.dumps(results, sort_keys=True).encode()
