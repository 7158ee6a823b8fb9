# -*- test-case-name: tests.test_client -*-
"""
Layer 3: the client.  Connects (plain or TLS), knows when the connection is
ready, sends, and optionally reconnects with exponential backoff and jitter.

"Ready" is stricter than Twisted's endpoints, whose C{connect()} fires at TCP
connect, before any TLS handshake (twisted#8837): here it means connected,
and with TLS the handshake done, the server verified and its host name
checked, and the server known to have accepted this client's certificate (see
L{tcpsc._tls.acceptanceGate}).  Failures are reported as specific exceptions,
and a rejected certificate is never retried: reconnecting with the same
certificate cannot succeed, it would only hammer the server.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import (
    ConnectionClosed,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.error import (
    TimeoutError as TwistedTimeoutError,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from ._errors import (
    ClientCertificateRejected,
    ClientError,
    ConnectError,
    PortError,
    ServerCertificateRejected,
    StartError,
    TLSHandshakeError,
)
from ._framing import MessageProtocol, StreamProtocol, _ConnectionBase
from ._server import _UNSET, _connectionSettings, _defaultReactor, _protocolClass
from ._tls import (
    DEFAULT_ACCEPTANCE_GRACE,
    TLSConfig,
    acceptanceGate,
    classifyTLSFailure,
    peerCertificate,
    subjectPart,
)

if TYPE_CHECKING:
    from cryptography import x509
    from twisted.internet.interfaces import IAddress, IDelayedCall

__all__ = ["Client"]

#: Failures that reconnecting cannot fix.
_FATAL = (ServerCertificateRejected, ClientCertificateRejected)


class _ClientFactory(Factory):
    noisy = False

    def __init__(self, client: Client, attempt: _Attempt, tls: bool) -> None:
        self._client = client
        self._attempt = attempt
        self._tls = tls

    def buildProtocol(self, addr: IAddress) -> _ConnectionBase:
        client = self._client
        protocol: _ConnectionBase = client.protocolClass()
        protocol.factory = self  # type: ignore[attr-defined]
        for name, value in client._settings.items():
            setattr(protocol, name, value)
        protocol._observer = self._attempt  # type: ignore[assignment]
        self._attempt.pending = protocol
        if self._tls:
            protocol._readinessGate = acceptanceGate(client._reactor, client.acceptanceGrace)
        return protocol


class _Attempt:
    """
    One connection attempt and, once it is ready, the connection: the
    observer of its protocol.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.ready: Deferred[_ConnectionBase] = Deferred()
        self.protocol: _ConnectionBase | None = None
        self.pending: _ConnectionBase | None = None
        self.connectedAt: float | None = None
        self.timer: IDelayedCall | None = None
        self.done = False

    def connectionReady(self, protocol: _ConnectionBase) -> None:
        self._stopTimer()
        self.protocol = protocol
        self.connectedAt = self.client._reactor.seconds()
        self.client._connectionReady(self, protocol)
        if not self.done:
            self.done = True
            self.ready.callback(protocol)

    def connectionClosed(self, protocol: _ConnectionBase, reason: Failure, wasReady: bool) -> None:
        self._stopTimer()
        if wasReady:
            self.client._connectionClosed(self, reason)
        else:
            self.fail(self.client._classifyEarlyLoss(reason, protocol))

    def messageReceived(self, protocol: MessageProtocol, message: bytes) -> None:
        onMessage = self.client.onMessage
        if onMessage is not None:
            onMessage(message)

    def dataReceived(self, protocol: StreamProtocol, data: bytes) -> None:
        onMessage = self.client.onMessage
        if onMessage is not None:
            onMessage(data)

    def fail(self, error: BaseException) -> None:
        self._stopTimer()
        if not self.done:
            self.done = True
            pending = self.pending
            if pending is not None and pending.connected and not pending.ready:
                pending.transport.abortConnection()
            self.ready.errback(Failure(error))

    def _stopTimer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class Client:
    """
    A message client.

    Use it with callbacks::

        client = Client(onMessage=print)
        protocol = await client.connect("localhost", 8081)
        client.send(b"hello")

    or with your own L{MessageProtocol}/L{StreamProtocol} subclass, whose
    C{connectionReady} and C{messageReceived} hooks are called as usual.

    @ivar protocol: the protocol of the current ready connection, or C{None}.
    """

    log = Logger()

    def __init__(
        self,
        protocol: type[_ConnectionBase] | None = None,
        *,
        stream: bool = False,
        delimiter: bytes | str | None = None,
        maxMessageLength: int | None = _UNSET,
        messageAppend: bytes | str | None = None,
        onMessage: Callable[[bytes], object] | None = None,
        onEstablished: Callable[[_ConnectionBase], object] | None = None,
        onClosed: Callable[[Failure], object] | None = None,
        connectTimeout: float = 30.0,
        reconnect: bool = False,
        initialDelay: float = 0.5,
        maxDelay: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.25,
        acceptanceGrace: float = DEFAULT_ACCEPTANCE_GRACE,
        reactor: Any = None,
    ) -> None:
        """
        @param protocol: a L{MessageProtocol} or L{StreamProtocol} subclass.
        @param stream: continuous mode instead of messages.
        @param delimiter: overrides the protocol's C{delimiter}.
        @param maxMessageLength: overrides the protocol's C{maxMessageLength}.
        @param messageAppend: overrides the protocol's C{messageAppend}.
        @param onMessage: called with each message received (continuous mode:
            each chunk of bytes), if the protocol does not override
            C{messageReceived}/C{dataReceived}.
        @param onEstablished: called with the protocol each time a connection
            becomes ready (again, after a reconnect).
        @param onClosed: called with the reason (a L{Failure}) each time a
            ready connection ends.
        @param connectTimeout: seconds to become ready (connect, TLS
            handshake, acceptance) before the attempt fails.
        @param reconnect: after a ready connection is lost (not through
            L{disconnect}), connect again, waiting C{initialDelay *
            factor ** n} seconds (at most C{maxDelay}) plus up to C{jitter}
            of that; a rejected certificate stops reconnecting.
        @param acceptanceGrace: TLS: how long to wait after the handshake
            for the server's session ticket, the sign that it accepted this
            client's certificate, when the server asked for one.
        @param reactor: the reactor to connect with; the global one by
            default.
        """
        self.protocolClass: type[_ConnectionBase] = _protocolClass(protocol, stream)
        self._settings = _connectionSettings(
            issubclass(self.protocolClass, StreamProtocol), delimiter, maxMessageLength,
            messageAppend,
        )
        self.onMessage = onMessage
        self.onEstablished = onEstablished
        self.onClosed = onClosed
        self.connectTimeout = connectTimeout
        self.reconnect = reconnect
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.factor = factor
        self.jitter = jitter
        self.acceptanceGrace = acceptanceGrace
        self._reactor = reactor if reactor is not None else _defaultReactor()
        self._random = random.Random()
        self.protocol: _ConnectionBase | None = None
        self._attempt: _Attempt | None = None
        self._target: tuple[str, int, TLSConfig | None] | None = None
        self._address: tuple[str, int] = ("", 0)
        self._retryCall: IDelayedCall | None = None
        self._failures = 0
        self._closedWaiters: list[Deferred[None]] = []

    # -- connecting -------------------------------------------------------

    def connect(self, host: str, port: int, tls: TLSConfig | None = None
                ) -> Deferred[_ConnectionBase]:
        """
        Connect to C{host}:C{port}.

        @param host: a host name, IPv4 or IPv6 address.
        @param tls: TLS 1.3 settings; plain TCP if C{None}.
        @return: fires with the protocol once the connection is ready, or
            fails with L{StartError} (-1, already connected or connecting),
            L{PortError} (10), L{CertificateLoadError} (30-35),
            L{ConnectError} (50: refused, unresolvable, timed out) or
            L{TLSHandshakeError} (60; L{ServerCertificateRejected} or
            L{ClientCertificateRejected} when a certificate was refused).
        """
        if self._target is not None:
            return fail(StartError("the client is already connected or connecting", -1))
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            return fail(PortError(f"port {port!r} is outside 1-65535"))
        try:
            creator = tls.clientCreator(host) if tls is not None else None
        except Exception:
            return fail()
        self._target = (host, port, tls)
        self._address = (host, port)
        self._failures = 0
        d = self._connectOnce(host, port, creator)

        def failed(f: Failure) -> Failure:
            self._target = None
            return f

        return d.addErrback(failed)

    def _connectOnce(self, host: str, port: int, creator: Any) -> Deferred[_ConnectionBase]:
        attempt = self._attempt = _Attempt(self)
        factory: Any = _ClientFactory(self, attempt, tls=creator is not None)
        if creator is not None:
            factory = TLSMemoryBIOFactory(creator, isClient=True, wrappedFactory=factory,
                                          clock=self._reactor)
        endpoint = HostnameEndpoint(self._reactor, host, port, timeout=self.connectTimeout)
        connecting = endpoint.connect(factory)
        attempt.timer = self._reactor.callLater(self.connectTimeout, self._timedOut, attempt,
                                                connecting)

        def connectFailed(f: Failure) -> None:
            attempt.fail(self._classifyConnectFailure(f, host, port))

        connecting.addErrback(connectFailed)
        return attempt.ready

    def _timedOut(self, attempt: _Attempt, connecting: Deferred[Any]) -> None:
        attempt.timer = None
        host, port = self._describeTarget()
        error = ConnectError(
            f"connecting to {host}:{port} timed out after {self.connectTimeout} s"
        )
        attempt.fail(error)
        connecting.cancel()

    def _describeTarget(self) -> tuple[str, int]:
        return self._address

    def _classifyConnectFailure(self, f: Failure, host: str, port: int) -> StartError:
        if f.check(DNSLookupError):
            return ConnectError(f"cannot resolve the host name {host!r}")
        if f.check(ConnectionRefusedError):
            return ConnectError(f"connection to {host}:{port} refused: no server is listening")
        if f.check(TwistedTimeoutError):
            return ConnectError(f"connecting to {host}:{port} timed out")
        if isinstance(f.value, StartError):
            return f.value
        return ConnectError(f"cannot connect to {host}:{port}: {f.getErrorMessage()}")

    def _classifyEarlyLoss(self, reason: Failure, protocol: _ConnectionBase) -> StartError:
        tls = self._target is not None and self._target[2] is not None
        if not tls:
            return ConnectError(f"the connection closed before it was ready: "
                                f"{reason.getErrorMessage()}")
        if reason.check(ConnectionClosed) and not reason.check(ConnectionRefusedError):
            return TLSHandshakeError(
                "the server closed the connection during the TLS handshake"
                f" ({reason.getErrorMessage()})",
                reason.value,
            )
        return classifyTLSFailure(reason)

    # -- the connection ---------------------------------------------------

    def _connectionReady(self, attempt: _Attempt, protocol: _ConnectionBase) -> None:
        self.protocol = protocol
        host, port = self._describeTarget()
        self.log.info("Connected to {host}:{port}", host=host, port=port)
        if self.onEstablished is not None:
            self.onEstablished(protocol)

    def _connectionClosed(self, attempt: _Attempt, reason: Failure) -> None:
        if attempt is self._attempt:
            self.protocol = None
        host, port = self._describeTarget()
        self.log.info("Connection to {host}:{port} closed: {reason}", host=host, port=port,
                      reason=reason.getErrorMessage())
        if self.onClosed is not None:
            self.onClosed(reason)
        if self._closedWaiters:
            waiters, self._closedWaiters = self._closedWaiters, []
            for waiter in waiters:
                waiter.callback(None)
            return
        if self._target is None:
            return
        if not self.reconnect:
            self._target = None
            return
        lasted = self._reactor.seconds() - (attempt.connectedAt or 0)
        if lasted >= max(1.0, self.initialDelay):
            self._failures = 0
        self._scheduleRetry()

    def _scheduleRetry(self) -> None:
        delay = min(self.maxDelay, self.initialDelay * self.factor ** min(self._failures, 64))
        delay += delay * self.jitter * self._random.random()
        self._failures += 1
        host, port = self._describeTarget()
        self.log.info("Reconnecting to {host}:{port} in {delay:.2f} s (attempt {attempt})",
                      host=host, port=port, delay=delay, attempt=self._failures)
        self._retryCall = self._reactor.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._retryCall = None
        if self._target is None:
            return
        host, port, tls = self._target
        try:
            creator = tls.clientCreator(host) if tls is not None else None
        except Exception as e:
            self.log.error("Stopped reconnecting to {host}:{port}: {error}",
                           host=host, port=port, error=e)
            self._target = None
            return

        def failed(f: Failure) -> None:
            if self._target is None:
                return
            if f.check(*_FATAL):
                self.log.error("Stopped reconnecting to {host}:{port}: {error}",
                               host=host, port=port, error=f.value)
                self._target = None
                if self.onClosed is not None:
                    self.onClosed(f)
                return
            self.log.info("Reconnecting to {host}:{port} failed: {error}",
                          host=host, port=port, error=f.value)
            self._scheduleRetry()

        self._connectOnce(host, port, creator).addErrback(failed)

    @property
    def isConnected(self) -> bool:
        """
        Whether a connection is ready.
        """
        return self.protocol is not None and self.protocol.ready

    def send(self, data: bytes | str) -> bool:
        """
        Send a message (continuous mode: bytes).

        @return: C{False} if not connected, or if the message is refused
            (see L{MessageProtocol.sendMessage}).
        """
        protocol = self.protocol
        if protocol is None:
            return False
        if isinstance(protocol, MessageProtocol):
            return protocol.sendMessage(data)
        return protocol.sendData(data)  # type: ignore[attr-defined,no-any-return]

    def disconnect(self) -> Deferred[None]:
        """
        Close the connection after its pending output is written, and stop
        reconnecting.

        @return: fires once the connection is closed.
        """
        self._target = None
        if self._retryCall is not None and self._retryCall.active():
            self._retryCall.cancel()
        self._retryCall = None
        attempt = self._attempt
        if attempt is not None and not attempt.done:
            attempt.fail(ConnectError("disconnect() was called while connecting"))
        protocol = self.protocol
        if protocol is None or not protocol.connected:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._closedWaiters.append(waiter)
        protocol.transport.loseConnection()
        return waiter

    def serverCertificate(self) -> x509.Certificate | None:
        """
        The server's certificate, or C{None} for plain TCP.

        @raise ClientError: not connected.
        """
        if not self.isConnected:
            raise ClientError("not connected to any server")
        return peerCertificate(self.protocol.transport)  # type: ignore[union-attr]

    def serverSubjectPart(self, part: x509.ObjectIdentifier | str) -> str | None:
        """
        One part of the subject of the server's certificate (see
        L{tcpsc.Server.clientSubjectPart}).

        @raise ClientError: not connected.
        """
        return subjectPart(self.serverCertificate(), part)
