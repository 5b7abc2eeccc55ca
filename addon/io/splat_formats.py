"""Gaussian splats in the standard exchange formats, on numpy alone (no bpy, no torch): both ways.

Shared by the add-on (File > Import / Export) and the backend (``radiantforge convert``, through
``radiantforge.gaussians.formats``), so both read and write the very same bytes.

:class:`SplatArrays` holds splats as the 3DGS PLY stores them (log scales, logit opacities, wxyz
quaternions, SH coefficients with ``color = 0.5 + C0 * sh0``), in Blender world space (Z up).

- **glTF 2.0 + KHR_gaussian_splatting** (``.glb``, ``.gltf``; Khronos glTF repo,
  ``extensions/2.0/Khronos/KHR_gaussian_splatting``): a POINTS primitive with POSITION,
  ``KHR_gaussian_splatting:ROTATION`` (unit xyzw quaternion), ``:SCALE`` (linear),
  ``:OPACITY`` (linear, sigmoid applied), ``:SH_DEGREE_l_COEF_n`` (VEC3 RGB, n = m + l), plus the
  ``COLOR_0`` fallback (linear RGB + opacity). glTF is Y up: we write the data untouched in
  Blender coordinates under a node rotated -90° about X (Blender Z up -> glTF Y up), which the
  extension defines as part of the splats' transform; on reading, every node transform is baked
  into the splats (positions, quaternions, scales and SH rotated) and the Y-up -> Z-up turn undone,
  so our own files come back bit for bit and other tools' files land upright.
- **SPZ** (Niantic, nianticlabs/spz): gzip of a 16-byte header (magic ``NGSP``, version, count,
  SH degree, fractional bits, flags) then positions (24-bit fixed point), alphas (u8 sigmoid),
  colours (u8, ``sh0 * 0.15 * 255 + 127.5``), scales (u8, ``(log + 10) * 16``), rotations
  (v3: smallest three in 4 bytes; v2: xyz in 3 bytes), SH (u8, ``x * 128 + 128``, coefficient-major,
  RGB inner). SPZ's data is in RUB axes (right, up, back: three.js, Y up), so like glTF we turn
  Blender's Z up into Y up on writing ((x, y, z) -> (x, z, -y), SH rotated too) and back on reading:
  Scaniverse captures land upright in Blender and our files stand upright in SPZ viewers. (Niantic's
  ``ply_to_spz`` tool copies PLY axes unchanged; its files read here as if those were RUB.) We write
  version 3 (gzip, readable by every SPZ loader); we read gzip versions 1–4, and version 4 with the
  plain 'NGSP' header (zstd streams) when the ``zstandard`` module is installed.
- **.splat** (antimatter15/splat): 32 bytes a splat, no header: position 3×f32, linear scale 3×f32,
  RGBA u8 (``(0.5 + C0 * sh0) * 255``, ``sigmoid(opacity) * 255``), quaternion wxyz u8
  (``q / |q| * 128 + 128``). No view-dependent colour (SH degree 0 only).

Every reader checks sizes against the file before allocating, so a hostile header cannot make it
allocate more than a small multiple of the file's size; errors are :class:`SplatFormatError`
naming the file and what was expected.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

SH_C0 = 0.28209479177387814
N_CHANNELS = 3
MAX_SH_DEGREE = 3  # the 3DGS PLY layout (and our renderers) stop at degree 3
SUFFIXES = (".ply", ".spz", ".splat", ".glb", ".gltf")


class SplatFormatError(ValueError):
    """A splat file that cannot be read (or splats that cannot be written) as the format expects."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclasses.dataclass
class SplatArrays:
    """Splats as the 3DGS PLY stores them, float32, in Blender world space.

    means: (N, 3); log_scales: (N, 3); quats: (N, 4) w x y z; opacity_logits: (N,);
    sh0: (N, 3) degree-0 coefficient per channel; shN: (N, K-1, 3), K = (degree + 1)^2.
    """

    means: np.ndarray
    log_scales: np.ndarray
    quats: np.ndarray
    opacity_logits: np.ndarray
    sh0: np.ndarray
    shN: np.ndarray

    def __len__(self) -> int:
        return len(self.means)

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.shN.shape[1] + 1))) - 1

    def subset(self, keep: np.ndarray) -> "SplatArrays":
        return SplatArrays(*(getattr(self, f.name)[keep] for f in dataclasses.fields(self)))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _logit(p: np.ndarray, eps: float) -> np.ndarray:
    p = np.clip(p.astype(np.float64), eps, 1.0 - eps)
    return np.log(p / (1.0 - p))


