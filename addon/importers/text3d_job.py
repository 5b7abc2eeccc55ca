"""A finished "text3d" job into Blender: the textured mesh at the 3D cursor, and its turntable.

:func:`import_generated_mesh` imports the result's textured .glb with its material (Principled BSDF
with the baked albedo texture, packed into the .blend) and moves it to where the 3D cursor was when
the job started. The turntable comes in as an image sequence when "Import Turntable" is on.
"""

from __future__ import annotations

from pathlib import Path

import bpy

from ..io.job_folder import JobError
from ..io.results import result_file_with_role
from .results import ImportedResult, ImportOptions, datablock_name, import_result

ROLE_MESH = "mesh"
MESH_FALLBACK_NAMES = ("mesh.glb", "mesh.obj")
OBJECT_PREFIX = "RF"


def object_name(prompt: str) -> str:
    """'RF <the prompt's first words>': the name of the generated object."""
    return datablock_name(OBJECT_PREFIX, prompt)


def mesh_file_of(result_dir: Path) -> Path:
    """The textured mesh a result folder names (role "mesh" in result.json: the .glb)."""
    return result_file_with_role(result_dir, ROLE_MESH, MESH_FALLBACK_NAMES, "mesh")


def _import_file(path: Path) -> None:
    if path.suffix.lower() in (".glb", ".gltf"):
        bpy.ops.import_scene.gltf(filepath=str(path))  # its material: Principled BSDF with the texture
    else:
        bpy.ops.wm.obj_import(filepath=str(path))  # OBJ files are Y up: the importer's defaults turn them Z up


def import_generated_mesh(result_dir: Path, location=(0.0, 0.0, 0.0), name: str = OBJECT_PREFIX,
                          collection: bpy.types.Collection | None = None) -> bpy.types.Object:
    """Import the result's textured mesh with its material and move it to ``location`` (world space).

    The backend's meshes are centred on the generation box's centre, which becomes the object's
    origin, so ``location`` (the 3D cursor) is where the object's centre lands. Textures are packed
    into the .blend: the job folder may be a temporary one.
    """
    path = mesh_file_of(Path(result_dir))
    before = set(bpy.data.objects)
    _import_file(path)
    new_objects = [obj for obj in bpy.data.objects if obj not in before]
    meshes = [obj for obj in new_objects if obj.type == "MESH"]
    if not meshes:
        for obj in new_objects:
            bpy.data.objects.remove(obj)
        raise JobError(f"{path}: no mesh came in from the result file")
    for root in (obj for obj in new_objects if obj.parent is None):
        root.location = tuple(a + b for a, b in zip(root.location, location))
    if collection is not None:
        for obj in new_objects:
            for owner in list(obj.users_collection):
                owner.objects.unlink(obj)
            collection.objects.link(obj)
    obj = meshes[0]
    obj.name = name
    for material in (slot.material for slot in obj.material_slots if slot.material is not None):
        for node in (material.node_tree.nodes if material.node_tree else []):
            image = getattr(node, "image", None)
            if image is not None and not image.packed_file and image.source == "FILE":
                image.pack()
    obj["radiantforge_text3d_job"] = str(Path(result_dir).parent)
    return obj


class Text3DJobImporter:
    """Imports a text3d job's mesh at ``location`` (world space), and its turntable when ``import_turntable``."""

    resume_refusal = None  # a stopped text-to-3D job continues from its checkpoint

    def __init__(self, prompt: str, location=(0.0, 0.0, 0.0), import_turntable: bool = True):
        self.prompt = prompt
        self.location = tuple(float(v) for v in location)
        self.options = ImportOptions(gaussians=False, turntable=import_turntable, test_renders=False)

    def import_result(self, result_dir: Path, name: str, metrics: dict) -> ImportedResult:
        imported = import_result(result_dir, self.options, name=name)
        obj = import_generated_mesh(result_dir, self.location, object_name(self.prompt))
        obj["radiantforge_prompt"] = self.prompt
        imported.result_object = obj
        imported.message = f"finished · {obj.name!r} ({len(obj.data.polygons):,} faces) at the 3D cursor"
        return imported

    def discard(self) -> None:
        """Nothing is made in the scene before the result is in."""
