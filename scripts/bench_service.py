"""Request latency of the backend service while a Gaussian training job trains, against the idle service.

Usage::

    python scripts/bench_service.py                      # 200 requests of each kind per window
    python scripts/bench_service.py --requests 100       # quicker
    python scripts/bench_service.py --size 128 --views 60 --json service_latency.json
    python scripts/bench_service.py --keep               # keep the service root, its log and the job

What it measures: a real ``python -m radiantforge.service`` on 127.0.0.1 (a free port, a random
token, a temporary root) answers the three requests the add-on polls with while a job runs:

- ``GET /api/v1/health``
- ``GET /api/v1/jobs/{id}``                the training job's summary
- ``GET /api/v1/jobs/{id}/events?since=N`` N is the ``next`` of the previous answer, as the add-on polls

Each kind has its own ``requests.Session`` (one keep-alive connection, as a client holds). A window
is ``--requests`` rounds of one request of each kind, a round every ``--interval`` s (0.1 s: five
times the add-on's polling rate; 0: back to back), the kinds in turn so that all of them see the
same moments of the window. The time of a request is its wall time (``time.perf_counter``) from
sending to the whole answer read; a few untimed requests per connection come first.

Two windows, in one run of one service:

1. busy: a Gaussian training job (a ray-traced sphere, ``--views`` views of ``--size`` px, CPU,
   100,000 steps, no checkpoints, a progress event every 10 steps) is uploaded and, once it runs
   and has reported a few progress events (a fresh machine first compiles the Numba kernels,
   allowed up to ``--start-timeout`` s), the requests are timed while it trains. The job's step
   rate during the window comes from the progress events the events requests received.
2. idle: the job is cancelled; once it has ended and its worker has exited, the same requests of
   the same job are timed again. The idle window comes second so that both windows ask about the
   same job record and the same events file (a job that never ran answers a different summary);
   the idle events file is then the longer one, which if anything slows the idle answers.

The table gives the median and 95th percentile of each window in milliseconds and their ratio
busy / idle. On a shared machine absolute times vary from run to run: compare the ratios, which
are of one run. The benchmark's client, the service and the worker share the machine's cores (the
worker's torch uses all of them by default), so on a 2-core machine the busy figures include the
client's own wait for a core; back to back (``--interval 0``) the client holds a core itself, and
in one measurement on 2 cores training then ran at a third of its rate with paced requests.

No pass or fail: the script exits non-zero only when the service does not start, the job does not
run, or a request fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the service test helpers: a real service process, a tiny dataset

from service_helpers import ServiceProcess, make_sphere_dataset, zip_folder

# Long enough that the job trains through both waits and the busy window; it is cancelled after.
TRAIN_ITERS = 100_000
PROGRESS_EVERY = 10
JOB_PARAMS = {
    "steps": TRAIN_ITERS, "checkpoint_every": 0, "device": "cpu", "progress_every": PROGRESS_EVERY,
    # Nothing beyond training steps while the window is timed.
    "eval_every": 0, "test_renders": False, "turntable_frames": 0,
}
# The busy window starts after this step: the first steps pay one-off costs (allocation, first calls).
STEADY_STEP = 3 * PROGRESS_EVERY
TEST_VIEW_FRACTION = 0.1  # held-out views, besides the --views training views (at least 2)
WARMUP_REQUESTS = 5  # per connection, untimed: connection set-up and first-call costs
REQUEST_TIMEOUT_S = 30.0
# A round of the three requests every 0.1 s: five times the add-on's polling rate (0.5 s), so that
# 200 rounds take 20 s and the job makes a few hundred steps meanwhile; back to back, the client
# would itself hold a core of a 2-core machine and measure its own competition with the worker.
DEFAULT_ROUND_INTERVAL_S = 0.1
# uvicorn closes a keep-alive connection idle for 5 s; a request sent as it closes fails, so stay well below.
MAX_ROUND_INTERVAL_S = 2.0
POLL_S = 0.2
CANCEL_TIMEOUT_S = 90.0  # the service gives a cancelled job 30 s to checkpoint before it kills it
# After the worker exits, let the machine settle (process exit, page cache) before timing idle.
IDLE_SETTLE_S = 2.0
SERVICE_STOP_TIMEOUT_S = 40.0
ENDED_STATES = ("finished", "failed", "cancelled")


class BenchmarkError(RuntimeError):
    """A failure that makes the figures meaningless: the script exits non-zero with its message."""


def build_job_archive(work: Path, size: int, views: int) -> Path:
    """A zip of job.json and data/ (nothing else: the service refuses other top-level entries)."""
    job_dir = work / "job"
    n_test = max(2, round(views * TEST_VIEW_FRACTION))
    make_sphere_dataset(job_dir / "data", n_train=views, n_test=n_test, size=size)
    job = {"format_version": 1, "kind": "gaussians", "params": JOB_PARAMS}
    (job_dir / "job.json").write_text(json.dumps(job, indent=2) + "\n", encoding="utf-8")
    return zip_folder(job_dir, work / "job.zip")


def checked_json(answer: requests.Response, what: str) -> dict:
    if answer.status_code not in (200, 201):
        raise BenchmarkError(f"{what}: HTTP {answer.status_code}: {answer.text[:400]}")
    return answer.json()


def submit_job(service: ServiceProcess, archive: Path) -> str:
    with open(archive, "rb") as f:
        answer = service.post("/jobs", files={"archive": ("job.zip", f, "application/zip")}, timeout=120)
    if answer.status_code != 201:
        raise BenchmarkError(f"submitting the job: HTTP {answer.status_code}: {answer.text[:400]}")
    return answer.json()["id"]


def wait_for_job(service: ServiceProcess, job_id: str, condition, timeout: float, what: str,
                 may_end: bool = False) -> dict:
    """Poll the job's summary until ``condition(summary)``; an end state first is an error unless ``may_end``."""
    deadline = time.monotonic() + timeout
    job = {}
    while time.monotonic() < deadline:
        job = checked_json(service.get(f"/jobs/{job_id}"), f"GET /jobs/{job_id}")
        if condition(job):
            return job
        if job["state"] in ENDED_STATES and not may_end:
            raise BenchmarkError(f"the job ended ({job['state']}) before {what}: {job.get('error')}\n{service.log()}")
        time.sleep(POLL_S)
    raise BenchmarkError(f"the job did not reach {what} within {timeout:.0f} s; last state {job.get('state')!r}, "
                         f"progress {job.get('progress')}\n{service.log()}")


