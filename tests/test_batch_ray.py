"""Batches on a real local Ray cluster (radiantforge.batch.on_ray): the mixed batch of tests/batch_helpers.py
(tiny Stable Diffusion, the oracle, a texture job, a Gaussian job) run by two worker actors gives the
very bytes the local path gives (same seeds, one torch thread each: guided results byte for byte, Gaussian ones within
batch_helpers.GAUSSIAN_ATOL), a
worker killed mid-entry (SIGKILL from inside, at a known step) is restarted and its entry resumed
from its checkpoint, a re-run skips everything; results sent back without a shared disk; and a stop.
Not tested here: joining a cluster by its address (``ray start --head`` on loopback: the head
advertised this machine's network address and the driver's connection to it timed out)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install \"radiantforge[ray]\")")

from radiantforge.batch import run_batch  # noqa: E402
from radiantforge.batch.on_ray import connect_to_cluster, node_scratch  # noqa: E402
from radiantforge.errors import InputError, JobCancelled  # noqa: E402
from radiantforge.events import EventLog, read_events  # noqa: E402

from batch_helpers import KILL_MARKER_ENV, assert_same_results, oracle_loader, result_files, write_mixed_batch  # noqa: E402
from tiny_diffusion import build_tiny_stable_diffusion  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 2-CPU Ray cluster of this process; workers import tests/ (the oracle's loader) and share the kill marker."""
    marker = tmp_path_factory.mktemp("kill") / "killed"
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
           KILL_MARKER_ENV: str(marker), "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": env}, configure_logging=False)
    yield marker
    ray.shutdown()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, shared_assets):
    """(batch file whose oracle entry kills its worker once, local run's digests by entry label)."""
    root = tmp_path_factory.mktemp("mixed")
    tiny = build_tiny_stable_diffusion(root / "model").folder
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker (one CPU each)
    try:
        local_batch = write_mixed_batch(root / "local", tiny)
        local = run_batch(local_batch, root / "local_out", load_guidance=oracle_loader)
    finally:
        torch.set_num_threads(before)
    return write_mixed_batch(root / "ray", tiny, kill=True), result_files(root / "local_out", local.outcomes)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_cli(args: list[str], env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "radiantforge", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_batch_joins_a_token_cluster_by_its_address_and_bad_addresses_are_named(mixed, tmp_path):
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    assert ray_cli, "the ray command comes with the ray package"
    batch, local_results = mixed
    lines = batch.read_text().splitlines()
    subset = batch.parent / "address.jsonl"
    subset.write_text("\n".join([lines[1], lines[4]]) + "\n")  # the tiny-SD prompt and the Gaussian job
    port = free_port()
    address = f"127.0.0.1:{port}"
    base_env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    base_env["OMP_NUM_THREADS"] = "1"
    token_env = {**base_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    started = subprocess.run([ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                              "--disable-usage-stats"], env=token_env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        out = tmp_path / "out"
        ran = run_cli(["batch", str(subset), "--out", str(out), "--ray", address, "--no-shared-disk"], token_env)
        assert ran.returncode == 0, ran.stderr[-3000:]
        entries = json.loads((out / "summary.json").read_text())["entries"]
        assert [e["status"] for e in entries] == ["generated", "generated"]
        assert_same_results(result_files(out, [SimpleNamespace(**e) for e in entries]), local_results)
        assert not list(out.glob(".*partial*"))
        assert not any(node_scratch(str(out.resolve())).glob("*"))  # the workers' copies are gone

        # Without the token: Ray's own wait shortened (its RAY_gcs_server_port_wait_time_s), our message checked.
        refused = run_cli(["batch", str(subset), "--out", str(tmp_path / "refused"), "--ray", address],
                          {**base_env, "RAY_gcs_server_port_wait_time_s": "2"}, timeout=120)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "--ray" in refused.stderr and "RAY_AUTH_MODE=token" in refused.stderr, refused.stderr[-3000:]
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=base_env, capture_output=True, timeout=120)

    begun = time.perf_counter()  # in this process: Ray is not initialised yet (this is the module's first test)
    with pytest.raises(InputError, match="no Ray cluster answers at --ray") as nobody:
        connect_to_cluster(f"127.0.0.1:{free_port()}")
    assert nobody.value.field == "--ray" and time.perf_counter() - begun < 30
    with pytest.raises(InputError, match="HOST:PORT"):
        connect_to_cluster("head-without-port")
    assert not ray.is_initialized()


def test_mixed_batch_on_ray_matches_the_local_path_and_survives_a_killed_worker(cluster, mixed, tmp_path):
    batch, local_results = mixed
    out = tmp_path / "out"
    events_file = tmp_path / "batch.events.jsonl"
    report = run_batch(batch, out, ray="auto", workers=2, load_guidance=oracle_loader, events=EventLog(events_file))
    statuses = {o.label: o.status for o in report.outcomes}
    assert cluster.exists(), "the oracle entry's worker was to kill itself"
    assert statuses == {"a red teapot": "generated", "spot by the oracle": "resumed",
                        "a cow with patches (meshes/spot_triangulated.obj)": "generated",
                        "scenes/sphere": "generated"}, report.table
    killed = next(o for o in report.outcomes if o.label == "spot by the oracle")
    assert killed.attempts == 2 and all(o.attempts == 1 for o in report.outcomes if o is not killed)
    killed_events = read_events(out / f"{killed.folder}.events.jsonl")
    assert [e["type"] for e in killed_events].count("started") == 2
    assert any(e.get("message") == "resuming from step 2 of 4" for e in killed_events)
    assert_same_results(result_files(out, report.outcomes), local_results)  # the killed entry too
    assert len({o.worker for o in report.outcomes}) >= 2  # two workers shared the batch
    finished_lines = [e for e in read_events(events_file) if e.get("status") in ("generated", "resumed")]
    assert len(finished_lines) == 4

    again = run_batch(batch, out, ray="auto", load_guidance=oracle_loader)
    assert [o.status for o in again.outcomes] == ["skipped"] * 4


def test_a_stop_checkpoints_the_running_entries_and_writes_the_summary(cluster, mixed, tmp_path):
    batch, _ = mixed
    lines = batch.read_text().splitlines()
    subset = batch.parent / "subset.jsonl"
    subset.write_text("\n".join([lines[1], lines[4]]) + "\n")  # the tiny-SD prompt and the Gaussian job
    stopped_out = tmp_path / "stopped"
    with pytest.raises(JobCancelled):
        run_batch(subset, stopped_out, ray="auto", workers=1, load_guidance=oracle_loader, should_stop=lambda: True)
    summary = json.loads((stopped_out / "summary.json").read_text())
    assert {e["status"] for e in summary["entries"]} <= {"pending", "cancelled"}
