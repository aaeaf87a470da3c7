"""Findings: deadlocks, starvation, ordering violations, unbounded growth, rare paths,
and commands QEMU never answered.

:class:`Watch` is told by the primitives when a thread starts waiting or gets what it
waited for. A deadlock is found the moment a wait-for cycle closes — following from the
waiting thread who it waits for (a mutex or job holder, the reader of a monitor, the thread
that must drain a full queue) until the chain ends or comes back — and a second finding
marks the timeout that breaks it. The rest are checked where they happen or at the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from tracer.timeline import Finding, Kind

if TYPE_CHECKING:
    from replay.engine import Thread
    from replay.host import VM, Host
    from replay.job import Job
    from replay.queue import Gauge
    from replay.workload import Rpc

FINDING: Final = int(Kind.FINDING)
#: Findings kept per kind; more are counted, not listed (a fleet can have millions).
MAX_PER_KIND: Final = 1000
GROWTH_WINDOWS: Final = 10
RARE_SHARE: Final = 0.05


def ms(ns: int) -> str:
    return f"{ns / 1e6:.3f} ms" if ns < 1_000_000_000 else f"{ns / 1e9:.3f} s"


class Watch:
    def __init__(self, host: Host, starvation_k: int) -> None:
        self.host = host
        self.k = starvation_k
        self.findings: list[Finding] = []
        self.counts: dict[str, int] = {}
        self._listed: dict[str, int] = {}
        self.suppressed = 0
        self.queues: list[tuple[str, Gauge]] = []
        self.ordering_violations = 0
        #: Open deadlocks: the thread ids of a cycle → its finding's description.
        self.cycles: dict[frozenset[int], str] = {}

    # -- recording ------------------------------------------------------------------------

    def report(self, kind: str, vms: list[str], threads: list[str], detail: str,
               phase: str | None = None, sort: str = "") -> None:
        """Record a finding; past MAX_PER_KIND of one kind (and ``sort``) it is only counted."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        key = kind + sort
        n = self._listed.get(key, 0)
        if n >= MAX_PER_KIND:
            self.suppressed += 1
            return
        self._listed[key] = n + 1
        host = self.host
        finding = Finding(kind, host.engine.now, vms, threads, detail, phase)
        index = len(self.findings)
        self.findings.append(finding)
        if host.timeline is not None:
            host.timeline.findings.append(finding)
        host.engine.record(host.engine.now, FINDING, -1, -1, index, 0)

    # -- deadlock -------------------------------------------------------------------------

    def waiting(self, th: Thread) -> None:
        """A thread started waiting: does a wait-for cycle close through it?"""
        chain: list[tuple[Thread, str]] = []
        seen: dict[Thread, int] = {}
        node: Thread | None = th
        while node is not None and node not in seen and len(chain) < 64:
            seen[node] = len(chain)
            step = self.waits_for(node)
            if step is None:
                return
            chain.append((node, step[0]))
            node = step[1]
        if node is None or node not in seen:
            return
        cycle = chain[seen[node]:]
        key = frozenset(t.tid for t, _ in cycle)
        if key in self.cycles:
            return
        text = "; ".join(desc for _, desc in cycle)
        self.cycles[key] = text
        vms = sorted({self.host.vms[t.busy_vm].name for t, _ in cycle if t.busy_vm >= 0})
        self.report("deadlock", vms, [t.name for t, _ in cycle], "wait-for cycle: " + text,
                    phase="closed")

    def waits_for(self, th: Thread) -> tuple[str, Thread | None] | None:
        """Who ``th`` waits for, and why in words; None when it waits for no thread."""
        blocked = th.blocked
        if blocked is None:
            return None
        what, obj = blocked
        host = self.host
        if what == "mutex":
            holder = obj.holder
            if holder is None:
                return None
            vm_name = host.vms[obj.vm].name
            return f"{th.name} waits for {vm_name}'s mutex held by {holder.name}", holder
        if what == "job":
            holder = obj.holder
            if holder is None:
                return None
            return (f"{th.name} ({th.api}) waits for {host.vms[obj.vm].name}'s job held by "
                    f"{holder.name} ({obj.api})"), holder
        if what == "reply":
            vm: VM = obj
            if not vm.reply_unread:
                return None  # QEMU has not answered: not a thread
            why = host.policy.why_unread(vm)
            if why is None:
                return None
            return (f"{th.name} ({th.api}) waits for the reply to {vm.waiting_cmd}, "
                    f"unread: {why[0]}"), why[1]
        if what == "sync":
            cond, names = obj
            vm = host.vms[cond.vm]
            why = host.policy.why_undelivered(vm, names)
            if why is None:
                return None
            return (f"{th.name} ({th.api}) waits for {' or '.join(sorted(names))} on {vm.name}, "
                    f"which {why[0]}"), why[1]
        return None

    def _broken(self, th: Thread, by: str) -> None:
        for key in [k for k in self.cycles if th.tid in k]:
            text = self.cycles.pop(key)
            vm = self.host.vms[th.busy_vm].name if th.busy_vm >= 0 else ""
            self.report("deadlock", [vm] if vm else [], [th.name],
                        f"deadlock broken by {by} of {th.name} ({th.api}); the cycle was: {text}",
                        phase="broken")

    # -- job waits ------------------------------------------------------------------------

    def overtaken(self, th: Thread, job: Job) -> None:
        if th.overtakes >= self.k:
            self._starved(th, job, "then got it")

    def job_timeout(self, th: Thread, job: Job) -> None:
        self._broken(th, f"the {ms(job.timeout)} job timeout")
        if th.overtakes >= self.k:
            self._starved(th, job, "then timed out")

    def sync_timeout(self, th: Thread) -> None:
        self._broken(th, "the sync-wait timeout")

    def _starved(self, th: Thread, job: Job, outcome: str) -> None:
        host = self.host
        handler = th.api.startswith("event:")
        who = f"event handler {th.api[6:]}" if handler else f"RPC {th.api}"
        waiter = "event handler" if handler else "RPC"
        vm = host.vms[job.vm].name
        self.report(
            "starvation", [vm], [th.name],
            f"{who} on {th.name} waited {ms(host.engine.now - th.job_req)} for {vm}'s job and "
            f"was overtaken by {th.overtakes} later requests ({outcome}); waiter: {waiter}",
            sort=waiter,
        )

    def job_begun(self, th: Thread, rpc: Rpc, vm: VM) -> None:
        """Ordering: events of the VM that arrived before this RPC and are not handled."""
        n = 0
        for ev in vm.unhandled:
            if ev.arrival >= rpc.arrival:
                break
            if not ev.done and not ev.counted:
                ev.counted = True
                n += 1
        if n:
            self.ordering_violations += n
            self.report("ordering-violation", [vm.name], [th.name],
                        f"RPC {rpc.api} began its job on {vm.name} before {n} earlier "
                        "event(s) of that VM were handled")

    # -- end of run -----------------------------------------------------------------------

    def finish(self, first_ns: int, last_ns: int, path_counts: dict[str, int]) -> None:
        host = self.host
        for vm in host.vms:
            th = vm.waiting
            if th is not None and not vm.reply_unread:
                self.report("qemu-no-reply", [vm.name], [th.name],
                            f"{th.name} ({th.api}) still waits for QEMU's reply to "
                            f"{vm.waiting_cmd}: the session has none")
        for name, q in self.queues:
            if q.peak < 100:
                continue
            w = q.history.window_maxima(first_ns, last_ns, GROWTH_WINDOWS)
            if (all(a <= b for a, b in zip(w, w[1:], strict=False))
                    and w[-1] >= 4 * w[0] and w[-1] >= 100):
                vms = [host.vms[q.vm].name] if q.vm >= 0 else []
                self.report("unbounded-growth", vms, [],
                            f"queue {name} grew in every window of the session: max depth per "
                            f"tenth {w}; peak {q.peak} events, {q.bytes} bytes queued at the end")
        total = sum(path_counts.values())
        for path, n in sorted(path_counts.items()):
            share = n / total if total else 0.0
            if 0 < share < RARE_SHARE:
                self.report("rare-path", [], [],
                            f"{n} of {total} events ({share:.2%}) took path {path}: a rarely "
                            "exercised code path")

    def summary(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "suppressed": self.suppressed,
                "ordering_violations": self.ordering_violations}
