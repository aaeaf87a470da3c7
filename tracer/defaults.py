"""Where the embedded default session lives, so commands work without arguments."""

from __future__ import annotations

from pathlib import Path

import tracer
from tracer.session import SessionError


def traces_dir() -> Path:
    """The repository's ``traces/`` folder (the package is installed editable)."""
    return Path(tracer.__file__).resolve().parents[1] / "traces"


def default_session() -> Path:
    """The first ``*.qmp.jsonl`` in ``traces/`` (sorted by name)."""
    folder = traces_dir()
    sessions = sorted(folder.glob("*.qmp.jsonl")) if folder.is_dir() else []
    if not sessions:
        raise SessionError(folder, 0, "no *.qmp.jsonl session here to use by default; "
                           "give a SESSION path")
    return sessions[0]
