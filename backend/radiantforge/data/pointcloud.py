"""Point clouds in PLY files: the initial points of a Gaussian training (``points3d.ply``).

The module also holds the project's small PLY reader, :func:`read_ply_vertices`, which the
Gaussian PLY loader (``radiantforge.gaussians.ply``) builds on. It reads what other tools write:

- ``ascii 1.0``, ``binary_little_endian 1.0`` and ``binary_big_endian 1.0`` bodies;
- every PLY scalar type (``char uchar short ushort int uint float double`` and their
  ``int8 ... float64`` aliases);
- any number of elements in any order, including list properties (mesh ``face`` elements):
  only the ``vertex`` element's scalar properties are returned, the rest is skipped.

Every problem with a file is raised as :class:`~radiantforge.errors.InputError` naming the file
and the part of it that is wrong (header line, element or property).
"""

from __future__ import annotations

import logging
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from radiantforge.errors import InputError, quoted

log = logging.getLogger(__name__)

# PLY scalar type names -> numpy type codes without byte order.
PLY_SCALAR_TYPES = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}  # fmt: skip
PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}

# A header longer than this is not a PLY header (guards against reading a whole foreign file).
MAX_HEADER_BYTES = 1 << 20
END_HEADER_LINE = re.compile(rb"^end_header[ \t]*(\r?\n|\Z)", re.MULTILINE)

# Colour of points in files that carry none: mid grey, so the initial Gaussians start neutral.
DEFAULT_POINT_GREY = 0.5

# Vertex colour property names, in order of preference (the first complete triple found wins).
COLOUR_PROPERTY_TRIPLES = (
    ("red", "green", "blue"),
    ("r", "g", "b"),
    ("diffuse_red", "diffuse_green", "diffuse_blue"),
)
UCHAR_MAX = 255.0


@dataclass
class PlyProperty:
    name: str
    type_code: str  # numpy type code without byte order: "f4", "u1", ...
    list_count_type_code: str | None = None  # set for list properties


@dataclass
class PlyElement:
    name: str
    count: int
    properties: list[PlyProperty]

    @property
    def has_lists(self) -> bool:
        return any(p.list_count_type_code for p in self.properties)


@dataclass
class PlyHeader:
    format: str  # "ascii", "binary_little_endian" or "binary_big_endian"
    elements: list[PlyElement]
    comments: list[str]
    body_offset: int  # byte offset of the first byte after "end_header\n"


def read_ply_header(data: bytes, path: str | Path) -> PlyHeader:
    """Parse the header at the start of ``data`` (a whole PLY file's bytes)."""
    if not re.match(rb"ply[ \t]*\r?\n", data):
        raise InputError("not a PLY file (its first line is not 'ply')", file=path)
    end_line = END_HEADER_LINE.search(data, 0, MAX_HEADER_BYTES)
    if end_line is None:
        raise InputError("PLY header has no 'end_header' line", file=path, field="header")
    body_offset = end_line.end()
    try:
        header_text = data[: end_line.start()].decode("ascii")
    except UnicodeDecodeError as exc:
        raise InputError(f"PLY header is not ASCII text (byte {exc.start})", file=path, field="header") from None

    fmt = None
    elements: list[PlyElement] = []
    comments: list[str] = []
    for line_number, raw_line in enumerate(header_text.splitlines()[1:], start=2):
        words = raw_line.split()
        where = f"header line {line_number}"
        if not words:
            continue
        keyword = words[0]
        if keyword in ("comment", "obj_info"):
            comments.append(raw_line.strip()[len(keyword) :].strip())
        elif keyword == "format":
            if len(words) != 3 or words[1] not in PLY_FORMATS:
                raise InputError(
                    f"unknown format {quoted(raw_line.strip())}; expected ascii, binary_little_endian or "
                    "binary_big_endian",
                    file=path,
                    field=where,
                )
            fmt = words[1]
        elif keyword == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise InputError(f"malformed element line {quoted(raw_line.strip())}", file=path, field=where)
            elements.append(PlyElement(words[1], int(words[2]), []))
        elif keyword == "property":
            if not elements:
                raise InputError("property line before any element line", file=path, field=where)
            elements[-1].properties.append(_parse_property_line(words, raw_line, path, where))
        else:
            raise InputError(f"unknown header keyword {quoted(keyword)}", file=path, field=where)
    if fmt is None:
        raise InputError("PLY header has no 'format' line", file=path, field="header")
    return PlyHeader(fmt, elements, comments, body_offset)


