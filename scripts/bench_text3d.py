"""Cost of one text-to-3D optimisation step: time per step and peak memory at 64² and 128² NeRF renders.

Each step is split into its parts (the same :func:`radiantforge.text3d.run.optimisation_step` the
run uses, timed phase by phase):

  occupancy  refreshing the empty-space grid (every ``occupancy_update_every`` steps, amortised)
  render     camera sampling + NeRF volume rendering (and finite-difference normals when shaded)
  guidance   conditioning + SDS forward: resize to the model's size, VAE encode, UNet (CFG: 2 images)
  backward   loss.backward(): through the VAE encoder (latent SDS) and the NeRF render
  optimizer  Adam

Guidance models:
  --model tiny (default)  the tiny random Stable Diffusion of tests/tiny_diffusion.py (native size 16 px):
                          the NeRF's own cost is measured, but the guidance share is NOT representative.
  --model sd-architecture Stable Diffusion 1.5's UNet (860 M parameters) and VAE (512 px) built from their
                          configurations with random weights (compute does not depend on the weight values,
                          nothing is downloaded): the real per-step cost of SD guidance on this machine.

Each resolution runs in a fresh subprocess so that its peak resident memory (ru_maxrss on the CPU,
``torch.cuda.max_memory_allocated`` on CUDA) is its own. The field is the fresh density blob (a
ball of radius ``blob_radius``), kept fixed by learning rates of FROZEN_LEARNING_RATE: Adam does all
its arithmetic but moves nothing, so every step costs the same. (With the tiny random UNet a
learning field turns into fog that fills the box within a few dozen steps and the cost per step
grows several times over; a real run's cost follows the size of its object the same way.)

On a CPU shared with other work, pass ``--threads 1``: OpenMP threads that wait for a descheduled
sibling at every barrier made single steps 10-40x slower (and the figures meaningless) when two
other processes kept both cores of the 2-core test machine busy.

    python scripts/bench_text3d.py --threads 1             # tiny model, 64 and 128 px, CPU
    python scripts/bench_text3d.py --model sd-architecture --steps 2 --warmup 1

--compare: the NeRF path against the Gaussian path (representation="gaussians") with the oracle
denoiser on Spot (its texture) and on the Stanford bunny (../shared/assets/bunny, loaded Y up, with
a colour field of its own as vertex colours), each with the settings of its known-answer test
(tests/test_text3d.py, tests/test_text3d_gaussians.py): held-out ring PSNR and silhouette IoU, the
exported mesh's chamfer distance to the object, and wall time (the whole generate_3d call: setup,
optimisation, mesh, turntables, metrics), one torch thread, after a few untimed steps of each path
(so neither pays the process's one-time imports and kernel loads).

    python scripts/bench_text3d.py --compare [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PHASES = ("occupancy", "render", "guidance", "backward", "optimizer")
PROMPT = "a ceramic teapot"
# Adam's step is about the learning rate whatever the gradient: this one changes no float32 weight.
FROZEN_LEARNING_RATE = 1e-30


class PhaseTimer:
    """Wall time per named phase (CUDA work is synchronised at each boundary so it lands in its own phase)."""

    def __init__(self, device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)

    def _sync(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def phase(self, name: str):
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - start


def _sd_architecture_guidance(device):
    """StableDiffusionGuidance around SD 1.5-shaped networks with random weights (no download)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from tiny_diffusion import write_tiny_clip_tokenizer_files

    from radiantforge.guidance import StableDiffusionGuidance, default_dtype

    dtype = default_dtype(device)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # diffusers' defaults are SD 1.x's UNet
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512, scaling_factor=0.18215)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = CLIPTokenizer.from_pretrained(write_tiny_clip_tokenizer_files(Path(folder)), model_max_length=77)
    # The text encoder runs once per prompt; one layer of CLIP-L's width gives embeddings of the right shape.
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072,
                                                num_hidden_layers=1, num_attention_heads=12, max_position_embeddings=77))
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    unet.to(device=device, dtype=dtype)
    vae.to(device=device, dtype=dtype)
    text_encoder.to(device=device, dtype=dtype)
    return StableDiffusionGuidance(unet, vae, text_encoder, tokenizer, scheduler, device, dtype)


