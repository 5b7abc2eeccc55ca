"""Batches of the three jobs (text-to-3D prompts, texture jobs, Gaussian jobs) from one file.

- :mod:`.entries`: the batch file (JSON lines, YAML, or today's prompt-per-line text), checked up front,
  each entry's result folder named after its content.
- :mod:`.execute`: one entry run (or resumed), the guidance models kept per process.
- :mod:`.runner`: :func:`run_batch` — here, one entry after another (no Ray), or on Ray when asked.
- :mod:`.on_ray`: the Ray driver and worker actors (imported only with ``ray=...``).

    from radiantforge.batch import run_batch
    report = run_batch("assets.jsonl", "out")                  # this machine
    report = run_batch("assets.jsonl", "out", ray="auto")      # the Ray cluster of this machine
"""

from .entries import BatchItem, content_folder_name, read_batch
from .execute import STATUSES, EntryOutcome, ModelCache, run_entry
from .runner import BatchReport, run_batch, summary_table

__all__ = ["BatchItem", "content_folder_name", "read_batch", "STATUSES", "EntryOutcome", "ModelCache", "run_entry",
           "BatchReport", "run_batch", "summary_table"]
