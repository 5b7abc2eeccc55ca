"""The backend service (`radiantforge serve`) over real HTTP: a real uvicorn server in a subprocess
on loopback, real worker processes, real (tiny) Gaussian training jobs.

The dataset is a sphere coloured by its normal, ray traced exactly at 16 px from 8 cameras
(tests/service_helpers.py); jobs train for a handful of steps on the CPU.
"""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from plyfile import PlyData

import radiantforge
from radiantforge.devices import resolve_device
from radiantforge.config_checks import MAX_GAUSSIAN_STEPS
from radiantforge.errors import InputError
from radiantforge.events import read_events
from radiantforge.gaussians.train import checkpoint_path
from radiantforge.jobs import JOB_KINDS
from radiantforge.service import is_loopback, serve

from service_helpers import ServiceProcess, make_job, make_sphere_dataset, wait_until_dead, zip_folder

TOKEN = "test-token-5d1c"
MAX_UPLOAD_MB = 1
# Small, fast runs: few Gaussians, degree-0 colour, a progress event every step.
FAST = {"sh_degree": 0, "init_points": 100, "max_gaussians": 100, "device": "cpu", "progress_every": 1}
NEVER_ENDING_ITERS = MAX_GAUSSIAN_STEPS  # a job that only stops when it is cancelled or killed
JOB_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_sphere_dataset(tmp_path_factory.mktemp("sphere") / "data")


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory) -> Path:
    """A Hugging Face cache with one downloaded model, one half-downloaded one and a dataset."""
    cache = tmp_path_factory.mktemp("hf_hub")
    snapshot = cache / "models--tiny-org--tiny-sd" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    (cache / "models--half--downloaded" / "blobs").mkdir(parents=True)
    dataset_snapshot = cache / "datasets--some--data" / "snapshots" / "feed"
    dataset_snapshot.mkdir(parents=True)
    (dataset_snapshot / "data.json").write_text("{}")
    return cache


@pytest.fixture(scope="module")
def service(tmp_path_factory, hf_cache):
    base = tmp_path_factory.mktemp("service")
    process = ServiceProcess(base / "root", token=TOKEN, extra_args=("--max-upload-mb", str(MAX_UPLOAD_MB)),
                             env={"HF_HUB_CACHE": str(hf_cache)}).start()
    yield process
    process.stop()


def upload(service: ServiceProcess, archive: Path):
    with open(archive, "rb") as f:
        return service.post("/jobs", files={"archive": (archive.name, f, "application/zip")})


def tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} if folder.exists() else set()


# ------------------------------------------------------------------------------ health and tokens


def test_health_reports_version_device_job_kinds_and_local_models(service):
    answer = service.get("/health")
    assert answer.status_code == 200, answer.text
    health = answer.json()
    assert health["status"] == "ok"
    assert health["version"] == radiantforge.__version__
    assert health["api_version"] == 1
    assert health["device"]["type"] == resolve_device("auto").type
    assert isinstance(health["device"]["name"], str) and health["device"]["name"]
    assert health["device"]["memory_total_bytes"] is None or health["device"]["memory_total_bytes"] > 0
    assert health["job_kinds"] == sorted(JOB_KINDS)
    # Only complete model downloads count; datasets are not models.
    assert [model["id"] for model in health["models"]] == ["tiny-org/tiny-sd"]
    assert health["max_upload_bytes"] == MAX_UPLOAD_MB * 1024 * 1024


@pytest.mark.parametrize("method, path", [("GET", "/health"), ("GET", "/jobs"), ("POST", "/jobs"),
                                          ("GET", "/jobs/20250101-000000-00000000"), ("DELETE", "/jobs/20250101-000000-00000000")])
