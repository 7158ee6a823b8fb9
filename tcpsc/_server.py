# -*- test-case-name: tests.test_server -*-
"""
Layer 3: the server.  A Twisted factory that owns the registry of its
connections: ids, the connection limit, callbacks, send, broadcast, and the
peer's address and certificate.

Ids are positive integers counted up for the life of a L{Server} and never
reused, unlike the C++ original, whose ids are file descriptor numbers the
operating system recycles (its bug B3).  A connection is I{established} (it
has an entry in L{Server.clientIds}, callbacks fire for it) once it is ready:
at once for TCP, after the handshake with the client verified for TLS (and,
with an allow-list, the client's certificate names checked).

Resources stay bounded whatever peers do: connections (in total and, if
asked, per peer address), the handshake time, idle time, each connection's
output (see L{MessageProtocol.maxPendingOutput}), and file descriptors: a
port given by number or as a C{tcp:}/C{tcp6:} description stops accepting
for a moment when the process runs out of them, instead of retrying
C{accept()} in a loop (the original's bug B23), in the Twisted releases
whose private names it was checked against (L{tcpsc._compat}).
"""

from __future__ import annotations

import errno
import inspect
import socket
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import tcp
from twisted.internet.defer import Deferred, execute, fail, gatherResults, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    ISSLTransport,
    IStreamServerEndpoint,
)
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import Factory
from twisted.logger import Logger, LogLevel
from twisted.protocols.policies import TimeoutFactory, TimeoutProtocol
from twisted.python.failure import Failure
from twisted.python.runtime import platformType
from zope.interface import implementer

from . import _compat
from ._addresses import describeAddress
from ._errors import AbortedLocally, CertificateLoadError, ListenError, PortError, ServerError
from ._events import EventSummary, plural
from ._framing import (
    DEFAULT_CLOSE_TIMEOUT,
    MessageProtocol,
    StreamProtocol,
    _ConnectionBase,
)
from ._limits import openFileLimit, raiseOpenFileLimit
from ._memory import canReleaseMemory, releaseFreeMemory
from ._metrics import HANDSHAKE_BUCKETS, ServerCollector, closeReason, handshakeFailureReason
from ._tls import (
    TLSConfig,
    certificateDNSNames,
    describeClose,
    isAllowedClient,
    peerCertificate,
    subjectPart,
    verificationFailure,
)
from ._tlstransport import tlsFactory

if TYPE_CHECKING:
    from cryptography import x509
    from prometheus_client import CollectorRegistry
    from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorFDSet, IReactorTime
    from twisted.protocols.tls import TLSMemoryBIOFactory

    from ._tls import _ServerCreator

    class _IPortReactor(IReactorFDSet, IReactorTime):
        """
        What a L{_GuardedPort} needs of its reactor: watching descriptors, as
        every port does, and timers for its pauses.
        """

__all__ = [
    "DEFAULT_FIRST_BYTE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_PEER",
    "DEFAULT_MEMORY_BUDGET",
    "Server",
]

#: Default limit of simultaneous connections of one server.
DEFAULT_MAX_CONNECTIONS = 4096

#: Default limit of simultaneous connections from one peer address: a
#: sixteenth of the default connection limit, so that one address cannot
#: take every slot, and many clients behind one NAT address still fit.
DEFAULT_MAX_CONNECTIONS_PER_PEER = 256

#: Default bound of the memory a server spends on its connections' buffers
#: (partial messages received, messages held, output not yet sent): 96 MiB,
#: which fits a small machine; without it the other bounds alone (4,096
#: connections of up to 16 MiB each) allow 64 GiB.
DEFAULT_MEMORY_BUDGET = 96 * 1024 * 1024

#: A partial message is counted against the memory budget from this size on,
#: and counted again each time it grew by as much: the smaller ones, at most
#: this much per connection, are part of the fixed cost of a connection.
_BUDGET_STEP = 1024 * 1024

#: Seconds after the connections closed at which what they freed is given
#: back to the system (see L{tcpsc._memory}): once for all the connections
#: that closed meanwhile, so at most once in this time; and only once this
#: many closed since the last time, a burst rather than the steady coming
#: and going of a few.
_RELEASE_DELAY = 5.0
_RELEASE_AFTER_CLOSES = 64

#: The least share of the memory budget a congested connection's output gets,
#: however many connections are congested.
_LEAST_OUTPUT_SHARE = 64 * 1024

#: Default seconds a plain TCP connection has to send its first byte, as a
#: TLS client has to complete its handshake: a connection that says nothing
#: cannot hold a slot for ever.
DEFAULT_FIRST_BYTE_TIMEOUT = 10.0

#: The listen queue of a port given by number, as the original's
#: C{listen(SOMAXCONN)}: Twisted's default of 50 makes a burst of clients
#: wait for SYN retransmissions (a second or more) long before the
#: connection limit is reached.
_BACKLOG = max(50, socket.SOMAXCONN)

class _Default:
    """
    The default of an argument whose value comes from elsewhere (the
    protocol class): a sentinel that says so in signatures and reprs.
    """

    def __init__(self, description: str) -> None:
        self._description = description

    def __repr__(self) -> str:
        return self._description


_UNSET: Any = _Default("<the protocol's own>")

#: How many connections the broadcasts of one reactor turn may write to (or
#: skip) before the connection whose read is being handled stops being read
#: until the next turn: a flood of messages to relay (200 senders, 200
#: recipients each) cannot make a turn last seconds, during which no reader
#: is written to, and the senders take turns.
TURN_BROADCAST_WORK = 20_000


#: C{accept()} errors about the one connection being accepted: go on.  Any
#: other error (EMFILE, ENFILE: out of file descriptors; ENOBUFS, ENOMEM) would
#: fail the same way if retried at once.
_SKIPPED = frozenset({errno.EPERM, errno.ECONNABORTED, errno.EPROTO, errno.EINTR})

#: How long a port stops accepting after running out of file descriptors:
#: the first pause, and the longest while it goes on (each is twice the one
#: before).  A connection of the server that closes ends the pause at once.
_FIRST_ACCEPT_PAUSE = 0.05
_LONGEST_ACCEPT_PAUSE = 1.0


def _defaultReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _connectionSettings(
    stream: bool,
    delimiter: bytes | str | None,
    maxMessageLength: int | None,
    messageAppend: bytes | str | None,
) -> dict[str, Any]:
    """
    Validate the per-connection overrides of a server or client and return
    them as attributes to set on each protocol.
    """
    settings: dict[str, Any] = {}
    if stream:
        if delimiter is not None or messageAppend is not None or maxMessageLength is not _UNSET:
            raise ValueError(
                "delimiter, messageAppend and maxMessageLength apply to "
                "fragmented mode only, not to stream=True"
            )
        return settings
    if delimiter is not None:
        if isinstance(delimiter, str):
            delimiter = delimiter.encode("utf-8")
        if not isinstance(delimiter, bytes) or not delimiter:
            raise ValueError(f"delimiter must be one or more bytes, not {delimiter!r}")
        settings["delimiter"] = delimiter
    if messageAppend is not None:
        if isinstance(messageAppend, str):
            messageAppend = messageAppend.encode("utf-8")
        settings["messageAppend"] = messageAppend
    if maxMessageLength is not _UNSET:
        if maxMessageLength is not None and (
            not isinstance(maxMessageLength, int) or maxMessageLength < 0
        ):
            raise ValueError(
                f"maxMessageLength must be a non-negative int or None, not {maxMessageLength!r}"
            )
        settings["maxMessageLength"] = maxMessageLength
    delim = settings.get("delimiter", MessageProtocol.delimiter)
    append = settings.get("messageAppend", b"")
    if append and delim in append:
        raise ValueError(f"messageAppend {append!r} contains the delimiter {delim!r}")
    return settings


def _protocolClass(protocol: type[_ConnectionBase] | None, stream: bool) -> type[_ConnectionBase]:
    if protocol is None:
        return StreamProtocol if stream else MessageProtocol
    if not (isinstance(protocol, type) and issubclass(protocol, _ConnectionBase)):
        raise TypeError(
            f"protocol must be a subclass of tcpsc.MessageProtocol or "
            f"tcpsc.StreamProtocol, not {protocol!r}"
        )
    if stream and not issubclass(protocol, StreamProtocol):
        raise TypeError("stream=True needs a StreamProtocol subclass")
    return protocol


