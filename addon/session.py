"""What the add-on is doing in this Blender session: the running job, the last one, the last backend check.

Module state, not saved with the .blend or the preferences. Operators change it through these
functions; panels, the status bar and the preferences read it through them (never through
operator modules), and :func:`sync_status` copies a runner's state into
``WindowManager.radiantforge_job``, the properties the panel draws.
"""

from __future__ import annotations

import json

from .importers.results import load_preview
from .transport import JobRunner

# The runner of the job in progress (at most one per Blender session).
_active_runner: JobRunner | None = None
# The runner of the last job that ended (what Resume continues).
_last_runner: JobRunner | None = None
# (runner, preview_version) of the preview file last loaded for the panel (reloading it on every tick would be wasteful).
_shown_preview: tuple | None = None
# Outcome of the last "Check Backend": True, False, or None (no check, or a start/stop report), and its lines.
_check_ok: bool | None = None
_check_lines: list[str] = []


def active_runner() -> JobRunner | None:
    """The runner of the job in progress, or None when no job runs."""
    return _active_runner if _active_runner is not None and not _active_runner.done else None


def held_runner() -> JobRunner | None:
    """The runner the session holds as its job, also one that has just ended and not yet been finished
    by its operator (None once the add-on abandoned it)."""
    return _active_runner


def is_job_running() -> bool:
    return active_runner() is not None


def last_runner() -> JobRunner | None:
    """The runner of the last job that ended (Resume continues it)."""
    return _last_runner


def set_last_runner(runner: JobRunner | None) -> None:
    """Make ``runner`` the job Resume continues (scripts use this for a runner they stepped themselves)."""
    global _last_runner
    _last_runner = runner


def begin_job(runner: JobRunner) -> None:
    """``runner`` is now the job in progress."""
    global _active_runner
    _active_runner = runner


def end_job(runner: JobRunner) -> None:
    """``runner`` has ended: it is no longer in progress, and it is the last job."""
    global _active_runner
    if _active_runner is runner:
        _active_runner = None
    set_last_runner(runner)


def stop_active_job() -> None:
    """Abandon the job in progress (the add-on is being disabled): captures are cleaned up."""
    global _active_runner
    if _active_runner is not None:
        _active_runner.close()
        _active_runner = None


def sync_status(context, runner: JobRunner) -> None:
    """Copy the runner's state into WindowManager.radiantforge_job (what the panel draws)."""
    global _shown_preview
    status = context.window_manager.radiantforge_job
    status.running = not runner.done
    status.phase = runner.phase
    status.progress = max(0.0, min(1.0, runner.progress))
    status.message = runner.message[:1000]
    status.error = runner.error[:1000]
    status.notice = getattr(runner, "notice", "")[:1000]
    status.job_id = runner.job_id
    status.job_dir = str(runner.job_dir)
    status.resumable = runner.done and runner.resumable
    if runner.metrics:
        status.metrics_json = json.dumps(runner.metrics)
    if runner.imported is not None and runner.imported.preview is not None:
        status.preview_image = runner.imported.preview
    elif runner.preview_path is not None and (runner, runner.preview_version) != _shown_preview \
            and runner.preview_path.is_file():
        status.preview_image = load_preview(runner.preview_path)
        _shown_preview = (runner, runner.preview_version)
    if runner.result_object is not None:
        status.result_object = runner.result_object
    if runner.done:
        status.cancel_requested = False


def set_check_report(ok: bool | None, lines: list[str]) -> None:
    """Keep what the last backend check (or start, or stop) said, for the preferences to show."""
    global _check_ok
    _check_ok = ok
    _check_lines[:] = lines


def check_report() -> tuple[bool | None, list[str]]:
    """(ok, lines) of the last backend check; lines is empty before the first one."""
    return _check_ok, list(_check_lines)
