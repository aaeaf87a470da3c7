"""``qmpreplay replay`` as users run it: determinism, seeds, independent policies, bad
input, and policy plugins (the example of ``docs/plugins.md``, loaded as documented)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import RunCli

from replay.scenarios import SCENARIOS

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def _scenario(tmp_path: Path, name: str, **params: Any) -> Path:
    scenario = SCENARIOS[name]
    path = tmp_path / f"{name}.qmp.jsonl"
    scenario.write(path, scenario.params({k: str(v) for k, v in params.items()}), seed=0)
    return path


def _without_timing(obj: Any) -> Any:
    """The ``--json`` object minus its wall-clock ``timing`` keys."""
    if isinstance(obj, dict):
        return {k: _without_timing(v) for k, v in obj.items() if k != "timing"}
    if isinstance(obj, list):
        return [_without_timing(v) for v in obj]
    return obj


def _replay_json(run_cli: RunCli, *args: str | Path) -> dict[str, Any]:
    code, out, err = run_cli("replay", *args, "--json")
    assert code == 0, err
    result: dict[str, Any] = _without_timing(orjson.loads(out))
    return result


def test_same_inputs_give_identical_results_and_files(run_cli: RunCli, tmp_path: Path) -> None:
    session = _scenario(tmp_path, "fleet", vms=20, duration_s=3.0)
    outs = []
    for run_dir in ("a", "b"):
        code, out, err = run_cli("replay", session, "--json", "--out", tmp_path / run_dir)
        assert code == 0, err
        outs.append(orjson.dumps(_without_timing(orjson.loads(out)),
                                 option=orjson.OPT_SORT_KEYS))
    assert outs[0] == outs[1]
    assert b'"timing"' not in outs[0]
    for name in ("timeline.parquet", "replay.pftrace"):
        first, second = (tmp_path / d / name for d in ("a", "b"))
        assert first.stat().st_size > 0
        assert first.read_bytes() == second.read_bytes(), name


def test_seed_changes_nothing_without_mutex_contention(run_cli: RunCli, tmp_path: Path) -> None:
    # one query-status per RPC, round-robin over 1,000 VMs: no mutex ever has two
    # contenders, so the RNG is never drawn from
    session = _scenario(tmp_path, "poisson", count=500, rate=1000.0)
    runs = [_replay_json(run_cli, session, "--seed", seed) for seed in ("0", "7")]
    for r in runs:
        r.pop("seed")
    assert runs[0] == runs[1]
    assert runs[0]["policies"][0]["rpcs_completed"] == 500


def test_seed_decides_mutex_draws_under_contention(run_cli: RunCli, tmp_path: Path) -> None:
    # RPCs holding vm0's job 95 % of the time with broadcast wake-up: every job end with
    # several waiters is a mutex race decided by the seed
    session = _scenario(tmp_path, "rpc-storm", duration_s=2.0)
    runs = [_replay_json(run_cli, session, "-p", "mainloop", "--seed", seed)["policies"][0]
            for seed in ("0", "1")]
    assert runs[0]["rpcs"] == runs[1]["rpcs"]
    assert runs[0]["rpc_latency_ms"] != runs[1]["rpc_latency_ms"]


def test_adding_a_policy_does_not_change_another_policys_numbers(
        run_cli: RunCli, tmp_path: Path) -> None:
    session = _scenario(tmp_path, "rpc-storm", duration_s=2.0)
    alone = _replay_json(run_cli, session, "-p", "per-vm-thread", "--seed", "3")
    both = _replay_json(run_cli, session, "-p", "mainloop", "-p", "per-vm-thread",
                        "-p", "pool", "--seed", "3")
    assert [p["spec"] for p in both["policies"]] == ["mainloop", "per-vm-thread", "pool"]
    assert both["policies"][1] == alone["policies"][0]


@pytest.mark.parametrize("spec", [
    "nosuch", "pool:nosuch=1", "pool:workers=-1", "pool:max_queue=0",
    "pool:max_queue=8,resume_at=8", "pool:max_queue=8,resume_at=9",
    "mainloop:job_timeout=abc", "per-vm-thread:wakeup=sometimes", "nosuchmodule:Policy",
])
def test_bad_policy_spec_is_one_error_line(run_cli: RunCli, tmp_path: Path, spec: str) -> None:
    session = _scenario(tmp_path, "blockjob-sync-wait")
    code, out, err = run_cli("replay", session, "-p", spec, "--json")
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_missing_session_names_the_file(run_cli: RunCli, tmp_path: Path) -> None:
    missing = tmp_path / "missing.qmp.jsonl"
    code, _, err = run_cli("replay", missing, "--json")
    assert code == 2
    assert re.fullmatch(rf"error: {re.escape(str(missing))}:\d+: .*\n", err), err


def test_garbled_session_names_file_and_line(run_cli: RunCli, tmp_path: Path) -> None:
    good = _scenario(tmp_path, "blockjob-sync-wait")
    lines = good.read_bytes().splitlines(keepends=True)
    bad = tmp_path / "bad.qmp.jsonl"
    bad.write_bytes(b"".join([*lines[:2], b'{"t_ns": 5, "vm": \n', *lines[2:]]))
    code, _, err = run_cli("replay", bad, "--json")
    assert code == 2
    assert err.startswith(f"error: {bad}:3: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def _documented_example() -> tuple[str, str, str]:
    """The plugin module of ``docs/plugins.md``: (file name, code, spec to run it)."""
    text = DOCS.read_text()
    name = re.search(r"^Save it as `([\w.]+\.py)`", text, re.M)
    code = re.search(r"```python\n(.*?)```", text, re.S)
    spec = re.search(r"qmpreplay replay \S+ --policy (\S+)", text)
    assert name and code and spec, "docs/plugins.md lost its example"
    return name.group(1), code.group(1), spec.group(1)


def test_documented_plugin_loads_as_module_class(tmp_path: Path) -> None:
    filename, code, spec = _documented_example()
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / filename).write_text(code)
    session = _scenario(tmp_path, "fleet", vms=5, duration_s=2.0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(plugins), os.environ.get("PYTHONPATH", "")]))}
    proc = subprocess.run(
        [sys.executable, "-c", "from replay.cli import main; main()", "replay", str(session),
         "--policy", spec, "--policy", "per-vm-thread", "--json"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    plugin, builtin = orjson.loads(proc.stdout)["policies"]
    assert plugin["spec"] == spec
    # the fleet run is healthy under the plugin: everything handled, nothing stuck
    assert plugin["events"] == builtin["events"] > 0
    assert plugin["events_handled"] == plugin["events"]
    assert plugin["rpcs_completed"] == plugin["rpcs"] == builtin["rpcs"]
    assert plugin["deadlocks"] == 0 and plugin["job_timeouts"] == 0
    # deferred events run on their own VM's thread: no event path but the plugin's
    assert set(plugin["event_paths"]) == {"own-vm-thread"}


def test_table_says_what_its_finding_names_mean_and_where_the_details_are(
        run_cli: RunCli) -> None:
    # the default session: an RPC takes a VM's job before one of its events is handled
    code, out, err = run_cli("replay", "-p", "mainloop", "-p", "two-stage")
    assert code == 0, err
    text = " ".join(out.split())  # the table wraps at the terminal's width
    assert "order:1" in text
    assert "findings: order = ordering-violation" in text
    assert "--out DIR then qmpreplay report DIR" in text
    code, out, err = run_cli("replay", "-p", "two-stage")  # no findings: no legend
    assert code == 0, err
    assert "none" in out and "findings:" not in out
