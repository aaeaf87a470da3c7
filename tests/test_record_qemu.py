"""``record qemu`` end to end with real QEMU (TCG): event families, cleanup, errors."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from tracer.session import read_session, validate

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                reason="qemu-system-x86_64 (Debian qemu-system-x86) not installed")

FULL_EVENTS = {
    "STOP", "RESUME", "RESET", "DEVICE_DELETED", "DEVICE_TRAY_MOVED", "JOB_STATUS_CHANGE",
    "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_PENDING",
    "MIGRATION", "MIGRATION_PASS", "GUEST_PANICKED", "WATCHDOG", "BLOCK_IO_ERROR", "RTC_CHANGE",
    "SUSPEND", "WAKEUP", "POWERDOWN", "SHUTDOWN", "GUEST_CRASHLOADED",
}
RECORD_CLI = ("from replay.cli import app; from tracer import cli_record; "
              "cli_record.register(app); app()")
SUMMARY = re.compile(r"recorded (\d+) messages \((\d+) events of (\d+) types\) from (\d+) VMs to ")


def record(tmp: Path, *args: str,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    scratch = tmp / "scratch"
    scratch.mkdir(exist_ok=True)
    full_env = {**os.environ, "TMPDIR": str(scratch), **(env or {})}
    return subprocess.run([sys.executable, "-c", RECORD_CLI, "record", "qemu", *args], env=full_env,
                          capture_output=True, text=True, timeout=300)


def qemus_under(path: Path) -> list[str]:
    """Command lines of running QEMUs that use files under ``path``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "qemu-system" in cmdline and str(path) in cmdline:
            found.append(cmdline)
    return found


def event_counts(session: Path) -> dict[str, Counter[str]]:
    _, records = read_session(session)
    per_vm: dict[str, Counter[str]] = {}
    for r in records:
        if r["kind"] == "event":
            per_vm.setdefault(r["vm"], Counter())[r["name"]] += 1
    return per_vm


def check_summary(stdout: str, session: Path, vms: int) -> None:
    match = SUMMARY.search(stdout)
    assert match, stdout
    _, records = read_session(session)
    kinds = Counter(r["kind"] for r in records)
    events = sum(event_counts(session).values(), Counter())
    messages = sum(n for k, n in kinds.items() if k not in ("connect", "disconnect", "eof"))
    assert tuple(map(int, match.groups())) == (messages, sum(events.values()), len(events), vms)


def test_full_workload_provokes_every_event_family_and_leaves_nothing_behind(
        tmp_path: Path) -> None:
    session = tmp_path / "full.qmp.jsonl"
    done = record(tmp_path, "-o", str(session), "--workload", "full", "--vms", "2")
    assert done.returncode == 0, done.stderr
    good, problems = validate(session)
    assert problems == [] and good > 200
    header, _ = read_session(session)
    assert header.vms == ["vm0", "vm1", "vm0-dst"] and header.source == "proxy"
    per_vm = event_counts(session)
    assert set(per_vm["vm0"]) | set(per_vm["vm0-dst"]) >= FULL_EVENTS
    assert per_vm["vm0"]["MIGRATION_PASS"] >= 1 and per_vm["vm0-dst"]["MIGRATION"] >= 2
    assert per_vm["vm0-dst"]["RESUME"] >= 1
    assert {"DEVICE_DELETED", "DEVICE_TRAY_MOVED", "BLOCK_JOB_READY"} <= set(per_vm["vm1"])
    check_summary(done.stdout, session, 3)
    assert os.listdir(tmp_path / "scratch") == []
    assert qemus_under(tmp_path) == []


def test_basic_records_each_vm_from_greeting_to_eof(tmp_path: Path) -> None:
    session = tmp_path / "basic.qmp.jsonl"
    done = record(tmp_path, "-o", str(session), "--vms", "2")
    assert done.returncode == 0, done.stderr
    assert validate(session)[1] == []
    _, records = read_session(session)
    kinds: dict[str, list[str]] = {}
    for r in records:
        kinds.setdefault(r["vm"], []).append(r["kind"])
    for vm in ("vm0", "vm1"):
        assert kinds[vm][:2] == ["connect", "greeting"]
        assert kinds[vm][-2:] == ["eof", "disconnect"]
    check_summary(done.stdout, session, 2)
    assert os.listdir(tmp_path / "scratch") == []


def test_sigint_stops_cleanly_and_keeps_what_was_recorded(tmp_path: Path) -> None:
    session = tmp_path / "cut.qmp.jsonl"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", RECORD_CLI, "record", "qemu", "-o", str(session),
                             "--workload", "full"], env={**os.environ, "TMPDIR": str(scratch)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while b"GUEST_PANICKED" not in (session.read_bytes() if session.exists() else b""):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err
    good, problems = validate(session)
    assert problems == [] and good > 50
    assert os.listdir(scratch) == []
    assert qemus_under(tmp_path) == []


def test_missing_qemu_is_one_error_line_naming_the_package(tmp_path: Path) -> None:
    done = record(tmp_path, "-o", str(tmp_path / "x.jsonl"), env={"PATH": str(tmp_path)})
    assert done.returncode == 2
    assert done.stderr == ("error: qemu-system-x86_64 not found: install the Debian package "
                           "qemu-system-x86\n")


def test_shipped_boot_sector_is_the_assembled_source(tmp_path: Path) -> None:
    shipped = resources.files("tracer").joinpath("guest/boot.bin").read_bytes()
    assert len(shipped) == 512 and shipped[510:] == b"\x55\xaa"
    nasm = shutil.which("nasm")
    if nasm is None:
        pytest.skip("nasm not installed: cannot re-assemble guest/boot.asm")
    source = resources.files("tracer").joinpath("guest/boot.asm")
    out = tmp_path / "boot.bin"
    subprocess.run([nasm, "-f", "bin", "-o", str(out), str(source)], check=True)
    assert out.read_bytes() == shipped
