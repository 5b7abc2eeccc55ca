"""PLY files on numpy alone (Blender ships numpy, not plyfile): a reader for any PLY, a point-cloud writer.

:func:`read_ply` reads every element of a PLY file — binary little-endian, binary big-endian or ASCII — into
numpy arrays. Elements made only of scalar properties (every Gaussian-splat file, every point
cloud) are read in one `np.frombuffer` call; elements with list properties (mesh faces) are read
row by row, which is slow but only needed to step over them.

    ply = read_ply("point_cloud.ply")
    vertex = ply.elements["vertex"]          # {property name: (N,) array}
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)   # (N, 3)

:func:`write_points_ply` writes the ``points3d.ply`` of a capture.

The backend has its own reader (``radiantforge.data.pointcloud``) that the add-on cannot import:
it lives with torch in the service's environment, which Blender's Python does not have.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

# PLY scalar type names (both the classic and the sized spellings) -> numpy type codes.
_PLY_SCALAR_TYPES = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
# A header longer than this is not a PLY header (guards against reading a whole binary file).
_MAX_HEADER_BYTES = 1 << 20


class PlyError(ValueError):
    """A file that is not a PLY this reader understands; the message names the file and the problem."""


@dataclasses.dataclass
class PlyProperty:
    name: str
    dtype: str  # numpy type code without byte order, e.g. "f4"
    list_count_dtype: str | None = None  # set for list properties: type of the count


@dataclasses.dataclass
class PlyElement:
    name: str
    count: int
    properties: list[PlyProperty]

    @property
    def has_lists(self) -> bool:
        return any(p.list_count_dtype is not None for p in self.properties)


@dataclasses.dataclass
class PlyData:
    format: str  # "ascii" | "binary_little_endian" | "binary_big_endian"
    elements: dict[str, dict[str, np.ndarray]]  # element -> property -> (count,) array (object array for lists)
    header: list[PlyElement]
    comments: list[str]

    def property_names(self, element: str = "vertex") -> list[str]:
        """Property names of ``element`` in file order."""
        for decl in self.header:
            if decl.name == element:
                return [p.name for p in decl.properties]
        raise KeyError(element)


def _parse_header(path: Path, raw: bytes) -> tuple[str, list[PlyElement], list[str], int]:
    end_marker = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end_marker < 0:
        raise PlyError(f"{path}: not a PLY file (expected 'ply' on the first line and an 'end_header' line)")
    # The data starts after the end_header line's newline (\n or \r\n).
    newline = raw.find(b"\n", end_marker)
    if newline < 0:
        raise PlyError(f"{path}: header has no newline after 'end_header'")
    data_start = newline + 1
    lines = raw[:end_marker].decode("ascii", errors="replace").splitlines()[1:]
    file_format = None
    elements: list[PlyElement] = []
    comments: list[str] = []
    for line_number, line in enumerate(lines, start=2):
        words = line.split()
        if not words:
            continue
        keyword = words[0]
        if keyword in ("comment", "obj_info"):
            comments.append(line.partition(" ")[2])
        elif keyword == "format":
            if len(words) < 2 or words[1] not in _FORMATS:
                raise PlyError(f"{path}: header line {line_number}: unknown format {line!r}; expected one of {', '.join(_FORMATS)}")
            file_format = words[1]
        elif keyword == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise PlyError(f"{path}: header line {line_number}: expected 'element NAME COUNT', got {line!r}")
            elements.append(PlyElement(words[1], int(words[2]), []))
        elif keyword == "property":
            if not elements:
                raise PlyError(f"{path}: header line {line_number}: property before any element")
            if len(words) == 5 and words[1] == "list":
                count_type, item_type, name = words[2], words[3], words[4]
                if count_type not in _PLY_SCALAR_TYPES or item_type not in _PLY_SCALAR_TYPES:
                    raise PlyError(f"{path}: header line {line_number}: unknown list types in {line!r}")
                elements[-1].properties.append(PlyProperty(name, _PLY_SCALAR_TYPES[item_type], _PLY_SCALAR_TYPES[count_type]))
            elif len(words) == 3 and words[1] in _PLY_SCALAR_TYPES:
                elements[-1].properties.append(PlyProperty(words[2], _PLY_SCALAR_TYPES[words[1]]))
            else:
                raise PlyError(f"{path}: header line {line_number}: expected 'property TYPE NAME' with a known type, got {line!r}")
        else:
            raise PlyError(f"{path}: header line {line_number}: unknown header keyword {keyword!r}")
    if file_format is None:
        raise PlyError(f"{path}: header has no 'format' line")
    return file_format, elements, comments, data_start


def _read_binary_element(path: Path, buffer: memoryview, offset: int, element: PlyElement, byte_order: str):
    """Returns ({property: array}, new offset)."""
    if not element.has_lists:
        dtype = np.dtype([(p.name, byte_order + p.dtype) for p in element.properties])
        needed = dtype.itemsize * element.count
        if offset + needed > len(buffer):
            raise PlyError(f"{path}: element {element.name!r}: file ends early (needs {needed} bytes for "
                           f"{element.count} rows, {len(buffer) - offset} left)")
        table = np.frombuffer(buffer, dtype=dtype, count=element.count, offset=offset)
        # Native byte order, own memory: callers hand these to Blender's foreach_set.
        columns = {p.name: table[p.name].astype(p.dtype) for p in element.properties}
        return columns, offset + needed
    columns: dict[str, list] = {p.name: [] for p in element.properties}
    for _ in range(element.count):
        for prop in element.properties:
            if prop.list_count_dtype is None:
                item = np.dtype(byte_order + prop.dtype)
                columns[prop.name].append(np.frombuffer(buffer, item, 1, offset)[0])
                offset += item.itemsize
            else:
                count_type = np.dtype(byte_order + prop.list_count_dtype)
                (count,) = np.frombuffer(buffer, count_type, 1, offset)
                offset += count_type.itemsize
                item = np.dtype(byte_order + prop.dtype)
                columns[prop.name].append(np.frombuffer(buffer, item, int(count), offset).astype(prop.dtype))
                offset += item.itemsize * int(count)
    return _finish_columns(element, columns), offset


def _finish_columns(element: PlyElement, columns: dict[str, list]) -> dict[str, np.ndarray]:
    result = {}
    for prop in element.properties:
        values = columns[prop.name]
        if prop.list_count_dtype is None:
            result[prop.name] = np.asarray(values, dtype=prop.dtype)
        else:
            array = np.empty(len(values), dtype=object)
            array[:] = values
            result[prop.name] = array
    return result


def _read_ascii_elements(path: Path, text: str, elements: list[PlyElement]) -> dict[str, dict[str, np.ndarray]]:
    rows = iter(text.splitlines())
    out = {}
    for element in elements:
        if not element.has_lists:
            lines = []
            for _ in range(element.count):
                line = next(rows, None)
                if line is None:
                    raise PlyError(f"{path}: element {element.name!r}: file ends early (expected {element.count} rows)")
                lines.append(line)
            width = len(element.properties)
            values = np.array(" ".join(lines).split(), dtype=np.float64)
            if values.size != width * element.count:
                raise PlyError(f"{path}: element {element.name!r}: expected {width} values on each of "
                               f"{element.count} rows, found {values.size} values in all")
            table = values.reshape(element.count, width)
            out[element.name] = {p.name: table[:, i].astype(p.dtype) for i, p in enumerate(element.properties)}
            continue
        columns: dict[str, list] = {p.name: [] for p in element.properties}
        for row_index in range(element.count):
            line = next(rows, None)
            if line is None:
                raise PlyError(f"{path}: element {element.name!r}: file ends early at row {row_index}")
            tokens = line.split()
            position = 0
            try:
                for prop in element.properties:
                    if prop.list_count_dtype is None:
                        columns[prop.name].append(float(tokens[position]))
                        position += 1
                    else:
                        count = int(tokens[position])
                        columns[prop.name].append(np.array(tokens[position + 1: position + 1 + count], dtype=np.float64).astype(prop.dtype))
                        position += 1 + count
            except (IndexError, ValueError):
                raise PlyError(f"{path}: element {element.name!r}, row {row_index}: cannot parse {line!r}") from None
        out[element.name] = _finish_columns(element, columns)
    return out


def read_ply(path: str | os.PathLike) -> PlyData:
    """Read every element of the PLY file at ``path``. Raises PlyError naming the file on bad input."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PlyError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    file_format, elements, comments, data_start = _parse_header(path, raw[:_MAX_HEADER_BYTES])
    if file_format == "ascii":
        text = raw[data_start:].decode("ascii", errors="replace")
        columns = _read_ascii_elements(path, text, elements)
    else:
        byte_order = _FORMATS[file_format]
        buffer = memoryview(raw)
        offset = data_start
        columns = {}
        for element in elements:
            columns[element.name], offset = _read_binary_element(path, buffer, offset, element, byte_order)
    return PlyData(format=file_format, elements=columns, header=elements, comments=comments)


def write_points_ply(path: str, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Binary little-endian PLY point cloud: x y z float32, red green blue uint8; no faces.

    xyz: (N, 3), rgb: (N, 3) uint8. Written to a temporary name, then renamed.
    """
    xyz = np.asarray(xyz)
    rgb = np.asarray(rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise ValueError(f"write_points_ply: expected xyz (N, 3) and rgb (N, 3), got {xyz.shape} and {rgb.shape}")
    record = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vertices = np.empty(len(xyz), dtype=record)
    vertices["x"], vertices["y"], vertices["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    vertices["red"], vertices["green"], vertices["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by Radiant Forge (Blender capture)\n"
        f"element vertex {len(xyz)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    temporary = f"{path}.partial"
    with open(temporary, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(vertices.tobytes())
    os.replace(temporary, path)
