"""Wall time of a batch of N short entries: on this machine (no Ray) vs on a local Ray cluster with 1 and 2
workers, and Ray's own overhead per entry, so a projection for a real cluster rests on measured costs.

    python scripts/bench_batch.py --entries 8

The entries are text-to-3D runs through the tiny random Stable Diffusion of tests/tiny_diffusion.py
(--steps steps each, one torch thread per worker), each a different seed. Printed: each path's wall
time, the summed training seconds of its entries, the Ray round trip of an empty actor call, a
worker's start-up (process, imports, model load) and the per-entry overhead of Ray over the local path:
(wall on 1 worker - wall here) / N.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))


def write_batch(folder: Path, model: Path, entries: int, steps: int) -> Path:
    from batch_helpers import TEXT3D_PARAMS

    params = {**TEXT3D_PARAMS, "steps": steps, "checkpoint_every": 0, "model": str(model)}
    lines = [json.dumps({"kind": "text3d", "prompt": "a red teapot", "params": {**params, "seed": seed}})
             for seed in range(entries)]
    path = folder / "batch.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def timed_batch(batch: Path, out: Path, **options) -> tuple[float, float]:
    from radiantforge.batch import run_batch

    started = time.perf_counter()
    report = run_batch(batch, out, **options)
    wall = time.perf_counter() - started
    assert all(o.status == "generated" for o in report.outcomes), report.table
    return wall, sum(o.seconds or 0.0 for o in report.outcomes)


def ray_overheads() -> tuple[float, float]:
    """(median round trip of an empty actor call, seconds until a new worker actor answers) in ms and s."""
    import ray

    @ray.remote(num_cpus=1)
    class Empty:
        def ping(self) -> None:
            return None

    started = time.perf_counter()
    actor = Empty.remote()
    ray.get(actor.ping.remote())
    startup = time.perf_counter() - started
    trips = []
    for _ in range(200):
        begun = time.perf_counter()
        ray.get(actor.ping.remote())
        trips.append(time.perf_counter() - begun)
    ray.kill(actor)
    return sorted(trips)[len(trips) // 2] * 1e3, startup


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=8, help="entries in the batch (default 8)")
    parser.add_argument("--steps", type=int, default=8, help="optimisation steps per entry (default 8)")
    args = parser.parse_args()

    import torch

    from tiny_diffusion import build_tiny_stable_diffusion

    torch.set_num_threads(1)  # as each Ray worker (one CPU each)
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        model = build_tiny_stable_diffusion(root / "model").folder
        batch = write_batch(root, model, args.entries, args.steps)
        figures = {"local": timed_batch(batch, root / "local")}

        import ray

        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
        try:
            round_trip_ms, plain_startup = ray_overheads()
            for workers in (1, 2):
                figures[f"ray, {workers} worker{'s' if workers > 1 else ''}"] = timed_batch(
                    batch, root / f"ray{workers}", ray="auto", workers=workers)
        finally:
            ray.shutdown()

    local_wall = figures["local"][0]
    print(f"{args.entries} text-to-3D entries of {args.steps} steps (tiny Stable Diffusion, 1 torch thread per worker)")
    print(f"{'path':<16} {'wall s':>8} {'entries s':>10} {'vs local':>9}")
    for name, (wall, trained) in figures.items():
        print(f"{name:<16} {wall:>8.2f} {trained:>10.2f} {local_wall / wall:>8.2f}x")
    per_entry = (figures["ray, 1 worker"][0] - local_wall) / args.entries
    print(f"Ray round trip of an empty actor call: {round_trip_ms:.2f} ms (median of 200)")
    print(f"an empty actor's start-up: {plain_startup:.2f} s (a batch worker adds torch, diffusers and its model)")
    print(f"Ray's overhead per entry over the local path (1 worker, start-up included): {per_entry:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
