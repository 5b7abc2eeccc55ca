"""Errors the user can act on.

Every problem with user input is raised as an :class:`InputError` that names the file and the
field, so the CLI, the job runner and the service can show it without a traceback.
"""

from __future__ import annotations

from pathlib import Path

# Values a message repeats back are cut to about this many characters: a 10 MB string sent as a
# parameter must not come back as a 10 MB error (nor fill a log or the add-on's status line).
MAX_ECHO_CHARS = 80


def shorten(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``text`` on one line, cut to about ``limit`` characters (the cut says how long it was)."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def quoted(value, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(value)`` for a message, cut like :func:`shorten` (a huge value is never echoed whole)."""
    try:
        text = repr(value)
    except RecursionError:  # a deeply nested list from JSON
        text = f"<deeply nested {type(value).__name__}>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


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


# Why a running job stopped early: the user cancelled it, or the service is shutting down and
# the job is to resume when the service is back (the ``should_stop`` callbacks return one of them).
STOP_CANCELLED = "cancelled"
STOP_SUSPENDED = "suspended"


def stop_reason(requested) -> str:
    """What a truthy ``should_stop()`` answer means: STOP_SUSPENDED, or STOP_CANCELLED (``True`` included)."""
    return STOP_SUSPENDED if requested == STOP_SUSPENDED else STOP_CANCELLED


class JobCancelled(RadiantForgeError):
    """Raised inside a job when it was asked to stop (after a checkpoint was written).

    reason: STOP_CANCELLED (the user stopped it) or STOP_SUSPENDED (the service is shutting down;
    the job resumes when it is back). The job emitted an event of that name.
    """

    def __init__(self, message: str = "", reason: str = STOP_CANCELLED):
        super().__init__(message)
        self.reason = reason
