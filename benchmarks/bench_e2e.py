"""End to end: ``qmpreplay replay`` of a 1M-message fleet session file, whole process,
against the SimPy model's whole process on the same file (goal: ≥ 5×).

The session (200 VMs) is written once to the temp folder. Each command is run as a
subprocess and timed wall-clock, like hyperfine (pyperf ``command`` benchmarks).

    python benchmarks/bench_e2e.py --fast
    python benchmarks/bench_e2e.py -p 1 -n 1 -w 0 -l 1 --messages 1000000
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pyperf

from replay.scenarios import SCENARIOS

HERE = Path(__file__).parent
POLICY = "per-vm-thread"


def session_file(messages: int) -> Path:
    """The fleet session of ``messages`` messages (written once, then reused)."""
    path = Path(tempfile.gettempdir()) / f"qmpreplay-fleet-200vm-{messages}.qmp.jsonl"
    if not path.exists():
        scenario = SCENARIOS["fleet"]
        tmp = path.with_suffix(".tmp")
        scenario.write(tmp, scenario.params({"vms": "200", "messages": str(messages)}), 0)
        tmp.rename(path)
    return path


def main() -> None:
    runner = pyperf.Runner()
    runner.argparser.add_argument("--messages", type=int, default=1_000_000)
    args = runner.parse_args()
    session = str(session_file(args.messages))
    replay = runner.bench_command(
        f"qmpreplay-replay-{POLICY}",
        [sys.executable, "-c", "from replay.cli import main; main()", "replay", session,
         "-p", POLICY, "--json", "--quiet"])
    simpy = runner.bench_command(
        "simpy-fleet", [sys.executable, str(HERE / "simpy_fleet.py"), session, "--policy", POLICY])
    if replay is None or simpy is None:
        return
    print(f"\n{session}: qmpreplay {replay.mean():.2f} s, SimPy {simpy.mean():.2f} s, "
          f"ratio {simpy.mean() / replay.mean():.2f}x")


if __name__ == "__main__":
    main()
