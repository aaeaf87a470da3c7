"""Importers on the real third-party corpora and on small hand-written inputs of each shape."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import RunCli

from tracer.inspect import inspect_session
from tracer.session import SessionReader, validate

# Event counts from the corpora README's table (qemu-iotests).
IOTESTS_EVENTS = {
    "141.out": {"JOB_STATUS_CHANGE": 31, "BLOCK_JOB_CANCELLED": 3, "BLOCK_JOB_READY": 2,
                "BLOCK_JOB_COMPLETED": 2},
    "161.out": {"JOB_STATUS_CHANGE": 12, "BLOCK_JOB_COMPLETED": 2},
    "185.out": {"JOB_STATUS_CHANGE": 22, "BLOCK_JOB_CANCELLED": 7, "BLOCK_JOB_READY": 2,
                "SHUTDOWN": 7},
    "219.out": {"JOB_STATUS_CHANGE": 87},
    "229.out": {"BLOCK_JOB_ERROR": 1, "BLOCK_JOB_CANCELLED": 1, "JOB_STATUS_CHANGE": 5},
    "258.out": {"BLOCK_JOB_COMPLETED": 4, "BLOCK_JOB_PENDING": 2},
}


def _import(run_cli: RunCli, kind: str, source: Path, out: Path, *extra: str) -> str:
    code, stdout, stderr = run_cli("import", kind, source, "-o", out, *extra)
    assert (code, stderr) == (0, ""), stderr
    assert validate(out)[1] == []
    return stdout.strip()


def _records(path: Path) -> list[dict[str, object]]:
    with SessionReader(path) as reader:
        return [dict(r) for r in reader]


@pytest.mark.parametrize("name", sorted(IOTESTS_EVENTS))
def test_iotests_corpus_event_counts(corpora: Path, tmp_path: Path, run_cli: RunCli,
                                     name: str) -> None:
    source = corpora / "qemu-iotests" / name
    out = tmp_path / "s.qmp.jsonl"
    summary = _import(run_cli, "iotests", source, out)
    stats = inspect_session(out)
    assert summary == f"imported {stats.records} records from {source} (0 lines skipped)"
    assert dict(stats.events) == IOTESTS_EVENTS[name]
    assert stats.header.clock == "synthetic" and stats.header.vms == ["vm0"]
    assert stats.kinds["unparsed"] == 0
    # Every message printed in the transcript is a record: count them independently.
    printed = sum(1 for line in source.read_text().splitlines()
                  if re.match(r"""\{\s*["'](execute|return|error|event|timestamp|data)["']""",
                              line))
    assert stats.records == printed


def test_replies_corpus_pairs_every_command(corpora: Path, tmp_path: Path,
                                            run_cli: RunCli) -> None:
    source = corpora / "libvirt-qemucapabilitiesdata" / "caps_4.2.0.x86_64.replies"
    out = tmp_path / "caps.qmp.jsonl"
    _import(run_cli, "replies", source, out)
    objects = [json.loads(block) for block in source.read_text().split("\n\n") if block.strip()]
    stats = inspect_session(out)
    assert stats.commands == sum("execute" in o for o in objects)
    assert stats.replies == sum("return" in o for o in objects)
    assert stats.errors == sum("error" in o for o in objects)
    assert stats.commands == stats.replies + stats.errors and stats.unanswered == 0
    assert not stats.events
    records = _records(out)
    # Ids survive and replies follow their commands.
    ids = [r["id"] for r in records]
    assert ids[0::2] == ids[1::2] == [o["id"] for o in objects if "execute" in o]
    assert json.loads(str(records[7]["wire"])) == objects[7]
    assert all(str(r["wire"]).endswith("\r\n") for r in records)


LOG = "libvirt-debug-logs"


def test_libvirt_log_device_del(corpora: Path, tmp_path: Path, run_cli: RunCli) -> None:
    out = tmp_path / "s.qmp.jsonl"
    _import(run_cli, "libvirt-log", corpora / LOG /
            "2020-09-07_nova-device_del-DEVICE_DELETED_attempt1.log", out)
    stats = inspect_session(out)
    assert stats.header.vms == ["instance-0000003a"]
    assert (stats.commands, stats.replies, dict(stats.events)) == (1, 1, {"DEVICE_DELETED": 1})
    assert stats.header.wall_start == "2020-09-07T19:30:14.165000Z"
    # 14.165 → 14.168 in the log; the event at 14.208.
    assert stats.reply_latency_ms()["device_del"]["max"] == 3.0
    assert stats.duration_ns == 43_000_000
    assert stats.attributed_by_cause == {"device_del→DEVICE_DELETED": 1}
    command = _records(out)[0]
    assert command["wire"] == ('{"execute":"device_del","arguments":{"id":"virtio-disk1"},'
                               '"id":"libvirt-367"}\r\n')


