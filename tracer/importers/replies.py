"""Import libvirt ``.replies`` files (``tests/qemucapabilitiesdata``) as sessions.

These files hold pretty-printed JSON objects separated by blank lines: each command
(``"id": "libvirt-N"``) followed by its reply or error; no events, no times. Times are
synthetic (:mod:`tracer.importers.latency`); all records go to one VM (``--vm``, default
``vm0``). Example::

    qmpreplay import replies caps_4.2.0.x86_64.replies -o caps.qmp.jsonl
"""

from __future__ import annotations

import os

from tracer.importers.sink import ImportResult
from tracer.importers.transcript import import_transcript


def import_file(source: str | os.PathLike[str], output: str | os.PathLike[str], *,
                strict: bool = False, vm: str | None = None) -> ImportResult:
    """Import a ``.replies`` file into the session ``output``."""
    return import_transcript(source, output, kind="replies", strict=strict, vm=vm)
