"""Importers: turn QMP material recorded by other tools into qmpreplay sessions.

One module per source (``libvirt_log``, ``iotests``, ``replies``, ``capture``); each
streams its input, writes through :class:`tracer.importers.sink.ImportSink` and returns
an :class:`tracer.importers.sink.ImportResult` whose :meth:`summary` is the one line the
CLI prints. :data:`IMPORTERS` maps the CLI's source names to the import functions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tracer.importers import capture, iotests, libvirt_log, replies
from tracer.importers.sink import ImportResult

#: ``import_file(source, output, *, strict, vm) -> ImportResult`` per source name.
Importer = Callable[..., ImportResult]

IMPORTERS: dict[str, Importer] = {
    "libvirt-log": libvirt_log.import_file,
    "iotests": iotests.import_file,
    "replies": replies.import_file,
    "capture": capture.import_file,
}


def import_session(
    kind: str, source: Path, output: Path, *, strict: bool = False, vm: str | None = None
) -> ImportResult:
    """Import ``source`` of the given kind into the session file ``output``."""
    return IMPORTERS[kind](source, output, strict=strict, vm=vm)