def _normalized(q: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    out = np.divide(q, norm, out=np.zeros_like(q), where=norm > 0)
    out[norm[:, 0] == 0] = (1, 0, 0, 0) if q.shape[1] == 4 else 0
    return out


# --- PLY columns (the add-on's mesh attributes and PLY reader speak these) ---------------------

def from_ply_columns(columns: dict[str, np.ndarray]) -> SplatArrays:
    """{3DGS PLY property: (N,) array} -> SplatArrays (f_rest is channel-major, see the PLY docs)."""
    def stack(names):
        return np.stack([np.asarray(columns[n], np.float32) for n in names], axis=1)

    n = len(columns["x"])
    n_rest = sum(1 for name in columns if name.startswith("f_rest_"))
    per_channel = n_rest // N_CHANNELS
    rest = stack([f"f_rest_{i}" for i in range(n_rest)]) if n_rest else np.zeros((n, 0), np.float32)
    return SplatArrays(
        means=stack(("x", "y", "z")),
        log_scales=stack(("scale_0", "scale_1", "scale_2")),
        quats=stack(("rot_0", "rot_1", "rot_2", "rot_3")),
        opacity_logits=np.asarray(columns["opacity"], np.float32).copy(),
        sh0=stack(("f_dc_0", "f_dc_1", "f_dc_2")),
        shN=rest.reshape(n, N_CHANNELS, per_channel).transpose(0, 2, 1).copy(),
    )


def to_ply_columns(splats: SplatArrays) -> dict[str, np.ndarray]:
    """SplatArrays -> {3DGS PLY property: (N,) float32}, in the PLY's property order (no normals)."""
    columns = {}
    for i, axis in enumerate("xyz"):
        columns[axis] = splats.means[:, i]
    for c in range(N_CHANNELS):
        columns[f"f_dc_{c}"] = splats.sh0[:, c]
    rest = splats.shN.transpose(0, 2, 1).reshape(len(splats), -1)  # channel-major
    for i in range(rest.shape[1]):
        columns[f"f_rest_{i}"] = rest[:, i]
    columns["opacity"] = splats.opacity_logits
    for i in range(3):
        columns[f"scale_{i}"] = splats.log_scales[:, i]
    for i in range(4):
        columns[f"rot_{i}"] = splats.quats[:, i]
    return {name: np.ascontiguousarray(values, np.float32) for name, values in columns.items()}


# Blender (Z up) -> Y up (glTF; SPZ's RUB): -90 degrees about X, (x, y, z) -> (x, z, -y).
Y_UP_FROM_BLENDER = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], np.float64)
BLENDER_FROM_Y_UP = Y_UP_FROM_BLENDER.T


# --- rigid transforms (node transforms of glTF, object transforms of Blender) -------------------

def _sh_basis(directions: np.ndarray, degree: int) -> np.ndarray:
    """Real SH basis (3DGS / KHR_gaussian_splatting constants, Condon–Shortley phase) at unit
    directions (M, 3) -> (M, (degree + 1)^2 - 1), without the degree-0 term."""
    x, y, z = directions[:, 0], directions[:, 1], directions[:, 2]
    columns = []
    if degree >= 1:
        c1 = 0.4886025119029199
        columns += [-c1 * y, c1 * z, -c1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        columns += [1.092548430592079 * x * y, -1.092548430592079 * y * z,
                    0.31539156525252 * (2 * zz - xx - yy), -1.092548430592079 * x * z,
                    0.5462742152960395 * (xx - yy)]
    if degree >= 3:
        columns += [-0.5900435899266435 * y * (3 * xx - yy), 2.890611442640554 * x * y * z,
                    -0.4570457994644657 * y * (4 * zz - xx - yy), 0.3731763325901154 * z * (2 * zz - 3 * xx - 3 * yy),
                    -0.4570457994644657 * x * (4 * zz - xx - yy), 1.445305721320277 * z * (xx - yy),
                    -0.5900435899266435 * x * (xx - 3 * yy)]
    return np.stack(columns, axis=1)


def _sh_rotation_matrix(rotation: np.ndarray, degree: int) -> np.ndarray:
    """T ((K-1), (K-1)) with shN_rotated = T @ shN: the colour seen along R d after = before along d.

    Fitted exactly (each band is an invariant subspace) by least squares on sampled directions.
    """
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(64, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    basis = _sh_basis(directions, degree)                    # Y(d)
    basis_back = _sh_basis(directions @ rotation, degree)    # Y(R^T d), rows d^T R = (R^T d)^T
    solution, *_ = np.linalg.lstsq(basis, basis_back, rcond=None)  # basis @ T = basis_back
    return solution


def _quat_wxyz_from_matrix(m: np.ndarray) -> np.ndarray:
    w = math.sqrt(max(0.0, 1 + m[0, 0] + m[1, 1] + m[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
    return np.array([w, x, y, z])


def _quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product, wxyz; a (4,) times b (N, 4)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=1)


def transform_splats(splats: SplatArrays, matrix: np.ndarray, *, what: str = "transform") -> SplatArrays:
    """Apply a 4x4 similarity transform (rotation, uniform positive scale, translation) to the splats.

    Raises ValueError for shear, mirroring or non-uniform scale: a Gaussian's scales are per its own
    axes, so those cannot be baked into the splats exactly.
    """
    matrix = np.asarray(matrix, np.float64)
    if np.allclose(matrix, np.eye(4), atol=1e-12):
        return splats
    linear = matrix[:3, :3]
    column_lengths = np.linalg.norm(linear, axis=0)
    scale = float(column_lengths.mean())
    rotation = linear / scale
    if (not np.allclose(column_lengths, scale, rtol=1e-4) or not np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-4)
            or np.linalg.det(rotation) < 0):
        raise ValueError(f"{what}: expected rotation, uniform positive scale and translation; got column lengths "
                         f"{np.round(column_lengths, 5).tolist()} (splat scales cannot follow shear, mirroring "
                         "or non-uniform scale)")
    means = splats.means.astype(np.float64) @ linear.T + matrix[:3, 3]
    quats = _quat_multiply(_quat_wxyz_from_matrix(rotation), splats.quats.astype(np.float64))
    shN = splats.shN
    if shN.shape[1]:
        shN = np.einsum("jk,nkc->njc", _sh_rotation_matrix(rotation, splats.sh_degree), shN.astype(np.float64))
    return SplatArrays(means.astype(np.float32), (splats.log_scales + np.float32(math.log(scale))).astype(np.float32),
                       quats.astype(np.float32), splats.opacity_logits, splats.sh0, shN.astype(np.float32))


# --- file helpers -------------------------------------------------------------------------------

def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SplatFormatError(path, f"cannot read file: {exc.strerror or exc}") from None


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".partial")
    temporary.write_bytes(data)
    os.replace(temporary, path)


# --- .splat (antimatter15) ----------------------------------------------------------------------

SPLAT_RECORD = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)])
assert SPLAT_RECORD.itemsize == 32
# A u8 opacity of 0 or 255 has no finite logit: read it as half a step inside (0, 1).
_U8_HALF_STEP = 0.5 / 255.0


