"""The service against a hostile client: every attack of issue 10, as a regression test.

A real `radiantforge serve` on loopback **without a token** (what the issue attacked: the service
as a user may start it by hand), real archives and real worker processes. Every response any test
here gets is checked for Python tracebacks (none may ever reach a client).

- code execution: an uploaded checkpoint is refused, and a checkpoint planted in a local job
  folder is loaded with ``weights_only=True`` (its pickle payload, which writes a marker file
  when unpickled the unsafe way, never runs);
- web pages: cross-site Origin / Sec-Fetch-Site and foreign Host (DNS rebinding) are refused;
- files outside the job: absolute and ``..`` frame and point-cloud paths are refused without a
  hint whether the file exists; result downloads skip symbolic links; a model folder outside the
  operator's ``--model-dir`` is refused; an OBJ's material cannot pull a texture from elsewhere;
- bounded work: a 6000x6000 PNG upload is validated from its header (the service's peak memory
  grows by less than MEMORY_BOUND_MB); a zip bomb is refused before it is written; chunked JSON
  bodies, silent connections and partial headers are bounded;
- no work lost: SIGTERM mid-job, then a restart, finishes the job with nothing lost; a SIGKILLed
  worker's job resumes (POST /resume, and ``radiantforge run --resume``) to the same result;
- rough edges: corrupt deflate data, long names, deep JSON, long paths, lists as kinds, non-UTF-8
  job files and huge values are 4xx answers of one short line.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from plyfile import PlyData

from radiantforge.checkpoints import read_checkpoint
from radiantforge.errors import InputError, quoted
from radiantforge.events import read_events
from radiantforge.gaussians.train import checkpoint_path
from radiantforge.mesh import load_mesh
from radiantforge.service.connections import HEADER_TIMEOUT_S, MAX_CONNECTIONS

from service_helpers import ServiceProcess, make_job, make_sphere_dataset, wait_until_dead, zip_folder

FAST = {"sh_degree": 0, "init_points": 100, "max_gaussians": 100, "device": "cpu", "progress_every": 1,
        "turntable_frames": 0}
JOB_TIMEOUT_S = 120.0
# The service's peak memory may grow by at most this much while it takes and validates an upload
# holding one 6000x6000 image (decoded as float RGBA that image alone would be 576 MB).
MEMORY_BOUND_MB = 64
BIG_IMAGE_SIDE = 6000
# What a Python traceback or a faulthandler stack dump looks like.
TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "', "most recent call first")


class CheckedService(ServiceProcess):
    """A ServiceProcess whose every answer is checked: no traceback, one short line of error."""

    def request(self, method: str, path: str, token=None, **kwargs) -> requests.Response:
        answer = super().request(method, path, token=token, **kwargs)
        body = answer.text
        for marker in TRACEBACK_MARKERS:
            assert marker not in body, f"{method} {path} answered with a traceback: {body[:2000]}"
        if answer.status_code >= 400 and answer.headers.get("content-type", "").startswith("application/json"):
            detail = answer.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail and len(detail) <= 600, detail
        return answer


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_sphere_dataset(tmp_path_factory.mktemp("sphere") / "data")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """An operator's --model-dir with one folder in the Stable Diffusion layout (configs only: enough to validate)."""
    root = tmp_path_factory.mktemp("models")
    _fake_model(root / "tiny-sd")
    return root


@pytest.fixture(scope="module")
def service(tmp_path_factory, model_dir):
    base = tmp_path_factory.mktemp("hostile")
    process = CheckedService(base / "root", extra_args=("--model-dir", str(model_dir))).start()
    yield process
    process.stop()


def _fake_model(folder: Path) -> Path:
    (folder / "model_index.json").parent.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text("{}")
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (folder / name).mkdir(exist_ok=True)
    for name, weights in (("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors"),
                          ("text_encoder", "model.safetensors")):
        (folder / name / weights).write_bytes(b"not really weights")
    return folder


def _job_json(kind: str = "gaussians", **params) -> bytes:
    return json.dumps({"format_version": 1, "kind": kind, "params": params}).encode()


