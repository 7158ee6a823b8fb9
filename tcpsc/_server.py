# -*- test-case-name: tests.test_server -*-
"""
The server: a Twisted factory that listens on any number of ports, plain or
TLS, and decides what happens to each connection until it ends.

L{Server} refuses connections over its limits before any TLS work, times out
handshakes and silent first bytes, says when a connection is I{established}
(at once for TCP; for TLS once the handshake verified the client and, with
an allow-list, its certificate names were checked), keeps the connections'
buffers within a memory budget, reloads TLS certificates, and stops
gracefully.  It names and reaches its connections through a registry
(L{tcpsc._registry}), and accepts through the ports of L{tcpsc._accept}.
"""

from __future__ import annotations

import inspect
from bisect import bisect_left
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    ISSLTransport,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger, LogLevel
from twisted.protocols.policies import TimeoutFactory, TimeoutProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from ._accept import resumeAccepting, serverEndpoint
from ._addresses import describeAddress
from ._cluster import ClusterRegistry, IdsExhausted
from ._errors import AbortedLocally, CertificateLoadError, ListenError, ServerError
from ._events import EventSummary, FastLogger, plural
from ._framing import MessageProtocol, StreamProtocol, _ConnectionBase
from ._memory import canReleaseMemory, releaseFreeMemory
from ._metrics import HANDSHAKE_BUCKETS, ServerCollector, closeReason, handshakeFailureReason
from ._proxy import ProxyHeaderReceiver, proxiedDescription
from ._reactor import defaultReactor
from ._registry import LocalRegistry
from ._settings import (
    DEFAULT_FIRST_BYTE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
    DEFAULT_MEMORY_BUDGET,
    FROM_PROTOCOL,
    FromProtocol,
    SettingAttribute,
    Settings,
    protocolClass,
    settingsFrom,
)
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
    from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
    from twisted.protocols.tls import TLSMemoryBIOFactory

    from ._tls import _ServerCreator

__all__ = [
    "DEFAULT_FIRST_BYTE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_PEER",
    "DEFAULT_MEMORY_BUDGET",
    "Server",
]

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


class _Default:
    """
    The default of an argument whose value comes from elsewhere: a sentinel
    that says so in signatures and reprs (the blocking API's).
    """

    def __init__(self, description: str) -> None:
        self._description = description

    def __repr__(self) -> str:
        return self._description


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


def _noDeadline(connectionId: int) -> None:
    """
    A connection's first bytes arrived on a server without a first-byte
    timeout: nothing to stop.
    """


