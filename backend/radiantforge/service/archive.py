"""Unpack an uploaded job archive (a zip of a job folder) without writing outside the target folder.

Every entry is checked before anything is written: no absolute paths, no drive letters or
stream names, no ``..``, no symbolic links or device files, no encrypted or duplicate entries,
and the unpacked size is counted as it is written (a small zip can claim to be small and
inflate to terabytes).
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import InputError
from ..jobs import JOB_FILE

ARCHIVE_FIELD = "archive"
# A job folder holds a dataset (images, cameras, points): thousands of files, not millions.
MAX_ARCHIVE_ENTRIES = 100_000
_COPY_CHUNK_BYTES = 1 << 20
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_ZIP_ENCRYPTED_FLAG = 0x1
# zip entries written on Unix keep st_mode in the high 16 bits of external_attr
_UNIX_CREATOR = 3


def _entry_error(name: str, problem: str) -> InputError:
    return InputError(f"entry {name!r}: {problem}", field=ARCHIVE_FIELD)


def safe_entry_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The path components of a zip entry, or an InputError when the entry could leave its folder."""
    name = info.filename
    if "\x00" in name or any(ord(ch) < 32 for ch in name):
        raise _entry_error(name, "control characters in the name")
    # Zip names use '/', but some Windows tools write '\'; treat both as separators so that
    # '..\\x' is caught as well.
    normalized = name.replace("\\", "/")
    if normalized.startswith("/"):
        raise _entry_error(name, "absolute paths are not allowed; paths must be relative to the job folder")
    if _DRIVE_LETTER.match(normalized) or ":" in normalized:
        raise _entry_error(name, "drive letters and ':' are not allowed; paths must be relative to the job folder")
    parts = tuple(p for p in PurePosixPath(normalized).parts if p not in ("", "."))
    if ".." in parts:
        raise _entry_error(name, "'..' is not allowed; paths must stay inside the job folder")
    if info.flag_bits & _ZIP_ENCRYPTED_FLAG:
        raise _entry_error(name, "encrypted entries are not supported")
    if info.create_system == _UNIX_CREATOR:
        file_type = stat.S_IFMT(info.external_attr >> 16)
        if file_type == stat.S_IFLNK:
            raise _entry_error(name, "symbolic links are not allowed")
        # 0: no type recorded (Python's writestr, many tools) - a plain file or folder.
        if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _entry_error(name, "only plain files and folders are allowed (no devices, pipes or sockets)")
    return parts


def extract_job_archive(archive: str | Path, dest: str | Path, max_total_bytes: int) -> Path:
    """Unpack ``archive`` into the new folder ``dest``; returns ``dest``.

    The archive holds a job folder (``job.json``, ``data/`` ...) at its root, or inside one
    top-level folder (what zipping a folder usually gives), which is then unwrapped.
    Raises InputError (field ``archive``) naming the first bad entry; ``dest`` may then hold a
    partial extraction, which the caller removes.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"not a zip archive ({exc}); upload a zip of a job folder (job.json + data/)", field=ARCHIVE_FIELD) from None
    with zf:
        infos = zf.infolist()
        if not infos:
            raise InputError("the zip archive is empty; expected a job folder (job.json + data/)", field=ARCHIVE_FIELD)
        if len(infos) > MAX_ARCHIVE_ENTRIES:
            raise InputError(f"{len(infos)} entries is more than the {MAX_ARCHIVE_ENTRIES} allowed", field=ARCHIVE_FIELD)
        entries = []
        seen = set()
        for info in infos:
            parts = safe_entry_parts(info)
            if not parts:
                continue
            if parts in seen:
                raise _entry_error(info.filename, "appears more than once")
            seen.add(parts)
            entries.append((info, parts))
        strip = _wrapper_folder_depth(entries)
        declared = sum(info.file_size for info, _ in entries)
        if declared > max_total_bytes:
            raise InputError(f"unpacks to {declared} bytes, more than the {max_total_bytes} allowed", field=ARCHIVE_FIELD)
        dest.mkdir(parents=True, exist_ok=False)
        dest_resolved = dest.resolve()
        written = 0
        for info, parts in entries:
            parts = parts[strip:]
            if not parts:
                continue
            target = dest.joinpath(*parts)
            # Belt and braces: the checks above already rule this out.
            if not target.resolve().is_relative_to(dest_resolved):
                raise _entry_error(info.filename, "leaves the job folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "xb") as out:
                    while chunk := src.read(_COPY_CHUNK_BYTES):
                        written += len(chunk)
                        if written > max_total_bytes:
                            raise InputError(f"unpacks to more than the {max_total_bytes} bytes allowed", field=ARCHIVE_FIELD)
                        out.write(chunk)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
                raise _entry_error(info.filename, f"cannot be read ({exc})") from None
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                raise _entry_error(info.filename, "clashes with another entry of the same name") from None
    return dest


def _wrapper_folder_depth(entries: list[tuple[zipfile.ZipInfo, tuple[str, ...]]]) -> int:
    """1 when job.json sits in a single top-level folder holding everything, else 0."""
    if any(parts == (JOB_FILE,) for _, parts in entries):
        return 0
    tops = {parts[0] for _, parts in entries}
    if len(tops) == 1:
        top = next(iter(tops))
        if any(parts == (top, JOB_FILE) for _, parts in entries):
            return 1
    return 0


def remove_tree(path: str | Path) -> None:
    """Remove a folder the service created (never one the user made)."""
    shutil.rmtree(path, ignore_errors=True)
