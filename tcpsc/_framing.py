# -*- test-case-name: tests.test_framing -*-
"""
Framing: bytes in, messages out; no sockets, no reactor.

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

The reassembly searches only the bytes that are new (plus an overlap of
C{len(delimiter) - 1} for a delimiter split across reads), so its cost is
linear in the bytes received however they are split; it never buffers a
partial message beyond C{maxMessageLength + len(delimiter) - 1} bytes, and
joins the replies made while handling one read into a single write.
(C{LineOnlyReceiver} re-splits its whole buffer on every read, checks no
bound until a delimiter arrives, validates nothing it sends and cannot
pause.)

Output is bounded too.  A ready connection registers a small streaming
producer (L{_OutputTracker}) on the transport that owns the socket, below TLS
and any other wrapper, so it learns when that transport holds more than it
writes at once (Twisted's C{bufferSize}) and when it is empty again.
In between, the connection is I{congested}: the bytes accepted for sending are
counted, and once C{maxPendingOutput} bytes were accepted, sending returns
C{False} and writes nothing until the transport drained.  The hot path of
L{MessageProtocol.sendMessage} pays nothing for it: congestion lowers the
length limit it already compares against, which diverts every message to
the checked path.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any
from typing import Protocol as _TypingProtocol

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IPushProducer,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import _compat
from ._addresses import describeAddress
from ._errors import AbortedLocally, ClosedLocally
from ._events import plural
from ._transports import releaseIfClosing, socketTransport

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    class _IConnectionTransport(ITCPTransport, IPushProducer):
        """
        What a connection uses of its transport: a TCP transport (Twisted's
        socket transport, or a TLS or other wrapper of one) that can also be
        paused and resumed.
        """

        #: C{True} once C{loseConnection} was called.
        disconnecting: bool


__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_LENGTH",
    "DEFAULT_MAX_PENDING_OUTPUT",
    "MessageProtocol",
    "StreamProtocol",
]

#: Default bound of one message: 16 MiB.
DEFAULT_MAX_MESSAGE_LENGTH = 16 * 1024 * 1024

#: Default bound of the output one connection accepts while its peer does not
#: keep up: 4 MiB.  A message longer than that can still be sent whenever the
#: connection is not congested.
DEFAULT_MAX_PENDING_OUTPUT = 4 * 1024 * 1024

#: Default bound of a close this side starts: how long the peer has to take
#: the last output (and, over TLS, close_notify) before the connection is
#: aborted.
DEFAULT_CLOSE_TIMEOUT = 5.0

#: The messages left in a read that a connection paused by its server for the
#: turn's broadcast work still delivers (see L{_ConnectionBase._lightRead}).
_LIGHT_READ = 8

#: Messages at least this long are written with C{writeSequence} rather than
#: copied once more to append the delimiter.
_LARGE_MESSAGE = 16 * 1024

#: Where the first message of a read is at least this long, the messages of
#: the read are found one at a time with C{find} (a C{memchr} for a
#: one-byte delimiter) rather than by C{split}, which compares every byte
#: in a loop of its own: much cheaper per byte, dearer per message.
_FIND_ABOVE = 512

#: Pieces of a partial message at least this long are kept as they arrived;
#: shorter ones are gathered into one C{bytearray} (see L{_Partial}).
_PIECE = 4096


def _frames(messages: list[bytes], suffix: bytes) -> list[bytes]:
    """
    C{messages}, each followed by C{suffix}, for C{writeSequence}: the large
    ones as they are, runs of the others joined with their suffixes.
    """
    sequence: list[bytes] = []
    run: list[bytes] = []
    for message in messages:
        if len(message) >= _LARGE_MESSAGE:
            if run:
                run.append(b"")
                sequence.append(suffix.join(run))
                run = []
            sequence.append(message)
            sequence.append(suffix)
        else:
            run.append(message)
    if run:
        run.append(b"")
        sequence.append(suffix.join(run))
    return sequence


class _Partial:
    """
    The start of a message that is still arriving: the pieces received so
    far, joined once, when the message is complete.  So a message that spans
    reads is copied once, not into a buffer and out of it again.

    Large pieces are kept as they arrived: a whole read as is, the end of a
    read as a view of it where that is at least half of the read (so it
    takes at most twice its size in memory, and only the first piece of a
    message can be such a view).  Short pieces are gathered into one
    C{bytearray}, so that a peer sending a few bytes at a time does not
    make this hold an object for each.

    Its length is the number of bytes it holds.
    """

    __slots__ = ("_pieces", "_size")

    def __init__(self) -> None:
        self._pieces: list[bytes | bytearray | memoryview] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, data: bytes, start: int = 0) -> None:
        """
        Keep C{data[start:]}.
        """
        size = len(data) - start
        if size <= 0:
            return
        self._size += size
        pieces = self._pieces
        if size >= _PIECE and type(data) is bytes:
            if not start:
                pieces.append(data)
            elif size * 2 >= len(data):
                pieces.append(memoryview(data)[start:])
            else:
                pieces.append(data[start:])
        elif pieces and type(pieces[-1]) is bytearray:
            pieces[-1] += memoryview(data)[start:] if start else data
        else:
            pieces.append(bytearray(memoryview(data)[start:] if start else data))

    def take(self, data: bytes = b"", end: int = 0) -> bytes:
        """
        Take what is kept, followed by C{data[:end]}, as one C{bytes}; keep
        nothing.
        """
        pieces = self._pieces
        if end > 0:
            pieces.append(memoryview(data)[:end])
        message = b"".join(pieces)
        self._pieces = []
        self._size = 0
        return message

    def last(self, count: int) -> bytes:
        """
        @return: the last C{count} bytes kept (all of them if fewer).
        """
        tail = b""
        for piece in reversed(self._pieces):
            need = count - len(tail)
            if need <= 0:
                break
            tail = bytes(piece[-need:]) + tail
        return tail

    def clear(self) -> None:
        """
        Keep nothing.
        """
        self._pieces = []
        self._size = 0


class _ConnectionObserver(_TypingProtocol):
    """
    What a protocol reports to the object that owns it (a server's registry or
    a client).  Private: the public API is the hooks of the protocols and the
    callbacks of L{tcpsc.Server} and L{tcpsc.Client}.
    """

    def connectionReady(self, protocol: MessageProtocol | StreamProtocol) -> None: ...

    def connectionClosed(
        self, protocol: MessageProtocol | StreamProtocol, reason: Failure, wasReady: bool
    ) -> None: ...

    def messageReceived(self, protocol: MessageProtocol, message: bytes) -> None: ...

    def dataReceived(self, protocol: StreamProtocol, data: bytes) -> None: ...


@implementer(IPushProducer)
class _OutputTracker:
    """
    The streaming producer of a connection's socket transport: the transport
    pauses it when its buffer holds more than C{bufferSize} bytes and resumes
    it when the buffer is empty, which is exactly when the connection is
    congested (see L{_ConnectionBase.maxPendingOutput}).

    A transport has room for one producer only, and applications register
    their own (the blocking API's output queue, a file sender, a proxy
    throttling its other side).  So the tracker gives way: it installs
    C{registerProducer}/C{unregisterProducer} on the transport instance
    that unregister the tracker before anyone else registers, and register
    it again once that producer is gone (an instance patch of public
    methods; see L{tcpsc._compat}).  While another producer is
    registered, the connection's output is bounded by that producer, not
    by C{maxPendingOutput}.

    Two Twisted details (see L{tcpsc._transports}): the tracker sits on the
    socket transport, never on a TLS transport, whose C{loseConnection}
    would wait for it; and a paused producer that the transport resumes
    while it is closing unregisters itself, or the transport would keep
    calling it instead of closing.
    """

    def __init__(self, protocol: _ConnectionBase, base: Any) -> None:
        self._protocol = protocol
        self._base = base

    @classmethod
    def attach(cls, protocol: _ConnectionBase) -> _OutputTracker | None:
        """
        Track the output of C{protocol}'s socket transport.

        @return: the tracker, or C{None} if the transport takes no producer.
        """
        base = socketTransport(protocol.transport)
        if not callable(getattr(type(base), "registerProducer", None)):
            return None
        tracker = cls(protocol, base)
        try:
            base.registerProducer = tracker._registerOther
            base.unregisterProducer = tracker._unregisterOther
        except AttributeError:  # pragma: no cover - a transport with __slots__
            return None
        tracker._take()
        return tracker

    def _take(self) -> None:
        """
        Become the transport's producer, unless it has one or is closing.
        """
        base = self._base
        if (
            getattr(base, "producer", None) is not None
            or getattr(base, "disconnecting", False)
            or getattr(base, "disconnected", False)
            or _compat.writeClosing(base)
        ):
            return
        type(base).registerProducer(base, self, True)

    def _registerOther(self, producer: Any, streaming: bool) -> None:
        # Installed as the transport's registerProducer: give way.
        base = self._base
        if getattr(base, "producer", None) is self:
            type(base).unregisterProducer(base)
            self._protocol._outputDrained()
        type(base).registerProducer(base, producer, streaming)

    def _unregisterOther(self) -> None:
        # Installed as the transport's unregisterProducer: take over again.
        base = self._base
        type(base).unregisterProducer(base)
        if self._protocol.connected:
            self._take()

    def detach(self) -> None:
        """
        Stop tracking: remove what L{attach} installed on the transport.
        """
        base = self._base
        attributes = getattr(base, "__dict__", {})
        if attributes.get("registerProducer") == self._registerOther:
            del base.registerProducer
        if attributes.get("unregisterProducer") == self._unregisterOther:
            del base.unregisterProducer
        if getattr(base, "producer", None) is self:
            type(base).unregisterProducer(base)

    # -- IPushProducer, called by the transport ---------------------------

    def pauseProducing(self) -> None:
        # Called on every write while the buffer is full: cheap when paused.
        protocol = self._protocol
        if not protocol._congested:
            protocol._outputCongested()

    def resumeProducing(self) -> None:
        base = self._base
        releaseIfClosing(base, self, lambda: type(base).unregisterProducer(base))
        self._protocol._outputDrained()

    def stopProducing(self) -> None:
        # The connection is lost; the transport forgets its producer itself
        # and the protocol's connectionLost detaches the tracker.
        pass


@implementer(IHandshakeListener, IHalfCloseableProtocol)
class _ConnectionBase(Protocol):
    """
    Readiness, ownership, output bound and closing shared by both modes.

    @ivar ready: C{True} from the moment the connection is ready (TCP:
        connected; TLS: handshake completed and the peer verified) until it is
        lost.  Sending is refused while it is C{False}.
    @ivar connectionId: the id a L{tcpsc.Server} gave this connection, or
        C{None} when no server owns it.
    @cvar maxPendingOutput: the most bytes the socket transport may hold
        for sending accepts more while the connection is congested, that is
        from the moment the transport holds more than it writes at once (64
        KiB) until it has written everything (where those bytes cannot be
        looked at: the most bytes sending accepts while congested).  Past
        it, sending returns C{False} and writes nothing.  So a peer that does not read costs at most about
        C{maxPendingOutput} + 64 KiB + one write of memory.  C{None}: no
        bound (the transport buffers whatever is sent).  Messages sent while
        handling one read are written together when that read is handled,
        and count as one write.
    @cvar closeTimeout: seconds a close this side starts (L{closeConnection})
        may take: the peer has that long to take the last output and, over
        TLS, the close_notify; then the connection is aborted and the reason
        says which bound ran out.
    """

    log = Logger()

    # Set by makeConnection: None only before the connection is made, when
    # nothing here uses it.
    transport: _IConnectionTransport

    ready: bool = False
    connectionId: int | None = None
    maxPendingOutput: int | None = DEFAULT_MAX_PENDING_OUTPUT

    # Output accounting: _congested while the socket transport's buffer is
    # over its size; _room is what may still be sent until it drains.
    _tracker: _OutputTracker | None = None
    _congested: bool = False
    _room: int = 0
    # Consecutive broadcasts that skipped this connection (see Server).
    _broadcastSkips: int = 0
    # Paused by its server until the next reactor turn (see Server.broadcast).
    _throttled: bool = False
    # Such a pause was undone in the middle of a read: the transport reads
    # again once the read is delivered.
    _resumeAfterRead: bool = False

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

    closeTimeout: float = DEFAULT_CLOSE_TIMEOUT
    #: The clock of the close timer, set by the owner; the global reactor if
    #: none is set.
    _clock: IReactorTime | None = None
    #: Why this side is closing the connection, from L{closeConnection} on.
    _closing: str | None = None
    _closeTimer: IDelayedCall | None = None
    #: Which bound of the close ran out, if the close was cut short.
    _closeCut: str | None = None
    #: Bytes of output the close dropped when it was cut short.
    _closeDropped: int = 0
    # What the connection carried, for its owner's metrics: counted per read
    # and per write, never per message (see tcpsc._metrics).
    _bytesIn: int = 0
    _bytesOut: int = 0
    _messagesIn: int = 0
    _messagesOut: int = 0
    #: Messages refused because the output bound was reached.
    _outputDropped: int = 0
    #: When a server's TLS connection was accepted (its clock's time).
    _handshakeStarted: float | None = None

    def makeConnection(self, transport) -> None:
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
        if self.maxPendingOutput is not None and self._tracker is None:
            self._tracker = _OutputTracker.attach(self)
        observer = self._observer
        if observer is not None:
            observer.connectionReady(self)  # type: ignore[arg-type]
        if self.ready:
            self.connectionReady()

    def readConnectionLost(self) -> None:
        """
        The peer closed its sending side (a half-close, as C{nc -N} or
        C{shutdown(SHUT_WR)} do): everything it sent was delivered; write
        what is pending, replies included, then close.  Without this Twisted
        drops the connection at once, unsent output with it.  (Over TLS the
        peer's close_notify ends the connection instead: TLS has no
        half-close.)
        """
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        This side was closed for writing (C{loseWriteConnection}); reading
        goes on.
        """

    def closeConnection(self, why: str = "closeConnection() called") -> None:
        """
        Close the connection, bounded by C{closeTimeout}: stop delivering what
        arrives (nothing more reaches the application than it can still
        answer), write what is pending (over TLS, then close_notify), then
        close the socket.  A peer that does not take the output within
        C{closeTimeout} seconds gets the connection aborted.  Unlike
        C{transport.loseConnection()}, which waits as long as the peer
        makes it.

        @param why: the reason, in words (C{"idle timeout (60 s)"}): it is
            what C{connectionLost} receives (as L{ClosedLocally}, or
            L{AbortedLocally} if a bound ran out) and what is logged.
        """
        if self._closing is not None or not self.connected:
            return
        self._closing = why
        # MessageProtocol holds (and then drops) what it parses from now on;
        # the transport stops reading, unless it must read to close (a TLS
        # transport that waits for the peer's close_notify).
        self._paused = True
        transport = self.transport
        if not getattr(transport, "waitsForCloseNotify", ISSLTransport.providedBy(transport)):
            transport.pauseProducing()
        clock = self._clock
        if clock is None:
            from twisted.internet import reactor as clock
        assert clock is not None
        self._closeTimer = clock.callLater(self.closeTimeout, self._closeTimedOut)
        transport.loseConnection()

    def _abort(self, why: str) -> None:
        """
        Abort the connection at once (nothing pending is written), for
        C{why}, which C{connectionLost} receives as L{AbortedLocally}.
        """
        if not self.connected:
            return
        if self._closing is None:
            self._closing = why
            self._closeCut = ""
        self.transport.abortConnection()

    def _closeTimedOut(self) -> None:
        self._closeTimer = None
        if not self.connected:
            return
        unsent = self._closeDropped = self._unsentBytes()
        timeout = f"{self.closeTimeout:g} s"
        if unsent:
            self._closeCut = f"the peer did not read the last {unsent} bytes within {timeout}"
        elif ISSLTransport.providedBy(self.transport):
            self._closeCut = f"the peer did not answer close_notify within {timeout}"
        else:
            self._closeCut = f"the connection did not close within {timeout}"
        self.transport.abortConnection()

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
        timer, self._closeTimer = self._closeTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        closing = self._closing
        if closing is not None:
            cut = self._closeCut
            if cut is None:
                reason = Failure(ClosedLocally(closing))
            else:
                reason = Failure(AbortedLocally(f"{closing}; {cut}" if cut else closing))
        # Twisted never clears this flag; clearing it here keeps a readiness
        # gate or handshake that completes after the loss from making a dead
        # connection ready (and reporting it ready after it was closed).
        self.connected = False
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            tracker.detach()
        observer = self._observer
        if observer is not None:
            observer.connectionClosed(self, reason, wasReady)  # type: ignore[arg-type]

    def pauseReading(self) -> None:
        """
        Stop delivering received data and stop reading from the socket, so
        that the peer is slowed down by TCP flow control.
        """
        if self._paused:
            # Paused by the application now, whoever paused it first: the
            # server no longer resumes it at the next turn.
            self._throttled = False
            return
        self._paused = True
        if self.connected:
            self.transport.pauseProducing()

    def resumeReading(self) -> None:
        """
        Undo L{pauseReading}: deliver what was held back, then read again.
        """
        if not self._paused or self._closing is not None:
            return
        self._paused = False
        # What was held arrived first: deliver it before reading more, or a
        # transport that delivers on resumeProducing would overtake it.
        self._deliverHeld()
        self._resumeAfterRead = False
        if not self._paused and self.connected:
            self.transport.resumeProducing()

    def _deliverHeld(self) -> None:
        """
        Deliver what was held back while paused; a handler may pause again.
        """

    # -- output bound -----------------------------------------------------

    def outputPaused(self) -> None:
        """
        Called when the connection becomes congested: the transport holds
        more than it writes at once, because the peer reads more slowly than
        this side sends.  From now on sending accepts at most
        C{maxPendingOutput} more bytes until L{outputResumed}.  Override it
        to slow down; for example, a protocol that answers every message
        calls L{pauseReading} here and L{resumeReading} in L{outputResumed},
        which passes the back-pressure on to its own peer.
        """

    def outputResumed(self) -> None:
        """
        Called when the transport has written everything after
        L{outputPaused}: sending is no longer bounded.
        """

    def _lightRead(self, left: int) -> bool:
        """
        Paused in the middle of a read: if only its server paused it (for
        the turn's broadcast work, see L{tcpsc.Server.broadcast}) and at
        most L{_LIGHT_READ} messages of the read are left, undo the pause
        and go on: a connection that sends little, a message at a time, is
        not made to wait a turn for each, while one that floods still is
        (a read holds at most 64 KiB, so this adds a bounded amount to a
        turn).

        @return: whether the pause was undone.
        """
        if not self._throttled or left > _LIGHT_READ or self._closing is not None:
            return False
        self._throttled = False
        self._paused = False
        # The transport is resumed once the read is delivered (by
        # dataReceived, or by resumeReading when the read was held).
        self._resumeAfterRead = True
        return True

    def _outputCongested(self) -> None:
        self._congested = True
        bound = self.maxPendingOutput
        room = sys.maxsize if bound is None else bound
        share = self._budgetRoom()
        self._room = room if share is None or share >= room else share
        observer = self._observer
        congested = getattr(observer, "outputCongested", None)
        if congested is not None:
            congested(self)
        self._callHook(self.outputPaused)

    def _budgetRoom(self, buffered: int | None = None) -> int | None:
        """
        What the share of its owner's memory budget leaves for more output
        (see L{tcpsc.Server.memoryBudget}): the share less what the socket
        transport's buffers take (the bytes it wrote already from the string
        it is writing included: they stay in memory until it is done with
        that string), or the share itself where that cannot be told.
        C{None} if the owner has no budget.
        """
        share: int | None = getattr(self._observer, "_outputShare", None)
        if share is None:
            return None
        if buffered is None:
            buffered = _compat.bufferedBytes(socketTransport(self.transport))
        return share if buffered is None else max(0, share - buffered)

    def _roomLeft(self) -> int:
        """
        While congested, what may still be sent: judged by the bytes the
        socket transport actually holds unsent against C{maxPendingOutput}
        (it writes some of them every reactor turn, so a peer that reads
        keeps room, even if its output never drains completely under a
        steady flow), and by the memory its buffers take against the share
        of the owner's memory budget; or, where that cannot be told, by what
        was accepted since the congestion began.  Called only when the
        accepted bytes ran out.
        """
        transport = socketTransport(self.transport)
        unsent = _compat.unsentBytes(transport)
        if unsent is None:
            return self._room
        bound = self.maxPendingOutput
        room = sys.maxsize if bound is None else bound - unsent
        share = self._budgetRoom(_compat.bufferedBytes(transport))
        if share is not None and share < room:
            room = share
        if room > self._room:
            self._room = room
        return self._room

    def _takeRoom(self, size: int) -> bool:
        """
        While congested, take C{size} bytes of what may still be sent (see
        L{_roomLeft}); when they do not fit, count a dropped write instead.

        @return: whether the C{size} bytes may be written.
        """
        if size > self._room and size > self._roomLeft():
            self._outputDropped += 1
            return False
        self._room -= size
        return True

    def _outputDrained(self) -> None:
        if not self._congested:
            return
        self._congested = False
        self._room = 0
        self._broadcastSkips = 0
        drained = getattr(self._observer, "outputDrained", None)
        if drained is not None:
            drained(self)
        self._callHook(self.outputResumed)

    def _callHook(self, hook: Callable[[], object]) -> None:
        # Called by the transport, in the middle of a write: an exception
        # here would end up in the transport, or in an unrelated sender.
        try:
            hook()
        except Exception:
            self.log.failure(
                "{hook} raised an exception (connection {connectionId})",
                hook=getattr(hook, "__qualname__", repr(hook)),
                connectionId=self.connectionId,
            )

    def _unsentBytes(self) -> int:
        """
        How many bytes the socket transport holds that the peer was not sent
        yet, for reporting what closing a connection by force drops.
        """
        unsent = _compat.unsentBytes(socketTransport(self.transport))
        if unsent is None:
            # No buffer to look at: what was accepted while congested.
            bound = self.maxPendingOutput
            return max(0, bound - self._room) if self._congested and bound is not None else 0
        return unsent


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
    _buffer: _Partial
    _discarded: int = -1
    _discardTail: bytes = b""
    # True while messageTooLong is called for a message still arriving (its
    # length so far), False for a complete one (its exact length).
    _tooLongSoFar: bool = False
    # The size of a partial message at which the owner is told how much this
    # connection buffers (see Server.memoryBudget); _reported: whether it was.
    _reportAt: int = sys.maxsize
    _reported: bool = False
    _held: list[bytes]
    # The rest of a read held back by a pause in the middle of its messages:
    # (its bytes, where the first message not delivered starts in them, how
    # many complete messages are left, whether their length must be
    # checked).  It comes before what _held holds.
    _heldSplit: tuple[bytes, int, int, bool] | None = None
    # The memory that takes, as last told to the owner (0: none held).
    _heldReported: int = 0
    # Replies made while one read is being handled, written at its end as one
    # write.  None outside of that.
    _batch: list[bytes] | None = None
    # The list of messages being given to messagesReceived, and how many of
    # them its default did not deliver because the connection was paused.
    _delivering: list[bytes] | None = None
    _undelivered: int = 0
    # The batch of replies holds a message of _LARGE_MESSAGE bytes or more.
    _batchLarge: bool = False
    # Settings read at makeConnection for the hot path of sendMessage.
    # _fastLimit is the length limit, or -1 while the connection is congested
    # (which sends every message down the checked path); _lengthLimit keeps
    # the limit itself.
    _suffix: bytes = b"\n"
    _fastLimit: int = sys.maxsize
    _lengthLimit: int = sys.maxsize
    _fastByte: int | None = None

    def makeConnection(self, transport) -> None:
        # State first, so that connectionLost after a refused connection
        # reports the loss rather than failing on missing attributes.
        self._buffer = _Partial()
        self._held = []
        delimiter = self.delimiter
        if not isinstance(delimiter, bytes) or not delimiter:
            raise ValueError(f"delimiter must be non-empty bytes, not {delimiter!r}")
        if ISSLTransport.providedBy(transport):
            self._flushBeforeClosing(transport)
        # The settings are read once, here: the hot path of sendMessage then
        # needs no attribute lookups beyond these, and a one-byte delimiter
        # is searched for as an int (a memchr), several times faster than a
        # bytes search on short messages.
        append = self.messageAppend
        self._suffix = append + delimiter
        maxLength = self.maxMessageLength
        # Large messages take the checked path too: they are not copied to
        # append the delimiter (see _flushBatch).
        self._fastLimit = self._lengthLimit = min(
            sys.maxsize if maxLength is None else maxLength, _LARGE_MESSAGE - 1
        )
        self._fastByte = delimiter[0] if len(delimiter) == 1 and not append else None
        super().makeConnection(transport)

    # -- receiving --------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """
        Split C{data} into messages and deliver them in order.
        """
        self._bytesIn += len(data)
        if self._paused:
            if self._closing is None:
                self._held.append(data)
            return
        batch: list[bytes] = []
        self._batch = batch
        try:
            self._parse(data)
        finally:
            self._batch = None
            if batch:
                self._flushBatch(batch)
        if self._resumeAfterRead:
            # See _lightRead: the transport reads again once this read is
            # delivered, not before (one that delivers on resumeProducing
            # would overtake it).
            self._resumeAfterRead = False
            if not self._paused and self.connected:
                self.transport.resumeProducing()

    def _flushBeforeClosing(self, transport) -> None:
        """
        Make C{transport.loseConnection} write the batched replies first.

        A TLS transport drops what is written after C{loseConnection} (its
        close_notify is already out), and a handler that replies and then
        closes expects the reply to go out.  Batching replies on TLS too is
        worth this: one TLS write per read instead of one per message nearly
        doubles the rate of small messages.  (Twisted's own TLS transport
        sets C{write} on its instances the same way.)
        """
        loseConnection = transport.loseConnection

        def flushThenLoseConnection() -> None:
            batch = self._batch
            if batch:
                self._flushBatch(batch)
            loseConnection()

        transport.loseConnection = flushThenLoseConnection

    def _flushBatch(self, batch: list[bytes]) -> None:
        """
        Write the messages sent while one read was handled as one frame
        sequence: the batch holds them without their common suffix
        (C{messageAppend + delimiter}), which one join puts back.

        What the socket takes goes out at once, in the turn that read
        (L{_compat.writeNow}).  Where the batch holds a large message, the
        frames are joined only once: by the transport, given them as one
        C{writeSequence} (it copies what a write adds to what it still
        holds), or here for a socket transport of Twisted's, to be sent at
        once; never by both.
        """
        self._messagesOut += len(batch)
        suffix = self._suffix
        if self._batchLarge:
            self._batchLarge = False
            sequence = _frames(batch, suffix)
            self._bytesOut += sum(map(len, sequence))
            transport = self.transport
            if transport.__class__ is _compat.appendableTransport():
                # Sent in this turn (writeNow): joined here rather than by
                # the transport's next turn, still one copy.
                _compat.writeNow(transport, b"".join(sequence))
            else:
                transport.writeSequence(sequence)
            batch.clear()
            return
        batch.append(b"")
        data = suffix.join(batch)
        self._bytesOut += len(data)
        _compat.writeNow(self.transport, data)
        batch.clear()

    def _parse(self, data: bytes) -> None:
        delimiter = self.delimiter
        step = len(delimiter)
        if self._discarded >= 0:
            rest = self._discard(data, delimiter)
            if rest is None:
                return
            data = rest
        buffer = self._buffer
        start = 0
        first: bytes | None = None
        if buffer:
            # Only the new bytes are searched, plus the overlap where a
            # delimiter may straddle the old and the new bytes.
            overlap = step - 1
            if overlap:
                tailLength = min(overlap, len(buffer))
                probe = buffer.last(tailLength) + data[:overlap]
                at = probe.find(delimiter)
                if at >= 0:
                    cut = len(buffer) - tailLength + at
                    first = buffer.take()[:cut]
                    start = at - tailLength + step
            if first is None:
                at = data.find(delimiter)
                if at < 0:
                    buffer.add(data)
                    self._checkPartial(delimiter)
                    return
                first = buffer.take(data, at)
                start = at + step
            if self._reported:
                self._inputReleased()
        at = data.find(delimiter, start)
        if at >= 0:
            messages, tail, tailStart = self._split(data, start, at, delimiter)
            if first is not None:
                messages.insert(0, first)
        elif first is not None:
            messages, tail, tailStart = [first], data, start
        else:
            buffer.add(data)
            self._checkPartial(delimiter)
            return
        self._deliver(messages, tail, tailStart, delimiter)

    @staticmethod
    def _split(
        data: bytes, start: int, at: int, delimiter: bytes
    ) -> tuple[list[bytes], bytes, int]:
        """
        The complete messages of C{data} from C{start} on, the first of
        which ends at C{at}.

        @return: the messages, and where the bytes after the last of them
            are: C{(messages, tail, tailStart)}, those bytes being
            C{tail[tailStart:]}.
        """
        find = data.find
        if len(delimiter) == 1:
            # The last delimiter bounds the search: the bytes after it (a
            # message still arriving, possibly most of the read) are never
            # scanned byte by byte.
            last = data.rfind(delimiter)
            if last == at:
                return [data[start:at]], data, at + 1
            if at - start >= _FIND_ABOVE:
                messages = [data[start:at]]
                append = messages.append
                begin = at + 1
                while begin <= last:
                    at = find(delimiter, begin)
                    append(data[begin:at])
                    begin = at + 1
                return messages, data, begin
            if not start and len(data) - last <= _FIND_ABOVE:
                messages = data.split(delimiter)
                return messages, messages.pop(), 0
            return data[start:last].split(delimiter), data, last + 1
        # A longer delimiter may overlap itself, so it is only ever searched
        # for from the start.
        step = len(delimiter)
        if at - start >= _FIND_ABOVE:
            messages = []
            append = messages.append
            while at >= 0:
                append(data[start:at])
                start = at + step
                at = find(delimiter, start)
            return messages, data, start
        messages = (data[start:] if start else data).split(delimiter)
        return messages, messages.pop(), 0

    def _deliver(
        self, messages: list[bytes], tail: bytes, tailStart: int, delimiter: bytes
    ) -> None:
        """
        Deliver complete C{messages} to L{messagesReceived} (those too long
        to L{messageTooLong}, in their place), then keep C{tail[tailStart:]}
        (the bytes after the last delimiter) as the start of the next
        message.  A pause holds back what was not delivered.
        """
        count = len(messages)
        maxLength = self.maxMessageLength
        checkLength = maxLength is not None and max(map(len, messages)) > maxLength
        # Counted for the whole read; what is held back or too long is
        # taken off again (rare paths).
        self._messagesIn += count
        index = 0
        while index < count:
            end = count
            if checkLength:
                end = index
                while end < count and len(messages[end]) <= maxLength:  # type: ignore[operator]
                    end += 1
            if end > index:
                batch = messages if end - index == count else messages[index:end]
                self._undelivered = 0
                self._delivering = batch
                try:
                    self.messagesReceived(batch)
                finally:
                    self._delivering = None
                index = end - min(self._undelivered, end - index)
            else:
                self._messagesIn -= 1
                self.messageTooLong(len(messages[index]))
                index += 1
            if self._paused and not self._lightRead(count - index):
                # The rest held as one string, its messages found one at a
                # time when resumed: a connection paused after every few
                # messages (see Server.broadcast) is not split again each
                # time, and does not hold a bytes object a message.
                left = count - index
                self._messagesIn -= left
                held = messages[index:]
                held.append(tail[tailStart:] if tailStart else tail)
                self._holdSplit(delimiter.join(held), 0, left, checkLength)
                return
        if tailStart < len(tail):
            self._buffer.add(tail, tailStart)
            self._checkPartial(delimiter)

    def _deliverSplit(self) -> None:
        """
        Deliver the messages L{_deliver} held back, then keep their tail (the
        bytes after the last delimiter), as L{_deliver} would have.
        """
        split, self._heldSplit = self._heldSplit, None
        if split is None:
            return
        data, start, left, checkLength = split
        delimiter = self.delimiter
        if left and type(self).messagesReceived is not MessageProtocol.messagesReceived:
            # A batch hook of its own: the held messages are one batch, and
            # a pause in it takes effect after it, so they are split once.
            if self._heldReported:
                self._reportHeld(0)
            messages = (data[start:] if start else data).split(delimiter, left)
            tail = messages.pop()
            self._deliver(messages, tail, 0, delimiter)
            return
        maxLength = self.maxMessageLength
        received = self.messageReceived
        step = len(delimiter)
        find = data.find
        # Counted for all the held messages; what is held again or too
        # long is taken off again.
        self._messagesIn += left
        while left:
            at = find(delimiter, start)
            message = data[start:at]
            start = at + step
            left -= 1
            if checkLength and len(message) > maxLength:  # type: ignore[operator]
                self._messagesIn -= 1
                self.messageTooLong(len(message))
            else:
                received(message)
            if self._paused and not self._lightRead(left):
                self._messagesIn -= left
                self._holdSplit(data, start, left, checkLength)
                return
        if self._heldReported:
            self._reportHeld(0)
        if start < len(data):
            self._buffer.add(data, start)
            self._checkPartial(delimiter)

    def _holdSplit(self, data: bytes, start: int, left: int, checkLength: bool) -> None:
        """
        Hold the rest of a read, from C{start} in C{data} on (C{left}
        complete messages, then the start of the next), until the connection
        is resumed, and tell the owner how much memory it takes (see
        L{tcpsc.Server.memoryBudget}).
        """
        self._heldSplit = (data, start, left, checkLength)
        if self._heldReported != len(data):
            self._reportHeld(len(data))

    def _reportHeld(self, size: int) -> None:
        self._heldReported = size
        held = getattr(self._observer, "inputHeld", None)
        if held is not None:
            held(self, size)

    def _checkPartial(self, delimiter: bytes) -> None:
        maxLength = self.maxMessageLength
        buffer = self._buffer
        if len(buffer) >= self._reportAt:
            self._reported = True
            self._observer.inputBuffered(self, len(buffer))  # type: ignore[union-attr]
            if not buffer:
                return  # dropped by the owner
        if maxLength is None or len(buffer) <= maxLength + len(delimiter) - 1:
            return
        if self._reported:
            self._inputReleased()
        # Too long already: start dropping, keep only what could be the start
        # of a delimiter.
        overlap = len(delimiter) - 1
        self._discarded = len(buffer)
        self._discardTail = buffer.last(overlap) if overlap else b""
        buffer.clear()
        # The last bytes may be the start of the delimiter: report only the
        # bytes certainly part of the message, still more than the maximum.
        self._tooLongSoFar = True
        try:
            self.messageTooLong(self._discarded - overlap)
        finally:
            self._tooLongSoFar = False

    def _inputReleased(self) -> None:
        self._reported = False
        self._observer.inputReleased(self)  # type: ignore[union-attr]

    def dropPartialMessage(self) -> int:
        """
        Drop the partial message buffered so far: its bytes, and those that
        follow up to the next delimiter, are discarded as those of a message
        too long are (without calling L{messageTooLong}); the connection is
        kept, and the messages after it are delivered.

        @return: how many bytes were dropped from the buffer.
        """
        buffer = self._buffer
        size = len(buffer)
        if not size:
            return 0
        overlap = len(self.delimiter) - 1
        self._discarded = size
        self._discardTail = buffer.last(overlap) if overlap else b""
        buffer.clear()
        if self._reported:
            self._inputReleased()
        return size

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

    def messagesReceived(self, messages: list[bytes]) -> None:
        """
        Called with the complete messages of one read, in order: each
        message exactly once, in one call or another.  Override it to handle
        a batch at a time (say, to answer all of them with one write, or to
        take one lock for all of them); the default calls L{messageReceived}
        for each.

        A message longer than C{maxMessageLength} is not in any batch: the
        messages before it and those after it come in two calls, with
        L{messageTooLong} called in between.  L{pauseReading} (or
        L{closeConnection}) while a batch is handled takes effect after it:
        the following messages are held until L{resumeReading} (or dropped
        with the connection), as in the default, which holds the rest of its
        batch when L{messageReceived} pauses.

        @param messages: the messages without their delimiters (but with
            the sender's C{messageAppend}); the list is the hook's to keep.
        """
        received = self.messageReceived
        if messages is not self._delivering:
            # Called with a list of the application's own: nothing of it
            # can be held back.
            for message in messages:
                received(message)
            return
        for index, message in enumerate(messages, 1):
            received(message)
            if self._paused and not self._lightRead(len(messages) - index):
                # The caller (_deliver) holds the rest.
                self._undelivered = len(messages) - index
                return

    def messageReceived(self, message: bytes) -> None:
        """
        Called with each message, in order, exactly once (by the default
        L{messagesReceived}).  Override it; the default hands the message
        to the owning server's or client's C{onMessage} callback, if any.

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
        warning; on a server's connection, the server's log summary counts
        it (the first is logged in full, then one line every 5 s says how
        many more were dropped: see L{tcpsc.Server.eventCounts}).

        @param length: the message's length, or the number of its bytes
            received when it was found too long (it may not be complete yet).
        """
        if self._tooLongSoFar:
            format = (
                "Dropping a message from {peer} (connection {connectionId}): "
                "{size} received without a delimiter, more than maxMessageLength "
                "({maxMessageLength}); the rest of it is discarded up to the next "
                "delimiter"
            )
        else:
            format = (
                "Dropped a message of {size} from {peer} (connection {connectionId}): "
                "longer than maxMessageLength ({maxMessageLength})"
            )
        fields = dict(
            length=length,
            size=plural(length, "byte"),
            complete=not self._tooLongSoFar,
            peer=describeAddress(self.transport.getPeer()) if self.transport else "<not connected>",
            connectionId=self.connectionId,
            maxMessageLength=self.maxMessageLength,
        )
        events = getattr(self._observer, "_events", None)
        if events is not None:
            events.record("messageTooLong", format, **fields)
        else:
            self.log.warn(format, **fields)

    def resumeReading(self) -> None:
        """
        Deliver the messages held back by L{pauseReading}, in order, then
        read from the socket again.
        """
        super().resumeReading()

    def _deliverHeld(self) -> None:
        if self._heldSplit is not None:
            batch: list[bytes] = []
            self._batch = batch
            try:
                self._deliverSplit()
            finally:
                self._batch = None
                if batch:
                    self._flushBatch(batch)
            if self._paused:
                return
        held = self._held
        if held:
            self._held = []
            data = b"".join(held)
            # Counted when it was received.
            self._bytesIn -= len(data)
            self.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Deliver what L{pauseReading} held back (it was received, so it is not
        lost), unless this side closed the connection (L{closeConnection}:
        then nothing can be answered any more), then report the end of the
        connection.  A handler pausing
        again does not hold anything back any more: nothing follows.
        """
        if self._closing is not None:
            # This side closed it: what was held can no longer be answered.
            self._held = []
            self._heldSplit = None
        while True:
            split, self._heldSplit = self._heldSplit, None
            if split is not None:
                data, start, _, _ = split
                self._held.insert(0, data[start:])
            if not self._held:
                break
            held, self._held = self._held, []
            self._paused = False
            self._parse(b"".join(held))
        super().connectionLost(reason)

    # -- sending ----------------------------------------------------------

    def _outputCongested(self) -> None:
        self._fastLimit = -1
        super()._outputCongested()

    def _outputDrained(self) -> None:
        if self._congested:
            self._fastLimit = self._lengthLimit
        super()._outputDrained()

    def sendMessage(self, message: bytes | str) -> bool:
        """
        Send one message: C{message + messageAppend + delimiter}.

        @param message: bytes, or text to be encoded as UTF-8.  May be empty.
        @return: C{True} if the message was handed to the transport; C{False}
            (and nothing written) if it contains the delimiter (or would
            form one with C{messageAppend} and the delimiter after it), is
            longer than C{maxMessageLength} together with C{messageAppend},
            the connection is congested and the frame does not fit in what
            is left of C{maxPendingOutput}, or the connection is not ready
            or is closing.
        @raise UnicodeEncodeError: C{message} is text that UTF-8 cannot
            encode (a lone surrogate): a programming error, not a refused
            message, like any other wrong type.
        """
        byte = self._fastByte
        if byte is not None and message.__class__ is bytes:
            # One-byte delimiter, no append, not congested, not large: the
            # common case, kept short.  Anything else takes the checked path.
            if len(message) > self._fastLimit or byte in message:
                return self._sendChecked(message)
        else:
            if isinstance(message, str):
                message = message.encode("utf-8")
            elif not isinstance(message, bytes):
                message = bytes(message)
            if self._congested or len(message) >= _LARGE_MESSAGE or not self._framable(message):
                return self._sendChecked(message)
        if not self.ready or self.transport.disconnecting:
            return False
        batch = self._batch
        if batch is not None:
            batch.append(message)
            return True
        # A write of its own: counted as one (see _flushBatch).
        self._messagesOut += 1
        self._bytesOut += len(message) + len(self._suffix)
        if len(message) >= _LARGE_MESSAGE:
            self.transport.writeSequence((message, self._suffix))
        else:
            self.transport.write(message + self._suffix)
        return True

    def _sendReceived(self, messages: list[bytes]) -> None:
        """
        Send back C{messages} that this connection received, as
        L{sendMessage} would each: split on the delimiter and within
        C{maxMessageLength}, they are framable as they are when nothing is
        appended, so while a read is handled they join its replies without
        being looked at one by one.
        """
        batch = self._batch
        if (
            batch is None
            or self.messageAppend
            or self._congested
            or not self.ready
            or self.transport.disconnecting
        ):
            send = self.sendMessage
            for message in messages:
                send(message)
            return
        if max(map(len, messages)) >= _LARGE_MESSAGE:
            self._batchLarge = True
        batch.extend(messages)

    def _sendChecked(self, message: bytes | str) -> bool:
        """
        L{sendMessage} for what its short paths do not handle: refused
        messages, and congested connections.
        """
        if isinstance(message, str):
            message = message.encode("utf-8")
        elif not isinstance(message, bytes):
            message = bytes(message)
        if not self._framable(message):
            return False
        if not self.ready or self.transport.disconnecting:
            return False
        suffix = self._suffix
        if self._congested and not self._takeRoom(len(message) + len(suffix)):
            return False
        batch = self._batch
        if batch is not None:
            batch.append(message)
            if len(message) >= _LARGE_MESSAGE:
                self._batchLarge = True
            return True
        self._messagesOut += 1
        self._bytesOut += len(message) + len(suffix)
        if len(message) >= _LARGE_MESSAGE:
            self.transport.writeSequence((message, suffix))
        else:
            self.transport.write(message + suffix)
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

        @return: C{False} if the connection is not ready or is closing, or is
            congested and the frame does not fit in what is left of
            C{maxPendingOutput}.
        """
        if not self.ready or self.transport.disconnecting:
            return False
        if self._congested and not self._takeRoom(len(frame)):
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
        self._messagesOut += 1
        self._bytesOut += len(frame)
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
        self._bytesIn += len(data)
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

        @return: C{False} (and nothing written) if the connection is not
            ready or is closing, or is congested and C{data} does not fit in
            what is left of C{maxPendingOutput}.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not self.ready or self.transport.disconnecting:
            return False
        if data:
            if self._congested and not self._takeRoom(len(data)):
                return False
            self._bytesOut += len(data)
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
