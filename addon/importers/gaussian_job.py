"""A finished "gaussians" job into Blender: the splat object, its turntable and test renders."""

from __future__ import annotations

from pathlib import Path

from .results import ImportedResult, ImportOptions, import_result

PSNR_KEYS = ("psnr", "test_psnr", "PSNR")  # as different backend versions name it


class GaussianJobImporter:
    """Imports a Gaussian job's result with ``options`` (display, turntable, test renders)."""

    resume_refusal = None  # a stopped Gaussian job continues from its checkpoint

    def __init__(self, options: ImportOptions | None = None):
        self.options = options or ImportOptions()

    def import_result(self, result_dir: Path, name: str, metrics: dict) -> ImportedResult:
        imported = import_result(result_dir, self.options, name=name)
        imported.result_object = imported.splat_object
        imported.message = finished_message(imported.metrics or metrics, imported)
        return imported

    def discard(self) -> None:
        """Nothing is made in the scene before the result is in."""


def finished_message(metrics: dict, imported: ImportedResult) -> str:
    """'finished · PSNR 31.20 dB · 41,230 Gaussians imported'."""
    parts = ["finished"]
    for key in PSNR_KEYS:
        if isinstance(metrics.get(key), (int, float)):
            parts.append(f"PSNR {metrics[key]:.2f} dB")
            break
    if imported.splat_object is not None:
        parts.append(f"{imported.splat_object['radiantforge_splat_count']:,} Gaussians imported")
    return " · ".join(parts)
