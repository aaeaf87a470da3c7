"""Built-in scenarios: seeded session generators, each tied to one claim of the 2017 thread.

A scenario yields ordinary session records (source ``scenario``, synthetic clock), so it
replays, inspects and validates like a recorded session. Each has a default shape; every
parameter of a shape can be changed with ``-p key=value``. Costs a scenario needs beyond
QMP go in the header's ``cost_profile`` override.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from heapq import heappop, heappush
from itertools import count
from pathlib import Path
from typing import Any

import orjson

from tracer.session import Header, Record, SessionWriter

MS = 1_000_000
US = 1_000
S = 1_000_000_000

#: QEMU reply latencies used by the generators (medians measured on QEMU 7.2, TCG).
REPLY_NS = {"query-status": 300 * US, "stop": 500 * US, "cont": 310 * US,
            "query-block": 570 * US, "block-job-cancel": 2 * MS}


class Recorder:
    """Builds a session's records in time order from out-of-order appends.

    Generators append records for the future (a reply, a caused event); :meth:`upto`
    releases those at or before a time, so memory holds only what is still ahead.
    """

    def __init__(self, vms: list[str]) -> None:
        self.vms = vms
        self.heap: list[tuple[int, int, Record]] = []
        self.seq = count()
        self.ids = count(1)

    def add(self, t: int, record: Record) -> None:
        heappush(self.heap, (t, next(self.seq), record))

    def upto(self, t: int | None) -> Iterator[Record]:
        heap = self.heap
        while heap and (t is None or heap[0][0] <= t):
            yield heappop(heap)[2]

    def command(self, vm: int, t: int, name: str, *, reply_ns: int | None,
                arguments: dict[str, Any] | None = None, thread: int | None = None,
                events: tuple[tuple[int, str, dict[str, Any]], ...] = ()) -> None:
        """A command sent at ``t``; its reply after ``reply_ns`` (None: never answered),
        and the events it causes at their offsets from ``t``."""
        qid = f"libvirt-{next(self.ids)}"
        msg: dict[str, Any] = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        msg["id"] = qid
        rec: Record = {"t_ns": t, "vm": self.vms[vm], "dir": "send", "kind": "command",
                       "name": name, "id": qid, "wire": _wire(msg)}
        if thread is not None:
            rec["thread"] = thread
        self.add(t, rec)
        if reply_ns is not None:
            self.add(t + reply_ns, {"t_ns": t + reply_ns, "vm": self.vms[vm], "dir": "recv",
                                    "kind": "reply", "id": qid,
                                    "wire": _wire({"return": {}, "id": qid})})
        for offset, event, data in events:
            self.event(vm, t + offset, event, data)

    def event(self, vm: int, t: int, name: str, data: dict[str, Any] | None = None) -> None:
        msg: dict[str, Any] = {"timestamp": {"seconds": t // S, "microseconds": t % S // US},
                               "event": name}
        if data:
            msg["data"] = data
        self.add(t, {"t_ns": t, "vm": self.vms[vm], "dir": "recv", "kind": "event",
                     "name": name, "wire": _wire(msg)})

    def api(self, vm: int, t: int, name: str, thread: int, end: int) -> None:
        """API boundaries (``api-begin`` at ``t``, ``api-end`` at ``end``)."""
        for kind, at in (("api-begin", t), ("api-end", end)):
            self.add(at, {"t_ns": at, "vm": self.vms[vm], "dir": "send", "kind": kind,
                          "name": name, "thread": thread, "wire": ""})


def _wire(msg: dict[str, Any]) -> str:
    return orjson.dumps(msg).decode() + "\r\n"


Params = dict[str, Any]
Generate = Callable[[Recorder, Params, random.Random], Iterator[Record]]


@dataclass(frozen=True)
class Scenario:
    """A generator of sessions, the claim it tests and its default parameters."""

    name: str
    claim: str
    generate: Generate
    defaults: Params
    vms: Callable[[Params], list[str]]
    cost_profile: Callable[[Params], dict[str, Any] | None] = lambda p: None
    describe: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def params(self, overrides: dict[str, str]) -> Params:
        """Defaults with ``overrides`` applied (values parsed as the default's type)."""
        out = dict(self.defaults)
        for key, text in overrides.items():
            if key not in out:
                raise ValueError(f"scenario {self.name}: unknown parameter {key!r} "
                                 f"(known: {', '.join(out)})")
            default = out[key]
            try:
                out[key] = (float(text) if isinstance(default, float)
                            else int(text) if isinstance(default, int) else text)
            except ValueError:
                raise ValueError(f"scenario {self.name}: {key}={text}: expected "
                                 f"{type(default).__name__}") from None
            if isinstance(out[key], int | float) and out[key] < 0:
                raise ValueError(f"scenario {self.name}: {key} must not be negative")
        return out

    def header(self, params: Params, seed: int) -> Header:
        return Header(source="scenario", clock="synthetic", vms=self.vms(params),
                      cost_profile=self.cost_profile(params),
                      extra={"scenario": self.name, "params": params, "seed": seed})

    def records(self, params: Params, seed: int) -> Iterator[Record]:
        rng = random.Random(seed)
        return self.generate(Recorder(self.vms(params)), params, rng)

    def write(self, path: Path, params: Params, seed: int) -> int:
        with SessionWriter(path, self.header(params, seed), flush=False) as out:
            for rec in self.records(params, seed):
                out.write(rec)
            return out.count


def _names(n: int) -> list[str]:
    return [f"vm{i}" for i in range(n)]


def _periodic(rec: Recorder, vm: int, start: int, end: int, period: int, name: str) -> None:
    t = start
    while t < end:
        rec.event(vm, t, name)
        t += period


# -- the scenarios ----------------------------------------------------------------------

def _hol(rec: Recorder, p: Params, rng: random.Random) -> Iterator[Record]:
    rec.api(0, S, "virDomainSlowOp", 1, S + int(p["hold_ms"] * MS))
    rec.event(0, S + 100 * MS, "RTC_CHANGE")
    for vm in range(1, p["vms"]):
        _periodic(rec, vm, vm * US, int(p["duration_s"] * S), int(p["period_ms"] * MS),
                  "RTC_CHANGE")
    yield from rec.upto(None)


def _flood(rec: Recorder, p: Params, rng: random.Random) -> Iterator[Record]:
    n = p["events"]
    span = int(p["duration_s"] * S)
    for vm in range(1, p["vms"]):
        _periodic(rec, vm, vm * US, S + span, 100 * MS, "RTC_CHANGE")
    rec.command(0, S, "query-block", reply_ns=None)
    for i in range(n):
        rec.event(0, S + 10 * US + i * span // n, "RTC_CHANGE")
        if not i % 4096:
            yield from rec.upto(S + i * span // n - MS)
    yield from rec.upto(None)


def _backpressure(rec: Recorder, p: Params, rng: random.Random) -> Iterator[Record]:
    reply = int(p["reply_ms"] * MS)
    rec.command(0, S, "query-block", reply_ns=reply)
    n = p["events"]
    for i in range(n):
        rec.event(0, S + (i + 1) * reply // (n + 1), "VSERPORT_CHANGE" if i == 0 else "RTC_CHANGE",
                  {"id": "channel0", "open": True} if i == 0 else None)
    yield from rec.upto(None)


def _storm(rec: Recorder, p: Params, rng: random.Random) -> Iterator[Record]:
    hold = int(p["hold_ms"] * MS)
    rate = p["utilisation"] / (hold / S)
    end = int(p["duration_s"] * S)
    # the job is held for locked + reply + between + post = reply + 90 µs (default profile)
    service = max(0, hold - 90 * US)
    _periodic(rec, 0, 50 * MS, end, int(p["event_period_ms"] * MS), "VSERPORT_CHANGE")
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t * S >= end:
            break
        rec.command(0, int(t * S), "query-block", reply_ns=service)
        yield from rec.upto(int(t * S) - 10 * MS)
    yield from rec.upto(None)


def _blockjob(rec: Recorder, p: Params, rng: random.Random) -> Iterator[Record]:
    t = S + 70 * US
    rec.api(0, S, "virDomainBlockJobAbort", 1, t + int(p["event_ms"] * MS) + 100 * US)
    rec.command(0, t, "block-job-cancel", reply_ns=int(p["reply_ms"] * MS),
                arguments={"device": "drive0"}, thread=1,
                events=((int(p["event_ms"] * MS), "BLOCK_JOB_CANCELLED",
                         {"device": "drive0", "type": "mirror", "len": 1 << 26,
                          "offset": 1 << 20, "speed": 0}),))
    yield from rec.upto(None)


def _ordering(rec: Recorder, p: Params, rng: random.Random) -> Iterator[Record]:
    period = int(p["period_ms"] * MS)
    end = int(p["duration_s"] * S)
    thread = count(1)
    for vm in range(p["vms"]):
        t = period + vm * 7 * US
        while t < end:
            for k in range(p["burst"]):
                rec.event(vm, t - 30 * US + k * 20 * US // max(1, p["burst"] - 1), "RTC_CHANGE")
            tid = next(thread)
            rec.api(vm, t, "virDomainGetInfo", tid, t + 500 * US)
            rec.command(vm, t + 70 * US, "query-status", reply_ns=REPLY_NS["query-status"],
                        thread=tid)
            t += period
    yield from rec.upto(None)


def _destroy(rec: Recorder, p: Params, rng: random.Random) -> Iterator[Record]:
    for i in range(p["hung_rpcs"]):
        rec.command(0, S + i * MS, "query-block", reply_ns=None)
    destroy = int(p["destroy_s"] * S)
    rate = p["flood_per_s"]
    n = int((destroy - S) * rate // S)
    for i in range(n):
        rec.event(0, S + 20 * MS + i * S // rate, "RTC_CHANGE")
        if not i % 4096:
            yield from rec.upto(S + i * S // rate - MS)
    rec.api(0, destroy, "virDomainDestroy", 999, destroy + MS)
    yield from rec.upto(None)


def _fleet(rec: Recorder, p: Params, rng: random.Random) -> Iterator[Record]:
    vms = p["vms"]
    ev_rate, rpc_rate = p["event_rate"], p["rpc_rate"]
    per_vm_msgs = ev_rate + rpc_rate * (0.8 * 2 + 0.2 * 6)
    end = (int(p["messages"] / (vms * per_vm_msgs) * S) if p["messages"]
           else int(p["duration_s"] * S))
    clock: list[tuple[int, int, int]] = []  # (next time, vm, 0 = event / 1 = rpc)
    for vm in range(vms):
        heappush(clock, (int(rng.expovariate(ev_rate) * S), vm, 0))
        heappush(clock, (int(rng.expovariate(rpc_rate) * S), vm, 1))
    emitted = 0
    while clock:
        t, vm, what = heappop(clock)
        if t >= end:
            continue
        if what == 0:
            if rng.random() < 0.7:
                rec.event(vm, t, "RTC_CHANGE", {"offset": 0, "qom-path": "/machine/unattached/rtc"})
            else:
                rec.event(vm, t, "VSERPORT_CHANGE", {"id": "channel0", "open": True})
            heappush(clock, (t + int(rng.expovariate(ev_rate) * S), vm, 0))
        else:
            if rng.random() < 0.8:
                rec.command(vm, t, "query-status", reply_ns=REPLY_NS["query-status"])
            else:
                rec.command(vm, t, "stop", reply_ns=REPLY_NS["stop"],
                            events=((370 * US, "STOP", {}),))
                rec.command(vm, t + MS, "cont", reply_ns=REPLY_NS["cont"],
                            events=((280 * US, "RESUME", {}),))
            heappush(clock, (t + int(rng.expovariate(rpc_rate) * S), vm, 1))
        emitted += 1
        if not emitted % 1024:
            yield from rec.upto(t - 10 * MS)
    yield from rec.upto(None)


def _poisson(rec: Recorder, p: Params, rng: random.Random) -> Iterator[Record]:
    rate, mean = p["rate"], p["service_ms"] * MS
    vms = p["vms"]
    t = 0.0
    for i in range(p["count"]):
        t += rng.expovariate(rate)
        at = int(t * S)
        rec.command(i % vms, at, "query-status", reply_ns=max(1, int(rng.expovariate(1 / mean))))
        if not i % 1024:
            yield from rec.upto(at - 1)
    yield from rec.upto(None)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("hol-blocking", "one VM's lock holder stalls the main loop for all VMs", _hol,
             {"vms": 20, "hold_ms": 2000.0, "period_ms": 100.0, "duration_s": 5.0},
             lambda p: _names(p["vms"]),
             lambda p: {"apis": {"virDomainSlowOp": {"post": p["hold_ms"] * 1000}}},
             "at 1 s VM0 runs virDomainSlowOp holding its mutex hold_ms (post) and gets one "
             "inline event at 1.1 s; the other VMs get an inline event every period_ms"),
    Scenario("event-flood", "a QEMU that floods events while an RPC hangs grows memory "
             "without bound", _flood, {"vms": 10, "events": 100_000, "duration_s": 10.0},
             lambda p: _names(p["vms"]),
             describe="at 1 s an RPC on VM0 sends a command QEMU never answers; from then "
             "VM0 emits `events` inline events over duration_s"),
    Scenario("backpressure-deadlock", "stop-reading + a handler needing the job of an RPC "
             "waiting for its reply deadlocks", _backpressure,
             {"events": 20, "reply_ms": 50.0}, lambda p: ["vm0"],
             describe="an RPC on VM0 sends a command answered reply_ms later; meanwhile "
             "`events` events arrive, the first VSERPORT_CHANGE (deferred), the rest inline",
             extra={"pool": "pool:max_queue=8"}),
    Scenario("rpc-storm", "with broadcast wake-up an event handler can starve behind RPCs",
             _storm, {"duration_s": 60.0, "hold_ms": 1.0, "utilisation": 0.95,
                      "event_period_ms": 100.0}, lambda p: ["vm0"],
             describe="Poisson RPCs on VM0 holding its job hold_ms each at the given job "
             "utilisation; a deferred event (no QMP) every event_period_ms"),
    Scenario("blockjob-sync-wait", "a sync API waiting for an event deadlocks when events "
             "run after the API", _blockjob, {"reply_ms": 2.0, "event_ms": 3.0},
             lambda p: ["vm0"],
             describe="virDomainBlockJobAbort sends block-job-cancel (reply after reply_ms) "
             "and sync-waits for BLOCK_JOB_CANCELLED, which arrives event_ms after the command"),
    Scenario("event-rpc-ordering", "the next RPC must not start before earlier events are "
             "processed", _ordering,
             {"vms": 5, "period_ms": 50.0, "burst": 5, "duration_s": 10.0},
             lambda p: _names(p["vms"]),
             describe="an RPC every period_ms per VM; 30–10 µs before each a burst of "
             "`burst` inline events"),
    Scenario("destroy-under-flood", "destroy must stay fast while normal workers are stuck",
             _destroy, {"hung_rpcs": 8, "flood_per_s": 10_000, "destroy_s": 5.0},
             lambda p: ["vm0"],
             describe="VM0's QEMU stops answering at 1 s; hung_rpcs RPCs on VM0 hang; VM0 "
             "floods inline events; at destroy_s virDomainDestroy of VM0",
             extra={"variant": "prio_workers=0"}),
    Scenario("fleet", "scale and speed", _fleet,
             {"vms": 1000, "duration_s": 60.0, "messages": 0, "event_rate": 2.0,
              "rpc_rate": 1.0}, lambda p: _names(p["vms"]),
             describe="per VM Poisson events (70 % inline, 30 % deferred without QMP) and "
             "RPCs (80 % query-status, 20 % a stop+cont pair); `messages` sets the length"),
    Scenario("poisson", "the RPC pool is an M/M/c queue (queueing-theory check)", _poisson,
             {"vms": 1000, "rate": 1000.0, "service_ms": 1.0, "count": 100_000},
             lambda p: _names(p["vms"]),
             describe="Poisson query-status commands at `rate`/s, round-robin over `vms` VMs "
             "(no lock contention), exponential reply times of mean service_ms"),
)}
