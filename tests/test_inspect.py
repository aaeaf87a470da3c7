"""Session statistics and event attribution (cause table + streaming attributor)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SAMPLE, RunCli, sample_records

import tracer.defaults
from tracer.causes import Attributor, rules_for
from tracer.inspect import inspect_session


def _index(vm: str, fragment: str) -> int:
    """Record index of the sample message on ``vm`` whose wire text contains ``fragment``."""
    return next(i for i, (_, v, _, w) in enumerate(SAMPLE)
                if v == vm and isinstance(w, str) and fragment in w)


def _t(vm: str, fragment: str) -> int:
    return SAMPLE[_index(vm, fragment)][0]


def test_counts_latency_and_attribution(write_session) -> None:
    stats = inspect_session(write_session())
    assert stats.header.vms == ["vm-a", "vm-b"]
    assert (stats.commands, stats.replies, stats.errors, stats.unanswered) == (6, 5, 1, 0)
    assert dict(stats.events) == {"STOP": 1, "RESET": 2, "DEVICE_DELETED": 1, "RESUME": 1}
    assert stats.duration_ns == SAMPLE[-1][0] - SAMPLE[0][0]
    latency = stats.reply_latency_ms()
    # Paired by id of any JSON type, per VM; without id in order per VM.
    expected = {
        "qmp_capabilities": _t("vm-a", '"id": 1}') - _t("vm-a", "qmp_capabilities"),
        "stop": _t("vm-a", '"id": "libvirt-2"') - _t("vm-a", '"stop"'),
        "system_reset": _t("vm-a", '"id": {"n"') - _t("vm-a", "system_reset"),
        "device_del": _t("vm-b", '"id": 7}') - _t("vm-b", "device_del"),
        "query-status": _t("vm-b", '"status": "running"') - _t("vm-b", "query-status"),
        "no-such-command": _t("vm-b", "CommandNotFound") - _t("vm-b", "no-such-command"),
    }
    assert {name: row["max"] for name, row in latency.items()} == \
        {name: ns / 1e6 for name, ns in expected.items()}
    assert stats.attributed == [
        (_index("vm-a", '"stop"'), _index("vm-a", '"STOP"')),  # before the reply
        (_index("vm-a", "system_reset"), _index("vm-a", '"guest": false')),
        (_index("vm-a", "system_reset"), _index("vm-a", '"guest": true')),
        (_index("vm-b", "device_del"), _index("vm-b", "DEVICE_DELETED")),
    ]  # RESUME on vm-b has no cont: not attributed
    rates = stats.event_rates()
    assert rates["RESET"] == pytest.approx(2 / (stats.duration_ns / 1e9))


def test_percentiles_are_numpy_linear(write_session) -> None:
    records = [r for t in (0, 10_000_000, 20_000_000) for r in sample_records([
        (t, "vm0", "send", '{"execute":"query-status"}\r\n'),
        (t + (t // 10_000_000 + 1) ** 2 * 1_000_000, "vm0", "recv", '{"return": {}}\r\n'),
    ])]
    row = inspect_session(write_session(records)).reply_latency_ms()["query-status"]
    # Latencies 1, 4, 9 ms: linear p50 = 4, p99 = 4 + 0.98 * (9 - 4).
    assert row == {"n": 3, "p50": 4.0, "p99": pytest.approx(8.9), "max": 9.0}


def test_window_closes_rules(write_session) -> None:
    stats = inspect_session(write_session(), window_ns=10_000_000)
    assert (_index("vm-b", "device_del"), _index("vm-b", "DEVICE_DELETED")) \
        not in stats.attributed
    assert len(stats.attributed) == 3


def _feed(messages: list[tuple[int, str, str, str]]) -> list[int | None]:
    attributor = Attributor()
    return [attributor.feed(i, r) for i, r in enumerate(sample_records(messages))]  # type: ignore[arg-type]


def _event(t: int, name: str, data: dict[str, object] | None = None) -> tuple[int, str, str, str]:
    body = {"event": name, **({"data": data} if data is not None else {})}
    return (t, "vm0", "recv", json.dumps(body) + "\r\n")


def _cmd(t: int, name: str, **arguments: object) -> tuple[int, str, str, str]:
    msg = {"execute": name, **({"arguments": arguments} if arguments else {})}
    return (t, "vm0", "send", json.dumps(msg) + "\r\n")


def test_reset_counts_and_events_before_the_send() -> None:
    causes = _feed([_event(0, "RESET"), _cmd(1, "system_reset"), _event(2, "RESET"),
                    _event(3, "RESET"), _event(4, "RESET")])
    assert causes == [None, None, 1, 1, None]


def test_device_and_job_matching() -> None:
    causes = _feed([
        _cmd(0, "device_del", id="disk1"),
        _event(1, "DEVICE_DELETED", {"path": "/machine/peripheral/disk2/virtio-backend"}),
        _event(2, "DEVICE_DELETED", {"path": "/machine/peripheral/disk1/virtio-backend"}),
        _cmd(3, "block-job-cancel", device="job0"),
        _event(4, "BLOCK_JOB_COMPLETED", {"device": "other"}),
        _event(5, "BLOCK_JOB_COMPLETED", {"device": "job0"}),
        _event(6, "BLOCK_JOB_CANCELLED", {"device": "job0"}),  # alternative already used
        _event(7, "JOB_STATUS_CHANGE", {"id": "job0", "status": "null"}),
    ])
    assert causes == [None, None, 0, None, None, 3, None, 3]


def test_job_ids_are_reused_after_null() -> None:
    causes = _feed([
        _cmd(0, "drive-backup", **{"job-id": "j", "device": "d"}),
        _event(1, "JOB_STATUS_CHANGE", {"id": "j", "status": "created"}),
        _event(2, "JOB_STATUS_CHANGE", {"id": "j", "status": "null"}),
        _cmd(3, "drive-mirror", **{"job-id": "j", "device": "d"}),
        _event(4, "JOB_STATUS_CHANGE", {"id": "j", "status": "created"}),
    ])
    assert causes == [None, 0, 0, None, 3]


def test_rules_for_unknown_and_known_commands() -> None:
    assert rules_for("query-status", {}) == []
    (rule,) = rules_for("device_del", {"arguments": {"id": "usb1"}})
    assert rule.matches("DEVICE_DELETED", {"data": {"device": "usb1"}})
    assert not rule.matches("DEVICE_DELETED", {"data": {"device": "usb2"}})
    assert not rule.matches("STOP", {})


def test_inspect_cli_json_and_tables(write_session, run_cli: RunCli) -> None:
    path = write_session()
    code, out, err = run_cli("inspect", path, "--json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["vms"] == ["vm-a", "vm-b"]
    assert (doc["commands"], doc["replies"], doc["errors"]) == (6, 5, 1)
    assert doc["duration_ns"] == inspect_session(path).duration_ns
    assert doc["attributed"][0] == [_index("vm-a", '"stop"'), _index("vm-a", '"STOP"')]
    assert set(doc["reply_latency_ms"]["stop"]) == {"n", "p50", "p99", "max"}
    code, out, err = run_cli("inspect", path)
    assert code == 0
    for text in ("vm-a, vm-b", "DEVICE_DELETED", "system_reset→RESET", "Reply latency"):
        assert text in out


def test_default_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_session,
                         run_cli: RunCli) -> None:
    monkeypatch.setattr(tracer.defaults, "traces_dir", lambda: tmp_path)
    code, _, err = run_cli("validate")
    assert code == 2 and err.startswith(f"error: {tmp_path}:0: no *.qmp.jsonl session")
    write_session(name="b.qmp.jsonl")
    write_session(sample_records()[:3], name="a.qmp.jsonl")
    assert tracer.defaults.default_session() == tmp_path / "a.qmp.jsonl"
    assert run_cli("validate")[1].strip() == "ok: 3 records"
    assert json.loads(run_cli("inspect", "--json")[1])["records"] == 3


def test_help_has_examples(run_cli: RunCli) -> None:
    for command in ("validate", "inspect", "import"):
        code, out, _ = run_cli(command, "--help")
        assert code == 0 and "Example:" in out and f"qmpreplay {command}" in out
