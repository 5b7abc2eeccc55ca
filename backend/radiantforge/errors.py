"""Errors the user can act on.

Every problem with user input is raised as an :class:`InputError` that names the file and the
field, so the CLI, the job runner and the service can show it without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class RadiantForgeError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(RadiantForgeError, ValueError):
    """Bad user input: a file or a field that is missing or does not hold what was expected.

    The message reads ``<file>: <field>: <problem>`` with the parts that are known.
    """

    def __init__(self, problem: str, *, file: str | Path | None = None, field: str | None = None):
        self.problem = problem
        self.file = str(file) if file is not None else None
        self.field = field
        parts = [p for p in (self.file, field, problem) if p]
        super().__init__(": ".join(parts))


class JobCancelled(RadiantForgeError):
    """Raised inside a job when the user asked to stop it (after a checkpoint was written)."""
