"""Bounded connections for uvicorn: a cap on open connections and a deadline for request headers.

uvicorn's HTTP/1.1 protocol (h11) keeps a connection open as long as the client likes until a
request's headers are complete: a client that connects and sends nothing (or a byte at a time)
holds a file descriptor forever, and a thousand of them starve the service of descriptors
(``/health`` stops answering). Its ``limit_concurrency`` only answers 503 once headers arrived.

:class:`BoundedH11Protocol` adds what is missing:

- a **header deadline**: from a connection's first byte of a request (or from the connection
  itself), the request's headers must be complete within ``HEADER_TIMEOUT_S``, or the connection
  is closed. Bodies are not timed (a large upload on a slow link is legitimate); the keep-alive
  timeout of uvicorn still closes idle connections between requests.
- a **connection cap**: at ``MAX_CONNECTIONS`` open connections, a new one first evicts the
  oldest connection still waiting for its headers; when every connection is busy with a request,
  the new one is closed at once. A flood of silent connections therefore cannot lock out a
  client that sends its request promptly.
"""

from __future__ import annotations

import asyncio
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# Seconds a client gets to send a request's headers (a real client sends them in one packet).
HEADER_TIMEOUT_S = 10.0
# Open connections at most: the add-on uses two or three; a file-descriptor limit of 1024 must
# leave room for the job store, the worker's pipes and log files.
MAX_CONNECTIONS = 256


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a connection cap (module docstring)."""

    header_timeout_s = HEADER_TIMEOUT_S
    max_connections = MAX_CONNECTIONS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._waiting_since = time.monotonic()
        if len(self.connections) >= self.max_connections and not self._evict_oldest_waiting():
            transport.close()  # every connection is serving a request: refuse this one, not theirs
            self.transport = transport
            self._refused = True
            return
        self._refused = False
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if getattr(self, "_refused", False):
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self.waiting_for_headers:
            self._arm_header_timer()
        else:
            self._cancel_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Between requests the keep-alive timeout rules; the next request's first byte re-arms ours
        # (a pipelined request already buffered is handled above: still waiting means arm now).
        self._cancel_header_timer()
        if self.waiting_for_headers and self.conn.trailing_data[0]:
            self._arm_header_timer()

    # ---- internals -------------------------------------------------------------------------------

    @property
    def waiting_for_headers(self) -> bool:
        """No request in progress: none started yet, or the next one's headers are incomplete
        (h11 leaves IDLE as soon as a request's headers are parsed)."""
        return self.conn.their_state is h11.IDLE

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._waiting_since = time.monotonic()
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.waiting_for_headers and not self.transport.is_closing():
            self.transport.close()

    def _evict_oldest_waiting(self) -> bool:
        """Close the connection that has waited longest for its headers; False when none waits."""
        waiting = [c for c in self.connections if isinstance(c, BoundedH11Protocol) and c.waiting_for_headers]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c._waiting_since)
        oldest._cancel_header_timer()
        oldest.transport.close()
        self.connections.discard(oldest)
        return True
