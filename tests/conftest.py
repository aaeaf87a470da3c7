"""Shared test fixtures: the third-party corpora and the real ``qmpreplay`` command line."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

import replay.cli

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"

RunCli = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="session")
def corpora() -> Path:
    """The shared corpora folder (tests that need it skip when it is absent)."""
    if not CORPORA.is_dir():
        pytest.skip(f"corpora not found at {CORPORA}")
    return CORPORA


@pytest.fixture(scope="session")
def run_cli() -> RunCli:
    """Run ``qmpreplay ARGS...`` in-process; return (exit code, stdout, stderr).

    An exception escaping the CLI is rendered into stderr as a traceback, so tests that
    assert ``"Traceback" not in stderr`` catch it.
    """
    replay.cli._register()
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(replay.cli.app, [str(a) for a in args])
        stderr = result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            stderr += "".join(traceback.format_exception(result.exception))
        return result.exit_code, result.stdout, stderr

    return run


#: One message of a sample session: (t_ns, vm, dir, wire).
Message = tuple[int, str, str, bytes | str]

#: Two VMs talking QMP as QEMU 7.2 does: events before and after replies, ids of several
#: types, an error, commands without id, a non-UTF-8 line and a line that is not JSON.
SAMPLE: list[Message] = [
    (0, "vm-a", "recv", '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
                        '"package": "Debian"}, "capabilities": ["oob"]}}\r\n'),
    (100_000, "vm-a", "send", '{"execute":"qmp_capabilities","id":1}'),
    (440_000, "vm-a", "recv", '{"return": {}, "id": 1}\r\n'),
    (500_000, "vm-b", "send", '{"execute":"query-status"}\r\n'),
    (800_000, "vm-b", "recv", '{"return": {"status": "running", "running": true}}\r\n'),
    (1_000_000, "vm-a", "send", '{"execute":"stop","id":"libvirt-2"}\r\n'),
    (1_370_000, "vm-a", "recv", '{"timestamp": {"seconds": 1, "microseconds": 2}, '
                                '"event": "STOP"}\r\n'),
    (1_500_000, "vm-a", "recv", '{"return": {}, "id": "libvirt-2"}\r\n'),
    (2_000_000, "vm-a", "send", '{"execute":"system_reset","id":{"n":[1,null]}}\r\n'),
    (6_900_000, "vm-a", "recv", '{"timestamp": {"seconds": 1, "microseconds": 9}, '
                                '"event": "RESET", "data": {"guest": false}}\r\n'),
    (6_900_000, "vm-a", "recv", '{"return": {}, "id": {"n": [1, null]}}\r\n'),
    (9_000_000, "vm-a", "recv", '{"timestamp": {"seconds": 1, "microseconds": 11}, '
                                '"event": "RESET", "data": {"guest": true}}\r\n'),
    (10_000_000, "vm-b", "send", '{"execute":"device_del","arguments":{"id":"usb1"},"id":7}\r\n'),
    (10_570_000, "vm-b", "recv", '{"return": {}, "id": 7}\r\n'),
    (61_000_000, "vm-b", "recv", '{"timestamp": {"seconds": 2, "microseconds": 3}, '
                                 '"event": "DEVICE_DELETED", "data": {"device": "usb1", '
                                 '"path": "/machine/peripheral/usb1"}}\r\n'),
    (62_000_000, "vm-b", "send", "{'execute': 'no-such-command'}\r\n"),
    (62_300_000, "vm-b", "recv", '{"error": {"class": "CommandNotFound", "desc": "The command '
                                 'no-such-command has not been found"}}\r\n'),
    (63_000_000, "vm-b", "send", b"\xff\xfe not utf-8\r\n"),
    (63_100_000, "vm-b", "recv", '{"timestamp": {"seconds": 3, "microseconds": 0}, '
                                 '"event": "RESUME"}\r\n'),
    (64_000_000, "vm-a", "send", "not json at all\r\n"),
]


def sample_records(messages: list[Message] | None = None) -> list[dict[str, object]]:
    """Session records for messages (default :data:`SAMPLE`), built like the recorder does."""
    from tracer.session import make_record

    return [dict(make_record(t, vm, "send" if d == "send" else "recv", wire))
            for t, vm, d, wire in (messages or SAMPLE)]


@pytest.fixture
def write_session(tmp_path: Path) -> Callable[..., Path]:
    """Write records (default: the sample) to a session file in ``tmp_path``; return its path."""
    from tracer.session import Header, SessionWriter

    def write(records: list[dict[str, object]] | None = None, *, name: str = "s.qmp.jsonl",
              vms: list[str] | None = None, source: str = "proxy") -> Path:
        recs = sample_records() if records is None else records
        names = vms or sorted({str(r["vm"]) for r in recs}) or ["vm0"]
        path = tmp_path / name
        header = Header(source=source, clock="monotonic", vms=names,
                        wall_start="2024-01-01T00:00:00.000000Z")
        with SessionWriter(path, header) as writer:
            for rec in recs:
                writer.write(rec)  # type: ignore[arg-type]
        return path

    return write