class _Deadlines:
    """
    The connections that each have C{timeout} seconds, from the moment they
    are added, to do something (send their first bytes, complete their TLS
    handshake), watched with one timer for all of them instead of one each.

    They are kept in the order they were added, which, with one timeout for
    all, is the order of their deadlines: the timer is set for the
    earliest deadline, and a connection that did what it had to is
    discarded (a dictionary deletion; the timer is left as it is unless no
    connection is left waiting).  When the
    timer fires, every connection whose deadline has come is handed to
    C{expired} (at its deadline, as with a timer of its own), and the timer
    is set again for the earliest deadline left, if any.  It runs only
    while connections wait: it is cancelled when the last one waiting is
    discarded.  (Under a steady flow of connections some are nearly always
    waiting, so the timer is set once in many connections rather than for
    each.)

    @ivar timeout: the seconds each connection has.
    """

    def __init__(
        self,
        clock: IReactorTime,
        timeout: float,
        expired: Callable[[_ConnectionBase, float], object],
    ) -> None:
        self._clock = clock
        self.timeout = timeout
        self._expired = expired
        # connection id -> (deadline, protocol), in the order added.
        self._waiting: OrderedDict[int, tuple[float, _ConnectionBase]] = OrderedDict()
        self._timer: IDelayedCall | None = None
        # The time the timer is set for.
        self._timerAt = 0.0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, connectionId: int, protocol: _ConnectionBase) -> None:
        """
        Start the time of connection C{connectionId}.
        """
        deadline = self._clock.seconds() + self.timeout
        self._waiting[connectionId] = (deadline, protocol)
        if self._timer is None:
            self._setTimer(deadline)

    def discard(self, connectionId: int) -> None:
        """
        Connection C{connectionId} did what it had to, or is gone.
        """
        waiting = self._waiting
        if waiting.pop(connectionId, None) is not None and not waiting:
            self.stop()

    def stop(self) -> None:
        """
        Cancel the timer (no connection waits).
        """
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _setTimer(self, deadline: float) -> None:
        self._timerAt = deadline
        self._timer = self._clock.callLater(
            max(0.0, deadline - self._clock.seconds()), self._timedOut
        )

    def _timedOut(self) -> None:
        self._timer = None
        # The deadline the timer was set for has come, whatever rounding
        # the clock's arithmetic did.
        now = max(self._clock.seconds(), self._timerAt)
        waiting = self._waiting
        try:
            while waiting:
                connectionId, (deadline, protocol) = next(iter(waiting.items()))
                if deadline > now:
                    break
                del waiting[connectionId]
                self._expired(protocol, self.timeout)
        finally:
            # Set again for those left, even if closing one failed (the
            # reactor logs that): the others keep their deadlines.
            if waiting and self._timer is None:
                self._setTimer(next(iter(waiting.values()))[0])


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

    On a PROXY-protocol port (C{proxy}) the connection is accepted with a
    L{ProxyHeaderReceiver} instead, counted against C{maxConnections} from
    then on; the connection itself, with the limit per peer address, is
    built once its header gave the client's address.
    """

    noisy = False

    def __init__(
        self,
        server: Server,
        tlsFactory: TLSMemoryBIOFactory | None,
        allowedClients: frozenset[str] | None = None,
        proxy: bool = False,
    ) -> None:
        self._server = server
        self._tlsFactory = tlsFactory
        self._allowedClients = allowedClients
        self._proxy = proxy
        self._timeoutFactory = (
            _IdleTimeoutFactory(server, server.idleTimeout)
            if server.idleTimeout is not None
            else None
        )

    def logPrefix(self) -> str:
        return self._server.logPrefix()

    def buildProtocol(self, addr: IAddress | None) -> Any:
        if self._proxy:
            return self._server._acceptProxied(addr, self.buildConnection)
        return self.buildConnection(addr)

    def buildConnection(self, addr: IAddress | None, quiet: bool = False) -> Any:
        """
        The protocol of a connection from C{addr}, with its wrappers; or
        C{None} if a limit refuses it.

        @param quiet: log its established and closed lines at debug level
            (a load balancer's health check).
        """
        connection = self._server._buildConnection(
            addr, tls=self._tlsFactory is not None, allowedClients=self._allowedClients, quiet=quiet
        )
        if connection is None:
            return None
        protocol: Any = connection
        tlsFactory = self._tlsFactory
        if tlsFactory is not None:
            protocol = tlsFactory.protocol(tlsFactory, protocol)
        timeoutFactory = self._timeoutFactory
        if timeoutFactory is not None:
            wrapper = (
                _HalfCloseableTimeoutProtocol
                if IHalfCloseableProtocol.providedBy(protocol)
                else _IdleTimeoutProtocol
            )
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

    The limits, timeouts and bounds are L{settings}, one L{Settings} value;
    its fields that are not the protocol's (framing and output bound) are
    also attributes of the server that can be read and set (setting one
    replaces L{settings} with a checked copy):

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
    @ivar handshakeTimeout: seconds a TLS client has to complete its
        handshake, or C{None}.
    @ivar idleTimeout: seconds without any byte after which a connection is
        closed, or C{None}; read by the ports listening from then on.
    @ivar closeTimeout: seconds every close the server starts gives the
        peer to take the last output.
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
    log = FastLogger()

    maxConnections: SettingAttribute[int] = SettingAttribute()
    maxConnectionsPerPeer: SettingAttribute[int | None] = SettingAttribute()
    firstByteTimeout: SettingAttribute[float | None] = SettingAttribute()
    handshakeTimeout: SettingAttribute[float | None] = SettingAttribute()
    idleTimeout: SettingAttribute[float | None] = SettingAttribute()
    closeTimeout: SettingAttribute[float] = SettingAttribute()
    maxBroadcastSkips: SettingAttribute[int | None] = SettingAttribute()
    logConnections: SettingAttribute[bool] = SettingAttribute()
    memoryBudget: SettingAttribute[int | None] = SettingAttribute()
    logEveryEvent: SettingAttribute[bool] = SettingAttribute()

    def __init__(
        self,
        protocol: type[MessageProtocol] | type[StreamProtocol] | None = None,
        *,
        stream: bool = False,
        delimiter: bytes | str | FromProtocol | None = FROM_PROTOCOL,
        maxMessageLength: int | FromProtocol | None = FROM_PROTOCOL,
        messageAppend: bytes | str | FromProtocol | None = FROM_PROTOCOL,
        maxConnections: int = Settings.maxConnections,
        handshakeTimeout: float | None = Settings.handshakeTimeout,
        idleTimeout: float | None = Settings.idleTimeout,
        closeTimeout: float = Settings.closeTimeout,
        onEstablished: Callable[[int], object] | None = None,
        onClosed: Callable[..., object] | None = None,
        onMessage: Callable[[int, bytes], object] | None = None,
        createSink: Callable[[int], object] | None = None,
        reactor: IReactorTime | None = None,
        maxConnectionsPerPeer: int | None = Settings.maxConnectionsPerPeer,
        firstByteTimeout: float | None = Settings.firstByteTimeout,
        maxPendingOutput: int | FromProtocol | None = FROM_PROTOCOL,
        maxBroadcastSkips: int | None = Settings.maxBroadcastSkips,
        logConnections: bool = Settings.logConnections,
        logEveryEvent: bool = Settings.logEveryEvent,
        memoryBudget: int | None = Settings.memoryBudget,
        metrics: CollectorRegistry | None = None,
        settings: Settings | None = None,
        cluster: str | None = None,
    ) -> None:
        """
        @param protocol: a L{MessageProtocol} or L{StreamProtocol} subclass;
            by default L{MessageProtocol} (or L{StreamProtocol} if C{stream}).
        @param stream: continuous mode (raw bytes) instead of messages.
        @param delimiter: overrides the protocol's C{delimiter} (C{None} or
            C{FROM_PROTOCOL}: the protocol's own).
        @param maxMessageLength: overrides the protocol's C{maxMessageLength}
            (C{None} for no limit).
        @param messageAppend: overrides the protocol's C{messageAppend}
            (C{None} or C{FROM_PROTOCOL}: the protocol's own).
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
        @param settings: all the limits, timeouts and bounds as one value,
            instead of the keyword arguments that spell its fields: a
            keyword that differs from its default given together with
            C{settings} is a C{TypeError} (see L{tcpsc.Settings}).
        @param cluster: a C{redis://HOST[:PORT][/DB]} URL: this server is
            a node of the cluster of every server with the same URL, whose
            ids, L{clientIds}, L{send}, L{broadcast}, L{clientAddress} and
            L{clientCertificate} span all of them (see the README's "A
            cluster over Redis").  L{listen} joins the cluster first and
            L{stop} leaves it.  Needs txredisapi (C{pip install
            "tcpsc[cluster]"}).
        @raise ImportError: C{metrics} is given and prometheus-client is not
            installed, or C{cluster} is given and txredisapi is not.
        @raise TypeError: a setting given both in C{settings} and as a
            keyword; a protocol that is not one of tcpsc's.
        @raise ValueError: a setting out of its range.
        """
        self.protocol = self._protocolClass = protocolClass(protocol, stream)
        self._settings = settingsFrom(
            "Server",
            settings,
            {
                "delimiter": delimiter,
                "maxMessageLength": maxMessageLength,
                "messageAppend": messageAppend,
                "maxConnections": maxConnections,
                "handshakeTimeout": handshakeTimeout,
                "idleTimeout": idleTimeout,
                "closeTimeout": closeTimeout,
                "maxConnectionsPerPeer": maxConnectionsPerPeer,
                "firstByteTimeout": firstByteTimeout,
                "maxPendingOutput": maxPendingOutput,
                "maxBroadcastSkips": maxBroadcastSkips,
                "logConnections": logConnections,
                "logEveryEvent": logEveryEvent,
                "memoryBudget": memoryBudget,
            },
        )
        # What each connection's protocol gets set, worked out (and checked
        # against the protocol class) once.
        self._protocolAttributes = self._settings.protocolAttributes(self._protocolClass)
        protocolClass_: type = self._protocolClass
        if onMessage is not None:
            hook = (
                "messageReceived" if issubclass(protocolClass_, MessageProtocol) else "dataReceived"
            )
            base = MessageProtocol if hook == "messageReceived" else StreamProtocol
            if getattr(protocolClass_, hook) is not getattr(base, hook):
                raise ValueError(
                    f"onMessage is never called: {protocolClass_.__name__} overrides {hook}"
                )
        if createSink is not None and not issubclass(protocolClass_, StreamProtocol):
            raise ValueError("createSink applies to continuous mode (a StreamProtocol) only")
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
        self.onEstablished = onEstablished
        self.onClosed = onClosed
        self.onMessage = onMessage
        self.createSink = createSink
        self._reactor: IReactorTime = reactor if reactor is not None else defaultReactor()
        self._events = EventSummary(
            self.log, self._reactor, logEveryEvent=self._settings.logEveryEvent
        )
        self._cluster: ClusterRegistry | None = None
        self._registry: LocalRegistry | ClusterRegistry
        if cluster is not None:
            self._registry = self._cluster = ClusterRegistry(
                cluster, self._reactor, self._events, self.log, self._settings.maxBroadcastSkips
            )
        else:
            self._registry = LocalRegistry(
                self._reactor, self._events, self.log, self._settings.maxBroadcastSkips
            )
        self._shareOutput()
        # The TLS connections in their handshake and the plain ones that
        # sent nothing yet, watched for their timeouts: by kind
        # ("handshake", "firstByte") and timeout (the settings may change).
        self._deadlines: dict[tuple[str, float], _Deadlines] = {}
        # Connections of PROXY-protocol ports whose header is not read yet,
        # and the ids of the load balancer's own connections (its health
        # checks), whose lines are logged only with logEveryEvent.
        self._awaitingHeader: set[ProxyHeaderReceiver] = set()
        self._quietIds: set[int] = set()
        # Connections the server refused after their handshake and logged
        # then: nothing more is logged when they are gone.
        self._refusedAndLogged: set[int] = set()
        # The onClosed callback last called, and whether it takes the reason.
        self._closedCallback: tuple[Callable[..., object] | None, bool] = (None, False)
        # The allow-list of the port of each connection in its handshake.
        self._allowLists: dict[int, frozenset[str]] = {}
        # The peer of each established connection as its established line
        # gave it, for its closed line.
        self._peerTexts: dict[int, str] = {}
        # self.log, bound once for the lines of every connection (each
        # reading of the descriptor makes a new Logger).
        self._connectionLog: Logger = self.log
        self._ports: list[IListeningPort] = []
        # The TLS settings and connection creator of each TLS port, for
        # reloadCertificates.
        self._tlsPorts: dict[IListeningPort, tuple[TLSConfig, _ServerCreator]] = {}
        self._closeWaiters: list[Deferred[None]] = []
        self._stopping: _StopCount | None = None
        self._releaseCall: IDelayedCall | None = None
        self._closesSinceRelease = 0
        # For metrics (tcpsc._metrics): what the connections that ended
        # carried (bytes in, bytes out, messages in, messages out, messages
        # refused by the output bound), why connections ended and handshakes
        # failed, and how long handshakes took (a count per bucket, and the
        # sum).
        self._closedTotals = [0, 0, 0, 0, 0]
        self._closeReasons: Counter[str] = Counter()
        self._handshakeFailures: Counter[str] = Counter()
        self._handshakeBuckets = [0] * (len(HANDSHAKE_BUCKETS) + 1)
        self._handshakeSum = 0.0
        if metrics is not None:
            collector = ServerCollector(self)
            metrics.register(collector)

    def logPrefix(self) -> str:
        return "tcpsc.Server"

    def _numberIds(self, firstId: int, idStep: int) -> None:
        """
        Number the connections C{firstId}, C{firstId + idStep}, ...: how the
        worker processes of one daemon keep their ids apart (see
        L{LocalRegistry}).  Before the first connection only.

        @raise RuntimeError: a connection was registered already.
        """
        if self._registry.registered:
            raise RuntimeError("connection ids are numbered before the first connection")
        self._registry = LocalRegistry(
            self._reactor,
            self._events,
            self.log,
            self._settings.maxBroadcastSkips,
            firstId=firstId,
            idStep=idStep,
        )

    @property
    def settings(self) -> Settings:
        """
        The limits, timeouts and bounds in force.  Setting a new value
        applies it to the connections accepted from then on (the limits and
        C{logConnections} at once; C{idleTimeout} to the ports listening from
        then on).

        @raise ValueError: a framing field that the protocol class refuses
            (see L{Settings.protocolAttributes}); the settings are unchanged.
        """
        return self._settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        if not isinstance(value, Settings):
            raise TypeError(f"settings must be a tcpsc.Settings, not {value!r}")
        attributes = value.protocolAttributes(self._protocolClass)
        self._settings = value
        self._protocolAttributes = attributes
        self._events.logEveryEvent = value.logEveryEvent
        self._registry.broadcaster.maxBroadcastSkips = value.maxBroadcastSkips

    @property
    def broadcastSkips(self) -> int:
        return self._registry.broadcaster.skips

    @broadcastSkips.setter
    def broadcastSkips(self, value: int) -> None:
        self._registry.broadcaster.skips = value

    @property
    def eventCounts(self) -> dict[str, int]:
        """
        The events that could flood the log, counted exactly since the
        server was made, by kind: refused connections by reason
        (C{"maxConnections"}, C{"maxConnectionsPerPeer"},
        C{"allowedClients"}, C{"proxyHeader"}: no valid PROXY header on a
        C{haproxy:} port), TLS handshakes that failed
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
        *,
        proxyProtocol: bool = False,
    ) -> Deferred[IListeningPort]:
        """
        Start listening.

        @param port: a port number (0 picks a free one), a Twisted server
            endpoint description such as C{"tcp:8081:interface=::1"}, or an
            endpoint.  A description that starts with C{haproxy:}, such as
            C{"haproxy:tcp:8081"}, listens on the rest of it for a load
            balancer that sends the PROXY protocol (version 1 or 2): each
            connection must start with a PROXY header, and the client's
            address it gives is the connection's peer address everywhere
            (limits, log lines, L{clientAddress}); see L{tcpsc._proxy}.
            (An endpoint object made by Twisted's own C{proxyEndpoint} is
            used as it is, with Twisted's wrapper, which knows the client's
            address only after the limits were applied: use the
            description, or C{proxyProtocol}.)
        @param interface: the address to bind a port number to: all IPv4
            addresses by default; an IPv6 address (such as C{"::"}) listens on
            IPv6.
        @param tls: serve TLS 1.3 with these certificates.
        @param proxyProtocol: expect a PROXY header on every connection, as
            a C{haproxy:} description does, on a port given otherwise (a
            number, say).
        @return: fires with the listening port, or fails with L{PortError}
            (10), L{CertificateLoadError} (30-35) or L{ListenError} (42);
            for a server in a cluster, once the cluster is joined, or fails
            with L{ClusterError} (45) if Redis cannot be reached within
            5 s.
        """
        cluster = self._cluster
        if cluster is not None and not cluster.joined:
            return cluster.join().addCallback(
                lambda _: self.listen(port, interface, tls, proxyProtocol=proxyProtocol)
            )
        try:
            proxied = proxiedDescription(port)
            if proxied is not None:
                port = proxied
            proxy = proxyProtocol or proxied is not None
            endpoint = serverEndpoint(self._reactor, port, interface, self.log)
            factory = None
            creator = None
            if tls is not None:
                creator = tls._serverCreator()
                factory = tlsFactory(
                    creator,
                    isClient=False,
                    wrappedFactory=self,
                    clock=self._reactor,
                )
        except Exception:
            return fail()
        listening = _ListeningFactory(
            self, factory, tls.allowedClients if tls is not None else None, proxy
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
                tls=(", PROXY protocol" if proxy else "")
                + (", TLS 1.3" if tls is not None else "")
                + (
                    f", clients allowed: {', '.join(sorted(allowed)) or 'none'}"
                    if allowed is not None
                    else ""
                ),
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
        ports = [(port, *self._tlsPorts[port]) for port in self._ports if port in self._tlsPorts]
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
        for receiver in list(self._awaitingHeader):
            # Nothing of theirs reached the application: closed at once.
            receiver.close()
        self._registry.broadcaster.stop()
        if not self._registry.openCount():
            return stopped.addCallback(self._stopTimers).addCallback(self._leaveCluster)
        closed: Deferred[None] = Deferred()
        self._closeWaiters.append(closed)
        protocols = list(self._registry.connections().values())
        self._stopping = _StopCount(len(protocols))
        for protocol in protocols:
            protocol.closeConnection("server stopping")
        closed.addCallback(self._stopped)
        everything: Deferred[list[Any]] = gatherResults([stopped, closed])
        return everything.addCallback(self._stopTimers).addCallback(self._leaveCluster)

    def _leaveCluster(self, _: object) -> Deferred[None] | None:
        """
        Stopped: leave the cluster, if in one.
        """
        if self._cluster is None:
            return None
        return self._cluster.leave()

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
            self.log.info(
                "Stopped: {connections} closed, no output dropped",
                total=count.total,
                connections=plural(count.total, "connection"),
            )

    # -- the connections' lives -------------------------------------------

    def _buildConnection(
        self,
        addr: IAddress | None,
        tls: bool,
        allowedClients: frozenset[str] | None = None,
        quiet: bool = False,
    ) -> _ConnectionBase | None:
        settings = self._settings
        registry = self._registry
        opened = registry.openCount() + len(self._awaitingHeader)
        if opened >= settings.maxConnections:
            self._events.record(
                "maxConnections",
                "Refused a connection from {peer}: the connection limit is reached "
                "({open} open, maxConnections {maxConnections})",
                peer=describeAddress(addr),
                reason="maxConnections",
                open=opened,
                maxConnections=settings.maxConnections,
            )
            return None
        host: str | None = getattr(addr, "host", None)
        perPeer = settings.maxConnectionsPerPeer
        if perPeer is not None and host is not None:
            count = registry.peerCount(host)
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
        for name, value in self._protocolAttributes.items():
            setattr(protocol, name, value)
        protocol.closeTimeout = settings.closeTimeout
        protocol._clock = self._reactor
        if settings.memoryBudget is not None and isinstance(protocol, MessageProtocol):
            protocol._reportAt = _BUDGET_STEP
        protocol._observer = self
        try:
            connectionId = registry.register(protocol, host if perPeer is not None else None)
        except IdsExhausted as e:
            self._events.record(
                "clusterIds",
                "Refused a connection from {peer}: {error}",
                peer=describeAddress(addr),
                error=str(e),
                reason="clusterIds",
            )
            return None
        if quiet:
            self._quietIds.add(connectionId)
        if allowedClients is not None:
            self._allowLists[connectionId] = allowedClients
        if tls:
            protocol._handshakeStarted = self._reactor.seconds()
            handshakeTimeout = settings.handshakeTimeout
            if handshakeTimeout is not None:
                self._deadlinesFor("handshake", handshakeTimeout).add(connectionId, protocol)
        else:
            self._watchFirstBytes(protocol, connectionId)
        return protocol

    def _acceptProxied(
        self, addr: IAddress | None, build: Callable[[IAddress, bool], Any]
    ) -> ProxyHeaderReceiver | None:
        """
        A connection accepted on a PROXY-protocol port from C{addr} (the
        load balancer): refused at once over C{maxConnections}, which counts
        it from now on; otherwise read its PROXY header first, within
        C{firstByteTimeout} (or its default, 10 s, when that is off: the
        header comes from the load balancer, whatever the client does), and
        then C{build} the connection with the client's address, which
        applies the limit per peer address to the client.  The first-byte
        and handshake timeouts of the connection start then.  A connection
        that the header says is the load balancer's own (its health checks)
        is served, its established and closed lines logged only with
        C{logEveryEvent}, at debug level.
        """
        settings = self._settings
        opened = self._registry.openCount() + len(self._awaitingHeader)
        if opened >= settings.maxConnections:
            self._events.record(
                "maxConnections",
                "Refused a connection from {peer} (a load balancer; the client's address "
                "comes in the PROXY header, not read yet): the connection limit is reached "
                "({open} open, maxConnections {maxConnections})",
                peer=describeAddress(addr),
                reason="maxConnections",
                open=opened,
                maxConnections=settings.maxConnections,
            )
            return None
        timeout = settings.firstByteTimeout
        receiver = ProxyHeaderReceiver(
            self._reactor,
            timeout if timeout is not None else DEFAULT_FIRST_BYTE_TIMEOUT,
            self._events,
            lambda peer, host, own: build(peer, own),
            self._awaitingHeader.discard,
            self.logPrefix(),
        )
        self._awaitingHeader.add(receiver)
        return receiver

    def _deadlinesFor(self, kind: str, timeout: float) -> _Deadlines:
        """
        The connections of C{kind} (C{"handshake"}, C{"firstByte"}) watched
        for C{timeout}.
        """
        deadlines = self._deadlines.get((kind, timeout))
        if deadlines is None:
            # The timeout changed (or this is the first): those waiting
            # with another timeout keep theirs until none is left.
            for key, other in list(self._deadlines.items()):
                if not other:
                    other.stop()
                    del self._deadlines[key]
            expired = self._handshakeTimedOut if kind == "handshake" else self._firstByteTimedOut
            deadlines = self._deadlines[kind, timeout] = _Deadlines(self._reactor, timeout, expired)
        return deadlines

    def _stopDeadlines(self, connectionId: int) -> None:
        """
        Connection C{connectionId} has no more handshake or first byte to
        wait for.
        """
        for deadlines in self._deadlines.values():
            deadlines.discard(connectionId)

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
        timeout = self._settings.firstByteTimeout
        if timeout is not None:
            deadlines = self._deadlinesFor("firstByte", timeout)
            deadlines.add(connectionId, protocol)
            discard = deadlines.discard
        else:
            discard = _noDeadline

        def firstBytes(data: bytes) -> None:
            del protocol.dataReceived
            discard(connectionId)
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

    def _handshakeTimedOut(self, protocol: _ConnectionBase, timeout: float) -> None:
        if protocol.ready or protocol.transport is None:
            return
        # Mid-handshake there is no close_notify to send: abort.
        protocol._abort(f"handshake timeout ({timeout:g} s)")

    def connectionReady(self, protocol: MessageProtocol | StreamProtocol) -> None:
        connectionId: int = protocol.connectionId  # type: ignore[assignment]
        started = protocol._handshakeStarted
        if started is not None:
            self._stopDeadlines(connectionId)
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
        self._registry.establish(connectionId)
        settings = self._settings
        balancerOwn = connectionId in self._quietIds
        if settings.logConnections and (not balancerOwn or settings.logEveryEvent):
            peer = self._peerTexts[connectionId] = describeAddress(protocol.transport.getPeer())
            commonName = None if certificate is None else subjectPart(certificate, "CN")
            self._connectionLog.emit(
                LogLevel.debug if balancerOwn else LogLevel.info,
                "Connection {connectionId} from {peer} established{cn}",
                connectionId=connectionId,
                peer=peer,
                cn=f" (client certificate CN={commonName!r})" if certificate is not None else "",
                clientCommonName=commonName,
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
                self._registry.withdraw(connectionId)
                self._refusedAndLogged.add(connectionId)
                protocol.ready = False
                protocol.closeConnection("the createSink callback failed")
                return
        self._notify(self.onEstablished, "onEstablished", connectionId)

    def _notify(
        self, callback: Callable[..., object] | None, name: str, connectionId: int, *more: object
    ) -> None:
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

    def connectionClosed(
        self, protocol: MessageProtocol | StreamProtocol, reason: Failure, wasReady: bool
    ) -> None:
        connectionId: int = protocol.connectionId  # type: ignore[assignment]
        self._registry.unregister(connectionId)
        # (Each of these is empty for most connections: looked at first.)
        if self._inputHeld:
            held = self._inputHeld.pop(connectionId, None)
            if held is not None:
                self._inputTotal -= held
        if self._splitHeld:
            held = self._splitHeld.pop(connectionId, None)
            if held is not None:
                self._splitTotal -= held
        if self._congestedIds:
            self._congestedIds.discard(connectionId)
            self._shareOutput()
        if self._allowLists:
            self._allowLists.pop(connectionId, None)
        for deadlines in self._deadlines.values():
            deadlines.discard(connectionId)
        closes = self._closesSinceRelease = self._closesSinceRelease + 1
        if closes >= _RELEASE_AFTER_CLOSES and self._releaseCall is None and canReleaseMemory():
            # What the connections freed is given back later, with that of
            # the others closing meanwhile (see _RELEASE_DELAY).
            self._releaseCall = self._reactor.callLater(_RELEASE_DELAY, self._releaseMemory)
        # A descriptor is free again: a port that ran out of them may accept.
        resumeAccepting(self._ports)
        totals = self._closedTotals
        totals[0] += protocol._bytesIn
        totals[1] += protocol._bytesOut
        totals[2] += protocol._messagesIn
        totals[3] += protocol._messagesOut
        totals[4] += protocol._outputDropped
        self._closeReasons[closeReason(reason)] += 1
        loggedAlready = False
        if self._refusedAndLogged:
            loggedAlready = connectionId in self._refusedAndLogged
            self._refusedAndLogged.discard(connectionId)
        aborted = isinstance(reason.value, AbortedLocally)
        stopping = self._stopping
        if stopping is not None and aborted:
            stopping.dropped += protocol._closeDropped
            stopping.abortedIds.append(connectionId)
        logConnections = self._settings.logConnections
        balancerOwn = False
        if self._quietIds:
            balancerOwn = connectionId in self._quietIds
            self._quietIds.discard(connectionId)
        quiet = wasReady and not logConnections
        transport = protocol.transport
        peer = self._peerTexts.pop(connectionId, None)
        if peer is None:
            peer = "?" if quiet or not transport else describeAddress(transport.getPeer())
        tls = ISSLTransport.providedBy(transport)
        try:
            if wasReady:
                why = describeClose(reason, tls)
                if logConnections and (not balancerOwn or self._settings.logEveryEvent):
                    self._connectionLog.emit(
                        LogLevel.debug if balancerOwn else LogLevel.info,
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
                    self._events.record(
                        "handshakeTimeout",
                        "Closed the connection from {peer}: {why}",
                        peer=peer,
                        why=why,
                    )
                else:
                    self.log.warn("Closed the connection from {peer}: {why}", peer=peer, why=why)
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
            if self._closeWaiters and not self._registry.openCount():
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
        budget = self._settings.memoryBudget
        if budget is not None and self._inputTotal > budget:
            largest = sorted(self._inputHeld.items(), key=lambda item: item[1], reverse=True)
            for victimId, held in largest:
                if self._inputTotal <= budget:
                    break
                victim = self._registry.connections().get(victimId)
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
        budget = self._settings.memoryBudget
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
            connections = self._registry.connections()
            for connectionId in self._congestedIds:
                protocol = connections.get(connectionId)
                if protocol is None:
                    continue
                room = protocol._budgetRoom()
                if room is not None and room < protocol._room:
                    protocol._room = room

    # -- the registry -----------------------------------------------------

    def clientIds(self) -> list[int]:
        """
        The ids of the established connections, ascending; in a cluster,
        those of every node.
        """
        return self._registry.ids()

    def connection(self, clientId: int) -> MessageProtocol | StreamProtocol:
        """
        The protocol of an established connection.

        @raise ServerError: unknown id.
        """
        protocol = self._registry.lookup(clientId)
        if protocol is None:
            raise ServerError(f"no connected client with id {clientId!r}")
        return protocol

    def send(self, clientId: int, data: bytes | str) -> bool:
        """
        Send a message (continuous mode: bytes) to one connection.

        In a cluster, to a client of another node: C{True} means that the
        message was accepted for delivery (queued for Redis, within the
        bound of the queue), not that it was written; that node writes it,
        or drops it if the client has gone or refuses it, with no answer.
        Messages from one node to one client arrive in the order sent.

        @return: C{False} (and nothing written) for an unknown or closed
            id, a message that L{MessageProtocol.sendMessage} refuses, or a
            congested connection that already accepted C{maxPendingOutput}
            bytes (see L{MessageProtocol.maxPendingOutput}); in a cluster,
            for an id no node has as far as the directory knows, or a
            message for another node past the bound of the queue.
        """
        return self._registry.send(clientId, data)

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
        reactor have gone to a bounded number of connections, the
        connection whose read is being handled (the sender, excluded or
        not) stops being read until the next turn, unless at most a few
        messages of its read are left; the connections paused so are
        resumed at the next turn, each with an equal share of it.

        In a cluster, the clients of every other node get it too, once,
        written by their node (the excluded ids left out wherever they
        are), in the order of this node's sends and broadcasts.

        @param exclude: an id, or ids, to leave out (a chat server excludes
            the sender).
        @return: how many connections of this node it was written to; 0
            also when the message is refused (it contains the delimiter or
            is too long).
        """
        return self._registry.broadcast(data, exclude)

    def disconnect(self, clientId: int) -> bool:
        """
        Close one connection after its pending output is written (see
        L{MessageProtocol.closeConnection}: bounded by C{closeTimeout}).
        C{onClosed} fires once it is closed.

        @return: C{False} for an unknown id.
        """
        protocol = self._registry.lookup(clientId)
        if protocol is None:
            return False
        protocol.closeConnection("disconnect() called")
        return True

    def clientAddress(self, clientId: int) -> tuple[str, int]:
        """
        The peer's address: C{(host, port)}, IPv4 or IPv6.

        @raise ServerError: unknown id.
        """
        return self._registry.address(clientId)

    def clientCertificate(self, clientId: int) -> x509.Certificate | None:
        """
        The certificate the client presented, or C{None} (plain TCP, or a
        TLS server that does not require one).

        @raise ServerError: unknown id.
        """
        return self._registry.certificate(clientId)

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
        handshake, and on PROXY-protocol ports those whose PROXY header is
        not read yet: those L{maxConnections} counts.
        """
        return self._registry.openCount() + len(self._awaitingHeader)
