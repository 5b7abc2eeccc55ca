"""A batch on a Ray cluster: one Ray task per entry, run by a pool of worker actors that keep their models.

- **Workers**: ``workers`` actors (:class:`BatchWorker`), each holding one GPU (``num_gpus=1``) when the
  cluster has GPUs and the batch's device allows CUDA, else ``cpus_per_entry`` CPUs. A worker loads
  a guidance model on first use and keeps it (:class:`~.execute.ModelCache`); the driver sends an
  entry preferably to a worker that already holds its model.
- **Progress**: a worker's events go through a small relay actor (fire-and-forget calls, in order)
  to the driver, which appends them to each entry's events file and draws the batch's progress bar.
- **Results**: with a shared disk the worker writes its result into the output folder (whole, then
  renamed, as every job does). Without one it writes on its own node and returns the result folder
  as a tar archive through Ray's object store; the driver unpacks it beside the output folder and
  renames it into place. Checkpoints then stay on the worker's node: a retry on that node resumes.
- **Faults**: a worker that dies mid-entry is restarted by Ray and the entry run again, from its
  checkpoint, at most ``max_retries`` times (``max_restarts`` / ``max_task_retries``); an entry that
  fails on its own input is not retried. A stop request reaches the workers through the relay: each
  checkpoints its entry and returns "cancelled".
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import InputError, JobCancelled
from ..events import EventLog
from .entries import BatchItem
from .execute import EntryOutcome, ModelCache, entry_paths, run_entry
from .runner import BatchProgress, report_finished

# How long the driver waits for a finished entry before it looks at events and stop requests again.
POLL_SECONDS = 0.2
# How often a worker asks the relay whether the batch is to stop (one remote call; not every step).
STOP_POLL_SECONDS = 0.5
NODE_SCRATCH = "radiantforge-batch"


class EventRelay:
    """Events of the workers, held for the driver; and the batch's stop request, held for the workers."""

    def __init__(self):
        self.events: list[tuple[str, dict]] = []
        self.stop = False

    def push(self, folder: str, event: dict) -> None:
        self.events.append((folder, event))

    def drain(self) -> list[tuple[str, dict]]:
        events, self.events = self.events, []
        return events

    def request_stop(self) -> None:
        self.stop = True

    def stop_requested(self) -> bool:
        return self.stop


class RelayedEvents(EventLog):
    """An EventLog of a worker: each event goes to the driver through the relay (nothing written here)."""

    def __init__(self, relay, folder: str):
        super().__init__(None)
        self.relay, self.folder = relay, folder

    def emit(self, type: str, **fields) -> dict:
        event = super().emit(type, **fields)
        self.relay.push.remote(self.folder, event)  # fire and forget: calls from one worker arrive in order
        return event