def _parse_property_line(words: list[str], raw_line: str, path, where: str) -> PlyProperty:
    if len(words) == 3 and words[1] in PLY_SCALAR_TYPES:
        return PlyProperty(words[2], PLY_SCALAR_TYPES[words[1]])
    if (
        len(words) == 5
        and words[1] == "list"
        and words[2] in PLY_SCALAR_TYPES
        and words[3] in PLY_SCALAR_TYPES
    ):
        return PlyProperty(words[4], PLY_SCALAR_TYPES[words[3]], PLY_SCALAR_TYPES[words[2]])
    raise InputError(
        f"malformed property line {quoted(raw_line.strip())}; expected 'property TYPE NAME' or "
        f"'property list COUNT_TYPE ITEM_TYPE NAME' with TYPE one of {sorted(set(PLY_SCALAR_TYPES))}",
        file=path,
        field=where,
    )


def read_ply_vertices(path: str | Path) -> tuple[dict[str, np.ndarray], PlyHeader]:
    """The scalar properties of the ``vertex`` element of a PLY file.

    Returns ``(columns, header)``: ``columns`` maps each scalar vertex property name to a
    (count,) array of its declared type (native byte order), in header order.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", file=path) from None
    header = read_ply_header(data, path)
    if not any(e.name == "vertex" for e in header.elements):
        names = ", ".join(e.name for e in header.elements) or "none"
        raise InputError(f"PLY file has no 'vertex' element (elements: {names})", file=path, field="vertex")
    if header.format == "ascii":
        return _read_ascii_vertices(data, header, path), header
    return _read_binary_vertices(data, header, path), header


def _read_binary_vertices(data: bytes, header: PlyHeader, path: Path) -> dict[str, np.ndarray]:
    byte_order = PLY_FORMATS[header.format]
    offset = header.body_offset
    for element in header.elements:
        if element.has_lists:
            if element.name == "vertex":
                columns, offset = _walk_binary_list_element(data, offset, element, byte_order, path)
                return columns
            _, offset = _walk_binary_list_element(data, offset, element, byte_order, path)
            continue
        row_dtype = np.dtype([(p.name, byte_order + p.type_code) for p in element.properties])
        needed = row_dtype.itemsize * element.count
        if offset + needed > len(data):
            raise InputError(
                f"file is truncated: element {quoted(element.name)} needs {needed} bytes "
                f"({element.count} rows of {row_dtype.itemsize}) but only {len(data) - offset} remain",
                file=path,
                field=element.name,
            )
        if element.name == "vertex":
            rows = np.frombuffer(data, dtype=row_dtype, count=element.count, offset=offset)
            return {p.name: rows[p.name].astype(p.type_code) for p in element.properties}
        offset += needed
    raise AssertionError("unreachable: the vertex element was checked to exist")


def _walk_binary_list_element(data: bytes, offset: int, element: PlyElement, byte_order: str, path: Path):
    """Read an element with list properties row by row (slow; only rare files need it)."""
    scalar_columns: dict[str, list] = {p.name: [] for p in element.properties if not p.list_count_type_code}
    try:
        for _ in range(element.count):
            for prop in element.properties:
                if prop.list_count_type_code:
                    count_fmt = byte_order + np.dtype(prop.list_count_type_code).char
                    (count,) = struct.unpack_from(count_fmt, data, offset)
                    offset += struct.calcsize(count_fmt) + int(count) * np.dtype(prop.type_code).itemsize
                else:
                    item_fmt = byte_order + np.dtype(prop.type_code).char
                    (value,) = struct.unpack_from(item_fmt, data, offset)
                    scalar_columns[prop.name].append(value)
                    offset += struct.calcsize(item_fmt)
    except struct.error:
        raise InputError(f"file is truncated inside element {quoted(element.name)}", file=path, field=element.name) from None
    if offset > len(data):
        raise InputError(f"file is truncated inside element {quoted(element.name)}", file=path, field=element.name)
    columns = {
        p.name: np.asarray(scalar_columns[p.name], dtype=p.type_code)
        for p in element.properties
        if not p.list_count_type_code
    }
    return columns, offset


def _read_ascii_vertices(data: bytes, header: PlyHeader, path: Path) -> dict[str, np.ndarray]:
    # Tokens, not lines: the PLY spec does not require one row per line.
    tokens = data[header.body_offset :].split()
    position = 0
    for element in header.elements:
        if element.has_lists:
            columns, position = _walk_ascii_list_element(tokens, position, element, path)
            if element.name == "vertex":
                return columns
            continue
        n_props = len(element.properties)
        needed = n_props * element.count
        if position + needed > len(tokens):
            raise InputError(
                f"file ends early: element {quoted(element.name)} needs {element.count} rows of {n_props} "
                f"values but only {len(tokens) - position} values remain",
                file=path,
                field=element.name,
            )
        if element.name == "vertex":
            block = tokens[position : position + needed]
            try:
                values = np.array(block, dtype=np.bytes_).astype(np.float64).reshape(element.count, n_props)
            except ValueError:
                bad = next(t for t in block if not _is_number(t))
                raise InputError(f"not a number: {quoted(bad[:40])}", file=path, field="vertex") from None
            return {p.name: values[:, i].astype(p.type_code) for i, p in enumerate(element.properties)}
        position += needed
    raise AssertionError("unreachable: the vertex element was checked to exist")


def _walk_ascii_list_element(tokens: list[bytes], position: int, element: PlyElement, path: Path):
    scalar_columns: dict[str, list] = {p.name: [] for p in element.properties if not p.list_count_type_code}
    try:
        for _ in range(element.count):
            for prop in element.properties:
                if prop.list_count_type_code:
                    position += 1 + int(tokens[position])
                else:
                    scalar_columns[prop.name].append(float(tokens[position]))
                    position += 1
    except IndexError:
        raise InputError(f"file ends inside element {quoted(element.name)}", file=path, field=element.name) from None
    except ValueError:
        raise InputError(f"not a number: {quoted(tokens[position][:40])}", file=path, field=element.name) from None
    if position > len(tokens):
        raise InputError(f"file ends inside element {quoted(element.name)}", file=path, field=element.name)
    columns = {
        p.name: np.asarray(scalar_columns[p.name], dtype=np.float64).astype(p.type_code)
        for p in element.properties
        if not p.list_count_type_code
    }
    return columns, position


def _is_number(token: bytes) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def ply_header_bytes(n_vertices: int, properties: list[tuple[str, str]], comments: list[str] = ()) -> bytes:
    """A binary little-endian PLY header with one vertex element: properties as (PLY type, name)."""
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {c}" for c in comments]
    lines.append(f"element vertex {n_vertices}")
    lines += [f"property {ply_type} {name}" for ply_type, name in properties]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def write_file_atomically(path: str | Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary file beside ``path``, then rename it over ``path``.

    A crash or an error part-way never leaves a half-written file under the final name.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@dataclass
class PointCloud:
    """P points. xyz: (P, 3) float32 world positions; rgb: (P, 3) float32 colours in [0, 1].

    ``notes`` says what the reader had to assume (for example: no colours, grey used), for
    callers to pass on as warnings.
    """

    xyz: torch.Tensor
    rgb: torch.Tensor
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.xyz.shape[0]


def check_points_ply(path: str | Path) -> PlyHeader:
    """Read only the header of a point-cloud PLY and check it has vertices with x, y, z (nothing
    else is read: the service checks uploads with it). Raises InputError like :func:`read_points_ply`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_HEADER_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", file=path) from None
    header = read_ply_header(data, path)
    vertex = next((e for e in header.elements if e.name == "vertex"), None)
    if vertex is None:
        names = ", ".join(e.name for e in header.elements) or "none"
        raise InputError(f"PLY file has no 'vertex' element (elements: {names})", file=path, field="vertex")
    names = [p.name for p in vertex.properties if p.list_count_type_code is None]
    for axis in ("x", "y", "z"):
        if axis not in names:
            raise InputError(f"vertex element has no property {quoted(axis)} (properties: {', '.join(names) or 'none'})",
                             file=path, field=axis)
    if vertex.count == 0:
        raise InputError("the file holds no vertices", file=path, field="vertex")
    return header


