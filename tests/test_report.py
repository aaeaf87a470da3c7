"""The diff report: determinism, 80 columns, baseline, errors, and the HTML page in a real
headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import RunCli


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hol-blocking under the four policies: large latency gaps, findings-free baseline."""
    from replay.cli_replay import parse_specs, replay_session
    from replay.scenarios import SCENARIOS

    out = tmp_path_factory.mktemp("hol")
    session = out / "hol.qmp.jsonl"
    scenario = SCENARIOS["hol-blocking"]
    scenario.write(session, scenario.params({}), 0)
    replay_session(session, parse_specs(["mainloop", "two-stage", "pool:max_queue=8",
                                         "per-vm-thread"]), out=out / "run")
    return out / "run"


@pytest.mark.parametrize("fmt", ["text", "md", "html"])
def test_same_run_dir_gives_byte_identical_reports(run_dir: Path, run_cli: RunCli,
                                                   tmp_path: Path, fmt: str) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for path in (a, b):
        code, _, err = run_cli("report", run_dir, "--format", fmt, "-o", path, "-q")
        assert code == 0, err
    assert a.read_bytes() == b.read_bytes()
    assert len(a.read_bytes()) > 1000


def test_text_report_fits_80_columns_and_marks_the_best(run_dir: Path, run_cli: RunCli) -> None:
    code, out, err = run_cli("report", run_dir)
    assert code == 0, err
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    p99 = next(line for line in lines if line.startswith("event latency p99 ms"))
    cells = p99.split()[4:]
    # mainloop stalls for ~1.9 s; per-vm-thread is fastest here and is the one marked.
    assert not cells[0].endswith("*") and cells[-1].endswith("*")
    words = " ".join(out.split())  # summaries are wrapped at 80 columns
    assert "pool:max_queue=8: p99 event latency" in words
    assert "bounds memory at 8 events per VM" in words


def test_baseline_changes_the_ratios(run_dir: Path, run_cli: RunCli) -> None:
    _, first, _ = run_cli("report", run_dir, "-f", "md")
    code, other, err = run_cli("report", run_dir, "-f", "md", "--baseline", "per-vm-thread")
    assert code == 0, err
    assert "Baseline: `per-vm-thread`" in other and first != other
    row = next(line for line in other.splitlines() if line.startswith("| event latency p99"))
    assert "(×" in row.split("|")[2]  # mainloop is now compared with per-vm-thread


@pytest.mark.parametrize("args", [("--baseline", "nope"), ("--lock-sort", "nope")])
def test_bad_options_are_one_error_line(run_dir: Path, run_cli: RunCli,
                                        args: tuple[str, str]) -> None:
    code, _, err = run_cli("report", run_dir, *args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_not_a_run_dir_is_one_error_line(tmp_path: Path, run_cli: RunCli) -> None:
    code, _, err = run_cli("report", tmp_path)
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_html_report_in_headless_chromium(run_dir: Path, run_cli: RunCli,
                                          tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required when CI is set")
        pytest.skip("chromium not installed (apt-get install chromium)")
    page = tmp_path / "report.html"
    code, _, err = run_cli("report", run_dir, "-f", "html", "-o", page, "-q")
    assert code == 0, err
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120, check=True)
    console_errors = [line for line in dom.stderr.splitlines()
                      if "CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)]
    assert not console_errors, console_errors
    svgs = re.findall(r"<svg\b.*?</svg>", dom.stdout, flags=re.S)
    assert len(svgs) == 4 and all("<path" in svg for svg in svgs)
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, table shading and plot lines