def read_splat(path: str | os.PathLike) -> SplatArrays:
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) % SPLAT_RECORD.itemsize:
        raise SplatFormatError(path, f"a .splat file is a whole number of {SPLAT_RECORD.itemsize}-byte records; "
                                     f"this one has {len(raw)} bytes ({len(raw) % SPLAT_RECORD.itemsize} left over: truncated?)")
    records = np.frombuffer(raw, SPLAT_RECORD)
    scales = records["scale"].astype(np.float64)
    if not np.all(np.isfinite(records["position"])) or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise SplatFormatError(path, "expected finite positions and positive scales in every record (not a .splat file?)")
    rgba = records["rgba"].astype(np.float64) / 255.0
    quats = _normalized((records["rotation"].astype(np.float64) - 128.0) / 128.0)
    n = len(records)
    return SplatArrays(
        means=records["position"].astype(np.float32),
        log_scales=np.log(scales).astype(np.float32),
        quats=quats.astype(np.float32),
        opacity_logits=_logit(rgba[:, 3], _U8_HALF_STEP).astype(np.float32),
        sh0=((rgba[:, :3] - 0.5) / SH_C0).astype(np.float32),
        shN=np.zeros((n, 0, N_CHANNELS), np.float32),
    )


def splat_bytes(splats: SplatArrays) -> bytes:
    records = np.zeros(len(splats), SPLAT_RECORD)
    records["position"] = splats.means
    records["scale"] = np.exp(splats.log_scales.astype(np.float64))
    colour = 0.5 + SH_C0 * splats.sh0.astype(np.float64)
    rgba = np.concatenate([colour, _sigmoid(splats.opacity_logits)[:, None]], axis=1)
    records["rgba"] = np.clip(np.round(rgba * 255.0), 0, 255)
    records["rotation"] = np.clip(np.round(_normalized(splats.quats.astype(np.float64)) * 128.0 + 128.0), 0, 255)
    return records.tobytes()


def write_splat(path: str | os.PathLike, splats: SplatArrays) -> None:
    _write_atomically(Path(path), splat_bytes(splats))


# --- SPZ (Niantic) ------------------------------------------------------------------------------

SPZ_MAGIC = 0x5053474E  # "NGSP" in file order
SPZ_LEGACY_HEADER = struct.Struct("<IIIBBBB")  # magic, version, points, SH degree, fractional bits, flags, reserved
SPZ_V4_HEADER = struct.Struct("<IIIBBBBI12s")
SPZ_WRITE_VERSION = 3
SPZ_FRACTIONAL_BITS = 12  # the reference writer's value: 1/4096 m steps, +-2048 m range
SPZ_COLOR_SCALE = 0.15
SPZ_SH1_BITS, SPZ_SH_REST_BITS = 5, 4  # the reference writer's defaults
SPZ_MAX_SH_DEGREE = 4
# As the reference loader: a header may not claim more points than the data could hold
# (9 position bytes a point at least) nor more than 1024x compression of the file.
SPZ_MAX_COMPRESSION_RATIO = 1024
SPZ_MIN_BYTES_PER_POINT = 9
_SQRT1_2 = 0.7071067811865476
def _spz_dim(degree: int) -> int:
    return (degree + 1) ** 2 - 1


def read_spz(path: str | os.PathLike) -> SplatArrays:
    path = Path(path)
    raw = _read_bytes(path)
    if raw[:2] == b"\x1f\x8b":
        # Inflate the header, then exactly the bytes it claims (itself bounded by the file's size):
        # never more, whatever the gzip stream would expand to.
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            head = decompressor.decompress(raw, SPZ_LEGACY_HEADER.size)
            if len(head) < SPZ_LEGACY_HEADER.size:
                raise SplatFormatError(path, f"SPZ header truncated: {len(head)} bytes after gzip, "
                                             f"expected {SPZ_LEGACY_HEADER.size}")
            magic, version, count, degree, fractional_bits, flags, _ = SPZ_LEGACY_HEADER.unpack(head)
            if magic != SPZ_MAGIC:
                raise SplatFormatError(path, f"bad SPZ magic 0x{magic:08x}, expected 0x{SPZ_MAGIC:08x} ('NGSP')")
            if not 1 <= version <= 4:  # gzip version 4: SH degree 4 allowed, from writers before zstd streams
                raise SplatFormatError(path, f"SPZ version {version} in a gzip file; expected 1 to 4")
            _check_spz_counts(path, count, degree, len(raw) * SPZ_MAX_COMPRESSION_RATIO)
            sizes = _spz_legacy_sizes(version, count, degree)
            body = decompressor.decompress(decompressor.unconsumed_tail, sum(sizes))
        except zlib.error as exc:
            raise SplatFormatError(path, f"corrupt gzip data ({exc})") from None
        streams = _split_legacy_streams(path, body, sizes, count, degree)
    elif raw[:4] == b"NGSP":
        streams, version, count, degree, fractional_bits = _read_spz_v4(path, raw)
    else:
        raise SplatFormatError(path, f"not an SPZ file: expected a gzip stream (1f 8b) or the 'NGSP' magic, got {raw[:4].hex()}")
    return _unpack_spz(path, streams, version, count, degree, fractional_bits)