def read_points_ply(path: str | Path) -> PointCloud:
    """Read the vertices of a PLY file as a coloured point cloud.

    Accepts ASCII and binary (either byte order) files; xyz of any numeric type; colours as
    ``red green blue`` (or ``r g b`` / ``diffuse_*``) in integer types (scaled by the type's
    maximum, e.g. uchar / 255) or floats in [0, 1]. Faces and other elements are ignored.
    Without colours every point is grey (0.5) and a note says so.
    """
    path = Path(path)
    columns, _ = read_ply_vertices(path)
    for axis in ("x", "y", "z"):
        if axis not in columns:
            raise InputError(
                f"vertex element has no property {quoted(axis)} (properties: {', '.join(columns) or 'none'})",
                file=path,
                field=axis,
            )
    count = len(columns["x"])
    if count == 0:
        raise InputError("the file holds no vertices", file=path, field="vertex")
    xyz = np.stack([columns[a].astype(np.float64) for a in ("x", "y", "z")], axis=-1)
    for i, axis in enumerate("xyz"):
        bad = ~np.isfinite(xyz[:, i])
        if bad.any():
            raise InputError(
                f"{int(bad.sum())} vertices hold NaN or infinite values (first: vertex {int(np.argmax(bad))})",
                file=path,
                field=axis,
            )

    notes: list[str] = []
    rgb = _read_vertex_colours(columns, path, notes)
    if rgb is None:
        notes.append(f"{path}: no vertex colours (red/green/blue); points are grey ({DEFAULT_POINT_GREY})")
        rgb = np.full((count, 3), DEFAULT_POINT_GREY)
    for note in notes:
        log.warning(note)
    return PointCloud(
        torch.from_numpy(xyz.astype(np.float32)),
        torch.from_numpy(rgb.astype(np.float32)),
        notes,
    )


