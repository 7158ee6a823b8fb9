# -*- test-case-name: tests.test_server -*-
"""
Layer 3: the server.  A Twisted factory that owns the registry of its
connections: ids, the connection limit, callbacks, send, broadcast, and the
peer's address and certificate.

Ids are positive integers counted up for the life of a L{Server} and never
reused, unlike the C++ original, whose ids are file descriptor numbers the
operating system recycles (its bug B3).  A connection is I{established} (it
has an entry in L{Server.clientIds}, callbacks fire for it) once it is ready:
at once for TCP, after the handshake with the client verified for TLS.
"""

from __future__ import annotations

import resource
import socket
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, ISSLTransport, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutFactory, TimeoutProtocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from ._errors import ListenError, PortError, ServerError
from ._framing import (
    MessageProtocol,
    StreamProtocol,
    _ConnectionBase,
)
from ._tls import TLSConfig, peerCertificate, subjectPart, verificationFailure

if TYPE_CHECKING:
    from cryptography import x509
    from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorCore

__all__ = ["DEFAULT_MAX_CONNECTIONS", "Server"]

#: Default limit of simultaneous connections of one server.
DEFAULT_MAX_CONNECTIONS = 4096

#: The listen queue of a port given by number, as the original's
#: C{listen(SOMAXCONN)}: Twisted's default of 50 makes a burst of clients
#: wait for SYN retransmissions (a second or more) long before the
#: connection limit is reached.
_BACKLOG = max(50, socket.SOMAXCONN)

_UNSET: Any = object()


def _defaultReactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _raiseFileLimit(needed: int, log: Logger) -> None:
    """
    Raise the soft limit of open files toward the hard limit, so that a
    connection limit of C{needed} can actually be reached.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover
        return
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target <= soft:
        log.warn(
            "The connection limit needs {needed} file descriptors but the "
            "hard limit is {hard}",
            needed=needed,
            hard=hard,
        )
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as e:  # pragma: no cover
        log.warn("Could not raise the open-file limit to {target}: {error}",
                 target=target, error=e)


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


def describeAddress(address: IAddress | None) -> str:
    """
    C{host:port}, or C{[host]:port} for IPv6, for log lines.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        return str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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