class BatchWorker:
    """A Ray actor running batch entries one at a time, with the guidance models it loaded kept."""

    def __init__(self, load_guidance, relay, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.models = ModelCache(load_guidance)
        self.relay = relay
        self._stop_checked, self._stop = 0.0, False

    def should_stop(self) -> bool:
        import ray

        now = time.monotonic()
        if not self._stop and now - self._stop_checked >= STOP_POLL_SECONDS:
            self._stop_checked = now
            self._stop = ray.get(self.relay.stop_requested.remote())
        return self._stop

    def run(self, item: BatchItem, out_dir: str, shared_disk: bool, overrides: dict | None) -> tuple[EntryOutcome, bytes | None]:
        """Run ``item``; without a shared disk also return its result folder as a tar archive."""
        target = Path(out_dir) if shared_disk else node_scratch(out_dir)
        target.mkdir(parents=True, exist_ok=True)
        events = RelayedEvents(self.relay, item.folder)
        try:
            outcome = run_entry(item, target, events, self.models, should_stop=self.should_stop, overrides=overrides)
        except JobCancelled:
            outcome = EntryOutcome(item.folder, item.kind, item.label, status="cancelled")
        outcome.worker = f"{socket.gethostname()}:{os.getpid()}"
        archive = None
        if not shared_disk and outcome.status in ("generated", "resumed"):
            result_dir, checkpoint_dir, _ = entry_paths(target, item)
            archive = pack_folder(result_dir)
            shutil.rmtree(result_dir, ignore_errors=True)  # the driver holds it now
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return outcome, archive

    def loads(self) -> int:
        return self.models.loads


def node_scratch(out_dir: str) -> Path:
    """Where a worker without the driver's disk keeps a batch's results and checkpoints on its own node."""
    digest = hashlib.sha1(str(out_dir).encode("utf-8")).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / NODE_SCRATCH / digest


def pack_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(folder, arcname=".")
    return buffer.getvalue()


def unpack_result(archive: bytes, out_dir: Path, folder: str) -> None:
    """Write a result sent back by a worker into ``out_dir/folder``: unpacked beside it, then renamed."""
    from ..result_folders import move_into_place

    partial = out_dir / f".{folder}.partial-driver-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
            tar.extractall(partial, filter="data")  # no links out, no absolute paths
        move_into_place(partial, out_dir / folder, replace_finished=False)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


# How long an explicit --ray address may take to accept a TCP connection before we say nobody answers
# (Ray itself retries for about two minutes before it gives up).
ADDRESS_PROBE_SECONDS = 5.0


def cluster_host_and_port(address: str) -> tuple[str, int] | None:
    """(host, port) of a plain ``HOST:PORT`` address (the GCS of ``ray start --head``); None for "auto" and
    ``ray://`` client addresses, which are not probed. InputError naming ``--ray`` for a malformed one."""
    if address == "auto" or "://" in address:
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--ray expects auto or HOST:PORT (the head's address, as `ray start --head` prints it), "
                         f"not {address!r}", field="--ray")
    return host.strip("[]"), int(port)


def probe_cluster_address(address: str, timeout_s: float = ADDRESS_PROBE_SECONDS) -> None:
    """InputError naming ``--ray`` at once when nothing listens at ``address`` (Ray would retry for minutes)."""
    host_port = cluster_host_and_port(address)
    if host_port is None:
        return
    try:
        with socket.create_connection(host_port, timeout=timeout_s):
            pass
    except OSError as exc:
        raise InputError(f"no Ray cluster answers at --ray {address}: {exc.strerror or exc}. Start one there with "
                         f"`ray start --head --port={host_port[1]}`, or use --ray auto for this machine's",
                         field="--ray") from None


def token_auth_advice(address: str) -> str:
    """What to do when the cluster at ``address`` refused this process's credentials."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is None or mode.lower() != "token":
        return (f"the Ray cluster at {address} uses token authentication (`ray start` enables it by default from "
                f"Ray 2.59), and Ray never sends a token to an explicit address unless asked: run with "
                f"RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN")
    return (f"the Ray cluster at {address} refused this process's token: use the one the head wrote "
            f"(~/.ray/auth_token on the head, or `ray get-auth-token` there)")


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def refused_credentials(exc: BaseException) -> bool:
    """Whether Ray's error says the cluster refused our token (Ray 2.60 keeps the AuthenticationError
    only as text inside the RuntimeError that its ConnectionError is raised from)."""
    return type(exc).__name__ == "AuthenticationError" or any(
        mark in str(exc) for mark in ("InvalidAuthToken", "AuthenticationError"))


def connect_to_cluster(address: str) -> bool:
    """Join (or start) the cluster; True when this call started Ray (and so shuts it down).
    InputError naming ``--ray`` when Ray is not installed, nothing answers at the address, or the
    cluster refuses this process's credentials."""
    try:
        import ray
    except ImportError:
        raise InputError("Ray is not installed: pip install \"radiantforge[ray]\" (or run without --ray)",
                         field="--ray") from None
    if ray.is_initialized():
        return False
    probe_cluster_address(address)
    try:
        ray.init(address=None if address == "auto" else address, include_dashboard=False, log_to_driver=True,
                 configure_logging=False)
    except Exception as exc:
        if any(refused_credentials(e) for e in exception_chain(exc)):
            raise InputError(token_auth_advice(address), field="--ray") from None
        raise
    return True


