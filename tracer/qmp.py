"""QMP message facts: what kind of message a wire text is, its name and its id.

QEMU accepts single-quoted JSON strings as an extension; :func:`loads_qmp` reads both, so
an importer can classify ``{'execute': 'qmp_capabilities'}`` like QEMU would.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads_qmp(text: str) -> Any:
    """Parse QMP JSON, accepting QEMU's single-quoted strings; raise ValueError if invalid."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        if "'" not in text:
            raise ValueError("invalid JSON") from None
    return json.loads(_requote(text))


def _requote(text: str) -> str:
    """Turn single-quoted JSON strings into double-quoted ones (QEMU's extension)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"' or c == "'":
            quote = c
            j = i + 1
            buf: list[str] = []
            while j < n and text[j] != quote:
                if text[j] == "\\" and j + 1 < n:
                    nxt = text[j + 1]
                    buf.append("'" if nxt == "'" else "\\" + nxt)
                    j += 2
                    continue
                buf.append('\\"' if text[j] == '"' else text[j])
                j += 1
            if j >= n:
                raise ValueError("unterminated string")
            out.append('"' + "".join(buf) + '"')
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def classify(text: str, direction: str) -> tuple[str, str | None, Any, bool]:
    """Return ``(kind, name, id, has_id)`` for one QMP message's wire text.

    Kinds: ``command`` (``execute``/``exec-oob``), ``reply``, ``error``, ``event``,
    ``greeting``, or ``unparsed`` for text that is not a JSON object.
    """
    try:
        msg = loads_qmp(text.strip())
    except (ValueError, RecursionError):
        return "unparsed", None, None, False
    if not isinstance(msg, dict):
        return "unparsed", None, None, False
    has_id = "id" in msg
    qid = msg.get("id")
    if direction == "send":
        name = msg.get("execute", msg.get("exec-oob"))
        if isinstance(name, str):
            return "command", name, qid, has_id
        return "unparsed", None, None, False
    if "event" in msg and isinstance(msg["event"], str):
        return "event", msg["event"], None, False
    if "return" in msg:
        return "reply", None, qid, has_id
    if "error" in msg:
        return "error", None, qid, has_id
    if "QMP" in msg:
        return "greeting", None, None, False
    return "unparsed", None, None, False
