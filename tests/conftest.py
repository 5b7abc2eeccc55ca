"""Shared fixtures: a tiny dataset rendered by the real Blender (bpy) and Blender user folders in tmp."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# The tests' UV atlas cache lives in a temporary folder, not in the user's ~/.cache.
os.environ.setdefault("RADIANTFORGE_CACHE_DIR", tempfile.mkdtemp(prefix="radiantforge-test-cache-"))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_ASSETS = REPO_ROOT.parent / "shared" / "assets"


def blender_subprocess_env(user_dir: Path) -> dict[str, str]:
    """Environment for a bpy subprocess whose Blender user folders live in ``user_dir``."""
    env = dict(os.environ)
    env["BLENDER_USER_RESOURCES"] = str(user_dir)
    return env


@pytest.fixture
def blender_env(tmp_path) -> dict[str, str]:
    user_dir = tmp_path / "blender_user"
    user_dir.mkdir()
    return blender_subprocess_env(user_dir)


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory) -> Path:
    """The extension zip that scripts/build_extension.py builds from this checkout."""
    out = tmp_path_factory.mktemp("dist")
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "build_extension.py"), "--out", str(out)],
                               capture_output=True, text=True, check=True)
    path = Path(completed.stdout.strip().splitlines()[-1])
    assert path.is_file() and path.parent == out
    return path


@pytest.fixture(scope="session")
def shared_assets() -> Path:
    if not SHARED_ASSETS.is_dir():
        pytest.skip(f"shared assets not found at {SHARED_ASSETS}")
    return SHARED_ASSETS


@pytest.fixture(scope="session")
def tiny_blender_dataset(tmp_path_factory) -> Path:
    """The built-in demo scene rendered by bpy (Workbench): 24 views at 48 px, every 8th held out."""
    root = tmp_path_factory.mktemp("tiny_blender_dataset")
    data_dir = root / "data"
    env = blender_subprocess_env(root / "blender_user")
    (root / "blender_user").mkdir()
    command = [sys.executable, "-m", "radiantforge_addon.headless", "capture", "--default-scene", "--out", str(data_dir),
               "--views", "24", "--resolution", "48", "--engine", "BLENDER_WORKBENCH", "--test-every", "8",
               "--points", "4000"]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    return data_dir
