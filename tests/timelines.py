"""Hand-built timelines: two policies replaying the same small two-VM session.

Both runs have the same workload (events, RPCs, queues) and differ in who handles what and
when, as two dispatch policies would: a pool with event workers, and a main loop. Between
them they cover every record kind: VM mutex and job holders, RPCs with QMP commands, an
event handler that sends a command, inline and deferred stages of one event, queue depth
and bytes series, a read pause, a sync wait, a job wait, a job timeout, a dropped event,
an event still pending at the end, a finding, and an RPC left unfinished at RUN_END.
"""

from __future__ import annotations

import struct

from tracer.timeline import (
    DROP_JOB_TIMEOUT,
    EventInfo,
    EventTable,
    Finding,
    Kind,
    QueueInfo,
    RpcInfo,
    RpcTable,
    ThreadInfo,
    Timeline,
)

Record = tuple[int, int, int, int, int, int]


def as_chunk(flat: list[int]) -> bytes:
    """Records given as a list of ints (six per record), as the chunk a run hands out."""
    return struct.pack(f"<{len(flat)}q", *flat)

VMS = ["vm-a", "vm-b"]
PATHS = ["event-worker", "mainloop", "global-worker"]
POOL_SPEC = "pool:event_workers=4,max_queue=64"
MAINLOOP_SPEC = "mainloop"

# Events: (vm, name, class, arrival ns, bytes).
_EVENTS = [
    (0, "STOP", "inline", 1_000, 120),
    (0, "NIC_RX_FILTER_CHANGED", "deferred", 2_000, 200),
    (1, "RESET", "inline+deferred", 3_000, 90),
    (1, "DEVICE_DELETED", "conditional", 9_000, 150),
    (1, "VSERPORT_CHANGE", "deferred", 9_500, 130),
    (0, "RTC_CHANGE", "inline", 40_000, 110),
]
# RPCs: (vm, api, arrival ns, priority, commands).
_RPCS = [
    (0, "virDomainSuspend", 100, False, ["stop"]),
    (1, "virDomainDetachDevice", 4_000, False, ["device_del"]),
    (0, "query-status", 30_000, False, ["query-status"]),
]

E_STOP, E_NIC, E_RESET, E_DEVDEL, E_VSERPORT, E_RTC = range(6)
R_SUSPEND, R_DETACH, R_STATUS = range(3)
Q_A, Q_B = 0, 1
Q_GLOBAL = 0


def _owner(event: int) -> int:
    """Owner code of an event handler (see tracer.timeline)."""
    return -event - 1


def _tables(spec: str, threads: list[tuple[str, str, int]], queues: list[QueueInfo]) -> Timeline:
    return Timeline(
        spec=spec,
        vms=list(VMS),
        threads=[ThreadInfo(name, role, vm) for name, role, vm in threads],
        events=EventTable([EventInfo(*e) for e in _EVENTS]),
        rpcs=RpcTable([RpcInfo(vm, api, t, prio, list(cmds)) for vm, api, t, prio, cmds in _RPCS]),
        queues=queues,
        paths=list(PATHS),
    )


def _arrivals(r: list[Record]) -> None:
    """Event arrivals and RPC arrivals, identical under both policies."""
    for event, (vm, _name, _cls, t, size) in enumerate(_EVENTS):
        r.append((t, Kind.EVENT_ARRIVE, -1, vm, event, size))
    for rpc, (vm, _api, t, _prio, _cmds) in enumerate(_RPCS):
        r.append((t, Kind.RPC_ARRIVE, -1, vm, rpc, 0))


def _finish(tl: Timeline, records: list[Record], end_ns: int) -> Timeline:
    records.sort(key=lambda rec: rec[0])  # stable: same-ns records keep their causal order
    records.append((end_ns, Kind.RUN_END, -1, -1, -1, 0))
    tl.records = records
    tl.end_ns = end_ns
    return tl


