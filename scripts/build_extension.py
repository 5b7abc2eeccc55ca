#!/usr/bin/env python3
"""Build the installable Blender extension zip: dist/radiant_forge-<version>.zip.

The zip holds blender_manifest.toml and the contents of addon/ at its root (no __pycache__,
no compiled files), which is what `blender --command extension install-file` and
`bpy.ops.extensions.package_install_files` expect. Prints the path of the zip.

    python scripts/build_extension.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "blender_manifest.toml"
ADDON = REPO / "addon"
VERSION_FILE = ADDON / "version.py"
# Never shipped: caches and editor/OS droppings.
EXCLUDED_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache"}
EXCLUDED_SUFFIXES = {".pyc", ".pyo", ".orig", ".rej", ".swp"}
EXCLUDED_NAMES = {".DS_Store", "Thumbs.db"}
REQUIRED_MANIFEST_KEYS = ("schema_version", "id", "version", "name", "tagline", "maintainer", "type",
                          "blender_version_min", "license")


def read_manifest(path: Path = MANIFEST) -> dict:
    """Parse and check the manifest; raises SystemExit naming the problem."""
    try:
        manifest = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SystemExit(f"{path}: cannot read the manifest: {exc}")
    missing = [key for key in REQUIRED_MANIFEST_KEYS if key not in manifest]
    if missing:
        raise SystemExit(f"{path}: missing keys {', '.join(missing)}")
    addon_version = re.search(r'^ADDON_VERSION = "([^"]+)"', VERSION_FILE.read_text(encoding="utf-8"), re.M)
    if addon_version is None or addon_version.group(1) != manifest["version"]:
        found = addon_version.group(1) if addon_version else "none"
        raise SystemExit(f"{VERSION_FILE}: ADDON_VERSION is {found}, the manifest says {manifest['version']}; make them equal")
    return manifest


def addon_files(root: Path = ADDON) -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS and not d.startswith("."))
        for name in sorted(names):
            path = Path(folder) / name
            if name in EXCLUDED_NAMES or path.suffix in EXCLUDED_SUFFIXES or name.startswith("."):
                continue
            files.append(path)
    return files


def build(out_dir: Path) -> Path:
    manifest = read_manifest()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    partial = target.with_name(target.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(MANIFEST, MANIFEST.name)
        for path in addon_files():
            archive.write(path, path.relative_to(ADDON).as_posix())
    os.replace(partial, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "dist"), help="output folder (default: dist/)")
    args = parser.parse_args(argv)
    print(build(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
