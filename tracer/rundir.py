"""The run directory: the contract between ``replay``, the trace writer and ``analysis``.

Files (all written by ``qmpreplay replay --out DIR``):

==================  ============================================================================
``run.json``        inputs: session path and sha256, policy specs, seed, cost profile, tool version
``results.json``    the ``--json`` object of the replay (per policy results and timings)
``timeline.parquet``  one row per timeline record: ``policy`` (index in ``run.json`` specs),
                    ``t_ns``, ``kind``, ``thread``, ``vm``, ``ref``, ``value``
                    (:mod:`tracer.timeline` defines kinds and columns)
``tables.json``     per policy, the tables record ids point into: ``vms``, ``threads``,
                    ``queues``, ``paths``, ``rpcs`` and ``findings``
``events.parquet``  the events table: ``policy``, ``id``, ``vm``, ``name``, ``class``,
                    ``arrival_ns``, ``size``
``replay.pftrace``  the Perfetto trace (unless ``--trace`` put it elsewhere)
==================  ============================================================================

Parquet is written in row groups (about 262,144 rows each) as the replay streams, so memory
stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from tracer.timeline import (
    EventInfo,
    EventTable,
    Finding,
    QueueInfo,
    RpcInfo,
    RpcTable,
    ThreadInfo,
    Timeline,
)

COLUMNS = ("t_ns", "kind", "thread", "vm", "ref", "value")
SCHEMA = pa.schema([("policy", pa.int16())] + [(c, pa.int64()) for c in COLUMNS])
EVENT_SCHEMA = pa.schema([
    ("policy", pa.int16()), ("id", pa.int64()), ("vm", pa.int32()), ("name", pa.string()),
    ("class", pa.string()), ("arrival_ns", pa.int64()), ("size", pa.int64()),
])


#: Rows per Parquet row group (about): replay chunks are smaller, and many small row
#: groups make a larger file that is slower to read.
ROW_GROUP = 262_144


class ParquetStream:
    """A Parquet file written in row groups of about :data:`ROW_GROUP` rows, from the
    smaller tables a replay hands out as it runs (memory stays bounded)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.pending: list[pa.Table] = []
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.rows += table.num_rows
        if self.rows >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.concat_tables(self.pending))
            self.pending = []
            self.rows = 0

    def close(self) -> None:
        self._flush()
        self.writer.close()


class TimelineWriter(ParquetStream):
    """Stream records of several policies into ``timeline.parquet``."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    def write(self, policy: int, chunk: bytes) -> None:
        """Write a chunk of records (``tracer.timeline.RECORD`` each)."""
        if not chunk:
            return
        columns = np.frombuffer(chunk, "<i8").reshape(-1, 6).T
        arrays = [pa.array(np.full(columns.shape[1], policy, np.int16))]
        arrays += [pa.array(col) for col in columns]
        self.add(pa.Table.from_arrays(arrays, schema=SCHEMA))


class EventTableWriter(ParquetStream):
    """Stream the events tables of several policies into ``events.parquet``."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, EVENT_SCHEMA)

    def write(self, policy: int, first_id: int, events: Sequence[EventInfo]) -> None:
        if not events:
            return
        self.add(pa.Table.from_pydict({
            "policy": [policy] * len(events),
            "id": list(range(first_id, first_id + len(events))),
            "vm": [e.vm for e in events], "name": [e.name for e in events],
            "class": [e.cls for e in events], "arrival_ns": [e.arrival_ns for e in events],
            "size": [e.size for e in events],
        }, schema=EVENT_SCHEMA))


def tables_json(timeline: Timeline) -> dict[str, Any]:
    """Everything of a timeline but its records and events (those go to Parquet)."""
    return {
        "spec": timeline.spec,
        "vms": timeline.vms,
        "threads": [{"name": t.name, "role": t.role, "vm": t.vm} for t in timeline.threads],
        "queues": [{"name": q.name, "vm": q.vm} for q in timeline.queues],
        "paths": timeline.paths,
        "rpcs": [{"vm": r.vm, "api": r.api, "arrival_ns": r.arrival_ns, "priority": r.priority,
                  "commands": r.commands} for r in timeline.rpcs],
        "findings": [f.to_json() for f in timeline.findings],
        "end_ns": timeline.end_ns,
    }


def write_json(path: Path, obj: Any) -> None:
    path.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


def read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def load_timelines(run_dir: Path) -> list[Timeline]:
    """Rebuild every policy's :class:`Timeline` (records included) from a run directory."""
    tables = read_json(run_dir / "tables.json")
    records = pq.read_table(run_dir / "timeline.parquet").to_pandas()
    events = pq.read_table(run_dir / "events.parquet").to_pandas()
    out = []
    for p, tab in enumerate(tables):
        tl = Timeline(spec=tab["spec"], vms=tab["vms"])
        tl.threads = [ThreadInfo(**t) for t in tab["threads"]]
        tl.queues = [QueueInfo(**q) for q in tab["queues"]]
        tl.paths = list(tab["paths"])
        tl.rpcs = RpcTable([RpcInfo(**r) for r in tab["rpcs"]])
        tl.findings = [Finding(f["kind"], f["time_ns"], f["vms"], f["threads"], f["detail"],
                               f.get("phase")) for f in tab["findings"]]
        tl.end_ns = tab["end_ns"]
        ev = events[events["policy"] == p].sort_values("id")
        columns = zip(ev["vm"], ev["name"], ev["class"], ev["arrival_ns"], ev["size"],
                      strict=True)
        tl.events = EventTable([EventInfo(int(vm), name, cls, int(t), int(size))
                                for vm, name, cls, t, size in columns])
        rec = records[records["policy"] == p]
        tl.records = list(zip(*(rec[c].tolist() for c in COLUMNS), strict=True))
        out.append(tl)
    return out