def _tiny_guidance(device, folder: Path):
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from tiny_diffusion import build_tiny_stable_diffusion

    from radiantforge.guidance import load_stable_diffusion

    build_tiny_stable_diffusion(folder / "tiny_sd")
    return load_stable_diffusion(folder / "tiny_sd", device=device)


def _rss_mib() -> float:
    """This process's current resident memory in MiB (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure_one(resolution: int, model: str, steps: int, warmup: int, device_name: str, threads: int | None,
                settings: dict | None = None) -> dict:
    """Run ``warmup`` + ``steps`` optimisation steps at ``resolution`` and return the figures."""
    import torch

    from radiantforge.devices import resolve_device
    from radiantforge.text3d import Text3DConfig
    from radiantforge.text3d.run import _fresh_state, make_guidance, optimisation_step, step_plan

    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device_name)
    with tempfile.TemporaryDirectory() as scratch:
        guidance = _sd_architecture_guidance(device) if model == "sd-architecture" else \
            _tiny_guidance(device, Path(scratch))
        # The default schedule over a run as long as the benchmark: the normal-shading warm-up and the mix after it.
        settings = {"learning_rate": FROZEN_LEARNING_RATE, "network_learning_rate": FROZEN_LEARNING_RATE,
                    **(settings or {})}
        config = Text3DConfig(prompt=PROMPT, resolution=resolution, steps=warmup + steps, device=device_name,
                              **settings)
        model_used, conditioner, name = make_guidance(guidance, config, device)
        state = _fresh_state(config, device)
        plan = step_plan(config)
        for _ in range(warmup):
            optimisation_step(config, state, model_used, conditioner, device, plan)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        rss_before = _rss_mib()
        timer = PhaseTimer(device)
        shadings = defaultdict(int)
        started = time.perf_counter()
        for _ in range(steps):
            outcome = optimisation_step(config, state, model_used, conditioner, device, plan, timer=timer)
            shadings[outcome.shading] += 1
        total = time.perf_counter() - started
    figures = {
        "resolution": resolution, "model": model, "guidance": name, "device": str(device),
        "threads": torch.get_num_threads(), "steps": steps, "seconds_per_step": total / steps,
        "phase_seconds_per_step": {phase: timer.seconds.get(phase, 0.0) / steps for phase in PHASES},
        "shadings": dict(shadings), "guidance_resolution": model_used.native_resolution,
        "rss_before_steps_mib": rss_before, "settings": settings or {},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }
    if device.type == "cuda":
        figures["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return figures


def _table(rows: list[dict]) -> str:
    lines = ["| render | s/step | occupancy | render | guidance | backward | optimizer | peak memory | shadings |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        per = row["phase_seconds_per_step"]
        total = row["seconds_per_step"]
        shares = [f"{per[p] * 1000:.0f} ms ({100 * per[p] / total:.0f}%)" for p in PHASES]
        if "peak_cuda_mib" in row:
            memory = f"{row['peak_cuda_mib']:.0f} MiB CUDA"
        else:
            memory = f"{row['peak_rss_mib']:.0f} MiB RSS (+{row['peak_rss_mib'] - row['rss_before_steps_mib']:.0f})"
        shadings = ", ".join(f"{k} {v}" for k, v in sorted(row["shadings"].items()))
        lines.append(f"| {row['resolution']}² | {total:.3f} | " + " | ".join(shares) + f" | {memory} | {shadings} |")
    return "\n".join(lines)


ASSETS = REPO_ROOT / ".." / "shared" / "assets"
OBJECT_HALF_EXTENT = 0.7  # metres, as the known-answer tests scale Spot


def _centred(mesh, **extra):
    from radiantforge.mesh import TriangleMesh

    low, high = mesh.bounds()
    scale = OBJECT_HALF_EXTENT / float((high - low).max() / 2)
    vertices = (mesh.vertices - (low + high) / 2) * scale
    return TriangleMesh(vertices, mesh.faces, uvs=mesh.uvs, face_uvs=mesh.face_uvs, texture=mesh.texture, **extra)


def compare_objects() -> dict:
    """name -> the object (world space, Z up, longest half-extent OBJECT_HALF_EXTENT) with its colours."""
    import torch

    from radiantforge.mesh import load_mesh

    spot = _centred(load_mesh(ASSETS / "spot" / "spot_triangulated.obj"))
    bunny = load_mesh(ASSETS / "bunny" / "bun_zipper.ply", up_axis="Y")  # a PLY loads Z up unless told
    positions = _centred(bunny).vertices
    # A colour field of our own: smooth bands over the body, so colour and shape both have to be right.
    colours = 0.5 + 0.4 * torch.stack([torch.sin(6.0 * positions[:, 2]), torch.cos(5.0 * positions[:, 0]),
                                       torch.sin(4.0 * (positions[:, 1] + positions[:, 2]))], dim=-1)
    return {"spot": spot, "bunny": _centred(bunny, vertex_colors=colours.clamp(0, 1))}


def compare_one(name: str, mesh, representation: str, scratch: Path, seed: int = 0) -> dict:
    import torch

    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from test_text3d import ORACLE_SETTINGS as NERF_SETTINGS
    from test_text3d_gaussians import ORACLE_SETTINGS as GAUSSIAN_SETTINGS

    from radiantforge.guidance import OracleDenoiser
    from radiantforge.text3d import MeshTarget, Text3DOracle, generate_3d

    settings = GAUSSIAN_SETTINGS if representation == "gaussians" else NERF_SETTINGS
    oracle = Text3DOracle(OracleDenoiser("space_to_depth", device="cpu"), MeshTarget(mesh))
    started = time.perf_counter()
    result = generate_3d(f"a {name}", scratch / f"{name}-{representation}-{seed}", guidance=oracle, device="cpu",
                         **{**settings, "turntable_frames": 8, "seed": seed})
    wall = time.perf_counter() - started
    metrics = result.metrics
    return {"object": name, "representation": representation, "seed": seed, "steps": metrics["steps"],
            "psnr_db": metrics["held_out_psnr"], "iou": metrics["held_out_silhouette_iou"],
            "chamfer_m": metrics["mesh_chamfer"], "train_s": metrics["train_seconds"], "wall_s": wall,
            "threads": torch.get_num_threads()}


def warm_up(mesh, scratch: Path) -> None:
    """A few steps of each path first, untimed: what a process pays once (torch.optim importing
    torch._dynamo, 1.7 s; loading the native kernels; first allocations) would otherwise land on
    whichever run comes first and make the table's ratios depend on the order of the runs."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from test_text3d import TINY_SETTINGS  # the tests' second-long settings

    from radiantforge.guidance import OracleDenoiser
    from radiantforge.text3d import MeshTarget, Text3DOracle, generate_3d

    oracle = Text3DOracle(OracleDenoiser("space_to_depth", device="cpu"), MeshTarget(mesh))
    for representation in ("nerf", "gaussians"):
        generate_3d("warm-up", scratch / f"warm-up-{representation}", guidance=oracle, device="cpu",
                    representation=representation, steps=3, **TINY_SETTINGS)


