# -*- test-case-name: tests.test_blocking_output -*-
"""
Output of one connection of the blocking API: frames queued by any thread,
written by the reactor thread, with bounded memory.

Sending from a worker thread must not cost one reactor wake-up per message:
L{OutputQueue.put} appends the frame to a queue and schedules one flush with
C{callFromThread} only when none is pending; the flush writes everything
queued as one write, and repeats until the queue is empty.

Back-pressure: the queue registers itself as a streaming producer on the
socket transport (below TLS, if any; see L{tcpsc._transports}).  Twisted
pauses it when the socket's send buffer holds more than its C{bufferSize}
and resumes it when that buffer is empty.  While paused nothing is written;
frames stay in the queue, and once the queue holds C{limit} bytes
L{OutputQueue.put} waits, up to a timeout, for room, then gives up
(C{False}).  So a peer that reads slowly costs at most about twice C{limit}
bytes of memory, and holds up only the threads sending to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from ._transports import releaseIfClosing, socketTransport

__all__ = ["DEFAULT_OUTPUT_LIMIT", "OutputQueue"]

#: Default bound, in bytes, of the frames a connection queues while its peer
#: does not read.
DEFAULT_OUTPUT_LIMIT = 1024 * 1024


@implementer(IPushProducer)
class OutputQueue:
    """
    Frames waiting to be written to one connection.

    Thread-safety: L{put} may be called from any thread; every other method
    runs in the reactor thread.

    @ivar limit: bytes queued beyond which L{put} waits.
    """

    log = Logger()

    def __init__(
        self,
        callFromThread: Callable[..., object],
        write: Callable[[bytes], object],
        limit: int = DEFAULT_OUTPUT_LIMIT,
    ) -> None:
        """
        @param callFromThread: schedules a call in the reactor thread.
        @param write: writes bytes to the connection (in the reactor thread).
        @param limit: see L{limit}.
        """
        self._callFromThread = callFromThread
        self._write = write
        self.limit = limit
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._frames: list[bytes] = []
        self._queued = 0
        self._scheduled = False
        self._paused = False
        self._closed = False
        self._transport: Any = None

    # -- any thread ---------------------------------------------------------

    @property
    def queued(self) -> int:
        """
        Bytes queued and not yet written to the transport.
        """
        return self._queued

    @property
    def paused(self) -> bool:
        """
        Whether the transport asked to stop writing (its buffer is full).
        """
        return self._paused

    @property
    def closed(self) -> bool:
        """
        Whether the queue accepts no more frames.
        """
        return self._closed

    def put(self, frame: bytes, timeout: float | None) -> bool:
        """
        Queue C{frame} for writing.

        @param timeout: seconds to wait for room when C{limit} bytes are
            queued already; C{None} waits as long as it takes, C{0} not at
            all.  A frame larger than C{limit} is accepted when the queue is
            empty.
        @return: C{True} once queued; C{False} if the queue is closed, or no
            room was made within C{timeout}.
        """
        size = len(frame)
        with self._lock:
            if self._closed:
                return False
            queued = self._queued
            if queued and queued + size > self.limit:
                cond = self._cond
                if timeout is not None and timeout <= 0:
                    return False
                deadline = None if timeout is None else time.monotonic() + timeout
                while True:
                    if deadline is None:
                        cond.wait()
                    else:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            return False
                        cond.wait(remaining)
                    if self._closed:
                        return False
                    queued = self._queued
                    if not queued or queued + size <= self.limit:
                        break
            self._frames.append(frame)
            self._queued = queued + size
            if self._scheduled or self._paused:
                return True
            self._scheduled = True
        self._callFromThread(self._flush)
        return True

    def putAccepted(self, frame: bytes) -> bool:
        """
        Queue C{frame} without waiting for room: for frames a sender held
        back after checking that they fit (see
        L{tcpsc.blocking._BlockingConnection.send}), which may exceed
        C{limit} by what other threads queued meanwhile.

        @return: C{True} once queued; C{False} if the queue is closed.
        """
        with self._lock:
            if self._closed:
                return False
            self._frames.append(frame)
            self._queued += len(frame)
            if self._scheduled or self._paused:
                return True
            self._scheduled = True
        self._callFromThread(self._flush)
        return True

    # -- the reactor thread -------------------------------------------------

    def attach(self, transport: Any) -> None:
        """
        Register as the streaming producer of C{transport}'s socket-level
        transport, to be paused while its send buffer is full.
        """
        base = socketTransport(transport)
        try:
            base.registerProducer(self, True)
        except (RuntimeError, AttributeError) as e:
            self.log.warn(
                "No output back-pressure for {transport}: {error}", transport=base, error=e
            )
            return
        if getattr(base, "producer", None) is self:
            self._transport = base

    def detach(self) -> None:
        """
        Unregister from the transport; writing goes on without pausing.
        """
        base, self._transport = self._transport, None
        if base is not None and getattr(base, "producer", None) is self:
            base.unregisterProducer()

    def _flush(self) -> None:
        cond = self._cond
        while True:
            with cond:
                if self._paused or self._closed or not self._frames:
                    self._scheduled = False
                    return
                frames = self._frames
                self._frames = []
                self._queued = 0
                cond.notify_all()
            self._write(frames[0] if len(frames) == 1 else b"".join(frames))

    def finish(self) -> None:
        """
        Write everything queued, even while paused, and accept nothing more;
        then unregister, so that the transport can close once its buffer is
        written.  For closing a connection after flushing it.
        """
        cond = self._cond
        with cond:
            frames = self._frames
            self._frames = []
            self._queued = 0
            self._closed = True
            cond.notify_all()
        if frames:
            self._write(b"".join(frames))
        self.detach()

    def close(self) -> None:
        """
        Drop what is queued and accept nothing more (the connection is gone).
        """
        with self._cond:
            self._frames = []
            self._queued = 0
            self._closed = True
            self._cond.notify_all()
        self.detach()

    # -- IPushProducer, called by the transport -------------------------------

    def pauseProducing(self) -> None:
        with self._cond:
            self._paused = True

    def resumeProducing(self) -> None:
        base = self._transport
        if base is not None:
            releaseIfClosing(base, self, self.detach)
        with self._cond:
            self._paused = False
            if self._scheduled or self._closed or not self._frames:
                return
            self._scheduled = True
        self._flush()

    def stopProducing(self) -> None:
        # The transport unregisters its producer itself when it is lost.
        self._transport = None
        self.close()
