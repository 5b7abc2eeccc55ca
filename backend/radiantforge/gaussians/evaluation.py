"""Evaluating Gaussian splats against a dataset's views: PSNR, SSIM, LPIPS, renders beside ground truth.

:func:`evaluate_splats` is what a finished training reports on its test split;
:func:`evaluate_ply` is ``radiantforge eval`` (any 3DGS PLY against a split of a dataset folder).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from .. import media
from ..config_checks import check_colour
from ..devices import resolve_device
from ..errors import InputError, quoted
from ..metrics import MetricUnavailable, finite_or_none, load_lpips, lpips_distance, lpips_weights_path, psnr, ssim
from ..result_folders import partial_result, write_json
from .splats import GaussianSplats

METRICS_FILE = "metrics.json"
TEST_RENDERS_DIR = "test_renders"



def _file_stem(name: str, index: int) -> str:
    stem = Path(str(name)).stem or f"view_{index}"
    return f"{index:03d}_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)


def evaluate_splats(splats: GaussianSplats, views, background, *, device="auto", renders_dir: str | Path | None = None,
                    lpips_net: str | None = "alex", backend: str = "auto") -> dict[str, Any]:
    """PSNR, SSIM and LPIPS of ``splats`` rendered from ``views`` (a ViewSet) against its images.

    renders_dir: when given, each render is saved beside its ground truth (render | truth PNG).
    lpips_net: LPIPS backbone, or None to skip. LPIPS is computed only when the backbone weights
    are on this machine; otherwise "lpips" is None and "lpips_status" says why and where they go.
    Returns means over the views and a "per_view" list.
    """
    from .render import render_views

    device = resolve_device(device)
    renders, _, _ = render_views(splats, views.cameras, background=background, backend=backend, device=device)
    targets = torch.as_tensor(views.images, dtype=torch.float32).cpu()

    lpips_model, lpips_status, lpips_path = None, "not requested", None
    if lpips_net is not None:
        lpips_path = lpips_weights_path(lpips_net)
        try:
            lpips_model = load_lpips(lpips_net, device=device)
            lpips_status = f"computed with the {lpips_net} backbone"
        except MetricUnavailable as exc:
            lpips_status = f"not computed: {exc.reason}"

    per_view = []
    if renders_dir is not None:
        renders_dir = Path(renders_dir)
        renders_dir.mkdir(parents=True, exist_ok=True)
    for index in range(len(renders)):
        render, target = renders[index], targets[index]
        name = views.names[index] if index < len(views.names) else f"view_{index}"
        entry = {"name": str(name), "psnr": finite_or_none(psnr(render, target)), "ssim": float(ssim(render, target))}
        if lpips_model is not None:
            entry["lpips"] = float(lpips_distance(lpips_model, render, target))
        if renders_dir is not None:
            file_name = _file_stem(name, index) + ".png"
            media.write_png(renders_dir / file_name, media.side_by_side(render, target))
            entry["render"] = f"{renders_dir.name}/{file_name}"
        per_view.append(entry)

    def mean_of(key):
        values = [v[key] for v in per_view if v.get(key) is not None]
        return sum(values) / len(values) if values else None

    return {
        "psnr": mean_of("psnr"),
        "ssim": mean_of("ssim"),
        "lpips": mean_of("lpips") if lpips_model is not None else None,
        "lpips_status": lpips_status,
        "lpips_weights_path": str(lpips_path) if lpips_path is not None else None,
        "n_views": len(per_view),
        "per_view": per_view,
    }


def evaluate_ply(ply, data, *, out_dir: str | Path | None = None, split: str = "test", background=(1.0, 1.0, 1.0),
                 device="auto", lpips_net: str | None = "alex", downscale: float = 1.0,
                 backend: str = "auto") -> dict[str, Any]:
    """Evaluate a splat file (.ply, .spz, .splat, .glb, .gltf) on a split of a dataset folder (``radiantforge eval``).

    With ``out_dir`` (new or empty), renders beside ground truth and metrics.json are written there.
    """
    from ..data.transforms import load_nerf_dataset
    from .formats import load_splats

    background = check_colour(background)
    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise InputError("exists and is not an empty folder; choose a new folder for the evaluation", file=out_dir)
    dataset = load_nerf_dataset(data, downscale=downscale, background=background,
                                splits=("train", split) if split != "train" else ("train",))
    views = dataset.splits.get(split)
    if views is None or len(views) == 0:
        raise InputError(f"the dataset has no {quoted(split)} split (it has {', '.join(dataset.splits)})", file=data,
                         field="split")
    splats = load_splats(ply)  # .ply, .spz, .splat, .glb or .gltf
    if out_dir is None:
        metrics = evaluate_splats(splats, views, dataset.background, device=device, lpips_net=lpips_net,
                                  backend=backend)
        metrics.update({"split": split, "ply": str(ply)})
        return metrics
    with partial_result(out_dir, replace_finished=False) as partial:
        metrics = evaluate_splats(splats, views, dataset.background, device=device, lpips_net=lpips_net,
                                  renders_dir=partial / TEST_RENDERS_DIR, backend=backend)
        metrics.update({"split": split, "ply": str(ply)})
        write_json(partial / METRICS_FILE, metrics)
    return metrics
