"""Helpers of tests/test_batch.py, tests/test_batch_ray.py and scripts/bench_batch.py: a mixed batch file
of the three job kinds with tiny step counts, and a guidance loader that brings the oracle.

The batch: text-to-3D through the tiny random Stable Diffusion (a real diffusers model loaded from
a folder, tests/tiny_diffusion.py), text-to-3D through the oracle (Spot as the known object, DESIGN.md),
a texture job on Spot through the tiny model, and a Gaussian job on the ray-traced sphere dataset of
tests/service_helpers.py with the pure-PyTorch rasterizer (no Numba compile in a fresh worker).

The loader answers model names "oracle-spot" (Text3DOracle on Spot) and "oracle-spot-kill" (the
same, but the process that runs it kills itself with SIGKILL at the KILL_AT_CALL-th target render
when the file named by $RADIANTFORGE_TEST_KILL_MARKER does not exist yet; it creates that file
first, so the rerun lives). Any other name loads Stable Diffusion as the product does.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path

SHARED_ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
KILL_MARKER_ENV = "RADIANTFORGE_TEST_KILL_MARKER"
KILL_AT_CALL = 3  # the oracle renders its target once per step: killed in step 3, after the checkpoint of step 2
SPOT_HALF_EXTENT = 0.7

# Tiny runs: a second or two each on one CPU thread.
TEXT3D_PARAMS = {"steps": 4, "resolution": 12, "num_samples": 16, "occupancy_resolution": 16, "mesh_resolution": 24,
                 "target_faces": 300, "texture_size": 32, "turntable_frames": 2, "turntable_resolution": 16,
                 "checkpoint_every": 2, "device": "cpu"}
TEXTURE_PARAMS = {"steps": 3, "resolution": 32, "texture_size": 64, "turntable_frames": 2, "turntable_resolution": 32,
                  "checkpoint_every": 2, "device": "cpu"}
GAUSSIAN_PARAMS = {"steps": 20, "sh_degree": 0, "init_points": 100, "max_gaussians": 100, "device": "cpu",
                   "rasterize_backend": "torch", "turntable_frames": 2, "checkpoint_every": 10}
# The file that stands for each kind's result in comparisons (bytes compared between runs).
MAIN_FILE = {"text3d": "mesh.obj", "texture": "texture.png", "gaussians": "point_cloud.ply"}


def _spot():
    from radiantforge.mesh import TriangleMesh, load_mesh

    mesh = load_mesh(SHARED_ASSETS / "spot" / "spot_triangulated.obj")
    low, high = mesh.bounds()
    scale = SPOT_HALF_EXTENT / float((high - low).max() / 2)
    vertices = (mesh.vertices - (low + high) / 2) * scale
    return TriangleMesh(vertices, mesh.faces, uvs=mesh.uvs, face_uvs=mesh.face_uvs, texture=mesh.texture)


class _KillingTarget:
    """Spot's renders, but the process dies at the KILL_AT_CALL-th one unless the marker file exists."""

    def __init__(self, target):
        self.target, self.calls = target, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        marker = os.environ.get(KILL_MARKER_ENV)
        if marker and self.calls == KILL_AT_CALL and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return self.target(*args, **kwargs)


def oracle_loader(model: str, device):
    """The batch's guidance loader: the oracle for "oracle-spot*", Stable Diffusion otherwise."""
    if not str(model).startswith("oracle-spot"):
        from radiantforge.guidance import load_stable_diffusion

        return load_stable_diffusion(model, device=device)
    from radiantforge.guidance import OracleDenoiser
    from radiantforge.text3d import MeshTarget, Text3DOracle

    target = MeshTarget(_spot())
    if model == "oracle-spot-kill":
        target = _KillingTarget(target)
    return Text3DOracle(OracleDenoiser("space_to_depth", device="cpu"), target)


def write_mixed_batch(folder: Path, tiny_model: Path, *, kill: bool = False, copies: int = 1) -> Path:
    """``folder/batch.jsonl`` with the four kinds of entry (and the inputs it names, relative to it).

    kill: the oracle entry uses "oracle-spot-kill". copies: repeat the tiny-SD text3d entry with
    other seeds (more entries for a benchmark).
    """
    from service_helpers import make_sphere_dataset

    folder.mkdir(parents=True, exist_ok=True)
    make_sphere_dataset(folder / "scenes" / "sphere", n_train=4, n_test=1, size=16)
    mesh_dir = folder / "meshes"
    mesh_dir.mkdir(exist_ok=True)
    for name in ("spot_triangulated.obj", "spot.mtl", "spot_texture.png"):
        (mesh_dir / name).write_bytes((SHARED_ASSETS / "spot" / name).read_bytes())
    model = os.path.relpath(tiny_model, folder)
    lines = ["# a mixed batch: the three job kinds",
             json.dumps({"kind": "text3d", "prompt": "a red teapot", "params": {**TEXT3D_PARAMS, "model": model}}),
             json.dumps({"kind": "text3d", "prompt": "a cow", "name": "spot by the oracle",
                         "params": {**TEXT3D_PARAMS, "model": "oracle-spot-kill" if kill else "oracle-spot"}}),
             json.dumps({"kind": "texture", "mesh": "meshes/spot_triangulated.obj", "prompt": "a cow with patches",
                         "params": {**TEXTURE_PARAMS, "model": model}}),
             json.dumps({"kind": "gaussians", "data": "scenes/sphere", "params": GAUSSIAN_PARAMS})]
    for seed in range(1, copies):
        lines.append(json.dumps({"kind": "text3d", "prompt": "a red teapot",
                                 "params": {**TEXT3D_PARAMS, "model": model, "seed": seed}}))
    path = folder / "batch.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# Gaussian results are compared within this (absolute, on every PLY attribute): the same training in
# another process differed by up to 2.3e-6 in one measurement (CPU float reductions depend on what the
# process ran before: alone vs after three other entries), even on this machine. Guided results are
# compared byte for byte (they were identical).
GAUSSIAN_ATOL = 1e-5


def result_files(out_dir: Path, outcomes) -> dict[str, Path]:
    """entry label -> its main result file (MAIN_FILE of its kind)."""
    return {o.label: out_dir / o.folder / MAIN_FILE[o.kind] for o in outcomes}


def assert_same_results(actual: dict[str, Path], expected: dict[str, Path]) -> None:
    """Each entry's main file as the reference's: bytes, or the splats' attributes within GAUSSIAN_ATOL."""
    import torch

    from radiantforge.gaussians.ply import load_gaussian_ply

    assert actual.keys() <= expected.keys()
    for label, path in actual.items():
        if path.suffix != ".ply":
            assert hashlib.sha1(path.read_bytes()).digest() == hashlib.sha1(expected[label].read_bytes()).digest(), label
            continue
        mine, theirs = load_gaussian_ply(path), load_gaussian_ply(expected[label])
        for name, value in vars(mine).items():
            if torch.is_tensor(value) and value.numel():
                assert torch.allclose(value, getattr(theirs, name), rtol=0, atol=GAUSSIAN_ATOL), (label, name)
