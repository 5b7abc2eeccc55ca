"""Receive an uploaded archive straight to disk, counting bytes as they arrive.

Starlette's form parser would first spool the whole upload to a temporary file outside the
job's folder, whatever its size; here the body is parsed as it streams in and only the archive's
bytes are written, to the job's own incoming folder, stopping at the size limit.
Two encodings are accepted: ``multipart/form-data`` with a file field ``archive`` (a browser
form, ``requests.post(files={"archive": ...})``), or the raw zip as the body
(``Content-Type: application/zip``).
"""

from __future__ import annotations

from pathlib import Path

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from .archive import ARCHIVE_FIELD

# Room for multipart boundaries and part headers on top of the archive itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# An upload found too large is still read (and dropped) up to this size, so the client gets the
# 413 answer instead of a connection reset; beyond it the connection is closed.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024


class UploadError(Exception):
    """A problem with the request body; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, drained: bool = True):
        super().__init__(message)
        self.status = status
        self.message = message
        self.drained = drained


def _too_large(max_bytes: int, drained: bool = True) -> UploadError:
    return UploadError(413, f"upload larger than the {max_bytes} bytes this service accepts (its --max-upload-mb)", drained)


async def _drain(request: Request, already: int) -> bool:
    """Read and drop the rest of the body up to DRAIN_LIMIT_BYTES; True when it was all read."""
    received = already
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > DRAIN_LIMIT_BYTES:
                return False
    except RuntimeError:  # the body had already been read to its end
        return True
    except ClientDisconnect:
        return False
    return True


class _ArchivePart:
    """multipart callbacks that write the ``archive`` file field to ``out`` and ignore other fields."""

    def __init__(self, out, max_bytes: int):
        self.out = out
        self.max_bytes = max_bytes
        self.written = 0
        self.found = False
        self.overflow = False
        self._in_archive = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda data, start, end: self._append("_header_name", data[start:end]),
            "on_header_value": lambda data, start, end: self._append("_header_value", data[start:end]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def _append(self, name: str, data: bytes) -> None:
        setattr(self, name, getattr(self, name) + data)

    def on_part_begin(self) -> None:
        self._disposition = b""
        self._in_archive = False

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if options.get(b"name") == ARCHIVE_FIELD.encode() and not self.found:
            self._in_archive = True
            self.found = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._in_archive or self.overflow:
            return
        self.written += end - start
        if self.written > self.max_bytes:
            self.overflow = True
            return
        self.out.write(data[start:end])

    def on_part_end(self) -> None:
        self._in_archive = False


async def read_body_capped(request: Request, max_bytes: int) -> bytes:
    """The whole body of a small request (JSON), refused with 413 beyond ``max_bytes`` whether or
    not it declares its length (a chunked body is counted as it arrives)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise UploadError(413, f"body larger than the {max_bytes} bytes this request may have",
                          int(declared) <= DRAIN_LIMIT_BYTES and await _drain(request, 0))
    chunks, received = [], 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise UploadError(413, f"body larger than the {max_bytes} bytes this request may have",
                                  await _drain(request, received))
            chunks.append(chunk)
    except ClientDisconnect:
        raise UploadError(400, "the client went away before the body was complete") from None
    return b"".join(chunks)


async def receive_archive(request: Request, dest: Path, max_bytes: int) -> int:
    """Write the uploaded archive to ``dest``; returns its size. Raises UploadError."""
    content_type = request.headers.get("content-type", "")
    media_type, options = parse_options_header(content_type)
    multipart = media_type == b"multipart/form-data"
    allowed = max_bytes + (MULTIPART_OVERHEAD_BYTES if multipart else 0)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > allowed:
        drained = int(declared) <= DRAIN_LIMIT_BYTES and await _drain(request, 0)
        raise _too_large(max_bytes, drained)

    received = 0
    with open(dest, "xb") as out:
        if multipart:
            boundary = options.get(b"boundary")
            if not boundary:
                raise UploadError(400, "multipart body without a boundary in its Content-Type")
            part = _ArchivePart(out, max_bytes)
            parser = MultipartParser(boundary, part.callbacks())
            try:
                async for chunk in request.stream():
                    received += len(chunk)
                    parser.write(chunk)
                    if part.overflow:
                        raise _too_large(max_bytes, await _drain(request, received))
                parser.finalize()
            except FormParserError as exc:
                raise UploadError(400, f"malformed multipart body: {exc}") from None
            if not part.found:
                raise UploadError(400, f"multipart upload without a file field named {ARCHIVE_FIELD!r} (the zip of the job folder)")
            return part.written
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise _too_large(max_bytes, await _drain(request, received))
            out.write(chunk)
    return received
