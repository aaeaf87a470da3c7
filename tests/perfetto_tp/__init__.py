"""Perfetto's real trace processor (WASM, under Node) for tests.

The assets come from ``.ci/install-trace-processor.sh DIR``; tests find them through
``QMPREPLAY_TP_DIR`` (default ``~/.cache/qmpreplay/trace-processor``). Without them a test
is skipped, except under CI (env ``CI`` set), where it fails: CI must load traces in TP.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

DRIVER = Path(__file__).with_name("tp.mjs")
INSTALLER = ".ci/install-trace-processor.sh"
_ASSETS = ("engine.mjs", "engine_bundle.node.js", "trace_processor.wasm")


def assets_dir() -> Path:
    return Path(os.environ.get("QMPREPLAY_TP_DIR",
                               Path.home() / ".cache" / "qmpreplay" / "trace-processor"))


def require_trace_processor() -> Path:
    """The assets folder, or skip (fail under CI) with how to install it."""
    folder = assets_dir()
    missing = [name for name in _ASSETS if not (folder / name).is_file()]
    problem = None
    if missing:
        problem = f"trace processor not installed in {folder}: run {INSTALLER} {folder}"
    elif shutil.which("node") is None:
        problem = "node (>= 20) not found: it runs the trace processor"
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    return folder


Rows = list[dict[str, Any]]


def query_traces(jobs: list[tuple[str | os.PathLike[str], list[str]]]) -> list[list[Rows]]:
    """Load each trace in turn in ONE Node process and run its queries.

    Returns, per trace, one list of row dicts per query.
    """
    assets = require_trace_processor()
    payload = [{"trace": str(trace), "queries": sqls} for trace, sqls in jobs]
    proc = subprocess.run(
        ["node", str(DRIVER), str(assets)],
        input=json.dumps(payload), capture_output=True, text=True, timeout=600, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"trace processor failed: {proc.stderr.strip()[-2000:]}")
    results: list[list[Rows]] = json.loads(proc.stdout)["results"]
    return results


class TraceProcessor:
    """One trace, loaded in one Node process per :meth:`query_many` call."""

    def __init__(self, trace_path: str | os.PathLike[str]) -> None:
        self.trace_path = Path(trace_path)

    def query_many(self, sqls: list[str]) -> list[Rows]:
        """Run the queries against the trace; one list of row dicts per query."""
        return query_traces([(self.trace_path, sqls)])[0]