def pool_timeline() -> Timeline:
    """The pool policy: rpc workers 0-1, event worker 2; reading of vm-b paused once."""
    tl = _tables(POOL_SPEC, [("mainloop", "mainloop", -1), ("rpc-worker-0", "rpc-worker", -1),
                             ("rpc-worker-1", "rpc-worker", -1),
                             ("event-worker-0", "event-worker", -1)],
                    [QueueInfo("vm-a events", 0), QueueInfo("vm-b events", 1)])
    main, rw0, rw1, ew0 = range(4)
    a, b = 0, 1
    r: list[Record] = []
    _arrivals(r)
    r += [
        # virDomainSuspend on vm-a: lock, job, stop, reply, end.
        (200, Kind.RPC_START, rw0, a, R_SUSPEND, 100),
        (210, Kind.LOCK_ACQUIRE, rw0, a, -1, 0),
        (220, Kind.JOB_BEGIN, rw0, a, R_SUSPEND, 0),
        (230, Kind.LOCK_RELEASE, rw0, a, -1, 20),
        (230, Kind.CMD_SEND, rw0, a, R_SUSPEND, 0),
        # STOP (inline) queued and handled by the event worker while the RPC waits.
        (1_000, Kind.QUEUE_DEPTH, -1, a, Q_A, 1),
        (1_000, Kind.QUEUE_BYTES, -1, a, Q_A, 120),
        (1_100, Kind.MSG_READ, main, a, E_STOP, 120),
        (1_200, Kind.QUEUE_DEPTH, -1, a, Q_A, 0),
        (1_200, Kind.QUEUE_BYTES, -1, a, Q_A, 0),
        (1_200, Kind.HANDLER_BEGIN, ew0, a, E_STOP, 0),
        (1_210, Kind.LOCK_ACQUIRE, ew0, a, -1, 0),
        (1_240, Kind.LOCK_RELEASE, ew0, a, -1, 30),
        (1_240, Kind.EVENT_DONE, -1, a, E_STOP, 0),
        (1_240, Kind.HANDLER_END, ew0, a, E_STOP, 0),
        (1_500, Kind.MSG_READ, main, a, -R_SUSPEND - 1, 40),
        (1_500, Kind.CMD_REPLY, rw0, a, R_SUSPEND, 0),
        (1_500, Kind.LOCK_ACQUIRE, rw0, a, -1, 0),
        # NIC_RX_FILTER_CHANGED (deferred, sends query-rx-filter) waits for the mutex.
        (2_000, Kind.QUEUE_DEPTH, -1, a, Q_A, 1),
        (2_000, Kind.QUEUE_BYTES, -1, a, Q_A, 200),
        (2_100, Kind.QUEUE_DEPTH, -1, a, Q_A, 0),
        (2_100, Kind.QUEUE_BYTES, -1, a, Q_A, 0),
        (2_100, Kind.HANDLER_BEGIN, ew0, a, E_NIC, 0),
        (2_110, Kind.LOCK_WAIT, ew0, a, -1, 0),
        (2_300, Kind.JOB_END, rw0, a, R_SUSPEND, 2_080),
        (2_310, Kind.LOCK_RELEASE, rw0, a, -1, 810),
        (2_310, Kind.LOCK_ACQUIRE, ew0, a, -1, 200),
        (2_320, Kind.RPC_END, rw0, a, R_SUSPEND, 0),
        (2_330, Kind.JOB_BEGIN, ew0, a, _owner(E_NIC), 0),
        (2_340, Kind.LOCK_RELEASE, ew0, a, -1, 30),
        (2_340, Kind.CMD_SEND, ew0, a, _owner(E_NIC), 0),
        (2_900, Kind.CMD_REPLY, ew0, a, _owner(E_NIC), 0),
        (2_900, Kind.LOCK_ACQUIRE, ew0, a, -1, 0),
        (3_000, Kind.JOB_END, ew0, a, _owner(E_NIC), 670),
        (3_010, Kind.LOCK_RELEASE, ew0, a, -1, 110),
        (3_010, Kind.EVENT_DONE, -1, a, E_NIC, 0),
        (3_010, Kind.HANDLER_END, ew0, a, E_NIC, 1),
        # RESET: inline stage, then deferred stage on the same worker.
        (3_000, Kind.QUEUE_DEPTH, -1, b, Q_B, 1),
        (3_000, Kind.QUEUE_BYTES, -1, b, Q_B, 90),
        (3_020, Kind.QUEUE_DEPTH, -1, b, Q_B, 0),
        (3_020, Kind.QUEUE_BYTES, -1, b, Q_B, 0),
        (3_020, Kind.HANDLER_BEGIN, ew0, b, E_RESET, 0),
        (3_030, Kind.LOCK_ACQUIRE, ew0, b, -1, 0),
        (3_060, Kind.LOCK_RELEASE, ew0, b, -1, 30),
        (3_060, Kind.HANDLER_END, ew0, b, E_RESET, 0),
        (3_070, Kind.HANDLER_BEGIN, ew0, b, E_RESET, 1),
        (3_080, Kind.LOCK_ACQUIRE, ew0, b, -1, 0),
        (3_090, Kind.JOB_BEGIN, ew0, b, _owner(E_RESET), 0),
        (3_200, Kind.JOB_END, ew0, b, _owner(E_RESET), 110),
        (3_210, Kind.LOCK_RELEASE, ew0, b, -1, 130),
        (3_210, Kind.EVENT_DONE, -1, b, E_RESET, 0),
        (3_210, Kind.HANDLER_END, ew0, b, E_RESET, 1),
        # virDomainDetachDevice on vm-b: device_del, then a sync wait for DEVICE_DELETED.
        (4_100, Kind.RPC_START, rw1, b, R_DETACH, 100),
        (4_110, Kind.LOCK_ACQUIRE, rw1, b, -1, 0),
        (4_120, Kind.JOB_BEGIN, rw1, b, R_DETACH, 0),
        (4_130, Kind.LOCK_RELEASE, rw1, b, -1, 20),
        (4_130, Kind.CMD_SEND, rw1, b, R_DETACH, 0),
        (5_000, Kind.CMD_REPLY, rw1, b, R_DETACH, 0),
        (5_000, Kind.LOCK_ACQUIRE, rw1, b, -1, 0),
        (5_010, Kind.SYNC_WAIT, rw1, b, R_DETACH, 5_000_000_000),
        (5_010, Kind.LOCK_RELEASE, rw1, b, -1, 10),
        # vm-b's queue fills (max_queue reached): reading paused, then resumed.
        (9_000, Kind.QUEUE_DEPTH, -1, b, Q_B, 1),
        (9_000, Kind.QUEUE_BYTES, -1, b, Q_B, 150),
        (9_500, Kind.QUEUE_DEPTH, -1, b, Q_B, 2),
        (9_500, Kind.QUEUE_BYTES, -1, b, Q_B, 280),
        (9_500, Kind.READ_PAUSED, -1, b, -1, 0),
        (9_600, Kind.QUEUE_DEPTH, -1, b, Q_B, 1),
        (9_600, Kind.QUEUE_BYTES, -1, b, Q_B, 130),
        (9_600, Kind.HANDLER_BEGIN, ew0, b, E_DEVDEL, 0),
        (9_610, Kind.LOCK_ACQUIRE, ew0, b, -1, 0),
        (9_620, Kind.SYNC_WAKE, rw1, b, R_DETACH, E_DEVDEL),
        (9_620, Kind.LOCK_RELEASE, ew0, b, -1, 10),
        (9_620, Kind.EVENT_DONE, -1, b, E_DEVDEL, 0),
        (9_620, Kind.HANDLER_END, ew0, b, E_DEVDEL, 0),
        (9_630, Kind.LOCK_ACQUIRE, rw1, b, -1, 0),
        (9_700, Kind.READ_RESUMED, -1, b, -1, 200),
        (9_700, Kind.QUEUE_DEPTH, -1, b, Q_B, 0),
        (9_700, Kind.QUEUE_BYTES, -1, b, Q_B, 0),
        # VSERPORT_CHANGE needs the job the detach still holds: it waits and times out.
        (9_700, Kind.HANDLER_BEGIN, ew0, b, E_VSERPORT, 0),
        (9_710, Kind.LOCK_WAIT, ew0, b, -1, 0),
        (9_750, Kind.JOB_END, rw1, b, R_DETACH, 5_630),
        (9_760, Kind.LOCK_RELEASE, rw1, b, -1, 130),
        (9_760, Kind.LOCK_ACQUIRE, ew0, b, -1, 50),
        (9_770, Kind.RPC_END, rw1, b, R_DETACH, 0),
        (9_780, Kind.JOB_BEGIN, ew0, b, _owner(E_VSERPORT), 0),
        (9_800, Kind.JOB_END, ew0, b, _owner(E_VSERPORT), 20),
        (9_810, Kind.LOCK_RELEASE, ew0, b, -1, 50),
        (9_810, Kind.EVENT_DONE, -1, b, E_VSERPORT, 0),
        (9_810, Kind.HANDLER_END, ew0, b, E_VSERPORT, 1),
        # query-status on vm-a: QEMU never answers; still waiting at the end.
        (30_100, Kind.RPC_START, rw0, a, R_STATUS, 100),
        (30_110, Kind.LOCK_ACQUIRE, rw0, a, -1, 0),
        (30_120, Kind.JOB_BEGIN, rw0, a, R_STATUS, 0),
        (30_130, Kind.LOCK_RELEASE, rw0, a, -1, 20),
        (30_130, Kind.CMD_SEND, rw0, a, R_STATUS, 0),
        # RTC_CHANGE arrives and stays queued.
        (40_000, Kind.QUEUE_DEPTH, -1, a, Q_A, 1),
        (40_000, Kind.QUEUE_BYTES, -1, a, Q_A, 110),
        (60_000, Kind.FINDING, -1, -1, 0, 0),
    ]
    tl.findings.append(Finding("qemu-no-reply", 60_000, ["vm-a"], ["rpc-worker-0"],
                               "query-status sent at 30130 ns never got a reply"))
    return _finish(tl, r, 60_000)


