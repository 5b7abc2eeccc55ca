"""Helpers of tests/test_service.py: a tiny ray-traced dataset, job folders and archives, and a real
`radiantforge` service process on loopback."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from radiantforge.cameras import orbit_cameras
from radiantforge.jobs import write_job

SPHERE_RADIUS = 0.5
CAMERA_DISTANCE = 2.5
FOV_X_DEG = 40.0
SERVICE_START_TIMEOUT_S = 60.0


def render_sphere(c2w_gl: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 4) uint8 RGBA image of a sphere at the origin coloured by its normal, ray traced exactly."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    # GL camera: x right, y up, looking down -z.
    directions_cam = np.stack([(u - K[0, 2]) / K[0, 0], -(v - K[1, 2]) / K[1, 1], -np.ones_like(u)], axis=-1)
    directions = directions_cam @ c2w_gl[:3, :3].T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    origin = c2w_gl[:3, 3]
    # |o + t d|^2 = r^2  ->  t^2 + 2 (o.d) t + |o|^2 - r^2 = 0
    b = directions @ origin
    c = origin @ origin - SPHERE_RADIUS**2
    discriminant = b * b - c
    hit = discriminant > 0
    t = -b - np.sqrt(np.where(hit, discriminant, 0.0))
    normals = (origin + t[..., None] * directions) / SPHERE_RADIUS
    rgb = np.where(hit[..., None], normals * 0.5 + 0.5, 0.0)
    rgba = np.concatenate([rgb, hit[..., None].astype(float)], axis=-1)
    return (np.clip(rgba, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def make_sphere_dataset(data_dir: Path, n_train: int = 6, n_test: int = 2, size: int = 16) -> Path:
    """A NeRF-synthetic folder (transforms_train/test.json + RGBA PNGs) of the normal-coloured sphere."""
    cameras = orbit_cameras(n_train + n_test, CAMERA_DISTANCE, fov_x_deg=FOV_X_DEG, width=size, height=size,
                            elevation_deg=None)
    data_dir.mkdir(parents=True, exist_ok=True)
    splits = {"train": range(n_train), "test": range(n_train, n_train + n_test)}
    for split, indices in splits.items():
        (data_dir / split).mkdir(exist_ok=True)
        frames = []
        for index in indices:
            c2w = cameras.c2w_gl[index].double().numpy()
            image = render_sphere(c2w, cameras.intrinsics[index].double().numpy(), size, size)
            Image.fromarray(image, "RGBA").save(data_dir / split / f"r_{index}.png")
            frames.append({"file_path": f"./{split}/r_{index}", "transform_matrix": c2w.tolist()})
        document = {"camera_angle_x": math.radians(FOV_X_DEG), "frames": frames}
        (data_dir / f"transforms_{split}.json").write_text(json.dumps(document), encoding="utf-8")
    return data_dir


def make_job(job_dir: Path, dataset: Path, **params) -> Path:
    """A gaussians job folder whose data/ is a copy of ``dataset``."""
    write_job(job_dir, "gaussians", params)
    for source in dataset.rglob("*"):
        if source.is_file():
            target = job_dir / "data" / source.relative_to(dataset)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return job_dir


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return archive


class ServiceProcess:
    """`python -m radiantforge.service` on 127.0.0.1, a free port, over ``root``."""

    def __init__(self, root: Path, token: str | None = None, extra_args: tuple[str, ...] = (), env: dict | None = None):
        self.root = root
        self.token = token
        self.extra_args = extra_args
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.log_path = root.parent / f"{root.name}-service.log"

    def start(self) -> "ServiceProcess":
        command = [sys.executable, "-m", "radiantforge.service", "--host", "127.0.0.1", "--port", "0",
                   "--root", str(self.root), "--log-level", "warning", *self.extra_args]
        env = dict(os.environ)
        env.pop("RADIANTFORGE_TOKEN", None)
        env.update(self.extra_env)
        if self.token:
            env["RADIANTFORGE_TOKEN"] = self.token  # not on the command line, where `ps` shows it
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        info_file = self.root / "service.json"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}:\n{self.log()}")
            try:
                info = json.loads(info_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                info = {}
            if info.get("pid") == self.process.pid:
                self.url = info["url"] + "/api/v1"
                try:
                    if self.get("/health").status_code == 200:
                        return self
                except requests.ConnectionError:
                    pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"the service did not answer within {SERVICE_START_TIMEOUT_S} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return ""

    def headers(self, token: str | None = "default") -> dict:
        token = self.token if token == "default" else token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method: str, path: str, token: str | None = "default", **kwargs) -> requests.Response:
        headers = {**self.headers(token), **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=kwargs.pop("timeout", 30), **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def job(self, job_id: str) -> dict:
        answer = self.get(f"/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def events(self, job_id: str) -> list[dict]:
        events, since = [], 0
        while True:
            answer = self.get(f"/jobs/{job_id}/events", params={"since": since})
            assert answer.status_code == 200, answer.text
            page = answer.json()
            events += page["events"]
            if page["next"] == since:
                return events
            since = page["next"]

    def wait_for(self, job_id: str, condition, timeout: float = 60.0, what: str = "") -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if condition(job):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id}: {what or 'condition'} not reached within {timeout} s; last: {job}\n{self.log()}")

    def wait_until_ended(self, job_id: str, timeout: float = 60.0) -> dict:
        return self.wait_for(job_id, lambda job: job["state"] in ("finished", "failed", "cancelled"), timeout, "an end state")

    def wait_for_file(self, path: Path, timeout: float = 60.0, poll_s: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} did not appear within {timeout} s\n{self.log()}")
            time.sleep(poll_s)

    def stop(self) -> None:
        """SIGTERM (as the add-on does) and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, no clean-up at all."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def wait_until_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
