"""Trace writer throughput: ``tracer.perfetto`` vs the ``perfetto`` package's builder.

Both write the packets of a real fleet replay: the ``fleet`` scenario (200 VMs, 50,000
messages) replayed in-process under two policies, the records collected in memory. The
writer is timed from those records to file bytes (only encoding and writing); the
baseline builds each of the writer's packets as a ``TracePacket`` from a precomputed
field list and writes it with ``StreamingTraceProtoBuilder`` (the outputs are checked
byte for byte before timing). Reports TrackEvents/s of both, their ratio and bytes per
TrackEvent. Where the installed writer is compiled (mypyc, see ``setup.py``), its Python
source is timed too, run as plain Python.

    python benchmarks/bench_trace_writer.py --fast
"""

from __future__ import annotations

import importlib.util
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pyperf
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
from perfetto.trace_builder.proto_builder import StreamingTraceProtoBuilder

import tracer.perfetto
from replay.policy import parse_spec
from replay.profile import load_profile
from replay.run import Consumer, run
from replay.scenarios import SCENARIOS
from tracer.timeline import RECORD_SIZE, Timeline, rows

#: A run's records, as runs hand them out (``tracer.timeline.RECORD`` each).
Records = bytes

SCENARIO = "fleet"
PARAMS = {"vms": "200", "messages": "50000"}
SEED = 0
POLICIES = ("mainloop", "pool")
#: Bytes handed to the writer at a time (65,536 records).
CHUNK = RECORD_SIZE * 65_536


def collect_into(chunks: list[bytes]) -> Callable[[Timeline], list[Consumer]]:
    """An ``observe`` callback that keeps a run's record chunks in ``chunks``."""
    return lambda _timeline: [chunks.append]


def fleet_replay() -> list[tuple[Timeline, Records]]:
    """Each policy's timeline tables and records, from one in-process replay per policy."""
    scenario = SCENARIOS[SCENARIO]
    params = scenario.params(PARAMS)
    header = scenario.header(params, SEED)
    runs: list[tuple[Timeline, Records]] = []
    for spec in POLICIES:
        chunks: list[bytes] = []
        outcome = run(parse_spec(spec), header.vms, scenario.records(params, SEED),
                      load_profile("default", header.cost_profile), seed=SEED,
                      observe=collect_into(chunks))
        runs.append((outcome.timeline, b"".join(chunks)))
    return runs


def source_writer() -> ModuleType:
    """``tracer/perfetto.py`` run as plain Python, even where a compiled build is installed."""
    spec = importlib.util.spec_from_file_location(
        "perfetto_source", Path(tracer.perfetto.__file__).with_name("perfetto.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_with_writer(path: str, runs: list[tuple[Timeline, Records]],
                      module: ModuleType = tracer.perfetto) -> None:
    with module.TraceWriter(path) as writer:
        for timeline, records in runs:
            policy = writer.begin_policy(timeline)
            for start in range(0, len(records), CHUNK):
                policy.feed(rows(records[start:start + CHUNK]))
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
            list(e.flow_ids_old), list(e.terminating_flow_ids_old),
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
            event.flow_ids_old.extend(flows)
            event.terminating_flow_ids_old.extend(ends)
            if interned is not None:
                packet.interned_data.CopyFrom(interned)
            if flags:
                packet.sequence_flags = flags
        builder.write_packet(packet)


def main() -> None:
    runner = pyperf.Runner()
    runs = fleet_replay()
    workdir = Path(tempfile.mkdtemp(prefix="bench-trace-"))
    reference = workdir / "writer.pftrace"
    write_with_writer(str(reference), runs)
    data = reference.read_bytes()
    specs = packet_specs(data)
    check = io.BytesIO()
    write_with_builder(check, specs)
    if check.getvalue() != data:
        raise SystemExit("the baseline does not write the same packets")
    events = sum(1 for s in specs if s[0] == "event")

    def time_writer(module: ModuleType) -> Callable[[int], float]:
        def bench(loops: int) -> float:
            start = time.perf_counter()
            for _ in range(loops):
                write_with_writer(str(workdir / "w.pftrace"), runs, module)
            return time.perf_counter() - start
        return bench

    def time_builder(loops: int) -> float:
        start = time.perf_counter()
        for _ in range(loops):
            with open(workdir / "b.pftrace", "wb") as stream:
                write_with_builder(stream, specs)
        return time.perf_counter() - start

    compiled = not tracer.perfetto.__file__.endswith(".py")
    label = "compiled with mypyc" if compiled else "plain Python"
    writer = runner.bench_time_func(f"trace writer, {label} (records -> file)",
                                    time_writer(tracer.perfetto))
    source = (runner.bench_time_func("trace writer, its source as plain Python",
                                      time_writer(source_writer())) if compiled else None)
    builder = runner.bench_time_func("StreamingTraceProtoBuilder (same packets)", time_builder)
    if writer is not None and builder is not None:
        w, b = writer.median(), builder.median()
        print(f"TrackEvents: {events:,}; file: {len(data):,} bytes = "
              f"{len(data) / events:.2f} bytes/event")
        print(f"writer ({label}): {events / w:,.0f} TrackEvents/s")
        if source is not None:
            print(f"writer (plain Python): {events / source.median():,.0f} TrackEvents/s")
        print(f"builder: {events / b:,.0f} TrackEvents/s")
        print(f"ratio writer/builder: {b / w:.2f}x")


if __name__ == "__main__":
    main()
