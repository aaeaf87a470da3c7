"""Which QMP command caused which event: the cause table and a streaming attributor.

Both ``qmpreplay inspect`` and the replay's workload builder need to know that a STOP
came from a ``stop`` so that the event can move with its command. The facts are those of
QEMU 7.2 (its QAPI event documentation and what a real QEMU 7.2 was seen to do): a command
may cause several events (RESET ×2 after ``system_reset`` under SeaBIOS, many
JOB_STATUS_CHANGE per block job), alternatives
(``block-job-cancel`` ends with BLOCK_JOB_CANCELLED before READY, BLOCK_JOB_COMPLETED
after), and some events must name the command's object (a device id or path, a job id).

:data:`CAUSES` is plain data: command name → :class:`Cause` entries (event names, how many
events at most, what to match). :func:`rules_for` turns one sent command into
:class:`CauseRule` instances bound to its arguments; :meth:`CauseRule.matches` tests an
event against one.

:class:`Attributor` consumes records in session order and attributes each event to the
earliest still-open command of the same VM whose rule matches. A rule opens when its
command is *sent* (events often precede the reply, so an event between send and reply is
attributable) and closes when its count is used up or when ``window_ns`` of session time
(default 60 s) has passed since the send; rules bound to a job also close when that
job reaches status ``null`` (job ids are reused). Events before any matching command stay
unattributed. Usage::

    attributor = Attributor()
    for index, record in enumerate(records):
        cause = attributor.feed(index, record)   # command index for an event, else None
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from tracer.qmp import loads_qmp
from tracer.session import Record

#: How long after its send a command can still be the cause of an event.
DEFAULT_WINDOW_NS: Final = 60_000_000_000

Match = Literal["any", "device", "job"]

#: Events of a running block job (every state change, plus an I/O error inside the job).
_JOB_EVENTS = ("JOB_STATUS_CHANGE", "BLOCK_JOB_ERROR")


@dataclass(frozen=True, slots=True)
class Cause:
    """One line of the cause table: these events, at most ``count`` (None: no limit)."""

    events: tuple[str, ...]
    count: int | None
    match: Match = "any"


def _job_start(*finish: str) -> tuple[Cause, ...]:
    """Causes of a command that starts a block job: state changes, then how it finishes."""
    return (Cause(_JOB_EVENTS, None, "job"), Cause(finish, 1, "job"))


_TRAY = (Cause(("DEVICE_TRAY_MOVED",), 1, "device"),)

#: Command name → what it causes. Unknown commands cause nothing.
CAUSES: Mapping[str, tuple[Cause, ...]] = {
    "stop": (Cause(("STOP",), 1),),
    "cont": (Cause(("RESUME",), 1),),
    "system_reset": (Cause(("RESET",), 2),),  # SeaBIOS adds a guest RESET
    "system_powerdown": (Cause(("POWERDOWN",), 1),),
    "system_wakeup": (Cause(("WAKEUP",), 1),),
    "quit": (
        Cause(("SHUTDOWN",), 1),
        Cause(("BLOCK_JOB_CANCELLED", "JOB_STATUS_CHANGE"), None),  # jobs still running
    ),
    "device_del": (Cause(("DEVICE_DELETED",), 2, "device"),),  # device + its virtio-backend
    "blockdev-open-tray": _TRAY,
    "blockdev-close-tray": _TRAY,
    "eject": _TRAY,
    "blockdev-change-medium": (Cause(("DEVICE_TRAY_MOVED",), 2, "device"),),  # open, close
    "migrate": (Cause(("MIGRATION", "MIGRATION_PASS"), None),),
    "dump-guest-memory": (Cause(("DUMP_COMPLETED", "STOP", "RESUME"), 3),),
    "block-job-cancel": (
        Cause(("BLOCK_JOB_CANCELLED", "BLOCK_JOB_COMPLETED"), 1, "job"),
        Cause(_JOB_EVENTS, None, "job"),
    ),
    "block-job-complete": (
        Cause(("BLOCK_JOB_COMPLETED",), 1, "job"),
        Cause(_JOB_EVENTS, None, "job"),
    ),
    "job-cancel": (
        Cause(("BLOCK_JOB_CANCELLED", "BLOCK_JOB_COMPLETED"), 1, "job"),
        Cause(_JOB_EVENTS, None, "job"),
    ),
    "job-complete": (
        Cause(("BLOCK_JOB_COMPLETED",), 1, "job"),
        Cause(_JOB_EVENTS, None, "job"),
    ),
    "job-finalize": (
        Cause(("BLOCK_JOB_COMPLETED",), None, "job"),
        Cause(_JOB_EVENTS, None, "job"),
    ),
    "job-pause": (Cause(_JOB_EVENTS, None, "job"),),
    "job-resume": (Cause(_JOB_EVENTS, None, "job"),),
    "job-dismiss": (Cause(_JOB_EVENTS, None, "job"),),
    "block-job-pause": (Cause(_JOB_EVENTS, None, "job"),),
    "block-job-resume": (Cause(_JOB_EVENTS, None, "job"),),
    "block-job-finalize": (
        Cause(("BLOCK_JOB_COMPLETED",), None, "job"),
        Cause(_JOB_EVENTS, None, "job"),
    ),
    "block-job-dismiss": (Cause(_JOB_EVENTS, None, "job"),),
    "blockdev-create": (Cause(("JOB_STATUS_CHANGE",), None, "job"),),
    "blockdev-mirror": _job_start("BLOCK_JOB_READY"),
    "drive-mirror": _job_start("BLOCK_JOB_READY"),
    "blockdev-backup": _job_start("BLOCK_JOB_COMPLETED", "BLOCK_JOB_PENDING"),
    "drive-backup": _job_start("BLOCK_JOB_COMPLETED", "BLOCK_JOB_PENDING"),
    "block-stream": _job_start("BLOCK_JOB_COMPLETED", "BLOCK_JOB_PENDING"),
    "block-commit": _job_start("BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_PENDING"),
}


@dataclass(frozen=True, slots=True)
class CauseRule:
    """A :class:`Cause` bound to one sent command: which events, how many, which object.

    ``keys`` are the object names taken from the command's arguments (empty: any event
    of the right name matches).
    """

    command: str
    events: frozenset[str]
    count: int | None
    match: Match
    keys: frozenset[str]

    def matches(self, event_name: str, event_msg: Mapping[str, Any]) -> bool:
        """Whether this event is one the command causes (names and object keys agree)."""
        if event_name not in self.events:
            return False
        if self.match == "any" or not self.keys:
            return True
        data = event_msg.get("data")
        if not isinstance(data, Mapping):
            return False
        return not self.keys.isdisjoint(_event_keys(self.match, data))


def _event_keys(match: Match, data: Mapping[str, Any]) -> set[str]:
    """The object names an event's data carries (ids, devices, QOM path segments)."""
    keys: set[str] = set()
    fields = ("id", "device") if match == "job" else ("id", "device", "path")
    for name in fields:
        value = data.get(name)
        if isinstance(value, str) and value:
            keys.add(value)
            if name == "path":
                keys.update(part for part in value.split("/") if part)
    return keys