def test_libvirt_log_replies_without_commands(corpora: Path, tmp_path: Path,
                                              run_cli: RunCli) -> None:
    out = tmp_path / "s.qmp.jsonl"
    _import(run_cli, "libvirt-log",
            corpora / LOG / "2021-01-21_nova-blockcopy-query-block-jobs.log", out)
    stats = inspect_session(out)
    assert (stats.commands, stats.replies, stats.errors, stats.records) == (0, 3, 0, 3)
    assert stats.header.vms == ["mon-0x7fd07813ec80"]


def test_libvirt_log_migration(corpora: Path, tmp_path: Path, run_cli: RunCli) -> None:
    out = tmp_path / "s.qmp.jsonl"
    _import(run_cli, "libvirt-log",
            corpora / LOG / "2022-03-07_libvirt-save-migrate-postcommit.log", out)
    stats = inspect_session(out)
    assert stats.commands == 6  # SEND_MSG and IO_WRITE of one command count once
    assert stats.replies + stats.errors == 7 and stats.errors == 2
    assert dict(stats.events) == {"STOP": 1, "MIGRATION": 3, "MIGRATION_PASS": 3}
    assert stats.kinds["eof"] == 1
    assert stats.attributed_by_cause == {"migrate→MIGRATION": 3, "migrate→MIGRATION_PASS": 3}


def test_libvirt_log_kubevirt_json(corpora: Path, tmp_path: Path, run_cli: RunCli) -> None:
    out = tmp_path / "s.qmp.jsonl"
    _import(run_cli, "libvirt-log", corpora / LOG /
            "2023-10-26_kubevirt-virt-launcher-json-events.log", out)
    stats = inspect_session(out)
    assert dict(stats.events) == {"NIC_RX_FILTER_CHANGED": 1, "VSERPORT_CHANGE": 1,
                                  "RTC_CHANGE": 1}
    assert stats.duration_ns == 6_185_000_000  # 12:50:40.523 → 12:50:46.708


def test_libvirt_log_truncated_command(corpora: Path, tmp_path: Path, run_cli: RunCli) -> None:
    source = corpora / LOG / "2025-12-23_libvirt-aarch64-migration-reset-truncated.log"
    out = tmp_path / "s.qmp.jsonl"
    summary = _import(run_cli, "libvirt-log", source, out)
    assert summary == f"imported 0 records from {source} (1 line skipped: first at line 5)"
    strict = tmp_path / "strict.qmp.jsonl"
    code, stdout, stderr = run_cli("import", "libvirt-log", source, "-o", strict, "--strict")
    assert code == 2 and stdout == "" and "Traceback" not in stderr
    assert re.fullmatch(rf"error: {re.escape(str(source))}:5: [^\n]+\n", stderr)
    assert strict.exists() and validate(strict) == (0, [])


# --- hand-written inputs, one per log shape

FULL_PREFIX = """\
2024-05-01 10:00:00.000+0000: 500: debug : virDomainSuspend:600 : dom=0x55, (VM: name=web, uuid=1-2)
2024-05-01 10:00:00.001+0000: 500: debug : qemuDomainObjBeginJobInternal:843 : Starting job: API=remoteDispatchDomainSuspend job=suspend agentJob=none asyncJob=none (vm=0x77 name=web, current job=none agentJob=none async=none)
2024-05-01 10:00:00.002+0000: 500: debug : qemuDomainObjEnterMonitorInternal:9869 : Entering monitor (mon=0x7f10 vm=0x77 name=web)
2024-05-01 10:00:00.002+0000: 500: info : qemuMonitorSend:993 : QEMU_MONITOR_SEND_MSG: mon=0x7f10 msg={"execute":"stop","id":"libvirt-9"}^M
 fd=-1
2024-05-01 10:00:00.003+0000: 400: info : qemuMonitorIOWrite:450 : QEMU_MONITOR_IO_WRITE: mon=0x7f10 buf={"execute":"stop","id":"libvirt-9"}^M
 len=36 ret=36 errno=0
2024-05-01 10:00:00.004+0000: 400: info : qemuMonitorJSONIOProcessLine:234 : QEMU_MONITOR_RECV_EVENT: mon=0x7f10 event={"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}
2024-05-01 10:00:00.005+0000: 400: info : qemuMonitorJSONIOProcessLine:239 : QEMU_MONITOR_RECV_REPLY: mon=0x7f10 reply={"return": {}, "id": "libvirt-9"}
2024-05-01 10:00:00.006+0000: 500: debug : qemuDomainObjEndJob:9746 : Stopping job: suspend (async=none vm=0x77 name=web)
2024-05-01 10:00:00.007+0000: 400: info : qemuMonitorJSONIOProcessLine:239 : QEMU_MONITOR_RECV_REPLY: mon=0x7f10 reply={"return": {}, "id": "libvirt-
2024-05-01 10:00:00.003+0000: 400: info : qemuMonitorJSONIOProcessLine:234 : QEMU_MONITOR_RECV_EVENT: mon=0x7f10 event={"event": "RESUME"}
2024-05-01 10:00:00.009+0000: 400: info : qemuMonitorClose:917 : QEMU_MONITOR_CLOSE: mon=0x7f10 refs=2
"""  # noqa: E501


