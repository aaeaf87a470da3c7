"""An idiomatic SimPy model of the ``fleet`` workload: the speed baseline of the replay benchmarks.

The same session records, the same cost profile and the same host model as far as a
straightforward SimPy model goes: ``simpy.Resource`` for the RPC worker pool, each VM's
mutex and job (FIFO, where qmpreplay's mutex is non-fair and ``per-vm-thread`` wakes job
waiters by broadcast), a ``Store`` per monitor inbox, one process per reader thread, per
RPC and for the global deferred worker. Policies: ``per-vm-thread`` (a reader per VM) and
``mainloop`` (one reader for every VM; RPCs are not routed through it). Used by
``bench_replay.py`` and ``bench_e2e.py``, and checked against the engine in
``tests/test_policies.py``.

    python benchmarks/simpy_fleet.py SESSION [--policy per-vm-thread|mainloop]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import simpy
from simpy.resources.resource import Request

from replay.profile import Profile, load_profile
from replay.workload import DEFERRED, INLINE, Command, Event, Rpc, Workload
from tracer.session import Record, SessionReader

Proc = Generator[simpy.Event, Any, None]


@dataclass
class Result:
    """Per-RPC and per-event latencies (ns) and the number of session records read."""

    rpc_latency: list[int] = field(default_factory=list)
    event_latency: list[int] = field(default_factory=list)
    messages: int = 0

    def summary(self) -> dict[str, Any]:
        return {"messages": self.messages, "rpcs": len(self.rpc_latency),
                "events": len(self.event_latency),
                "rpc_latency_mean_ms": sum(self.rpc_latency) / len(self.rpc_latency) / 1e6,
                "event_latency_mean_ms": sum(self.event_latency) / len(self.event_latency) / 1e6}


class _Vm:
    def __init__(self, env: simpy.Environment, inbox: simpy.Store) -> None:
        self.mutex = simpy.Resource(env, 1)
        self.job = simpy.Resource(env, 1)
        self.inbox = inbox


class FleetModel:
    """The host model in SimPy: build it, then :meth:`run` a session's records."""

    def __init__(self, vms: list[str], profile: Profile, policy: str = "per-vm-thread",
                 workers: int = 5) -> None:
        if policy not in ("per-vm-thread", "mainloop"):
            raise ValueError(f"SimPy model: no policy {policy!r}")
        self.env = env = simpy.Environment()
        self.names = vms
        self.profile = profile
        self.result = Result()
        self.workers = simpy.Resource(env, workers)
        self.deferred = simpy.Store(env)
        shared = simpy.Store(env) if policy == "mainloop" else None
        self.vms = [_Vm(env, shared or simpy.Store(env)) for _ in vms]
        for inbox in ([shared] if shared is not None else [vm.inbox for vm in self.vms]):
            env.process(self._reader(inbox))
        env.process(self._deferred_worker())

    def run(self, records: Iterator[Record] | Workload) -> Result:
        """Run a session's records (or a workload already read: the engine alone)."""
        workload = (records if isinstance(records, Workload)
                    else Workload(records, self.names, self.profile))
        self.env.process(self._arrivals(workload))
        self.env.run()
        self.result.messages = workload.records_read
        return self.result

    # -- processes ------------------------------------------------------------------------

    def _arrivals(self, workload: Workload) -> Proc:
        env = self.env
        while (item := workload.next_item()) is not None:
            if item.due > env.now:
                yield env.timeout(item.due - env.now)
            if isinstance(item, Rpc):
                env.process(self._rpc(item))
            elif isinstance(item, Event):
                self._arrive(item)

    def _arrive(self, ev: Event) -> None:
        ev.arrival = int(self.env.now)
        self.vms[ev.vm].inbox.put(ev)

    def _later(self, delay: int, ev: Event) -> Proc:
        yield self.env.timeout(delay)
        self._arrive(ev)

    def _qemu(self, vm: _Vm, cmd: Command, done: simpy.Event) -> Proc:
        """QEMU answers after the recorded service time; the reply joins the inbox."""
        assert cmd.service is not None and cmd.service >= 0
        yield self.env.timeout(cmd.service)
        vm.inbox.put((cmd, done))

    def _reader(self, inbox: simpy.Store) -> Proc:
        env, profile = self.env, self.profile
        while True:
            msg = yield inbox.get()
            if isinstance(msg, tuple):
                cmd, done = msg
                yield env.timeout(profile.read_cost(cmd.reply_size))
                done.succeed()
                continue
            yield env.timeout(profile.read_cost(msg.size))
            if msg.cls == DEFERRED:
                self.deferred.put(msg)
                continue
            vm = self.vms[msg.vm]
            with vm.mutex.request() as lock:
                yield lock
                yield env.timeout(profile.handler_cost(msg.name, deferred=False))
            if msg.cls == INLINE:
                self.result.event_latency.append(int(env.now) - msg.arrival)
            else:
                self.deferred.put(msg)

    def _job(self, vm: _Vm, lock: Request) -> Generator[simpy.Event, Any, tuple[Request, Request]]:
        """Take the VM's job holding its mutex; the mutex is released while waiting."""
        job = vm.job.request()
        if not job.triggered:
            vm.mutex.release(lock)
            yield job
            lock = vm.mutex.request()
            yield lock
        return job, lock

    def _deferred_worker(self) -> Proc:
        env, profile = self.env, self.profile
        while True:
            ev = yield self.deferred.get()
            vm = self.vms[ev.vm]
            lock = vm.mutex.request()
            yield lock
            job, lock = yield from self._job(vm, lock)
            yield env.timeout(profile.handler_cost(ev.name, deferred=True))
            vm.job.release(job)
            vm.mutex.release(lock)
            self.result.event_latency.append(int(env.now) - ev.arrival)

    def _rpc(self, rpc: Rpc) -> Proc:
        env = self.env
        vm = self.vms[rpc.vm]
        costs = rpc.costs
        with self.workers.request() as worker:
            yield worker
            yield env.timeout(costs.pre)
            lock = vm.mutex.request()
            yield lock
            job, lock = yield from self._job(vm, lock)
            yield env.timeout(costs.locked)
            for i, cmd in enumerate(rpc.commands):
                if i:
                    yield env.timeout(costs.between)
                vm.mutex.release(lock)
                for offset, ev in cmd.caused:
                    env.process(self._later(offset, ev))
                done = env.event()
                env.process(self._qemu(vm, cmd, done))
                yield done
                lock = vm.mutex.request()
                yield lock
            if rpc.commands:
                yield env.timeout(costs.between)
            yield env.timeout(costs.post)
            vm.job.release(job)
            vm.mutex.release(lock)
        self.result.rpc_latency.append(int(env.now) - rpc.arrival)


def simulate(vms: list[str], records: Iterator[Record] | Workload, profile: Profile | None = None,
             policy: str = "per-vm-thread") -> Result:
    """Run the SimPy model over ``records`` (a session's, header excluded)."""
    return FleetModel(vms, profile or load_profile("default"), policy).run(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("session")
    parser.add_argument("--policy", default="per-vm-thread")
    args = parser.parse_args()
    t0 = time.perf_counter()
    with SessionReader(args.session) as reader:
        profile = load_profile("default", reader.header.cost_profile)
        result = simulate(reader.header.vms, iter(reader), profile, args.policy)
    summary = result.summary()
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    print(orjson.dumps(summary).decode())


if __name__ == "__main__":
    main()
