"""Unpack an uploaded job archive (a zip of a job folder) without writing outside the target folder.

Every entry is checked before anything is written:

- what an upload may hold: ``job.json`` and ``data/``, nothing else. Checkpoints, results, events
  and cancel requests are written by the backend, never taken from a client (a checkpoint is a
  file the job loads: taking one from a client would let it choose what the job resumes from);
- where entries go: no absolute paths, no drive letters or stream names, no ``..``, no symbolic
  links or device files, no encrypted or duplicate entries, no over-long names;
- how much is written: a cap on the total and on each file, and on how far an entry inflates
  (a zip bomb claims to be small and inflates to terabytes), all checked on the sizes the archive
  declares before the first byte is written, and counted again as the bytes are written.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import InputError, quoted, shorten
from ..jobs import DATA_DIR, JOB_FILE

ARCHIVE_FIELD = "archive"
# A job folder holds a dataset (images, cameras, points): thousands of files, not millions.
MAX_ARCHIVE_ENTRIES = 100_000
# What an upload may hold (after an optional wrapper folder): the job file and its inputs.
UPLOAD_ENTRIES = (JOB_FILE, DATA_DIR)
# Names longer than file systems take (255 bytes a component on ext4, APFS and NTFS).
MAX_NAME_COMPONENT_BYTES = 255
MAX_ENTRY_NAME_BYTES = 1024
# Deflate reaches about 1000:1 only on data with almost no information in it. Job inputs are PNG
# and JPEG images (already compressed: about 1:1), JSON and PLY files (3-10:1); an entry that
# inflates more than this is a bomb. Small entries are exempt: a 100 KB file of zeros harms nobody.
MAX_COMPRESSION_RATIO = 100
RATIO_CHECK_MIN_BYTES = 1 << 20
_COPY_CHUNK_BYTES = 1 << 20
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
_ZIP_ENCRYPTED_FLAG = 0x1
# zip entries written on Unix keep st_mode in the high 16 bits of external_attr
_UNIX_CREATOR = 3


def _entry_error(name: str, problem: str) -> InputError:
    return InputError(f"entry {quoted(name)}: {problem}", field=ARCHIVE_FIELD)


def safe_entry_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The path components of a zip entry, or an InputError when the entry could leave its folder."""
    name = info.filename
    if "\x00" in name or any(ord(ch) < 32 for ch in name):
        raise _entry_error(name, "control characters in the name")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_ENTRY_NAME_BYTES:
        raise _entry_error(name, f"the name is longer than {MAX_ENTRY_NAME_BYTES} bytes")
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
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_COMPONENT_BYTES for p in parts):
        raise _entry_error(name, f"a file or folder name is longer than {MAX_NAME_COMPONENT_BYTES} bytes")
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


def extract_job_archive(archive: str | Path, dest: str | Path, max_total_bytes: int, max_file_bytes: int | None = None) -> Path:
    """Unpack ``archive`` into the new folder ``dest``; returns ``dest``.

    The archive holds a job folder (``job.json`` and ``data/``) at its root, or inside one
    top-level folder (what zipping a folder usually gives), which is then unwrapped.
    max_total_bytes, max_file_bytes: the most bytes written in all and for one file.
    Raises InputError (field ``archive``) naming the first bad entry; nothing is written for an
    archive whose entries or declared sizes are refused; ``dest`` may hold a partial extraction
    when an entry turns out unreadable midway, which the caller removes.
    """
    archive, dest = Path(archive), Path(dest)
    max_file_bytes = max_total_bytes if max_file_bytes is None else max_file_bytes
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(f"not a zip archive ({shorten(str(exc))}); upload a zip of a job folder (job.json + data/)",
                         field=ARCHIVE_FIELD) from None
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
        entries = [(info, parts[strip:]) for info, parts in entries if parts[strip:]]
        for info, parts in entries:
            _check_upload_entry(info, parts, max_file_bytes)
        declared = sum(info.file_size for info, _ in entries)
        if declared > max_total_bytes:
            raise InputError(f"unpacks to {declared} bytes, more than the {max_total_bytes} this service takes "
                             "(its --max-unpacked-mb)", field=ARCHIVE_FIELD)
        dest.mkdir(parents=True, exist_ok=False)
        dest_resolved = dest.resolve()
        written = 0
        for info, parts in entries:
            target = dest.joinpath(*parts)
            # Belt and braces: the checks above already rule this out.
            if not target.resolve().is_relative_to(dest_resolved):
                raise _entry_error(info.filename, "leaves the job folder")
            try:
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "xb") as out:
                    file_written = 0
                    while chunk := src.read(_COPY_CHUNK_BYTES):
                        written += len(chunk)
                        file_written += len(chunk)
                        # zipfile stops at the declared size, so this only fires on a bug there.
                        if written > max_total_bytes or file_written > max_file_bytes:
                            raise _entry_error(info.filename, "inflates beyond the size the archive declares")
                        out.write(chunk)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, zlib.error, ValueError) as exc:
                raise _entry_error(info.filename, f"cannot be read ({shorten(str(exc))})") from None
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                raise _entry_error(info.filename, "clashes with another entry of the same name") from None
            except OSError as exc:  # a name the file system refuses, a full disk: the entry and why
                raise _entry_error(info.filename, f"cannot be written ({exc.strerror or exc})") from None
    return dest


def _check_upload_entry(info: zipfile.ZipInfo, parts: tuple[str, ...], max_file_bytes: int) -> None:
    """Only job.json and data/ are taken, each file within the size caps (the sizes the archive declares)."""
    top = parts[0]
    if top not in UPLOAD_ENTRIES or (top == JOB_FILE and (len(parts) > 1 or info.is_dir())) \
            or (top == DATA_DIR and len(parts) == 1 and not info.is_dir()):
        raise _entry_error(info.filename, f"an upload holds {JOB_FILE} and {DATA_DIR}/ only; checkpoints, results and "
                                          "events are written by the service, never taken from a client")
    if info.file_size > max_file_bytes:
        raise _entry_error(info.filename, f"unpacks to {info.file_size} bytes, more than the {max_file_bytes} this "
                                          "service takes for one file (its --max-file-mb)")
    if info.file_size > RATIO_CHECK_MIN_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
        raise _entry_error(info.filename, f"inflates {info.file_size / max(info.compress_size, 1):.0f}-fold "
                                          f"(at most {MAX_COMPRESSION_RATIO}-fold is taken): a zip bomb, not a dataset")


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
