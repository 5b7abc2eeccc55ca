"""A finished "texture" job into Blender: a new packed image and a new material on the target.

:func:`apply_texture_result` loads the result's texture as a *new* image (packed into the .blend)
and puts a *new* material (Image Texture on the chosen UV map → Principled BSDF) on the target.
On the original object, existing slots get the new material as an object-level link, so the
mesh's own materials stay as they were (switch the slot's link back to Data to see them);
existing materials and images are never modified. A failed or cancelled job removes the copy or
the UV map it made (:meth:`TextureJobImporter.discard`).
"""

from __future__ import annotations

from pathlib import Path

import bpy

from ..io.results import result_file_with_role
from ..mesh_export import TextureTarget
from .results import ImportedResult, ImportOptions, datablock_name, import_result

MATERIAL_PREFIX = "RF Texture"
ROLE_TEXTURE = "texture"
TEXTURE_FALLBACK_NAMES = ("texture.png",)
# Reads metrics and the preview only: the texture goes onto the target, not in as splats or images.
RESULT_ONLY = ImportOptions(gaussians=False, turntable=False, test_renders=False)


def texture_file_of(result_dir: Path) -> Path:
    """The texture PNG a result folder names (role "texture" in result.json)."""
    return result_file_with_role(result_dir, ROLE_TEXTURE, TEXTURE_FALLBACK_NAMES, "texture")


def build_material(image: bpy.types.Image, uv_map: str, name: str) -> bpy.types.Material:
    """A new node material: UV Map (``uv_map``) → Image Texture (``image``) → Principled BSDF base colour."""
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender 4.x; from 5.0 every material has its node tree
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    shader = next((node for node in nodes if node.type == "BSDF_PRINCIPLED"), None)
    if shader is None:
        shader = nodes.new("ShaderNodeBsdfPrincipled")
        output = next((node for node in nodes if node.type == "OUTPUT_MATERIAL"), None) or \
            nodes.new("ShaderNodeOutputMaterial")
        links.new(shader.outputs["BSDF"], output.inputs["Surface"])
    texture_node = nodes.new("ShaderNodeTexImage")
    texture_node.image = image
    texture_node.interpolation = "Linear"
    texture_node.location = (shader.location.x - 400, shader.location.y)
    uv_node = nodes.new("ShaderNodeUVMap")
    uv_node.uv_map = uv_map
    uv_node.location = (texture_node.location.x - 250, texture_node.location.y)
    links.new(uv_node.outputs["UV"], texture_node.inputs["Vector"])
    links.new(texture_node.outputs["Color"], shader.inputs["Base Color"])
    if "Roughness" in shader.inputs:
        shader.inputs["Roughness"].default_value = 1.0  # the texture is an albedo learnt under diffuse light
    return material



def apply_texture_result(target: TextureTarget, result_dir: Path, prompt: str) -> tuple[bpy.types.Material, bpy.types.Image]:
    """Load the result's texture as a new packed image and put a new material using it on the target."""
    texture_path = texture_file_of(Path(result_dir))
    name = datablock_name(MATERIAL_PREFIX, prompt, separator=": ")
    image = bpy.data.images.load(str(texture_path), check_existing=False)
    image.name = name
    image.pack()  # the job folder may be a temporary one: the .blend keeps its own copy
    material = build_material(image, target.uv_map, name)
    obj = target.obj
    if target.created_copy:
        obj.data.materials.clear()  # the copy's own new mesh: nothing of the user's is touched
        obj.data.materials.append(material)
    elif len(obj.material_slots):
        for slot in obj.material_slots:  # object-level links: the mesh keeps its own materials
            slot.link = "OBJECT"
            slot.material = material
    else:
        obj.data.materials.append(material)
    obj["radiantforge_texture_job"] = str(Path(result_dir).parent)
    return material, image


class TextureJobImporter:
    """Applies a texture job's result to ``target``, or removes what was made for it when the job stops."""

    # The object (or UV map) a texture job works on is removed when the job stops without a result,
    # and the texture only fits those UVs: a resumed job would have nothing to go onto.
    resume_refusal = ("a stopped texture job cannot be resumed from Blender (the object copy it textures was "
                      "removed); resume it where the service runs (`radiantforge run JOB --resume`) or texture "
                      "the mesh again")

    def __init__(self, target: TextureTarget, prompt: str):
        self.target = target
        self.prompt = prompt

    def import_result(self, result_dir: Path, name: str, metrics: dict) -> ImportedResult:
        imported = import_result(result_dir, RESULT_ONLY, name=name)
        material, _ = apply_texture_result(self.target, result_dir, self.prompt)
        imported.result_object = self.target.obj
        imported.message = f"finished · material {material.name!r} on {self.target.obj.name!r}"
        return imported

    def discard(self) -> None:
        self.target.discard()
