"""Session statistics, computed in one streaming pass over a session file.

What a user wants to know before replaying a session: which VMs, how long, how many
commands, replies, errors and events, how fast QEMU answered each command, how often
each event came, and which events the cause table attributes to which command.

Reply latency pairs a reply with its command by QMP id per VM and connection; replies
without an id are paired in order per VM, because QEMU answers in-band commands in
issue order. Percentiles use numpy's ``quantile`` with ``method="linear"`` (the one
method used everywhere in the product). Only the per-command latency lists and the
attributed pairs grow with the session; records are never kept.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from tracer.causes import CAUSES, DEFAULT_WINDOW_NS, Attributor
from tracer.session import Header, Record, SessionReader


@dataclass
class SessionStats:
    """Everything ``qmpreplay inspect`` reports about one session."""

    path: str
    header: Header
    records: int = 0
    commands: int = 0
    replies: int = 0
    errors: int = 0
    unanswered: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    kinds: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    command_names: Counter[str] = field(default_factory=Counter)
    latencies_ns: dict[str, list[int]] = field(default_factory=dict)
    #: (command record index, event record index), record indices counted from 0.
    attributed: list[tuple[int, int]] = field(default_factory=list)
    #: "command→EVENT" → number of attributed events.
    attributed_by_cause: Counter[str] = field(default_factory=Counter)

    @property
    def duration_ns(self) -> int:
        if self.first_ns is None or self.last_ns is None:
            return 0
        return self.last_ns - self.first_ns

    def reply_latency_ms(self) -> dict[str, dict[str, float | int]]:
        """Per command name: count, p50, p99 and max reply latency in milliseconds."""
        out: dict[str, dict[str, float | int]] = {}
        for name in sorted(self.latencies_ns):
            values = np.asarray(self.latencies_ns[name], dtype=np.float64) / 1e6
            p50, p99 = np.quantile(values, [0.5, 0.99], method="linear")
            out[name] = {"n": int(values.size), "p50": round(float(p50), 6),
                         "p99": round(float(p99), 6), "max": round(float(values.max()), 6)}
        return out

    def event_rates(self) -> dict[str, float | None]:
        """Events per second of session time, per name (None when the session has no length)."""
        seconds = self.duration_ns / 1e9
        return {name: (round(n / seconds, 6) if seconds > 0 else None)
                for name, n in sorted(self.events.items())}

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.path,
            "source": self.header.source,
            "clock": self.header.clock,
            "vms": list(self.header.vms),
            "records": self.records,
            "commands": self.commands,
            "replies": self.replies,
            "errors": self.errors,
            "unanswered": self.unanswered,
            "events": dict(sorted(self.events.items())),
            "kinds": dict(sorted(self.kinds.items())),
            "command_names": dict(sorted(self.command_names.items())),
            "duration_ns": self.duration_ns,
            "reply_latency_ms": self.reply_latency_ms(),
            "event_rate_per_s": self.event_rates(),
            "attributed": [list(pair) for pair in self.attributed],
            "attributed_by_cause": dict(sorted(self.attributed_by_cause.items())),
        }


def inspect_session(
    path: str | os.PathLike[str], *, window_ns: int = DEFAULT_WINDOW_NS
) -> SessionStats:
    """Read a session once and gather its statistics (a truncated last line only warns)."""
    with SessionReader(path, truncated="warn") as reader:
        stats = SessionStats(str(path), reader.header)
        attributor = Attributor(window_ns)
        # Commands waiting for a reply: by (vm, conn, id) when they carry an id, else FIFO per vm.
        by_id: dict[tuple[str, int, Any], tuple[str, int]] = {}
        in_order: dict[str, deque[tuple[str, int]]] = {}
        names: dict[int, str] = {}
        for index, rec in enumerate(reader):
            kind = rec["kind"]
            t = rec["t_ns"]
            vm = rec["vm"]
            stats.records += 1
            stats.kinds[kind] += 1
            if stats.first_ns is None or t < stats.first_ns:
                stats.first_ns = t
            if stats.last_ns is None or t > stats.last_ns:
                stats.last_ns = t
            if kind == "command":
                name = rec["name"]
                stats.commands += 1
                stats.command_names[name] += 1
                if "id" in rec:
                    by_id[(vm, rec.get("conn", 0), _id_key(rec["id"]))] = (name, t)
                else:
                    in_order.setdefault(vm, deque()).append((name, t))
                if name in CAUSES:
                    names[index] = name
            elif kind in ("reply", "error"):
                if kind == "reply":
                    stats.replies += 1
                else:
                    stats.errors += 1
                sent = _pop_command(rec, by_id, in_order)
                if sent is not None:
                    stats.latencies_ns.setdefault(sent[0], []).append(t - sent[1])
            elif kind == "event":
                stats.events[rec["name"]] += 1
            cause = attributor.feed(index, rec)
            if cause is not None:
                stats.attributed.append((cause, index))
                stats.attributed_by_cause[f"{names[cause]}→{rec['name']}"] += 1
        stats.unanswered = len(by_id) + sum(len(q) for q in in_order.values())
    return stats


def _id_key(qid: Any) -> Any:
    """A hashable form of a QMP id (ids may be any JSON value)."""
    if isinstance(qid, dict | list):
        return orjson.dumps(qid, option=orjson.OPT_SORT_KEYS)
    return (type(qid).__name__, qid)


def _pop_command(
    rec: Record,
    by_id: dict[tuple[str, int, Any], tuple[str, int]],
    in_order: dict[str, deque[tuple[str, int]]],
) -> tuple[str, int] | None:
    """The command a reply answers, removed from the waiting commands."""
    vm = rec["vm"]
    if "id" in rec:
        return by_id.pop((vm, rec.get("conn", 0), _id_key(rec["id"])), None)
    queue = in_order.get(vm)
    return queue.popleft() if queue else None
