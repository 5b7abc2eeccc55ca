"""Bring a job's turntable and test renders back into Blender as images.

- The turntable frames (``turntable/frame_0000.png ...``) become one Image datablock with source
  SEQUENCE (scrub it in the Image Editor, or put it on a plane with ``create_plane=True``).
- The MP4 (or GIF) is copied beside the saved .blend (``//radiantforge-results/<name>/``) so it travels
  with the file; with an unsaved .blend it stays where the job wrote it.
- Test renders and their ground truth load as pairs of images, named so they sort side by side.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import bpy

from ..io.job_folder import RESULT_DIR
from ..io.media import ANIMATION_SUFFIXES, VIDEO_SUFFIXES, frame_number, numbered_frames

# Folder (relative to the .blend) where imported media are copied. Not a Python identifier on purpose: a
# folder named "radiantforge" beside the .blend shadowed the package for any Python started from there.
MEDIA_FOLDER = "radiantforge-results"


@dataclasses.dataclass
class TurntableImport:
    sequence: bpy.types.Image | None  # the frames as an image sequence
    frame_count: int
    video_path: Path | None  # where the video now lives (beside the .blend when saved)
    video: bpy.types.Image | None  # the video as a MOVIE image (None when there is no video)
    plane: bpy.types.Object | None = None


# Custom property marking the images this module imported: only those are reused on a re-import.
IMPORTED_MARK = "radiantforge_imported"


def _same_file(image: bpy.types.Image, path: str) -> bool:
    if not image.filepath:
        return False
    here = bpy.path.abspath(image.filepath, library=image.library)
    return os.path.normcase(os.path.normpath(here)) == os.path.normcase(os.path.normpath(path))


def load_kept_image(path: str | os.PathLike, name: str, source: str | None = None) -> bpy.types.Image:
    """The image of ``path`` named ``name``, kept with the .blend (a fake user: nothing else uses it, and
    Blender drops unused images on save). An image this module imported from the same file before is
    reloaded and reused, so importing a result again makes no ``.001`` duplicates. ``source``: e.g.
    "SEQUENCE"; None keeps what Blender chose for the file (FILE, MOVIE)."""
    wanted = bpy.path.abspath(str(path))
    image = next((candidate for candidate in bpy.data.images
                  if candidate.get(IMPORTED_MARK) and source in (None, candidate.source)
                  and _same_file(candidate, wanted)),
                 None)
    if image is None:
        image = bpy.data.images.load(str(path), check_existing=False)
        if source is not None:
            image.source = source
        image[IMPORTED_MARK] = True
    else:
        image.reload()
    if image.name != name:
        image.name = name
    image.use_fake_user = True
    return image


def load_image_sequence(frames: list[Path], name: str) -> bpy.types.Image:
    """One Image with source SEQUENCE over ``frames`` (numbered files in one folder)."""
    if not frames:
        raise ValueError(f"{name}: no frames to load (expected numbered images such as frame_0000.png)")
    image = load_kept_image(frames[0], name, source="SEQUENCE")
    # Image datablocks keep no frame count (image users do); keep it for the plane and the UI.
    image["radiantforge_frame_count"] = len(frames)
    image["radiantforge_first_frame"] = frame_number(frames[0])
    return image


def keep_beside_blend(source: str | os.PathLike, name: str) -> Path:
    """Copy ``source`` to ``//radiantforge-results/<name>/`` beside the saved .blend; return the path to use.

    An unsaved .blend has no folder: the file stays where it is. An existing copy is never
    overwritten: a numbered name is chosen instead.
    """
    source = Path(source)
    if not bpy.data.filepath:
        return source
    folder = Path(bpy.path.abspath(f"//{MEDIA_FOLDER}")) / bpy.path.clean_name(name)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    counter = 1
    while target.exists():
        if target.resolve() == source.resolve():
            return target
        target = folder / f"{source.stem}_{counter}{source.suffix}"
        counter += 1
    partial = target.with_name(target.name + ".partial")
    shutil.copyfile(source, partial)
    os.replace(partial, target)
    return target


def _image_plane(image: bpy.types.Image, frame_count: int, first_frame: int, name: str,
                 collection: bpy.types.Collection) -> bpy.types.Object:
    """A plane showing the sequence (emission), sized to the image aspect, 1 m wide."""
    width, height = image.size if image.size[0] else (1, 1)
    half_w, half_h = 0.5, 0.5 * height / width
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([(-half_w, 0, -half_h), (half_w, 0, -half_h), (half_w, 0, half_h), (-half_w, 0, half_h)], [],
                     [(0, 1, 2, 3)])
    uv = mesh.uv_layers.new(name="UVMap")
    for loop, coordinate in zip(uv.data, [(0, 0), (1, 0), (1, 1), (0, 1)]):
        loop.uv = coordinate
    material = bpy.data.materials.new(name)
    if not material.use_nodes:
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    texture.image_user.frame_duration = frame_count
    texture.image_user.frame_start = 1
    texture.image_user.frame_offset = first_frame - 1
    texture.image_user.use_auto_refresh = True
    texture.image_user.use_cyclic = True
    emission = nodes.new("ShaderNodeEmission")
    output = nodes.new("ShaderNodeOutputMaterial")
    links.new(texture.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs[0], output.inputs["Surface"])
    mesh.materials.append(material)
    plane = bpy.data.objects.new(name, mesh)
    collection.objects.link(plane)
    return plane


def import_turntable(*, frames: list[Path] | None = None, video: str | os.PathLike | None = None, name: str = "Turntable",
                     create_plane: bool = False, collection: bpy.types.Collection | None = None) -> TurntableImport:
    """Import turntable ``frames`` as an image sequence and keep ``video`` beside the .blend.

    Either may be None (a GIF can stand in for the video). With ``create_plane`` a plane showing
    the sequence is added to ``collection`` (default: the scene's).
    """
    if not frames and video is None:
        raise ValueError(f"{name}: nothing to import (no frames and no video)")
    sequence = load_image_sequence(frames, f"{name} frames") if frames else None
    video_path = movie = None
    if video is not None:
        video_path = keep_beside_blend(video, name)
        movie = load_kept_image(bpy.path.relpath(str(video_path)) if bpy.data.filepath else str(video_path),
                                f"{name} video")
    plane = None
    if create_plane and sequence is not None:
        plane = _image_plane(sequence, len(frames), frame_number(frames[0]), name,
                             collection or bpy.context.scene.collection)
    return TurntableImport(sequence, len(frames or []), video_path, movie, plane)


def import_turntable_folder(folder: str | os.PathLike, **options) -> TurntableImport:
    """Import a folder holding frames (``frame_0000.png``...) and/or a video, or a result folder
    with a ``turntable/`` subfolder and ``turntable.mp4``/``.gif`` beside it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; choose the turntable's frame folder or the job's result folder")
    frame_folder = folder / "turntable" if (folder / "turntable").is_dir() else folder
    frames = numbered_frames(frame_folder)
    video = None
    for suffix in VIDEO_SUFFIXES + ANIMATION_SUFFIXES:
        candidates = sorted(frame_folder.parent.glob(f"{frame_folder.name}{suffix}")) + sorted(folder.glob(f"*{suffix}"))
        if candidates:
            video = candidates[0]
            break
    if not frames and video is None:
        raise ValueError(f"{folder}: no turntable here (expected numbered frames such as turntable/frame_0000.png "
                         "or a turntable.mp4)")
    # A result folder is named "result" ("result-2" when downloaded again); its job folder's name says which job it was.
    owner = folder.parent if folder.name.startswith(RESULT_DIR) else folder
    options.setdefault("name", f"{owner.name} turntable" if frame_folder != folder else folder.name)
    return import_turntable(frames=frames or None, video=video, **options)


def import_image_pairs(pairs: list[tuple[Path, Path | None]], prefix: str = "RF test") -> list[bpy.types.Image]:
    """Load (render, ground truth) image pairs, named '<prefix> <view> render' / '... ground truth'."""
    images = []
    for render, truth in pairs:
        view = render.stem
        for path, label in ((render, "render"), (truth, "ground truth")):
            if path is None:
                continue
            images.append(load_kept_image(path, f"{prefix} {view} {label}"))
    return images
