"""The worker process: runs one job folder and exits.

    python -m radiantforge.service.worker JOB_DIR [--device cpu|cuda|mps] [--lock FILE] [--exit-with-parent]
                                          [--confine-models [--model-root DIR ...]]

The service starts one per job (scheduler.py). Everything the job has to say goes into its
events file (radiantforge.jobs.run_job), so the exit code is 0 for any job that ended on its
own, finished, failed, cancelled or suspended; anything else means the process itself died.
SIGTERM asks the job to checkpoint and stop for a later resume (as the service's SUSPEND does).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
import threading

# Exit code of a worker whose service went away (the job resumes when the service is back).
EXIT_SERVICE_GONE = 75


def _exit_when_stdin_closes() -> None:
    """The service holds the other end of our stdin and never writes: end of file means it died."""

    stdin = sys.stdin.fileno()

    def watch() -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader makes the
        # interpreter abort at exit ("could not acquire lock for <stdin>").
        try:
            while os.read(stdin, 1):
                pass
        except OSError:
            pass
        # Leave at once, like a power cut: the job resumes from its last checkpoint when the
        # service is back. Finishing the step here could race with a new worker.
        os._exit(EXIT_SERVICE_GONE)

    threading.Thread(target=watch, name="service-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radiantforge.service.worker", description=__doc__.splitlines()[0])
    parser.add_argument("job_dir", help="the job folder to run (or resume)")
    parser.add_argument("--device", default=None, help="override the job's device (auto, cpu, cuda, mps)")
    parser.add_argument("--lock", default=None, help="a lock file held while the job runs (waits for a previous holder)")
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when stdin closes (the service died)")
    parser.add_argument("--confine-models", action="store_true",
                        help="a model given as a folder must lie inside a --model-root (Hugging Face ids always work)")
    parser.add_argument("--model-root", action="append", default=[], help="a folder model folders may lie in")
    parser.add_argument("--keep-stop-requests", action="store_true",
                        help="a CANCEL or SUSPEND file in the job folder is a request made for this run: obey it")
    args = parser.parse_args(argv)

    faulthandler.enable()  # a segfault in a native extension leaves a trace in the worker log
    if args.exit_with_parent:
        _exit_when_stdin_closes()
    lock = None
    if args.lock:
        from .locks import FileLock

        lock = FileLock(args.lock)
        lock.acquire(blocking=True)

    from ..jobs import request_suspend, run_job

    # Whoever sends SIGTERM (the operator, a system shutdown) wants the process gone soon, not the
    # work lost: checkpoint at the next step and end as "suspended" (the service resumes it).
    signal.signal(signal.SIGTERM, lambda signum, frame: request_suspend(args.job_dir))
    outcome = run_job(args.job_dir, echo=False, device=args.device,
                      model_roots=args.model_root if args.confine_models else None,
                      clear_stop_requests=not args.keep_stop_requests)
    print(f"job {outcome['state']}", flush=True)
    if lock is not None:
        lock.release()
    return 0


def run_and_exit(argv: list[str] | None = None) -> None:
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    # Every file the job wrote is closed (and the events fsynced) by now; skipping the
    # interpreter's teardown of torch and friends lets the next job start a second sooner.
    os._exit(code)


if __name__ == "__main__":
    run_and_exit()
