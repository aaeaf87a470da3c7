"""Dispatch policies: the interface, their parameters, spec parsing and plugin loading.

A policy decides who reads each VM's monitor and where each event stage runs; it wires
threads and queues from the host's primitives and never writes records itself. Spec
syntax: ``NAME[:k=v,...]`` or ``MODULE:CLASS[:k=v,...]`` (a part after a colon that
contains ``=`` holds the parameters). Plugins register under the entry point group
``qmpreplay.policies`` or are named as ``MODULE:CLASS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Generator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from mypy_extensions import mypyc_attr

from replay.profile import ProfileError, parse_duration

if TYPE_CHECKING:
    from replay.engine import Thread
    from replay.host import VM, Host
    from replay.workload import Event, Rpc

Body = Generator[int | None, None, None]


class SpecError(ValueError):
    """A policy spec that cannot be used (unknown policy, parameter or value)."""


@dataclass(frozen=True, slots=True)
class Param:
    """One policy parameter: its default and how to read and check a value."""

    default: Any
    parse: Callable[[str], Any]
    check: Callable[[Any], str | None] = lambda v: None
    help: str = ""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"expected an integer, got {text!r}") from None


def _duration(text: str) -> int:
    try:
        return parse_duration(text if not text.isdigit() else int(text), "duration")
    except ProfileError as exc:
        raise SpecError(str(exc)) from None


def at_least(n: int) -> Callable[[int], str | None]:
    return lambda v: None if v >= n else f"must be at least {n}"


def _wakeup(text: str) -> str:
    if text not in ("broadcast", "fifo"):
        raise SpecError(f"expected broadcast or fifo, got {text!r}")
    return text


#: Parameters every policy accepts.
COMMON: dict[str, Param] = {
    "workers": Param(5, _int, at_least(1), "normal RPC workers"),
    "max_workers": Param(0, _int, at_least(0), "let the RPC pool grow up to this many"),
    "prio_workers": Param(5, _int, at_least(0), "workers for high-priority APIs only"),
    "job_timeout": Param(30_000_000_000, _duration, at_least(1), "job wait limit (30s, 500ms, ns)"),
    "wakeup": Param(None, _wakeup, help="job wake-up: broadcast or fifo"),
    "max_queued": Param(0, _int, at_least(0), "max jobs queued per VM (0: no limit)"),
}


@mypyc_attr(allow_interpreted_subclasses=True)
class Policy:
    """Base class: override what differs. ``params`` lists the policy's own parameters.

    Compiled (with the built-in policies), the host calls a built-in policy's methods
    directly; plugins subclass it as any Python class."""

    name: ClassVar[str] = ""
    wakeup: ClassVar[str] = "broadcast"
    params: ClassVar[dict[str, Param]] = {}

    def __init__(self, host: Host, **params: Any) -> None:
        self.host = host
        self.p = params

    def start(self) -> None:
        """Create the policy's threads and queues (the run starts after this)."""

    def inbox_ready(self, vm: VM) -> None:
        """A message arrived on ``vm``'s monitor (or reading was resumed)."""
        raise NotImplementedError

    def on_event(self, th: Thread, ev: Event) -> Body | None:
        """An event that a reader of ``replay.reader`` has just read on thread ``th``: the
        work to run on ``th`` now (a generator), or None when it went to another thread."""
        raise NotImplementedError(f"policy {self.name or type(self).__name__} reads monitors "
                                  "with a reader but has no on_event for what it reads")

    def rpc_arrived(self, rpc: Rpc) -> None:
        """An API call arrived; by default it goes straight to the worker pool."""
        self.host.pool.submit(rpc)

    def before_job_end(self, th: Thread, vm: VM) -> Body | None:
        """Work an RPC does with its job still held, after ``post`` (two-stage drains): a
        generator, or None when there is none (no generator is made per RPC then)."""
        return None

    def discard(self, vm: VM) -> list[Event]:
        """Remove and return ``vm``'s queued events (its QEMU was killed)."""
        return []

    def why_unread(self, vm: VM) -> tuple[str, Thread] | None:
        """Why a reply that arrived on ``vm`` is not read, and which thread must move."""
        reader = vm.reader
        if reader is not None and reader.blocked is not None:
            return f"{reader.name}, which reads {vm.name}'s monitor, is blocked", reader
        return None

    def why_undelivered(self, vm: VM, names: frozenset[str]) -> tuple[str, Thread] | None:
        """Why an event a sync API waits for has not reached it, and which thread must move."""
        if any(getattr(m, "name", None) in names for m in vm.inbox):
            return self.why_unread(vm)
        return None


@dataclass(frozen=True)
class PolicySpec:
    """A parsed spec: the label as typed, the class, and every parameter's value."""

    label: str
    cls: type[Policy]
    common: dict[str, Any]
    own: dict[str, Any]

    @property
    def fifo(self) -> bool:
        return (self.common["wakeup"] or self.cls.wakeup) == "fifo"


def builtin_policies() -> dict[str, type[Policy]]:
    from replay.policies.mainloop import MainLoop
    from replay.policies.per_vm_thread import PerVmThread
    from replay.policies.pool import Pool
    from replay.policies.two_stage import TwoStage

    return {cls.name: cls for cls in (MainLoop, TwoStage, Pool, PerVmThread)}


def _load(target: str) -> type[Policy]:
    builtin = builtin_policies()
    if target in builtin:
        return builtin[target]
    if ":" in target:
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise SpecError(f"cannot import policy module {module_name!r}: {exc}") from None
        cls = getattr(module, attr, None)
    else:
        found = [ep for ep in entry_points(group="qmpreplay.policies") if ep.name == target]
        if not found:
            known = ", ".join(sorted(builtin))
            raise SpecError(f"unknown policy {target!r} (built in: {known}; plugins: entry "
                            "point group qmpreplay.policies, or MODULE:CLASS)")
        cls = found[0].load()
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise SpecError(f"{target!r} is not a qmpreplay Policy class")
    return cls


def parse_spec(spec: str) -> PolicySpec:
    """Parse ``NAME[:k=v,...]`` or ``MODULE:CLASS[:k=v,...]``."""
    parts = spec.split(":")
    text = parts.pop() if len(parts) > 1 and "=" in parts[-1] else ""
    target = ":".join(parts)
    if not target:
        raise SpecError(f"policy spec {spec!r} names no policy")
    cls = _load(target)
    values: dict[str, str] = {}
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise SpecError(f"policy {target}: parameter {item!r} is not key=value")
        values[key.strip()] = value.strip()
    common: dict[str, Any] = {}
    own: dict[str, Any] = {}
    for table, out in ((COMMON, common), (cls.params, own)):
        for key, param in table.items():
            out[key] = param.default
            if key in values:
                raw = values.pop(key)
                try:
                    parsed = param.parse(raw)
                except (SpecError, ValueError, TypeError) as exc:  # plugins may use int, float
                    raise SpecError(f"policy {target}: {key}={raw}: {exc}") from None
                problem = param.check(parsed)
                if problem:
                    raise SpecError(f"policy {target}: {key}={raw}: {problem}")
                out[key] = parsed
    if values:
        known = ", ".join([*COMMON, *cls.params])
        raise SpecError(f"policy {target}: unknown parameter {next(iter(values))!r} "
                        f"(known: {known})")
    if hasattr(cls, "check_params"):
        problem = cls.check_params(own)
        if problem:
            raise SpecError(f"policy {target}: {problem}")
    return PolicySpec(spec, cls, common, own)
