"""Forward+backward time and peak memory of the Gaussian rasterizers on the CPU: pure torch and native.

    python scripts/bench_rasterizer.py            # the full table (several minutes)
    python scripts/bench_rasterizer.py --quick    # three cases, fewer repeats
    python scripts/bench_rasterizer.py --backends native --threads 1,2   # native scaling only
    python scripts/bench_rasterizer.py --allocator tcmalloc   # also run every case with tcmalloc
    python scripts/bench_rasterizer.py --threads 1            # steadier figures on a shared machine

Backends (--backends, default both), resolved once per case (radiantforge.gaussians.rasterizers) as a
training run resolves its choice: "torch" is the pure-PyTorch path, "native" the Numba kernels of
radiantforge.gaussians.native, both called through rasterize(..., backend=<the resolved one>). Each
case runs once per backend and per thread count (--threads, default 1,2), so the table shows time
against N, resolution, backend and threads, with the native/torch speed-up of the same run.

Every case runs in its own subprocess so its peak resident memory (ru_maxrss) is its own.
Timings are the median of --repeats runs after one warm-up (the native kernels compile, or load
from Numba's cache, before it), wall clock, with torch.set_num_threads(--threads), which the native
kernels follow too. On a shared machine other processes slow
down the wall clock; look at the "cpu" column (process CPU time per run) too, and compare rows
of one run, not across runs. With 2 threads on a busy machine, torch's OpenMP threads spin at
every parallel op waiting for a descheduled sibling (seconds instead of 0.3 s measured here);
--omp-passive runs the workers with OMP_WAIT_POLICY=PASSIVE, which avoids that.

Scenes
- donut: the real 45,624-Gaussian file ../shared/assets/splats/donut-sh0.ply (beside the repository) (SH degree 0),
  seen from 0.35 m at 30 degrees elevation with a 40 degree field of view (it fills most of the frame).
- random-N (random-1k ... random-200k): a sphere of radius 1 seen from 3.2 m (same FOV): 90 % of the means on its surface
  (radial noise N(0, 0.02)), 10 % uniform inside; scales exp(N(ln s0, 0.5)) per axis with
  s0 = 0.5 sqrt(4 pi / N) (so the shell is about covered whatever N); opacities sigmoid(N(0, 2));
  random rotations; SH degree 3 with DC ~ N(0.8, 0.3) and higher bands ~ N(0, 0.1).
- The dense reference (tests/reference_rasterizer.py: every Gaussian against every pixel, float64,
  autograd) is timed where it fits the budget: its cost is estimated from a 64-Gaussian probe
  and it is skipped, with the estimate printed, when forward+backward would exceed --reference-budget
  seconds or about 4 GB of autograd memory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DONUT = REPO.parent / "shared" / "assets" / "splats" / "donut-sh0.ply"
TCMALLOC_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4")
REFERENCE_MEMORY_LIMIT = 4e9  # bytes of autograd graph the reference may build
REFERENCE_BYTES_PER_GAUSSIAN_PIXEL = 8 * 12  # float64 values kept per (Gaussian, pixel) for backward

FULL_CASES = [
    ("random-10k", 10_000, 256), ("donut", 45_624, 256), ("random-50k", 50_000, 256), ("random-200k", 200_000, 256),
    ("random-10k", 10_000, 512), ("donut", 45_624, 512), ("random-200k", 200_000, 512),
    ("random-1k", 1_000, 64), ("random-1k", 1_000, 128),
]  # fmt: skip
QUICK_CASES = [("donut", 45_624, 256), ("random-10k", 10_000, 256), ("random-1k", 1_000, 64)]
BACKENDS = ("torch", "native")


def load_scene(name: str, n: int):
    """(means, quats, scales, opacities, colors, sh_degree, viewmat, K-maker)."""
    import torch

    from radiantforge.cameras import look_at_c2w_gl, c2w_gl_to_w2c_cv, focal_from_fov

    fov = math.radians(40.0)
    if name == "donut":
        try:
            from radiantforge.gaussians.ply import load_gaussian_ply

            splats = load_gaussian_ply(DONUT).activated()
            means, quats, scales, opacities, colors = (
                splats["means"], splats["quats"], splats["scales"], splats["opacities"], splats["sh_coeffs"]
            )  # fmt: skip
        except ImportError:
            from plyfile import PlyData

            v = PlyData.read(str(DONUT))["vertex"]

            def cols(*names):
                return torch.tensor([[float(x) for x in row] for row in zip(*(v[k] for k in names))])

            means = cols("x", "y", "z")
            quats = torch.nn.functional.normalize(cols("rot_0", "rot_1", "rot_2", "rot_3"), dim=-1)
            scales = cols("scale_0", "scale_1", "scale_2").exp()
            opacities = torch.sigmoid(cols("opacity")[:, 0])
            colors = cols("f_dc_0", "f_dc_1", "f_dc_2")[:, None, :]
        target, distance, elevation = means.mean(0), 0.35, math.radians(30)
        sh_degree = 0
    else:
        g = torch.Generator().manual_seed(n)
        n_shell = int(0.9 * n)
        dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
        radius = torch.ones(n)
        radius[:n_shell] += 0.02 * torch.randn(n_shell, generator=g)
        radius[n_shell:] = torch.rand(n - n_shell, generator=g) ** (1 / 3)
        means = dirs * radius[:, None]
        s0 = 0.5 * math.sqrt(4 * math.pi / n)
        scales = torch.exp(math.log(s0) + 0.5 * torch.randn(n, 3, generator=g))
        quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
        opacities = torch.sigmoid(2.0 * torch.randn(n, generator=g))
        colors = 0.1 * torch.randn(n, 16, 3, generator=g)
        colors[:, 0] = 0.8 + 0.3 * torch.randn(n, 3, generator=g)
        target, distance, elevation = torch.zeros(3), 3.2, math.radians(30)
        sh_degree = 3
    eye = target + distance * torch.tensor([0.0, -math.cos(elevation), math.sin(elevation)])
    viewmat = c2w_gl_to_w2c_cv(look_at_c2w_gl(eye[None], target))

    def intrinsics(size):
        f = focal_from_fov(fov, size)
        return torch.tensor([[[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]]])

    return means, quats, scales, opacities, colors, sh_degree, viewmat, intrinsics


def run_case(args) -> dict:
    """Runs in the worker subprocess: one scene, one resolution."""
    import torch

    if int(args.threads):
        torch.set_num_threads(int(args.threads))
    from radiantforge.gaussians import rasterize as rasterize_module
    from radiantforge.gaussians.rasterize import rasterize
    from radiantforge.gaussians.rasterizers import resolve_rasterizer

    backend = resolve_rasterizer(args.backend, "cpu")  # once per case, as a training run resolves its choice
    means, quats, scales, opacities, colors, sh_degree, viewmat, intrinsics = load_scene(args.scene, args.n)
    size = args.size
    Ks = intrinsics(size)
    params = [t.detach().clone().requires_grad_(True) for t in (means, quats, scales, opacities, colors)]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def once():
        for p in params:
            p.grad = None
        t0, c0 = time.perf_counter(), time.process_time()
        image, alpha, depth, info = rasterize(*params, viewmat, Ks, size, size, sh_degree=sh_degree, backend=backend)
        t1 = time.perf_counter()
        (image.square().mean() + alpha.mean() + 1e-3 * depth.mean()).backward()
        t2, c2 = time.perf_counter(), time.process_time()
        return t1 - t0, t2 - t1, c2 - c0, info

    once()  # warm-up (allocator, lazy init; the native kernels compile or load from Numba's cache)
    runs = [once() for _ in range(args.repeats)]
    info = runs[-1][3]

    # Composited fragments (weight > 0): counted in a separate run of the torch path, so the timed
    # runs stay clean (the number is the scene's, whichever backend is timed).
    composited = [0]
    original = rasterize_module._composite_block

    def counting(raw_alpha, t_start, with_gate=False):
        out = original(raw_alpha, t_start, with_gate)
        composited[0] += int(((out[0] > 0) & (out[3] > 0)).sum())
        return out

    rasterize_module._composite_block = counting
    with torch.no_grad():
        rasterize(*[p.detach() for p in params], viewmat, Ks, size, size, sh_degree=sh_degree, backend="torch")
    rasterize_module._composite_block = original

    result = {
        "forward_s": statistics.median(r[0] for r in runs),
        "backward_s": statistics.median(r[1] for r in runs),
        "total_s": statistics.median(r[0] + r[1] for r in runs),
        "total_min_s": min(r[0] + r[1] for r in runs),
        "cpu_s": statistics.median(r[2] for r in runs),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss_before / 2**20,
        "visible": info["stats"]["visible"],
        "tile_entries": info["stats"]["tile_entries"],
        "fragments": info["stats"]["fragments"],
        "composited": composited[0],
        "threads": torch.get_num_threads(),
        "backend": info["backend"],
    }
    if args.reference_budget > 0:
        result.update(time_reference(params, viewmat, Ks, size, sh_degree, args.reference_budget))
    return result


def time_reference(params, viewmat, Ks, size, sh_degree, budget_s) -> dict:
    """Dense float64 reference forward+backward, if its estimated cost fits the budget."""
    sys.path.insert(0, str(REPO / "tests"))
    from reference_rasterizer import reference_rasterize

    n = len(params[0])
    probe = 64
    sub = [p.detach()[:probe].clone().requires_grad_(True) for p in params]
    t0 = time.perf_counter()
    image, alpha, depth = reference_rasterize(*sub, viewmat, Ks, size, size, sh_degree=sh_degree)
    (image.square().mean() + alpha.mean()).backward()
    estimate = (time.perf_counter() - t0) * n / probe
    memory = n * size * size * REFERENCE_BYTES_PER_GAUSSIAN_PIXEL
    if estimate > budget_s or memory > REFERENCE_MEMORY_LIMIT:
        return {"reference_s": None, "reference_estimate_s": estimate, "reference_memory_gb": memory / 1e9}
    full = [p.detach().clone().requires_grad_(True) for p in params]
    t0 = time.perf_counter()
    image, alpha, depth = reference_rasterize(*full, viewmat, Ks, size, size, sh_degree=sh_degree)
    (image.square().mean() + alpha.mean() + 1e-3 * depth.mean()).backward()
    return {"reference_s": time.perf_counter() - t0, "reference_estimate_s": estimate}


def launch(scene, n, size, args, backend, threads, allocator=None, reference=False) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--scene", scene, "--n", str(n), "--size", str(size),
           "--repeats", str(args.repeats), "--threads", str(threads), "--backend", backend,
           "--reference-budget", str(args.reference_budget if reference and allocator is None else 0)]  # fmt: skip
    env = dict(os.environ)
    if args.omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if allocator:
        env["LD_PRELOAD"] = allocator
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def fmt_reference(r: dict) -> str:
    if "reference_estimate_s" not in r:
        return "-"
    if r.get("reference_s") is not None:
        return f"{r['reference_s']:.1f} s ({r['reference_s'] / r['total_s']:.0f}x)"
    why = f"est. {r['reference_estimate_s']:.0f} s"
    if r.get("reference_memory_gb", 0) * 1e9 > REFERENCE_MEMORY_LIMIT:
        why += f", {r['reference_memory_gb']:.0f} GB"
    return f"skipped ({why})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="three cases, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 5, quick 3)")
    parser.add_argument("--threads", default="1,2", help="torch (and native) thread counts, comma-separated (0 = torch default)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: torch, native")
    parser.add_argument("--omp-passive", action="store_true",
                        help="run workers with OMP_WAIT_POLICY=PASSIVE (on a busy machine, spinning OpenMP threads make every parallel op wait for a descheduled thread)")  # fmt: skip
    parser.add_argument("--reference-budget", type=float, default=60.0, help="seconds the dense reference may take per case")
    parser.add_argument("--allocator", choices=["default", "tcmalloc"], default="default",
                        help="tcmalloc: also run each case with LD_PRELOAD of Debian's libtcmalloc (apt install libgoogle-perftools4)")  # fmt: skip
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.worker:
        print(json.dumps(run_case(args)))
        return

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if any(b not in BACKENDS for b in backends):
        parser.error(f"--backends takes {', '.join(BACKENDS)}, got {args.backends!r}")
    thread_counts = [int(t) for t in str(args.threads).split(",") if t.strip()]
    tcmalloc = None
    if args.allocator == "tcmalloc":
        tcmalloc = next((p for p in TCMALLOC_CANDIDATES if Path(p).exists()), None)
        if tcmalloc is None:
            sys.exit("tcmalloc not found: apt-get install libgoogle-perftools4 (benchmark only)")
    cases = QUICK_CASES if args.quick else FULL_CASES
    header = (f"{'case':<12} {'N':>7} {'res':>5} {'backend':>7} {'thr':>3} {'visible':>7} {'tile pairs':>10} "
              f"{'fragments':>10} {'composited':>10} {'fwd ms':>7} {'bwd ms':>7} {'f+b ms':>7} {'min':>6} {'cpu ms':>7} "
              f"{'peak MB':>8} {'vs torch':>8}  dense reference (f+b)")  # fmt: skip
    if tcmalloc:
        header += "  | tcmalloc: f+b ms, peak MB"
    print(f"rasterize forward+backward, median of {args.repeats}; backends {', '.join(backends)}; threads "
          f"{', '.join(str(t or 'default') for t in thread_counts)}{', OMP_WAIT_POLICY=PASSIVE' if args.omp_passive else ''}; "
          f"load average {os.getloadavg()[0]:.1f} (a shared machine: compare rows of one run, and the cpu column)")  # fmt: skip
    print(header)
    print("-" * len(header))
    peaks = {}
    for scene, n, size in cases:
        torch_time = {}
        for backend in backends:
            for threads in thread_counts:
                # The dense reference once per case (its own time does not depend on the backend).
                reference = backend == backends[0] and threads == thread_counts[0]
                r = launch(scene, n, size, args, backend, threads, reference=reference)
                label = f"{scene:<12} {n:>7} {size:>4}² {backend:>7} {threads or '-':>3}"
                if "error" in r:
                    print(f"{label}  failed: {r['error']}", flush=True)
                    continue
                if backend == "torch":
                    torch_time[threads] = r["total_s"]
                speedup = f"{torch_time[threads] / r['total_s']:.1f}x" if backend != "torch" and threads in torch_time else "-"
                peaks[(scene, n, size, backend, threads)] = r["peak_rss_mb"] - r["rss_before_mb"]
                line = (f"{label} {r['visible']:>7} {r['tile_entries']:>10,} {r['fragments']:>10,} "
                        f"{r['composited']:>10,} {1e3 * r['forward_s']:>7.1f} {1e3 * r['backward_s']:>7.1f} "
                        f"{1e3 * r['total_s']:>7.1f} {1e3 * r['total_min_s']:>6.1f} {1e3 * r['cpu_s']:>7.1f} "
                        f"{r['peak_rss_mb']:>8.0f} {speedup:>8}  {fmt_reference(r)}")  # fmt: skip
                if tcmalloc:
                    t = launch(scene, n, size, args, backend, threads, allocator=tcmalloc)
                    line += f"  | {1e3 * t['total_s']:.0f}, {t['peak_rss_mb']:.0f}" if "error" not in t else f"  | failed: {t['error']}"
                print(line, flush=True)
    print("tile pairs: (Gaussian, tile) entries (torch: 4x4-pixel tiles; native: 16x16); fragments: (Gaussian,")
    print("pixel) pairs evaluated (native: 4x4-pixel blocks evaluated x 16, as its SIMD loops do);")
    print("composited: fragments with alpha >= 1/255 before the pixel's transmittance fell below 1e-4.")
    print("peak MB: the worker process's peak resident memory (python + torch + scene + rendering).")
    # Memory against image size: the growth of peak memory over the scene's own (rss_before) per pixel count.
    for backend in backends:
        for threads in thread_counts:
            small, large = peaks.get(("random-200k", 200_000, 256, backend, threads)), peaks.get(("random-200k", 200_000, 512, backend, threads))
            if small is not None and large is not None:
                print(f"random-200k {backend} ({threads} thr): rendering memory (peak - before) {small:.0f} MB at 256², "
                      f"{large:.0f} MB at 512² (x{large / max(small, 1e-9):.1f} for 4x the pixels)")


if __name__ == "__main__":
    main()