def _check_spz_counts(path: Path, count: int, degree: int, available: int) -> None:
    if degree > SPZ_MAX_SH_DEGREE:
        raise SplatFormatError(path, f"SPZ SH degree {degree}; expected 0..{SPZ_MAX_SH_DEGREE}")
    if count == 0 or count > available // SPZ_MIN_BYTES_PER_POINT:
        raise SplatFormatError(path, f"SPZ header claims {count} points, which {available} data bytes cannot hold")


def _spz_legacy_sizes(version: int, count: int, degree: int) -> list[int]:
    """Bytes of positions, alphas, colours, scales, rotations, SH in a gzip SPZ of ``version``."""
    return [count * (6 if version == 1 else 9), count, count * 3, count * 3,
            count * (4 if version >= 3 else 3), count * _spz_dim(degree) * 3]


def _split_legacy_streams(path: Path, data: bytes, sizes: list[int], count: int, degree: int) -> list[bytes]:
    if sum(sizes) > len(data):
        raise SplatFormatError(path, f"SPZ data truncated: {count} points of SH degree {degree} need {sum(sizes)} bytes, "
                                     f"found {len(data)}")
    streams, offset = [], 0
    for size in sizes:
        streams.append(data[offset:offset + size])
        offset += size
    return streams


def _read_spz_v4(path: Path, raw: bytes):
    if len(raw) < SPZ_V4_HEADER.size:
        raise SplatFormatError(path, f"SPZ v4 header truncated: {len(raw)} bytes, expected {SPZ_V4_HEADER.size}")
    magic, version, count, degree, fractional_bits, _flags, n_streams, toc_offset, _ = SPZ_V4_HEADER.unpack_from(raw)
    if version != 4:
        raise SplatFormatError(path, f"SPZ version {version} with the 'NGSP' plain header; expected 4")
    try:
        import zstandard
    except ImportError:
        raise SplatFormatError(path, "SPZ version 4 is zstd-compressed and the 'zstandard' Python module is not "
                                     "installed; install it, or convert the file to SPZ version 3 with Niantic's tools") from None
    _check_spz_counts(path, count, degree, len(raw) * SPZ_MAX_COMPRESSION_RATIO)
    if n_streams != 6 or toc_offset + 16 * n_streams > len(raw):
        raise SplatFormatError(path, f"SPZ v4: expected 6 streams and a table of contents inside the file, "
                                     f"got {n_streams} streams at offset {toc_offset}")
    sizes = [count * 9, count, count * 3, count * 3, count * 4, count * _spz_dim(degree) * 3]
    offset = toc_offset + 16 * n_streams
    streams = []
    for i, expected in enumerate(sizes):
        compressed, uncompressed = struct.unpack_from("<QQ", raw, toc_offset + 16 * i)
        if uncompressed != expected or offset + compressed > len(raw):
            raise SplatFormatError(path, f"SPZ v4 stream {i}: expected {expected} bytes inside the file, "
                                         f"table says {uncompressed} from {compressed} compressed")
        try:
            data = zstandard.ZstdDecompressor().decompress(raw[offset:offset + compressed], max_output_size=expected)
        except zstandard.ZstdError as exc:
            raise SplatFormatError(path, f"SPZ v4 stream {i}: corrupt zstd data ({exc})") from None
        if len(data) != expected:
            raise SplatFormatError(path, f"SPZ v4 stream {i}: {len(data)} bytes, expected {expected}")
        streams.append(data)
        offset += compressed
    return streams, version, count, degree, fractional_bits


def _unpack_spz(path: Path, streams: list[bytes], version: int, count: int, degree: int, fractional_bits: int) -> SplatArrays:
    positions_raw, alphas, colours, scales, rotations, sh = (np.frombuffer(s, np.uint8) for s in streams)
    if version == 1:
        means = np.frombuffer(streams[0], "<f2").astype(np.float64).reshape(count, 3)
    else:
        b = positions_raw.reshape(count * 3, 3).astype(np.int32)
        fixed = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
        means = (fixed.astype(np.float64) / (1 << fractional_bits)).reshape(count, 3)
    log_scales = scales.reshape(count, 3) / 16.0 - 10.0
    opacity = _logit(alphas / 255.0, _U8_HALF_STEP)
    sh0 = (colours.reshape(count, 3) / 255.0 - 0.5) / SPZ_COLOR_SCALE
    if version >= 3:
        quats_xyzw = _unpack_smallest_three(rotations.reshape(count, 4))
    else:
        xyz = rotations.reshape(count, 3) / 127.5 - 1.0
        quats_xyzw = np.concatenate([xyz, np.sqrt(np.maximum(0.0, 1.0 - (xyz ** 2).sum(1)))[:, None]], axis=1)
    dim = _spz_dim(degree)
    coefficients = (sh.reshape(count, dim, 3).astype(np.float64) - 128.0) / 128.0  # coefficient-major, RGB inner
    kept = _spz_dim(min(degree, MAX_SH_DEGREE))  # degree 4 has no place in the 3DGS PLY layout: dropped
    splats_rub = SplatArrays(means.astype(np.float32), log_scales.astype(np.float32),
                             quats_xyzw[:, [3, 0, 1, 2]].astype(np.float32), opacity.astype(np.float32),
                             sh0.astype(np.float32), coefficients[:, :kept].astype(np.float32))
    return transform_splats(splats_rub, BLENDER_FROM_Y_UP)