class _GuardedPort(tcp.Port):
    """
    A TCP port that stops accepting for a moment when C{accept()} fails for
    want of file descriptors (or memory), instead of being called again at
    once by the reactor, as the listening socket is still readable.

    Twisted's own port, out of descriptors (EMFILE), frees a spare one it
    keeps for the purpose, accepts every waiting connection and closes it at
    once, logging a line for each; for the other errors (ENFILE: the
    system's table is full; ENOBUFS, ENOMEM), or without its spare
    descriptor, it retries in a busy loop: 100 % of a core, and a log line
    per attempt.  This port instead leaves the waiting connections in the
    listen queue (the kernel completes their TCP handshake; they are served
    as soon as descriptors are free), retries after 50 ms, then twice as
    long each time up to 1 s, or at once when one of the server's
    connections closes (L{resumeAccepting}).  Each episode is logged twice:
    when it starts and when the port accepts again.

    Its accept loop is Twisted's, with private names of Twisted's port
    (listed in L{tcpsc._compat.PRIVATE_NAMES}): a server uses this port
    only while L{tcpsc._compat.PRIVATE}, and Twisted's own otherwise.
    """

    # Both are given to the constructor (only a POSIX reactor, see
    # Server._endpoint, gets this port).
    factory: Factory
    reactor: _IPortReactor

    _retryCall: IDelayedCall | None = None
    _starvedSince: float | None = None
    _pause = _FIRST_ACCEPT_PAUSE
    _refusals = 0

    def doRead(self) -> None:
        accepted = 0
        # Twisted's note: the win32 event loop breaks with more than one
        # accept() per iteration.
        attempts = 1 if platformType == "win32" else self.numberAccepts
        for _ in range(attempts):
            try:
                skt, addr = self.socket.accept()
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                if e.errno in _SKIPPED:
                    continue
                # Out of descriptors, or anything else that would fail again
                # on the next attempt: never retry in a loop.
                self._starve(e)
                return
            accepted += 1
            if self._starvedSince is not None:
                self._recovered()
            self._serve(skt, addr)
        # Scale the accept loop to the traffic, as Twisted's port does.
        if accepted == self.numberAccepts:
            self.numberAccepts += 20
        else:
            self.numberAccepts = max(1, accepted)

    def _serve(self, skt: socket.socket, addr: Any) -> None:
        try:
            if len(addr) == 4:
                # IPv6: the scope id, if any, in the host.
                host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
                addr = (host[0], *addr[1:])
            protocol = self.factory.buildProtocol(self._buildAddr(addr))
            if protocol is None:
                skt.close()
                return
            session = self.sessionno
            self.sessionno = session + 1
            transport = self.transport(skt, protocol, addr, self, session, self.reactor)
        except Exception:
            skt.close()
            Server.log.failure("Could not set up an accepted connection from {address}",
                               address=addr)
            return
        try:
            protocol.makeConnection(transport)
        except Exception:
            Server.log.failure("The protocol of an accepted connection failed to start")
            transport.abortConnection()

    def _starve(self, error: OSError) -> None:
        self.stopReading()
        self._refusals += 1
        now = self.reactor.seconds()
        if self._starvedSince is None:
            self._starvedSince = now
            self._pause = _FIRST_ACCEPT_PAUSE
            Server.log.warn(
                "Cannot accept connections on {address}: {error}; waiting connections "
                "stay queued, retrying within {longest} s or as soon as a connection closes",
                address=describeAddress(self.getHost()),
                error=f"{errno.errorcode.get(error.errno or 0, error.errno)} "
                f"({error.strerror or error})",
                errno=error.errno,
                longest=_LONGEST_ACCEPT_PAUSE,
                openFiles=openFileLimit(),
            )
        else:
            self._pause = min(self._pause * 2, _LONGEST_ACCEPT_PAUSE)
        self._retryCall = self.reactor.callLater(self._pause, self._retry)

    def _retry(self) -> None:
        self._retryCall = None
        if self.connected and not self.disconnecting:
            self.startReading()

    def resumeAccepting(self) -> None:
        """
        Try to accept again now, if a lack of descriptors paused accepting:
        called when the server closed a connection, which freed one.
        """
        call = self._retryCall
        if call is not None and call.active():
            call.cancel()
            self._retry()

    def _recovered(self) -> None:
        since, self._starvedSince = self._starvedSince, None
        Server.log.info(
            "Accepting connections on {address} again after {seconds:.1f} s "
            "({failed})",
            address=describeAddress(self.getHost()),
            seconds=self.reactor.seconds() - (since or 0.0),
            attempts=self._refusals,
            failed=plural(self._refusals, "failed attempt"),
        )
        self._refusals = 0

    def connectionLost(self, reason: Failure) -> None:
        call, self._retryCall = self._retryCall, None
        if call is not None and call.active():
            call.cancel()
        super().connectionLost(reason)


@implementer(IStreamServerEndpoint)
class _GuardedTCPEndpoint:
    """
    Listens on TCP (IPv4 or IPv6, by the interface) with a L{_GuardedPort}.
    """

    def __init__(self, reactor: Any, port: int, backlog: int, interface: str) -> None:
        self._reactor = reactor
        self._port = port
        self._backlog = backlog
        self._interface = interface

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        return execute(self._listen, factory)

    def _listen(self, factory: Any) -> IListeningPort:
        port = _GuardedPort(self._port, factory, self._backlog, self._interface, self._reactor)
        port.startListening()
        return port


class _IdleTimeoutFactory(TimeoutFactory):
    """
    Twisted's L{TimeoutFactory}, on the server's reactor instead of the
    global one.
    """

    noisy = False

    def __init__(self, server: Server, timeoutPeriod: float) -> None:
        super().__init__(server, timeoutPeriod)
        self._reactor = server._reactor

    def callLater(self, period: float, func: Callable[[], object]) -> Any:
        return self._reactor.callLater(period, func)


class _IdleTimeoutProtocol(TimeoutProtocol):
    """
    Twisted's L{TimeoutProtocol}, closing the connection through its
    protocol when it times out: bounded, over TLS with close_notify, and
    with the reason "idle timeout" (Twisted's closes the socket under TLS).

    @ivar connection: the tcpsc protocol of the connection.
    """

    connection: _ConnectionBase

    def timeoutFunc(self) -> None:
        period = self.timeoutPeriod
        # Fired: what the close writes is not activity to reset it with.
        self.timeoutCall = None
        self.connection.closeConnection(f"idle timeout ({period:g} s)")


@implementer(IHalfCloseableProtocol)
class _HalfCloseableTimeoutProtocol(_IdleTimeoutProtocol):
    """
    L{_IdleTimeoutProtocol} passing half-closes on to a protocol that
    handles them (Twisted's wrapper does not, so the connection would be
    dropped at the peer's half-close, unsent replies with it).
    """

    def readConnectionLost(self) -> None:
        self.resetTimeout()
        # Used only for protocols that provide IHalfCloseableProtocol.
        cast(IHalfCloseableProtocol, self.wrappedProtocol).readConnectionLost()

    def writeConnectionLost(self) -> None:
        cast(IHalfCloseableProtocol, self.wrappedProtocol).writeConnectionLost()


#: How a TLS client's first bytes start: a handshake record (0x16) of TLS
#: (major version 3), the ClientHello.
_TLS_CLIENT_HELLO = b"\x16\x03"
#: What a plain port answers a ClientHello with before it closes: bytes that
#: are not TLS, so that the client's TLS library says so ("wrong version
#: number") at once, where a bare close would look like any other refusal.
_NOT_TLS = b"this port does not speak TLS\n"


class _ListeningFactory(Factory):
    """
    The factory of one listening port: applies the connection limits before
    anything else (a refused connection is closed at once, before any TLS
    work), then wraps the server's protocol in TLS when the port has TLS,
    and that in Twisted's L{TimeoutProtocol} when the server has an idle
    timeout (outermost, so that any bytes, handshake included, count as
    activity).
    """

    noisy = False

    def __init__(self, server: Server, tlsFactory: TLSMemoryBIOFactory | None,
                 allowedClients: frozenset[str] | None = None) -> None:
        self._server = server
        self._tlsFactory = tlsFactory
        self._allowedClients = allowedClients
        self._timeoutFactory = (
            _IdleTimeoutFactory(server, server.idleTimeout)
            if server.idleTimeout is not None
            else None
        )

    def logPrefix(self) -> str:
        return self._server.logPrefix()

    def buildProtocol(self, addr: IAddress | None) -> Any:
        connection = self._server._buildConnection(
            addr, tls=self._tlsFactory is not None, allowedClients=self._allowedClients
        )
        if connection is None:
            return None
        protocol: Any = connection
        tlsFactory = self._tlsFactory
        if tlsFactory is not None:
            protocol = tlsFactory.protocol(tlsFactory, protocol)
        timeoutFactory = self._timeoutFactory
        if timeoutFactory is not None:
            wrapper = (_HalfCloseableTimeoutProtocol
                       if IHalfCloseableProtocol.providedBy(protocol) else _IdleTimeoutProtocol)
            protocol = wrapper(timeoutFactory, protocol, timeoutFactory.timeoutPeriod)
            protocol.connection = connection
        return protocol


