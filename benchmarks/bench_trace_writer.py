"""Trace writer throughput: ``tracer.perfetto`` vs the ``perfetto`` package's builder.

Both write the same packets (checked byte for byte before timing) for a fleet-like record
mix: per VM, events (arrival, queue depth and bytes, handler stage with the VM mutex) and
RPCs (arrival, worker, mutex, job, one QMP command). The baseline builds each packet as a
``TracePacket`` from a precomputed field list and writes it with
``StreamingTraceProtoBuilder``; the writer is timed from timeline records to file bytes.
Reports TrackEvents/s of both, their ratio and bytes per TrackEvent.

    python benchmarks/bench_trace_writer.py --fast
"""

from __future__ import annotations

import io
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import pyperf
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
from perfetto.trace_builder.proto_builder import StreamingTraceProtoBuilder

from tracer.perfetto import TraceWriter
from tracer.timeline import EventInfo, Kind, QueueInfo, RpcInfo, ThreadInfo, Timeline

VMS = 50
MESSAGES = 20_000
POLICIES = 2
CHUNK = 65_536
EVENT_NAMES = ["STOP", "RESUME", "RTC_CHANGE", "NIC_RX_FILTER_CHANGED", "BALLOON_CHANGE"]
APIS = [("virDomainGetXMLDesc", ["query-status"]), ("virDomainSuspend", ["stop"])]


def fleet_timeline(spec: str, seed: int) -> Timeline:
    """A deterministic fleet-like run: events on event workers, RPCs on RPC workers."""
    rng = random.Random(seed)
    tl = Timeline(spec=spec, vms=[f"vm-{i:04d}" for i in range(VMS)], paths=["inline", "worker"])
    tl.threads = ([ThreadInfo("mainloop", "mainloop")]
                  + [ThreadInfo(f"event-worker-{i}", "event-worker") for i in range(4)]
                  + [ThreadInfo(f"rpc-worker-{i}", "rpc-worker") for i in range(5)])
    tl.queues = [QueueInfo(f"vm-{i:04d} events", i) for i in range(VMS)]
    records: list[tuple[int, int, int, int, int, int]] = []
    t = 0
    for _ in range(MESSAGES):
        t += rng.randrange(1_000, 20_000)
        vm = rng.randrange(VMS)
        if rng.random() < 0.67:
            e = len(tl.events)
            tl.events.append(EventInfo(vm, rng.choice(EVENT_NAMES), "inline", t, 120))
            w = 1 + rng.randrange(4)
            records += [
                (t, Kind.EVENT_ARRIVE, -1, vm, e, 120), (t, Kind.QUEUE_DEPTH, -1, vm, vm, 1),
                (t, Kind.QUEUE_BYTES, -1, vm, vm, 120),
                (t + 100, Kind.QUEUE_DEPTH, -1, vm, vm, 0),
                (t + 100, Kind.QUEUE_BYTES, -1, vm, vm, 0),
                (t + 100, Kind.HANDLER_BEGIN, w, vm, e, 0),
                (t + 110, Kind.LOCK_ACQUIRE, w, vm, -1, 0),
                (t + 140, Kind.LOCK_RELEASE, w, vm, -1, 30),
                (t + 140, Kind.HANDLER_END, w, vm, e, 0),
            ]
        else:
            r = len(tl.rpcs)
            api, commands = rng.choice(APIS)
            tl.rpcs.append(RpcInfo(vm, api, t, False, commands))
            w = 5 + rng.randrange(5)
            records += [
                (t, Kind.RPC_ARRIVE, -1, vm, r, 0), (t + 50, Kind.RPC_START, w, vm, r, 50),
                (t + 60, Kind.LOCK_ACQUIRE, w, vm, -1, 0), (t + 70, Kind.JOB_BEGIN, w, vm, r, 0),
                (t + 80, Kind.LOCK_RELEASE, w, vm, -1, 20), (t + 80, Kind.CMD_SEND, w, vm, r, 0),
                (t + 500, Kind.CMD_REPLY, w, vm, r, 0), (t + 500, Kind.LOCK_ACQUIRE, w, vm, -1, 0),
                (t + 520, Kind.JOB_END, w, vm, r, 450), (t + 530, Kind.LOCK_RELEASE, w, vm, -1, 30),
                (t + 540, Kind.RPC_END, w, vm, r, 0),
            ]
    records.sort(key=lambda rec: rec[0])
    records.append((t + 1_000, Kind.RUN_END, -1, -1, -1, 0))
    tl.records = records
    tl.end_ns = t + 1_000
    return tl