def latest_event_index(service: ServiceProcess, job_id: str) -> int:
    """The ``next`` after the job's last event so far (pages through the whole events list)."""
    since = 0
    while True:
        page = checked_json(service.get(f"/jobs/{job_id}/events", params={"since": since}), "GET events")
        if page["next"] == since:
            return since
        since = page["next"]


def time_window(service: ServiceProcess, job_id: str, n_requests: int, interval_s: float) -> dict:
    """``n_requests`` rounds of one timed request of each kind, a round every ``interval_s``; seconds
    per request, and the progress events the events requests received, with the window's start and
    end (unix time)."""
    headers = service.headers()
    sessions = {kind: requests.Session() for kind in ("health", "job", "events")}
    for session in sessions.values():
        session.headers.update(headers)
    since = latest_event_index(service, job_id)
    progress_events: list[dict] = []
    job_states: set[str] = set()

    def health(session: requests.Session) -> requests.Response:
        return session.get(f"{service.url}/health", timeout=REQUEST_TIMEOUT_S)

    def job(session: requests.Session) -> requests.Response:
        return session.get(f"{service.url}/jobs/{job_id}", timeout=REQUEST_TIMEOUT_S)

    def events(session: requests.Session) -> requests.Response:
        return session.get(f"{service.url}/jobs/{job_id}/events", params={"since": since}, timeout=REQUEST_TIMEOUT_S)

    senders = list({"health": health, "job": job, "events": events}.items())
    seconds: dict[str, list[float]] = {kind: [] for kind, _ in senders}
    try:
        for _ in range(WARMUP_REQUESTS):
            for kind, send in senders:
                checked_json(send(sessions[kind]), f"warm-up {kind}")
        started_unix, window_started = time.time(), time.perf_counter()
        for round_index in range(n_requests):
            time.sleep(max(0.0, window_started + round_index * interval_s - time.perf_counter()))
            # The first request after the pause may find a core asleep: each kind goes first in turn.
            shift = round_index % len(senders)
            for kind, send in senders[shift:] + senders[:shift]:
                sent = time.perf_counter()
                try:
                    answer = send(sessions[kind])
                except requests.RequestException as exc:
                    raise BenchmarkError(f"the {kind} request of round {round_index + 1} failed after "
                                         f"{time.perf_counter() - sent:.2f} s: {exc}\n{service.log()}") from None
                seconds[kind].append(time.perf_counter() - sent)
                body = checked_json(answer, f"GET {answer.request.path_url}")
                if kind == "events":
                    progress_events += [event for event in body["events"] if event.get("type") == "progress"]
                    since = body["next"]
                elif kind == "job":
                    job_states.add(body["state"])
        ended_unix = time.time()
    finally:
        for session in sessions.values():
            session.close()
    return {"seconds": seconds, "progress": progress_events, "job_states": sorted(job_states),
            "started_unix": started_unix, "ended_unix": ended_unix}


