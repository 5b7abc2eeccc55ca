"""Radiant Forge backend: Gaussian splatting, SDS texturing and text-to-3D for Blender.

The public API is importable from the top level; heavy modules load on first use so that
`import radiantforge` stays cheap (the CLI's --help, the service's health check).
"""

__version__ = "0.1.0"

_LAZY = {
    "train_gaussians": ("radiantforge.gaussians.train", "train_gaussians"),
    "GaussianTrainConfig": ("radiantforge.gaussians.train", "GaussianTrainConfig"),
    "rasterize": ("radiantforge.gaussians.rasterize", "rasterize"),
    "GaussianSplats": ("radiantforge.gaussians.splats", "GaussianSplats"),
    "load_gaussian_ply": ("radiantforge.gaussians.ply", "load_gaussian_ply"),
    "save_gaussian_ply": ("radiantforge.gaussians.ply", "save_gaussian_ply"),
    "render_turntable": ("radiantforge.gaussians.render", "render_turntable"),
    "load_nerf_dataset": ("radiantforge.data.transforms", "load_nerf_dataset"),
    "texture_mesh": ("radiantforge.texture", "texture_mesh"),
    "TextureConfig": ("radiantforge.texture", "TextureConfig"),
    "generate_3d": ("radiantforge.text3d", "generate_3d"),
    "batch_generate": ("radiantforge.text3d", "batch_generate"),
    "Text3DConfig": ("radiantforge.text3d", "Text3DConfig"),
    "run_job": ("radiantforge.jobs", "run_job"),
    "Cameras": ("radiantforge.cameras", "Cameras"),
    "InputError": ("radiantforge.errors", "InputError"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        return getattr(importlib.import_module(module_name), attribute)
    raise AttributeError(f"module 'radiantforge' has no attribute {name!r}")
