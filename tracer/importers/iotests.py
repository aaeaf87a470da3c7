"""Import QEMU iotests reference outputs (``tests/qemu-iotests/NNN.out``) as sessions.

The transcripts mix QMP messages with qemu-io / qemu-img output (ignored) and mask what
changes between runs: event times as ``TIMESTAMP`` (bash tests) or ``"SECS"`` /
``"USECS"`` (python tests), other values as bare words such as ``OFFSET``. Commands may
be single-quoted and span several lines; some replies have no command in the transcript.

Times are synthetic (:mod:`tracer.importers.latency`). The masked event timestamp is
replaced by the event's synthetic time (seconds and microseconds since the synthetic
epoch 0), and any other bare masking word outside strings becomes a JSON string (so
``"offset": OFFSET`` is stored as ``"offset": "OFFSET"``, ``(filtered)`` as
``"(filtered)"``). Transcripts do not name VMs:
every record goes to one VM (``--vm``, default ``vm0``). Example::

    qmpreplay import iotests 219.out -o iotest-219.qmp.jsonl
"""

from __future__ import annotations

import os
import re

from tracer.importers.sink import ImportResult
from tracer.importers.transcript import import_transcript

_TIMESTAMP = re.compile(r'("(seconds|microseconds)":\s*)(TIMESTAMP|"SECS"|"USECS")')
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|\(?\b[A-Za-z_][A-Za-z0-9_]*\b\)?')
_JSON_WORDS = frozenset({"true", "false", "null"})


def unmask(text: str, t_ns: int) -> str:
    """Resolve the transcript's masks: the event time from ``t_ns``, other words quoted."""
    seconds, micros = divmod(t_ns // 1000, 1_000_000)

    def stamp(m: re.Match[str]) -> str:
        return m.group(1) + str(seconds if m.group(2) == "seconds" else micros)

    text = _TIMESTAMP.sub(stamp, text)

    def word(m: re.Match[str]) -> str:
        token = m.group(0)
        if token[0] in "\"'" or token in _JSON_WORDS:
            return token
        return f'"{token}"'

    return _TOKEN.sub(word, text)


def import_file(source: str | os.PathLike[str], output: str | os.PathLike[str], *,
                strict: bool = False, vm: str | None = None) -> ImportResult:
    """Import an iotests ``.out`` transcript into the session ``output``."""
    return import_transcript(source, output, kind="iotests", strict=strict, vm=vm,
                             unmask=unmask)