def step_rate(progress_events: list[dict]) -> float | None:
    """Training steps per second between the first and last progress event of a window."""
    if len(progress_events) < 2:
        return None
    first, last = progress_events[0], progress_events[-1]
    span = last["time"] - first["time"]
    return (last["step"] - first["step"]) / span if span > 0 else None


def percentile(values: list[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise(seconds: list[float]) -> dict:
    milliseconds = [s * 1000.0 for s in seconds]
    return {"n": len(milliseconds), "median_ms": statistics.median(milliseconds), "p95_ms": percentile(milliseconds, 0.95),
            "max_ms": max(milliseconds)}


def stop_service(service: ServiceProcess) -> None:
    """SIGTERM, as the add-on stops it; SIGKILL when it has not exited in SERVICE_STOP_TIMEOUT_S."""
    process = service.process
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=SERVICE_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"the service did not exit {SERVICE_STOP_TIMEOUT_S:.0f} s after SIGTERM: killed", file=sys.stderr)
        process.kill()
        process.wait()


def torch_threads() -> int | None:
    """torch's default thread count here, which the worker inherits (torch is already imported by
    the dataset helpers, so asking costs nothing)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def run_benchmark(work: Path, args) -> dict:
    archive = build_job_archive(work, args.size, args.views)
    print(f"job archive: {args.views} training views of {args.size} px, {archive.stat().st_size / 1024:.0f} KiB", flush=True)

    service = ServiceProcess(work / "service_root", token=secrets.token_urlsafe(24))
    started = time.perf_counter()
    try:
        service.start()
    except RuntimeError as exc:
        raise BenchmarkError(f"the service did not start: {exc}") from None
    try:
        health = checked_json(service.get("/health"), "GET /health")
        print(f"service {health['version']} up in {time.perf_counter() - started:.1f} s at {service.url}; "
              f"device {health['device'].get('name')}", flush=True)

        job_id = submit_job(service, archive)
        started = time.perf_counter()
        job = wait_for_job(service, job_id,
                           lambda j: j["state"] == "running" and (j.get("progress") or {}).get("step", 0) >= STEADY_STEP,
                           args.start_timeout, f"step {STEADY_STEP} while running")
        print(f"job {job_id} running, step {job['progress']['step']} after {time.perf_counter() - started:.1f} s",
              flush=True)

        print(f"busy window: {args.requests} requests of each kind while the job trains ...", flush=True)
        busy = time_window(service, job_id, args.requests, args.interval)
        if busy["job_states"] != ["running"]:
            raise BenchmarkError(f"the job was not running through the whole busy window: {busy['job_states']}")

        checked_json(service.post(f"/jobs/{job_id}/cancel"), "POST cancel")
        # Ended and its worker gone, so that the idle window has the machine to itself.
        job = wait_for_job(service, job_id, lambda j: j["state"] in ENDED_STATES and j.get("worker_pid") is None,
                           CANCEL_TIMEOUT_S, "an end state with its worker gone", may_end=True)
        time.sleep(IDLE_SETTLE_S)
        print(f"job {job_id} {job['state']} at step {(job.get('progress') or {}).get('step')}; "
              f"idle window: {args.requests} requests of each kind ...", flush=True)
        idle = time_window(service, job_id, args.requests, args.interval)
        health = checked_json(service.get("/health"), "GET /health")
    finally:
        stop_service(service)

    endpoints = {}
    for kind, path in (("health", "/health"), ("job", "/jobs/{id}"), ("events", "/jobs/{id}/events?since=N")):
        idle_figures, busy_figures = summarise(idle["seconds"][kind]), summarise(busy["seconds"][kind])
        endpoints[path] = {
            "idle": idle_figures, "busy": busy_figures,
            "ratio_median": busy_figures["median_ms"] / idle_figures["median_ms"],
            "ratio_p95": busy_figures["p95_ms"] / idle_figures["p95_ms"],
        }
    return {
        "endpoints": endpoints,
        "busy_window_s": busy["ended_unix"] - busy["started_unix"],
        "idle_window_s": idle["ended_unix"] - idle["started_unix"],
        "busy_steps_per_s": step_rate(busy["progress"]),
        "busy_progress_events": len(busy["progress"]),
        "requests_per_kind": args.requests, "round_interval_s": args.interval, "size_px": args.size,
        "views": args.views, "job_params": JOB_PARAMS,
        "cpu_count": os.cpu_count(), "torch_threads": torch_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "device": health.get("device"),
        "load_average_1min": os.getloadavg()[0], "version": health.get("version"),
    }


def print_figures(figures: dict) -> None:
    threads = figures["torch_threads"]
    print(f"\nmachine: {figures['cpu_count']} CPUs, torch {threads if threads is not None else '?'} threads by default "
          f"(OMP_NUM_THREADS={figures['omp_num_threads'] or 'unset'}), service device {figures['device'].get('name')}; "
          f"load average {figures['load_average_1min']:.1f}")
    print(f"{figures['requests_per_kind']} requests of each kind per window, a round every {figures['round_interval_s']} s; "
          f"busy window {figures['busy_window_s']:.1f} s, idle window {figures['idle_window_s']:.1f} s")
    header = (f"{'endpoint':<28} {'idle med':>9} {'idle p95':>9} {'busy med':>9} {'busy p95':>9} "
              f"{'x median':>9} {'x p95':>7}")
    print(header)
    print("-" * len(header))
    for path, row in figures["endpoints"].items():
        idle, busy = row["idle"], row["busy"]
        print(f"{path:<28} {idle['median_ms']:>9.2f} {idle['p95_ms']:>9.2f} {busy['median_ms']:>9.2f} "
              f"{busy['p95_ms']:>9.2f} {row['ratio_median']:>9.2f} {row['ratio_p95']:>7.2f}")
    print("(milliseconds; x = busy / idle)")
    rate = figures["busy_steps_per_s"]
    rate_text = f"{rate:.1f} steps/s" if rate is not None else "not measured (fewer than 2 progress events)"
    print(f"training during the busy window: {rate_text} ({figures['busy_progress_events']} progress events, "
          f"{figures['views']} views of {figures['size_px']} px)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="timed requests of each kind per window (default 200)")
    parser.add_argument("--interval", type=float, default=DEFAULT_ROUND_INTERVAL_S,
                        help=f"seconds from one round of requests to the next (default {DEFAULT_ROUND_INTERVAL_S}; "
                             "0: back to back, the client then takes a core of its own)")
    parser.add_argument("--size", type=int, default=64, help="training image size in pixels (default 64)")
    parser.add_argument("--views", type=int, default=40, help="training views (default 40; a tenth more are held out)")
    parser.add_argument("--start-timeout", type=float, default=120.0,
                        help="seconds the job may take to report progress (a fresh machine compiles the Numba kernels first)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (service root, log, job) and print it")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args()
    if args.requests < 1 or args.size < 8 or args.views < 1 or not 0 <= args.interval <= MAX_ROUND_INTERVAL_S:
        parser.error(f"--requests and --views must be at least 1, --size at least 8, --interval 0 to {MAX_ROUND_INTERVAL_S}")

    folder = (contextlib.nullcontext(tempfile.mkdtemp(prefix="bench_service_")) if args.keep
              else tempfile.TemporaryDirectory(prefix="bench_service_"))
    with folder as work:
        try:
            figures = run_benchmark(Path(work), args)
        except BenchmarkError as exc:
            sys.exit(f"error: {exc}")
        except requests.RequestException as exc:
            sys.exit(f"error: a request failed: {exc}")
        finally:
            if args.keep:
                print(f"kept {work} (the service log is service_root-service.log)")
    print_figures(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