class _ListeningFactory(Factory):
    """
    The factory of one listening port: applies the connection limit before
    anything else (a refused connection is closed at once, before any TLS
    work), then wraps the server's protocol in TLS when the port has TLS,
    and that in Twisted's L{TimeoutProtocol} when the server has an idle
    timeout (outermost, so that any bytes, handshake included, count as
    activity).
    """

    noisy = False

    def __init__(self, server: Server, tlsFactory: TLSMemoryBIOFactory | None) -> None:
        self._server = server
        self._tlsFactory = tlsFactory
        self._timeoutFactory = (
            _IdleTimeoutFactory(server, server.idleTimeout)
            if server.idleTimeout is not None
            else None
        )

    def logPrefix(self) -> str:
        return self._server.logPrefix()

    def buildProtocol(self, addr: IAddress) -> Any:
        protocol: Any = self._server._buildConnection(addr, tls=self._tlsFactory is not None)
        if protocol is None:
            return None
        tlsFactory = self._tlsFactory
        if tlsFactory is not None:
            protocol = tlsFactory.protocol(tlsFactory, protocol)
        timeoutFactory = self._timeoutFactory
        if timeoutFactory is not None:
            protocol = TimeoutProtocol(timeoutFactory, protocol, timeoutFactory.timeoutPeriod)
        return protocol


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
    """

    noisy = False
    log = Logger()

    def __init__(
        self,
        protocol: type[_ConnectionBase] | None = None,
        *,
        stream: bool = False,
        delimiter: bytes | str | None = None,
        maxMessageLength: int | None = _UNSET,
        messageAppend: bytes | str | None = None,
        maxConnections: int = DEFAULT_MAX_CONNECTIONS,
        handshakeTimeout: float | None = 10.0,
        idleTimeout: float | None = None,
        closeTimeout: float = 10.0,
        onEstablished: Callable[[int], object] | None = None,
        onClosed: Callable[[int], object] | None = None,
        onMessage: Callable[[int, bytes], object] | None = None,
        createSink: Callable[[int], object] | None = None,
        reactor: IReactorCore | None = None,
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
        @param closeTimeout: seconds L{stop} waits for connections to flush
            their output and close before it aborts them.
        @param onEstablished: called with the id of each connection when it
            becomes ready.
        @param onClosed: called with the id of each established connection
            when it ends.
        @param onMessage: called with C{(id, message)} for each message (or,
            in continuous mode, C{(id, bytes)} for each chunk) received.
        @param createSink: continuous mode: called with the id of each new
            connection, returns an object with C{write(bytes)} that receives
            the connection's bytes and is closed when it ends.
        @param reactor: the reactor to listen with; the global one by default.
        """
        self.protocol = _protocolClass(protocol, stream)  # type: ignore[assignment]
        self._settings = _connectionSettings(
            issubclass(self.protocol, StreamProtocol), delimiter, maxMessageLength, messageAppend
        )
        if maxConnections < 1:
            raise ValueError(f"maxConnections must be at least 1, not {maxConnections}")
        protocolClass: type = self.protocol  # type: ignore[assignment]
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
        self.handshakeTimeout = handshakeTimeout
        self.idleTimeout = idleTimeout
        self.closeTimeout = closeTimeout
        self.onEstablished = onEstablished
        self.onClosed = onClosed
        self.onMessage = onMessage
        self.createSink = createSink
        self._reactor = reactor if reactor is not None else _defaultReactor()
        self._nextId = 1
        self._open: dict[int, _ConnectionBase] = {}
        self._established: dict[int, _ConnectionBase] = {}
        self._handshakeTimers: dict[int, IDelayedCall] = {}
        # Why the server itself closed a connection that was not yet
        # established, by id, to log it once when the connection is gone.
        self._dropped: dict[int, str] = {}
        self._ports: list[IListeningPort] = []
        self._closeWaiters: list[Deferred[None]] = []
        _raiseFileLimit(maxConnections + 64, self.log)

    def logPrefix(self) -> str:
        return "tcpsc.Server"

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
            tlsFactory = None
            if tls is not None:
                tlsFactory = TLSMemoryBIOFactory(
                    tls.serverOptions(), isClient=False, wrappedFactory=self,
                    clock=self._reactor,  # type: ignore[arg-type]
                )
        except Exception:
            return fail()
        listening = _ListeningFactory(self, tlsFactory)

        def listening_(p: IListeningPort) -> IListeningPort:
            self._ports.append(p)
            address = p.getHost()
            self.log.info(
                "Listening on {address} ({mode}{tls})",
                address=describeAddress(address),
                mode="continuous" if issubclass(self.protocol, StreamProtocol) else "fragmented",  # type: ignore[arg-type]
                tls=", TLS 1.3" if tls is not None else "",
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
            if ":" in interface:
                return TCP6ServerEndpoint(self._reactor, port, backlog=_BACKLOG,
                                          interface=interface)
            return TCP4ServerEndpoint(self._reactor, port, backlog=_BACKLOG, interface=interface)
        if isinstance(port, str):
            if port.isdigit():
                return self._endpoint(int(port), interface)
            try:
                return serverFromString(self._reactor, port)
            except (ValueError, TypeError) as e:
                raise PortError(f"not a port or endpoint description: {port!r} ({e})") from e
        if IStreamServerEndpoint.providedBy(port):
            return port
        raise PortError(f"not a port, endpoint description or endpoint: {port!r}")

    @property
    def ports(self) -> list[IListeningPort]:
        """
        The ports this server listens on.
        """
        return list(self._ports)

    def stop(self) -> Deferred[None]:
        """
        Stop listening, then close every connection once its pending output
        is written (aborting those still open after C{closeTimeout} seconds).
        C{onClosed} fires for each established connection.

        @return: fires when no port is listening and no connection is open;
            the server may then L{listen} again, on the same port too.
        """
        ports, self._ports = self._ports, []
        stopped = gatherResults([maybeDeferred(p.stopListening) for p in ports])
        if self._open:
            closed: Deferred[None] = Deferred()
            self._closeWaiters.append(closed)
            for protocol in list(self._open.values()):
                protocol.transport.loseConnection()
            timer = self._reactor.callLater(self.closeTimeout, self._abortAll)  # type: ignore[attr-defined]

            def cancelTimer(result: object) -> object:
                if timer.active():
                    timer.cancel()
                return result

            closed.addBoth(cancelTimer)
            everything = gatherResults([stopped, closed])
        else:
            everything = stopped
        return everything.addCallback(lambda _: None)

    def _abortAll(self) -> None:
        if self._open:
            self.log.warn(
                "{count} connections did not close within {timeout} s; aborting them",
                count=len(self._open),
                timeout=self.closeTimeout,
            )
        for protocol in list(self._open.values()):
            protocol.transport.abortConnection()

    # -- the registry -----------------------------------------------------

    def _buildConnection(self, addr: IAddress, tls: bool) -> _ConnectionBase | None:
        if len(self._open) >= self.maxConnections:
            self.log.warn(
                "Refused a connection from {peer}: {maxConnections} connections "
                "are open, the limit",
                peer=describeAddress(addr),
                maxConnections=self.maxConnections,
            )
            return None
        protocol = self.buildProtocol(addr)
        assert isinstance(protocol, _ConnectionBase)
        for name, value in self._settings.items():
            setattr(protocol, name, value)
        connectionId = self._nextId
        self._nextId += 1
        protocol.connectionId = connectionId
        protocol._observer = self
        self._open[connectionId] = protocol
        if tls and self.handshakeTimeout is not None:
            self._handshakeTimers[connectionId] = self._reactor.callLater(  # type: ignore[attr-defined]
                self.handshakeTimeout, self._handshakeTimedOut, protocol
            )
        return protocol

    def _handshakeTimedOut(self, protocol: _ConnectionBase) -> None:
        self._handshakeTimers.pop(protocol.connectionId, None)  # type: ignore[arg-type]
        if protocol.ready or protocol.transport is None:
            return
        self._dropped[protocol.connectionId] = (  # type: ignore[index]
            f"no TLS handshake within {self.handshakeTimeout} s"
        )
        protocol.transport.abortConnection()

    def connectionReady(self, protocol: _ConnectionBase) -> None:
        connectionId: int = protocol.connectionId  # type: ignore[assignment]
        timer = self._handshakeTimers.pop(connectionId, None)
        if timer is not None and timer.active():
            timer.cancel()
        self._established[connectionId] = protocol
        certificate = peerCertificate(protocol.transport)
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
                self._dropped[connectionId] = "the createSink callback failed"
                protocol.ready = False
                protocol.transport.abortConnection()
                return
        self._notify(self.onEstablished, "onEstablished", connectionId)

    def _notify(self, callback: Callable[[int], object] | None, name: str,
                connectionId: int) -> None:
        """
        Call a user callback; an exception it raises is logged and never
        breaks the registry's bookkeeping, nor the accepting of other
        connections (an exception escaping into Twisted's accept loop would
        drop the rest of the connections accepted with this one).
        """
        if callback is None:
            return
        try:
            callback(connectionId)
        except Exception:
            self.log.failure(
                "The {callback} callback raised an exception for connection {connectionId}",
                callback=name,
                connectionId=connectionId,
            )

    def connectionClosed(self, protocol: _ConnectionBase, reason: Failure, wasReady: bool) -> None:
        connectionId: int = protocol.connectionId  # type: ignore[assignment]
        self._open.pop(connectionId, None)
        self._established.pop(connectionId, None)
        timer = self._handshakeTimers.pop(connectionId, None)
        if timer is not None and timer.active():
            timer.cancel()
        dropped = self._dropped.pop(connectionId, None)
        peer = describeAddress(protocol.transport.getPeer()) if protocol.transport else "?"
        try:
            if wasReady:
                self.log.info(
                    "Connection {connectionId} from {peer} closed: {reason}",
                    connectionId=connectionId,
                    peer=peer,
                    reason=reason.getErrorMessage(),
                )
                self._notify(self.onClosed, "onClosed", connectionId)
            elif dropped is not None:
                self.log.warn("Closed the connection from {peer}: {why}", peer=peer, why=dropped)
            elif ISSLTransport.providedBy(protocol.transport):
                detail = verificationFailure(protocol.transport)
                self.log.warn(
                    "Refused the connection from {peer}: TLS handshake failed: {reason}",
                    peer=peer,
                    reason=reason.getErrorMessage()
                    + (f" ({detail})" if detail is not None else ""),
                    verification=detail,
                )
            else:
                self.log.info(
                    "Connection from {peer} closed before it was established: {reason}",
                    peer=peer,
                    reason=reason.getErrorMessage(),
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

    def connection(self, clientId: int) -> _ConnectionBase:
        """
        The protocol of an established connection.

        @raise ServerError: unknown id.
        """
        return self._lookup(clientId)

    def send(self, clientId: int, data: bytes | str) -> bool:
        """
        Send a message (continuous mode: bytes) to one connection.

        @return: C{False} for an unknown or closed id, or a message that
            L{MessageProtocol.sendMessage} refuses.
        """
        protocol = self._established.get(clientId)
        if protocol is None:
            return False
        if isinstance(protocol, MessageProtocol):
            return protocol.sendMessage(data)
        return protocol.sendData(data)  # type: ignore[attr-defined,no-any-return]

    def broadcast(self, data: bytes | str, exclude: int | Collection[int] | None = None) -> int:
        """
        Send one message to every established connection, validating and
        framing it once.

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
        targets = [p for i, p in self._established.items() if i not in excluded]
        if not targets:
            return 0
        first = targets[0]
        if isinstance(first, MessageProtocol):
            frame = first.frame(data)
            if frame is None:
                return 0
            return sum(1 for p in targets if p.sendFrame(frame))  # type: ignore[attr-defined]
        return sum(1 for p in targets if p.sendData(data))  # type: ignore[attr-defined]

    def disconnect(self, clientId: int) -> bool:
        """
        Close one connection after its pending output is written.

        @return: C{False} for an unknown id.
        """
        protocol = self._established.get(clientId)
        if protocol is None:
            return False
        protocol.transport.loseConnection()
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
