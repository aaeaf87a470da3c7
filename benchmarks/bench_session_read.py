"""Session reader throughput against plain ``json.loads`` per line of the same file.

Generates (once, in the temp folder) a session of ~200k records with realistic QMP wire
texts, then times a full read with :class:`tracer.session.SessionReader` (checked) and a
loop of ``json.loads`` over the same lines. Prints records/s, MB/s and the ratio.

    python benchmarks/bench_session_read.py --fast
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

import pyperf

from tracer.session import Header, SessionReader, SessionWriter, make_record

RECORDS = 200_000
VMS = [f"vm{i}" for i in range(20)]


def _messages(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """A command, its events and its reply per step, like a busy libvirt host."""
    out: list[tuple[str, str]] = []
    qid = 0
    while len(out) < n:
        qid += 1
        name = rng.choice(["query-status", "stop", "cont", "query-block", "qom-get"])
        out.append(("send", json.dumps({"execute": name, "id": f"libvirt-{qid}"},
                                       separators=(",", ":")) + "\r\n"))
        if name in ("stop", "cont"):
            event = "STOP" if name == "stop" else "RESUME"
            out.append(("recv", json.dumps({"timestamp": {"seconds": 1700000000 + qid,
                                                          "microseconds": rng.randrange(10**6)},
                                            "event": event}) + "\r\n"))
        ret: object = {"status": "running", "singlestep": False, "running": True}
        if name == "query-block":
            ret = [{"device": f"drive-virtio-disk{i}", "locked": False, "removable": False,
                    "inserted": {"node-name": f"libvirt-{i}-format", "ro": False,
                                 "drv": "qcow2", "file": f"/var/lib/libvirt/images/d{i}.qcow2"},
                    "qdev": f"/machine/peripheral/virtio-disk{i}/virtio-backend",
                    "type": "unknown"} for i in range(2)]
        out.append(("recv", json.dumps({"return": ret, "id": f"libvirt-{qid}"}) + "\r\n"))
    return out[:n]


def session_file() -> Path:
    """The generated session (made once; later runs and worker processes reuse it)."""
    path = Path(tempfile.gettempdir()) / f"qmpreplay-bench-{RECORDS}.qmp.jsonl"
    if path.exists():
        return path
    rng = random.Random(0)
    tmp = path.with_suffix(".tmp")
    header = Header(source="scenario", clock="monotonic", vms=VMS,
                    wall_start="2024-01-01T00:00:00.000000Z", redacted=False)
    t = {vm: 0 for vm in VMS}
    with SessionWriter(tmp, header, flush=False) as writer:
        for direction, wire in _messages(rng, RECORDS):
            vm = rng.choice(VMS)
            t[vm] += rng.randrange(1_000, 500_000)
            writer.write(make_record(t[vm], vm, direction, wire))  # type: ignore[arg-type]
    tmp.replace(path)
    return path


def read_session(path: Path) -> int:
    with SessionReader(path) as reader:
        return sum(1 for _ in reader)


def json_loads_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as file:
        file.readline()
        for line in file:
            json.loads(line)
            n += 1
    return n


def main() -> None:
    runner = pyperf.Runner()
    path = session_file()
    size_mb = path.stat().st_size / 1e6
    reader = runner.bench_func("session_reader", read_session, path)
    baseline = runner.bench_func("json_loads_per_line", json_loads_lines, path)
    if reader is None or baseline is None:  # worker process
        return
    r, b = reader.mean(), baseline.mean()
    print(f"session: {RECORDS} records, {size_mb:.1f} MB")
    print(f"SessionReader: {RECORDS / r / 1e6:.2f} M records/s, {size_mb / r:.0f} MB/s")
    print(f"json.loads:    {RECORDS / b / 1e6:.2f} M records/s, {size_mb / b:.0f} MB/s")
    print(f"ratio reader/json.loads speed: {b / r:.2f}x")


if __name__ == "__main__":
    main()
