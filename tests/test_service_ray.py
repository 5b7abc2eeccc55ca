"""The service with its jobs on Ray (``serve --ray``): the HTTP app in this process (a TestClient over the real
FastAPI app, with the real RequestGuard), a real local 2-CPU Ray cluster, real tiny Gaussian jobs (the ray-traced
sphere of tests/service_helpers.py, pure-PyTorch rasterizer: no Numba compile in a fresh Ray worker).

- a job uploaded as an archive finishes on a Ray worker and gives the result files (the same names, the splats within
  batch_helpers.GAUSSIAN_ATOL) that running the job folder here gives (what the local scheduler's worker runs);
- two jobs run at once (the cluster fits two one-CPU jobs) and a cancel reaches the running Ray task through the job
  folder: the job checkpoints and ends "cancelled" by itself;
- a Ray worker killed mid-job (SIGKILL, as the out-of-memory killer does) gets its job run again from its checkpoint,
  with a warning that says so, and the job finishes.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install \"radiantforge[ray]\")")

from fastapi.testclient import TestClient  # noqa: E402

from radiantforge.config_checks import MAX_GAUSSIAN_STEPS  # noqa: E402
from radiantforge.jobs import run_job  # noqa: E402
from radiantforge.service import create_app  # noqa: E402

from batch_helpers import assert_same_results  # noqa: E402
from service_helpers import make_job, make_sphere_dataset, zip_folder  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
TOKEN = "ray-test-token"
TINY = {"sh_degree": 0, "init_points": 100, "max_gaussians": 100, "device": "cpu", "progress_every": 1,
        "rasterize_backend": "torch", "turntable_frames": 2}
JOB_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_sphere_dataset(tmp_path_factory.mktemp("sphere") / "data", n_train=4, n_test=1)


@pytest.fixture(scope="module")
def client(cluster, tmp_path_factory):
    app = create_app(tmp_path_factory.mktemp("service") / "root", token=TOKEN, ray_address="auto", cancel_grace_s=20)
    with TestClient(app, base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {TOKEN}"}) as test_client:
        yield test_client


def submit(client, job_dir: Path) -> str:
    archive = zip_folder(job_dir, job_dir.parent / f"{job_dir.name}.zip")
    with open(archive, "rb") as file:
        answer = client.post("/api/v1/jobs", files={"archive": (archive.name, file, "application/zip")})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def wait_for(client, job_id: str, condition, what: str) -> dict:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if condition(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id}: {what} not reached within {JOB_TIMEOUT_S} s; last: {job}")


def ended(job: dict) -> bool:
    return job["state"] in ("finished", "failed", "cancelled")


def events_of(client, job_id: str) -> list[dict]:
    return client.get(f"/api/v1/jobs/{job_id}/events").json()["events"]


def test_a_job_on_ray_gives_the_local_result(client, dataset, tmp_path):
    health = client.get("/api/v1/health").json()
    assert health["scheduler"]["kind"] == "ray" and health["scheduler"]["concurrent_jobs"] == 2

    job_dir = make_job(tmp_path / "job", dataset, steps=30, checkpoint_every=10, **TINY)
    reference_dir = tmp_path / "reference"
    shutil.copytree(job_dir, reference_dir)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray task (one CPU)
    try:
        assert run_job(reference_dir)["state"] == "finished"
    finally:
        torch.set_num_threads(before)

    job_id = submit(client, job_dir)
    job = wait_for(client, job_id, ended, "an end state")
    assert job["state"] == "finished", job
    reference_files = sorted(p.relative_to(reference_dir / "result").as_posix()
                             for p in (reference_dir / "result").rglob("*") if p.is_file())
    assert job["result_files"] == reference_files
    downloaded = tmp_path / "point_cloud.ply"
    downloaded.write_bytes(client.get(f"/api/v1/jobs/{job_id}/files/point_cloud.ply").content)
    assert_same_results({"sphere": downloaded}, {"sphere": reference_dir / "result" / "point_cloud.ply"})
    types = [e["type"] for e in events_of(client, job_id)]
    assert types[0] == "started" and types[-1] == "finished" and "progress" in types


def test_two_jobs_at_once_and_a_cancel_reaches_the_ray_task(client, dataset, tmp_path):
    endless = dict(steps=MAX_GAUSSIAN_STEPS, checkpoint_every=0, **TINY)
    first = submit(client, make_job(tmp_path / "first", dataset, **endless))
    second = submit(client, make_job(tmp_path / "second", dataset, **endless))
    for job_id in (first, second):  # both run: the 2-CPU cluster fits two one-CPU jobs
        wait_for(client, job_id, lambda job: job["state"] == "running" and job["progress"] is not None, "progress")
    for job_id in (first, second):
        answer = client.post(f"/api/v1/jobs/{job_id}/cancel")
        assert answer.status_code == 200 and answer.json()["cancel_requested"], answer.text
    for job_id in (first, second):
        job = wait_for(client, job_id, ended, "an end state")
        assert job["state"] == "cancelled", job
        last = events_of(client, job_id)[-1]
        assert last["type"] == "cancelled" and last.get("by") != "service"  # the job stopped itself, not killed


def test_a_killed_ray_worker_s_job_resumes_from_its_checkpoint(client, dataset, tmp_path):
    job_id = submit(client, make_job(tmp_path / "victim", dataset, steps=400, checkpoint_every=20, **TINY))
    running = wait_for(client, job_id, lambda job: job["worker_pid"] is not None and (job["checkpoint"] or {}).get("step"),
                       "a checkpoint")
    pid = running["worker_pid"]
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    job = wait_for(client, job_id, ended, "an end state")
    assert job["state"] == "finished", job
    events = events_of(client, job_id)
    warnings = [e for e in events if e["type"] == "warning" and e.get("by") == "service"]
    assert len(warnings) == 1 and "its Ray worker died" in warnings[0]["message"], warnings
    assert "attempt 2 of 3" in warnings[0]["message"] and warnings[0]["checkpoint_step"] >= 20
    starts = [e for e in events if e["type"] == "started"]
    assert [e.get("resumed") for e in starts] == [False, True]
    assert job["result"]["steps"] == 400
    wait_for(client, job_id, lambda job: job["worker_pid"] is None, "its Ray task's end")  # a moment after its last event