def test_libvirt_full_prefix_apis_threads_and_clamping(tmp_path: Path, run_cli: RunCli) -> None:
    source = tmp_path / "libvirtd.log"
    source.write_bytes(FULL_PREFIX.replace("^M\n", "\r\n", 1).encode())  # one real CR, one ^M
    out = tmp_path / "s.qmp.jsonl"
    summary = _import(run_cli, "libvirt-log", source, out)
    assert summary == (f"imported 7 records from {source} (1 line skipped: first at line 11; "
                       "1 times clamped to keep each VM's time non-decreasing)")
    recs = _records(out)
    assert [(r["kind"], r.get("name"), int(str(r["t_ns"])) // 1_000_000) for r in recs] == [
        ("api-begin", "virDomainSuspend", 0), ("command", "stop", 2), ("event", "STOP", 4),
        ("reply", None, 5), ("api-end", "virDomainSuspend", 6),
        ("event", "RESUME", 6),  # logged at .003 after .006: clamped, file order kept
        ("eof", None, 9),
    ]
    assert recs[0]["thread"] == recs[1]["thread"] == recs[4]["thread"] == 500
    assert recs[1]["wire"] == '{"execute":"stop","id":"libvirt-9"}\r\n'
    with SessionReader(out) as reader:
        assert reader.header.vms == ["web"] and reader.header.clock == "monotonic"


def test_libvirt_syslog_bare_and_numbered_lines(tmp_path: Path, run_cli: RunCli) -> None:
    source = tmp_path / "mixed.log"
    source.write_text(
        "Aug 22 04:01:03 host libvirtd[66682]: QEMU_MONITOR_RECV_EVENT: mon=0xabc event="
        '{"event": "RTC_CHANGE", "data": {"offset": 1}}\n'
        "Aug 22 04:01:05 host virtqemud[66682]: QEMU_MONITOR_IO_WRITE: mon=0xabc buf="
        '{"execute":"query-status","id":"libvirt-3"}\n'
        "some unrelated line\n"
        'QEMU_MONITOR_RECV_REPLY: mon=0xabc reply={"return": {"status": "running"}, '
        '"id": "libvirt-3"}\n'
        "12 2024-01-01 00:00:00.000+0000: 7: info : qemuMonitorSend:1 : QEMU_MONITOR_SEND_MSG:"
        ' mon=0xdef msg={"execute":"cont"}^M\n'
        "13  fd=-1\n"
    )
    out = tmp_path / "s.qmp.jsonl"
    _import(run_cli, "libvirt-log", source, out)
    recs = _records(out)
    assert [(r["vm"], r["kind"], r["t_ns"]) for r in recs] == [
        ("mon-0xabc", "event", 0),
        ("mon-0xabc", "command", 2_000_000_000),
        ("mon-0xabc", "reply", 2_000_000_000),  # a bare line keeps the last time seen
        ("mon-0xdef", "command", recs[3]["t_ns"]),
    ]
    assert recs[3]["wire"] == '{"execute":"cont"}\r\n'


def test_libvirt_connect_monitor_names_a_pointer(tmp_path: Path, run_cli: RunCli) -> None:
    source = tmp_path / "connect.log"
    source.write_text(
        "2024-01-01 00:00:00.000+0000: 7: debug : qemuConnectMonitor:1 : Connect monitor to "
        "vm=0x1 name='db' retry=0\n"
        "2024-01-01 00:00:00.001+0000: 7: info : qemuMonitorOpen:1 : QEMU_MONITOR_NEW: "
        "mon=0xBEEF refs=2 fd=30\n"
        '{"component":"virt-launcher","level":"info","msg":"QEMU_MONITOR_RECV_EVENT: '
        'mon=0xbeef event={\\"event\\": \\"RESUME\\"}","pos":"x:1","thread":"80",'
        '"timestamp":"2024-01-01T00:00:01.500000Z"}\n'
    )
    out = tmp_path / "s.qmp.jsonl"
    _import(run_cli, "libvirt-log", source, out, "--vm", "db")
    recs = _records(out)
    assert [(r["vm"], r["name"], r["t_ns"]) for r in recs] == [("db", "RESUME", 0)]
    code, _, err = run_cli("import", "libvirt-log", source, "-o", out, "--vm", "other")
    assert code == 2 and err.startswith(f"error: {source}:0: no VM named 'other'")


IOTEST = """\
QA output created by 999
Formatting 'TEST_DIR/t.IMGFMT', fmt=IMGFMT size=1048576
{ 'execute': 'system_reset',
  'arguments': { } }
{"timestamp": {"seconds":  TIMESTAMP, "microseconds":  TIMESTAMP}, "event": "RESET", "data": {"offset": OFFSET}}
wrote 512/512 bytes at offset 0
{"return": {}}
{"return": []}
{"data": {"id": "j"}, "event": "JOB_STATUS_CHANGE", "timestamp": {"microseconds": "USECS", "seconds": "SECS"}}
{'execute': 'broken',
"""  # noqa: E501


def test_iotests_synthetic_times_and_masks(tmp_path: Path, run_cli: RunCli) -> None:
    source = tmp_path / "999.out"
    source.write_text(IOTEST)
    out = tmp_path / "s.qmp.jsonl"
    summary = _import(run_cli, "iotests", source, out, "--vm", "guest")
    assert summary.endswith("(1 line skipped: first at line 10)")
    recs = _records(out)
    # Documented rule: command at 0; event 0.2 ms later; system_reset answers after 4.9 ms;
    # a reply without command 0.5 ms after the previous message; events 0.2 ms after it.
    assert [(r["kind"], r["t_ns"]) for r in recs] == [
        ("command", 0), ("event", 200_000), ("reply", 4_900_000), ("reply", 5_400_000),
        ("event", 5_600_000)]
    assert {r["vm"] for r in recs} == {"guest"}
    event = json.loads(str(recs[1]["wire"]))
    assert event["timestamp"] == {"seconds": 0, "microseconds": 200}
    assert event["data"] == {"offset": "OFFSET"}
    assert json.loads(str(recs[4]["wire"]))["timestamp"] == {"microseconds": 5600, "seconds": 0}
    assert recs[0]["wire"] == "{ 'execute': 'system_reset',\n  'arguments': { } }\r\n"


def test_import_is_deterministic(corpora: Path, tmp_path: Path, run_cli: RunCli) -> None:
    source = corpora / "qemu-iotests" / "141.out"
    first, second = tmp_path / "a.qmp.jsonl", tmp_path / "b.qmp.jsonl"
    _import(run_cli, "iotests", source, first)
    _import(run_cli, "iotests", source, second)
    assert first.read_bytes() == second.read_bytes()


CAPTURE = [
    '{"t_ns": 100, "vm": "a", "dir": "send", "msg": {"execute": "stop", "id": 1}, "seq": 1}',
    '{"t_ns": 150, "vm": "b", "dir": "recv", "raw": "{\\"event\\": \\"STOP\\"}\\r\\n"}',
    "this is not json",
    '{"t_ns": 90, "vm": "a", "dir": "recv", "msg": {"return": {}, "id": 1}}',
    '{"t_ns": -5, "vm": "a", "dir": "recv", "msg": {}}',
    '{"t_ns": 200, "vm": "a", "dir": "up", "msg": {}}',
]


def test_capture_import(tmp_path: Path, run_cli: RunCli) -> None:
    source = tmp_path / "cap.jsonl"
    source.write_text("\n".join(CAPTURE) + "\n")
    out = tmp_path / "s.qmp.jsonl"
    summary = _import(run_cli, "capture", source, out)
    assert summary == (f"imported 3 records from {source} (3 lines skipped: first at lines 3, "
                       "5, 6; 1 times clamped to keep each VM's time non-decreasing)")
    recs = _records(out)
    assert [(r["vm"], r["kind"], r["t_ns"], r["wire"]) for r in recs] == [
        ("a", "command", 100, '{"execute":"stop","id":1}\r\n'),
        ("b", "event", 150, '{"event": "STOP"}\r\n'),
        ("a", "reply", 100, '{"return":{},"id":1}\r\n'),
    ]
    code, stdout, stderr = run_cli("import", "capture", source, "-o", out, "--strict")
    assert code == 2 and "Traceback" not in stderr
    assert stderr.startswith(f"error: {source}:3: invalid JSON")
    assert len(_records(out)) == 2  # written before the bad line, still on disk


@pytest.mark.parametrize("kind", ["libvirt-log", "iotests", "replies", "capture"])
def test_import_bad_files(tmp_path: Path, run_cli: RunCli, kind: str) -> None:
    missing = tmp_path / "missing.txt"
    code, _, err = run_cli("import", kind, missing, "-o", tmp_path / "o.qmp.jsonl")
    assert (code, err) == (2, f"error: {missing}:0: no such file\n")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 64)
    code, out, err = run_cli("import", kind, binary, "-o", tmp_path / "o.qmp.jsonl")
    assert "Traceback" not in err
    assert code == 0 and out.startswith("imported 0 records")
    code, _, err = run_cli("import", kind, binary, "-o", tmp_path / "no" / "o.qmp.jsonl")
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err
