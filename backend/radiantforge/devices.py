"""Device selection shared by every backend function (``device="auto"``)."""

from __future__ import annotations

import torch

from .errors import InputError, quoted

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
# The Gaussian rasterizer choices ("auto", "native", "torch", "gsplat") are registered in
# radiantforge.gaussians.rasterizers (RASTERIZER_CHOICES), with what "auto" means on each device.


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device for ``device``: "auto" picks cuda, then mps, then cpu."""
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise InputError(f"expected one of {', '.join(DEVICE_CHOICES)}, got {quoted(device)}", field="device")
    if base == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA was requested but torch sees no CUDA device", field="device")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("MPS was requested but torch sees no Apple GPU", field="device")
    return torch.device(name)
