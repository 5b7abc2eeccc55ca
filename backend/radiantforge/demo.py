"""`radiantforge demo`: the whole Gaussian job on a built-in scene, on the CPU, in a few minutes.

1. Blender (the `bpy` module, run in a subprocess so it never shares a process with torch) builds the
   default scene and renders it from an orbit of cameras into a job folder's data/ (NeRF-synthetic layout).
2. The job runs exactly as the add-on's jobs run (`radiantforge.jobs.run_job`): training, evaluation on
   held-out views, the 3DGS PLY, a turntable GIF/MP4 and metrics in result/.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import InputError, RadiantForgeError
from .jobs import DATA_DIR, RESULT_DIR, run_job, write_job

# Fewer steps than a real job's 7000 (GaussianTrainConfig.steps): the demo scene is 96 px and the
# demo must finish in a few minutes on two CPU cores.
DEMO_STEPS = 1500


def capture_default_scene(data_dir: str | Path, *, views: int, resolution: int, engine: str, test_every: int = 8) -> None:
    """Render the built-in scene with Blender into ``data_dir`` (a NeRF-synthetic dataset)."""
    if importlib.util.find_spec("bpy") is None:
        raise InputError("the Blender Python module is not installed; install the project with "
                         "pip install -e \".[dev]\" (it brings bpy 5.0) to build the demo scene", field="bpy")
    command = [sys.executable, "-m", "radiantforge_addon.headless", "capture", "--default-scene",
               "--out", str(data_dir), "--views", str(views), "--resolution", str(resolution),
               "--engine", engine, "--test-every", str(test_every), "--overwrite"]
    print(f"capturing the demo scene with Blender: {views} views at {resolution}px ({engine})", file=sys.stderr)
    completed = subprocess.run(command)
    if completed.returncode != 0:
        raise RadiantForgeError(f"Blender capture failed (exit code {completed.returncode}); command: {' '.join(command)}")


def run_demo(out: str | Path = "demo_output", *, views: int = 48, resolution: int = 96, steps: int = DEMO_STEPS,
             engine: str = "BLENDER_WORKBENCH", device: str = "auto", overwrite: bool = False) -> dict:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError("the folder is not empty; pass --overwrite to replace the earlier demo or choose --out", file=out)
        if not (out / "job.json").exists():
            raise InputError("refusing to overwrite a folder that is not an earlier demo job (no job.json)", file=out)
        shutil.rmtree(out)
    write_job(out, "gaussians", {"steps": steps, "device": device})
    capture_default_scene(out / DATA_DIR, views=views, resolution=resolution, engine=engine)
    outcome = run_job(out, echo=True)
    if outcome["state"] != "finished":
        raise RadiantForgeError(f"demo job {outcome['state']}: {outcome.get('error', '')} (see {out / 'events.jsonl'})")
    result_dir = out / RESULT_DIR
    metrics_file = result_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    print(f"\nDemo finished. Results in {result_dir}:", file=sys.stderr)
    for entry in outcome["result"].get("files", []):
        print(f"  {entry.get('role', ''):>14}  {entry.get('path', '')}", file=sys.stderr)
    summary = {key: metrics.get(key) for key in ("psnr", "ssim", "lpips", "lpips_status", "split", "n_views",
                                                  "steps", "n_gaussians", "train_seconds", "init_source")}
    print(json.dumps(summary, indent=2))
    return outcome