def _takesReason(callback: Callable[..., object]) -> bool:
    """
    Whether C{callback} can be called with two positional arguments (an
    C{onClosed} that wants the reason too).
    """
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):
        return False
    try:
        signature.bind(0, "")
    except TypeError:
        return False
    return True


class _StopCount:
    """
    What a L{Server.stop} closed: connections, those aborted, and the bytes
    of output they dropped.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.dropped = 0
        self.abortedIds: list[int] = []


class Server(Factory):
    """
    A message server: listens on any number of ports (plain or TLS) and keeps
    the registry of its connections.

    Use it either with callbacks::

        server = Server(onMessage=lambda clientId, message: server.send(clientId, message))

    or with your own protocol class::

        class Echo(MessageProtocol):
            def messageReceived(self, message):
                self.sendMessage(message)
        server = Server(Echo)

    The callbacks C{onEstablished} and C{onClosed} fire in both cases; the
    callbacks C{onMessage} and C{createSink} feed the default hooks of
    L{MessageProtocol} and L{StreamProtocol}, so they only apply to protocols
    that do not override those hooks.

    @ivar maxConnections: the most connections open at once (established or
        still in the TLS handshake); the next one is closed at once and a
        warning logged.
    @ivar maxConnectionsPerPeer: the most connections open at once from one
        peer address (256 by default), or C{None} for no such limit; the
        next one is closed at once and a warning logged.
    @ivar firstByteTimeout: seconds a plain TCP connection has to send its
        first byte (10 by default) before it is closed, or C{None} for no
        such limit (a server whose clients only listen).  TLS connections
        have C{handshakeTimeout} instead.
    @ivar maxBroadcastSkips: see L{broadcast}.
    @ivar broadcastSkips: how many times L{broadcast} left out a congested
        connection, in all.
    @ivar logConnections: whether each connection established and each one
        closed is logged (at info level).  Refusals, failed handshakes and
        errors are logged either way.  Two log events are a noticeable part
        of what a connection costs a server that accepts thousands a second.
    @ivar memoryBudget: the most bytes, or C{None} for no bound, the
        server's connections may hold in their buffers together: partial
        messages received (counted from 1 MiB each), the messages held split
        by a connection paused in the middle of a read (with what each
        message object costs), and output (all that a congested connection's
        socket transport holds, the part of the string being written that
        is written already included).
        Past it, the partial message of the connection holding the largest
        is dropped (its bytes discarded up to its delimiter, as those of a
        message too long are; the connection is kept), then the next
        largest, until the partial messages fit; and what is left of the
        budget is shared equally among the congested connections, whose
        output is bounded by their share when it is less than
        C{maxPendingOutput} (at least 64 KiB each).  96 MiB by default.
    @ivar logEveryEvent: whether the events that repeat (refusals, failed
        handshakes, dropped messages: see L{eventCounts}) are each logged,
        at debug level, besides the first of each kind in full and the
        summaries every 5 s that are logged either way.
    """

    noisy = False
    log = Logger()

    def __init__(
        self,
        protocol: type[MessageProtocol] | type[StreamProtocol] | None = None,
        *,
        stream: bool = False,
        delimiter: bytes | str | None = None,
        maxMessageLength: int | None = _UNSET,
        messageAppend: bytes | str | None = None,
        maxConnections: int = DEFAULT_MAX_CONNECTIONS,
        handshakeTimeout: float | None = 10.0,
        idleTimeout: float | None = None,
        closeTimeout: float = DEFAULT_CLOSE_TIMEOUT,
        onEstablished: Callable[[int], object] | None = None,
        onClosed: Callable[..., object] | None = None,
        onMessage: Callable[[int, bytes], object] | None = None,
        createSink: Callable[[int], object] | None = None,
        reactor: IReactorTime | None = None,
        maxConnectionsPerPeer: int | None = DEFAULT_MAX_CONNECTIONS_PER_PEER,
        firstByteTimeout: float | None = DEFAULT_FIRST_BYTE_TIMEOUT,
        maxPendingOutput: int | None = _UNSET,
        maxBroadcastSkips: int | None = None,
        logConnections: bool = True,
        logEveryEvent: bool = False,
        memoryBudget: int | None = DEFAULT_MEMORY_BUDGET,
        metrics: CollectorRegistry | None = None,
    ) -> None:
        """
        @param protocol: a L{MessageProtocol} or L{StreamProtocol} subclass;
            by default L{MessageProtocol} (or L{StreamProtocol} if C{stream}).
        @param stream: continuous mode (raw bytes) instead of messages.
        @param delimiter: overrides the protocol's C{delimiter}.
        @param maxMessageLength: overrides the protocol's C{maxMessageLength}
            (C{None} for no limit).
        @param messageAppend: overrides the protocol's C{messageAppend}.
        @param maxConnections: see L{maxConnections}.
        @param handshakeTimeout: seconds a TLS client has to complete its
            handshake before it is disconnected; C{None} for no limit.
        @param idleTimeout: seconds without any byte received or sent after
            which a connection is closed; C{None} (the default) for never.
        @param closeTimeout: seconds every close the server starts (L{stop},
            L{disconnect}, the idle timeout, an allow-list refusal) gives
            the peer to take the last output and, over TLS, close_notify,
            before the connection is aborted; 5 by default.
        @param onEstablished: called with the id of each connection when it
            becomes ready.
        @param onClosed: called with the id of each established connection
            when it ends; if it takes two arguments, with the id and why the
            connection ended, in words (C{"the peer closed the
            connection"}, C{"idle timeout (60 s)"}, C{"server stopping; the
            peer did not read the last 4096 bytes within 5 s"}).
        @param onMessage: called with C{(id, message)} for each message (or,
            in continuous mode, C{(id, bytes)} for each chunk) received.
        @param createSink: continuous mode: called with the id of each new
            connection, returns an object with C{write(bytes)} that receives
            the connection's bytes and is closed when it ends.
        @param reactor: the reactor to listen with; the global one by default.
        @param maxConnectionsPerPeer: see L{maxConnectionsPerPeer}.
        @param firstByteTimeout: see L{firstByteTimeout}.
        @param maxPendingOutput: overrides the protocol's C{maxPendingOutput}
            (bytes; C{None} for no bound): how much output a connection
            accepts while its peer does not keep up.
        @param maxBroadcastSkips: see L{broadcast}.
        @param logConnections: see L{logConnections}.
        @param logEveryEvent: see L{logEveryEvent}.
        @param memoryBudget: see L{memoryBudget}.
        @param metrics: a C{prometheus_client.CollectorRegistry} to report
            this server's metrics in (C{prometheus_client.REGISTRY} for the
            default one): connections, refusals, messages and bytes,
            handshakes, drops and closes, named C{tcpsc_*} (see the README).
            Counting them costs nothing per message.  Needs prometheus-client
            (C{pip install "tcpsc[metrics]"}); one server per registry.
        @raise ImportError: C{metrics} is given and prometheus-client is not
            installed.
        """
        self.protocol = _protocolClass(protocol, stream)
        self._settings = _connectionSettings(
            issubclass(self.protocol, StreamProtocol), delimiter, maxMessageLength, messageAppend
        )
        if maxConnections < 1:
            raise ValueError(f"maxConnections must be at least 1, not {maxConnections}")
        for name, value in (("maxConnectionsPerPeer", maxConnectionsPerPeer),
                            ("maxBroadcastSkips", maxBroadcastSkips)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name} must be an int of at least 1 or None, not {value!r}")
        if maxPendingOutput is not _UNSET:
            if maxPendingOutput is not None and (
                isinstance(maxPendingOutput, bool) or not isinstance(maxPendingOutput, int)
                or maxPendingOutput < 0
            ):
                raise ValueError(
                    f"maxPendingOutput must be a non-negative int or None, not "
                    f"{maxPendingOutput!r}"
                )
            self._settings["maxPendingOutput"] = maxPendingOutput
        protocolClass: type = self.protocol
        if onMessage is not None:
            hook = "messageReceived" if issubclass(protocolClass, MessageProtocol) else "dataReceived"
            base = MessageProtocol if hook == "messageReceived" else StreamProtocol
            if getattr(protocolClass, hook) is not getattr(base, hook):
                raise ValueError(
                    f"onMessage is never called: {protocolClass.__name__} overrides {hook}"
                )
        if createSink is not None and not issubclass(protocolClass, StreamProtocol):
            raise ValueError("createSink applies to continuous mode (a StreamProtocol) only")
        self.maxConnections = maxConnections
        self.maxConnectionsPerPeer = maxConnectionsPerPeer
        self.maxBroadcastSkips = maxBroadcastSkips
        self.broadcastSkips = 0
        self.logConnections = logConnections
        if firstByteTimeout is not None and (
            isinstance(firstByteTimeout, bool) or not isinstance(firstByteTimeout, (int, float))
            or not firstByteTimeout > 0
        ):
            raise ValueError(
                f"firstByteTimeout must be a positive number of seconds or None, not "
                f"{firstByteTimeout!r}"
            )
        self.firstByteTimeout = firstByteTimeout
        if memoryBudget is not None and (
            isinstance(memoryBudget, bool) or not isinstance(memoryBudget, int)
            or memoryBudget < 1
        ):
            raise ValueError(
                f"memoryBudget must be a positive number of bytes or None, not {memoryBudget!r}"
            )
        self.memoryBudget = memoryBudget
        # Partial messages of 1 MiB or more, by connection; the congested
        # connections; and the share of the budget each of those may hold
        # (None: no budget).
        self._inputHeld: dict[int, int] = {}
        self._inputTotal = 0
        # The messages held split by connections paused in the middle of a
        # read (see MessageProtocol._holdSplit), by connection, and their
        # total as the output share last counted it.
        self._splitHeld: dict[int, int] = {}
        self._splitTotal = 0
        self._splitShared = 0
        self._congestedIds: set[int] = set()
        self._outputShare: int | None = None
        self._shareOutput()
        self.handshakeTimeout = handshakeTimeout
        self.idleTimeout = idleTimeout
        self.closeTimeout = closeTimeout
        self.onEstablished = onEstablished
        self.onClosed = onClosed
        self.onMessage = onMessage
        self.createSink = createSink
        self._reactor: IReactorTime = reactor if reactor is not None else _defaultReactor()
        self._events = EventSummary(self.log, self._reactor, logEveryEvent=logEveryEvent)
        self._nextId = 1
        self._open: dict[int, _ConnectionBase] = {}
        self._established: dict[int, _ConnectionBase] = {}
        self._handshakeTimers: dict[int, IDelayedCall] = {}
        # The first-byte timers of plain TCP connections that sent nothing yet.
        self._firstByteTimers: dict[int, IDelayedCall] = {}
        # Connections the server refused after their handshake and logged
        # then: nothing more is logged when they are gone.
        self._refusedAndLogged: set[int] = set()
        # The onClosed callback last called, and whether it takes the reason.
        self._closedCallback: tuple[Callable[..., object] | None, bool] = (None, False)
        # Open connections by peer host, and the host of each connection,
        # for maxConnectionsPerPeer.
        self._perPeer: dict[str, int] = {}
        self._peerHosts: dict[int, str] = {}
        # The allow-list of the port of each connection in its handshake.
        self._allowLists: dict[int, frozenset[str]] = {}
        self._ports: list[IListeningPort] = []
        # The TLS settings and connection creator of each TLS port, for
        # reloadCertificates.
        self._tlsPorts: dict[IListeningPort, tuple[TLSConfig, _ServerCreator]] = {}
        self._closeWaiters: list[Deferred[None]] = []
        self._stopping: _StopCount | None = None
        # Broadcast work done in this reactor turn, the call that starts the
        # next turn, and the connections paused until then.
        self._turnWork = 0
        self._turnCall: IDelayedCall | None = None
        self._releaseCall: IDelayedCall | None = None
        self._closesSinceRelease = 0
        self._throttled: list[_ConnectionBase] = []
        # While a paused connection is resumed, its share of the turn's work.
        self._workLimit = TURN_BROADCAST_WORK
        # Broadcasts made, and the connections found full in this turn, each
        # with how many broadcasts excluded it since and the broadcast that
        # found it full (they skip the look at each until the next turn).
        self._broadcastSerial = 0
        self._full: dict[int, list[Any]] = {}
        # The established connections not found full in this turn, with
        # their ids, in order; None when it must be made again.
        self._targets: list[tuple[int, _ConnectionBase]] | None = None
        # For metrics (tcpsc._metrics): what the connections that ended
        # carried (bytes in, bytes out, messages in, messages out, messages
        # refused by the output bound), what broadcasts wrote directly, why
        # connections ended and handshakes failed, and how long handshakes
        # took (a count per bucket, and the sum).
        self._closedTotals = [0, 0, 0, 0, 0]
        self._broadcastMessages = 0
        self._broadcastBytes = 0
        self._closeReasons: Counter[str] = Counter()
        self._handshakeFailures: Counter[str] = Counter()
        self._handshakeBuckets = [0] * (len(HANDSHAKE_BUCKETS) + 1)
        self._handshakeSum = 0.0
        raiseOpenFileLimit(maxConnections + 64)
        if metrics is not None:
            collector = ServerCollector(self)
            metrics.register(collector)

    def logPrefix(self) -> str:
        return "tcpsc.Server"

    @property
    def logEveryEvent(self) -> bool:
        return self._events.logEveryEvent

    @logEveryEvent.setter
    def logEveryEvent(self, value: bool) -> None:
        self._events.logEveryEvent = value

    @property
    def eventCounts(self) -> dict[str, int]:
        """
        The events that could flood the log, counted exactly since the
        server was made, by kind: refused connections by reason
        (C{"maxConnections"}, C{"maxConnectionsPerPeer"},
        C{"allowedClients"}), TLS handshakes that failed
        (C{"handshakeFailed"}) or ran out of time (C{"handshakeTimeout"}),
        plain connections closed by the first-byte timeout
        (C{"firstByteTimeout"}), messages dropped for their length
        (C{"messageTooLong"}), connections starting to miss broadcasts
        (C{"broadcastSkipped"}).  The first of each kind is logged in
        full; while they go on, one summary every 5 s says how many more
        there were.
        """
        return dict(self._events.counts)

    # -- listening --------------------------------------------------------

    def listen(
        self,
        port: int | str | IStreamServerEndpoint,
        interface: str = "",
        tls: TLSConfig | None = None,
    ) -> Deferred[IListeningPort]:
        """
        Start listening.

        @param port: a port number (0 picks a free one), a Twisted server
            endpoint description such as C{"tcp:8081:interface=::1"}, or an
            endpoint.
        @param interface: the address to bind a port number to: all IPv4
            addresses by default; an IPv6 address (such as C{"::"}) listens on
            IPv6.
        @param tls: serve TLS 1.3 with these certificates.
        @return: fires with the listening port, or fails with L{PortError}
            (10), L{CertificateLoadError} (30-35) or L{ListenError} (42).
        """
        try:
            endpoint = self._endpoint(port, interface)
            factory = None
            creator = None
            if tls is not None:
                creator = tls._serverCreator()
                factory = tlsFactory(
                    creator, isClient=False, wrappedFactory=self,
                    clock=self._reactor,
                )
        except Exception:
            return fail()
        listening = _ListeningFactory(
            self, factory, tls.allowedClients if tls is not None else None
        )

        def listening_(p: IListeningPort) -> IListeningPort:
            self._ports.append(p)
            if tls is not None and creator is not None:
                self._tlsPorts[p] = (tls, creator)
            address = p.getHost()
            allowed = tls.allowedClients if tls is not None else None
            self.log.info(
                "Listening on {address} ({mode}{tls})",
                address=describeAddress(address),
                mode="continuous" if issubclass(self.protocol, StreamProtocol) else "fragmented",  # type: ignore[arg-type]
                tls=(", TLS 1.3" if tls is not None else "")
                + (f", clients allowed: {', '.join(sorted(allowed)) or 'none'}"
                   if allowed is not None else ""),
            )
            return p

        def failed(f: Failure) -> Failure:
            if not f.check(CannotListenError):
                return f
            error = f.value
            assert isinstance(error, CannotListenError)
            # The error knows the port and interface whatever named them: a
            # number, an endpoint description or an endpoint.
            where = f"port {error.port}" + (f" on {error.interface}" if error.interface else "")
            raise ListenError(f"cannot listen on {where}: {error.socketError}") from error

        return endpoint.listen(listening).addCallbacks(listening_, failed)

    def _endpoint(self, port: int | str | IStreamServerEndpoint, interface: str
                  ) -> IStreamServerEndpoint:
        if isinstance(port, bool):
            raise PortError(f"port must be a number, not {port!r}")
        if isinstance(port, int):
            if not 0 <= port <= 65535:
                raise PortError(f"port {port} is outside 0-65535")
            if _compat.PRIVATE and isinstance(self._reactor, PosixReactorBase):
                return _GuardedTCPEndpoint(self._reactor, port, _BACKLOG, interface)
            if ":" in interface:
                return TCP6ServerEndpoint(self._reactor, port, backlog=_BACKLOG,
                                          interface=interface)
            return TCP4ServerEndpoint(self._reactor, port, backlog=_BACKLOG, interface=interface)
        if isinstance(port, str):
            if port.isdigit():
                return self._endpoint(int(port), interface)
            try:
                endpoint = serverFromString(self._reactor, port)
            except (ValueError, TypeError) as e:
                raise PortError(f"not a port or endpoint description: {port!r} ({e})") from e
            if "backlog=" not in port and isinstance(endpoint, (TCP4ServerEndpoint,
                                                                TCP6ServerEndpoint)):
                # A description without backlog= gets Twisted's queue of 50; use
                # the same queue as a port number does.
                endpoint = serverFromString(self._reactor, f"{port}:backlog={_BACKLOG}")
            return self._guarded(endpoint)
        if IStreamServerEndpoint.providedBy(port):
            return port
        raise PortError(f"not a port, endpoint description or endpoint: {port!r}")

    def _guarded(self, endpoint: IStreamServerEndpoint) -> IStreamServerEndpoint:
        """
        The same TCP endpoint with a port that pauses accepting when out of
        file descriptors; any other endpoint, or without the private path
        (see L{_compat}), the endpoint as it is.
        """
        if not isinstance(self._reactor, PosixReactorBase):
            return endpoint
        arguments = _compat.tcpEndpointArguments(endpoint)
        if arguments is None:
            return endpoint
        return _GuardedTCPEndpoint(self._reactor, *arguments)

    def reloadCertificates(self) -> int:
        """
        Read the CA, certificate and key of every TLS port again, from the
        files of the L{TLSConfig} it listens with, and serve the handshakes
        that start from now on with them.  Connections already established,
        or in their handshake, go on with the certificates they started
        with: nobody is disconnected.  This is how certificates replaced on
        disk before they expire (cert-manager, SPIFFE, ACME) are taken up
        without a restart; the daemon does it on SIGHUP.

        All or nothing: every file is read and checked first (readable,
        valid PEM, the key matching the certificate, the certificate valid
        now: neither expired nor issued for later); if anything fails,
        every port keeps the certificates it has, and the cause is logged,
        naming the file, and raised.  A L{TLSConfig} of PEM bytes rather
        than paths reloads the same bytes.

        @return: how many TLS ports serve the files just read; 0 for a
            server without TLS ports.
        @raise CertificateLoadError: a file could not be used (codes 30-35,
            34 for a certificate that is not valid now); nothing changed.
        """
        ports = [(port, *self._tlsPorts[port]) for port in self._ports
                 if port in self._tlsPorts]
        fresh: dict[int, _ServerCreator] = {}
        try:
            for _, config, _ in ports:
                if id(config) not in fresh:
                    fresh[id(config)] = config._serverCreator(current=True)
        except CertificateLoadError as e:
            self.log.error(
                "Certificate reload failed; the certificates in use are kept: {error}",
                error=str(e),
                path=e.path,
                code=e.code,
            )
            raise
        for port, config, creator in ports:
            previous = creator.certificate
            new = fresh[id(config)]
            creator.replaceWith(new)
            certificate = new.certificate
            if certificate is None:  # pragma: no cover - always set by serverOptions
                continue
            self.log.info(
                "Reloaded the TLS certificates of {address} from {path}: new handshakes "
                "get {subject!r} (serial {serial:x}, valid until {notAfter} UTC){unchanged}",
                address=describeAddress(port.getHost()),
                subject=certificate.subject.rfc4514_string(),
                serial=certificate.serial_number,
                notAfter=f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S}",
                unchanged=", unchanged" if certificate == previous else "",
                path="<PEM bytes>" if isinstance(config.cert, bytes) else str(config.cert),
            )
        return len(ports)

    @property
    def ports(self) -> list[IListeningPort]:
        """
        The ports this server listens on.
        """
        return list(self._ports)

    def stop(self) -> Deferred[None]:
        """
        Stop listening, then close every connection (L{MessageProtocol.closeConnection}
        with the reason C{"server stopping"}): nothing more is delivered
        to the application, what it sent is written, over TLS close_notify
        follows, and the socket is closed without waiting for the peer's
        answer.  A connection whose peer does not take its last output
        within C{closeTimeout} seconds is aborted.  C{onClosed} fires for
        each established connection; one line is logged at the end, a
        warning only if output was really dropped.

        @return: fires when no port is listening and no connection is open;
            the server may then L{listen} again, on the same port too.
        """
        ports, self._ports = self._ports, []
        self._tlsPorts.clear()
        stopped = gatherResults([maybeDeferred(p.stopListening) for p in ports])
        call, self._turnCall = self._turnCall, None
        if call is not None and call.active():
            call.cancel()
        self._turnWork = 0
        self._throttled = []
        self._full = {}
        self._targets = None
        if not self._open:
            return stopped.addCallback(self._stopTimers)
        closed: Deferred[None] = Deferred()
        self._closeWaiters.append(closed)
        protocols = list(self._open.values())
        self._stopping = _StopCount(len(protocols))
        for protocol in protocols:
            protocol.closeConnection("server stopping")
        closed.addCallback(self._stopped)
        everything: Deferred[list[Any]] = gatherResults([stopped, closed])
        return everything.addCallback(self._stopTimers)

    def _stopTimers(self, _: object) -> None:
        """
        Stopped: the log summary and the release of freed memory are due no
        more.
        """
        call, self._releaseCall = self._releaseCall, None
        if call is not None and call.active():
            call.cancel()
        self._events.stop()

    def _releaseMemory(self) -> None:
        self._releaseCall = None
        self._closesSinceRelease = 0
        releaseFreeMemory()

    def _stopped(self, _: object) -> None:
        count, self._stopping = self._stopping, None
        if count is None:
            return
        if count.abortedIds:
            self.log.warn(
                "Stopped: {count} of {connections} did not close within {timeout} s "
                "and {were} aborted, dropping {droppedBytes} of output not yet sent",
                count=len(count.abortedIds),
                total=count.total,
                connections=plural(count.total, "connection"),
                were="was" if len(count.abortedIds) == 1 else "were",
                timeout=self.closeTimeout,
                dropped=count.dropped,
                droppedBytes=plural(count.dropped, "byte"),
                connectionIds=sorted(count.abortedIds),
            )
        else:
            self.log.info("Stopped: {connections} closed, no output dropped",
                          total=count.total, connections=plural(count.total, "connection"))

    # -- the registry -----------------------------------------------------

    def _buildConnection(self, addr: IAddress | None, tls: bool,
                         allowedClients: frozenset[str] | None = None) -> _ConnectionBase | None:
        if len(self._open) >= self.maxConnections:
            self._events.record(
                "maxConnections",
                "Refused a connection from {peer}: the connection limit is reached "
                "({open} open, maxConnections {maxConnections})",
                peer=describeAddress(addr),
                reason="maxConnections",
                open=len(self._open),
                maxConnections=self.maxConnections,
            )
            return None
        host: str | None = getattr(addr, "host", None)
        perPeer = self.maxConnectionsPerPeer
        if perPeer is not None and host is not None:
            count = self._perPeer.get(host, 0)
            if count >= perPeer:
                self._events.record(
                    "maxConnectionsPerPeer",
                    "Refused a connection from {peer}: the limit per peer address is "
                    "reached ({count} open from {host}, maxConnectionsPerPeer "
                    "{maxConnectionsPerPeer})",
                    peer=describeAddress(addr),
                    host=host,
                    count=count,
                    reason="maxConnectionsPerPeer",
                    maxConnectionsPerPeer=perPeer,
                )
                return None
        protocol = self.buildProtocol(addr)
        assert isinstance(protocol, _ConnectionBase)
        for name, value in self._settings.items():
            setattr(protocol, name, value)
        protocol.closeTimeout = self.closeTimeout
        protocol._clock = self._reactor
        if self.memoryBudget is not None and isinstance(protocol, MessageProtocol):
            protocol._reportAt = _BUDGET_STEP
        connectionId = self._nextId
        self._nextId += 1
        protocol.connectionId = connectionId
        protocol._observer = self
        self._open[connectionId] = protocol
        if perPeer is not None and host is not None:
            self._perPeer[host] = self._perPeer.get(host, 0) + 1
            self._peerHosts[connectionId] = host
        if allowedClients is not None:
            self._allowLists[connectionId] = allowedClients
        if tls:
            protocol._handshakeStarted = self._reactor.seconds()
            if self.handshakeTimeout is not None:
                self._handshakeTimers[connectionId] = self._reactor.callLater(
                    self.handshakeTimeout, self._handshakeTimedOut, protocol
                )
        else:
            self._watchFirstBytes(protocol, connectionId)
        return protocol

    def _watchFirstBytes(self, protocol: _ConnectionBase, connectionId: int) -> None:
        """
        Watch the first bytes of a plain connection: close it if nothing
        arrives within L{firstByteTimeout} seconds, and refuse a TLS client,
        whose ClientHello would otherwise be taken for a message while the
        client waits for its handshake timeout.

        The first bytes are seen by a C{dataReceived} set on the protocol
        instance, which removes itself: the class's own C{dataReceived}, the
        hot path, runs unchanged for everything after them.
        """
        timers = self._firstByteTimers
        if self.firstByteTimeout is not None:
            timers[connectionId] = self._reactor.callLater(
                self.firstByteTimeout, self._firstByteTimedOut, protocol, self.firstByteTimeout
            )

        def firstBytes(data: bytes) -> None:
            del protocol.dataReceived
            timer = timers.pop(connectionId, None)
            if timer is not None and timer.active():
                timer.cancel()
            if data.startswith(_TLS_CLIENT_HELLO):
                self._refuseTLSClient(protocol)
            else:
                protocol.dataReceived(data)

        protocol.dataReceived = firstBytes  # type: ignore[method-assign]

    def _refuseTLSClient(self, protocol: _ConnectionBase) -> None:
        """
        A TLS client connected to this plain port: log it, answer with bytes
        that are not TLS (its TLS library then says so at once), and close.
        """
        self._events.record(
            "tlsClientOnPlainPort",
            "Connection {connectionId} from {peer}: a TLS client connected to a plain port; "
            "closing it",
            connectionId=protocol.connectionId,
            peer=describeAddress(protocol.transport.getPeer()),
            reason="tlsClientOnPlainPort",
        )
        protocol.transport.write(_NOT_TLS)
        protocol.closeConnection("a TLS client connected to a plain port")

    def _firstByteTimedOut(self, protocol: _ConnectionBase, timeout: float) -> None:
        self._firstByteTimers.pop(protocol.connectionId, None)  # type: ignore[arg-type]
        if not protocol.connected:
            return
        why = f"nothing received within {timeout:g} s (firstByteTimeout)"
        self._events.record(
            "firstByteTimeout",
            "Closing connection {connectionId} from {peer}: {why}",
            LogLevel.info,
            connectionId=protocol.connectionId,
            peer=describeAddress(protocol.transport.getPeer()),
            why=why,
        )
        protocol.closeConnection(why)

    def _handshakeTimedOut(self, protocol: _ConnectionBase) -> None:
        self._handshakeTimers.pop(protocol.connectionId, None)  # type: ignore[arg-type]
        if protocol.ready or protocol.transport is None:
            return
        # Mid-handshake there is no close_notify to send: abort.
        protocol._abort(f"handshake timeout ({self.handshakeTimeout:g} s)")

    def connectionReady(self, protocol: MessageProtocol | StreamProtocol) -> None:
        connectionId: int = protocol.connectionId  # type: ignore[assignment]
        timer = self._handshakeTimers.pop(connectionId, None)
        if timer is not None and timer.active():
            timer.cancel()
        started = protocol._handshakeStarted
        if started is not None:
            took = self._reactor.seconds() - started
            self._handshakeBuckets[bisect_left(HANDSHAKE_BUCKETS, took)] += 1
            self._handshakeSum += took
        certificate = peerCertificate(protocol.transport)
        allowed = self._allowLists.pop(connectionId, None)
        if allowed is not None and not isAllowedClient(certificate, allowed):
            # Never established: no callback, and the protocol's own
            # connectionReady is not called either.
            commonName = subjectPart(certificate, "CN")
            names = certificateDNSNames(certificate)
            self._events.record(
                "allowedClients",
                "Refused the connection from {peer}: its client certificate "
                "(CN={clientCommonName!r}, DNS names: {names}) is not on the allow-list",
                peer=describeAddress(protocol.transport.getPeer()),
                clientCommonName=commonName,
                clientNames=names,
                names=", ".join(names) or "none",
                reason="allowedClients",
            )
            self._refusedAndLogged.add(connectionId)
            protocol.ready = False
            # Aborted, not closed with close_notify: a graceful close would
            # first send the session tickets, the client's sign that it was
            # accepted (see tcpsc._tls.acceptanceGate).
            protocol._abort("the client's certificate is not on the allow-list")
            return
        self._established[connectionId] = protocol
        self._targets = None
        if self.logConnections:
            self.log.info(
                "Connection {connectionId} from {peer} established{cn}",
                connectionId=connectionId,
                peer=describeAddress(protocol.transport.getPeer()),
                cn=f" (client certificate CN={subjectPart(certificate, 'CN')!r})"
                if certificate is not None
                else "",
                clientCommonName=subjectPart(certificate, "CN"),
            )
        if self.createSink is not None and isinstance(protocol, StreamProtocol):
            try:
                protocol.sink = self.createSink(connectionId)
            except Exception:
                # Without its sink the connection's bytes would go nowhere:
                # close it rather than serve it half.
                self.log.failure(
                    "The createSink callback raised an exception; closing "
                    "connection {connectionId}",
                    connectionId=connectionId,
                )
                del self._established[connectionId]
                self._targets = None
                self._refusedAndLogged.add(connectionId)
                protocol.ready = False
                protocol.closeConnection("the createSink callback failed")
                return
        self._notify(self.onEstablished, "onEstablished", connectionId)

    def _notify(self, callback: Callable[..., object] | None, name: str,
                connectionId: int, *more: object) -> None:
        """
        Call a user callback; an exception it raises is logged and never
        breaks the registry's bookkeeping, nor the accepting of other
        connections (an exception escaping into Twisted's accept loop would
        drop the rest of the connections accepted with this one).
        """
        if callback is None:
            return
        try:
            callback(connectionId, *more)
        except Exception:
            self.log.failure(
                "The {callback} callback raised an exception for connection {connectionId}",
                callback=name,
                connectionId=connectionId,
            )

    def _notifyClosed(self, connectionId: int, why: str) -> None:
        """
        Call C{onClosed} with the id, and with the reason if it takes two
        arguments (looked up once per callback, not per close).
        """
        callback = self.onClosed
        known, takesReason = self._closedCallback
        if callback is not known:
            takesReason = callback is not None and _takesReason(callback)
            self._closedCallback = (callback, takesReason)
        if takesReason:
            self._notify(callback, "onClosed", connectionId, why)
        else:
            self._notify(callback, "onClosed", connectionId)

    def connectionClosed(self, protocol: MessageProtocol | StreamProtocol, reason: Failure,
                         wasReady: bool) -> None:
        connectionId: int = protocol.connectionId  # type: ignore[assignment]
        self._open.pop(connectionId, None)
        if self._established.pop(connectionId, None) is not None:
            self._targets = None
        self._full.pop(connectionId, None)
        held = self._inputHeld.pop(connectionId, None)
        if held is not None:
            self._inputTotal -= held
        held = self._splitHeld.pop(connectionId, None)
        if held is not None:
            self._splitTotal -= held
        if self._congestedIds:
            self._congestedIds.discard(connectionId)
            self._shareOutput()
        self._allowLists.pop(connectionId, None)
        host = self._peerHosts.pop(connectionId, None)
        if host is not None:
            remaining = self._perPeer.get(host, 1) - 1
            if remaining > 0:
                self._perPeer[host] = remaining
            else:
                self._perPeer.pop(host, None)
        for timers in (self._handshakeTimers, self._firstByteTimers):
            timer = timers.pop(connectionId, None)
            if timer is not None and timer.active():
                timer.cancel()
        closes = self._closesSinceRelease = self._closesSinceRelease + 1
        if (closes >= _RELEASE_AFTER_CLOSES and self._releaseCall is None
                and canReleaseMemory()):
            # What the connections freed is given back later, with that of
            # the others closing meanwhile (see _RELEASE_DELAY).
            self._releaseCall = self._reactor.callLater(_RELEASE_DELAY, self._releaseMemory)
        # A descriptor is free again: a port that ran out of them may accept.
        for port in self._ports:
            if isinstance(port, _GuardedPort) and port._retryCall is not None:
                port.resumeAccepting()
        totals = self._closedTotals
        totals[0] += protocol._bytesIn
        totals[1] += protocol._bytesOut
        totals[2] += protocol._messagesIn
        totals[3] += protocol._messagesOut
        totals[4] += protocol._outputDropped
        self._closeReasons[closeReason(reason)] += 1
        loggedAlready = connectionId in self._refusedAndLogged
        self._refusedAndLogged.discard(connectionId)
        aborted = isinstance(reason.value, AbortedLocally)
        stopping = self._stopping
        if stopping is not None and aborted:
            stopping.dropped += protocol._closeDropped
            stopping.abortedIds.append(connectionId)
        quiet = wasReady and not self.logConnections
        transport = protocol.transport
        peer = "?" if quiet or not transport else describeAddress(transport.getPeer())
        tls = ISSLTransport.providedBy(transport)
        try:
            if wasReady:
                why = describeClose(reason, tls)
                if self.logConnections:
                    self.log.info(
                        "Connection {connectionId} from {peer} closed: {why}",
                        connectionId=connectionId,
                        peer=peer,
                        why=why,
                    )
                self._notifyClosed(connectionId, why)
            elif loggedAlready:
                pass
            elif aborted:
                why = str(reason.value)
                if why.startswith("handshake timeout"):
                    self._handshakeFailures["timeout"] += 1
                    self._events.record("handshakeTimeout",
                                        "Closed the connection from {peer}: {why}",
                                        peer=peer, why=why)
                else:
                    self.log.warn("Closed the connection from {peer}: {why}", peer=peer,
                                  why=why)
            elif tls:
                detail = verificationFailure(transport)
                why = describeClose(reason, tls, detail)
                self._handshakeFailures[handshakeFailureReason(reason, detail)] += 1
                self._events.record(
                    "handshakeFailed",
                    "Refused the connection from {peer}: TLS handshake failed: {why}",
                    detail=why,
                    peer=peer,
                    why=why,
                    verification=detail,
                )
            else:
                self.log.info(
                    "Connection from {peer} closed before it was established: {why}",
                    peer=peer,
                    why=describeClose(reason, tls),
                )
        finally:
            if not self._open and self._closeWaiters:
                waiters, self._closeWaiters = self._closeWaiters, []
                for waiter in waiters:
                    waiter.callback(None)

    def messageReceived(self, protocol: MessageProtocol, message: bytes) -> None:
        if self.onMessage is not None:
            self.onMessage(protocol.connectionId, message)  # type: ignore[arg-type]

    def dataReceived(self, protocol: StreamProtocol, data: bytes) -> None:
        if self.onMessage is not None:
            self.onMessage(protocol.connectionId, data)  # type: ignore[arg-type]

    # -- the memory budget ------------------------------------------------

    def inputBuffered(self, protocol: MessageProtocol, size: int) -> None:
        """
        C{protocol} holds a partial message of C{size} bytes (1 MiB or more):
        count it, and drop the largest partial messages if the budget is
        exceeded.
        """
        connectionId: int = protocol.connectionId  # type: ignore[assignment]
        self._inputTotal += size - self._inputHeld.get(connectionId, 0)
        self._inputHeld[connectionId] = size
        protocol._reportAt = size + _BUDGET_STEP
        budget = self.memoryBudget
        if budget is not None and self._inputTotal > budget:
            largest = sorted(self._inputHeld.items(), key=lambda item: item[1], reverse=True)
            for victimId, held in largest:
                if self._inputTotal <= budget:
                    break
                victim = self._open.get(victimId)
                if not isinstance(victim, MessageProtocol):
                    continue
                victim.dropPartialMessage()
                self._events.record(
                    "memoryBudget",
                    "Dropped the partial message of {size} from {peer} (connection "
                    "{connectionId}): the connections' buffers hold {total} bytes, over the "
                    "memory budget of {budget} bytes (memoryBudget); the largest partial "
                    "messages are dropped first",
                    size=plural(held, "byte"),
                    length=held,
                    peer=describeAddress(victim.transport.getPeer()),
                    connectionId=victimId,
                    total=self._inputTotal + held,
                    budget=budget,
                )
        self._shareOutput()

    def inputReleased(self, protocol: MessageProtocol) -> None:
        """
        C{protocol}'s partial message is complete, or dropped.
        """
        held = self._inputHeld.pop(protocol.connectionId, None)  # type: ignore[arg-type]
        protocol._reportAt = _BUDGET_STEP
        if held is not None:
            self._inputTotal -= held
            self._shareOutput()

    def inputHeld(self, protocol: MessageProtocol, size: int) -> None:
        """
        C{protocol} holds messages split already, taking C{size} bytes of
        memory, until it is resumed (0: none any more).  They are counted
        against the budget with the partial messages; the output share is
        shared again once they changed by 1 MiB, not for each pause.
        """
        connectionId: int = protocol.connectionId  # type: ignore[assignment]
        before = self._splitHeld.pop(connectionId, 0)
        if size:
            self._splitHeld[connectionId] = size
        total = self._splitTotal = self._splitTotal + size - before
        if abs(total - self._splitShared) >= _BUDGET_STEP:
            self._shareOutput()

    def outputCongested(self, protocol: MessageProtocol | StreamProtocol) -> None:
        self._congestedIds.add(protocol.connectionId)  # type: ignore[arg-type]
        self._shareOutput()

    def outputDrained(self, protocol: MessageProtocol | StreamProtocol) -> None:
        self._congestedIds.discard(protocol.connectionId)
        self._shareOutput()

    def _shareOutput(self) -> None:
        """
        What is left of the budget after the partial messages and the
        messages held split, shared equally among the congested connections.
        """
        budget = self.memoryBudget
        if budget is None:
            self._outputShare = None
            return
        before = self._outputShare
        self._splitShared = self._splitTotal
        share = self._outputShare = max(
            _LEAST_OUTPUT_SHARE,
            (budget - self._inputTotal - self._splitTotal) // max(1, len(self._congestedIds)),
        )
        if before is not None and share < before:
            # A smaller share: the connections congested before it came
            # accept no more than it either.
            for connectionId in self._congestedIds:
                protocol = self._open.get(connectionId)
                if protocol is None:
                    continue
                room = protocol._budgetRoom()
                if room is not None and room < protocol._room:
                    protocol._room = room

    def _lookup(self, clientId: int) -> _ConnectionBase:
        try:
            return self._established[clientId]
        except (KeyError, TypeError):
            raise ServerError(f"no connected client with id {clientId!r}") from None

    def clientIds(self) -> list[int]:
        """
        The ids of the established connections, ascending.
        """
        return sorted(self._established)

    def connection(self, clientId: int) -> MessageProtocol | StreamProtocol:
        """
        The protocol of an established connection.

        @raise ServerError: unknown id.
        """
        return self._lookup(clientId)  # type: ignore[return-value]

    def send(self, clientId: int, data: bytes | str) -> bool:
        """
        Send a message (continuous mode: bytes) to one connection.

        @return: C{False} (and nothing written) for an unknown or closed
            id, a message that L{MessageProtocol.sendMessage} refuses, or a
            congested connection that already accepted C{maxPendingOutput}
            bytes (see L{MessageProtocol.maxPendingOutput}).
        """
        protocol = self._established.get(clientId)
        if protocol is None:
            return False
        if isinstance(protocol, MessageProtocol):
            return protocol.sendMessage(data)
        return protocol.sendData(data)  # type: ignore[attr-defined]

    def broadcast(self, data: bytes | str, exclude: int | Collection[int] | None = None) -> int:
        """
        Send one message to every established connection, validating and
        framing it once.

        Slow consumers: a connection that is congested and has no room left
        for the message (see L{MessageProtocol.maxPendingOutput}) is
        I{skipped}: it misses this message, the others get it, and the
        server's memory stays bounded.  Each skip is counted in
        L{broadcastSkips}; the first skip of a congestion episode is logged.
        With C{maxBroadcastSkips} set, a connection skipped that many times
        before it caught up is aborted (its peer then knows it missed
        messages) and a warning is logged.  Without it, a connection found
        without room is left out of the broadcasts until the next turn of
        the reactor (they are counted as skipped all the same).

        Bounded work per turn: once the broadcasts of one turn of the
        reactor have gone to about L{TURN_BROADCAST_WORK} connections, the
        connection whose read is being handled (the sender, excluded or
        not) stops being read until the next turn, unless at most a few
        messages of its read are left; the connections paused so are
        resumed at the next turn, each with an equal share of it.

        @param exclude: an id, or ids, to leave out (a chat server excludes
            the sender).
        @return: how many connections it was written to; 0 also when the
            message is refused (it contains the delimiter or is too long).
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        if exclude is None:
            excluded: Collection[int] = ()
        elif isinstance(exclude, int):
            excluded = (exclude,)
        else:
            excluded = exclude
        established = self._established
        full = self._full
        candidates = self._targets
        if candidates is None:
            candidates = self._targets = [
                (i, p) for i, p in established.items() if i not in full]
        if excluded:
            targets = [p for i, p in candidates if i not in excluded]
        else:
            targets = [p for _, p in candidates]
        if targets:
            first = targets[0]
        elif full:
            # Every target is full: the message is still counted as missed.
            first = next(iter(full.values()))[0]
        else:
            return 0
        work = self._turnWork + len(established)
        self._turnWork = work
        if self._turnCall is None:
            self._turnCall = self._reactor.callLater(0, self._nextTurn)
        if work > self._workLimit:
            self._yieldTurn(excluded, targets)
        written = 0
        if isinstance(first, MessageProtocol):
            frame = first.frame(data)
            if frame is None:
                return 0
            serial = self._broadcastSerial = self._broadcastSerial + 1
            if full:
                # The connections found full earlier in this turn miss this
                # one too, without a look at each.
                skipped = len(full)
                for i in set(excluded):
                    entry = full.get(i)
                    if entry is not None:
                        entry[1] += 1
                        skipped -= 1
                self.broadcastSkips += skipped
            # The transports of the connections in the common state, and of
            # the congested ones with room, written to after the loop in one
            # go (see _compat.writeToAll).
            direct: list[Any] = []
            size = len(frame)
            # One protocol class serves all of a server's connections.
            for p in cast("list[MessageProtocol]", targets):
                transport: Any = p.transport
                if p._batch is not None or not p.ready:
                    # The checked path: a read being handled, not ready.
                    if p.sendFrame(frame):
                        written += 1
                    elif p._congested:
                        # Counted as a skip, not as a send refused.
                        p._outputDropped -= 1
                        self._skipped(p)
                elif p._congested:
                    # What sendFrame does for a congested connection.
                    if size > p._room and size > p._roomLeft():
                        self._skipped(p)
                        if self.maxBroadcastSkips is None:
                            full[p.connectionId] = [p, 0, serial]  # type: ignore[index]
                            self._targets = None
                    elif not transport.disconnecting:
                        p._room -= size
                        direct.append(transport)
                elif not transport.disconnecting:
                    # What sendFrame does for a connection in the common
                    # state, without a call per connection.
                    direct.append(transport)
            if direct:
                _compat.writeToAll(direct, frame)
                self._broadcastMessages += len(direct)
                self._broadcastBytes += size * len(direct)
            return written + len(direct)
        for stream in cast("list[StreamProtocol]", targets):
            if stream.sendData(data):
                written += 1
            elif stream._congested:
                stream._outputDropped -= 1
                self._skipped(stream)
        return written

    def _yieldTurn(self, excluded: Collection[int], targets: list[_ConnectionBase]) -> None:
        """
        This turn's broadcasts did their share of work: stop reading from
        the connection whose read is being handled (the sender, excluded or
        not) until the next turn.  It delivers the messages it holds then.
        """
        reader = None
        for candidate in (*(self._established.get(i) for i in excluded), *targets):
            if candidate is not None and getattr(candidate, "_batch", None) is not None:
                reader = candidate
                break
        if reader is None or reader._paused:
            return
        reader.pauseReading()
        reader._throttled = True
        self._throttled.append(reader)

    def _nextTurn(self) -> None:
        """
        A new reactor turn.  The connections found full in the last one
        count the broadcasts they missed and are looked at again.  The
        connections paused by L{_yieldTurn} are resumed in the order they
        were paused, each with an equal share of this turn's work (it
        delivers its messages until its share is used, at least one); those
        beyond the turn's work wait for the next one, first in line.
        """
        self._turnCall = None
        self._turnWork = 0
        full, self._full = self._full, {}
        if full:
            self._targets = None
        serial = self._broadcastSerial
        for protocol, excludedTimes, since in full.values():
            if protocol._congested:
                protocol._broadcastSkips += serial - since - excludedTimes
        throttled, self._throttled = self._throttled, []
        waiting = [p for p in throttled if p._throttled]
        if not waiting:
            return
        share = max(1, TURN_BROADCAST_WORK // len(waiting))
        left: list[_ConnectionBase] = []
        try:
            for protocol in waiting:
                if self._turnWork >= TURN_BROADCAST_WORK:
                    left.append(protocol)
                    continue
                protocol._throttled = False
                if protocol.connected:
                    self._workLimit = min(TURN_BROADCAST_WORK, self._turnWork + share)
                    try:
                        protocol.resumeReading()
                    except Exception:
                        # As Twisted ends a connection whose dataReceived
                        # raised; the others are resumed all the same.
                        self.log.failure(
                            "Delivering the held messages of connection {connectionId} "
                            "raised an exception; closing it",
                            connectionId=protocol.connectionId,
                        )
                        protocol._abort("an exception while delivering its messages")
        finally:
            self._workLimit = TURN_BROADCAST_WORK
        if left:
            self._throttled[:0] = left
            if self._turnCall is None:
                self._turnCall = self._reactor.callLater(0, self._nextTurn)

    def _skipped(self, protocol: _ConnectionBase) -> None:
        """
        A broadcast left out a congested connection.
        """
        limit = self.maxBroadcastSkips
        if limit is not None and protocol._broadcastSkips >= limit:
            return  # being closed already
        self.broadcastSkips += 1
        protocol._broadcastSkips += 1
        skips = protocol._broadcastSkips
        if limit is None and skips != 1:
            return
        peer = describeAddress(protocol.transport.getPeer())
        if limit is not None and skips >= limit:
            self.log.warn(
                "Closing connection {connectionId} from {peer}: it missed {missed} "
                "in a row, its peer does not read (maxBroadcastSkips {limit})",
                connectionId=protocol.connectionId,
                peer=peer,
                skips=skips,
                missed=plural(skips, "broadcast"),
                limit=limit,
            )
            protocol._abort(f"it missed {plural(skips, 'broadcast')} in a row "
                            f"(maxBroadcastSkips)")
        elif skips == 1:
            self._events.record(
                "broadcastSkipped",
                "Connection {connectionId} from {peer} misses broadcasts: its peer does not "
                "read fast enough, its output is over maxPendingOutput ({maxPendingOutput} "
                "bytes)",
                connectionId=protocol.connectionId,
                peer=peer,
                maxPendingOutput=protocol.maxPendingOutput,
            )

    def disconnect(self, clientId: int) -> bool:
        """
        Close one connection after its pending output is written (see
        L{MessageProtocol.closeConnection}: bounded by C{closeTimeout}).
        C{onClosed} fires once it is closed.

        @return: C{False} for an unknown id.
        """
        protocol = self._established.get(clientId)
        if protocol is None:
            return False
        protocol.closeConnection("disconnect() called")
        return True

    def clientAddress(self, clientId: int) -> tuple[str, int]:
        """
        The peer's address: C{(host, port)}, IPv4 or IPv6.

        @raise ServerError: unknown id.
        """
        peer = self._lookup(clientId).transport.getPeer()
        return peer.host, peer.port

    def clientCertificate(self, clientId: int) -> x509.Certificate | None:
        """
        The certificate the client presented, or C{None} (plain TCP, or a
        TLS server that does not require one).

        @raise ServerError: unknown id.
        """
        return peerCertificate(self._lookup(clientId).transport)

    def clientSubjectPart(self, clientId: int, part: x509.ObjectIdentifier | str) -> str | None:
        """
        One part of the subject of the client's certificate.

        @param part: a L{cryptography.x509.oid.NameOID} or a short name: C,
            ST, L, O, OU, CN, emailAddress.
        @return: its first value, or C{None} if the client presented no
            certificate or the subject has no such part.
        @raise ServerError: unknown id.
        @raise ValueError: unknown short name.
        """
        return subjectPart(self.clientCertificate(clientId), part)

    def openConnections(self) -> int:
        """
        How many connections are open, including those still in the TLS
        handshake.
        """
        return len(self._open)
