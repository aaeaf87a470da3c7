"""Cost profiles: what each step of the modelled daemon costs, and how events are classed.

A profile is TOML (see ``profiles/default.toml``, which documents every key). Named
profiles ship with the package (``default``, ``zero``); a path works too. A named profile
other than ``default`` is read on top of ``default``; a session header's ``cost_profile``
is merged last, key by key, so a scenario can say "this API holds the VM lock for 2 s".
"""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tracer.timeline import CLASSES

PROFILE_DIR: Final = Path(__file__).parent / "profiles"
US: Final = 1_000  # ns per µs


class ProfileError(ValueError):
    """A cost profile that cannot be used (unknown name, bad TOML, bad value)."""


def parse_duration(value: object, what: str) -> int:
    """``30s``, ``500ms``, ``250us``, ``10ns`` or a bare integer of ns → ns."""
    if isinstance(value, bool):
        raise ProfileError(f"{what}: expected a duration, got {value!r}")
    if isinstance(value, int):
        ns = value
    elif isinstance(value, str):
        text = value.strip()
        for suffix, scale in (("ms", 1_000_000), ("us", 1_000), ("ns", 1), ("s", 1_000_000_000)):
            if text.endswith(suffix):
                try:
                    ns = round(float(text[: -len(suffix)]) * scale)
                except ValueError:
                    raise ProfileError(f"{what}: bad duration {value!r}") from None
                break
        else:
            try:
                ns = int(text)
            except ValueError:
                raise ProfileError(
                    f"{what}: bad duration {value!r} (use e.g. 30s, 500ms or ns)"
                ) from None
    else:
        raise ProfileError(f"{what}: expected a duration, got {value!r}")
    if ns < 0:
        raise ProfileError(f"{what}: duration must not be negative")
    return ns


@dataclass(frozen=True, slots=True)
class ApiCosts:
    """What one API costs and whether it waits for an event with its job held."""

    pre: int
    locked: int
    between: int
    post: int
    priority: bool
    sync_wait: frozenset[str] = frozenset()
    sync_timeout: int | None = None  # None: bounded by the policy's job_timeout


@dataclass(slots=True)
class Profile:
    """A resolved cost profile, all times in integer ns."""

    name: str
    read: int
    read_per_byte_ps: int  # picoseconds per byte, so the per-byte cost stays an integer
    inline: int
    deferred: int
    wake_waiter: int
    rpc_pre: int
    rpc_locked: int
    rpc_between: int
    rpc_post: int
    handler_command: int
    default_class: str
    classes: dict[str, str]
    event_cost: dict[str, int]
    event_commands: dict[str, list[str]]
    high_priority: list[str]
    apis: dict[str, dict[str, Any]]
    _api_cache: dict[str, ApiCosts] = field(default_factory=dict)

    def event_class(self, name: str) -> str:
        return self.classes.get(name, self.default_class)

    def read_cost(self, size: int) -> int:
        return self.read + size * self.read_per_byte_ps // 1000

    def handler_cost(self, name: str, deferred: bool) -> int:
        cost = self.event_cost.get(name)
        if cost is not None:
            return cost
        return self.deferred if deferred else self.inline

    def api(self, name: str, *, qmp_command: bool) -> ApiCosts:
        """Costs of an API (an RPC named after a QMP command is never high priority)."""
        key = ("qmp:" if qmp_command else "api:") + name
        found = self._api_cache.get(key)
        if found is None:
            found = self._api_cache[key] = self._resolve_api(name, qmp_command)
        return found

    def _resolve_api(self, name: str, qmp_command: bool) -> ApiCosts:
        conf: dict[str, Any] = {}
        for pattern in sorted(self.apis, key=lambda p: (p != name, p)):
            if fnmatch.fnmatchcase(name, pattern):
                conf = {**self.apis[pattern], **conf}
        what = f"cost profile {self.name}: apis.{name}"
        timeout = conf.get("sync_timeout")
        return ApiCosts(
            pre=_us(conf.get("pre", self.rpc_pre / US), what + ".pre"),
            locked=_us(conf.get("locked", self.rpc_locked / US), what + ".locked"),
            between=_us(conf.get("between", self.rpc_between / US), what + ".between"),
            post=_us(conf.get("post", self.rpc_post / US), what + ".post"),
            priority=not qmp_command
            and any(fnmatch.fnmatchcase(name, p) for p in self.high_priority),
            sync_wait=frozenset(conf.get("sync_wait", ())),
            sync_timeout=None
            if timeout in (None, "job")
            else parse_duration(timeout, what + ".sync_timeout"),
        )


def _us(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ProfileError(f"{what}: expected a non-negative number of µs, got {value!r}")
    return round(value * US)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into ``base`` key by key (tables merge, values replace)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ProfileError(
            f"{path}: no such cost profile (named profiles: {', '.join(builtin_profiles())})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: {exc}") from None


def builtin_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str = "default", override: dict[str, Any] | None = None) -> Profile:
    """Load a named profile or a TOML file, then apply a session header's override."""
    base = _read_toml(PROFILE_DIR / "default.toml")
    label = name_or_path
    if name_or_path != "default":
        builtin = PROFILE_DIR / f"{name_or_path}.toml"
        path = builtin if builtin.exists() else Path(name_or_path)
        base = merge(base, _read_toml(path))
    if override:
        base = merge(base, override)
        label += "+session"
    return _resolve(label, base)


def _resolve(label: str, conf: dict[str, Any]) -> Profile:
    cpu = conf.get("cpu", {})
    events = conf.get("events", {})

    def cpu_ns(key: str) -> int:
        return _us(cpu.get(key, 0.0), f"cost profile {label}: cpu.{key}")

    classes = dict(events.get("class", {}))
    default_class = events.get("default_class", "inline")
    for name, cls in [*classes.items(), ("default_class", default_class)]:
        if cls not in CLASSES:
            raise ProfileError(
                f"cost profile {label}: events.class.{name}: {cls!r} is not one of {CLASSES}")
    per_byte = cpu.get("read_per_byte", 0.0)
    if isinstance(per_byte, bool) or not isinstance(per_byte, int | float) or per_byte < 0:
        raise ProfileError(f"cost profile {label}: cpu.read_per_byte must be a non-negative number")
    return Profile(
        name=label,
        read=cpu_ns("read"),
        read_per_byte_ps=round(per_byte * 1_000_000),
        inline=cpu_ns("inline"),
        deferred=cpu_ns("deferred"),
        wake_waiter=cpu_ns("wake_waiter"),
        rpc_pre=cpu_ns("rpc_pre"),
        rpc_locked=cpu_ns("rpc_locked"),
        rpc_between=cpu_ns("rpc_between"),
        rpc_post=cpu_ns("rpc_post"),
        handler_command=round(
            float(conf.get("qemu", {}).get("handler_command_ms", 0.5)) * 1_000_000),
        default_class=default_class,
        classes=classes,
        event_cost={k: _us(v, f"cost profile {label}: events.cost.{k}")
                    for k, v in events.get("cost", {}).items()},
        event_commands={k: list(v) for k, v in events.get("commands", {}).items()},
        high_priority=list(conf.get("rpc", {}).get("high_priority", [])),
        apis=dict(conf.get("apis", {})),
    )
