"""Secret redaction of a command's wire text for the stored session.

Only the stored copy is redacted; the proxy forwards the exact bytes to QEMU. Secrets
are replaced by ``"<redacted>"`` in these places (the complete list):

- ``set_password``: ``arguments.password``
- ``change-vnc-password``: ``arguments.password``
- ``object-add`` with ``qom-type: "secret"``: ``arguments.data`` (and ``arguments.props.data``,
  the pre-5.0 nesting)
- ``blockdev-add``: every ``password`` or ``passphrase`` key at any depth of ``arguments``
  (e.g. an ``ssh``, ``iscsi`` or ``luks`` node given a secret inline)

The result is compact JSON of the command (QEMU's single-quoted strings become double
quoted) followed by the original trailing whitespace, so the line ending is kept.
"""

from __future__ import annotations

from typing import Any

import orjson

from tracer.qmp import loads_qmp

REDACTED = "<redacted>"
#: Keys that hold a secret anywhere inside ``blockdev-add`` arguments.
BLOCKDEV_SECRET_KEYS = frozenset({"password", "passphrase"})


def redact_command(wire: str) -> str | None:
    """Return the wire text with secrets replaced, or None when it holds no secret."""
    try:
        msg = loads_qmp(wire.strip())
    except (ValueError, RecursionError):
        return None
    if not isinstance(msg, dict):
        return None
    args = msg.get("arguments")
    if not isinstance(args, dict):
        return None
    name = msg.get("execute", msg.get("exec-oob"))
    if not _redact_arguments(name, args):
        return None
    body = orjson.dumps(msg).decode()
    return body + wire[len(wire.rstrip()):]


def _redact_arguments(name: Any, args: dict[str, Any]) -> bool:
    """Redact ``args`` in place for command ``name``; say whether anything was secret."""
    if name in ("set_password", "change-vnc-password"):
        return _replace(args, "password")
    if name == "object-add" and args.get("qom-type") == "secret":
        props = args.get("props")
        nested = isinstance(props, dict) and _replace(props, "data")
        return _replace(args, "data") or nested
    if name == "blockdev-add":
        return _redact_deep(args)
    return False


def _replace(obj: dict[str, Any], key: str) -> bool:
    if key not in obj:
        return False
    obj[key] = REDACTED
    return True


def _redact_deep(value: Any) -> bool:
    """Replace every secret key at any depth of a JSON value; say whether one was found."""
    found = False
    if isinstance(value, dict):
        for key, item in value.items():
            if key in BLOCKDEV_SECRET_KEYS:
                value[key] = REDACTED
                found = True
            else:
                found = _redact_deep(item) or found
    elif isinstance(value, list):
        for item in value:
            found = _redact_deep(item) or found
    return found