def _mean_row(rows: list[dict]) -> dict:
    """The mean of several seeds' rows of one object and path (min and max of the PSNR kept)."""
    mean = {key: sum(row[key] for row in rows) / len(rows)
            for key in ("psnr_db", "iou", "chamfer_m", "train_s", "wall_s")}
    return {**rows[0], **mean, "seed": "mean", "psnr_min": min(r["psnr_db"] for r in rows),
            "psnr_max": max(r["psnr_db"] for r in rows)}


def run_compare(json_path: str | None, seeds: list[int]) -> int:
    import torch

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        objects = compare_objects()
        warm_up(objects["spot"], Path(scratch))
        for name, mesh in objects.items():
            for representation in ("nerf", "gaussians"):
                for seed in seeds:
                    rows.append(compare_one(name, mesh, representation, Path(scratch), seed))
                    print(f"measured {name} / {representation} / seed {seed}: {rows[-1]['wall_s']:.1f} s",
                          file=sys.stderr)
    if len(seeds) > 1:  # the seeds' means, after the single runs
        for name in objects:
            for representation in ("nerf", "gaussians"):
                rows.append(_mean_row([row for row in rows if row["object"] == name
                                       and row["representation"] == representation and row["seed"] != "mean"]))
    header = f"{'object':8} {'path':10} {'seed':>4} {'steps':>5} {'PSNR dB':>8} {'IoU':>6} {'chamfer m':>9} " \
             f"{'train s':>8} {'wall s':>7} {'wall / NeRF':>11}"
    lines = [header, "-" * len(header)]
    for row in rows:
        nerf = next(r for r in rows if r["object"] == row["object"] and r["representation"] == "nerf"
                    and r["seed"] == row["seed"])
        row["wall_ratio"] = row["wall_s"] / nerf["wall_s"]
        spread = f"  (PSNR {row['psnr_min']:.2f}-{row['psnr_max']:.2f})" if row["seed"] == "mean" else ""
        lines.append(f"{row['object']:8} {row['representation']:10} {row['seed']:>4} {row['steps']:5d} "
                     f"{row['psnr_db']:8.2f} {row['iou']:6.3f} {row['chamfer_m']:9.4f} {row['train_s']:8.1f} "
                     f"{row['wall_s']:7.1f} {row['wall_ratio']:11.2f}{spread}")
    print("text-to-3D with the oracle, NeRF vs Gaussians (each with its known-answer test's settings), CPU, 1 thread")
    print("\n".join(lines))
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--model", choices=("tiny", "sd-architecture"), default="tiny")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per resolution (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--set", action="append", dest="settings", default=[], metavar="NAME=VALUE",
                        help="a Text3DConfig setting (JSON value), e.g. --set normal_difference='\"forward\"'")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one resolution, print JSON
    parser.add_argument("--compare", action="store_true",
                        help="NeRF vs Gaussian path with the oracle on Spot and the bunny (quality and wall time)")
    parser.add_argument("--seeds", default="0", help="--compare: comma-separated seeds, their means last "
                        "(one seed's PSNR moves by 1-2 dB: bunny NeRF 24.0-25.9 over seeds 0-2)")
    args = parser.parse_args(argv)
    if args.compare:
        return run_compare(args.json, [int(seed) for seed in args.seeds.split(",")])

    if args.one is not None:
        settings = {name: json.loads(value) for name, _, value in (item.partition("=") for item in args.settings)}
        print(json.dumps(measure_one(args.one, args.model, args.steps, args.warmup, args.device, args.threads, settings)))
        return 0

    rows = []
    for resolution in args.resolutions:
        command = [sys.executable, __file__, "--one", str(resolution), "--model", args.model, "--steps",
                   str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
        if args.threads:
            command += ["--threads", str(args.threads)]
        for item in args.settings:
            command += ["--set", item]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            sys.stderr.write(completed.stderr[-4000:])
            return completed.returncode
        rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
        print(f"measured {resolution}²: {rows[-1]['seconds_per_step']:.3f} s/step", file=sys.stderr)
    first = rows[0]
    print(f"text-to-3D step cost, guidance {args.model} ({first['guidance']}, native {first['guidance_resolution']} px), "
          f"device {first['device']}, {first['threads']} threads, {args.steps} steps after {args.warmup} warm-up, "
          f"the initial density blob kept fixed, default settings (64 samples per ray, batch 1)"
          + (f" except {', '.join(args.settings)}" if args.settings else ""))
    print(_table(rows))
    if args.model == "tiny":
        print("note: the tiny model's UNet and VAE are a few thousand parameters at 16 px; Stable Diffusion's "
              "UNet (860 M parameters, 2 passes for CFG at 64x64 latents) and its VAE encoder at 512 px, forward "
              "and backward, are not represented: run with --model sd-architecture to measure them")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
