"""A finished result folder into Blender: splats, turntable, test renders beside ground truth, metrics, preview.

What every job kind's importer starts from (``gaussian_job``, ``texture_job``, ``text3d_job``), and
what the Import Job Result operator runs. The files are found by ``io.results``.
"""

from __future__ import annotations

import dataclasses
import os

import bpy

from ..io.job_folder import JobError
from ..io.results import captured_object_names, read_result_folder
from . import gaussians as gaussian_importer
from . import originals
from . import turntable as turntable_importer

PREVIEW_IMAGE_NAME = "RadiantForge Preview"
# Characters of a prompt kept in datablock names (Blender allows 63 bytes).
NAME_PROMPT_CHARS = 40


@dataclasses.dataclass
class ImportOptions:
    gaussians: bool = True
    display: str = "AUTO"
    splat_size: float = gaussian_importer.DEFAULT_SPLAT_SIZE
    turntable: bool = True
    test_renders: bool = True
    # Hide the objects the capture rendered (the splats stand where they are); Show Originals undoes it.
    hide_originals: bool = True
    collection: bpy.types.Collection | None = None


@dataclasses.dataclass
class ImportedResult:
    splat_object: bpy.types.Object | None = None
    turntable: turntable_importer.TurntableImport | None = None
    test_images: list = dataclasses.field(default_factory=list)
    preview: bpy.types.Image | None = None
    metrics: dict = dataclasses.field(default_factory=dict)
    hidden_originals: list = dataclasses.field(default_factory=list)  # names of the captured objects hidden
    # Set by a job kind's importer: the object the panel points at, and the job's closing message.
    result_object: bpy.types.Object | None = None
    message: str = "finished"


def import_result(result_folder: str | os.PathLike, options: ImportOptions | None = None,
                  name: str | None = None) -> ImportedResult:
    """Import a finished result folder (or job folder): splats, turntable, test renders, metrics."""
    options = options or ImportOptions()
    files = read_result_folder(result_folder)
    name = name or files.folder.parent.name or "Radiant Forge"
    imported = ImportedResult(metrics=files.metrics)
    if options.gaussians:
        if files.gaussians is None:
            raise JobError(f"{files.folder}: the result has no Gaussian PLY (role 'gaussians' in result.json)")
        imported.splat_object = gaussian_importer.import_gaussians(
            files.gaussians, collection=options.collection, name=name, display=options.display,
            splat_size=options.splat_size)
        imported.splat_object["radiantforge_job"] = str(files.folder.parent)
        if options.hide_originals:
            imported.hidden_originals = originals.hide_originals(imported.splat_object,
                                                                 captured_object_names(files.folder))
    if options.turntable and (files.turntable_frames or files.turntable_video or files.turntable_gif):
        imported.turntable = turntable_importer.import_turntable(
            frames=files.turntable_frames or None, video=files.turntable_video or files.turntable_gif,
            name=f"{name} turntable")
    if options.test_renders and files.test_pairs:
        imported.test_images = turntable_importer.import_image_pairs(files.test_pairs, prefix=f"{name} test")
    preview_source = (files.turntable_frames[0] if files.turntable_frames
                      else files.test_pairs[0][0] if files.test_pairs else None)
    if preview_source is not None:
        imported.preview = load_preview(preview_source)
    return imported


def load_preview(path: str | os.PathLike) -> bpy.types.Image:
    """(Re)load ``path`` into the one preview image the panel shows."""
    image = bpy.data.images.get(PREVIEW_IMAGE_NAME)
    if image is not None:
        image.filepath = str(path)
        image.reload()
    else:
        image = bpy.data.images.load(str(path), check_existing=False)
        image.name = PREVIEW_IMAGE_NAME
    image.use_fake_user = True  # the panel's pointer alone does not keep it in a saved .blend
    return image


def datablock_name(prefix: str, prompt: str, separator: str = " ") -> str:
    """'<prefix><separator><the prompt's first words>', or ``prefix`` for an empty prompt."""
    short = prompt.strip()[:NAME_PROMPT_CHARS].rstrip()
    return f"{prefix}{separator}{short}" if short else prefix
