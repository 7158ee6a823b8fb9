# -*- test-case-name: tests.test_framing -*-
"""
Layer 1: framing.  Bytes in, messages out; no sockets, no reactor.

L{MessageProtocol} is tcpsc's "fragmented mode": messages separated by a
delimiter of one or more bytes, any size up to a bound.  L{StreamProtocol} is
"continuous mode": the raw byte stream of a connection.

Both are ordinary Twisted protocols, so they can be tested with
L{twisted.internet.testing.StringTransport} and used with any Twisted
factory, endpoint or TLS wrapper.  They add one notion Twisted leaves to each
application: I{readiness}.  A plain TCP connection is ready when it is made; a
TLS connection only once its handshake completed with the peer verified
(L{IHandshakeListener}), because C{connectionMade} fires before the handshake
and before any certificate was checked.

Why not C{LineOnlyReceiver}: it re-joins and re-splits its whole buffer on
every read (quadratic for a long message arriving in small pieces), checks no
bound until a delimiter arrives, validates nothing it sends, and cannot pause.
The reassembly here searches only the bytes that are new (plus an overlap of
C{len(delimiter) - 1} for a delimiter split across reads), never buffers a
partial message beyond C{maxMessageLength + len(delimiter) - 1} bytes, and
joins the replies made while handling one read into a single write.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING
from typing import Protocol as _TypingProtocol

from twisted.internet.interfaces import IHandshakeListener, ISSLTransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEFAULT_MAX_MESSAGE_LENGTH", "MessageProtocol", "StreamProtocol"]

#: Default bound of one message: 16 MiB.
DEFAULT_MAX_MESSAGE_LENGTH = 16 * 1024 * 1024

#: Messages at least this long are written with C{writeSequence} rather than
#: copied once more to append the delimiter.
_LARGE_MESSAGE = 64 * 1024


class _ConnectionObserver(_TypingProtocol):
    """
    What a protocol reports to the object that owns it (a server's registry or
    a client).  Private: the public API is the hooks of the protocols and the
    callbacks of L{tcpsc.Server} and L{tcpsc.Client}.
    """

    def connectionReady(self, protocol: _ConnectionBase) -> None: ...

    def connectionClosed(
        self, protocol: _ConnectionBase, reason: Failure, wasReady: bool
    ) -> None: ...

    def messageReceived(self, protocol: MessageProtocol, message: bytes) -> None: ...

    def dataReceived(self, protocol: StreamProtocol, data: bytes) -> None: ...


@implementer(IHandshakeListener)
class _ConnectionBase(Protocol):
    """
    Readiness, ownership and closing shared by both modes.

    @ivar ready: C{True} from the moment the connection is ready (TCP:
        connected; TLS: handshake completed and the peer verified) until it is
        lost.  Sending is refused while it is C{False}.
    @ivar connectionId: the id a L{tcpsc.Server} gave this connection, or
        C{None} when no server owns it.
    """

    log = Logger()

    ready: bool = False
    connectionId: int | None = None

    #: Set by the owner (server registry or client) before the connection is
    #: made; told about readiness, messages and the end of the connection.
    _observer: _ConnectionObserver | None = None

    #: Set by a TLS client: called as C{gate(protocol, proceed)} after the
    #: handshake, it calls C{proceed()} once the server is known to have
    #: accepted this client (TLS 1.3 verifies the client after the client's
    #: side of the handshake is complete).
    _readinessGate: Callable[[_ConnectionBase, Callable[[], None]], None] | None = None

    _handshakeSeen: bool = False
    _paused: bool = False

    def makeConnection(self, transport) -> None:  # type: ignore[no-untyped-def]
        """
        Connect, then become ready at once unless the transport is TLS.

        Readiness is decided here rather than in C{connectionMade} so that
        subclasses may override C{connectionMade} without calling up.
        """
        super().makeConnection(transport)
        if not ISSLTransport.providedBy(transport):
            self._becomeReady()

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is complete and the peer's certificate (if any was
        required) verified: the connection becomes ready, after the client's
        readiness gate where one is set.
        """
        if self._handshakeSeen:
            return
        self._handshakeSeen = True
        gate = self._readinessGate
        if gate is None:
            self._becomeReady()
        else:
            gate(self, self._becomeReady)

    def _becomeReady(self) -> None:
        if self.ready or not self.connected:
            return
        self.ready = True
        observer = self._observer
        if observer is not None:
            observer.connectionReady(self)
        if self.ready:
            self.connectionReady()

    def connectionReady(self) -> None:
        """
        Called once the connection can be used: after the TCP connection is
        made, or after the TLS handshake with the peer verified.  Override it.
        """

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Tell the owner the connection ended.  Subclasses overriding this must
        call it.
        """
        wasReady = self.ready
        self.ready = False
        # Twisted never clears this flag; clearing it here keeps a readiness
        # gate or handshake that completes after the loss from making a dead
        # connection ready (and reporting it ready after it was closed).
        self.connected = False
        observer = self._observer
        if observer is not None:
            observer.connectionClosed(self, reason, wasReady)

    def pauseReading(self) -> None:
        """
        Stop delivering received data and stop reading from the socket, so
        that the peer is slowed down by TCP flow control.
        """
        if self._paused:
            return
        self._paused = True
        if self.connected:
            self.transport.pauseProducing()

    def resumeReading(self) -> None:
        """
        Undo L{pauseReading}: deliver what was held back, then read again.
        """
        if not self._paused:
            return
        self._paused = False
        # What was held arrived first: deliver it before reading more, or a
        # transport that delivers on resumeProducing would overtake it.
        self._deliverHeld()
        if not self._paused and self.connected:
            self.transport.resumeProducing()

    def _deliverHeld(self) -> None:
        """
        Deliver what was held back while paused; a handler may pause again.
        """

    def _peerDescription(self) -> str:
        transport = self.transport
        if transport is None:
            return "<not connected>"
        peer = transport.getPeer()
        host = getattr(peer, "host", None)
        port = getattr(peer, "port", None)
        if host is None:
            return str(peer)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MessageProtocol(_ConnectionBase):
    """
    Fragmented mode: messages separated by C{delimiter}.  Subclass it like
    L{twisted.protocols.basic.LineOnlyReceiver}.

    A message longer than C{maxMessageLength} is dropped (its bytes are
    discarded until the next delimiter, never buffered), L{messageTooLong} is
    called once, and the connection stays open; the messages after it are
    delivered.  The same bound applies to L{sendMessage}, where
    C{message + messageAppend} must fit, so that what one side may send the
    other side with the same settings accepts.

    @cvar delimiter: separates messages; one or more bytes.
    @cvar maxMessageLength: the longest message, in bytes, sent or received;
        C{None} for no limit (an explicit choice: a peer can then make this
        process buffer without bound).
    @cvar messageAppend: bytes appended to every message sent, before the
        delimiter (the original's C{messageAppend}).
    """

    delimiter: bytes = b"\n"
    maxMessageLength: int | None = DEFAULT_MAX_MESSAGE_LENGTH
    messageAppend: bytes = b""

    # Parsing state.  _buffer holds a partial message; _discarded is the number
    # of bytes of an oversized message dropped so far (-1 when not dropping)
    # and _discardTail its last len(delimiter) - 1 bytes, so that a delimiter
    # split across reads still ends the dropped message.
    _buffer: bytearray
    _discarded: int = -1
    _discardTail: bytes = b""
    _held: list[bytes]
    # Replies made while one read is being handled, written at its end as one
    # write.  None outside of that; TLS transports aggregate writes themselves.
    _batch: list[bytes] | None = None
    _batchWrites: bool = False
    # Settings read at makeConnection for the hot path of sendMessage.
    _suffix: bytes = b"\n"
    _fastLimit: int = sys.maxsize
    _fastByte: int | None = None

    def makeConnection(self, transport) -> None:  # type: ignore[no-untyped-def]
        # State first, so that connectionLost after a refused connection
        # reports the loss rather than failing on missing attributes.
        self._buffer = bytearray()
        self._held = []
        delimiter = self.delimiter
        if not isinstance(delimiter, bytes) or not delimiter:
            raise ValueError(
                f"delimiter must be non-empty bytes, not {delimiter!r}"
            )
        self._batchWrites = not ISSLTransport.providedBy(transport)
        # The settings are read once, here: the hot path of sendMessage then
        # needs no attribute lookups beyond these, and a one-byte delimiter
        # is searched for as an int (a memchr), several times faster than a
        # bytes search on short messages.
        append = self.messageAppend
        self._suffix = append + delimiter
        maxLength = self.maxMessageLength
        self._fastLimit = sys.maxsize if maxLength is None else maxLength
        self._fastByte = delimiter[0] if len(delimiter) == 1 and not append else None
        super().makeConnection(transport)

    # -- receiving --------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """
        Split C{data} into messages and deliver them in order.
        """
        if self._paused:
            self._held.append(data)
            return
        if not self._batchWrites:
            self._parse(data)
            return
        batch: list[bytes] = []
        self._batch = batch
        try:
            self._parse(data)
        finally:
            self._batch = None
            if batch:
                self._flushBatch(batch)

    def _flushBatch(self, batch: list[bytes]) -> None:
        """
        Write the messages sent while one read was handled as one frame
        sequence: the batch holds them without their common suffix
        (C{messageAppend + delimiter}), which one join puts back.
        """
        batch.append(b"")
        self.transport.write(self._suffix.join(batch))
        batch.clear()

    def _parse(self, data: bytes) -> None:
        delimiter = self.delimiter
        overlap = len(delimiter) - 1
        if self._discarded >= 0:
            rest = self._discard(data, delimiter)
            if rest is None:
                return
            data = rest
        buffer = self._buffer
        if buffer:
            # Only the new bytes are searched, plus the overlap where a
            # delimiter may straddle the old and the new bytes.
            if overlap:
                tailLength = min(overlap, len(buffer))
                probe = bytes(buffer[-tailLength:]) + data[:overlap]
                at = probe.find(delimiter)
                if at >= 0:
                    cut = len(buffer) - tailLength + at
                    message = bytes(buffer[:cut])
                    data = data[at - tailLength + len(delimiter) :]
                else:
                    at = data.find(delimiter)
                    if at >= 0:
                        message = bytes(buffer) + data[:at]
                        data = data[at + len(delimiter) :]
            else:
                at = data.find(delimiter)
                if at >= 0:
                    message = bytes(buffer) + data[:at]
                    data = data[at + 1 :]
            if at < 0:
                buffer += data
                self._checkPartial(delimiter)
                return
            buffer.clear()
            maxLength = self.maxMessageLength
            if maxLength is not None and len(message) > maxLength:
                self.messageTooLong(len(message))
            else:
                self.messageReceived(message)
            if self._paused:
                self._held.append(data)
                return
        parts = data.split(delimiter)
        tail = parts.pop()
        if parts:
            self._deliver(parts, tail, delimiter)
        elif tail:
            buffer += tail
            self._checkPartial(delimiter)

    def _deliver(self, messages: list[bytes], tail: bytes, delimiter: bytes) -> None:
        """
        Deliver complete C{messages}, then keep C{tail} (the bytes after the
        last delimiter) as the start of the next message.
        """
        maxLength = self.maxMessageLength
        if maxLength is not None and max(map(len, messages)) > maxLength:
            checkLength = True
        else:
            checkLength = False
        received = self.messageReceived
        for index, message in enumerate(messages, 1):
            if checkLength and len(message) > maxLength:  # type: ignore[operator]
                self.messageTooLong(len(message))
            else:
                received(message)
            if self._paused:
                rest = messages[index:]
                rest.append(tail)
                self._held.append(delimiter.join(rest))
                return
        if tail:
            self._buffer += tail
            self._checkPartial(delimiter)

    def _checkPartial(self, delimiter: bytes) -> None:
        maxLength = self.maxMessageLength
        buffer = self._buffer
        if maxLength is None or len(buffer) <= maxLength + len(delimiter) - 1:
            return
        # Too long already: start dropping, keep only what could be the start
        # of a delimiter.
        overlap = len(delimiter) - 1
        self._discarded = len(buffer)
        self._discardTail = bytes(buffer[len(buffer) - overlap :]) if overlap else b""
        buffer.clear()
        # The last bytes may be the start of the delimiter: report only the
        # bytes certainly part of the message, still more than the maximum.
        self.messageTooLong(self._discarded - overlap)

    def _discard(self, data: bytes, delimiter: bytes) -> bytes | None:
        """
        Drop bytes of an oversized message up to and including the next
        delimiter.

        @return: the bytes after that delimiter, or C{None} if C{data} had none.
        """
        overlap = len(delimiter) - 1
        probe = self._discardTail + data if overlap else data
        at = probe.find(delimiter)
        if at < 0:
            self._discarded += len(data)
            self._discardTail = probe[len(probe) - overlap :] if overlap else b""
            return None
        self._discarded = -1
        self._discardTail = b""
        return probe[at + len(delimiter) :]

    def messageReceived(self, message: bytes) -> None:
        """
        Called with each message, in order, exactly once.  Override it; the
        default hands the message to the owning server's or client's
        C{onMessage} callback, if any.

        @param message: the message without its delimiter (but with the
            sender's C{messageAppend}, which is part of what it sent).
        """
        observer = self._observer
        if observer is not None:
            observer.messageReceived(self, message)

    def messageTooLong(self, length: int) -> None:
        """
        Called once for each message longer than C{maxMessageLength}; the
        message is dropped and the connection kept.  The default logs a
        warning.

        @param length: the message's length, or the number of its bytes
            received when it was found too long (it may not be complete yet).
        """
        self.log.warn(
            "Dropped a message of {length} bytes or more from {peer} "
            "(connection {connectionId}): longer than maxMessageLength "
            "{maxMessageLength}",
            length=length,
            peer=self._peerDescription(),
            connectionId=self.connectionId,
            maxMessageLength=self.maxMessageLength,
        )

    def resumeReading(self) -> None:
        """
        Deliver the messages held back by L{pauseReading}, in order, then
        read from the socket again.
        """
        super().resumeReading()

    def _deliverHeld(self) -> None:
        held = self._held
        if held:
            self._held = []
            self.dataReceived(b"".join(held))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Deliver what L{pauseReading} held back (it was received, so it is not
        lost), then report the end of the connection.  A handler pausing
        again does not hold anything back any more: nothing follows.
        """
        while self._held:
            held, self._held = self._held, []
            self._paused = False
            self._parse(b"".join(held))
        super().connectionLost(reason)

    # -- sending ----------------------------------------------------------

    def sendMessage(self, message: bytes | str) -> bool:
        """
        Send one message: C{message + messageAppend + delimiter}.

        @param message: bytes, or text to be encoded as UTF-8.  May be empty.
        @return: C{True} if the message was handed to the transport; C{False}
            (and nothing written) if it contains the delimiter (or would
            form one with C{messageAppend} and the delimiter after it), is
            longer than C{maxMessageLength} together with C{messageAppend},
            or the connection is not ready or is closing.
        """
        byte = self._fastByte
        if byte is not None and message.__class__ is bytes:
            # One-byte delimiter, no append: the common case, kept short.
            if byte in message or len(message) > self._fastLimit:
                return False
        else:
            if isinstance(message, str):
                message = message.encode("utf-8")
            elif not isinstance(message, bytes):
                message = bytes(message)
            if not self._framable(message):
                return False
        if not self.ready or self.transport.disconnecting:
            return False
        batch = self._batch
        if batch is not None:
            batch.append(message)
        elif len(message) >= _LARGE_MESSAGE:
            self.transport.writeSequence((message, self._suffix))
        else:
            self.transport.write(message + self._suffix)
        return True

    def frame(self, message: bytes | str) -> bytes | None:
        """
        Build the bytes L{sendMessage} would write, validated the same way,
        for writing one message to many connections without re-checking it.

        @return: the framed message, or C{None} if it would be refused.
        """
        if isinstance(message, str):
            message = message.encode("utf-8")
        if not self._framable(message):
            return None
        return message + self.messageAppend + self.delimiter

    def _framable(self, message: bytes) -> bool:
        """
        Whether C{message} framed is read back as C{message + messageAppend}
        by a peer with the same settings, and fits C{maxMessageLength}.

        Beyond a delimiter inside C{message}, the frame's first delimiter
        must be its last: C{messageAppend} may hold one, and the end of the
        message may form one with what follows it when the delimiter
        overlaps itself (C{b"a-"} before C{b"--"} reads as C{b"a"}).  Only
        the last C{len(delimiter) - 1} bytes of the message need that second
        look, so a large message is not copied for it.
        """
        delimiter = self.delimiter
        append = self.messageAppend
        maxLength = self.maxMessageLength
        if maxLength is not None and len(message) + len(append) > maxLength:
            return False
        if delimiter in message:
            return False
        overlap = len(delimiter) - 1
        end = (message[-overlap:] if overlap else b"") + append + delimiter
        return end.find(delimiter) == len(end) - len(delimiter)

    def sendFrame(self, frame: bytes) -> bool:
        """
        Write a frame built by L{frame} (by this protocol or one with the same
        settings).

        @return: C{False} if the connection is not ready or is closing.
        """
        if not self.ready or self.transport.disconnecting:
            return False
        batch = self._batch
        if batch is not None:
            suffix = self._suffix
            if frame.endswith(suffix):
                batch.append(frame[: len(frame) - len(suffix)])
                return True
            if batch:
                # Keep the order: what was sent before this frame goes first.
                self._flushBatch(batch)
        self.transport.write(frame)
        return True


class StreamProtocol(_ConnectionBase):
    """
    Continuous mode: the connection's bytes as they arrive, no boundaries.

    Received bytes go to L{dataReceived}: override it, or let the default
    write them to C{sink} (a server sets one per connection through its
    C{createSink} callback) or hand them to the owner's C{onData} callback.

    @ivar sink: an object with C{write(bytes)} receiving this connection's
        bytes, closed (if it has C{close}) when the connection ends; or
        C{None}.
    """

    sink: object | None = None

    def dataReceived(self, data: bytes) -> None:
        """
        Write C{data} to the sink, or hand it to the owner.  Override it.
        """
        sink = self.sink
        if sink is not None:
            sink.write(data)  # type: ignore[attr-defined]
            return
        observer = self._observer
        if observer is not None:
            observer.dataReceived(self, data)

    def sendData(self, data: bytes | str) -> bool:
        """
        Write C{data} as is.

        @return: C{False} if the connection is not ready or is closing.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not self.ready or self.transport.disconnecting:
            return False
        if data:
            self.transport.write(data)
        return True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Report the end of the connection, then close the sink.
        """
        try:
            super().connectionLost(reason)
        finally:
            sink, self.sink = self.sink, None
            close = getattr(sink, "close", None)
            if close is not None:
                close()