def _command_keys(match: Match, arguments: Mapping[str, Any]) -> frozenset[str]:
    """The object a command acts on: a job id (a job defaults to its device's name)."""
    if match == "job":
        for name in ("job-id", "id", "device"):
            value = arguments.get(name)
            if isinstance(value, str):
                return frozenset({value})
        return frozenset()
    return frozenset(
        v for v in (arguments.get("id"), arguments.get("device")) if isinstance(v, str) and v
    )


def rules_for(command_name: str, command_msg: Mapping[str, Any]) -> list[CauseRule]:
    """The rules a sent command opens (empty for a command that causes no event)."""
    causes = CAUSES.get(command_name)
    if not causes:
        return []
    arguments = command_msg.get("arguments")
    if not isinstance(arguments, Mapping):
        arguments = {}
    return [
        CauseRule(command_name, frozenset(c.events), c.count, c.match,
                  _command_keys(c.match, arguments) if c.match != "any" else frozenset())
        for c in causes
    ]


#: Every event some command causes (no other event is ever attributed).
CAUSED_EVENTS: Final = frozenset(
    name for causes in CAUSES.values() for c in causes for name in c.events)

#: The rules of each command whose causes match any object (its arguments are not needed).
_FIXED_RULES = {
    name: rules_for(name, {})
    for name, causes in CAUSES.items() if all(c.match == "any" for c in causes)
}


@dataclass(slots=True)
class _Open:
    """A rule waiting for its events: which command opened it, when, how many are left."""

    command_index: int
    sent_ns: int
    rule: CauseRule
    left: int | None


def _decode(record: Record) -> Mapping[str, Any]:
    try:
        msg = loads_qmp(record.get("wire", "").strip())
    except (ValueError, RecursionError):
        return {}
    return msg if isinstance(msg, dict) else {}


class Attributor:
    """Attribute events to the commands that caused them, one record at a time.

    Feed every record in session order; memory holds only the open rules.
    """

    def __init__(self, window_ns: int = DEFAULT_WINDOW_NS) -> None:
        self.window_ns = window_ns
        self._open: dict[str, list[_Open]] = {}

    def feed(self, index: int, record: Record) -> int | None:
        """Take the next record; for an attributable event return its command's index."""
        kind = record.get("kind")
        if kind == "command":
            self.command(index, record)
        elif kind == "event":
            return self.event(index, record)
        return None

    def command(self, index: int, record: Record) -> None:
        """:meth:`feed` for a record known to be a command."""
        name = record.get("name", "")
        if name in CAUSES:
            t = record["t_ns"]
            rules = _FIXED_RULES.get(name)
            if rules is None:
                rules = rules_for(name, _decode(record))
            opened = self._open.setdefault(record["vm"], [])
            for rule in rules:
                opened.append(_Open(index, t, rule, rule.count))

    def event(self, index: int, record: Record) -> int | None:
        """:meth:`feed` for a record known to be an event."""
        waiting = self._open.get(record["vm"])
        if not waiting:
            return None
        name = record.get("name", "")
        t = record["t_ns"]
        horizon = t - self.window_ns
        if waiting[0].sent_ns < horizon:
            waiting[:] = [o for o in waiting if o.sent_ns >= horizon]
        msg: Mapping[str, Any] | None = None
        for pos, entry in enumerate(waiting):
            rule = entry.rule
            if name not in rule.events:
                continue
            if rule.keys:  # the event's data must name the object: decode it (once)
                if msg is None:
                    msg = _decode(record)
                if not rule.matches(name, msg):
                    continue
            if entry.left is not None:
                entry.left -= 1
                if entry.left == 0:
                    del waiting[pos]
            if name == "JOB_STATUS_CHANGE":
                _close_finished_job(waiting, _decode(record) if msg is None else msg)
            return entry.command_index
        return None


def _close_finished_job(waiting: list[_Open], event_msg: Mapping[str, Any]) -> None:
    """A job that reached status ``null`` is gone: its id may be reused by a new job."""
    data = event_msg.get("data")
    if not isinstance(data, Mapping) or data.get("status") != "null":
        return
    job = data.get("id")
    waiting[:] = [o for o in waiting if not (o.rule.match == "job" and job in o.rule.keys)]