def mainloop_timeline() -> Timeline:
    """The main loop: inline handlers on the main loop, deferred ones on a global worker."""
    tl = _tables(MAINLOOP_SPEC, [("mainloop", "mainloop", -1), ("rpc-worker-0", "rpc-worker", -1),
                                 ("rpc-worker-1", "rpc-worker", -1),
                                 ("global-worker", "global-worker", -1)],
                    [QueueInfo("global", -1)])
    main, rw0, rw1, gw = range(4)
    a, b = 0, 1
    r: list[Record] = []
    _arrivals(r)
    r += [
        (150, Kind.RPC_START, rw0, a, R_SUSPEND, 50),
        (160, Kind.LOCK_ACQUIRE, rw0, a, -1, 0),
        (170, Kind.JOB_BEGIN, rw0, a, R_SUSPEND, 0),
        (180, Kind.LOCK_RELEASE, rw0, a, -1, 20),
        (180, Kind.CMD_SEND, rw0, a, R_SUSPEND, 0),
        (1_000, Kind.HANDLER_BEGIN, main, a, E_STOP, 0),
        (1_010, Kind.LOCK_ACQUIRE, main, a, -1, 0),
        (1_040, Kind.LOCK_RELEASE, main, a, -1, 30),
        (1_040, Kind.EVENT_DONE, -1, a, E_STOP, 1),
        (1_040, Kind.HANDLER_END, main, a, E_STOP, 0),
        (1_450, Kind.CMD_REPLY, rw0, a, R_SUSPEND, 0),
        (1_450, Kind.LOCK_ACQUIRE, rw0, a, -1, 0),
        (2_000, Kind.QUEUE_DEPTH, -1, -1, Q_GLOBAL, 1),
        (2_000, Kind.QUEUE_BYTES, -1, -1, Q_GLOBAL, 200),
        (2_050, Kind.QUEUE_DEPTH, -1, -1, Q_GLOBAL, 0),
        (2_050, Kind.QUEUE_BYTES, -1, -1, Q_GLOBAL, 0),
        (2_050, Kind.HANDLER_BEGIN, gw, a, E_NIC, 0),
        (2_060, Kind.LOCK_WAIT, gw, a, -1, 0),
        (2_200, Kind.JOB_END, rw0, a, R_SUSPEND, 2_030),
        (2_210, Kind.LOCK_RELEASE, rw0, a, -1, 760),
        (2_210, Kind.LOCK_ACQUIRE, gw, a, -1, 150),
        (2_220, Kind.RPC_END, rw0, a, R_SUSPEND, 0),
        (2_230, Kind.JOB_BEGIN, gw, a, _owner(E_NIC), 0),
        (2_240, Kind.LOCK_RELEASE, gw, a, -1, 30),
        (2_240, Kind.CMD_SEND, gw, a, _owner(E_NIC), 0),
        (2_800, Kind.CMD_REPLY, gw, a, _owner(E_NIC), 0),
        (2_800, Kind.LOCK_ACQUIRE, gw, a, -1, 0),
        (2_850, Kind.JOB_END, gw, a, _owner(E_NIC), 620),
        (2_860, Kind.LOCK_RELEASE, gw, a, -1, 60),
        (2_860, Kind.EVENT_DONE, -1, a, E_NIC, 2),
        (2_860, Kind.HANDLER_END, gw, a, E_NIC, 1),
        # RESET inline stage on the main loop, deferred stage on the global worker.
        (3_000, Kind.HANDLER_BEGIN, main, b, E_RESET, 0),
        (3_010, Kind.LOCK_ACQUIRE, main, b, -1, 0),
        (3_040, Kind.LOCK_RELEASE, main, b, -1, 30),
        (3_040, Kind.HANDLER_END, main, b, E_RESET, 0),
        (3_040, Kind.QUEUE_DEPTH, -1, -1, Q_GLOBAL, 1),
        (3_040, Kind.QUEUE_BYTES, -1, -1, Q_GLOBAL, 90),
        (3_050, Kind.QUEUE_DEPTH, -1, -1, Q_GLOBAL, 0),
        (3_050, Kind.QUEUE_BYTES, -1, -1, Q_GLOBAL, 0),
        (3_050, Kind.HANDLER_BEGIN, gw, b, E_RESET, 1),
        (3_060, Kind.LOCK_ACQUIRE, gw, b, -1, 0),
        (3_070, Kind.JOB_BEGIN, gw, b, _owner(E_RESET), 0),
        (3_170, Kind.JOB_END, gw, b, _owner(E_RESET), 100),
        (3_180, Kind.LOCK_RELEASE, gw, b, -1, 120),
        (3_180, Kind.EVENT_DONE, -1, b, E_RESET, 2),
        (3_180, Kind.HANDLER_END, gw, b, E_RESET, 1),
        # Detach: the job is free, so the sync wait is woken by DEVICE_DELETED in time.
        (4_050, Kind.RPC_START, rw1, b, R_DETACH, 50),
        (4_060, Kind.LOCK_ACQUIRE, rw1, b, -1, 0),
        (4_070, Kind.JOB_BEGIN, rw1, b, R_DETACH, 0),
        (4_080, Kind.LOCK_RELEASE, rw1, b, -1, 20),
        (4_080, Kind.CMD_SEND, rw1, b, R_DETACH, 0),
        (4_900, Kind.CMD_REPLY, rw1, b, R_DETACH, 0),
        (4_900, Kind.LOCK_ACQUIRE, rw1, b, -1, 0),
        (4_910, Kind.SYNC_WAIT, rw1, b, R_DETACH, 5_000_000_000),
        (4_910, Kind.LOCK_RELEASE, rw1, b, -1, 10),
        (9_000, Kind.HANDLER_BEGIN, main, b, E_DEVDEL, 0),
        (9_010, Kind.LOCK_ACQUIRE, main, b, -1, 0),
        (9_020, Kind.SYNC_WAKE, rw1, b, R_DETACH, E_DEVDEL),
        (9_020, Kind.LOCK_RELEASE, main, b, -1, 10),
        (9_020, Kind.EVENT_DONE, -1, b, E_DEVDEL, 1),
        (9_020, Kind.HANDLER_END, main, b, E_DEVDEL, 0),
        # The detach re-takes the mutex, then waits for the job the VSERPORT handler took.
        (9_500, Kind.QUEUE_DEPTH, -1, -1, Q_GLOBAL, 1),
        (9_500, Kind.QUEUE_BYTES, -1, -1, Q_GLOBAL, 130),
        (9_510, Kind.QUEUE_DEPTH, -1, -1, Q_GLOBAL, 0),
        (9_510, Kind.QUEUE_BYTES, -1, -1, Q_GLOBAL, 0),
        (9_510, Kind.HANDLER_BEGIN, gw, b, E_VSERPORT, 0),
        (9_520, Kind.LOCK_WAIT, gw, b, -1, 0),
        (9_530, Kind.LOCK_ACQUIRE, rw1, b, -1, 0),
        (9_540, Kind.JOB_END, rw1, b, R_DETACH, 5_470),
        (9_550, Kind.LOCK_RELEASE, rw1, b, -1, 20),
        (9_550, Kind.LOCK_ACQUIRE, gw, b, -1, 30),
        (9_560, Kind.RPC_END, rw1, b, R_DETACH, 0),
        (9_570, Kind.JOB_WAIT, gw, b, _owner(E_VSERPORT), 0),
        (9_570, Kind.LOCK_RELEASE, gw, b, -1, 20),
        (9_580, Kind.LOCK_WAIT, gw, b, -1, 0),
        (9_590, Kind.LOCK_ACQUIRE, gw, b, -1, 10),
        (9_590, Kind.JOB_TIMEOUT, gw, b, _owner(E_VSERPORT), 20),
        (9_600, Kind.EVENT_DROPPED, gw, b, E_VSERPORT, DROP_JOB_TIMEOUT),
        (9_600, Kind.LOCK_RELEASE, gw, b, -1, 10),
        (9_600, Kind.HANDLER_END, gw, b, E_VSERPORT, 1),
        # query-status on vm-a is never answered.
        (30_050, Kind.RPC_START, rw0, a, R_STATUS, 50),
        (30_060, Kind.LOCK_ACQUIRE, rw0, a, -1, 0),
        (30_070, Kind.JOB_BEGIN, rw0, a, R_STATUS, 0),
        (30_080, Kind.LOCK_RELEASE, rw0, a, -1, 20),
        (30_080, Kind.CMD_SEND, rw0, a, R_STATUS, 0),
        # RTC_CHANGE arrives while the main loop is free but the run ends first.
        (60_000, Kind.FINDING, -1, -1, 0, 0),
    ]
    tl.findings.append(Finding("qemu-no-reply", 60_000, ["vm-a"], ["rpc-worker-0"],
                               "query-status sent at 30080 ns never got a reply"))
    return _finish(tl, r, 60_000)


def timelines() -> list[Timeline]:
    """The two policies, in the order a replay would write them."""
    return [pool_timeline(), mainloop_timeline()]
