"""Added latency of the proxy recorder: ``query-status`` round trips through the proxy vs
direct, against the same real QEMU (``-machine none``, TCG).

Run: ``python benchmarks/bench_proxy.py [--rounds N]``. Prints p50/p99 of both paths, their
difference and ratio. Plain timing of sequential round trips, not pyperf: each round trip
is one sample, and the two paths alternate so host noise hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from tracer.proxy import Proxy, Recorder
from tracer.session import Header, SessionWriter

QUERY = b'{"execute": "query-status", "id": 1}\n'


async def connect(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    await reader.readline()  # greeting
    writer.write(b'{"execute": "qmp_capabilities"}\n')
    await reader.readline()
    return reader, writer


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    start = time.perf_counter_ns()
    writer.write(QUERY)
    await reader.readline()
    return time.perf_counter_ns() - start


async def measure(qmp: Path, work: Path, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    proxy = Proxy(qmp, work / "proxy.sock", "bench")
    proxy.bind()
    with SessionWriter(work / "bench.qmp.jsonl",
                       Header(source="proxy", clock="monotonic", vms=["bench"])) as writer:
        await proxy.start(Recorder(writer, redact=True))
        direct: list[int] = []
        proxied: list[int] = []
        for _ in range(rounds // 100):  # QEMU serves one client at a time: alternate in blocks
            for samples, path in ((direct, qmp), (proxied, proxy.listen)):
                reader, w = await connect(path)
                for _ in range(10):
                    await round_trip(reader, w)  # warm-up
                samples.extend([await round_trip(reader, w) for _ in range(100)])
                w.close()
                await w.wait_closed()
                await asyncio.sleep(0.01)
        await proxy.close()
    return np.array(direct) / 1000, np.array(proxied) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000, help="round trips per path")
    args = parser.parse_args()
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise SystemExit("error: qemu-system-x86_64 not found: install the Debian package "
                         "qemu-system-x86")
    with tempfile.TemporaryDirectory(prefix="qmpreplay-bench-") as tmp:
        work = Path(tmp)
        qmp = work / "qemu.qmp"
        proc = subprocess.Popen([qemu, "-machine", "none", "-nodefaults", "-display", "none",
                                 "-qmp", f"unix:{qmp},server=on,wait=off"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not qmp.exists():
                time.sleep(0.02)
            direct, proxied = asyncio.run(measure(qmp, work, args.rounds))
        finally:
            proc.kill()
            proc.wait()
    print(f"query-status round trips, {len(direct)} per path (µs)")
    print(f"{'':8}{'direct':>10}{'proxy':>10}{'added':>10}{'ratio':>8}")
    for q in (50, 99):
        d, p = np.percentile(direct, q), np.percentile(proxied, q)
        print(f"{'p' + str(q):8}{d:10.1f}{p:10.1f}{p - d:10.1f}{p / d:8.2f}")


if __name__ == "__main__":
    main()
