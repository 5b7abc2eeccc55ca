"""Gaussian training quality against time: held-out PSNR / SSIM vs wall time, steps and Gaussians.

Usage::

    python scripts/bench_train.py DATA_DIR [--iters N] [--eval-every K] [--device cpu]
    python scripts/bench_train.py --default-scene [--views 60 --resolution 128]

``--default-scene`` first renders the add-on's built-in scene with Blender in a subprocess
(``python -m radiantforge_addon.headless capture --default-scene ...``), then trains on it.
Goal on the 2-core CPU: above 30 dB PSNR on the held-out views within 10 minutes of training.

Times are training wall time (the periodic test evaluations are not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_PSNR_DB = 30.0
TARGET_SECONDS = 600.0


def capture_default_scene(out_dir: Path, views: int, resolution: int, engine: str | None) -> Path:
    data_dir = out_dir / "data"
    user_dir = out_dir / "blender_user"
    user_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "radiantforge_addon.headless", "capture", "--default-scene", "--out", str(data_dir),
               "--views", str(views), "--resolution", str(resolution)]
    if engine:
        command += ["--engine", engine]
    env = {**os.environ, "BLENDER_USER_RESOURCES": str(user_dir)}  # keep Blender's user folders out of $HOME
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit(f"capture failed ({completed.returncode}):\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")
    print(f"captured the default scene ({views} views at {resolution}px) in {time.perf_counter() - started:.1f} s "
          f"-> {data_dir}")
    return data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", help="dataset folder (NeRF-synthetic layout)")
    parser.add_argument("--default-scene", action="store_true", help="capture the built-in scene with bpy first")
    parser.add_argument("--views", type=int, default=60)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--engine", help="capture render engine (default: the capture CLI's)")
    parser.add_argument("--out", help="work folder (default: a new temporary folder)")
    parser.add_argument("--iters", type=int, default=6000)
    parser.add_argument("--eval-every", type=int, default=500, help="steps between held-out evaluations")
    parser.add_argument("--max-gaussians", type=int, default=200_000)
    parser.add_argument("--sh-degree", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--downscale", type=float, default=1.0)
    args = parser.parse_args()
    if not args.data and not args.default_scene:
        parser.error("give a DATA folder or --default-scene")

    import torch

    from radiantforge.events import EventLog
    from radiantforge.gaussians.train import GaussianTrainConfig, train_gaussians

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_train_"))
    work.mkdir(parents=True, exist_ok=True)
    data = capture_default_scene(work, args.views, args.resolution, args.engine) if args.default_scene else Path(args.data)

    config = GaussianTrainConfig(iters=args.iters, eval_every=args.eval_every, max_gaussians=args.max_gaussians,
                                 sh_degree=args.sh_degree, device=args.device, seed=args.seed, downscale=args.downscale,
                                 checkpoint_every=0)
    out_dir = work / f"result_{time.strftime('%Y%m%d_%H%M%S')}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; "
          f"{args.iters} steps, eval every {args.eval_every}")
    started = time.perf_counter()
    result = train_gaussians(data, out_dir, config=config, events=EventLog(work / "events.jsonl", echo=True))
    total = time.perf_counter() - started

    print()
    print(f"{'step':>7} {'train s':>9} {'Gaussians':>10} {'PSNR dB':>8} {'SSIM':>7}")
    reached = None
    for entry in result.history:
        print(f"{entry['step']:>7} {entry['elapsed']:>9.1f} {entry['n_gaussians']:>10} {entry['psnr']:>8.2f} "
              f"{entry['ssim']:>7.4f}")
        if reached is None and entry["psnr"] > TARGET_PSNR_DB:
            reached = entry
    metrics = result.metrics
    lpips = f"{metrics['lpips']:.4f}" if metrics["lpips"] is not None else metrics["lpips_status"]
    print(f"\nfinal on {metrics['n_views']} held-out views: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}, "
          f"LPIPS {lpips}; {result.n_gaussians} Gaussians; training {result.elapsed:.1f} s, total with evaluation "
          f"and writing {total:.1f} s")
    print(f"initialisation: {result.init_source}")
    if reached is not None:
        verdict = "met" if reached["elapsed"] <= TARGET_SECONDS else "missed"
        print(f"goal {TARGET_PSNR_DB:.0f} dB within {TARGET_SECONDS / 60:.0f} min: {verdict} "
              f"(first above {TARGET_PSNR_DB:.0f} dB at step {reached['step']}, {reached['elapsed']:.0f} s)")
    else:
        print(f"goal {TARGET_PSNR_DB:.0f} dB within {TARGET_SECONDS / 60:.0f} min: not reached in this run")
    print(json.dumps({"out_dir": str(result.out_dir), "psnr": metrics["psnr"], "ssim": metrics["ssim"],
                      "n_gaussians": result.n_gaussians, "train_seconds": result.elapsed}))


if __name__ == "__main__":
    main()
