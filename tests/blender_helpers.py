"""Run code in the real `bpy` module, in a subprocess with its own Blender user folders.

Blender keeps user preferences and installed extensions under BLENDER_USER_RESOURCES, which must
be set before bpy is imported: a subprocess per test is the clean way (and keeps bpy out of the
pytest process, where torch may live). The script reports back by printing one JSON line after
RESULT_MARKER; `run_bpy` returns that object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULT_MARKER = "@@RADIANTFORGE_TEST_RESULT@@"
SHARED_ASSETS = REPO.parent / "shared" / "assets"
SPLAT_ASSETS = SHARED_ASSETS / "splats"

# Prepended to every script: report(obj) prints the result line.
_PRELUDE = f"""
import json as _json
def report(payload):
    print({RESULT_MARKER!r} + _json.dumps(payload), flush=True)
"""


def splat_asset(name: str) -> Path:
    """A shared splat file; the shared folder sits beside the repo (../shared/assets/splats)."""
    if (SPLAT_ASSETS / name).is_file():
        return SPLAT_ASSETS / name
    raise FileNotFoundError(f"shared asset {name} not found in {SPLAT_ASSETS}")


def run_bpy(script: str, tmp_path: Path, *, timeout: float = 120.0, env: dict | None = None,
            args: list[str] | None = None) -> dict:
    """Run ``script`` (Python using bpy) in a fresh interpreter; returns what it passed to report()."""
    tmp_path = Path(tmp_path)
    script_file = tmp_path / f"bpy_script_{len(list(tmp_path.glob('bpy_script_*.py')))}.py"
    script_file.write_text(_PRELUDE + textwrap.dedent(script), encoding="utf-8")
    environment = dict(os.environ)
    environment["BLENDER_USER_RESOURCES"] = str(tmp_path / "blender_user")
    environment.pop("RADIANTFORGE_URL", None)
    environment.pop("RADIANTFORGE_PYTHON", None)
    environment.update(env or {})
    completed = subprocess.run([sys.executable, str(script_file), *(args or [])], capture_output=True, text=True,
                               timeout=timeout, env=environment, cwd=str(tmp_path))
    output = completed.stdout + completed.stderr
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if completed.returncode != 0 or not lines:
        raise AssertionError(f"bpy script failed (exit {completed.returncode}):\n{output[-6000:]}")
    return json.loads(lines[-1][len(RESULT_MARKER):])
