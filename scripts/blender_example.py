#!/usr/bin/env python3
"""Headless Radiant Forge in one command: capture a .blend, train Gaussians on the backend, import, save.

With the pip `bpy` module, in the venv where Radiant Forge is installed (the backend is started
with this same interpreter):

    python scripts/blender_example.py scene.blend --out scene_splats.blend --views 48 --steps 3000

With a Blender binary (the extension installed, or this repository's addon/ found next to this script):

    blender --background scene.blend --python scripts/blender_example.py -- \\
        --out scene_splats.blend --backend-python ~/venvs/radiantforge/bin/python

    # or against a running service, e.g. on a GPU machine:
    blender --background scene.blend --python scripts/blender_example.py -- \\
        --out scene_splats.blend --url http://gpu-box:8765 --token SECRET

What it does: opens the scene (the .blend given, or the one Blender opened), places an orbit
rig around the renderable objects (or uses the cameras of --camera-collection), renders every
view, sends the job to the backend, waits for it (the operator blocks under --background),
imports the splats (and turntable, test renders) and saves a new .blend — the input file is
never overwritten. Prints one JSON summary line at the end. Exit status 0 on success, 2 on bad
input, 1 when the job failed or was cancelled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_JOB_FAILED = 1
REPO = Path(__file__).resolve().parent.parent


def script_arguments(argv: list[str]) -> list[str]:
    """Arguments meant for this script: after '--' when run by Blender, else argv[1:]."""
    return argv[argv.index("--") + 1:] if "--" in argv else argv[1:]


def build_parser(blend_from_blender: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blender_example.py", description=__doc__.split("\n\n")[0])
    if not blend_from_blender:
        parser.add_argument("blend", help="the .blend file to capture")
    parser.add_argument("--out", required=True, help="where to save the .blend with the imported splats (a new file)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists (never the input file)")
    parser.add_argument("--views", type=int, default=48, help="orbit cameras (default 48)")
    parser.add_argument("--camera-collection", help="use the cameras of this collection instead of an orbit rig")
    parser.add_argument("--hemisphere", choices=("AUTO", "FULL", "UPPER"), default="AUTO",
                        help="orbit cameras: above the objects when they stand on a floor (AUTO), all around, or above")
    parser.add_argument("--test-every", type=int, default=8, help="hold out every k-th view for testing (default 8)")
    parser.add_argument("--resolution", type=int, default=256, help="square render size in pixels (default 256)")
    parser.add_argument("--engine", default="SCENE", choices=("SCENE", "CYCLES", "BLENDER_EEVEE", "BLENDER_WORKBENCH"))
    parser.add_argument("--samples", type=int, default=0, help="render samples (0: the scene's)")
    parser.add_argument("--points", type=int, default=20000, help="surface points for points3d.ply (default 20000)")
    parser.add_argument("--steps", "--iters", dest="steps", type=int, default=3000, help="training steps (default 3000)")
    parser.add_argument("--quality", choices=("draft", "standard", "high"),
                        help="train for a time budget instead of --steps (the add-on's Quality presets: 2, 5, 20 min)")
    parser.add_argument("--sh-degree", type=int, default=3, choices=range(4))
    parser.add_argument("--display", default="AUTO", choices=("AUTO", "ELLIPSOIDS", "POINTS"))
    parser.add_argument("--jobs-folder", help="where the job folder goes (default: beside the output .blend)")
    backend = parser.add_mutually_exclusive_group()
    backend.add_argument("--backend-python", help="start a local backend with this interpreter (default: this one, "
                                                  "when it has radiantforge)")
    backend.add_argument("--url", help="use a running `radiantforge serve` at this URL")
    parser.add_argument("--token", default="", help="token of the service at --url")
    parser.add_argument("--service-root", help="job folder of the local backend (radiantforge serve --root)")
    return parser


EXTENSION_ID = "radiant_forge"  # blender_manifest.toml's id


def installed_extension_module() -> str | None:
    """The module name of the Radiant Forge extension installed in one of Blender's repositories
    (``bl_ext.<repo>.radiant_forge``), or None."""
    import addon_utils

    for module in addon_utils.modules(refresh=True):
        if module.__name__.startswith("bl_ext.") and module.__name__.rsplit(".", 1)[-1] == EXTENSION_ID:
            return module.__name__
    return None


def ensure_add_on():
    """Make sure the add-on is registered: already enabled, else the installed extension (enabled now),
    else the venv install. Returns the module registered here, or None when it was on already."""
    import bpy

    if hasattr(bpy.types.Scene, "radiantforge"):
        return None
    installed = installed_extension_module()
    if installed is not None:
        # Installed but off: a process of the bpy module has not read the user preferences that enable it.
        import addon_utils

        module = addon_utils.enable(installed, default_set=True, handle_error=None)
        if module is not None and hasattr(bpy.types.Scene, "radiantforge"):
            return module
    try:
        import radiantforge_addon  # the venv install (pip install -e .)
    except ImportError:
        sys.path.insert(0, str(REPO))  # a Blender binary running this checkout's script
        import importlib

        radiantforge_addon = importlib.import_module("addon")
    radiantforge_addon.register()
    return radiantforge_addon


def main(argv: list[str] | None = None) -> int:
    import bpy

    argv = sys.argv if argv is None else argv
    blend_from_blender = bool(bpy.app.binary_path) and "--" in argv
    args = build_parser(blend_from_blender).parse_args(script_arguments(argv))

    if not blend_from_blender:
        blend = Path(args.blend)
        if not blend.is_file():
            print(f"error: blend: no such file {blend}", file=sys.stderr)
            return EXIT_BAD_INPUT
        bpy.ops.wm.open_mainfile(filepath=str(blend))
    source = Path(bpy.data.filepath).resolve() if bpy.data.filepath else None
    out = Path(args.out).resolve()
    if source is not None and out == source:
        print("error: --out: must differ from the input .blend (it is never overwritten)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if out.exists() and not args.overwrite:
        print(f"error: --out: {out} exists; pass --overwrite or choose another name", file=sys.stderr)
        return EXIT_BAD_INPUT

    # The backend: environment variables are what the add-on reads when run headless.
    if args.url:
        os.environ["RADIANTFORGE_URL"] = args.url
        os.environ["RADIANTFORGE_TOKEN"] = args.token
    elif args.backend_python:
        os.environ["RADIANTFORGE_PYTHON"] = args.backend_python
    if args.service_root:
        os.environ["RADIANTFORGE_ROOT"] = args.service_root

    registered = ensure_add_on()
    try:
        scene = bpy.context.scene
        settings = scene.radiantforge
        if args.camera_collection:
            collection = bpy.data.collections.get(args.camera_collection)
            if collection is None:
                print(f"error: --camera-collection: no collection named {args.camera_collection!r}", file=sys.stderr)
                return EXIT_BAD_INPUT
            settings.camera_source = "COLLECTION"
            settings.camera_collection = collection
        else:
            settings.camera_source = "ORBIT"
            settings.view_count = args.views
            settings.hemisphere = args.hemisphere
        settings.test_every = args.test_every
        settings.resolution = args.resolution
        settings.engine = args.engine
        settings.samples = args.samples
        settings.point_count = args.points
        settings.quality = args.quality.upper() if args.quality else "STEPS"
        settings.steps = args.steps
        settings.sh_degree = args.sh_degree
        settings.display = args.display
        settings.jobs_folder = args.jobs_folder or str(out.parent / "radiantforge_jobs")
        # Orbit around everything that renders: nothing selected means the whole scene.
        for obj in bpy.context.view_layer.objects:
            obj.select_set(False)

        try:
            outcome = bpy.ops.radiant_forge.capture_train()
        except RuntimeError as exc:  # an operator's error report, e.g. a backend that cannot start
            outcome = {"CANCELLED"}
            print(f"error: {exc}", file=sys.stderr)
        status = bpy.context.window_manager.radiantforge_job
        summary = {"state": "finished" if outcome == {"FINISHED"} else "failed", "message": status.message,
                   "error": status.error, "job_dir": status.job_dir, "job_id": status.job_id,
                   "metrics": json.loads(status.metrics_json) if status.metrics_json else {}}
        if outcome == {"FINISHED"}:
            splats = status.result_object
            summary["object"] = splats.name if splats is not None else None
            summary["splat_count"] = int(splats["radiantforge_splat_count"]) if splats is not None else 0
            out.parent.mkdir(parents=True, exist_ok=True)
            bpy.ops.wm.save_as_mainfile(filepath=str(out), copy=False)
            summary["saved"] = str(out)
        print(json.dumps(summary), flush=True)
        return 0 if outcome == {"FINISHED"} else EXIT_JOB_FAILED
    finally:
        if registered is not None:
            registered.unregister()


if __name__ == "__main__":
    # Inside a Blender binary too, sys.exit makes the status Blender's exit code.
    sys.exit(main())