def test_every_endpoint_needs_the_token(service, method, path):
    missing = service.request(method, path, token=None)
    assert missing.status_code == 401
    assert "Authorization: Bearer" in missing.json()["detail"]
    wrong = service.request(method, path, token="not-the-token")
    assert wrong.status_code == 401 and "wrong token" in wrong.json()["detail"]
    basic = service.request(method, path, token=None, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401


def test_refuses_to_listen_beyond_loopback_without_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("RADIANTFORGE_TOKEN", raising=False)
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.com"):
        with pytest.raises(InputError, match="without a token") as error:
            serve(host=host, port=0, root=tmp_path / "root")
        assert error.value.field == "token"
    assert not (tmp_path / "root").exists()
    assert all(is_loopback(host) for host in ("127.0.0.1", "127.8.0.1", "localhost", "::1"))


# --------------------------------------------------------------------------------- running jobs


def test_uploaded_job_runs_and_its_results_download(service, dataset, tmp_path):
    job_dir = make_job(tmp_path / "job", dataset, iters=3, **FAST)
    # Zipping a folder usually wraps it in one top-level folder; the service unwraps it.
    archive = zip_folder(job_dir, tmp_path / "job.zip", prefix="my job/")
    answer = upload(service, archive)
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["id"]
    assert answer.json()["state"] in ("queued", "running")

    ended = service.wait_until_ended(job_id, JOB_TIMEOUT_S)
    assert ended["state"] == "finished", ended
    result = ended["result"]
    assert result["steps"] == 3
    assert ended["progress"]["step"] == 3 and ended["progress"]["total"] == 3
    listed = {entry["path"] for entry in result["files"] if entry.get("format") != "frames"}
    frame_folders = {entry["path"] for entry in result["files"] if entry.get("format") == "frames"}
    assert listed <= set(ended["result_files"])
    for folder in frame_folders:  # a turntable's PNG frames are listed as their folder
        assert any(name.startswith(folder + "/") for name in ended["result_files"]), folder
    result_dir = Path(ended["job_dir"]) / "result"
    assert result_dir.is_relative_to(service.root)

    # result.zip holds exactly the result folder, byte for byte.
    download = service.get(f"/jobs/{job_id}/result.zip")
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
        assert sorted(zf.namelist()) == ended["result_files"]
        for name in zf.namelist():
            assert zf.read(name) == (result_dir / name).read_bytes(), name
    # Single files, nested ones too; the PLY holds the number of Gaussians the result reports.
    ply = service.get(f"/jobs/{job_id}/files/point_cloud.ply")
    assert ply.status_code == 200
    assert PlyData.read(io.BytesIO(ply.content))["vertex"].count == result["n_gaussians"]
    render_name = next(e["path"] for e in result["files"] if e["role"] == "test_render")
    render = service.get(f"/jobs/{job_id}/files/{render_name}")
    assert render.status_code == 200
    assert Image.open(io.BytesIO(render.content)).size == Image.open(result_dir / render_name).size
    for outside in ("../job.json", "%2e%2e/%2e%2e/record.json", "nothing.txt", "test_renders"):
        assert service.get(f"/jobs/{job_id}/files/{outside}").status_code == 404, outside

    # Events: the whole story, pageable from any index.
    events = service.events(job_id)
    types = [event["type"] for event in events]
    assert types[0] == "started" and types[-1] == "finished"
    assert [e["step"] for e in events if e["type"] == "progress"] == list(range(1, 4))
    page = service.get(f"/jobs/{job_id}/events", params={"since": 3}).json()
    assert page["events"] == events[3:] and page["next"] == len(events) and page["state"] == "finished"
    assert job_id in [job["id"] for job in service.get("/jobs").json()["jobs"]]

    deleted = service.request("DELETE", f"/jobs/{job_id}")
    assert deleted.status_code == 200 and deleted.json()["job_dir_kept"] is None
    assert not (service.root / "jobs" / job_id).exists()
    assert service.get(f"/jobs/{job_id}").status_code == 404


def test_cancel_a_queued_and_a_running_job(service, dataset, tmp_path):
    long_dir = make_job(tmp_path / "long", dataset, iters=NEVER_ENDING_ITERS, checkpoint_every=0, **FAST)
    queued_dir = make_job(tmp_path / "queued", dataset, iters=3, **FAST)
    running_id = service.post("/jobs", json={"path": str(long_dir)}).json()["id"]
    again = service.post("/jobs", json={"path": str(long_dir)})
    assert again.status_code == 409 and running_id in again.json()["detail"]
    service.wait_for(running_id, lambda job: job["worker_pid"] is not None, JOB_TIMEOUT_S, "a worker")
    queued_id = service.post("/jobs", json={"path": str(queued_dir)}).json()["id"]
    queued = service.job(queued_id)
    assert queued["state"] == "queued" and queued["queue_position"] == 0 and queued["worker_pid"] is None

    # A queued job is cancelled at once and never starts.
    cancelled = service.post(f"/jobs/{queued_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert [e["type"] for e in read_events(queued_dir / "events.jsonl")] == ["cancelled"]

    # A running job checkpoints and stops.
    running = service.wait_for(running_id, lambda job: job["progress"] is not None, JOB_TIMEOUT_S, "a progress event")
    answer = service.post(f"/jobs/{running_id}/cancel")
    assert answer.status_code == 200 and answer.json()["cancel_requested"]
    ended = service.wait_until_ended(running_id, JOB_TIMEOUT_S)
    assert ended["state"] == "cancelled"
    last = service.events(running_id)[-1]
    assert last["type"] == "cancelled" and last.get("by") != "service"  # the job stopped itself, not killed
    checkpoint = torch.load(checkpoint_path(long_dir / "checkpoints"), map_location="cpu", weights_only=True)
    assert checkpoint["step"] >= running["progress"]["step"]
    assert not (queued_dir / "result").exists()
    assert service.get(f"/jobs/{running_id}/result.zip").status_code == 409
    assert service.post(f"/jobs/{running_id}/cancel").status_code == 409

    # Submitting the cancelled folder again resumes it; the new job's events start with its own run.
    old_lines = len(read_events(long_dir / "events.jsonl"))
    resumed_id = service.post("/jobs", json={"path": str(long_dir)}).json()["id"]
    resumed = service.wait_for(resumed_id, lambda job: job["progress"] is not None, JOB_TIMEOUT_S, "a progress event")
    assert resumed["progress"]["step"] > checkpoint["step"]
    assert service.post(f"/jobs/{resumed_id}/cancel").status_code == 200
    assert service.wait_until_ended(resumed_id, JOB_TIMEOUT_S)["state"] == "cancelled"
    events = service.events(resumed_id)
    assert events[0]["type"] == "started" and events[0]["resumed"] is True
    assert events == read_events(long_dir / "events.jsonl")[old_lines:]


def test_killed_worker_fails_its_job_and_the_queue_goes_on(service, dataset, tmp_path):
    victim_dir = make_job(tmp_path / "victim", dataset, iters=NEVER_ENDING_ITERS, checkpoint_every=0, **FAST)
    next_dir = make_job(tmp_path / "next", dataset, iters=2, **FAST)
    victim_id = service.post("/jobs", json={"path": str(victim_dir)}).json()["id"]
    next_id = service.post("/jobs", json={"path": str(next_dir)}).json()["id"]
    running = service.wait_for(victim_id, lambda job: job["progress"] is not None, JOB_TIMEOUT_S, "a progress event")
    os.kill(running["worker_pid"], signal.SIGKILL)  # what the kernel's out-of-memory killer does

    ended = service.wait_until_ended(victim_id, JOB_TIMEOUT_S)
    assert ended["state"] == "failed" and "SIGKILL" in ended["error"]
    last = service.events(victim_id)[-1]
    assert last["type"] == "error" and last["exit_code"] == -signal.SIGKILL
    assert service.get("/health").status_code == 200

    # The queue goes on. The next job was given as a local path: it runs in its own folder.
    ended = service.wait_until_ended(next_id, JOB_TIMEOUT_S)
    assert ended["state"] == "finished", ended
    assert ended["source"] == "path" and ended["job_dir"] == str(next_dir.resolve())
    assert json.loads((next_dir / "result" / "result.json").read_text()) == ended["result"]
    assert service.events(next_id) == read_events(next_dir / "events.jsonl")
    deleted = service.request("DELETE", f"/jobs/{next_id}")
    assert deleted.status_code == 200 and deleted.json()["job_dir_kept"] == str(next_dir.resolve())
    assert (next_dir / "result" / "result.json").is_file()  # the user's folder stays


def test_restart_requeues_both_jobs_and_the_interrupted_one_resumes(tmp_path, dataset):
    root = tmp_path / "root"
    first = ServiceProcess(root).start()
    try:
        # The first checkpoint (step 2) leaves 14 steps to go: time enough to kill the service mid-run.
        interrupted_dir = make_job(tmp_path / "a", dataset, iters=16, checkpoint_every=2, **FAST)
        waiting_dir = make_job(tmp_path / "b", dataset, iters=2, **FAST)
        # The zip as the request body itself (the other way to upload).
        archive = zip_folder(interrupted_dir, tmp_path / "a.zip").read_bytes()
        answer = first.post("/jobs", data=archive, headers={"Content-Type": "application/zip"})
        assert answer.status_code == 201, answer.text
        interrupted_id = answer.json()["id"]
        waiting_id = first.post("/jobs", json={"path": str(waiting_dir)}).json()["id"]
        assert first.job(waiting_id)["state"] == "queued"
        running = first.wait_for(interrupted_id, lambda job: job["worker_pid"] is not None, JOB_TIMEOUT_S, "a worker")
        job_dir, worker_pid = Path(running["job_dir"]), running["worker_pid"]
        first.wait_for_file(checkpoint_path(job_dir / "checkpoints"), JOB_TIMEOUT_S, poll_s=0.01)
    finally:
        first.kill()
    assert wait_until_dead(worker_pid), "the worker outlived its service"
    before = read_events(job_dir / "events.jsonl")
    assert "finished" not in [e["type"] for e in before], "the job ended before the service was killed"

    second = ServiceProcess(root).start()
    try:
        assert second.job(interrupted_id)["state"] in ("queued", "running")
        assert second.job(waiting_id)["state"] in ("queued", "running")
        assert second.wait_until_ended(interrupted_id, JOB_TIMEOUT_S)["state"] == "finished"
        assert second.wait_until_ended(waiting_id, JOB_TIMEOUT_S)["state"] == "finished"
        events = second.events(interrupted_id)
    finally:
        second.stop()
    started = [e for e in events if e["type"] == "started"]
    assert [e["resumed"] for e in started] == [False, True]
    resumed_at = events.index(started[1])
    first_step_after = next(e["step"] for e in events[resumed_at:] if e["type"] == "progress")
    assert first_step_after > 2  # continued from a checkpoint, not from step 0
    # One job at a time: the waiting job started only after the interrupted one finished.
    finished_at = next(e["time"] for e in events if e["type"] == "finished")
    waiting_started = next(e["time"] for e in read_events(waiting_dir / "events.jsonl") if e["type"] == "started")
    assert waiting_started >= finished_at
    assert not (root / "service.json").exists()  # a clean stop removes it


# ------------------------------------------------------------------------------------ bad input


def _job_json(**params) -> str:
    return json.dumps({"format_version": 1, "kind": "gaussians", "params": params})


def _write_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix, so the mode bits below are read
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.fixture
def valid_entries(dataset) -> list[tuple[str, bytes]]:
    entries = [("job.json", _job_json(iters=2).encode())]
    entries += [(f"data/{p.relative_to(dataset).as_posix()}", p.read_bytes()) for p in dataset.rglob("*") if p.is_file()]
    return entries


def _unsafe_archives(tmp_path: Path) -> dict[str, tuple[list, str]]:
    target = tmp_path / "escaped.txt"
    return {
        "dot-dot": ([("../" * 40 + target.as_posix().lstrip("/"), b"x")], "'..'"),
        "dot-dot-backslash": ([("..\\" * 40 + "escaped.txt", b"x")], "'..'"),
        "absolute": ([(target.as_posix(), b"x")], "absolute"),
        "drive-letter": ([("C:/escaped.txt", b"x")], "drive letter"),
        "symlink": ([(_symlink_entry("data/link"), tmp_path.as_posix().encode())], "symbolic link"),
    }


@pytest.mark.parametrize("case", ["dot-dot", "dot-dot-backslash", "absolute", "drive-letter", "symlink"])
def test_unsafe_archives_are_refused_and_nothing_is_written(service, valid_entries, tmp_path, case):
    entries, expected = _unsafe_archives(tmp_path)[case]
    before_jobs = tree(service.root / "jobs")
    archive = _write_zip(tmp_path / "bad.zip", valid_entries + entries)
    answer = upload(service, archive)
    assert answer.status_code == 400, answer.text
    assert expected in answer.json()["detail"]
    assert not (tmp_path / "escaped.txt").exists()
    assert tree(service.root / "jobs") == before_jobs
    assert tree(service.root / "incoming") == set()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip"]


@pytest.mark.parametrize("case, status, expected", [
    ("not-a-zip", 400, "not a zip archive"),
    ("empty-zip", 400, "empty"),
    ("unknown-kind", 422, "unknown job kind 'sculpt'"),
    ("bad-param-value", 422, "params.iters"),
    ("unknown-param", 422, "params.itres"),
    ("job-json-not-json", 422, "not valid JSON"),
    ("no-data", 422, "data"),
    ("broken-transforms", 422, "transforms_train.json"),
])
def test_bad_job_archives_get_a_4xx_naming_the_problem(service, valid_entries, tmp_path, case, status, expected):
    data_entries = [e for e in valid_entries if e[0] != "job.json"]
    archives = {
        "unknown-kind": [("job.json", json.dumps({"kind": "sculpt", "params": {}}).encode())] + data_entries,
        "bad-param-value": [("job.json", _job_json(iters=-5).encode())] + data_entries,
        "unknown-param": [("job.json", _job_json(itres=5).encode())] + data_entries,
        "job-json-not-json": [("job.json", b"{kind: gaussians")] + data_entries,
        "no-data": [("job.json", _job_json(iters=2).encode())],
        "broken-transforms": [e if e[0] != "data/transforms_train.json" else (e[0], b'{"frames": 3}') for e in valid_entries],
    }
    before_jobs = tree(service.root / "jobs")
    if case == "not-a-zip":
        archive = tmp_path / "bad.zip"
        archive.write_bytes(b"this is not a zip file" * 10)
    elif case == "empty-zip":
        archive = _write_zip(tmp_path / "bad.zip", [])
    else:
        archive = _write_zip(tmp_path / "bad.zip", archives[case])
    answer = upload(service, archive)
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert expected in detail
    assert str(service.root) not in detail  # paths inside an upload are shown relative to the job
    assert tree(service.root / "jobs") == before_jobs
    assert tree(service.root / "incoming") == set()


def test_oversized_uploads_get_413(service, tmp_path):
    too_big = os.urandom(MAX_UPLOAD_MB * 1024 * 1024 + 4096)
    before_jobs = tree(service.root / "jobs")
    declared = service.post("/jobs", data=too_big, headers={"Content-Type": "application/zip"})
    assert declared.status_code == 413 and "larger than" in declared.json()["detail"]
    # Without a Content-Length (chunked), the running count stops it.
    chunked = service.post("/jobs", data=(too_big[i:i + 65536] for i in range(0, len(too_big), 65536)),
                           headers={"Content-Type": "application/zip"})
    assert chunked.status_code == 413
    multipart = service.post("/jobs", files={"archive": ("big.zip", too_big, "application/zip")})
    assert multipart.status_code == 413
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"big.zip\"\r\n"
            f"Content-Type: application/zip\r\n\r\n").encode() + too_big + f"\r\n--{boundary}--\r\n".encode()
    chunked_multipart = service.post("/jobs", data=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert chunked_multipart.status_code == 413
    assert tree(service.root / "jobs") == before_jobs
    assert tree(service.root / "incoming") == set()


def test_malformed_requests_and_bad_local_paths(service, dataset, tmp_path):
    assert service.post("/jobs", files={"something": ("a.zip", b"x")}).status_code == 400
    assert service.post("/jobs", data=b"hello", headers={"Content-Type": "text/plain"}).status_code == 415
    assert service.post("/jobs", data=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    assert service.post("/jobs", json=["/a/path"]).status_code == 400
    relative = service.post("/jobs", json={"path": "relative/job"})
    assert relative.status_code == 422 and "absolute" in relative.json()["detail"]
    missing = service.post("/jobs", json={"path": str(tmp_path / "nowhere")})
    assert missing.status_code == 422 and str(tmp_path / "nowhere") in missing.json()["detail"]
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert service.post("/jobs", json={"path": str(a_file)}).status_code == 422
    # A local job folder that does not validate is left exactly as it was.
    bad_dir = make_job(tmp_path / "bad", dataset, iters=2)
    (bad_dir / "job.json").write_text(_job_json(iters=0))
    before = {p: p.read_bytes() for p in bad_dir.rglob("*") if p.is_file()}
    invalid = service.post("/jobs", json={"path": str(bad_dir)})
    assert invalid.status_code == 422 and "params.iters" in invalid.json()["detail"]
    assert {p: p.read_bytes() for p in bad_dir.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("method, suffix", [("GET", ""), ("GET", "/events"), ("POST", "/cancel"), ("GET", "/result.zip"),
                                            ("GET", "/files/result.json"), ("DELETE", "")])
def test_unknown_job_ids_get_404(service, method, suffix):
    for job_id in ("20250101-000000-00000000", "no-such-job", "..%2F..%2Fservice.json"):
        answer = service.request(method, f"/jobs/{job_id}{suffix}")
        assert answer.status_code == 404, (job_id, answer.text)