def _unpack_smallest_three(packed: np.ndarray) -> np.ndarray:
    """(N, 4) u8 -> (N, 4) xyzw: 2 bits index of the largest, three 10-bit (sign + 9-bit magnitude) others."""
    comp = packed.astype(np.uint32)
    comp = comp[:, 0] | (comp[:, 1] << 8) | (comp[:, 2] << 16) | (comp[:, 3] << 24)
    largest = (comp >> 30).astype(np.int64)
    q = np.zeros((len(packed), 4))
    for i in range(3, -1, -1):
        here = largest != i
        magnitude = (comp & 511).astype(np.float64) * (_SQRT1_2 / 511.0)
        value = np.where((comp >> 9) & 1, -magnitude, magnitude)
        q[here, i] = value[here]
        comp = np.where(here, comp >> 10, comp)
    rows = np.arange(len(packed))
    q[rows, largest] = np.sqrt(np.maximum(0.0, 1.0 - (q ** 2).sum(1)))
    return q


def _pack_smallest_three(q: np.ndarray) -> np.ndarray:
    """(N, 4) unit xyzw -> (N, 4) u8, as the reference packQuaternionSmallestThree."""
    largest = np.argmax(np.abs(q), axis=1)
    rows = np.arange(len(q))
    negate = q[rows, largest] < 0
    comp = largest.astype(np.uint32)
    for i in range(4):
        here = largest != i
        negbit = ((q[:, i] < 0) ^ negate).astype(np.uint32)
        magnitude = np.floor(511.0 * (np.abs(q[:, i]) / _SQRT1_2) + 0.5).astype(np.uint32)
        comp = np.where(here, (comp << 10) | (negbit << 9) | magnitude, comp)
    return np.stack([(comp >> s) & 0xFF for s in (0, 8, 16, 24)], axis=1).astype(np.uint8)


