"""`radiantforge` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .demo import DEMO_STEPS
from .devices import DEVICE_CHOICES
from .errors import InputError, JobCancelled, RadiantForgeError
from .gaussians.rasterizers import RASTERIZER_CHOICES


def _parse_colour(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected R,G,B floats in [0, 1] such as 1,1,1; got {text!r}")
    return values


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        width, height = (int(parts[0]), int(parts[-1]))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 256x256 or one number; got {text!r}") from None
    if width <= 0 or height <= 0 or len(parts) > 2:
        raise argparse.ArgumentTypeError(f"expected positive WIDTHxHEIGHT; got {text!r}")
    return width, height


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", "--iters", dest="steps", type=_positive_int,
                        help="optimisation steps (default: the config's; --iters is the old name)")
    parser.add_argument("--sh-degree", type=int, choices=range(4), help="maximum SH degree (default 3)")
    parser.add_argument("--max-gaussians", type=_positive_int, help="cap on the number of Gaussians")
    parser.add_argument("--time-budget", metavar="DURATION",
                        help="how long the whole job may take, e.g. 90s, 5m or 1h30m: the job measures a step on this "
                             "machine and chooses the steps, Gaussian cap (at most --max-gaussians) and resolution "
                             "itself; the result says what it chose")
    parser.add_argument("--strategy", choices=("default", "mcmc"),
                        help="densification: default (3DGS's adaptive density control) or mcmc (3DGS as MCMC)")
    parser.add_argument("--downscale", type=float, help="image downscale factor, e.g. 2 for half size")
    parser.add_argument("--background", type=_parse_colour,
                        help="R,G,B in [0,1]: compositing colour for RGBA inputs and render background (default 1,1,1)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to train (default auto)")
    _add_rasterizer_argument(parser)


def _add_rasterizer_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rasterizer", choices=RASTERIZER_CHOICES, dest="rasterize_backend",
                        help="Gaussian rasterizer: auto (native Numba kernels on the CPU, gsplat on CUDA, PyTorch on "
                             "Apple GPUs), native, torch (pure PyTorch) or gsplat (default auto)")


def _train_overrides(args) -> dict:
    names = ("steps", "sh_degree", "max_gaussians", "downscale", "background", "seed", "device", "rasterize_backend",
             "time_budget", "strategy")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


@contextlib.contextmanager
def _stop_on_interrupt():
    """First Ctrl+C asks training to checkpoint and stop; a second one interrupts at once."""
    requested = threading.Event()

    def handler(signum, frame):
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        print("\nstopping after the current step (writing a checkpoint); Ctrl+C again to abort", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_train_gaussians(args) -> int:
    from .events import EventLog
    from .gaussians.train import train_gaussians

    out = Path(args.out)
    events = EventLog(out.parent / f"{out.name}.events.jsonl" if args.events is None else args.events, echo=True)
    with _stop_on_interrupt() as stop_requested:
        result = train_gaussians(args.data, out, checkpoint_dir=out.parent / f"{out.name}.checkpoints",
                                 resume=args.resume, events=events, should_stop=stop_requested,
                                 **_train_overrides(args))
    print(json.dumps({"out_dir": str(result.out_dir), "n_gaussians": result.n_gaussians, "metrics": result.metrics}, indent=2))
    return 0


def cmd_texture(args) -> int:
    from .events import EventLog
    from .texture import texture_mesh

    out = Path(args.out)
    names = ("negative_prompt", "guidance_scale", "steps", "resolution", "texture_size", "seed", "model", "device")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    events = EventLog(out.parent / f"{out.name}.events.jsonl" if args.events is None else args.events, echo=True)
    with _stop_on_interrupt() as stop_requested:
        result = texture_mesh(args.mesh, out, prompt=args.prompt, checkpoint_dir=out.parent / f"{out.name}.checkpoints",
                              resume=args.resume, events=events, should_stop=stop_requested, **overrides)
    files = {role: str(path) for role, path in result.files.items()}
    summary_keys = ("steps", "train_seconds", "texel_coverage", "uv_source", "guidance")
    print(json.dumps({"out_dir": str(result.out_dir), "files": files,
                      "metrics": {key: result.metrics.get(key) for key in summary_keys}}, indent=2))
    return 0


# Text-to-3D options with their own flags; any other Text3DConfig field goes through --set NAME=VALUE.
TEXT3D_FLAG_NAMES = ("negative_prompt", "steps", "resolution", "guidance_scale", "seed", "model", "device",
                     "target_faces", "texture_size", "representation")


def _add_text3d_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--negative-prompt", help="what to steer away from (default none)")
    parser.add_argument("--steps", type=_positive_int, help="optimisation steps (default 3000)")
    parser.add_argument("--resolution", type=_positive_int,
                        help="NeRF render size in pixels while optimising (default 64; upsampled for Stable Diffusion)")
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (default 100)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--model", help="Stable Diffusion: sd15, sd21base, a Hugging Face id in the cache, or a "
                                        "local diffusers folder (default sd15; never downloaded)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, help="where to run (default auto)")
    parser.add_argument("--target-faces", type=int, help="decimate the mesh to this many faces (default 20000; 0 keeps all)")
    parser.add_argument("--texture-size", type=_positive_int, help="baked texture width and height (default 1024)")
    parser.add_argument("--representation", choices=("nerf", "gaussians"),
                        help="nerf (DreamFusion, the default) or gaussians (DreamGaussian: faster, then a mesh)")
    parser.add_argument("--set", action="append", dest="settings", metavar="NAME=VALUE", default=[],
                        help="any other setting of radiantforge.text3d.Text3DConfig, value as JSON, e.g. "
                             "--set entropy_weight=0.01 --set 'fov_range_deg=[40, 60]' (repeatable)")
    parser.add_argument("--events", help="events file (default OUT.events.jsonl beside --out)")


def _text3d_overrides(args) -> dict:
    overrides = {name: getattr(args, name) for name in TEXT3D_FLAG_NAMES if getattr(args, name, None) is not None}
    for item in args.settings:
        name, separator, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not separator or not name:
            raise InputError(f"expected NAME=VALUE, got {item!r}", field="--set")
        try:
            overrides[name] = json.loads(text)
        except json.JSONDecodeError:
            overrides[name] = text  # plain words: a string setting such as encoding=hashgrid
    return overrides


def cmd_text3d(args) -> int:
    from .events import EventLog
    from .text3d import generate_3d

    out = Path(args.out)
    overrides = _text3d_overrides(args)
    events = EventLog(out.parent / f"{out.name}.events.jsonl" if args.events is None else args.events, echo=True)
    with _stop_on_interrupt() as stop_requested:
        result = generate_3d(args.prompt, out, checkpoint_dir=out.parent / f"{out.name}.checkpoints",
                             resume=args.resume, events=events, should_stop=stop_requested, **overrides)
    files = {role: str(path) for role, path in result.files.items()}
    summary_keys = ("steps", "train_seconds", "n_faces", "n_vertices", "guidance", "device")
    print(json.dumps({"out_dir": str(result.out_dir), "files": files,
                      "metrics": {key: result.metrics.get(key) for key in summary_keys}}, indent=2))
    return 0


def cmd_batch(args) -> int:
    from .batch.entries import JSON_LINES_SUFFIXES, YAML_SUFFIXES
    from .events import EventLog

    out = Path(args.out)
    events = EventLog(out.parent / f"{out.name}.events.jsonl" if args.events is None else args.events, echo=True)
    settings = _text3d_overrides(args)
    entries_file = Path(args.prompts).suffix.lower() in (*JSON_LINES_SUFFIXES, *YAML_SUFFIXES)
    with _stop_on_interrupt() as stop_requested:
        if not entries_file and args.ray is None:  # a prompts file on this machine: today's text-to-3D batch
            from .text3d import batch_generate

            result = batch_generate(args.prompts, out, events=events, should_stop=stop_requested, **settings)
        else:
            from .batch import run_batch

            device = settings.pop("device", None)
            if entries_file and settings:
                raise InputError(f"{', '.join(sorted(settings))}: these options are for prompt-per-line files; "
                                 "give each entry of a batch file its own params", field="batch")
            result = run_batch(args.prompts, out, ray=args.ray, workers=args.workers, shared_disk=not args.no_shared_disk,
                               events=events, should_stop=stop_requested, text_params=settings,
                               overrides={"device": device} if device else None)
    print(result.table, end="")
    print(f"summary: {result.summary_path}")
    return 1 if result.counts.get("failed") else 0


def cmd_eval(args) -> int:
    from .gaussians.train import evaluate_ply

    metrics = evaluate_ply(args.ply, args.data, out_dir=args.out, split=args.split,
                           background=args.background or (1.0, 1.0, 1.0), device=args.device,
                           backend=args.rasterize_backend or "auto")
    print(json.dumps(metrics, indent=2))
    return 0


def cmd_render(args) -> int:
    from .gaussians.formats import load_splats
    from .gaussians.render import render_turntable

    splats = load_splats(args.ply)
    width, height = args.size
    files = render_turntable(splats, args.out, n_frames=args.orbit, width=width, height=height,
                             elevation_deg=args.elevation, background=args.background or (1.0, 1.0, 1.0),
                             depth=args.depth, fps=args.fps, device=args.device,
                             backend=args.rasterize_backend or "auto")
    print(json.dumps(files, indent=2))
    return 0


def cmd_selfcheck(args) -> int:
    from . import selfcheck

    floors = {name: value for name, value in (("texture_psnr_floor", args.texture_psnr_floor),
                                              ("text3d_psnr_floor", args.text3d_psnr_floor)) if value is not None}
    return selfcheck.run_selfcheck(fast=args.fast, model=args.model, skip_text3d=args.skip_text3d, **floors)


def cmd_convert(args) -> int:
    from .gaussians.formats import convert_splats

    summary = convert_splats(args.input, args.output)
    note = ""
    if summary["sh_degree_written"] < summary["sh_degree"]:
        note = f" (SH degree {summary['sh_degree']} dropped to {summary['sh_degree_written']}: the format has no more)"
    print(f"wrote {summary['count']:,} splats to {args.output}{note}")
    return 0


def cmd_run(args) -> int:
    from .jobs import checkpoint_info, describe_checkpoint, read_job_spec, run_job

    if args.resume:
        spec = read_job_spec(args.job_dir)
        info = checkpoint_info(args.job_dir, spec.kind)
        if info is None:
            raise InputError("the job has no checkpoint to resume from; run it without --resume to start it",
                             file=Path(args.job_dir) / "checkpoints")
        print(f"resuming: {describe_checkpoint(info)}", file=sys.stderr)
    outcome = run_job(args.job_dir, echo=True, device=None if args.device == "auto" else args.device)
    print(json.dumps(outcome, indent=2))
    return {"finished": 0, "cancelled": 3, "suspended": 3}.get(outcome["state"], 1)


def cmd_serve(args) -> int:
    from .service.options import serve_from_arguments

    return serve_from_arguments(args)


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, views=args.views, resolution=args.resolution, steps=args.steps, engine=args.engine,
             device=args.device, overwrite=args.overwrite)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="radiantforge",
        description="Radiant Forge backend: train Gaussian splats from posed images, evaluate and render them, texture meshes from a prompt, "
                    "run job folders and serve them to the Blender add-on.",
    )
    parser.add_argument("--version", action="version", version=f"radiantforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="build a small scene with Blender, render it, train Gaussians on it (a few minutes on a CPU)")
    p.add_argument("--out", default="demo_output", help="output folder (default ./demo_output)")
    p.add_argument("--views", type=_positive_int, default=48, help="number of rendered views (default 48)")
    p.add_argument("--resolution", type=_positive_int, default=96, help="image size in pixels (default 96)")
    p.add_argument("--steps", "--iters", dest="steps", type=_positive_int, default=DEMO_STEPS,
                   help=f"training steps (default {DEMO_STEPS}; --iters is the old name)")
    p.add_argument("--engine", default="BLENDER_WORKBENCH", choices=("BLENDER_WORKBENCH", "CYCLES", "BLENDER_EEVEE"))
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train-gaussians", help="train 3D Gaussian splats on a NeRF-synthetic / transforms.json dataset")
    p.add_argument("data", help="dataset folder with transforms_train.json (and transforms_test.json)")
    p.add_argument("--out", required=True, help="result folder (PLY, metrics, renders)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this --out")
    p.add_argument("--events", help="events file (default OUT.events.jsonl beside --out)")
    _add_train_options(p)
    p.set_defaults(func=cmd_train_gaussians)

    p = sub.add_parser("texture", help="texture a mesh from a text prompt with Stable Diffusion (score distillation)")
    p.add_argument("mesh", help="the mesh (.obj, .glb, .gltf, .ply, ...); without UVs an atlas is made with xatlas")
    p.add_argument("--prompt", required=True, help="what the texture shows, e.g. 'a cow with black and white patches'")
    p.add_argument("--out", required=True, help="result folder (textured .glb and .obj, texture PNG, turntable)")
    p.add_argument("--negative-prompt", help="what to steer away from (default none)")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (default 100)")
    p.add_argument("--steps", type=_positive_int, help="optimisation steps (default 1000)")
    p.add_argument("--resolution", type=_positive_int, help="rendered view size in pixels (default 512)")
    p.add_argument("--texture-size", type=_positive_int, help="texture width and height in texels (default 1024)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--model", help="Stable Diffusion: sd15, sd21base, a Hugging Face id in the cache, or a "
                                   "local diffusers folder (default sd15; never downloaded)")
    p.add_argument("--device", choices=DEVICE_CHOICES, help="where to run (default auto)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this --out")
    p.add_argument("--events", help="events file (default OUT.events.jsonl beside --out)")
    p.set_defaults(func=cmd_texture)

    p = sub.add_parser("text3d", help="generate a textured 3D object from a text prompt (NeRF + score distillation, "
                                      "then a mesh and turntables)")
    p.add_argument("--prompt", required=True, help="what to make, e.g. 'a ceramic teapot'")
    p.add_argument("--out", required=True, help="result folder (mesh .glb and .obj, texture, turntables, metrics)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of this --out")
    _add_text3d_options(p)
    p.set_defaults(func=cmd_text3d)

    p = sub.add_parser("batch", help="run a batch file (text-to-3D, texture and Gaussian entries, or one prompt per "
                                     "line), one result folder each, here or on Ray (--ray); run again to skip "
                                     "finished entries and resume interrupted ones")
    p.add_argument("prompts", metavar="FILE", help="a batch file: JSON lines or YAML entries of any job kind "
                   "(text3d, texture, gaussians; see README), or a text file with one prompt per line (# comments)")
    p.add_argument("--out", required=True, help="folder for the result folders and the summary table")
    p.add_argument("--ray", metavar="auto|ADDRESS", help="run the entries on a Ray cluster: auto (this machine's, "
                   "started if none runs) or its address (host:6379; a `ray start` head wants RAY_AUTH_MODE=token and its "
                   "token); default: here, one after another")
    p.add_argument("--workers", type=_positive_int, help="Ray workers (default: one per GPU, else one per CPU)")
    p.add_argument("--no-shared-disk", action="store_true", help="Ray workers do not see --out: they send results "
                   "back to this process, which writes them")
    _add_text3d_options(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("eval", help="PSNR / SSIM / LPIPS of a splat file on a dataset split")
    p.add_argument("ply", metavar="SPLATS", help="a splat file: .ply (3DGS), .spz, .splat, .glb or .gltf")
    p.add_argument("data")
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="folder for renders beside ground truth and metrics.json")
    p.add_argument("--background", type=_parse_colour)
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    _add_rasterizer_argument(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("render", help="render a splat file as a turntable (PNG frames, GIF, MP4)")
    p.add_argument("ply", metavar="SPLATS", help="a splat file: .ply (3DGS), .spz, .splat, .glb or .gltf")
    p.add_argument("--out", required=True)
    p.add_argument("--orbit", type=_positive_int, default=60, help="number of frames around the object (default 60)")
    p.add_argument("--size", type=_parse_size, default=(256, 256), help="WIDTHxHEIGHT (default 256x256)")
    p.add_argument("--elevation", type=float, default=20.0, help="camera elevation in degrees (default 20)")
    p.add_argument("--fps", type=_positive_int, default=24)
    p.add_argument("--depth", action="store_true", help="also write a depth turntable")
    p.add_argument("--background", type=_parse_colour)
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    _add_rasterizer_argument(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("convert", help="convert splats between .ply (3DGS), .spz, .splat, .glb/.gltf "
                                       "(KHR_gaussian_splatting); formats by suffix")
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("run", help="run a job folder, or continue one that stopped (this is what the service's workers run)")
    p.add_argument("job_dir")
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--resume", action="store_true",
                   help="continue from the job's checkpoint (after a cancel, a crash or a killed worker); an error when it has none")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("selfcheck", help="check an install: the texture and text-to-3D jobs with the oracle on a "
                                         "built-in asset (under a minute on a CPU); non-zero exit on failure")
    p.add_argument("--fast", action="store_true", help="fewer steps (lower figures, same floors)")
    p.add_argument("--model", default=None, help="a local Stable Diffusion folder: also run one real SDS step")
    p.add_argument("--texture-psnr-floor", type=float, default=None, help="dB the texture check must reach")
    p.add_argument("--text3d-psnr-floor", type=float, default=None, help="dB the text-to-3D check must reach")
    p.add_argument("--skip-text3d", action="store_true")
    p.set_defaults(func=cmd_selfcheck)

    p = sub.add_parser("serve", help="HTTP service for the Blender add-on")
    from .service.options import add_serve_arguments

    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except JobCancelled:
        print("cancelled (a checkpoint was written; run again with --resume to continue)", file=sys.stderr)
        return 3
    except RadiantForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
