"""Getting timelines out: the QMP session format, recorders, importers and trace writers."""

__version__ = "0.1.0"