def _quantize_sh(x: np.ndarray, bits: int) -> np.ndarray:
    bucket = 1 << (8 - bits)
    q = np.round(x * 128.0) + 128.0
    q = np.trunc((q + bucket // 2) / bucket) * bucket
    return np.clip(q, 0, 255).astype(np.uint8)


def spz_bytes(splats: SplatArrays, path: str | os.PathLike = "<spz>") -> bytes:
    """Version-3 SPZ (gzip) of ``splats`` (Blender axes), quantised as Niantic's ``saveSpz`` does."""
    splats = transform_splats(splats, Y_UP_FROM_BLENDER)  # Blender Z up -> SPZ's RUB
    n = len(splats)
    degree = splats.sh_degree
    scale = float(1 << SPZ_FRACTIONAL_BITS)
    fixed = np.round(splats.means.astype(np.float64) * scale).astype(np.int64)
    limit = 1 << 23
    if np.any(fixed >= limit) or np.any(fixed < -limit):
        raise SplatFormatError(path, f"SPZ stores positions within +-{limit / scale:g} m (24-bit fixed point); "
                                     f"these splats reach {np.abs(splats.means).max():.1f} m")
    fixed &= 0xFFFFFF
    positions = np.stack([(fixed >> s) & 0xFF for s in (0, 8, 16)], axis=-1).astype(np.uint8)  # (N, 3, 3)
    alphas = np.clip(np.round(_sigmoid(splats.opacity_logits) * 255.0), 0, 255).astype(np.uint8)
    colours = np.clip(np.round(splats.sh0.astype(np.float64) * (SPZ_COLOR_SCALE * 255.0) + 127.5), 0, 255).astype(np.uint8)
    scales = np.clip(np.round((splats.log_scales.astype(np.float64) + 10.0) * 16.0), 0, 255).astype(np.uint8)
    q = _normalized(splats.quats.astype(np.float64))[:, [1, 2, 3, 0]]  # wxyz -> xyzw
    rotations = _pack_smallest_three(q)
    dim = _spz_dim(degree)
    coefficients = splats.shN.astype(np.float64)
    sh = np.empty((n, dim, 3), np.uint8)
    sh[:, :3] = _quantize_sh(coefficients[:, :3], SPZ_SH1_BITS)
    sh[:, 3:] = _quantize_sh(coefficients[:, 3:], SPZ_SH_REST_BITS)
    header = SPZ_LEGACY_HEADER.pack(SPZ_MAGIC, SPZ_WRITE_VERSION, n, degree, SPZ_FRACTIONAL_BITS, 0, 0)
    body = b"".join([header, positions.tobytes(), alphas.tobytes(), colours.tobytes(), scales.tobytes(),
                     rotations.tobytes(), sh.tobytes()])
    return gzip.compress(body, compresslevel=6, mtime=0)


def write_spz(path: str | os.PathLike, splats: SplatArrays) -> None:
    _write_atomically(Path(path), spz_bytes(splats, path))


# --- glTF 2.0 + KHR_gaussian_splatting ----------------------------------------------------------

KHR = "KHR_gaussian_splatting"
GLB_MAGIC, GLB_JSON, GLB_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _POINTS = 5126, 0
# Y_UP_FROM_BLENDER as the node's rotation quaternion (x y z w).
_BLENDER_TO_GLTF_XYZW = [-_SQRT1_2, 0.0, 0.0, _SQRT1_2]
_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
# componentType -> (numpy type, divisor when normalized, lower bound when normalized)
_COMPONENT_TYPES = {5120: ("i1", 127.0, -1.0), 5121: ("u1", 255.0, 0.0), 5122: ("<i2", 32767.0, -1.0),
                    5123: ("<u2", 65535.0, 0.0), 5125: ("<u4", None, None), 5126: ("<f4", None, None)}


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _sh_attribute(degree: int, n: int) -> str:
    return f"{KHR}:SH_DEGREE_{degree}_COEF_{n}"


def gltf_document(splats: SplatArrays, *, embed_uri: bool) -> tuple[dict, bytes]:
    """(glTF JSON, binary buffer). ``embed_uri``: the buffer as a base64 data URI (.gltf) or the GLB chunk."""
    n = len(splats)
    colour = np.clip(0.5 + SH_C0 * splats.sh0.astype(np.float64), 0.0, 1.0)
    opacity = _sigmoid(splats.opacity_logits)
    quats = _normalized(splats.quats.astype(np.float64))[:, [1, 2, 3, 0]]  # glTF order: x y z w
    attributes_data = [
        ("POSITION", "VEC3", splats.means),
        ("COLOR_0", "VEC4", np.concatenate([_srgb_to_linear(colour), opacity[:, None]], axis=1)),  # fallback
        (f"{KHR}:ROTATION", "VEC4", quats),
        (f"{KHR}:SCALE", "VEC3", np.exp(splats.log_scales.astype(np.float64))),
        (f"{KHR}:OPACITY", "SCALAR", opacity),
        (_sh_attribute(0, 0), "VEC3", splats.sh0),
    ]
    for degree in range(1, splats.sh_degree + 1):
        for index in range(2 * degree + 1):
            attributes_data.append((_sh_attribute(degree, index), "VEC3", splats.shN[:, degree * degree + index - 1]))
    blob, accessors, views, attributes = bytearray(), [], [], {}
    for name, kind, values in attributes_data:
        values = np.ascontiguousarray(values, "<f4").reshape(n, _COMPONENTS[kind])
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": values.nbytes})
        accessor = {"bufferView": len(views) - 1, "componentType": _FLOAT, "count": n, "type": kind}
        if name == "POSITION":  # required by the glTF spec
            accessor["min"], accessor["max"] = values.min(0).tolist(), values.max(0).tolist()
        accessors.append(accessor)
        attributes[name] = len(accessors) - 1
        blob += values.tobytes()
    buffer = {"byteLength": len(blob)}
    if embed_uri:
        buffer["uri"] = "data:application/octet-stream;base64," + base64.b64encode(bytes(blob)).decode("ascii")
    document = {
        "asset": {"version": "2.0", "generator": "Radiant Forge"},
        "extensionsUsed": [KHR],
        "scene": 0, "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "splats", "rotation": _BLENDER_TO_GLTF_XYZW}],
        "meshes": [{"primitives": [{"attributes": attributes, "mode": _POINTS, "extensions": {
            KHR: {"kernel": "ellipse", "colorSpace": "srgb_rec709_display",
                  "projection": "perspective", "sortingMethod": "cameraDistance"}}}]}],
        "buffers": [buffer], "bufferViews": views, "accessors": accessors,
    }
    return document, bytes(blob)


def write_gltf(path: str | os.PathLike, splats: SplatArrays) -> None:
    """``.glb`` (binary) or ``.gltf`` (JSON with the buffer embedded as a data URI), by suffix."""
    path = Path(path)
    binary = path.suffix.lower() == ".glb"
    document, blob = gltf_document(splats, embed_uri=not binary)
    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    if not binary:
        _write_atomically(path, text)
        return
    text += b" " * (-len(text) % 4)
    blob += b"\0" * (-len(blob) % 4)
    chunks = struct.pack("<II", len(text), GLB_JSON) + text + struct.pack("<II", len(blob), GLB_BIN) + blob
    _write_atomically(path, struct.pack("<III", GLB_MAGIC, 2, 12 + len(chunks)) + chunks)


def _parse_glb(path: Path, raw: bytes) -> tuple[dict, bytes | None]:
    if len(raw) < 20:
        raise SplatFormatError(path, f"GLB truncated: {len(raw)} bytes, a GLB header and JSON chunk need 20 at least")
    magic, version, length = struct.unpack_from("<III", raw)
    if magic != GLB_MAGIC or version != 2:
        raise SplatFormatError(path, f"not a glTF 2.0 binary: expected magic 'glTF' and version 2, got {raw[:4]!r} v{version}")
    if length > len(raw):
        raise SplatFormatError(path, f"GLB truncated: header says {length} bytes, file has {len(raw)}")
    json_length, json_type = struct.unpack_from("<II", raw, 12)
    if json_type != GLB_JSON or 20 + json_length > length:
        raise SplatFormatError(path, "GLB: expected a JSON chunk first, inside the file")
    document = _parse_json(path, raw[20:20 + json_length])
    offset = 20 + json_length
    binary = None
    if offset + 8 <= length:
        bin_length, bin_type = struct.unpack_from("<II", raw, offset)
        if bin_type == GLB_BIN:
            if offset + 8 + bin_length > length:
                raise SplatFormatError(path, f"GLB truncated: BIN chunk of {bin_length} bytes runs past the end")
            binary = raw[offset + 8:offset + 8 + bin_length]
    return document, binary


def _parse_json(path: Path, text: bytes) -> dict:
    try:
        document = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SplatFormatError(path, f"glTF JSON does not parse: {exc}") from None
    if not isinstance(document, dict):
        raise SplatFormatError(path, "glTF JSON: expected an object at the top level")
    return document


def _load_buffer(path: Path, document: dict, index: int, glb_binary: bytes | None) -> bytes:
    buffers = document.get("buffers") or []
    if not 0 <= index < len(buffers):
        raise SplatFormatError(path, f"glTF: buffer {index} does not exist")
    buffer = buffers[index]
    uri = buffer.get("uri")
    if uri is None:
        if glb_binary is None:
            raise SplatFormatError(path, f"glTF: buffer {index} has no uri and there is no GLB binary chunk")
        data = glb_binary
    elif uri.startswith("data:"):
        head, _, payload = uri.partition(",")
        if not head.endswith(";base64"):
            raise SplatFormatError(path, f"glTF: buffer {index}: expected a base64 data URI")
        data = base64.b64decode(payload)
    else:
        # Only a plain file name beside the .gltf: never a path that leaves its folder.
        if "/" in uri or "\\" in uri or uri in ("", ".", "..") or ":" in uri:
            raise SplatFormatError(path, f"glTF: buffer {index} uri {uri!r}: expected a file name beside the .gltf")
        data = _read_bytes(path.parent / uri)
    if len(data) < int(buffer.get("byteLength", 0)):
        raise SplatFormatError(path, f"glTF: buffer {index} has {len(data)} bytes, byteLength says {buffer.get('byteLength')}")
    return data


def _read_accessor(path: Path, document: dict, index: int, buffers: dict, glb_binary, name: str) -> np.ndarray:
    accessors = document.get("accessors") or []
    if not isinstance(index, int) or not 0 <= index < len(accessors):
        raise SplatFormatError(path, f"glTF attribute {name}: accessor {index} does not exist")
    accessor = accessors[index]
    if "sparse" in accessor or "bufferView" not in accessor:
        raise SplatFormatError(path, f"glTF attribute {name}: sparse or view-less accessors are not supported")
    kind, component = accessor.get("type"), accessor.get("componentType")
    if kind not in _COMPONENTS or component not in _COMPONENT_TYPES:
        raise SplatFormatError(path, f"glTF attribute {name}: unsupported accessor type {kind} / {component}")
    width = _COMPONENTS[kind]
    dtype, divisor, lower = _COMPONENT_TYPES[component]
    item = np.dtype(dtype).itemsize * width
    count = int(accessor.get("count", 0))
    view = (document.get("bufferViews") or [])[accessor["bufferView"]]
    buffer_index = view.get("buffer", 0)
    if buffer_index not in buffers:
        buffers[buffer_index] = _load_buffer(path, document, buffer_index, glb_binary)
    data = buffers[buffer_index]
    stride = int(view.get("byteStride") or item)
    start = int(view.get("byteOffset", 0)) + int(accessor.get("byteOffset", 0))
    needed = start + (stride * (count - 1) + item if count else 0)
    view_end = int(view.get("byteOffset", 0)) + int(view.get("byteLength", 0))
    if count < 0 or stride < item or needed > min(len(data), view_end):
        raise SplatFormatError(path, f"glTF attribute {name}: {count} items of {item} bytes (stride {stride}) "
                                     f"from byte {start} run past its buffer view")
    values = np.lib.stride_tricks.as_strided(np.frombuffer(data, np.uint8, needed - start, start),
                                             shape=(count, item), strides=(stride, 1))
    values = np.ascontiguousarray(values).view(dtype).reshape(count, width).astype(np.float64)
    if accessor.get("normalized") and divisor:
        values = np.maximum(values / divisor, lower)
    return values


def _node_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.array(node["matrix"], np.float64).reshape(4, 4).T  # column-major in glTF
    x, y, z, w = node.get("rotation", [0, 0, 0, 1])
    rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation * np.array(node.get("scale", [1, 1, 1]), np.float64)
    matrix[:3, 3] = node.get("translation", [0, 0, 0])
    return matrix


def _splat_primitives(document: dict) -> list[tuple[dict, np.ndarray]]:
    """[(primitive, node world matrix)] of every KHR_gaussian_splatting primitive in the default scene."""
    nodes = document.get("nodes") or []
    meshes = document.get("meshes") or []
    scenes = document.get("scenes") or []
    roots = scenes[document.get("scene", 0)].get("nodes", []) if scenes else list(range(len(nodes)))
    found, stack, visited = [], [(i, np.eye(4)) for i in roots], set()
    while stack:
        index, parent = stack.pop()
        if index in visited or not 0 <= index < len(nodes):
            continue
        visited.add(index)
        node = nodes[index]
        world = parent @ _node_matrix(node)
        if "mesh" in node and 0 <= node["mesh"] < len(meshes):
            for primitive in meshes[node["mesh"]].get("primitives", []):
                if KHR in (primitive.get("extensions") or {}):
                    found.append((primitive, world))
        stack.extend((child, world) for child in node.get("children", []))
    return found


def read_gltf(path: str | os.PathLike) -> SplatArrays:
    """Every KHR_gaussian_splatting primitive of the default scene, in Blender world space."""
    path = Path(path)
    try:
        return _read_gltf(path)
    except SplatFormatError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        # JSON of the wrong shape (a string where an index goes, an index out of range ...).
        raise SplatFormatError(path, f"malformed glTF: {type(exc).__name__}: {exc} (expected the glTF 2.0 "
                                     "structure of buffers, bufferViews, accessors, meshes and nodes)") from None


def _read_gltf(path: Path) -> SplatArrays:
    raw = _read_bytes(path)
    if raw[:4] == b"glTF":
        document, glb_binary = _parse_glb(path, raw)
    else:
        document, glb_binary = _parse_json(path, raw), None
    unsupported = [name for name in document.get("extensionsRequired") or [] if name != KHR]
    if unsupported:
        raise SplatFormatError(path, f"glTF requires extensions {', '.join(unsupported)}, which this reader does not "
                                     f"implement (it reads uncompressed {KHR} attributes)")
    primitives = _splat_primitives(document)
    if not primitives:
        raise SplatFormatError(path, f"no mesh primitive with the {KHR} extension in the scene (a plain glTF mesh "
                                     f"or point cloud is not a splat file)")
    buffers: dict[int, bytes] = {}
    parts = []
    for primitive, world in primitives:
        attributes = primitive.get("attributes", {})
        if primitive.get("mode", 4) != _POINTS:
            raise SplatFormatError(path, f"{KHR} primitive: expected mode 0 (POINTS), got {primitive.get('mode', 4)}")
        kernel = primitive["extensions"][KHR].get("kernel", "ellipse")
        if kernel != "ellipse":
            raise SplatFormatError(path, f"{KHR} kernel {kernel!r}: only 'ellipse' is supported")
        required = ["POSITION", f"{KHR}:ROTATION", f"{KHR}:SCALE", f"{KHR}:OPACITY", _sh_attribute(0, 0)]
        missing = [name for name in required if name not in attributes]
        if missing:
            raise SplatFormatError(path, f"{KHR} primitive lacks attributes {', '.join(missing)} "
                                         f"(expected {', '.join(required)})")

        def read(name):
            return _read_accessor(path, document, attributes[name], buffers, glb_binary, name)

        means = read("POSITION")
        n = len(means)
        columns = {name: read(name) for name in required[1:]}
        degree = 0
        while degree < MAX_SH_DEGREE and _sh_attribute(degree + 1, 0) in attributes:
            degree += 1
        shN = np.zeros((n, _spz_dim(degree), 3))
        for d in range(1, degree + 1):
            for index in range(2 * d + 1):
                name = _sh_attribute(d, index)
                if name not in attributes:
                    raise SplatFormatError(path, f"{KHR}: SH degree {d} is partly defined: {name} is missing")
                shN[:, d * d + index - 1] = read(name)
        for name, values in columns.items():
            if len(values) != n:
                raise SplatFormatError(path, f"{name} has {len(values)} items, POSITION has {n}")
        scales = columns[f"{KHR}:SCALE"]
        if np.any(scales < 0):
            raise SplatFormatError(path, f"{KHR}:SCALE: negative scales (expected linear, non-negative)")
        opacity = columns[f"{KHR}:OPACITY"][:, 0]
        splats = SplatArrays(
            means=means.astype(np.float32),
            log_scales=np.log(np.maximum(scales, 1e-30)).astype(np.float32),
            quats=columns[f"{KHR}:ROTATION"][:, [3, 0, 1, 2]].astype(np.float32),
            opacity_logits=_logit(opacity, 1e-7).astype(np.float32),
            sh0=columns[_sh_attribute(0, 0)].astype(np.float32),
            shN=shN.astype(np.float32),
        )
        to_blender = BLENDER_FROM_Y_UP @ world
        try:
            parts.append(transform_splats(splats, to_blender, what=f"{path}: node transform"))
        except ValueError as exc:
            raise SplatFormatError(path, str(exc)) from None
    if len({p.shN.shape[1] for p in parts}) > 1:
        raise SplatFormatError(path, f"{KHR} primitives with different SH degrees cannot be merged into one splat set")
    return SplatArrays(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(SplatArrays)))


# --- by suffix ----------------------------------------------------------------------------------

READERS = {".spz": read_spz, ".splat": read_splat, ".glb": read_gltf, ".gltf": read_gltf}
WRITERS = {".spz": write_spz, ".splat": write_splat, ".glb": write_gltf, ".gltf": write_gltf}


def read_splats(path: str | os.PathLike) -> SplatArrays:
    """Read a .spz, .splat, .glb or .gltf splat file (by suffix). PLY has its own readers on each side."""
    suffix = Path(path).suffix.lower()
    if suffix not in READERS:
        raise SplatFormatError(path, f"unknown splat format {suffix!r}; expected one of {', '.join(READERS)}")
    return READERS[suffix](path)


def write_splats(path: str | os.PathLike, splats: SplatArrays) -> None:
    suffix = Path(path).suffix.lower()
    if suffix not in WRITERS:
        raise SplatFormatError(path, f"unknown splat format {suffix!r}; expected one of {', '.join(WRITERS)}")
    WRITERS[suffix](path, splats)


def write_gaussian_ply(path: str | os.PathLike, splats: SplatArrays) -> None:
    """The 3DGS PLY layout (x y z nx ny nz f_dc_* f_rest_* opacity scale_* rot_*), float32 little-endian."""
    columns = to_ply_columns(splats)
    n = len(splats)
    names = ["x", "y", "z", "nx", "ny", "nz", *[k for k in columns if k not in ("x", "y", "z")]]
    columns.update({"nx": np.zeros(n, np.float32), "ny": np.zeros(n, np.float32), "nz": np.zeros(n, np.float32)})
    header = "".join(["ply\nformat binary_little_endian 1.0\n", f"element vertex {n}\n",
                      *(f"property float {name}\n" for name in names), "end_header\n"]).encode("ascii")
    table = np.stack([columns[name] for name in names], axis=1).astype("<f4")
    _write_atomically(Path(path), header + table.tobytes())
