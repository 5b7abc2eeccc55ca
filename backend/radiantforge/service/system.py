"""What the service reports about its machine: the compute device and the local diffusion models."""

from __future__ import annotations

import os
import platform
from pathlib import Path

_HF_MODEL_PREFIX = "models--"


def describe_device(device: str | None = None) -> dict:
    """{type: cpu|cuda|mps, name, memory_total_bytes (None where unknown)} of the device jobs use."""
    import torch

    from ..devices import resolve_device

    resolved = resolve_device(device or "auto")
    if resolved.type == "cuda":
        index = resolved.index if resolved.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return {"type": "cuda", "name": props.name, "memory_total_bytes": int(props.total_memory)}
    if resolved.type == "mps":
        memory = None
        recommended = getattr(getattr(torch, "mps", None), "recommended_max_memory", None)
        if recommended is not None:
            try:
                memory = int(recommended())
            except RuntimeError:
                memory = None
        return {"type": "mps", "name": "Apple GPU (Metal)", "memory_total_bytes": memory or system_memory_bytes()}
    name = platform.processor() or platform.machine() or "CPU"
    return {"type": "cpu", "name": f"{name} ({os.cpu_count()} cores)", "memory_total_bytes": system_memory_bytes()}


def system_memory_bytes() -> int | None:
    """Physical memory of the machine, where the platform tells."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    if os.name == "nt":  # pragma: no cover - Windows only
        import ctypes

        class MemoryStatus(ctypes.Structure):
            _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                        ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                        ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                        ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                        ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

        status = MemoryStatus()
        status.dwLength = ctypes.sizeof(MemoryStatus)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
            return int(status.ullTotalPhys)
    return None


def hugging_face_cache_dir() -> Path:
    """The Hugging Face hub cache, by the hub's own rules (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)."""
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        if os.environ.get("HF_HUB_CACHE"):
            return Path(os.environ["HF_HUB_CACHE"])
        if os.environ.get("HF_HOME"):
            return Path(os.environ["HF_HOME"]) / "hub"
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        return cache / "huggingface" / "hub"


def local_models(cache_dir: str | Path | None = None, model_roots: list[Path] | tuple[Path, ...] = ()) -> list[dict]:
    """Models on this machine: [{id: "org/name", path}] from the Hugging Face cache, then
    [{id: "/abs/folder", path}] for the diffusers folders (a ``model_index.json`` inside) directly in
    ``model_roots``; each group sorted by id.

    Only cache folders with at least one downloaded snapshot count; nothing is downloaded or loaded.
    """
    cache = Path(cache_dir) if cache_dir is not None else hugging_face_cache_dir()
    models = []
    if cache.is_dir():
        for folder in cache.iterdir():
            if not (folder.is_dir() and folder.name.startswith(_HF_MODEL_PREFIX)):
                continue
            snapshots = folder / "snapshots"
            if not (snapshots.is_dir() and any(s.is_dir() and any(s.iterdir()) for s in snapshots.iterdir())):
                continue
            model_id = folder.name[len(_HF_MODEL_PREFIX):].replace("--", "/")
            models.append({"id": model_id, "path": str(folder)})
    models.sort(key=lambda m: m["id"])
    folders = []
    for root in model_roots:
        root = Path(root)
        candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
        folders += [{"id": str(p), "path": str(p)} for p in candidates if (p / "model_index.json").is_file()]
    return models + folders
