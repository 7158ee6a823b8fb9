# -*- test-case-name: tests.test_blocking_general,tests.test_blocking_fragmented,tests.test_blocking_continuous,tests.test_blocking_regressions,tests.test_blocking_udp -*-
"""
The C++ original's classes, for programs that do not run a reactor.

L{TcpServer}, L{TlsServer}, L{TcpClient} and L{TlsClient} keep the names,
arguments and start codes of the original's four classes, as a thin shell
over L{tcpsc.Server} and L{tcpsc.Client}.  This module is their one home
(C{tcpsc} itself holds the Twisted-native API)::

    server = TcpServer(b"\\n")
    server.setWorkOnMessage(lambda clientId, message: server.sendMsg(clientId, message))
    server.start(8081)
    ...
    server.stop()

L{UdpServer} and L{UdpClient} are the same kind of shell over
L{tcpsc.DatagramServer} and L{tcpsc.DatagramClient}, for UDP: a peer is a
source address, known from its first datagram until it is forgotten.

How it runs:

  - One reactor runs in a background daemon thread shared by every object
    of this module (see L{tcpsc._reactorthread}); C{start()} and C{stop()}
    block the calling thread until the reactor has done the work, and raise
    L{ReactorThreadError} when called from the reactor thread itself.
  - Callbacks ("workers") run on worker threads, never in the reactor
    thread: per connection one after the other and in order, across
    connections concurrently (L{tcpsc._workers}).  All messages of one read
    are handed to the worker thread at once.  A worker slower than its peer
    pauses reading from that connection only; TCP flow control then slows
    the peer down.  UDP has no flow control: a UDP peer's messages beyond
    what its worker may have queued (L{UDP_INBOX_PER_PEER}) are dropped and
    counted.
  - C{sendMsg} may be called from any thread.  It validates the message in
    the calling thread and queues it; the reactor writes queued messages in
    batches (L{tcpsc._output}).  When the peer reads too slowly, C{sendMsg}
    waits up to C{sendTimeout} seconds for room, then returns C{False}.
    What a message worker sends to its own connection while it works
    through the messages of one read is held back and queued at once when
    it is done with them, or sooner once L{HOLD_TIME} has passed or
    L{HOLD_BYTES} are held (checked between messages), so that a batch
    costs one queueing and one wake-up of the reactor rather than one per
    reply; held messages count against the output bound.
  - The limits and timeouts given to a constructor make one
    L{tcpsc.Settings} value (its C{settings}), with which the core server or
    client is made.

C{start()} raises L{tcpsc.StartError} carrying the original's code.
Messages are delivered as C{bytes}; C{sendMsg} takes C{bytes} or C{str}
(encoded as UTF-8).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import _compat
from ._client import Client
from ._datagram import (
    DEFAULT_MAX_DATAGRAM,
    DatagramClient,
    DatagramFraming,
    DatagramPeer,
    DatagramServer,
)
from ._errors import (
    CertificateLoadError,
    ClientError,
    ConnectError,
    PortError,
    ServerError,
    StartError,
)
from ._events import EventSummary
from ._framing import MessageProtocol, StreamProtocol
from ._limits import FILE_MARGIN, raiseOpenFileLimit
from ._output import DEFAULT_OUTPUT_LIMIT, OutputQueue
from ._reactorthread import ReactorThread, ReactorThreadError, sharedReactorThread
from ._server import Server
from ._settings import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_FIRST_BYTE_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
    DEFAULT_MAX_PEERS,
    DEFAULT_PEER_IDLE_TIMEOUT,
    FROM_PROTOCOL,
    FromProtocol,
    Settings,
)
from ._tls import TLSConfig, loadCertificates, nameOID, peerCertificate
from ._workers import SerialExecutor, WorkerPool, currentExecutor

__all__ = [
    "ReactorThreadError",
    "TcpClient",
    "TcpServer",
    "TlsClient",
    "TlsServer",
    "UdpClient",
    "UdpServer",
]

#: Default of C{sendTimeout}: how long C{sendMsg} waits for a slow reader.
DEFAULT_SEND_TIMEOUT = 10.0

#: Received bytes queued for a connection's worker above which reading from
#: that connection pauses, and below which it resumes.
INBOX_HIGH_WATER = 1024 * 1024
INBOX_LOW_WATER = 256 * 1024

#: A message worker's replies to its own connection are held back, to be
#: queued for writing at once, while they come to less than this many bytes
#: (see L{_BlockingConnection.send}); a longer reply is queued as it is.
HOLD_BYTES = 64 * 1024

#: Seconds after the start of a batch of messages (or the last queueing of
#: held replies) after which the replies held back are queued when the
#: message worker's current call returns, though the batch is not done.
HOLD_TIME = 0.001

_getIdent = threading.get_ident
_monotonic = time.monotonic
_holding = threading.local()


#: The original names subject parts by OpenSSL NID; these are the common ones.
_NIDS = {
    13: NameOID.COMMON_NAME,
    14: NameOID.COUNTRY_NAME,
    15: NameOID.LOCALITY_NAME,
    16: NameOID.STATE_OR_PROVINCE_NAME,
    17: NameOID.ORGANIZATION_NAME,
    18: NameOID.ORGANIZATIONAL_UNIT_NAME,
    48: NameOID.EMAIL_ADDRESS,
}

_pool: WorkerPool | None = None
_poolLock = threading.Lock()


def _workerPool() -> WorkerPool:
    global _pool
    with _poolLock:
        if _pool is None:
            _pool = WorkerPool()
        return _pool


def _reactorThread() -> ReactorThread:
    """
    The shared reactor thread, refusing calls made from it.
    """
    thread = sharedReactorThread()
    if thread.isReactorThread():
        raise ReactorThreadError(
            "the blocking API of tcpsc was called from the reactor thread, where "
            "it would wait for itself forever; code running in the reactor "
            "(Twisted callbacks and protocols) must use the Twisted-native API, "
            "tcpsc.Server and tcpsc.Client, instead of tcpsc.blocking"
        )
    return thread


def _releaseHeld() -> None:
    """
    Called in a message worker: queue the frames it held back for its
    connection (see L{_BlockingConnection.send}), so that what it sent
    before is written before whatever it does next (such as C{stop()}).
    """
    conn = getattr(_holding, "conn", None)
    if conn is not None:
        conn.release()


def _asBytes(value: bytes | bytearray | memoryview | str, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def _delimiterBytes(delimiter: bytes | str | int | None) -> bytes | None:
    if delimiter is None:
        return None
    if isinstance(delimiter, bool):
        raise TypeError("the delimiter must be bytes, str or a byte value, not a bool")
    if isinstance(delimiter, int):
        if not 0 <= delimiter <= 255:
            raise ValueError(f"a delimiter given as a number must be 0-255, not {delimiter}")
        return bytes((delimiter,))
    result = _asBytes(delimiter, "the delimiter")
    if not result:
        raise ValueError("the delimiter must not be empty (use None for continuous mode)")
    return result


def _subjectOID(
    part: x509.ObjectIdentifier | str | int, error: type[Exception], whose: str
) -> x509.ObjectIdentifier:
    """
    Resolve a subject part given as a L{NameOID}, a short name (C, ST, L, O,
    OU, CN, emailAddress) or an OpenSSL NID number.
    """
    if isinstance(part, int) and not isinstance(part, bool):
        oid = _NIDS.get(part)
        if oid is None:
            raise error(f"Invalid NID {part} for {whose} certificate subject")
        return oid
    try:
        return nameOID(part)  # type: ignore[arg-type]
    except ValueError as e:
        raise error(f"Invalid subject part {part!r} for {whose} certificate subject: {e}") from None


def _subjectValue(
    certificate: x509.Certificate | None,
    part: x509.ObjectIdentifier | str | int,
    error: type[Exception],
    whose: str,
) -> str:
    oid = _subjectOID(part, error, whose)
    if certificate is None:
        raise error(f"The {whose} presented no certificate to read subject part {part!r} from")
    attributes = certificate.subject.get_attributes_for_oid(oid)
    if not attributes:
        raise error(f"The {whose} certificate subject has no part {part!r}")
    value = attributes[0].value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _certificatePath(value: str | os.PathLike[str] | bytes | None) -> str | bytes:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value
    return os.fspath(value)


def _setting(name: str) -> Any:
    """
    An attribute of the blocking classes that reads the field C{name} of
    their C{settings}; setting it replaces them with a checked copy, which
    takes effect at the first L{TcpServer.start}.
    """

    def get(self: _BlockingBase) -> Any:
        return getattr(self.settings, name)

    def set(self: _BlockingBase, value: Any) -> None:
        self.settings = self.settings.replace(**{name: value})

    return property(get, set, doc=f"C{{settings.{name}}} (see L{{tcpsc.Settings}}).")


class _BlockingMessageProtocol(MessageProtocol):
    """
    Fragmented mode: collects the messages of one read and hands them to the
    connection's worker at once.
    """

    _conn: _BlockingConnection | None = None
    _inbox: list[bytes] | None = None
    _early: list[tuple[list[bytes], int]] | None = None

    def dataReceived(self, data: bytes) -> None:
        inbox: list[bytes] = []
        self._inbox = inbox
        try:
            MessageProtocol.dataReceived(self, data)
        finally:
            self._inbox = None
        if inbox:
            self._handOver(inbox, len(data))

    def messagesReceived(self, messages: list[bytes]) -> None:
        # A read's messages at once (a pause the hand-over asks for takes
        # effect after them, as the inbox is handed over after the read).
        inbox = self._inbox
        if inbox is not None:
            inbox.extend(messages)
        else:
            self._handOver(messages, sum(map(len, messages)))

    def messageReceived(self, message: bytes) -> None:
        inbox = self._inbox
        if inbox is not None:
            inbox.append(message)
        else:
            self._handOver([message], len(message))

    def _handOver(self, batch: list[bytes], size: int) -> None:
        conn = self._conn
        if conn is not None:
            conn.handOver(batch, size)
        else:
            # Before the connection is established (TLS data that overtook
            # the readiness gate): kept until it is.
            if self._early is None:
                self._early = []
            self._early.append((batch, size))


class _BlockingStreamProtocol(StreamProtocol):
    """
    Continuous mode: hands every chunk read to the connection's worker.
    """

    _conn: _BlockingConnection | None = None
    _early: list[tuple[list[bytes], int]] | None = None

    def dataReceived(self, data: bytes) -> None:
        conn = self._conn
        if conn is not None:
            conn.handOver([data], len(data))
        else:
            if self._early is None:
                self._early = []
            self._early.append(([data], len(data)))


class _BlockingConnection:
    """
    One established connection as the blocking API sees it: its worker
    queue, its output queue, and what the getters report about it.

    @ivar finished: set once the closed worker has run.
    """

    log = Logger()

    def __init__(
        self,
        owner: _BlockingBase,
        connectionId: int,
        protocol: Any,
        consume: Callable[[_BlockingConnection, list[bytes]], None],
    ) -> None:
        self.owner = owner
        self.connectionId = connectionId
        self.protocol = protocol
        self._consume = consume
        self._reactorThread = owner._reactorThreadObject
        self.executor = SerialExecutor(_workerPool())
        self.output = OutputQueue(
            self._reactorThread.callFromThread, self._write, owner.maxPendingOutput
        )
        transport = protocol.transport
        peer = transport.getPeer()
        self.ip: str = getattr(peer, "host", "")
        self.certificate: x509.Certificate | None = peerCertificate(transport)
        self.stream: Any = None
        self.reason: Failure | None = None
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self._inbox = 0
        self._readPaused = False
        self._resumeScheduled = False
        self._fragmented = isinstance(protocol, MessageProtocol)
        # Frames the connection's own message worker sent while it works
        # through a batch of messages, queued at once (see send()); only
        # that worker's thread, named by _holder, touches them.
        self._holder: int | None = None
        self._held: list[bytes] = []
        self._heldBytes = 0
        # Sending validates in the caller's thread.  With a one-byte
        # delimiter (which messageAppend cannot contain) the rule is short
        # enough to inline; longer delimiters use the protocol's own check.
        self._delimiterByte = -1
        self._suffix: bytes | None = None
        self._appendLength = 0
        self._maxLength: int | None = None
        if self._fragmented and len(protocol.delimiter) == 1:
            # A byte value: "in" with an int is a memchr, with bytes a
            # substring search that costs several times as much.
            self._delimiterByte = protocol.delimiter[0]
            self._suffix = protocol.messageAppend + protocol.delimiter
            self._appendLength = len(protocol.messageAppend)
            self._maxLength = protocol.maxMessageLength

    # -- the reactor thread -------------------------------------------------

    def begin(self, established: Callable[[_BlockingConnection], None]) -> None:
        """
        Start serving: output back-pressure, the established worker, then
        whatever arrived before.
        """
        protocol = self.protocol
        self.output.attach(protocol.transport)
        self.executor.submit(established, self)
        protocol._conn = self
        early, protocol._early = protocol._early, None
        for batch, size in early or ():
            self.handOver(batch, size)

    def end(self, reason: Failure | None, closed: Callable[[_BlockingConnection], None]) -> None:
        """
        The connection is gone: drop unsent output, queue the closed worker
        after every message received.
        """
        self.reason = reason
        self.output.close()
        self.executor.submit(closed, self)

    def handOver(self, batch: list[bytes], size: int) -> None:
        with self._lock:
            self._inbox += size
            pause = self._inbox > INBOX_HIGH_WATER and not self._readPaused
            if pause:
                self._readPaused = True
        self.executor.submit(self._run, (batch, size))
        if pause:
            self.protocol.pauseReading()

    def _resume(self) -> None:
        with self._lock:
            self._resumeScheduled = False
            if not self._readPaused or self._inbox > INBOX_LOW_WATER:
                return
            self._readPaused = False
        self.protocol.resumeReading()

    def _write(self, data: bytes) -> None:
        protocol = self.protocol
        transport = protocol.transport
        if protocol.connected and transport is not None and not transport.disconnecting:
            # In a reactor turn of its own (the output queue's flush): sent
            # now when the socket takes it, not one more turn later.
            _compat.writeNow(transport, data)

    # -- worker threads -------------------------------------------------------

    def _run(self, work: tuple[list[bytes], int]) -> None:
        batch, size = work
        self._holder = _getIdent()
        _holding.conn = self
        try:
            self._consume(self, batch)
        finally:
            self._holder = None
            _holding.conn = None
            self.release()
            with self._lock:
                self._inbox -= size
                resume = (
                    self._readPaused
                    and not self._resumeScheduled
                    and self._inbox <= INBOX_LOW_WATER
                )
                if resume:
                    self._resumeScheduled = True
            if resume:
                self._reactorThread.callFromThread(self._resume)

    def release(self) -> None:
        """
        Queue for writing, as one frame, the frames the connection's own
        message worker held back; called in that worker's thread.
        """
        held = self._held
        if held:
            self._held = []
            self._heldBytes = 0
            self.output.putAccepted(held[0] if len(held) == 1 else b"".join(held))

    # -- any thread -----------------------------------------------------------

    def send(self, message: bytes | str) -> bool:
        if type(message) is not bytes:
            message = _asBytes(message, "the message")
        suffix = self._suffix
        if suffix is not None:
            if self._delimiterByte in message:
                return False
            maxLength = self._maxLength
            if maxLength is not None and len(message) + self._appendLength > maxLength:
                return False
            frame = message + suffix
        elif self._fragmented:
            framed = self.protocol.frame(message)
            if framed is None:
                return False
            frame = framed
        elif not message:
            return not self.output.closed
        else:
            frame = message
        if self._holder == _getIdent():
            # The connection's own message worker, in a batch of messages:
            # its frames are held and queued at once when the batch is
            # done (or HOLD_TIME has passed, or HOLD_BYTES are held), one
            # lock and at most one reactor wake-up for the lot.  They count
            # against the output bound as if queued; a frame that would not
            # fit goes the usual way, after those held.
            output = self.output
            held = self._heldBytes + len(frame)
            if held < HOLD_BYTES and output._queued + held <= output.limit and not output._closed:
                self._held.append(frame)
                self._heldBytes = held
                return True
            self.release()
            return output.put(frame, self.owner.sendTimeout)
        if _getIdent() == self._reactorThread._ident:
            return self.output.put(frame, 0)
        return self.output.put(frame, self.owner.sendTimeout)


class _BlockingObject:
    """
    What every blocking server and client shares, over TCP and UDP: the
    reactor thread, one start at a time, callbacks on worker threads, and
    waiting for the last of them in C{stop()}.
    """

    log = Logger()

    def __init__(self) -> None:
        # Set by start(): the reactor thread is started on first use.
        self._reactorThreadObject: ReactorThread = None  # type: ignore[assignment]
        self._cond = threading.Condition(threading.Lock())
        self._live: dict[int, Any] = {}
        self._inStop: set[SerialExecutor] = set()
        self._running = False
        self._starting = False
        self._workOnMessage: Callable[..., object] | None = None

    @contextmanager
    def _startingOnce(self, what: str) -> Iterator[None]:
        """
        Mark this object as starting while the block runs, so that a second
        C{start()} meanwhile, or while running, is refused.

        @param what: C{"server"} or C{"client"}, for the refusal.
        @raise StartError: code -1: already running or starting.
        """
        with self._cond:
            if self._running or self._starting:
                raise StartError(f"the {what} is already running", -1)
            self._starting = True
        try:
            yield
        finally:
            with self._cond:
                self._starting = False

    def isRunning(self) -> bool:
        """
        Whether the server listens / the client is connected.
        """
        return self._running

    def setWorkOnMessage(self, worker: Callable[..., object] | None) -> None:
        """
        Set the worker called with each received message.  In continuous
        mode it is called with each received chunk of bytes (as well as the
        chunk going to the stream).
        """
        self._workOnMessage = _checkCallable(worker)

    def _callWorker(
        self, what: str, connectionId: int, worker: Callable[..., object] | None, *args: object
    ) -> None:
        if worker is None:
            return
        try:
            worker(*args)
        except Exception:
            self.log.failure(
                "The {what} worker raised for connection {connectionId}",
                what=what,
                connectionId=connectionId,
            )

    def _waitForWorkers(self, timeout: float | None) -> bool:
        """
        Wait until the closed worker of every connection has run, except
        those of connections whose worker is itself waiting in C{stop()}
        (that worker's own closed worker runs after it returns).
        """
        me = currentExecutor()
        cond = self._cond
        with cond:
            if me is not None:
                self._inStop.add(me)
                cond.notify_all()
            try:
                return cond.wait_for(
                    lambda: all(c.executor in self._inStop for c in self._live.values()),
                    timeout,
                )
            finally:
                if me is not None:
                    self._inStop.discard(me)

    def _release(self, conn: Any) -> None:
        """
        C{conn}'s closed worker has run: L{_waitForWorkers} no longer waits
        for it.
        """
        key = conn.connectionId
        with self._cond:
            if self._live.get(key) is conn:
                del self._live[key]
            self._cond.notify_all()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()  # type: ignore[attr-defined]


class _BlockingBase(_BlockingObject):
    """
    What the blocking TCP and TLS servers and clients share: their settings
    and their connections' output.

    @ivar settings: the settings of the connections (see L{Settings}),
        made from the constructor's arguments.
    """

    def __init__(
        self,
        delimiter: bytes | str | int | None,
        messageAppend: Any,
        maxMessageLength: Any,
        sendTimeout: float | None,
        maxPendingOutput: int,
        **settings: Any,
    ) -> None:
        # The original's spelling TcpServer(b"|", 4096): a number in the place
        # of messageAppend is the maximum message length.
        if isinstance(messageAppend, int) and not isinstance(messageAppend, bool):
            if maxMessageLength is not FROM_PROTOCOL:
                raise TypeError("maxMessageLength given twice")
            maxMessageLength, messageAppend = messageAppend, b""
        self._delimiter = _delimiterBytes(delimiter)
        append = _asBytes(messageAppend if messageAppend is not None else b"", "messageAppend")
        if self._delimiter is None:
            if append or maxMessageLength is not FROM_PROTOCOL:
                raise ValueError(
                    "messageAppend and maxMessageLength apply to fragmented mode only; "
                    "give a delimiter, or leave them out for continuous mode"
                )
        else:
            settings.update(
                delimiter=self._delimiter, messageAppend=append, maxMessageLength=maxMessageLength
            )
        self.settings = Settings(**settings)
        #: Seconds C{sendMsg} waits for a slow reader before giving up.
        self.sendTimeout = sendTimeout
        #: Bytes a connection may queue for sending beyond what its socket holds.
        self.maxPendingOutput = maxPendingOutput
        super().__init__()

    @property
    def continuous(self) -> bool:
        """
        Whether this object works in continuous mode (no delimiter).
        """
        return self._delimiter is None

    def _coreArguments(self) -> dict[str, Any]:
        """
        The protocol class and the L{settings} as keyword arguments of the
        core L{Server} or L{Client}.
        """
        arguments: dict[str, Any] = (
            {"protocol": _BlockingStreamProtocol, "stream": True}
            if self._delimiter is None
            else {"protocol": _BlockingMessageProtocol}
        )
        arguments["settings"] = self.settings
        return arguments

    def _finished(self, conn: _BlockingConnection) -> None:
        conn.finished.set()
        self._release(conn)


def _checkCallable(worker: Callable[..., object] | None) -> Callable[..., object] | None:
    if worker is not None and not callable(worker):
        raise TypeError(f"a worker must be callable or None, not {worker!r}")
    return worker


class TcpServer(_BlockingBase):
    """
    A message server, as the original's C{TcpServer}.

    C{TcpServer()} serves continuous mode; C{TcpServer(delimiter)} (or
    C{TcpServer(b"|", 4096)}, C{TcpServer(b"|", maxMessageLength=4096)})
    fragmented mode.  Set the workers, then L{start}.

    Connection ids are positive integers, unique for the life of the object.

    The limits and timeouts given to the constructor are the fields of
    L{settings}, and attributes of the same names.
    """

    _tls = False

    maxConnections = _setting("maxConnections")
    maxConnectionsPerPeer = _setting("maxConnectionsPerPeer")
    firstByteTimeout = _setting("firstByteTimeout")
    handshakeTimeout = _setting("handshakeTimeout")
    idleTimeout = _setting("idleTimeout")
    closeTimeout = _setting("closeTimeout")
    logConnections = _setting("logConnections")

    def __init__(
        self,
        delimiter: bytes | str | int | None = None,
        messageAppend: bytes | str = b"",
        maxMessageLength: int | FromProtocol | None = FROM_PROTOCOL,
        *,
        maxConnections: int = DEFAULT_MAX_CONNECTIONS,
        sendTimeout: float | None = DEFAULT_SEND_TIMEOUT,
        maxPendingOutput: int = DEFAULT_OUTPUT_LIMIT,
        handshakeTimeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        closeTimeout: float = DEFAULT_CLOSE_TIMEOUT,
        maxConnectionsPerPeer: int | None = DEFAULT_MAX_CONNECTIONS_PER_PEER,
        idleTimeout: float | None = None,
        logConnections: bool = True,
        firstByteTimeout: float | None = DEFAULT_FIRST_BYTE_TIMEOUT,
    ) -> None:
        """
        @param delimiter: one or more bytes (or a str, or a byte value such
            as C{0}) ending each message; C{None} for continuous mode.
        @param messageAppend: appended to every message sent, before the
            delimiter.  A number here is taken as C{maxMessageLength}.
        @param maxMessageLength: the longest message sent or received
            (C{messageAppend} included); longer ones are refused by
            C{sendMsg} and dropped on receipt.  C{None} for no limit;
            L{FROM_PROTOCOL <tcpsc.FromProtocol>} (the default): the
            protocol's own, 16 MiB.
        @param maxConnections: connections beyond this are refused.
        @param sendTimeout: seconds C{sendMsg} waits for a slow reader to
            make room before it returns C{False}; C{None} waits forever.
        @param maxPendingOutput: bytes queued for one connection beyond which
            C{sendMsg} waits (a bound of the blocking API's own output
            queue, not L{tcpsc.Settings.maxPendingOutput}).
        @param handshakeTimeout: seconds a TLS client has for its handshake.
        @param closeTimeout: seconds L{stop} gives each connection's peer to
            take the last output (and, over TLS, close_notify) before the
            connection is aborted; 5 by default.
        @param maxConnectionsPerPeer: connections from one IP address beyond
            this are refused (256 by default); C{None} for no such limit (see
            L{tcpsc.Server.maxConnectionsPerPeer}).
        @param idleTimeout: seconds without a byte received or sent after
            which a connection is closed; C{None} never.
        @param logConnections: whether each connection established and
            closed is logged (refusals and errors are, either way).
        @param firstByteTimeout: seconds a plain TCP client has to send its
            first byte before it is closed (10 by default); C{None} for no
            such limit (see L{tcpsc.Server.firstByteTimeout}).
        """
        super().__init__(
            delimiter,
            messageAppend,
            maxMessageLength,
            sendTimeout,
            maxPendingOutput,
            maxConnections=maxConnections,
            handshakeTimeout=handshakeTimeout,
            closeTimeout=closeTimeout,
            maxConnectionsPerPeer=maxConnectionsPerPeer,
            idleTimeout=idleTimeout,
            logConnections=logConnections,
            firstByteTimeout=firstByteTimeout,
        )
        self._core: Server | None = None
        self._conns: dict[int, _BlockingConnection] = {}
        self._port: int | None = None
        self._stopDone = threading.Event()
        self._stopDone.set()
        self._workOnEstablished: Callable[[int], object] | None = None
        self._workOnClosed: Callable[[int], object] | None = None
        self._createForwardStream: Callable[[int], IO[bytes]] | None = None

    # -- workers ----------------------------------------------------------------

    def setWorkOnMessage(self, worker: Callable[[int, bytes], object] | None) -> None:
        """
        Call C{worker(clientId, message)} with each message received, on a
        worker thread; the messages of one connection in order, one at a
        time.
        """
        super().setWorkOnMessage(worker)

    def setWorkOnEstablished(self, worker: Callable[[int], object] | None) -> None:
        """
        Call C{worker(clientId)} when a connection is established (for TLS:
        after the handshake with the client verified), before its first
        message.
        """
        self._workOnEstablished = _checkCallable(worker)

    def setWorkOnClosed(self, worker: Callable[[int], object] | None) -> None:
        """
        Call C{worker(clientId)} when a connection ended, after its last
        message.
        """
        self._workOnClosed = _checkCallable(worker)

    def setCreateForwardStream(self, creator: Callable[[int], IO[bytes]] | None) -> None:
        """
        Continuous mode: call C{creator(clientId)} for each new connection;
        it returns a binary file-like object (with C{write}) that gets the
        connection's bytes, and that the server closes when the connection
        ends.  Without a creator the bytes are discarded (unless a message
        worker takes them).
        """
        self._createForwardStream = _checkCallable(creator)  # type: ignore[assignment]

    # -- start and stop -----------------------------------------------------------

    @property
    def port(self) -> int | None:
        """
        The port listened on, or C{None} when not running.
        """
        return self._port if self._running else None

    def start(self, port: int, *, interface: str = "", proxyProtocol: bool = False) -> int:
        """
        Listen on C{port}; return once listening.

        The process's soft limit of open files is raised first, up to the
        hard limit, to what C{maxConnections} connections need (a warning
        is logged when the hard limit is lower).

        @param port: 1-65535, or 0 for a free port.
        @param interface: the address to listen on; all IPv4 addresses by
            default, C{"::"} for IPv6 (and IPv4, where the system allows).
        @param proxyProtocol: behind a load balancer that sends the PROXY
            protocol (v1 or v2): every connection must start with its
            header, and L{getClientIp} is the client's address it gives
            (see L{tcpsc.Server.listen}).
        @return: the port listened on.
        @raise StartError: with C{.code}: -1 already running, 10 bad port,
            30-35 certificate files (TLS), 42 cannot listen (port in use).
        @raise ReactorThreadError: called from the reactor thread.
        """
        return self._start(port, interface, None, proxyProtocol)

    def _start(
        self,
        port: int,
        interface: str,
        tls: Callable[[], TLSConfig] | None,
        proxyProtocol: bool = False,
    ) -> int:
        reactorThread = self._reactorThreadObject = _reactorThread()
        with self._startingOnce("server"):
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise PortError(f"port {port!r} is outside 1-65535 (0 picks a free port)")
            raiseOpenFileLimit(self.settings.maxConnections + FILE_MARGIN)
            config = tls() if tls is not None else None
            listening = reactorThread.call(
                30.0, self._listen, port, interface, config, proxyProtocol
            )
            self._stopDone.clear()
            self._port = listening.getHost().port
            self._running = True
            self.log.info("Blocking server listening on port {port}", port=self._port)
            return self._port

    def _listen(
        self, port: int, interface: str, tls: TLSConfig | None, proxyProtocol: bool = False
    ) -> Any:
        if self._core is None:
            self._core = Server(
                **self._coreArguments(),
                onEstablished=self._established,
                onClosed=self._closed,
                reactor=self._reactorThreadObject.reactor,
            )
        return self._core.listen(port, interface, tls, proxyProtocol=proxyProtocol)

    def stop(self, timeout: float | None = None) -> None:
        """
        Stop listening and close every connection, after writing what
        C{sendMsg} accepted for it; the closed worker runs for each.  Returns
        when all that is done (within C{closeTimeout}, after which
        connections that did not flush are aborted) and the closed workers
        have run.

        May be called from a worker: that connection's own closed worker
        then runs after the calling worker returns.  Does nothing when not
        running.

        @param timeout: seconds to wait for the closed workers; C{None} waits
            as long as they take.
        @raise ReactorThreadError: called from the reactor thread.
        """
        if self._core is None:
            return
        reactorThread = _reactorThread()
        _releaseHeld()
        with self._cond:
            wasRunning = self._running
            self._running = False
        if wasRunning:
            try:
                reactorThread.call(self.closeTimeout + 10.0, self._stopListening)
            finally:
                self._port = None
                self._stopDone.set()
        else:
            self._stopDone.wait(self.closeTimeout + 10.0)
        if not self._waitForWorkers(timeout):
            self.log.warn("stop(): closed workers still running after {timeout} s", timeout=timeout)

    def _stopListening(self) -> Any:
        for conn in list(self._conns.values()):
            conn.output.finish()
        assert self._core is not None
        return self._core.stop()

    # -- the registry (reactor thread) ----------------------------------------

    def _established(self, clientId: int) -> None:
        assert self._core is not None
        protocol = self._core.connection(clientId)
        conn = _BlockingConnection(self, clientId, protocol, self._consume)
        with self._cond:
            self._conns[clientId] = conn
            self._live[clientId] = conn
        conn.begin(self._runEstablished)

    def _closed(self, clientId: int) -> None:
        with self._cond:
            conn = self._conns.pop(clientId, None)
        if conn is not None:
            conn.end(None, self._runClosed)

    # -- worker threads -----------------------------------------------------------

    def _runEstablished(self, conn: _BlockingConnection) -> None:
        clientId = conn.connectionId
        creator = self._createForwardStream
        if self._delimiter is None and creator is not None:
            try:
                conn.stream = creator(clientId)
            except Exception:
                self.log.failure(
                    "The forward stream creator raised for connection {connectionId}",
                    connectionId=clientId,
                )
        self._callWorker("established", clientId, self._workOnEstablished, clientId)

    def _consume(self, conn: _BlockingConnection, batch: list[bytes]) -> None:
        clientId = conn.connectionId
        if self._delimiter is None:
            stream = conn.stream
            if stream is not None:
                try:
                    for chunk in batch:
                        stream.write(chunk)
                    flush = getattr(stream, "flush", None)
                    if flush is not None:
                        flush()
                except Exception:
                    self.log.failure(
                        "Writing to the forward stream of connection {connectionId} failed",
                        connectionId=clientId,
                    )
        worker = self._workOnMessage
        if worker is None:
            return
        deadline = _monotonic() + HOLD_TIME
        for message in batch:
            try:
                worker(clientId, message)
            except Exception:
                self.log.failure(
                    "The message worker raised for connection {connectionId}", connectionId=clientId
                )
            if conn._held and _monotonic() >= deadline:
                conn.release()
                deadline = _monotonic() + HOLD_TIME

    def _runClosed(self, conn: _BlockingConnection) -> None:
        clientId = conn.connectionId
        try:
            self._callWorker("closed", clientId, self._workOnClosed, clientId)
        finally:
            stream, conn.stream = conn.stream, None
            close = getattr(stream, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    self.log.failure(
                        "Closing the forward stream of connection {connectionId} failed",
                        connectionId=clientId,
                    )
            self._finished(conn)

    # -- any thread -------------------------------------------------------------------

    def sendMsg(self, clientId: int, msg: bytes | str) -> bool:
        """
        Send a message (continuous mode: bytes as they are) to a client.

        Waits up to C{sendTimeout} seconds while the client reads too
        slowly to make room.  Called by the client's own message worker,
        the message is held back until the worker is done with the
        messages of one read (or L{HOLD_TIME} has passed; see the module's
        description), then written with the other replies.

        @return: C{False} if the id is not connected, the message contains
            the delimiter or is longer than C{maxMessageLength} (together with
            C{messageAppend}), or the client did not make room in time.
        """
        conn = self._conns.get(clientId)
        if conn is None:
            return False
        return conn.send(msg)

    def getAllClientIds(self) -> list[int]:
        """
        The ids of the connected clients, ascending.
        """
        with self._cond:
            return sorted(self._conns)

    def _connection(self, clientId: int, what: str) -> _BlockingConnection:
        conn = self._conns.get(clientId)
        if conn is None:
            raise ServerError(f"No connected client {clientId!r} to read {what} from")
        return conn

    def getClientIp(self, clientId: int) -> str:
        """
        The IP address (IPv4 or IPv6) of a connected client.

        @raise ServerError: no such client.
        """
        return self._connection(clientId, "the IP address").ip


class _Certificates:
    """
    The certificate settings the TLS classes share: paths (or PEM bytes) set
    before C{start()} and read then, as in the original.
    """

    _ca: str | bytes = ""
    _cert: str | bytes = ""
    _key: str | bytes = ""

    def setCertificates(
        self,
        ca: str | os.PathLike[str] | bytes | None = "",
        cert: str | os.PathLike[str] | bytes | None = "",
        key: str | os.PathLike[str] | bytes | None = "",
    ) -> None:
        """
        Set the paths (or PEM bytes) of the CA certificate, this side's
        certificate and its key; read at C{start}.  Empty means not set.
        """
        self._ca = _certificatePath(ca)
        self._cert = _certificatePath(cert)
        self._key = _certificatePath(key)

    def clearCertificates(self) -> None:
        """
        Forget the certificates set.
        """
        self.setCertificates("", "", "")


class TlsServer(_Certificates, TcpServer):
    """
    A TLS 1.3 message server, as the original's C{TlsServer}.

    Certificates are given by L{setCertificates} or to L{start}.  Without a
    CA, clients are not asked for certificates (and
    L{requireClientAuthentication} has no effect, as in the original); with a
    CA, clients must present a certificate issued by it unless
    C{requireClientAuthentication(False)} was called.
    """

    _tls = True

    def __init__(
        self, *args: Any, allowedClients: Iterable[str] | None = None, **kwargs: Any
    ) -> None:
        """
        Takes L{TcpServer}'s arguments, and:

        @param allowedClients: the clients served, by the names in their
            certificates (see L{tcpsc.TLSConfig.allowedClients}); others are
            refused after the handshake and logged.  C{None}: every client
            the CA vouches for.  Needs a CA and client authentication.
        """
        super().__init__(*args, **kwargs)
        self._clientAuth = True
        if isinstance(allowedClients, str | bytes):
            raise TypeError(
                f"allowedClients must be a collection of names, not one string: "
                f"[{allowedClients!r}]"
            )
        self.allowedClients: frozenset[str] | None = (
            None if allowedClients is None else frozenset(allowedClients)
        )

    def requireClientAuthentication(self, clientAuth: bool = True) -> None:
        """
        Whether clients must present a certificate issued by the CA (default
        C{True}); has no effect without a CA.
        """
        self._clientAuth = bool(clientAuth)

    def start(
        self,
        port: int,
        ca: str | os.PathLike[str] | bytes | None = None,
        cert: str | os.PathLike[str] | bytes | None = None,
        key: str | os.PathLike[str] | bytes | None = None,
        *,
        interface: str = "",
        proxyProtocol: bool = False,
    ) -> int:
        """
        Listen on C{port} with TLS 1.3; return once listening.

        @param ca: if any of C{ca}, C{cert}, C{key} is given, they replace
            the certificates set by L{setCertificates}.
        @return: the port listened on.
        @raise StartError: as L{TcpServer.start}, and 30/31/32 for a CA,
            certificate or key file that cannot be read (31/32 also when not
            set), 33/34/35 for one that is not valid (35 also for a key that
            does not match the certificate).
        """
        if ca is not None or cert is not None or key is not None:
            self.setCertificates(ca, cert, key)
        return self._start(port, interface, self._tlsConfig, proxyProtocol)

    def _tlsConfig(self) -> TLSConfig:
        ca: str | bytes | None = self._ca or None
        if ca is not None and not self._clientAuth:
            # The original reads the CA file but asks clients for nothing;
            # read it for the same errors (30, 33), then leave it out.
            loadCertificates(ca, "CA certificate", 30, 33)
            ca = None
        if self.allowedClients is not None and ca is None:
            raise CertificateLoadError(
                "allowedClients needs client certificates: set a CA and leave client "
                "authentication on",
                30,
                "",
            )
        return TLSConfig(
            ca=ca,
            cert=self._cert or None,
            key=self._key or None,
            requireClientCertificate=ca is not None,
            allowedClients=self.allowedClients,
        )

    def reloadCertificates(self) -> int:
        """
        Read the CA, certificate and key given to L{start} (or
        L{setCertificates} before it) again, and serve the handshakes that
        start from now on with them; connected clients are not disturbed
        (see L{tcpsc.Server.reloadCertificates}).  If a file cannot be used
        (unreadable, invalid, a key that does not match, a certificate
        expired or not valid yet), the certificates in use are kept and the
        cause is logged and raised.

        @return: 1 when the files were taken up, 0 when not running.
        @raise StartError: the code of the file's problem (30-35; 34 for a
            certificate that is not valid now); nothing changed.
        @raise ReactorThreadError: called from the reactor thread.
        """
        core = self._core
        if core is None or not self._running:
            return 0
        result: int = _reactorThread().call(30.0, core.reloadCertificates)
        return result

    def getSubjPartFromClientCert(
        self, clientId: int, subjPart: x509.ObjectIdentifier | str | int
    ) -> str:
        """
        One part of the subject of a client's certificate.

        @param subjPart: a L{NameOID}, a short name (C, ST, L, O, OU, CN,
            emailAddress) or the original's OpenSSL NID number (13 CN,
            14 C, 15 L, 16 ST, 17 O, 18 OU, 48 emailAddress).
        @raise ServerError: no such client, the client presented no
            certificate, or its subject has no such part.
        """
        conn = self._connection(clientId, "a certificate subject part")
        return _subjectValue(conn.certificate, subjPart, ServerError, "client")


class TcpClient(_BlockingBase):
    """
    A message client, as the original's C{TcpClient}.

    C{TcpClient()} works in continuous mode and writes what it receives to
    C{output} (default: standard output); C{TcpClient(delimiter)} in
    fragmented mode, handing messages to the worker set by
    L{setWorkOnMessage}.
    """

    _tls = False

    def __init__(
        self,
        delimiter: bytes | str | int | None = None,
        messageAppend: bytes | str = b"",
        maxMessageLength: int | FromProtocol | None = FROM_PROTOCOL,
        output: IO[bytes] | None = None,
        *,
        sendTimeout: float | None = DEFAULT_SEND_TIMEOUT,
        maxPendingOutput: int = DEFAULT_OUTPUT_LIMIT,
        connectTimeout: float = 30.0,
    ) -> None:
        """
        @param delimiter: as for L{TcpServer}; C{None} for continuous mode.
        @param messageAppend: as for L{TcpServer}.
        @param maxMessageLength: as for L{TcpServer}.
        @param output: continuous mode: a binary file-like object receiving
            the bytes from the server (written and flushed from a worker
            thread; not closed by the client).  Default C{sys.stdout.buffer}.
        @param sendTimeout: as for L{TcpServer}.
        @param maxPendingOutput: as for L{TcpServer}.
        @param connectTimeout: seconds L{start} may take to connect (and
            complete the TLS handshake) before it fails with code 50.
        """
        if hasattr(delimiter, "write"):
            # The original's TcpClient(std::ostream&) spelling.
            output, delimiter = delimiter, None  # type: ignore[assignment]
        super().__init__(delimiter, messageAppend, maxMessageLength, sendTimeout, maxPendingOutput)
        self.output = output
        self.connectTimeout = connectTimeout
        self._core: Client | None = None
        self._conn: _BlockingConnection | None = None
        self._connections = 0
        self._workOnClosed: Callable[[BaseException], object] | None = None

    def setWorkOnMessage(self, worker: Callable[[bytes], object] | None) -> None:
        """
        Call C{worker(message)} with each message received, on a worker
        thread, in order, one at a time.
        """
        super().setWorkOnMessage(worker)

    def setWorkOnClosed(self, worker: Callable[[BaseException], object] | None) -> None:
        """
        Call C{worker(reason)} when the connection ends, whoever ended it,
        after the last message; C{reason} is the exception that ended it
        (such as L{twisted.internet.error.ConnectionDone}).  The original has
        no such callback; it only turns C{isRunning()} false.
        """
        self._workOnClosed = _checkCallable(worker)

    def start(self, host: str, port: int) -> None:
        """
        Connect to C{host}:C{port}; return once connected (for TLS: once the
        handshake is done and the server accepted this client).

        @raise StartError: with C{.code}: -1 already running, 10 bad port,
            30-35 certificate files (TLS), 50 cannot connect (refused,
            unresolvable host, timed out), 60 TLS handshake failed (also when
            either side rejected the other's certificate).
        @raise ReactorThreadError: called from the reactor thread.
        """
        reactorThread = self._reactorThreadObject = _reactorThread()
        with self._startingOnce("client"):
            tls = self._tlsConfig()
            core = Client(
                **self._coreArguments(),
                onEstablished=self._established,
                onClosed=self._closed,
                connectTimeout=self.connectTimeout,
                reactor=reactorThread.reactor,
            )
            self._core = core
            try:
                reactorThread.call(self.connectTimeout + 10.0, core.connect, host, port, tls)
            except TimeoutError as e:
                reactorThread.callFromThread(core.disconnect)
                raise StartError(f"connecting to {host}:{port} did not complete", 50) from e
            except BaseException:
                if self._core is core:
                    self._core = None
                raise

    def _tlsConfig(self) -> TLSConfig | None:
        return None

    def stop(self, timeout: float | None = None) -> None:
        """
        Close the connection after writing what C{sendMsg} accepted; return
        once it is closed and the closed worker has run (unless called from
        this client's own worker).  Does nothing when not connected.

        @raise ReactorThreadError: called from the reactor thread.
        """
        core = self._core
        if core is None and not self._live:
            return
        reactorThread = _reactorThread()
        _releaseHeld()
        if core is not None:
            reactorThread.call(self.connectTimeout + 10.0, self._disconnect, core)
        if not self._waitForWorkers(timeout):
            self.log.warn("stop(): the closed worker still runs after {timeout} s", timeout=timeout)

    def _disconnect(self, core: Client) -> Any:
        conn = self._conn
        if conn is not None:
            conn.output.finish()
        if self._core is core:
            self._core = None
        return core.disconnect()

    # -- the reactor thread -------------------------------------------------------

    def _established(self, protocol: Any) -> None:
        self._connections += 1
        conn = _BlockingConnection(self, self._connections, protocol, self._consume)
        with self._cond:
            self._conn = conn
            self._live[conn.connectionId] = conn
            self._running = True
        conn.begin(self._runEstablished)

    def _closed(self, reason: Failure) -> None:
        with self._cond:
            conn, self._conn = self._conn, None
            self._running = False
        if conn is not None:
            conn.end(reason, self._runClosed)

    # -- worker threads -----------------------------------------------------------

    def _runEstablished(self, conn: _BlockingConnection) -> None:
        pass

    def _consume(self, conn: _BlockingConnection, batch: list[bytes]) -> None:
        if self._delimiter is None:
            output = self.output if self.output is not None else sys.stdout.buffer
            try:
                for chunk in batch:
                    output.write(chunk)
                output.flush()
            except Exception:
                self.log.failure("Writing received bytes to the client's output failed")
        worker = self._workOnMessage
        if worker is None:
            return
        deadline = _monotonic() + HOLD_TIME
        for message in batch:
            try:
                worker(message)
            except Exception:
                self.log.failure("The client's message worker raised")
            if conn._held and _monotonic() >= deadline:
                conn.release()
                deadline = _monotonic() + HOLD_TIME

    def _runClosed(self, conn: _BlockingConnection) -> None:
        try:
            reason = conn.reason.value if conn.reason is not None else None
            self._callWorker("closed", conn.connectionId, self._workOnClosed, reason)
        finally:
            self._finished(conn)

    # -- any thread -------------------------------------------------------------------

    def sendMsg(self, msg: bytes | str) -> bool:
        """
        Send a message (continuous mode: bytes as they are) to the server.
        Called by the client's message worker, the message is held back as
        L{TcpServer.sendMsg} describes.

        @return: C{False} if not connected, the message contains the
            delimiter or is too long, or the server did not make room within
            C{sendTimeout}.
        """
        conn = self._conn
        if conn is None:
            return False
        return conn.send(msg)


class TlsClient(_Certificates, TcpClient):
    """
    A TLS 1.3 message client, as the original's C{TlsClient}.

    Without a CA, or after C{requireServerAuthentication(False)}, the
    server's certificate is not verified at all (as in the original);
    otherwise it must be issued by the CA and, unless C{verifyHostname} is
    false, be valid for the host name connected to.  A client certificate
    is presented only if both C{cert} and C{key} are set.
    """

    _tls = True

    def __init__(self, *args: Any, verifyHostname: bool = True, **kwargs: Any) -> None:
        """
        @param verifyHostname: check that a verified server's certificate
            names the host connected to (the original checks no host name).
        """
        super().__init__(*args, **kwargs)
        self.verifyHostname = verifyHostname
        self._serverAuth = True

    def requireServerAuthentication(self, serverAuth: bool = True) -> None:
        """
        Whether to verify the server's certificate against the CA (default
        C{True}); has no effect without a CA.
        """
        self._serverAuth = bool(serverAuth)

    def _tlsConfig(self) -> TLSConfig:
        ca = self._ca or None
        cert, key = self._cert or None, self._key or None
        if cert is None or key is None:
            if cert is not None or key is not None:
                self.log.warn(
                    "A client certificate needs both a certificate and a key; presenting none"
                )
            cert = key = None
        verify = ca is not None and self._serverAuth
        return TLSConfig(
            ca=ca,
            cert=cert,
            key=key,
            verifyServer=verify,
            verifyHostname=verify and self.verifyHostname,
        )

    def getSubjPartFromServerCert(self, subjPart: x509.ObjectIdentifier | str | int) -> str:
        """
        One part of the subject of the server's certificate.

        @param subjPart: as for L{TlsServer.getSubjPartFromClientCert}.
        @raise ClientError: not connected, or the subject has no such part.
        """
        conn = self._conn
        if conn is None:
            raise ClientError("Not connected to any server to read certificate subject part from")
        return _subjectValue(conn.certificate, subjPart, ClientError, "server")


# -- UDP ------------------------------------------------------------------------------

#: Bytes of received messages queued for one UDP peer's worker beyond which
#: that peer's next messages are dropped (and counted as C{workerBehind}):
#: UDP has no flow control that could slow the peer down, so a worker that
#: falls behind loses messages rather than memory.
UDP_INBOX_PER_PEER = 1024 * 1024

#: The same bound for all the peers of one L{UdpServer} together.
UDP_INBOX_TOTAL = 16 * 1024 * 1024

#: Bytes a queued message is counted for beyond its length (the bytes
#: object, its tuple and its slot in the queue), so that a flood of empty
#: messages is bounded too.
_QUEUED_OVERHEAD = 160


class _DatagramOutbox:
    """
    The messages the threads of a program send through one UDP server or
    client, queued for the reactor thread, which sends them in order and in
    batches: one wake-up of the reactor for everything queued since the last
    one, rather than one per message.

    Bounded: beyond C{limit} bytes queued, L{put} waits up to its timeout for
    the reactor thread to catch up, then gives up.  Nothing else holds a
    message up: a UDP send does not wait for the peer.

    Thread-safety: L{put} and L{close} may be called from any thread;
    C{send} is called in the reactor thread.
    """

    log = Logger()

    def __init__(
        self,
        reactorThread: ReactorThread,
        send: Callable[[Any, bytes], object],
        limit: int = DEFAULT_OUTPUT_LIMIT,
    ) -> None:
        self._reactorThread = reactorThread
        self._send = send
        self._limit = limit
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[tuple[Any, bytes]] = deque()
        self._bytes = 0
        self._scheduled = False
        self.closed = False

    def put(self, target: Any, message: bytes, timeout: float | None) -> bool:
        """
        Queue C{message} for C{send(target, message)}.

        @return: C{False} (nothing queued) once closed, or when the queue
            stayed full for C{timeout} seconds.
        """
        size = len(message) + _QUEUED_OVERHEAD
        cond = self._cond
        with cond:
            if self.closed:
                return False
            if self._bytes and self._bytes + size > self._limit:
                if threading.get_ident() == self._reactorThread._ident or not cond.wait_for(
                    lambda: self.closed or not self._bytes or self._bytes + size <= self._limit,
                    timeout,
                ):
                    return False
                if self.closed:
                    return False
            self._queue.append((target, message))
            self._bytes += size
            if self._scheduled:
                return True
            self._scheduled = True
        self._reactorThread.callFromThread(self._flush)
        return True

    def close(self) -> None:
        """
        Queue nothing more; what is queued is still sent.
        """
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def drain(self) -> None:
        """
        Reactor thread: send everything queued now (once closed, so that
        nothing accepted is left behind when the socket closes).
        """
        while self._queue:
            self._flush()

    def _flush(self) -> None:
        with self._cond:
            batch, self._queue = self._queue, deque()
        send = self._send
        size = 0
        for target, message in batch:
            size += len(message) + _QUEUED_OVERHEAD
            try:
                send(target, message)
            except Exception:
                self.log.failure("Sending a queued datagram failed")
        with self._cond:
            self._bytes -= size
            self._cond.notify_all()
            again = bool(self._queue)
            if not again:
                self._scheduled = False
        if again:
            # What came meanwhile goes in the next turn of the reactor, after
            # its reads: a sender cannot keep the reactor thread to itself.
            self._reactorThread.callFromThread(self._flush)


class _BlockingPeer:
    """
    One peer of a L{UdpServer} (or the server of a L{UdpClient}) as the
    blocking API sees it: its id, its address, its worker queue, and the
    bytes of messages that queue holds.  Small: a server keeps up to
    C{maxPeers} of them.
    """

    __slots__ = ("address", "connectionId", "executor", "queued")

    def __init__(self, connectionId: int, address: tuple[str, int]) -> None:
        self.connectionId = connectionId
        self.address = address
        self.executor = SerialExecutor(_workerPool())
        self.queued = 0


class _UdpBase(_BlockingObject):
    """
    What L{UdpServer} and L{UdpClient} share: the framing arguments, sending
    through a L{_DatagramOutbox}, receiving into bounded per-peer queues.
    """

    def __init__(
        self,
        delimiter: bytes | str | int | None,
        messageAppend: bytes | str,
        maxMessageLength: int,
    ) -> None:
        super().__init__()
        append = _asBytes(messageAppend if messageAppend is not None else b"", "messageAppend")
        # The core's own rules, checked here at once and applied by sendMsg
        # in the calling thread.
        self._rules = DatagramFraming(_delimiterBytes(delimiter), maxMessageLength, append)
        self._outbox: _DatagramOutbox | None = None
        # The core whose counts eventCounts reads: the last one made.
        self._counted: DatagramServer | DatagramClient | None = None
        self._inboxLock = threading.Lock()
        self._queued = 0
        self._summary: EventSummary | None = None

    @property
    def delimiter(self) -> bytes | None:
        """
        The bytes ending each message within a datagram; C{None}: one
        datagram is one message.
        """
        return self._rules.delimiter

    @property
    def messageAppend(self) -> bytes:
        """
        The bytes appended to every message sent, before the delimiter.
        """
        return self._rules.messageAppend

    @property
    def maxMessageLength(self) -> int:
        """
        The longest datagram sent or received, in bytes.
        """
        return self._rules.maxMessageLength

    def _framing(self) -> dict[str, Any]:
        """
        The framing arguments of the core L{DatagramServer} or
        L{DatagramClient}.
        """
        rules = self._rules
        return {
            "delimiter": rules.delimiter,
            "messageAppend": rules.messageAppend,
            "maxMessageLength": rules.maxMessageLength,
        }

    def _queue(self, target: Any, message: bytes | str) -> bool:
        """
        Queue C{message} for the reactor thread to send, if it can be sent:
        C{False} when not running, or when the message holds the delimiter
        or its datagram (with C{messageAppend} and the delimiter) would be
        longer than C{maxMessageLength}.
        """
        if type(message) is not bytes:
            message = _asBytes(message, "the message")
        outbox = self._outbox
        if outbox is None or not self._running or self._rules.frame(message) is None:
            return False
        return outbox.put(target, message, DEFAULT_SEND_TIMEOUT)

    # -- the reactor thread -----------------------------------------------------

    def _handOver(
        self, peer: _BlockingPeer, message: bytes, deliver: Callable[[Any], object]
    ) -> None:
        """
        Queue C{message} for C{peer}'s worker, or drop and count it when
        that worker (or all of them together) is too far behind.
        """
        size = len(message) + _QUEUED_OVERHEAD
        with self._inboxLock:
            fits = (
                peer.queued + size <= UDP_INBOX_PER_PEER and self._queued + size <= UDP_INBOX_TOTAL
            )
            if fits:
                peer.queued += size
                self._queued += size
        if fits:
            peer.executor.submit(deliver, (peer, message))
            return
        host, port = peer.address[:2]
        summary = self._summary
        if summary is None:
            summary = self._summary = EventSummary(self.log, self._reactorThreadObject.reactor)
        summary.record(
            "workerBehind",
            "Dropped a message of {length} bytes from {peer}: the workers are behind, "
            "with {queued} bytes queued for this peer's (at most {limit}) and {total} for "
            "all peers' (at most {totalLimit})",
            peer=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            peerId=peer.connectionId,
            length=len(message),
            queued=peer.queued,
            limit=UDP_INBOX_PER_PEER,
            total=self._queued,
            totalLimit=UDP_INBOX_TOTAL,
        )

    # -- worker threads ---------------------------------------------------------

    def _delivered(self, peer: _BlockingPeer, message: bytes) -> None:
        size = len(message) + _QUEUED_OVERHEAD
        with self._inboxLock:
            peer.queued -= size
            self._queued -= size

    # -- any thread -------------------------------------------------------------

    @property
    def eventCounts(self) -> dict[str, int]:
        """
        What was lost, by kind: the core's counts (C{datagramTooLong},
        C{sendBufferFull}, ...; see L{tcpsc.DatagramServer.eventCounts}),
        and C{workerBehind}: messages dropped because the worker of their
        peer was too far behind (L{UDP_INBOX_PER_PEER}, L{UDP_INBOX_TOTAL}).
        """
        core = self._counted
        if core is None:
            return {}

        def read() -> dict[str, int]:
            counts = dict(core.eventCounts)
            if self._summary is not None:
                counts.update(self._summary.counts)
            return counts

        result: dict[str, int] = _reactorThread().call(10.0, read)
        return result


class UdpServer(_UdpBase):
    """
    A UDP message server in the style of L{TcpServer}, as a thin shell over
    L{tcpsc.DatagramServer}.

    With no delimiter (the default) each datagram is one message; with one,
    a datagram holds one or more delimited messages and a message never
    spans datagrams.

    A peer is a source address (IP and port).  Its first datagram gives it
    an id (positive, counted up, never reused for the life of the object;
    a counter of its own, apart from any TCP server's) and runs the
    established worker; it is forgotten, and the closed worker runs, after
    C{peerIdleTimeout} seconds without a datagram from it, when the table of
    C{maxPeers} peers is full and it is the one heard from least recently,
    or at L{stop}.  The workers of one peer run one at a time and in order
    (established, its messages, closed); different peers' run concurrently.
    """

    def __init__(
        self,
        delimiter: bytes | str | int | None = None,
        messageAppend: bytes | str = b"",
        maxMessageLength: int = DEFAULT_MAX_DATAGRAM,
        *,
        peerIdleTimeout: float | None = DEFAULT_PEER_IDLE_TIMEOUT,
        maxPeers: int = DEFAULT_MAX_PEERS,
    ) -> None:
        """
        @param delimiter: one or more bytes (or a str, or a byte value such
            as C{0}) ending each message within a datagram; C{None}: one
            datagram is one message.
        @param messageAppend: appended to every message sent, before the
            delimiter.
        @param maxMessageLength: the longest datagram sent or received
            (message, C{messageAppend} and delimiter), at most 65,527; by
            default 1,472, one Ethernet frame without IP fragmentation.
            C{sendMsg} refuses a longer one; a longer one received is
            dropped whole and counted.
        @param peerIdleTimeout: seconds without a datagram after which a
            peer is forgotten; C{None} never.
        @param maxPeers: peers known at once; a new one beyond them makes
            the server forget the one heard from least recently.
        """
        super().__init__(delimiter, messageAppend, maxMessageLength)
        # Checked at once, by the rules of the core's settings.
        Settings(peerIdleTimeout=peerIdleTimeout, maxPeers=maxPeers)
        self._peerIdleTimeout = peerIdleTimeout
        self._maxPeers = maxPeers
        self._core: DatagramServer | None = None
        self._peers: dict[int, _BlockingPeer] = {}
        self._port: int | None = None
        self._stopDone = threading.Event()
        self._stopDone.set()
        self._workOnEstablished: Callable[[int], object] | None = None
        self._workOnClosed: Callable[[int], object] | None = None

    @property
    def peerIdleTimeout(self) -> float | None:
        """
        Seconds without a datagram after which a peer is forgotten, or
        C{None}.
        """
        return self._peerIdleTimeout

    @property
    def maxPeers(self) -> int:
        """
        The most peers known at once.
        """
        return self._maxPeers

    # -- workers ----------------------------------------------------------------

    def setWorkOnMessage(self, worker: Callable[[int, bytes], object] | None) -> None:
        """
        Call C{worker(clientId, message)} with each message received, on a
        worker thread; the messages of one peer in order, one at a time.
        """
        super().setWorkOnMessage(worker)

    def setWorkOnEstablished(self, worker: Callable[[int], object] | None) -> None:
        """
        Call C{worker(clientId)} when a new peer's first datagram arrives,
        before its first message.
        """
        self._workOnEstablished = _checkCallable(worker)

    def setWorkOnClosed(self, worker: Callable[[int], object] | None) -> None:
        """
        Call C{worker(clientId)} when a peer is forgotten (idle, table full,
        or L{stop}), after its last message.
        """
        self._workOnClosed = _checkCallable(worker)

    # -- start and stop -----------------------------------------------------------

    @property
    def port(self) -> int | None:
        """
        The port listened on, or C{None} when not running.
        """
        return self._port if self._running else None

    def start(self, port: int, *, interface: str = "") -> int:
        """
        Listen on UDP port C{port}; return once listening.

        @param port: 1-65535, or 0 for a free port.
        @param interface: the address to listen on; all IPv4 addresses by
            default, C{"::"} for IPv6 (and IPv4, where the system allows).
        @return: the port listened on.
        @raise StartError: with C{.code}: -1 already running, 10 bad port,
            42 cannot listen (port in use, address not available).
        @raise ReactorThreadError: called from the reactor thread.
        """
        reactorThread = self._reactorThreadObject = _reactorThread()
        with self._startingOnce("server"):
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise PortError(f"port {port!r} is outside 1-65535 (0 picks a free port)")
            listening = reactorThread.call(30.0, self._listen, port, interface)
            self._outbox = _DatagramOutbox(reactorThread, self._sendNow)
            self._stopDone.clear()
            self._port = listening.getHost().port
            self._running = True
            self.log.info("Blocking UDP server listening on port {port}", port=self._port)
            return self._port

    def _listen(self, port: int, interface: str) -> Any:
        # One core for the life of this object, so that peer ids stay
        # unique across restarts.
        if self._core is None:
            self._core = DatagramServer(
                **self._framing(),
                peerIdleTimeout=self.peerIdleTimeout,
                maxPeers=self.maxPeers,
                onMessage=self._received,
                onPeer=self._peerReady,
                onPeerExpired=self._peerExpired,
                reactor=self._reactorThreadObject.reactor,
            )
            self._counted = self._core
        return self._core.listen(port, interface)

    def stop(self, timeout: float | None = None) -> None:
        """
        Stop listening, after sending what C{sendMsg} accepted, and forget
        every peer: the closed worker runs for each, after its messages.
        Returns once the port is closed and the closed workers have run, or
        after C{timeout} seconds of waiting for them (a warning is logged;
        they run when the workers before them return).

        May be called from a worker: that peer's own closed worker then
        runs after the calling worker returns.  Does nothing when not
        running.

        @param timeout: seconds to wait for the closed workers; C{None} waits
            as long as they take.
        @raise ReactorThreadError: called from the reactor thread.
        """
        if self._core is None:
            return
        reactorThread = _reactorThread()
        with self._cond:
            wasRunning = self._running
            self._running = False
        if wasRunning:
            outbox = self._outbox
            if outbox is not None:
                outbox.close()
            try:
                reactorThread.call(30.0, self._stopListening)
            finally:
                self._port = None
                self._stopDone.set()
        else:
            self._stopDone.wait(30.0)
        if not self._waitForWorkers(timeout):
            self.log.warn("stop(): closed workers still running after {timeout} s", timeout=timeout)

    def _stopListening(self) -> Any:
        assert self._core is not None
        if self._outbox is not None:
            self._outbox.drain()

        def forget(result: object) -> object:
            for peerId in list(self._peers):
                self._peerExpired(peerId)
            if self._summary is not None:
                self._summary.stop()
            return result

        return self._core.stop().addBoth(forget)

    # -- the reactor thread ---------------------------------------------------------

    def _peerReady(self, peerId: int) -> _BlockingPeer:
        peer = self._peers.get(peerId)
        if peer is not None:
            return peer
        assert self._core is not None
        peer = _BlockingPeer(peerId, self._core.clientAddress(peerId))
        with self._cond:
            self._peers[peerId] = peer
            self._live[peerId] = peer
        peer.executor.submit(self._runEstablished, peer)
        return peer

    def _received(self, peerId: int, message: bytes) -> None:
        peer = self._peers.get(peerId)
        if peer is None:
            peer = self._peerReady(peerId)
        self._handOver(peer, message, self._deliver)

    def _peerExpired(self, peerId: int) -> None:
        with self._cond:
            peer = self._peers.pop(peerId, None)
        if peer is not None:
            peer.executor.submit(self._runClosed, peer)

    def _sendNow(self, peerId: int, message: bytes) -> None:
        core = self._core
        if core is not None:
            core.send(peerId, message)

    # -- worker threads -----------------------------------------------------------

    def _runEstablished(self, peer: _BlockingPeer) -> None:
        clientId = peer.connectionId
        self._callWorker("established", clientId, self._workOnEstablished, clientId)

    def _deliver(self, item: tuple[_BlockingPeer, bytes]) -> None:
        peer, message = item
        try:
            worker = self._workOnMessage
            if worker is not None:
                try:
                    worker(peer.connectionId, message)
                except Exception:
                    self.log.failure(
                        "The message worker raised for UDP peer {peerId}",
                        peerId=peer.connectionId,
                    )
        finally:
            self._delivered(peer, message)

    def _runClosed(self, peer: _BlockingPeer) -> None:
        clientId = peer.connectionId
        try:
            self._callWorker("closed", clientId, self._workOnClosed, clientId)
        finally:
            self._release(peer)

    # -- any thread -------------------------------------------------------------------

    def sendMsg(self, clientId: int, msg: bytes | str) -> bool:
        """
        Send a message to a peer, as one datagram (with C{messageAppend} and
        the delimiter, if any).  The reactor thread sends it soon after; a
        datagram the system then refuses (its send buffer full) is dropped
        and counted (L{eventCounts}), as UDP drops datagrams anywhere on the
        way.

        @return: C{False}, and nothing sent, if the id is not a known peer,
            the message holds the delimiter, or its datagram would be longer
            than C{maxMessageLength}; or if the reactor thread did not catch
            up with the messages queued before within 10 s.
        """
        if clientId not in self._peers:
            return False
        return self._queue(clientId, msg)

    def getAllClientIds(self) -> list[int]:
        """
        The ids of the known peers, ascending.
        """
        with self._cond:
            return sorted(self._peers)

    def getClientIp(self, clientId: int) -> str:
        """
        The IP address (IPv4 or IPv6) of a known peer.

        @raise ServerError: no such peer.
        """
        peer = self._peers.get(clientId)
        if peer is None:
            raise ServerError(f"No known UDP peer {clientId!r} to read the IP address from")
        return peer.address[0]


class _ServerPeer(DatagramPeer):
    """
    The server, as a L{UdpClient}'s core sees it: tells the client when the
    core forgets it on its own (when the reactor closed the socket), so
    that the client stops running rather than accept messages it can no
    longer send.

    @ivar owner: the client, set once connected.
    """

    __slots__ = ("owner",)

    owner: UdpClient

    def peerExpired(self) -> None:
        owner: UdpClient | None = getattr(self, "owner", None)
        if owner is not None:
            owner._lost()


class UdpClient(_UdpBase):
    """
    A UDP message client in the style of L{TcpClient}, as a thin shell over
    L{tcpsc.DatagramClient}: a connected UDP socket, so that only the
    server's datagrams are received.

    With no delimiter (the default) each datagram is one message; with one,
    a datagram holds one or more delimited messages.
    """

    def __init__(
        self,
        delimiter: bytes | str | int | None = None,
        messageAppend: bytes | str = b"",
        maxMessageLength: int = DEFAULT_MAX_DATAGRAM,
    ) -> None:
        """
        @param delimiter: as for L{UdpServer}.
        @param messageAppend: as for L{UdpServer}.
        @param maxMessageLength: as for L{UdpServer}.
        """
        super().__init__(delimiter, messageAppend, maxMessageLength)
        self._core: DatagramClient | None = None
        self._peer: _BlockingPeer | None = None
        self._connections = 0

    def setWorkOnMessage(self, worker: Callable[[bytes], object] | None) -> None:
        """
        Call C{worker(message)} with each message received, on a worker
        thread, in order, one at a time.
        """
        super().setWorkOnMessage(worker)

    def start(self, host: str, port: int) -> None:
        """
        Resolve C{host} (IPv4 or IPv6) and connect a UDP socket to
        C{host}:C{port}; return once it is connected.  No datagram is sent:
        whether a server listens shows only when one answers.

        @raise StartError: with C{.code}: -1 already running, 10 bad port,
            50 cannot connect (such as a host name that does not resolve).
        @raise ReactorThreadError: called from the reactor thread.
        """
        reactorThread = self._reactorThreadObject = _reactorThread()
        with self._startingOnce("client"):
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise PortError(f"port {port!r} is outside 1-65535")
            core = DatagramClient(
                _ServerPeer,
                **self._framing(),
                onMessage=self._received,
                reactor=reactorThread.reactor,
            )
            self._counted = core
            self._connections += 1
            # Ready before the socket is: the server may answer at once.
            peer = self._peer = _BlockingPeer(self._connections, (host, port))
            try:
                protocol = reactorThread.call(30.0, self._connect, core, host, port)
            except BaseException as e:
                self._peer = None
                if isinstance(e, TimeoutError):
                    reactorThread.callFromThread(core.disconnect)
                    raise ConnectError(f"connecting to {host}:{port} did not complete", 50) from e
                raise
            peer.address = protocol.address
            with self._cond:
                self._core = core
                self._live[peer.connectionId] = peer
                self._outbox = _DatagramOutbox(
                    reactorThread, lambda target, message: core.send(message)
                )
                self._running = True

    def stop(self, timeout: float | None = None) -> None:
        """
        Close the socket after sending what C{sendMsg} accepted; return once
        it is closed and the message worker has had every message received
        before (or after C{timeout} seconds of waiting for it).  Does
        nothing when not running.

        @raise ReactorThreadError: called from the reactor thread.
        """
        core = self._core
        if core is None and not self._live:
            return
        reactorThread = _reactorThread()
        with self._cond:
            self._running = False
            self._core = None
            outbox = self._outbox
        if outbox is not None:
            outbox.close()
        if core is not None:
            reactorThread.call(30.0, self._disconnect, core)
        if not self._waitForWorkers(timeout):
            self.log.warn(
                "stop(): the message worker still runs after {timeout} s", timeout=timeout
            )

    def _connect(self, core: DatagramClient, host: str, port: int) -> Deferred[DatagramPeer]:
        def connected(peer: DatagramPeer) -> DatagramPeer:
            if isinstance(peer, _ServerPeer):
                peer.owner = self
            return peer

        return core.connect(host, port).addCallback(connected)

    def _lost(self) -> None:
        """
        The core forgot the server on its own: stop running, after the
        messages received before.
        """
        peer, self._peer = self._peer, None
        if peer is None:
            # stop() is disconnecting.
            return
        with self._cond:
            self._running = False
            outbox = self._outbox
        if outbox is not None:
            outbox.close()
        peer.executor.submit(self._release, peer)

    def _disconnect(self, core: DatagramClient) -> Any:
        # In the reactor thread, so that no message is handed over after
        # the release, which is queued after every message received.
        peer, self._peer = self._peer, None
        if peer is not None:
            peer.executor.submit(self._release, peer)
        if self._outbox is not None:
            self._outbox.drain()
        if self._summary is not None:
            self._summary.stop()
        return core.disconnect()

    # -- the reactor thread -------------------------------------------------------

    def _received(self, message: bytes) -> None:
        peer = self._peer
        if peer is not None:
            self._handOver(peer, message, self._deliver)

    # -- worker threads -----------------------------------------------------------

    def _deliver(self, item: tuple[_BlockingPeer, bytes]) -> None:
        peer, message = item
        try:
            worker = self._workOnMessage
            if worker is not None:
                try:
                    worker(message)
                except Exception:
                    self.log.failure("The client's message worker raised")
        finally:
            self._delivered(peer, message)

    # -- any thread -------------------------------------------------------------------

    def sendMsg(self, msg: bytes | str) -> bool:
        """
        Send a message to the server, as one datagram (with C{messageAppend}
        and the delimiter, if any).

        @return: C{False}, and nothing sent, if not running, the message
            holds the delimiter, or its datagram would be longer than
            C{maxMessageLength}; or if the reactor thread did not catch up
            with the messages queued before within 10 s.
        """
        return self._queue(None, msg)