def _write_zip(path: Path, entries, compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _dataset_entries(dataset: Path) -> list[tuple[str, bytes]]:
    return [(f"data/{p.relative_to(dataset).as_posix()}", p.read_bytes()) for p in sorted(dataset.rglob("*")) if p.is_file()]


def _upload(service, archive: Path, **kwargs):
    with open(archive, "rb") as f:
        return service.post("/jobs", files={"archive": (archive.name, f, "application/zip")}, **kwargs)


def _tree(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")} if folder.exists() else set()


def _peak_memory_kib(pid: int) -> int:
    """VmHWM (the process's peak resident memory so far) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


class _UnpicklePayload:
    """Unpickled the unsafe way (weights_only=False), this creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": 1, "step": 5, "config": {}, "payload": _UnpicklePayload(marker)}, path)
    return path


# ------------------------------------------------------------------------ code execution


def test_the_payload_runs_when_unpickled_unsafely_and_never_through_a_checkpoint(tmp_path):
    """The known answer first: this file does run code under weights_only=False; the project's
    checkpoint reader refuses it for each of the three jobs."""
    marker = tmp_path / "pwned"
    planted = _hostile_checkpoint(tmp_path / "checkpoint.pt", marker)
    torch.load(planted, weights_only=False)
    assert marker.exists(), "the test payload must be able to run, or the test proves nothing"
    marker.unlink()
    for kind in ("Gaussian training", "texture", "text-to-3D"):
        with pytest.raises(InputError, match="cannot read the checkpoint"):
            read_checkpoint(planted, kind=kind, version=1)
    assert not marker.exists()


def test_an_uploaded_checkpoint_is_refused_and_nothing_is_written(service, dataset, tmp_path):
    marker = tmp_path / "pwned"
    planted = _hostile_checkpoint(tmp_path / "gaussians_checkpoint.pt", marker)
    before = _tree(service.root / "jobs")
    for extra in ("checkpoints/gaussians_checkpoint.pt", "result/result.json", "events.jsonl", "CANCEL", "notes.txt",
                  "data"):
        entries = [("job.json", _job_json(iters=2, **FAST)), *_dataset_entries(dataset)]
        if extra == "data":  # data as a file, not the folder of inputs
            entries = [("job.json", _job_json(iters=2, **FAST)), ("data", b"x")]
        else:
            entries.append((extra, planted.read_bytes()))
        answer = _upload(service, _write_zip(tmp_path / "upload.zip", entries))
        assert answer.status_code == 400, (extra, answer.text)
        detail = answer.json()["detail"]
        assert repr(extra) in detail and "job.json and data/ only" in detail, detail
        # Inside a wrapper folder too (what zipping a folder gives).
        wrapped = [(f"job/{name}", data) for name, data in entries]
        assert _upload(service, _write_zip(tmp_path / "upload.zip", wrapped)).status_code == 400
    assert _tree(service.root / "jobs") == before and _tree(service.root / "incoming") == set()
    assert not marker.exists()


def test_a_planted_checkpoint_in_a_local_job_never_runs(service, dataset, tmp_path):
    """A job folder named by path (the add-on's shared-disk route) with a hostile checkpoint in it:
    the job resumes from it, the load refuses the pickle, the job fails naming the file."""
    marker = tmp_path / "pwned"
    job_dir = make_job(tmp_path / "job", dataset, iters=2, **FAST)
    _hostile_checkpoint(checkpoint_path(job_dir / "checkpoints"), marker)
    job_id = service.post("/jobs", json={"path": str(job_dir)}).json()["id"]
    ended = service.wait_until_ended(job_id, JOB_TIMEOUT_S)
    assert ended["state"] == "failed" and "cannot read the checkpoint" in ended["error"]
    assert "gaussians_checkpoint.pt" in ended["error"]
    assert not marker.exists()


# -------------------------------------------------------------------------- web pages


def test_cross_site_requests_and_foreign_hosts_are_refused(service, dataset, tmp_path):
    archive = zip_folder(make_job(tmp_path / "job", dataset, iters=2, **FAST), tmp_path / "job.zip")
    before = _tree(service.root / "jobs")
    # The multipart form post a page sends without a preflight.
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1.evil.example"},
                    {"Origin": "http://localhost:1"}):
        answer = _upload(service, archive, headers=headers)
        assert answer.status_code == 403, (headers, answer.text)
        assert "web page" in answer.json()["detail"]
    assert _tree(service.root / "jobs") == before

    # A running job, and a text/plain POST (no preflight either) that tries to cancel it.
    long_dir = make_job(tmp_path / "long", dataset, iters=300_000, checkpoint_every=0, **FAST)
    job_id = service.post("/jobs", json={"path": str(long_dir)}).json()["id"]
    forged = service.post(f"/jobs/{job_id}/cancel", data=b"x", headers={"Content-Type": "text/plain",
                                                                     "Origin": "https://evil.example"})
    assert forged.status_code == 403
    assert not service.job(job_id)["cancel_requested"] and not (long_dir / "CANCEL").exists()

    # DNS rebinding: the page's own name in Host, and no Origin at all (a navigation, say).
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.nip.io", "localhost.evil.example"):
        answer = service.get("/jobs", headers={"Host": host})
        assert answer.status_code == 403, (host, answer.text)
        assert str(service.root) not in answer.text and "allow-host" in answer.json()["detail"]

    # What the add-on and scripts send (no Origin), and the service's own origin, are served.
    port = service.url.split(":")[2].split("/")[0]
    for headers in ({}, {"Host": f"localhost:{port}"}, {"Host": f"[::1]:{port}"}, {"Sec-Fetch-Site": "none"},
                    {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}):
        assert service.get("/health", headers=headers).status_code == 200, headers
    site = service.url.rsplit("/api/v1", 1)[0]
    for page in ("/docs", "/redoc"):  # no page that would load scripts from a CDN into the service's origin
        assert requests.get(site + page, timeout=10).status_code == 404
    assert service.post(f"/jobs/{job_id}/cancel").status_code == 200
    assert service.wait_until_ended(job_id, JOB_TIMEOUT_S)["state"] == "cancelled"


def test_a_host_the_operator_allows_is_served(tmp_path):
    process = CheckedService(tmp_path / "root", extra_args=("--allow-host", "render-box.studio.lan")).start()
    try:
        assert process.get("/health", headers={"Host": "render-box.studio.lan:8765"}).status_code == 200
        assert process.get("/health", headers={"Host": "other-box.studio.lan"}).status_code == 403
    finally:
        process.stop()


# --------------------------------------------------------------------- files outside the job


def _dataset_with_test_frame(tmp_path: Path, dataset: Path, file_path: str, points: str | None = None) -> Path:
    job_dir = make_job(tmp_path / "job", dataset, iters=2, **FAST)
    transforms = job_dir / "data" / "transforms_test.json"
    document = json.loads(transforms.read_text())
    document["frames"][0]["file_path"] = file_path
    if points is not None:
        document["ply_file_path"] = points
    transforms.write_text(json.dumps(document))
    return job_dir


def test_frame_and_point_paths_outside_the_dataset_are_refused_without_a_hint(service, dataset, tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (16, 16), (255, 0, 0)).save(secret)
    details = {}
    for case, file_path in {"absolute-existing": str(secret), "absolute-missing": str(tmp_path / "missing.png"),
                            "climbing-existing": "../../../" + secret.name, "climbing-missing": "../../../missing.png",
                            "backslashes": "..\\..\\secret.png"}.items():
        job_dir = _dataset_with_test_frame(tmp_path / case, dataset, file_path)
        archive = zip_folder(job_dir, tmp_path / f"{case}.zip")
        answer = _upload(service, archive)
        assert answer.status_code == 422, (case, answer.text)
        detail = answer.json()["detail"]
        assert "frames[0].file_path" in detail and "inside the dataset folder" in detail
        assert "not found" not in detail
        details[case] = detail.replace(quoted(file_path), "PATH")
        # The same folder submitted by path gets the same refusal.
        by_path = service.post("/jobs", json={"path": str(job_dir)})
        assert by_path.status_code == 422 and "inside the dataset folder" in by_path.json()["detail"]
    # Whether the outside file exists changes nothing in the answer.
    assert details["absolute-existing"] == details["absolute-missing"]
    assert details["climbing-existing"] == details["climbing-missing"]

    points_job = _dataset_with_test_frame(tmp_path / "points", dataset, "./test/r_6", points=str(tmp_path / "x.ply"))
    answer = _upload(service, zip_folder(points_job, tmp_path / "points.zip"))
    assert answer.status_code == 422 and "ply_file_path" in answer.json()["detail"]
    assert "inside the dataset folder" in answer.json()["detail"]


def test_downloads_never_follow_links(service, dataset, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the service user's private file")
    secret_folder = tmp_path / "private"
    secret_folder.mkdir()
    (secret_folder / "key.txt").write_text("private key")
    job_dir = make_job(tmp_path / "job", dataset, iters=2, **FAST)
    job_id = service.post("/jobs", json={"path": str(job_dir)}).json()["id"]
    assert service.wait_until_ended(job_id, JOB_TIMEOUT_S)["state"] == "finished"
    # Submitting a finished folder again says so (it used to "exit with code 0 without a result").
    again = service.post("/jobs", json={"path": str(job_dir)})
    assert again.status_code == 409 and "has finished" in again.json()["detail"]
    # Someone with write access to the local job folder adds links into its result.
    (job_dir / "result" / "leak.txt").symlink_to(secret)
    (job_dir / "result" / "leaked_folder").symlink_to(secret_folder, target_is_directory=True)

    summary = service.job(job_id)
    assert not any(name.startswith(("leak", "leaked_folder")) for name in summary["result_files"])
    for name in ("leak.txt", "leaked_folder/key.txt"):
        assert service.get(f"/jobs/{job_id}/files/{name}").status_code == 404, name
    download = service.get(f"/jobs/{job_id}/result.zip")
    assert download.status_code == 200
    with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
        names = zf.namelist()
        assert names and not any("leak" in n for n in names)
        assert all(b"private" not in zf.read(n) for n in names)

    # A result folder that is itself a link has nothing to download.
    linked_job = make_job(tmp_path / "linked", dataset, iters=2, **FAST)
    linked_id = service.post("/jobs", json={"path": str(linked_job)}).json()["id"]
    assert service.wait_until_ended(linked_id, JOB_TIMEOUT_S)["state"] == "finished"
    (linked_job / "result").rename(linked_job / "real_result")
    (linked_job / "result").symlink_to(secret_folder, target_is_directory=True)
    assert service.job(linked_id)["result_files"] == []
    assert service.get(f"/jobs/{linked_id}/files/key.txt").status_code == 404


def test_model_folders_outside_the_operators_model_dirs_are_refused(service, model_dir, tmp_path):
    outside = _fake_model(tmp_path / "uploaded-earlier" / "job" / "data" / "sd")
    refusals = {}
    for case, model in {"outside-existing": str(outside), "outside-missing": str(tmp_path / "nothing-here"),
                        "relative": "job/data/sd", "dot-relative": "./job/data/sd",
                        "climbing": str(model_dir / ".." / outside.relative_to(tmp_path.parent))}.items():
        archive = _write_zip(tmp_path / f"{case}.zip", [("job.json", _job_json("text3d", prompt="a teapot", model=model))])
        answer = _upload(service, archive)
        assert answer.status_code == 422, (case, answer.text)
        detail = answer.json()["detail"]
        assert "params.model" in detail and "model folders" in detail, detail
        refusals[case] = detail.replace(quoted(model), "MODEL")
    assert refusals["outside-existing"] == refusals["outside-missing"]

    # Inside --model-dir it validates (and the job then fails in its worker: the weights are fake).
    inside = _write_zip(tmp_path / "inside.zip", [("job.json", _job_json("text3d", prompt="a teapot",
                                                                            model=str(model_dir / "tiny-sd"), steps=1))])
    answer = _upload(service, inside)
    assert answer.status_code == 201, answer.text
    assert service.wait_until_ended(answer.json()["id"], JOB_TIMEOUT_S)["state"] == "failed"
    assert str(model_dir / "tiny-sd") in [m["id"] for m in service.get("/health").json()["models"]]


def test_a_mesh_cannot_pull_files_from_outside_its_folder(tmp_path):
    """An OBJ whose material names a texture outside the mesh's folder: the texture is not read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(outside / "secret.png")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "tri.mtl").write_text(f"newmtl m\nmap_Kd {outside / 'secret.png'}\n")
    (folder / "tri.obj").write_text("mtllib tri.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nusemtl m\n"
                                    "f 1/1 2/2 3/3\n")
    (folder / "climb.mtl").write_text("newmtl m\nmap_Kd ../outside/secret.png\n")
    (folder / "climb.obj").write_text((folder / "tri.obj").read_text().replace("tri.mtl", "climb.mtl"))
    Image.new("RGB", (8, 8), (0, 0, 255)).save(folder / "inside.png")
    (folder / "inside.mtl").write_text("newmtl m\nmap_Kd inside.png\n")
    (folder / "inside.obj").write_text((folder / "tri.obj").read_text().replace("tri.mtl", "inside.mtl"))
    inside = load_mesh(folder / "inside.obj")
    assert inside.texture is not None  # the known answer: a texture beside the mesh is read
    assert inside.texture.reshape(-1, 3)[0].tolist() == pytest.approx([0.0, 0.0, 1.0])
    for name in ("tri.obj", "climb.obj"):
        mesh = load_mesh(folder / name)
        assert mesh.texture is None, name


# ------------------------------------------------------------------------------ bounded work


def _big_png_bytes(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side), 0).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_a_huge_image_is_validated_from_its_header(service, dataset, tmp_path):
    job_dir = make_job(tmp_path / "job", dataset, iters=2, **FAST)
    (job_dir / "data" / "test").mkdir(exist_ok=True)
    big = _big_png_bytes(BIG_IMAGE_SIDE)
    for stale in (job_dir / "data" / "test").iterdir():
        stale.unlink()
    (job_dir / "data" / "test" / "big.png").write_bytes(big)
    transforms = job_dir / "data" / "transforms_test.json"
    document = json.loads(transforms.read_text())
    document["frames"] = [{**document["frames"][0], "file_path": "./test/big"}]
    transforms.write_text(json.dumps(document))
    archive = zip_folder(job_dir, tmp_path / "big.zip")
    assert archive.stat().st_size < 200_000  # a small upload ...

    pid = service.process.pid
    before = _peak_memory_kib(pid)
    answer = _upload(service, archive)
    after = _peak_memory_kib(pid)
    assert answer.status_code == 201, answer.text  # ... that validates: its header is a fine image
    job_id = answer.json()["id"]
    service.post(f"/jobs/{job_id}/cancel")
    grown_mb = (after - before) / 1024
    print(f"service peak memory grew by {grown_mb:.1f} MB while taking a {BIG_IMAGE_SIDE}x{BIG_IMAGE_SIDE} PNG")
    assert grown_mb < MEMORY_BOUND_MB
    service.wait_until_ended(job_id, JOB_TIMEOUT_S)

    # Beyond the pixel cap, the header alone refuses it.
    (job_dir / "data" / "test" / "big.png").write_bytes(_big_png_bytes(7000))
    refused = _upload(service, zip_folder(job_dir, tmp_path / "bigger.zip"))
    assert refused.status_code == 422 and "7000x7000" in refused.json()["detail"]


def test_a_zip_bomb_is_refused_before_it_is_written(service, dataset, tmp_path):
    entries = [("job.json", _job_json(iters=2, **FAST)), *_dataset_entries(dataset)]
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in entries:
            zf.writestr(name, data)
        zf.writestr("data/zeros.bin", bytes(100 * 2**20))
    assert bomb.stat().st_size < 400_000
    before = _tree(service.root / "jobs")
    answer = _upload(service, bomb)
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert "'data/zeros.bin'" in detail and "zip bomb" in detail
    assert _tree(service.root / "jobs") == before and _tree(service.root / "incoming") == set()


def test_unpack_caps_per_file_and_in_all(tmp_path, dataset):
    process = CheckedService(tmp_path / "root", extra_args=("--max-file-mb", "1", "--max-unpacked-mb", "2")).start()
    try:
        base = [("job.json", _job_json(iters=2, **FAST)), *_dataset_entries(dataset)]
        one_big = _write_zip(tmp_path / "one.zip", [*base, ("data/noise.bin", os.urandom(1_200_000))])
        answer = _upload(process, one_big)
        assert answer.status_code == 400 and "'data/noise.bin'" in answer.json()["detail"]
        assert "--max-file-mb" in answer.json()["detail"]
        many = _write_zip(tmp_path / "many.zip", [*base, *((f"data/noise{i}.bin", os.urandom(900_000)) for i in range(3))])
        answer = _upload(process, many)
        assert answer.status_code == 400 and "--max-unpacked-mb" in answer.json()["detail"]
        health = process.get("/health").json()
        assert health["max_file_bytes"] == 2**20 and health["max_unpacked_bytes"] == 2 * 2**20
        assert _tree(process.root / "jobs") == set() and _tree(process.root / "incoming") == set()
    finally:
        process.stop()


def test_json_bodies_are_capped_chunked_or_not(service):
    huge = json.dumps({"path": "/" + "a" * (2 * 2**20)}).encode()
    declared = service.post("/jobs", data=huge, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413
    chunked = service.post("/jobs", data=(huge[i:i + 65536] for i in range(0, len(huge), 65536)),
                           headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert len(chunked.text) < 1000


def _connect(service) -> socket.socket:
    host, port = service.url.split("//")[1].split("/")[0].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def _closed_by_server(sock: socket.socket, wait_s: float) -> bool:
    sock.settimeout(wait_s)
    try:
        return sock.recv(1) == b""
    except (TimeoutError, socket.timeout):
        return False
    except ConnectionResetError:
        return True


def test_silent_connections_cannot_starve_the_service(service):
    flood = [_connect(service) for _ in range(MAX_CONNECTIONS + 60)]
    try:
        started = time.perf_counter()
        answer = service.get("/health", timeout=10)
        assert answer.status_code == 200
        print(f"/health answered in {time.perf_counter() - started:.3f} s with {len(flood)} silent connections open")
        # The oldest silent connections made room for the newer ones.
        assert _closed_by_server(flood[0], 2.0)
    finally:
        for sock in flood:
            sock.close()


def test_headers_must_arrive_within_the_deadline(service):
    slow = _connect(service)
    try:
        slow.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        assert not _closed_by_server(slow, HEADER_TIMEOUT_S * 0.5)
        assert _closed_by_server(slow, HEADER_TIMEOUT_S * 0.5 + 3.0)
    finally:
        slow.close()


# ------------------------------------------------------------------------------- no work lost


def _last_progress_step(service, job_id) -> int:
    progress = service.job(job_id)["progress"]
    return 0 if progress is None else progress["step"]


def test_sigterm_mid_job_then_restart_finishes_it_with_nothing_lost(tmp_path, dataset):
    root = tmp_path / "root"
    job_dir = make_job(tmp_path / "job", dataset, iters=500, checkpoint_every=0, **FAST)
    first = CheckedService(root).start()
    try:
        job_id = first.post("/jobs", json={"path": str(job_dir)}).json()["id"]
        first.wait_for(job_id, lambda job: (job["progress"] or {}).get("step", 0) >= 50, JOB_TIMEOUT_S, "step 50")
        reported = _last_progress_step(first, job_id)
        first.process.send_signal(signal.SIGTERM)
        first.process.wait(timeout=60)
    finally:
        first.kill()
    events = read_events(job_dir / "events.jsonl")
    suspended = events[-1]
    assert suspended["type"] == "suspended", events[-3:]
    progress_steps = [e["step"] for e in events if e["type"] == "progress"]
    # The checkpoint holds every step the job reported (and the one in flight at most besides).
    print(f"SIGTERM after step {reported} was reported: the job checkpointed step {suspended['step']} "
          f"(last progress {max(progress_steps)})")
    assert suspended["step"] >= max(progress_steps) >= reported
    assert suspended["step"] <= max(progress_steps) + 1
    assert torch.load(checkpoint_path(job_dir / "checkpoints"), weights_only=True)["step"] == suspended["step"]

    second = CheckedService(root).start()
    try:
        ended = second.wait_until_ended(job_id, JOB_TIMEOUT_S)
        assert ended["state"] == "finished", ended
        events = second.events(job_id)
    finally:
        second.stop()
    started = [e for e in events if e["type"] == "started"]
    assert [e["resumed"] for e in started] == [False, True]
    resumed_from = next(e for e in events if e["type"] == "info" and "resuming from step" in e.get("message", ""))
    assert resumed_from["step"] == suspended["step"]
    after_restart = [e["step"] for e in events[events.index(started[1]):] if e["type"] == "progress"]
    assert after_restart[0] == suspended["step"] + 1 and after_restart[-1] == 500


def _ply_arrays(path: Path) -> dict[str, np.ndarray]:
    vertex = PlyData.read(str(path))["vertex"]
    return {name: np.asarray(vertex[name]) for name in vertex.data.dtype.names}


def test_a_killed_workers_job_resumes_to_the_same_result(service, dataset, tmp_path):
    params = dict(iters=400, checkpoint_every=100, test_renders=False, **FAST)
    straight_dir = make_job(tmp_path / "straight", dataset, **params)
    straight_id = service.post("/jobs", json={"path": str(straight_dir)}).json()["id"]
    assert service.wait_until_ended(straight_id, JOB_TIMEOUT_S)["state"] == "finished"

    archive = zip_folder(make_job(tmp_path / "victim", dataset, **params), tmp_path / "victim.zip")
    victim_id = _upload(service, archive).json()["id"]
    running = service.wait_for(victim_id, lambda job: (job["progress"] or {}).get("step", 0) >= 150, JOB_TIMEOUT_S,
                               "step 150")
    os.kill(running["worker_pid"], signal.SIGKILL)
    failed = service.wait_until_ended(victim_id, JOB_TIMEOUT_S)
    assert failed["state"] == "failed" and failed["resumable"]
    held = failed["checkpoint"]["step"]
    assert 100 <= held < 400 and held % 100 == 0 and failed["checkpoint"]["total"] == 400
    error = service.events(victim_id)[-1]
    assert error["type"] == "error" and error["checkpoint_step"] == held and error["resumable"]
    assert f"checkpoint holds step {held} of 400" in error["message"]
    assert "log_tail" not in error

    resumed = service.post(f"/jobs/{victim_id}/resume")
    assert resumed.status_code == 200 and resumed.json()["state"] in ("queued", "running")
    ended = service.wait_until_ended(victim_id, JOB_TIMEOUT_S)
    assert ended["state"] == "finished", ended
    events = service.events(victim_id)
    assert any(e["type"] == "info" and e.get("step") == held and "resuming" in e["message"] for e in events)

    victim_ply = service.get(f"/jobs/{victim_id}/files/point_cloud.ply")
    resumed_arrays = _ply_arrays_from_bytes(victim_ply.content)
    straight_arrays = _ply_arrays(straight_dir / "result" / "point_cloud.ply")
    assert resumed_arrays.keys() == straight_arrays.keys()
    for name in straight_arrays:
        assert np.array_equal(resumed_arrays[name], straight_arrays[name]), name

    again = service.post(f"/jobs/{victim_id}/resume")
    assert again.status_code == 409 and "finished" in again.json()["detail"]
    assert service.post("/jobs/20250101-000000-00000000/resume").status_code == 404


def _ply_arrays_from_bytes(data: bytes) -> dict[str, np.ndarray]:
    vertex = PlyData.read(io.BytesIO(data))["vertex"]
    return {name: np.asarray(vertex[name]) for name in vertex.data.dtype.names}


def test_cli_run_resume_continues_a_killed_run(dataset, tmp_path):
    job_dir = make_job(tmp_path / "job", dataset, iters=200, checkpoint_every=50, **FAST)
    command = [sys.executable, "-m", "radiantforge", "run", str(job_dir)]
    refused = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "no checkpoint to resume from" in refused.stderr
    assert not (job_dir / "events.jsonl").exists()  # a refused command touches nothing

    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        info = checkpoint_path(job_dir / "checkpoints").with_name("gaussians_checkpoint.pt.json")
        while not (info.is_file() and json.loads(info.read_text())["step"] >= 50):
            assert time.monotonic() < deadline and run.poll() is None, "no checkpoint at step 50"
            time.sleep(0.05)
    finally:
        run.kill()
        run.wait()
    held = json.loads(info.read_text())["step"]
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming: its checkpoint holds step {held}" in resumed.stderr
    assert json.loads(resumed.stdout)["state"] == "finished"


# ------------------------------------------------------------------------------- rough edges


def test_malformed_uploads_and_requests_get_a_short_4xx(service, dataset, tmp_path):
    base = [("job.json", _job_json(iters=2, **FAST)), *_dataset_entries(dataset)]

    # Corrupt deflate data: a valid zip whose compressed bytes were damaged after writing.
    corrupt = _write_zip(tmp_path / "corrupt.zip", [*base, ("data/notes.json", b"{}" * 50_000)], zipfile.ZIP_DEFLATED)
    data = bytearray(corrupt.read_bytes())
    with zipfile.ZipFile(corrupt) as zf:
        info = zf.getinfo("data/notes.json")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + 10:start + 60] = b"\xff" * 50
    corrupt.write_bytes(bytes(data))
    answer = _upload(service, corrupt)
    assert answer.status_code == 400 and "'data/notes.json'" in answer.json()["detail"]

    long_name = _write_zip(tmp_path / "long.zip", [*base, ("data/" + "n" * 300 + ".png", b"x")])
    answer = _upload(service, long_name)
    assert answer.status_code == 400 and "longer than 255 bytes" in answer.json()["detail"]

    deep = b"[" * 100_000 + b"]" * 100_000
    answer = service.post("/jobs", data=deep[:60_000], headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    nested_job = _write_zip(tmp_path / "nested.zip", [("job.json", b'{"kind": "gaussians", "params": {"iters": '
                                                       + b"[" * 50_000 + b"]" * 50_000 + b"}}"), *base[1:]])
    answer = _upload(service, nested_job)
    assert answer.status_code == 422 and "job.json" in answer.json()["detail"]

    answer = service.post("/jobs", json={"path": "/" + "p" * 5000})
    assert answer.status_code == 422 and "path" in answer.json()["detail"]

    for job_file, field in ((json.dumps({"kind": ["gaussians"], "params": {}}).encode(), "kind"),
                            ('{"kind": "gaussians", "params": {"seed": "é"}}'.encode("latin-1"), "not UTF-8"),
                            (_job_json(iters=2, init_points=10**12, **{k: v for k, v in FAST.items() if k != "init_points"}),
                             "params.init_points"),
                            (_job_json(iters=10**9), "params.iters"),
                            (_job_json(turntable_frames=10**7), "params.turntable_frames")):
        started = time.perf_counter()
        answer = _upload(service, _write_zip(tmp_path / "job.zip", [("job.json", job_file), *base[1:]]))
        assert answer.status_code == 422, answer.text
        detail = answer.json()["detail"]
        assert "job.json" in detail and field in detail, detail
        assert time.perf_counter() - started < 10

    # A huge value comes back as a few dozen characters of it; a 10 MB job file is not read at all.
    huge = "x" * (10 * 2**20)
    answer = _upload(service, _write_zip(tmp_path / "huge.zip", [("job.json", _job_json(strategy=huge)), *base[1:]]))
    assert answer.status_code == 422 and "job.json" in answer.json()["detail"] and len(answer.content) < 1000
    answer = _upload(service, _write_zip(tmp_path / "big.zip", [("job.json", _job_json(strategy=huge[:900_000])),
                                                                 *base[1:]]))
    assert answer.status_code == 422 and "params.strategy" in answer.json()["detail"]
    assert len(answer.content) < 1000
    answer = service.get("/jobs/20250101-000000-00000000/events", params={"since": huge[:5000]})
    assert answer.status_code == 422 and len(answer.content) < 1000 and "since" in answer.json()["detail"]


def test_a_crashed_worker_leaves_no_traceback_in_events(service, dataset, tmp_path):
    job_dir = make_job(tmp_path / "job", dataset, iters=300_000, checkpoint_every=0, **FAST)
    job_id = service.post("/jobs", json={"path": str(job_dir)}).json()["id"]
    running = service.wait_for(job_id, lambda job: job["progress"] is not None, JOB_TIMEOUT_S, "a progress event")
    os.kill(running["worker_pid"], signal.SIGSEGV)  # faulthandler dumps the Python stacks into worker.log
    ended = service.wait_until_ended(job_id, JOB_TIMEOUT_S)
    assert ended["state"] == "failed" and "SIGSEGV" in ended["error"]
    worker_log = (service.root / "jobs" / job_id / "worker.log").read_text(errors="replace")
    assert "Fatal Python error" in worker_log  # the stacks are there, for the operator
    service.events(job_id)  # CheckedService: no traceback in any page of events
    assert wait_until_dead(running["worker_pid"])