def _read_vertex_colours(columns: dict[str, np.ndarray], path: Path, notes: list[str]) -> np.ndarray | None:
    for names in COLOUR_PROPERTY_TRIPLES:
        if not all(n in columns for n in names):
            continue
        channels = []
        for name in names:
            values = columns[name]
            if np.issubdtype(values.dtype, np.integer):
                info = np.iinfo(values.dtype)
                # Signed types keep their non-negative range; negative colours are meaningless.
                channels.append(np.clip(values.astype(np.float64), 0, info.max) / info.max)
            else:
                values = values.astype(np.float64)
                if not np.isfinite(values).all():
                    raise InputError("colour holds NaN or infinite values", file=path, field=name)
                channels.append(values)
        rgb = np.stack(channels, axis=-1)
        if np.issubdtype(columns[names[0]].dtype, np.floating) and rgb.max() > 1.0:
            if rgb.max() <= UCHAR_MAX:
                notes.append(f"{path}: float colours above 1 were read as 0..255 values")
                rgb = rgb / UCHAR_MAX
            else:
                raise InputError(
                    f"float colours must lie in [0, 1] (or 0..255); found {rgb.max():g}", file=path, field=names[0]
                )
        return np.clip(rgb, 0.0, 1.0)
    return None


def write_points_ply(path: str | Path, xyz, rgb) -> None:
    """Write a binary little-endian PLY point cloud (a vertex element only, no faces).

    xyz: (P, 3) positions, written as float; rgb: (P, 3) colours in [0, 1], written as
    uchar ``red green blue`` (rounded to the nearest of 256 levels). Atomic: written to a
    temporary file and renamed.
    """
    xyz_np = np.asarray(torch.as_tensor(xyz).detach().cpu(), dtype=np.float32)
    rgb_np = np.asarray(torch.as_tensor(rgb).detach().cpu(), dtype=np.float64)
    if xyz_np.ndim != 2 or xyz_np.shape[1] != 3:
        raise ValueError(f"xyz must have shape (P, 3), got {tuple(xyz_np.shape)}")
    if rgb_np.shape != xyz_np.shape:
        raise ValueError(f"rgb must have shape {tuple(xyz_np.shape)} like xyz, got {tuple(rgb_np.shape)}")
    rows = np.empty(len(xyz_np), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                        ("red", "u1"), ("green", "u1"), ("blue", "u1")])  # fmt: skip
    for i, axis in enumerate("xyz"):
        rows[axis] = xyz_np[:, i]
    colour_levels = np.round(np.clip(rgb_np, 0.0, 1.0) * UCHAR_MAX).astype(np.uint8)
    for i, channel in enumerate(("red", "green", "blue")):
        rows[channel] = colour_levels[:, i]
    header = ply_header_bytes(
        len(rows),
        [("float", "x"), ("float", "y"), ("float", "z"), ("uchar", "red"), ("uchar", "green"), ("uchar", "blue")],
    )
    write_file_atomically(path, header + rows.tobytes())
