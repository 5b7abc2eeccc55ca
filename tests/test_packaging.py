"""The wheel carries every package, and the add-on stays within what Blender ships."""

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What an extension may import: Blender's own modules, numpy and the standard library.
ADDON_ALLOWED_THIRD_PARTY = {"bpy", "bpy_extras", "mathutils", "bmesh", "gpu", "gpu_extras", "numpy", "addon_utils", "idprop", "bl_ui", "rna_prop_ui", "bl_operators", "imbuf", "aud", "blf", "bgl", "zstandard"}  # zstandard: bundled with Blender (SPZ v4)


def _listed_packages() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return set(config["tool"]["setuptools"]["packages"])


def test_every_package_is_in_the_wheel():
    found = set()
    for top, source in (("radiantforge", REPO / "backend" / "radiantforge"), ("radiantforge_addon", REPO / "addon")):
        for init in source.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(source).parts
            found.add(".".join((top, *relative)))
    assert found - _listed_packages() == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_addon_imports_only_what_blender_ships():
    import sys

    stdlib = set(sys.stdlib_module_names)
    offenders = []
    for path in (REPO / "addon").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top not in ADDON_ALLOWED_THIRD_PARTY:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert not offenders, "\n".join(offenders)
