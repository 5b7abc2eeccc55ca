"""The worker process: runs one job folder and exits.

    python -m radiantforge.service.worker JOB_DIR [--device cpu|cuda|mps] [--lock FILE] [--exit-with-parent]

The service starts one per job (scheduler.py). Everything the job has to say goes into its
events file (radiantforge.jobs.run_job), so the exit code is 0 for any job that ended on its
own, finished, failed or cancelled; anything else means the process itself died.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
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
    args = parser.parse_args(argv)

    faulthandler.enable()  # a segfault in a native extension leaves a trace in the worker log
    if args.exit_with_parent:
        _exit_when_stdin_closes()
    lock = None
    if args.lock:
        from .locks import FileLock

        lock = FileLock(args.lock)
        lock.acquire(blocking=True)

    from ..jobs import run_job

    outcome = run_job(args.job_dir, echo=False, device=args.device)
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