def write_with_writer(path: str, timelines: list[Timeline]) -> None:
    with TraceWriter(path) as writer:
        for tl in timelines:
            policy = writer.begin_policy(tl)
            for start in range(0, len(tl.records), CHUNK):
                policy.feed(tl.records[start:start + CHUNK])
            policy.end()


def packet_specs(data: bytes) -> list[tuple[Any, ...]]:
    """The field values of each packet, so the baseline builds (not copies) the packets."""
    specs: list[tuple[Any, ...]] = []
    for p in pb.Trace.FromString(data).packet:
        if not p.HasField("track_event"):
            specs.append(("raw", p))
            continue
        e = p.track_event
        args = [(a.name_iid, a.WhichOneof("value"), getattr(a, a.WhichOneof("value") or "name"))
                for a in e.debug_annotations]
        specs.append((
            "event", p.timestamp, p.trusted_packet_sequence_id, p.sequence_flags,
            list(e.category_iids), args, e.type, e.name_iid if e.HasField("name_iid") else None,
            e.track_uuid, e.counter_value if e.HasField("counter_value") else None,
            list(e.flow_ids), list(e.terminating_flow_ids),
            p.interned_data if p.HasField("interned_data") else None,
        ))
    return specs


def write_with_builder(stream: io.BufferedWriter | io.BytesIO,
                       specs: list[tuple[Any, ...]]) -> None:
    builder = StreamingTraceProtoBuilder(stream)
    for spec in specs:
        packet = builder.create_packet()
        if spec[0] == "raw":
            packet.CopyFrom(spec[1])
        else:
            (_, ts, seq, flags, cats, args, kind, name_iid, track, counter, flows, ends,
             interned) = spec
            packet.timestamp = ts
            packet.trusted_packet_sequence_id = seq
            event = packet.track_event
            event.category_iids.extend(cats)
            for iid, field, value in args:
                annotation = event.debug_annotations.add(name_iid=iid)
                setattr(annotation, field, value)
            event.type = kind
            if name_iid is not None:
                event.name_iid = name_iid
            event.track_uuid = track
            if counter is not None:
                event.counter_value = counter
            event.flow_ids.extend(flows)
            event.terminating_flow_ids.extend(ends)
            if interned is not None:
                packet.interned_data.CopyFrom(interned)
            if flags:
                packet.sequence_flags = flags
        builder.write_packet(packet)


def main() -> None:
    runner = pyperf.Runner()
    timelines = [fleet_timeline(f"policy-{p}", seed=p) for p in range(POLICIES)]
    workdir = Path(tempfile.mkdtemp(prefix="bench-trace-"))
    reference = workdir / "writer.pftrace"
    write_with_writer(str(reference), timelines)
    data = reference.read_bytes()
    specs = packet_specs(data)
    check = io.BytesIO()
    write_with_builder(check, specs)
    if check.getvalue() != data:
        raise SystemExit("the baseline does not write the same packets")
    events = sum(1 for s in specs if s[0] == "event")

    def time_writer(loops: int) -> float:
        start = time.perf_counter()
        for _ in range(loops):
            write_with_writer(str(workdir / "w.pftrace"), timelines)
        return time.perf_counter() - start

    def time_builder(loops: int) -> float:
        start = time.perf_counter()
        for _ in range(loops):
            with open(workdir / "b.pftrace", "wb") as stream:
                write_with_builder(stream, specs)
        return time.perf_counter() - start

    writer = runner.bench_time_func("trace writer (records -> file)", time_writer)
    builder = runner.bench_time_func("StreamingTraceProtoBuilder (same packets)", time_builder)
    if writer is not None and builder is not None:
        w, b = writer.median(), builder.median()
        print(f"TrackEvents: {events:,}; file: {len(data):,} bytes = "
              f"{len(data) / events:.2f} bytes/event")
        print(f"writer:  {events / w:,.0f} TrackEvents/s")
        print(f"builder: {events / b:,.0f} TrackEvents/s")
        print(f"ratio writer/builder: {b / w:.2f}x")


if __name__ == "__main__":
    main()
