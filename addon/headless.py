"""Headless capture: ``python -m radiantforge_addon.headless capture ...`` (Python with the ``bpy`` module).

Builds the built-in default scene or opens a .blend, places an orbit rig around the scene's
geometry (or uses the cameras of a collection), renders every view and writes a NeRF-synthetic
dataset with points3d.ply. `radiantforge demo`, the benchmarks and the tests run this in a
subprocess, so bpy never shares a process with torch.

Exit status: 0 on success, 2 on bad input (the message names the option or file), 1 on an
unexpected failure. Set BLENDER_USER_RESOURCES to keep Blender's user folders out of $HOME.

Example::

    python -m radiantforge_addon.headless capture --default-scene --out /tmp/demo_data \\
        --views 60 --test-every 8 --resolution 128 --engine BLENDER_WORKBENCH
"""

from __future__ import annotations

import argparse
import os
import sys
import time

EXIT_BAD_INPUT = 2
EXIT_FAILURE = 1


def parse_resolution(text: str) -> tuple[int, int]:
    """``128`` -> (128, 128); ``160x120`` -> (160, 120)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size like 128 or 160x120, got {text!r}")
    return (values[0], values[-1])


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .capture import ENGINES, FAST_CYCLES

    parser = argparse.ArgumentParser(
        prog="python -m radiantforge_addon.headless",
        description="Capture a Blender scene as a NeRF-synthetic dataset (renders, transforms JSON, points3d.ply).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    capture = commands.add_parser("capture", help="render views of a scene into a dataset folder")
    source = capture.add_mutually_exclusive_group(required=True)
    source.add_argument("--default-scene", action="store_true", help="the built-in textured demo scene")
    source.add_argument("--blend", metavar="FILE.blend", help="a .blend file to capture")
    capture.add_argument("--out", required=True, metavar="DATA_DIR", help="dataset folder to create")
    capture.add_argument("--overwrite", action="store_true", help="replace an existing non-empty DATA_DIR")
    capture.add_argument("--collection", metavar="NAME",
                         help="use the cameras of this collection instead of an orbit rig")
    capture.add_argument("--views", type=positive_int, default=60, help="orbit rig: number of views (60)")
    capture.add_argument("--hemisphere", action="store_true", help="orbit rig: upper hemisphere only")
    capture.add_argument("--focal-length", type=float, default=50.0, metavar="MM",
                         help="orbit rig: lens in mm on a 36 mm sensor (50)")
    capture.add_argument("--test-every", type=int, default=8, metavar="K",
                         help="hold out views 0, K, 2K, ... for testing (8)")
    capture.add_argument("--resolution", type=parse_resolution, metavar="N|WxH",
                         help="image size (default: the scene's render size; 128 for the default scene)")
    capture.add_argument("--engine", choices=(*ENGINES, FAST_CYCLES),
                         help="render engine (default: the scene's); FAST_CYCLES: Cycles, 32 samples, denoised")
    capture.add_argument("--samples", type=positive_int, help="Cycles / EEVEE samples (default: the scene's)")
    capture.add_argument("--points", type=int, default=20000, help="points in points3d.ply, 0 = none (20000)")
    capture.add_argument("--seed", type=int, default=0, help="seed of the point sampling (0)")
    capture.add_argument("--save-blend", metavar="FILE.blend",
                         help="also save the captured scene (with its cameras) to this .blend")
    return parser


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"radiantforge capture: error: {message}", file=sys.stderr, flush=True)
    return code


def capture_command(args: argparse.Namespace) -> int:
    import bpy

    from . import capture, demo_scene

    out_dir = os.path.abspath(args.out)
    # Refuse before any work (opening a big .blend or building the scene takes time).
    capture.check_output_folder(out_dir, args.overwrite)
    if args.points < 0:
        raise capture.CaptureError(f"--points: expected 0 or more, got {args.points}")

    started = time.perf_counter()
    if args.default_scene:
        scene = demo_scene.new_empty_scene()
        demo_scene.build_default_scene(scene)
        print(f"[scene] built the default scene in {time.perf_counter() - started:.2f} s", flush=True)
    else:
        blend = os.path.abspath(args.blend)
        if not os.path.isfile(blend):
            raise capture.CaptureError(f"--blend {blend}: no such file")
        try:
            bpy.ops.wm.open_mainfile(filepath=blend)
        except RuntimeError as error:
            raise capture.CaptureError(f"--blend {blend}: Blender could not open it ({error})") from None
        scene = bpy.context.scene
        print(f"[scene] opened {blend} (scene {scene.name!r})", flush=True)

    geometry = capture.renderable_geometry_objects(scene)
    if not geometry:
        raise capture.CaptureError(
            f"scene {scene.name!r}: no mesh objects to capture (nothing of type mesh, curve, surface, "
            "metaball or text renders)")

    settings = capture.CaptureSettings(
        engine=args.engine, resolution=args.resolution, samples=args.samples,
        test_every=args.test_every, n_points=args.points, seed=args.seed, overwrite=args.overwrite)
    rig = None
    if args.collection:
        cameras = capture.collection_cameras(args.collection)
        print(f"[cameras] {len(cameras)} cameras of collection {args.collection!r}", flush=True)
    else:
        if args.focal_length <= 0:
            raise capture.CaptureError(f"--focal-length: expected a positive lens in mm, got {args.focal_length}")
        rig = capture.create_orbit_rig(
            scene, geometry, n_views=args.views, focal_length_mm=args.focal_length,
            resolution=args.resolution or capture.render_size(scene), upper_hemisphere=args.hemisphere)
        cameras = rig.cameras
        print(f"[cameras] orbit rig: {len(cameras)} views on a {'hemi' if args.hemisphere else ''}sphere of "
              f"radius {rig.distance:.3f} m around {tuple(round(c, 3) for c in rig.center)} "
              f"(objects' bounding radius {rig.radius:.3f} m)", flush=True)

    def report(progress: capture.CaptureProgress) -> None:
        if progress.stage == "done":
            return  # the closing summary line below says it all
        print(f"[{progress.stage}] {progress.message} (elapsed {progress.elapsed_s:.1f} s)", flush=True)

    summary = capture.run_capture(scene, cameras, out_dir, settings, on_progress=report)
    if args.save_blend:
        bpy.ops.wm.save_as_mainfile(filepath=os.path.abspath(args.save_blend), copy=True)
        print(f"[scene] saved {os.path.abspath(args.save_blend)}", flush=True)
    if rig is not None:
        capture.remove_rig(rig.collection)
    print(f"[done] {summary.n_train} train + {summary.n_test} test views at {summary.width}x{summary.height} "
          f"with {summary.engine}, {summary.n_points} points ({summary.n_points_coloured} coloured) "
          f"in {time.perf_counter() - started:.1f} s -> {summary.out_dir}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .capture import CaptureError

    try:
        if args.command == "capture":
            return capture_command(args)
    except CaptureError as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_FAILURE)
    return _fail(f"unknown command {args.command!r}", EXIT_FAILURE)


if __name__ == "__main__":
    sys.exit(main())
