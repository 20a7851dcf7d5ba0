"""The ``m3-rag`` command line (``main`` is the console-script entry point)."""

from m3_rag.cli.app import app, main, run

__all__ = ["app", "main", "run"]
