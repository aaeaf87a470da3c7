"""The session format: round trip, JSON Schema, bad input through the real CLI, reader fuzzing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest
from conftest import SAMPLE, RunCli, sample_records
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import tracer
from tracer.session import SessionError, SessionReader, check_record, read_session, wire_bytes

SCHEMA = json.loads((Path(tracer.__file__).parent / "session.schema.json").read_text())


def _validator(part: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/$defs/{part}", "$defs": SCHEMA["$defs"]})


def test_round_trip_keeps_records_and_wire_bytes(write_session) -> None:
    records = sample_records()
    path = write_session(records)
    header, stream = read_session(path)
    back = list(stream)
    assert header.vms == ["vm-a", "vm-b"]
    assert back == records
    sent = [w if isinstance(w, bytes) else w.encode() for _, _, _, w in SAMPLE]
    assert [wire_bytes(r) for r in back] == sent  # type: ignore[arg-type]


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(SCHEMA)


def test_every_written_line_validates_against_the_schema(write_session) -> None:
    lines = write_session().read_bytes().splitlines()
    header, records = lines[0], lines[1:]
    assert not list(_validator("header").iter_errors(orjson.loads(header)))
    assert list(_validator("record").iter_errors(orjson.loads(header)))  # a header is no record
    for line in records:
        errors = list(_validator("record").iter_errors(orjson.loads(line)))
        assert not errors, (line, errors)


GOOD = {"t_ns": 5, "vm": "vm0", "dir": "send", "kind": "command", "name": "stop",
        "wire": '{"execute":"stop"}\r\n'}


@pytest.mark.parametrize("change", [
    {"t_ns": -1},
    {"t_ns": 1.5},
    {"kind": "bogus"},
    {"dir": "sideways"},
    {"kind": "event"},  # an event cannot be sent
    {"kind": "reply", "dir": "send"},
    {"name": None},  # a command needs a name
    {"wire": None},  # no wire text at all
    {"wire": 42},
])
def test_schema_and_reader_reject_bad_records(change: dict[str, object]) -> None:
    bad = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    assert not list(_validator("record").iter_errors(GOOD))
    assert list(_validator("record").iter_errors(bad))
    assert check_record(bad, frozenset({"vm0"})) is not None


def _session_text(lines: list[str]) -> bytes:
    header = ('{"format":"qmpreplay-session","version":1,"source":"proxy","clock":"monotonic",'
              '"vms":["vm0"],"wall_start":"2024-01-01T00:00:00Z"}')
    return ("\n".join([header, *lines]) + "\n").encode()


def _rec(t: int, kind: str = "event", **extra: object) -> str:
    direction = "send" if kind == "command" else "recv"
    rec = {"t_ns": t, "vm": "vm0", "dir": direction, "kind": kind, "wire": "{}\r\n", **extra}
    if kind in ("command", "event"):
        rec.setdefault("name", "X")
    return json.dumps(rec)


BAD_INPUTS: dict[str, tuple[bytes, int]] = {
    # name: (file content, line of the error)
    "malformed-json": (_session_text([_rec(1), '{"t_ns": 2, "vm": ', _rec(3)]), 3),
    "time-backwards": (_session_text([_rec(10), _rec(20), _rec(15)]), 4),
    "unknown-kind": (_session_text([_rec(1), _rec(2, kind="telepathy")]), 3),
    "binary": (bytes(range(256)) * 4, 1),
    "empty": (b"", 1),
    "not-a-session": (b'{"hello": "world"}\n', 1),
}


@pytest.mark.parametrize("command", ["validate", "inspect"])
@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_session_is_one_error_line(tmp_path: Path, run_cli: RunCli, command: str,
                                       name: str) -> None:
    content, line = BAD_INPUTS[name]
    path = tmp_path / f"{name}.qmp.jsonl"
    path.write_bytes(content)
    code, out, err = run_cli(command, path)
    assert code == 2
    assert "Traceback" not in err + out
    errors = err.strip().splitlines()
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"error: {path}:{line}: ")


@pytest.mark.parametrize("command", ["validate", "inspect"])
def test_missing_file_is_one_error_line(tmp_path: Path, run_cli: RunCli, command: str) -> None:
    missing = tmp_path / "nope.qmp.jsonl"
    code, out, err = run_cli(command, missing)
    assert code == 2
    assert err.strip() == f"error: {missing}:0: no such file"


def test_truncated_last_line_fails_validate_but_inspect_reads_up_to_it(
        tmp_path: Path, run_cli: RunCli) -> None:
    path = tmp_path / "cut.qmp.jsonl"
    path.write_bytes(_session_text([_rec(1), _rec(2)]) + _rec(3).encode()[:20])
    code, _, err = run_cli("validate", path)
    assert code == 2
    assert err.strip() == f"error: {path}:4: truncated last line"
    code, out, err = run_cli("inspect", path, "--json")
    assert code == 0
    assert err.strip() == f"warning: {path}:4: truncated last line ignored"
    assert json.loads(out)["records"] == 2


def test_validate_lists_every_problem(tmp_path: Path, run_cli: RunCli) -> None:
    path = tmp_path / "many.qmp.jsonl"
    path.write_bytes(_session_text([
        _rec(1), "{oops", _rec(2, kind="nope"), _rec(3), _rec(2), _rec(4, vm="ghost"), _rec(5),
    ]))
    code, out, err = run_cli("validate", path)
    assert code == 2
    lines = err.strip().splitlines()
    pattern = re.compile(rf"error: {re.escape(str(path))}:(\d+): ")
    assert len(lines) == 4
    assert [int(m[1]) for m in map(pattern.match, lines) if m] == [3, 4, 6, 7]
    assert "ghost" in lines[3]


def test_validate_ok_counts_records(write_session, run_cli: RunCli) -> None:
    code, out, err = run_cli("validate", write_session())
    assert (code, out.strip(), err) == (0, f"ok: {len(SAMPLE)} records", "")


# --- the reader never fails other than with SessionError, and valid lines come back intact

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6,
)


@st.composite
def _valid_record(draw: st.DrawFn) -> dict[str, object]:
    kind = draw(st.sampled_from(["command", "reply", "error", "event", "eof", "unparsed"]))
    direction = "send" if kind == "command" else draw(
        st.sampled_from(["send", "recv"]) if kind == "unparsed" else st.just("recv"))
    rec: dict[str, object] = {"t_ns": 0, "vm": draw(st.sampled_from(["a", "b"])),
                              "dir": direction, "kind": kind, "wire": draw(st.text(max_size=30))}
    if kind in ("command", "event"):
        rec["name"] = draw(st.text(min_size=1, max_size=10))
    if kind in ("command", "reply", "error") and draw(st.booleans()):
        rec["id"] = draw(_json_values)
    return rec


_garbage = st.one_of(
    st.text(max_size=40).map(lambda s: "{" + s.replace("\n", " ")),
    st.binary(min_size=1, max_size=40).map(lambda b: b"\xff" + b.replace(b"\n", b" ")),
    st.dictionaries(st.sampled_from(["vm", "dir", "kind", "wire"]), _json_values).map(json.dumps),
    st.integers(-10**6, -1).map(lambda t: json.dumps({"t_ns": t, "vm": "a", "dir": "recv",
                                                      "kind": "eof", "wire": ""})),
    st.just(json.dumps({"t_ns": 1, "vm": "zz", "dir": "recv", "kind": "eof", "wire": ""})),
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(_valid_record(), _garbage), max_size=12), data=st.data())
def test_reader_fuzz(tmp_path: Path, lines: list[object], data: st.DataObject) -> None:
    header = {"format": "qmpreplay-session", "version": 1, "source": "capture",
              "clock": "monotonic", "vms": ["a", "b"]}
    raw = [orjson.dumps(header)]
    t = 0
    for item in lines:
        if isinstance(item, dict):
            t += data.draw(st.integers(0, 10**9))
            item["t_ns"] = t
            raw.append(orjson.dumps(item))
        else:
            raw.append(item.encode() if isinstance(item, str) else bytes(item))  # type: ignore[call-overload]
    path = tmp_path / "fuzz.qmp.jsonl"
    path.write_bytes(b"\n".join(raw) + b"\n")
    first_bad = next((i for i, x in enumerate(lines) if not isinstance(x, dict)), None)
    valid = lines if first_bad is None else lines[:first_bad]
    got: list[object] = []
    try:
        with SessionReader(path) as reader:
            got.extend(reader)
    except SessionError as exc:
        assert first_bad is not None and exc.line == first_bad + 2
    else:
        assert first_bad is None
    assert got == valid


def test_sort_puts_a_session_in_time_order(write_session, run_cli: RunCli,
                                           tmp_path: Path) -> None:
    def event(t: int, vm: str) -> dict[str, object]:
        return {"t_ns": t, "vm": vm, "dir": "recv", "kind": "event", "name": "STOP",
                "wire": f'{{"event":"STOP","n":{t}}}\r\n'}

    shuffled = [event(5, "a"), event(3, "b"), event(2, "a"), event(9, "b"), event(3, "a")]
    path = write_session(shuffled, vms=["a", "b"])
    code, _, err = run_cli("validate", path)
    assert code == 2 and "qmpreplay sort" in err
    out = tmp_path / "sorted.qmp.jsonl"
    code, stdout, _ = run_cli("sort", path, "-o", out)
    assert code == 0 and "sorted 5 records" in stdout
    _, records = read_session(out)
    got = [(r["t_ns"], r["vm"], r["wire"]) for r in records]
    # stable: the two records at t=3 keep their file order (b before a)
    assert got == sorted(((int(str(r["t_ns"])), r["vm"], r["wire"]) for r in shuffled),
                         key=lambda x: x[0])
    assert [vm for t, vm, _ in got if t == 3] == ["b", "a"]
    assert run_cli("validate", out)[0] == 0
