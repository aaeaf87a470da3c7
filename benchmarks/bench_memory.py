"""Peak memory of a replay: ``qmpreplay replay`` of fleet sessions of 200k and 2M
messages (200 VMs), each in its own process; the peak RSS is read from
``resource.getrusage(RUSAGE_CHILDREN)`` after the child exits. The goal: the state's
memory must not grow with the session's length (per-event result arrays excepted).

    python benchmarks/bench_memory.py [--sizes 200000 2000000] [--policy per-vm-thread]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench_e2e import session_file


def peak_rss_mib(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` in a fresh process; return its peak RSS in MiB and its wall time."""
    # a fresh Python process per size: RUSAGE_CHILDREN is the max over reaped children
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
             "stdout=subprocess.DEVNULL); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", probe, *cmd], check=True,
                         capture_output=True, text=True).stdout
    return int(out) / 1024, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--policy", default="per-vm-thread")
    args = parser.parse_args()
    for messages in args.sizes:
        session = session_file(messages)
        rss, wall = peak_rss_mib([sys.executable, "-c", "from replay.cli import main; main()",
                                  "replay", str(session), "-p", args.policy, "--json",
                                  "--quiet"])
        print(f"{messages:>10,} messages  peak RSS {rss:8.1f} MiB  ({wall:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
