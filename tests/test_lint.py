"""The code stays ruff- and mypy-clean (the checks the project holds itself to)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREES = ["tracer", "replay", "analysis", "benchmarks", "tests", "setup.py"]


@pytest.mark.parametrize("tool", ["ruff", "mypy"])
def test_clean(tool: str) -> None:
    if shutil.which(tool) is None and not os.environ.get("CI"):
        pytest.skip(f"{tool} is not installed (pip install -e '.[test]')")
    args = ["check", *TREES] if tool == "ruff" else TREES
    result = subprocess.run([sys.executable, "-m", tool, *args], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