def worker_resources(overrides: dict | None, cpus_per_entry: int) -> tuple[dict[str, float], int | None, int]:
    """(actor options, torch threads, workers the cluster fits) for this cluster and the batch's device."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    device = (overrides or {}).get("device", "auto")
    if gpus and device in ("auto", "cuda"):
        return {"num_gpus": 1, "num_cpus": 1}, None, gpus
    return {"num_cpus": cpus_per_entry}, cpus_per_entry, max(1, cpus // cpus_per_entry)


def run_on_ray(pending: list[BatchItem], out_dir: Path, outcomes: dict[str, EntryOutcome], *, address: str,
               workers: int | None, shared_disk: bool, events: EventLog, should_stop, load_guidance,
               overrides: dict[str, Any] | None, max_retries: int, cpus_per_entry: int) -> None:
    """Run ``pending`` on the cluster at ``address``, filling ``outcomes``; raises JobCancelled after a stop."""
    started_ray = connect_to_cluster(address)
    import ray

    try:
        _dispatch(ray, pending, out_dir.resolve(), outcomes, workers, shared_disk, events, should_stop, load_guidance,
                  overrides, max_retries, cpus_per_entry)
    finally:
        if started_ray:
            ray.shutdown()


def _dispatch(ray, pending, out_dir, outcomes, workers, shared_disk, events, should_stop, load_guidance, overrides,
              max_retries, cpus_per_entry) -> None:
    options, threads, fits = worker_resources(overrides, cpus_per_entry)
    count = min(workers or fits, len(pending))
    relay = ray.remote(num_cpus=0)(EventRelay).remote()
    worker_class = ray.remote(max_restarts=max_retries, max_task_retries=max_retries)(BatchWorker)

    def new_worker():
        return worker_class.options(**options).remote(load_guidance, relay, threads)

    idle = [new_worker() for _ in range(count)]
    events.emit("info", message=f"{count} Ray workers ({', '.join(f'{k}={v}' for k, v in options.items())} each) for "
                                f"{len(pending)} entries", workers=count, resources=options)
    models_of: dict[Any, set] = {}  # worker -> the models it has loaded (where its next entries go)
    queue = list(pending)
    by_folder = {item.folder: item for item in pending}
    inflight: dict[Any, tuple[Any, BatchItem]] = {}
    starts: dict[str, int] = {}  # folder -> runs begun (more than one: its worker died and Ray ran it again)
    entry_logs: dict[str, Path] = {}
    progress = BatchProgress(len(pending), events.echo)
    stopping = False

    def forward_events() -> None:
        for folder, event in ray.get(relay.drain.remote()):
            item = by_folder[folder]
            path = entry_logs.setdefault(folder, entry_paths(out_dir, item)[2])
            with open(path, "a", encoding="utf-8") as file:  # the event as the worker made it
                file.write(json.dumps(event, allow_nan=False) + "\n")
            if event.get("type") == "started":
                starts[folder] = starts.get(folder, 0) + 1
            progress.update(folder, item.label, event)

    done = 0
    while queue or inflight:
        if not stopping and should_stop is not None and should_stop():
            stopping = True
            relay.request_stop.remote()
            events.emit("info", message=f"stopping: {len(inflight)} running entries write a checkpoint")
        while idle and queue and not stopping:
            worker = idle.pop(0)
            held = models_of.get(worker, set())
            item = next((i for i in queue if i.model in held), queue[0])
            queue.remove(item)
            inflight[worker.run.remote(item, str(out_dir), shared_disk, overrides)] = (worker, item)
            if item.model is not None:
                models_of.setdefault(worker, set()).add(item.model)
        if not inflight:
            break
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_SECONDS)
        forward_events()
        for ref in ready:
            worker, item = inflight.pop(ref)
            try:
                outcome, archive = ray.get(ref)
                if archive is not None:
                    unpack_result(archive, out_dir, item.folder)
            except ray.exceptions.RayActorError as exc:  # its worker died more often than it may be restarted
                outcome = EntryOutcome(item.folder, item.kind, item.label, status="failed",
                                       error=f"its Ray worker died {max_retries + 1} times: {type(exc).__name__}")
                ray.kill(worker, no_restart=True)
                models_of.pop(worker, None)
                worker = new_worker()
            except InputError as exc:  # a result sent back that cannot be put in place
                outcome = EntryOutcome(item.folder, item.kind, item.label, status="failed", error=str(exc))
            outcome.attempts = max(starts.get(item.folder, 0), 1)
            outcomes[item.folder] = outcome
            idle.append(worker)
            if outcome.status == "cancelled":
                continue
            done += 1
            progress.finished(item.folder)
            report_finished(events, outcome, done, len(pending))
    forward_events()
    for folder, count in starts.items():  # events that reached the relay after their entry's result
        outcomes[folder].attempts = max(outcomes[folder].attempts, count)
    if stopping:
        raise JobCancelled(f"the batch stopped: {done} of {len(pending)} entries finished; run it again to continue")
