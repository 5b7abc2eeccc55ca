"""Images, turntables and videos: PNG frames, GIF and MP4 (imageio + its bundled ffmpeg)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_FPS = 24


def to_uint8(image) -> np.ndarray:
    """(H, W, C) float in [0, 1] (tensor or array) -> (H, W, C) uint8. uint8 passes through."""
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: str | Path, image) -> Path:
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, to_uint8(image))
    return path


def side_by_side(*images) -> np.ndarray:
    """Concatenate (H, W, C) images left to right (e.g. prediction | ground truth)."""
    return np.concatenate([to_uint8(im) for im in images], axis=1)


def depth_to_rgb(depth, alpha=None) -> np.ndarray:
    """(H, W, 1) depth -> (H, W, 3) uint8, near = bright; empty pixels (alpha ~ 0) black."""
    if hasattr(depth, "detach"):
        depth = depth.detach().float().cpu().numpy()
    depth = np.asarray(depth, dtype=np.float32)[..., 0]
    valid = depth > 0 if alpha is None else np.asarray(alpha.detach().cpu() if hasattr(alpha, "detach") else alpha)[..., 0] > 0.5
    out = np.zeros(depth.shape, np.float32)
    if valid.any():
        near, far = np.percentile(depth[valid], [1, 99])
        out[valid] = 1.0 - np.clip((depth[valid] - near) / max(far - near, 1e-8), 0, 1) * 0.85
    return to_uint8(np.repeat(out[..., None], 3, axis=-1))


def _even_size(frames: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even width and height: pad by one pixel where needed."""
    _, h, w, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_gif(path: str | Path, frames: Sequence, fps: int = DEFAULT_FPS) -> Path:
    import imageio.v3 as iio

    path = Path(path)
    array = np.stack([to_uint8(f)[..., :3] for f in frames])
    tmp = path.with_name(path.name + ".partial.gif")
    iio.imwrite(tmp, array, duration=1000.0 / fps, loop=0)
    os.replace(tmp, path)
    return path


def write_mp4(path: str | Path, frames: Sequence, fps: int = DEFAULT_FPS) -> Path | None:
    """H.264 MP4 through imageio-ffmpeg; returns None (with a warning) when ffmpeg is unusable."""
    import imageio.v2 as iio2

    path = Path(path)
    array = _even_size(np.stack([to_uint8(f)[..., :3] for f in frames]))
    tmp = path.with_name(path.name + ".partial.mp4")
    try:
        with iio2.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                             pixelformat="yuv420p", macro_block_size=1) as writer:
            for frame in array:
                writer.append_data(frame)
    except Exception as exc:  # ffmpeg missing or broken: the GIF and PNG frames still exist
        tmp.unlink(missing_ok=True)
        warnings.warn(f"MP4 not written ({exc}); the GIF and PNG frames are still there")
        return None
    os.replace(tmp, path)
    return path


def write_turntable(out_dir: str | Path, frames: Sequence, name: str = "turntable", fps: int = DEFAULT_FPS,
                    write_frames: bool = True) -> dict[str, str]:
    """Write ``name``.gif, ``name``.mp4 and ``name``/frame_0000.png ... Returns {kind: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"gif": str(write_gif(out_dir / f"{name}.gif", frames, fps))}
    mp4 = write_mp4(out_dir / f"{name}.mp4", frames, fps)
    if mp4 is not None:
        files["mp4"] = str(mp4)
    if write_frames:
        frame_dir = out_dir / name
        frame_dir.mkdir(exist_ok=True)
        for index, frame in enumerate(frames):
            write_png(frame_dir / f"frame_{index:04d}.png", frame)
        files["frames"] = str(frame_dir)
    return files
