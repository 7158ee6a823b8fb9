# -*- test-case-name: tests.test_client -*-
"""
The client.  Connects (plain or TLS, to a host and port or through any
Twisted client endpoint), knows when the connection is ready, sends, and
optionally reconnects with exponential backoff and jitter.

"Ready" is stricter than Twisted's endpoints, whose C{connect()} fires at TCP
connect, before any TLS handshake (twisted#8837): here it means connected,
and with TLS the handshake done, the server verified and its host name
checked, and the server known to have accepted this client's certificate (see
L{tcpsc._tls.acceptanceGate}).  Failures are reported as specific exceptions,
and a rejected certificate is never retried: reconnecting with the same
certificate cannot succeed, it would only hammer the server.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    clientFromString,
)
from twisted.internet.error import (
    ConnectionClosed,
    ConnectionDone,
    ConnectionRefusedError,
    DNSLookupError,
)
from twisted.internet.error import (
    TimeoutError as TwistedTimeoutError,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._errors import (
    CertificateLoadError,
    ClientCertificateRejected,
    ClientError,
    ConnectError,
    PortError,
    ServerCertificateRejected,
    StartError,
    TLSHandshakeError,
)
from ._framing import MessageProtocol, StreamProtocol, _ConnectionBase
from ._reactor import defaultReactor
from ._settings import (
    FROM_PROTOCOL,
    FromProtocol,
    SettingAttribute,
    Settings,
    protocolClass,
    settingsFrom,
)
from ._tls import (
    DEFAULT_ACCEPTANCE_GRACE,
    TLSConfig,
    acceptanceGate,
    classifyTLSFailure,
    describeClose,
    identityFailure,
    peerCertificate,
    subjectPart,
)
from ._tlstransport import tlsFactory

if TYPE_CHECKING:
    from cryptography import x509
    from twisted.internet.interfaces import IAddress, IDelayedCall
    from twisted.protocols.tls import TLSMemoryBIOProtocol

__all__ = ["NOT_RETRIED", "Client"]

#: The failures of a connection attempt that trying again cannot fix: a
#: certificate refused by either side.  A client, or a service keeping one
#: connected, stops reconnecting on them.
NOT_RETRIED: tuple[type[StartError], ...] = (ServerCertificateRejected, ClientCertificateRejected)


def _presentedCertificate(protocol: _ConnectionBase) -> x509.Certificate | None:
    """
    The certificate the server presented on a TLS connection, even when it
    failed verification (then L{peerCertificate} has none).
    """
    try:
        # Called for TLS connections only: the transport is the TLS one.
        transport = cast("TLSMemoryBIOProtocol", protocol.transport)
        chain = transport.getHandle().get_peer_cert_chain()
    except Exception:
        return None
    return chain[0].to_cryptography() if chain else None


class _ClientFactory(Factory):
    noisy = False

    def __init__(self, client: Client, attempt: _Attempt, tls: bool) -> None:
        self._client = client
        self._attempt = attempt
        self._tls = tls

    def buildProtocol(self, addr: IAddress | None) -> _ConnectionBase:
        client = self._client
        protocol: _ConnectionBase = client.protocolClass()
        protocol.factory = self
        for name, value in client._protocolAttributes.items():
            setattr(protocol, name, value)
        protocol.closeTimeout = client._settings.closeTimeout
        protocol._clock = client._reactor
        protocol._observer = self._attempt
        self._attempt.protocols.append(protocol)
        if self._tls:
            protocol._readinessGate = acceptanceGate(client._reactor, client.acceptanceGrace)
        return protocol


def _stopGate(protocol: _ConnectionBase) -> None:
    stop = getattr(protocol._readinessGate, "stop", None)
    if stop is not None:
        stop()


class _Attempt:
    """
    One connection attempt and, once it is ready, the connection: the
    observer of its protocol.

    An attempt ends exactly once: ready (C{ready} fires with the protocol)
    or failed (C{ready} fails; timed out, refused, rejected, cancelled or
    given up through L{Client.disconnect}).  Once it failed, nothing it
    started may linger: the TCP connection attempt is cancelled, a
    connection in its TLS handshake is aborted, the acceptance gate's timer
    is stopped, and a connection that would become ready later is refused.

    @ivar protocols: every protocol built for this attempt (normally one).
    @ivar connecting: the endpoint's C{connect()} Deferred.
    """

    def __init__(self, client: Client, creator: Any) -> None:
        self.client = client
        self.creator = creator
        self.tls = creator is not None
        self.ready: Deferred[_ConnectionBase] = Deferred(self._cancelled)
        self.protocol: _ConnectionBase | None = None
        self.protocols: list[_ConnectionBase] = []
        self.connecting: Deferred[Any] | None = None
        self.connectedAt: float | None = None
        self.timer: IDelayedCall | None = None
        self.done = False

    def connectionReady(self, protocol: _ConnectionBase) -> None:
        if self.done:
            # This attempt already failed (timed out, cancelled, given up) or
            # another connection of it won: refuse this one.  Clearing
            # C{ready} keeps the protocol's own connectionReady hook from
            # running.
            protocol.ready = False
            _stopGate(protocol)
            protocol.transport.abortConnection()
            return
        self.done = True
        self._stopTimer()
        self.protocol = protocol
        self.connectedAt = self.client._reactor.seconds()
        self.client._connectionReady(self, protocol)
        self.ready.callback(protocol)

    def connectionClosed(self, protocol: _ConnectionBase, reason: Failure, wasReady: bool) -> None:
        _stopGate(protocol)
        if wasReady and protocol is self.protocol:
            self.client._connectionClosed(self, reason)
        elif not self.done:
            self.fail(self.client._classifyEarlyLoss(reason, protocol, self))

    def messageReceived(self, protocol: MessageProtocol, message: bytes) -> None:
        onMessage = self.client.onMessage
        if onMessage is not None:
            onMessage(message)

    def dataReceived(self, protocol: StreamProtocol, data: bytes) -> None:
        onMessage = self.client.onMessage
        if onMessage is not None:
            onMessage(data)

    def fail(self, error: BaseException) -> None:
        """
        End the attempt with C{error}, unless it already ended.
        """
        if self.done:
            return
        self.done = True
        self._abandon()
        self.ready.errback(Failure(error))

    def _cancelled(self, ready: Deferred[_ConnectionBase]) -> None:
        # The caller cancelled the Deferred of connect(); it then fails with
        # CancelledError.
        if not self.done:
            self.done = True
            self._abandon()

    def _abandon(self) -> None:
        self._stopTimer()
        for protocol in self.protocols:
            _stopGate(protocol)
            if protocol.connected and not protocol.ready:
                protocol.transport.abortConnection()
        connecting = self.connecting
        if connecting is not None:
            # Even once it has "fired": HostnameEndpoint's Deferred fires as
            # soon as the name is resolved and then waits on the connection
            # attempts; cancelling it forwards the cancellation to them.  (On
            # a Deferred that has its result, cancel() does nothing; on a
            # TCP endpoint's it stops connecting.)
            connecting.cancel()

    def _stopTimer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


def _describedHost(description: str) -> str | None:
    """
    The host of a C{tcp:} client endpoint description: its C{host=}
    argument, or its first positional one (C{tcp:example.org:8081}), as
    L{clientFromString} reads them; C{None} for any other kind of endpoint.

    Twisted's reader of the grammar is private, so this is a reader of its
    own: arguments separated by C{:}, C{\\} taking the next character as
    it is, C{name=value} for a keyword (a later C{=} belongs to the value).
    It is called only on a description L{clientFromString} accepted.
    """
    arguments: list[str] = []
    keywords: dict[str, str] = {}
    parts: list[str] = []
    current: list[str] = []

    def endArgument() -> None:
        parts.append("".join(current))
        current.clear()
        if len(parts) == 1:
            arguments.append(parts[0])
        else:
            keywords[parts[0]] = parts[1]
        parts.clear()

    characters = iter(description)
    for character in characters:
        if character == "\\":
            current.append(next(characters, ""))
        elif character == ":":
            endArgument()
        elif character == "=" and not parts:
            parts.append("".join(current))
            current.clear()
        else:
            current.append(character)
    endArgument()
    if arguments[0].upper() != "TCP":
        return None
    if "host" in keywords:
        return keywords["host"]
    return arguments[1] if len(arguments) > 1 else None


@dataclass(frozen=True, eq=False)
class _Target:
    """
    What a client connects to, for one L{Client.connect} or
    L{Client.connectTo} and the reconnections that follow it.

    @ivar name: how messages and the log name it: C{HOST:PORT}, an
        endpoint description, or an endpoint's name.
    @ivar endpoint: makes the endpoint of one attempt.
    @ivar tls: the TLS settings, or C{None} for none.
    @ivar serverName: with C{tls}, the host name the server's certificate
        is checked against (unless C{tls.hostname} names another) and sent
        as SNI.
    @ivar host: the host name connected to, when it is known (to say which
        name did not resolve).
    @ivar port: the port of L{Client.connect}; C{None} for an endpoint.
    @ivar fields: the structured fields of the log events that name it.
    """

    name: str
    endpoint: Callable[[], IStreamClientEndpoint]
    tls: TLSConfig | None
    serverName: str
    host: str | None
    port: int | None
    fields: dict[str, object] = field(default_factory=dict)


class Client:
    """
    A message client.

    Use it with callbacks::

        client = Client(onMessage=print)
        protocol = await client.connect("localhost", 8081)
        client.send(b"hello")

    or with your own L{MessageProtocol}/L{StreamProtocol} subclass, whose
    C{connectionReady} and C{messageReceived} hooks are called as usual.
    L{connectTo} connects through a Twisted client endpoint instead, such
    as C{client.connectTo("unix:/run/tcpsc.sock")}.

    @ivar protocol: the protocol of the current ready connection, or C{None}.
    @ivar closeTimeout: see L{__init__}; a field of L{settings}.
    """

    log = Logger()

    closeTimeout: SettingAttribute[float] = SettingAttribute()

    def __init__(
        self,
        protocol: type[MessageProtocol] | type[StreamProtocol] | None = None,
        *,
        stream: bool = False,
        delimiter: bytes | str | FromProtocol | None = FROM_PROTOCOL,
        maxMessageLength: int | FromProtocol | None = FROM_PROTOCOL,
        messageAppend: bytes | str | FromProtocol | None = FROM_PROTOCOL,
        onMessage: Callable[[bytes], object] | None = None,
        onEstablished: Callable[[MessageProtocol | StreamProtocol], object] | None = None,
        onClosed: Callable[[Failure], object] | None = None,
        connectTimeout: float = 30.0,
        reconnect: bool = False,
        initialDelay: float = 0.5,
        maxDelay: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.25,
        acceptanceGrace: float = DEFAULT_ACCEPTANCE_GRACE,
        reactor: Any = None,
        closeTimeout: float = Settings.closeTimeout,
        settings: Settings | None = None,
    ) -> None:
        """
        @param protocol: a L{MessageProtocol} or L{StreamProtocol} subclass.
        @param stream: continuous mode instead of messages.
        @param delimiter: overrides the protocol's C{delimiter} (C{None} or
            C{FROM_PROTOCOL}: the protocol's own).
        @param maxMessageLength: overrides the protocol's C{maxMessageLength}.
        @param messageAppend: overrides the protocol's C{messageAppend}
            (C{None} or C{FROM_PROTOCOL}: the protocol's own).
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
        @param closeTimeout: seconds L{disconnect} gives the server to take
            the last output (and, over TLS, close_notify) before the
            connection is aborted; 5 by default.
        @param settings: the framing, output bound and C{closeTimeout} as
            one value (its server-only fields are not used), instead of the
            keyword arguments that spell them: a keyword that differs from
            its default given together with C{settings} is a C{TypeError}
            (see L{tcpsc.Settings}).
        @raise TypeError: a setting given both ways; a protocol that is not
            one of tcpsc's.
        @raise ValueError: a setting out of its range.
        """
        self.protocolClass: type[_ConnectionBase] = protocolClass(protocol, stream)
        self._settings = settingsFrom(
            "Client",
            settings,
            {
                "delimiter": delimiter,
                "maxMessageLength": maxMessageLength,
                "messageAppend": messageAppend,
                "closeTimeout": closeTimeout,
            },
        )
        self._protocolAttributes = self._settings.protocolAttributes(
            cast("type[MessageProtocol] | type[StreamProtocol]", self.protocolClass)
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
        self._reactor = reactor if reactor is not None else defaultReactor()
        self._random = random.Random()
        self.protocol: _ConnectionBase | None = None
        self._attempt: _Attempt | None = None
        # What to connect (and reconnect) to; None once given up.
        self._target: _Target | None = None
        # What the last connect() or connectTo() connected to, for messages
        # about its connection that come after it was given up.
        self._named: _Target | None = None
        # The settings, server name and connection creator of the last TLS
        # attempt.
        self._lastCreator: tuple[TLSConfig, str, Any] | None = None
        self._retryCall: IDelayedCall | None = None
        self._failures = 0
        self._closedWaiters: list[Deferred[None]] = []

    @property
    def settings(self) -> Settings:
        """
        The settings the connections made from then on get.

        @raise ValueError: a framing field that the protocol class refuses;
            the settings are unchanged.
        """
        return self._settings

    @settings.setter
    def settings(self, value: Settings) -> None:
        if not isinstance(value, Settings):
            raise TypeError(f"settings must be a tcpsc.Settings, not {value!r}")
        self._protocolAttributes = value.protocolAttributes(
            cast("type[MessageProtocol] | type[StreamProtocol]", self.protocolClass)
        )
        self._settings = value

    # -- connecting -------------------------------------------------------

    def connect(
        self, host: str, port: int, tls: TLSConfig | None = None
    ) -> Deferred[MessageProtocol | StreamProtocol]:
        """
        Connect to C{host}:C{port}.

        @param host: a host name, IPv4 or IPv6 address.
        @param tls: TLS 1.3 settings; plain TCP if C{None}.  Its files are
            read at every connection attempt, reconnections included, so a
            certificate replaced on disk is used from the next connection
            on; if they cannot be read again (or the certificate is no
            longer valid), the certificates of the last attempt are used
            and the cause is logged.
        @return: fires with the protocol once the connection is ready, or
            fails with L{StartError} (-1, already connected or connecting),
            L{PortError} (10), L{CertificateLoadError} (30-35),
            L{ConnectError} (50: refused, unresolvable, timed out) or
            L{TLSHandshakeError} (60; L{ServerCertificateRejected} or
            L{ClientCertificateRejected} when a certificate was refused).
            Cancelling it gives the attempt up: the connection in progress
            is aborted and the Deferred fails with L{twisted.internet.defer.CancelledError}.
        """
        if self._target is not None:
            return fail(StartError("the client is already connected or connecting", -1))
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            return fail(PortError(f"port {port!r} is outside 1-65535"))
        return self._start(
            _Target(
                name=f"{host}:{port}",
                endpoint=lambda: self._endpoint(host, port),
                tls=tls,
                serverName=host,
                host=host,
                port=port,
                fields={"host": host, "port": port},
            )
        )

    def connectTo(
        self,
        endpoint: str | IStreamClientEndpoint,
        tls: TLSConfig | None = None,
        *,
        hostname: str | None = None,
        name: str | None = None,
    ) -> Deferred[MessageProtocol | StreamProtocol]:
        """
        Connect through a Twisted client endpoint instead of to a host and
        port: a UNIX socket, or any connection that
        L{clientFromString<twisted.internet.endpoints.clientFromString>}
        describes or an L{IStreamClientEndpoint} makes.  Everything else is
        as with L{connect}: readiness, C{connectTimeout} (whatever the
        endpoint's own timeout), TLS, reconnecting (to the same endpoint),
        L{disconnect} and the errors.

        With C{tls}, tcpsc's own TLS 1.3 runs over the endpoint's
        connection, and the connection is ready only once the server is
        verified (and has accepted this client's certificate): give a plain
        endpoint, not a C{tls:} or C{ssl:} one, whose C{connect()} fires
        before any handshake.

        @param endpoint: an endpoint description, such as
            C{"unix:/run/tcpsc.sock"} or C{"tcp:host=example.org:port=8081"}
            (read with the client's reactor), or an endpoint, used as it is.
        @param tls: TLS 1.3 settings, as for L{connect}; plain if C{None}.
        @param hostname: the server's host name: with C{tls}, what its
            certificate is checked against (unless C{tls.hostname} names
            another) and the SNI sent.  A C{tcp:} description names its
            host itself; any other endpoint has no host name tcpsc can
            read, so TLS over it needs C{hostname} (or C{tls.hostname}).
        @param name: how messages and the log name the server; by default
            the description, or the endpoint's C{repr}.
        @return: as for L{connect}; fails with L{PortError} (10) for a
            description L{clientFromString<twisted.internet.endpoints.clientFromString>}
            cannot read, or for what is neither a description nor an
            endpoint, and with C{TypeError} for TLS without a host name.
        """
        if self._target is not None:
            return fail(StartError("the client is already connected or connecting", -1))
        described: str | None = None
        if isinstance(endpoint, str):
            try:
                made = clientFromString(self._reactor, endpoint)
            except Exception as e:
                # Twisted's parsers raise what they raise: ValueError for an
                # unknown kind, TypeError or KeyError for a missing
                # argument, OSError for a file an ssl: description names.
                return fail(PortError(f"not a client endpoint description: {endpoint!r} ({e})"))
            described = _describedHost(endpoint)
            label = endpoint
        elif IStreamClientEndpoint.providedBy(endpoint):
            made = endpoint
            label = repr(endpoint)
        else:
            return fail(PortError(f"not a client endpoint description or endpoint: {endpoint!r}"))
        if name is not None:
            label = name
        host = hostname if hostname is not None else described
        if tls is not None and not host and not tls.hostname:
            return fail(
                TypeError(
                    f"TLS over {label} needs hostname=, the name the server's certificate "
                    f"is checked against: the endpoint has no host name"
                )
            )
        return self._start(
            _Target(
                name=label,
                endpoint=lambda: made,
                tls=tls,
                serverName=host or "",
                host=host,
                port=None,
            )
        )

    def _start(self, target: _Target) -> Deferred[MessageProtocol | StreamProtocol]:
        """
        Make the first attempt to connect to C{target}, which later
        reconnections go to as well.
        """
        try:
            creator = self._creatorFor(target)
        except Exception:
            return fail()
        self._target = self._named = target
        self._failures = 0
        d = self._connectOnce(target, creator)

        def failed(f: Failure) -> Failure:
            self._target = None
            return f

        # The protocol is an instance of the public MessageProtocol or
        # StreamProtocol (see _protocolClass).
        return d.addErrback(failed)  # type: ignore[return-value]

    def _creatorFor(self, target: _Target) -> Any:
        """
        The TLS connection creator of one attempt, from the files of
        C{target.tls} read again: each connection, reconnections included,
        uses the certificates on disk at that moment, so rotated files are
        taken up without anything to call.  If reading them again fails
        (unreadable, invalid, a key that does not match, a certificate
        expired or not valid yet) and the last attempt to the same server
        name with the same settings had certificates, those are used again
        and the cause is logged, naming the file.

        @raise CertificateLoadError: the files cannot be used and there is
            nothing to fall back on.
        """
        tls = target.tls
        if tls is None:
            return None
        host = target.serverName
        last = self._lastCreator
        if last is None or last[0] is not tls or last[1] != host:
            creator = tls.clientCreator(host)
        else:
            try:
                creator = tls.clientCreator(host, current=True)
            except CertificateLoadError as e:
                self.log.warn(
                    "Connecting to {target} with the certificates used so far: "
                    "reading them again failed: {error}",
                    target=target.name,
                    error=str(e),
                    path=e.path,
                    code=e.code,
                    **target.fields,
                )
                return last[2]
        self._lastCreator = (tls, host, creator)
        return creator

    def _endpoint(self, host: str, port: int) -> IStreamClientEndpoint:
        """
        The endpoint to connect with: straight to an IP address given as
        one; through name resolution, trying every address the name has,
        otherwise.

        L{HostnameEndpoint} reports a refused connection only at its next
        attempt tick (0.3 s later), after it found it has no other address to
        try; an IP address has no other, so its refusal is reported at once.
        """
        timeout = self.connectTimeout
        if isIPAddress(host):
            return TCP4ClientEndpoint(self._reactor, host, port, timeout=timeout)
        if isIPv6Address(host):
            return TCP6ClientEndpoint(self._reactor, host, port, timeout=timeout)
        return HostnameEndpoint(self._reactor, host, port, timeout=timeout)

    def _connectOnce(self, target: _Target, creator: Any) -> Deferred[_ConnectionBase]:
        attempt = self._attempt = _Attempt(self, creator)
        factory: Any = _ClientFactory(self, attempt, tls=creator is not None)
        if creator is not None:
            factory = tlsFactory(
                creator, isClient=True, wrappedFactory=factory, clock=self._reactor
            )
        attempt.timer = self._reactor.callLater(self.connectTimeout, self._timedOut, attempt)
        try:
            connecting = target.endpoint().connect(factory)
        except Exception:
            # An endpoint should fail its Deferred instead; one that raises
            # ends the attempt all the same.
            connecting = fail()
        attempt.connecting = connecting

        def connectFailed(f: Failure) -> None:
            attempt.fail(self._classifyConnectFailure(f, target))

        connecting.addErrback(connectFailed)
        return attempt.ready

    def _timedOut(self, attempt: _Attempt) -> None:
        attempt.timer = None
        stage = "the TLS handshake with" if attempt.protocols else "connecting to"
        attempt.fail(
            ConnectError(
                f"{stage} {self._describeTarget()} timed out after {self.connectTimeout} s"
            )
        )

    def _describeTarget(self) -> str:
        """
        The name of what the client connects, or last connected, to.
        """
        return self._named.name if self._named is not None else "the server"

    def _logFields(self) -> dict[str, object]:
        """
        The structured fields that name the target in a log event.
        """
        named = self._named
        return {"target": self._describeTarget(), **(named.fields if named else {})}

    def _classifyConnectFailure(self, f: Failure, target: _Target) -> StartError:
        name = target.name
        if f.check(DNSLookupError):
            if target.host is not None:
                return ConnectError(f"cannot resolve the host name {target.host!r}")
            return ConnectError(f"cannot resolve the host name of {name}: {f.getErrorMessage()}")
        if f.check(ConnectionRefusedError):
            return ConnectError(f"connection to {name} refused: no server is listening")
        if f.check(TwistedTimeoutError):
            return ConnectError(f"connecting to {name} timed out")
        if isinstance(f.value, StartError):
            return f.value
        if target.port is not None:
            return ConnectError(f"cannot connect to {name}: {f.getErrorMessage()}")
        # Twisted's connect errors carry the system's error number: its own
        # words read better than Twisted's sentence around them.
        code = getattr(f.value, "osError", None)
        why = os.strerror(code) if isinstance(code, int) else f.getErrorMessage()
        return ConnectError(f"cannot connect to {name}: {why}")

    def _classifyEarlyLoss(
        self, reason: Failure, protocol: _ConnectionBase, attempt: _Attempt
    ) -> StartError:
        if not attempt.tls:
            return ConnectError(
                f"the connection closed before it was ready: {reason.getErrorMessage()}"
            )
        if reason.check(ConnectionClosed):
            stage = (
                "after the TLS handshake, before accepting this client"
                if protocol._handshakeSeen
                else "during the TLS handshake"
            )
            return TLSHandshakeError(
                f"the server closed the connection {stage} ({reason.getErrorMessage()})",
                reason.value,
            )
        return classifyTLSFailure(
            reason,
            certificate=_presentedCertificate(protocol),
            authorities=getattr(attempt.creator, "authorities", ()),
            identity=identityFailure(protocol.transport),
        )

    # -- the connection ---------------------------------------------------

    def _notify(self, callback: Callable[..., object] | None, name: str, *args: object) -> None:
        """
        Call a user callback; an exception it raises is logged, and never
        breaks the client's own bookkeeping (readiness, reconnecting).
        """
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            self.log.failure("The {callback} callback raised an exception", callback=name)

    def _connectionReady(self, attempt: _Attempt, protocol: _ConnectionBase) -> None:
        self.protocol = protocol
        self.log.info("Connected to {target}", **self._logFields())
        self._notify(self.onEstablished, "onEstablished", protocol)

    def _connectionClosed(self, attempt: _Attempt, reason: Failure) -> None:
        if attempt is self._attempt:
            self.protocol = None
        rejected = None
        if attempt.tls and not reason.check(ConnectionDone):
            # A rejection can come after readiness when the server sent no
            # session ticket within acceptanceGrace: it is just as final.
            classified = classifyTLSFailure(reason)
            if isinstance(classified, NOT_RETRIED):
                rejected = classified
                reason = Failure(classified)
        self.log.info(
            "Connection to {target} closed: {why}",
            why=describeClose(reason, attempt.tls),
            **self._logFields(),
        )
        self._notify(self.onClosed, "onClosed", reason)
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
        if rejected is not None:
            self.log.error(
                "Stopped reconnecting to {target}: {error}", error=rejected, **self._logFields()
            )
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
        self.log.info(
            "Reconnecting to {target} in {delay:.2f} s (attempt {attempt})",
            delay=delay,
            attempt=self._failures,
            **self._logFields(),
        )
        self._retryCall = self._reactor.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._retryCall = None
        if self._target is None:
            return
        target = self._target
        try:
            creator = self._creatorFor(target)
        except Exception:
            f = Failure()
            self.log.error(
                "Stopped reconnecting to {target}: {error}", error=f.value, **self._logFields()
            )
            self._target = None
            self._notify(self.onClosed, "onClosed", f)
            return

        def failed(f: Failure) -> None:
            if self._target is None:
                return
            if f.check(*NOT_RETRIED):
                self.log.error(
                    "Stopped reconnecting to {target}: {error}", error=f.value, **self._logFields()
                )
                self._target = None
                self._notify(self.onClosed, "onClosed", f)
                return
            self.log.info(
                "Reconnecting to {target} failed: {error}", error=f.value, **self._logFields()
            )
            self._scheduleRetry()

        self._connectOnce(target, creator).addErrback(failed)

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
            (see L{MessageProtocol.sendMessage}: it contains the delimiter, is
            too long, or the server does not read and the connection's output
            is over C{maxPendingOutput}).
        """
        protocol = self.protocol
        if protocol is None:
            return False
        if isinstance(protocol, MessageProtocol):
            return protocol.sendMessage(data)
        return protocol.sendData(data)  # type: ignore[attr-defined]

    def disconnect(self) -> Deferred[None]:
        """
        Close the connection after its pending output is written (over TLS,
        then close_notify, without waiting for the server's), and stop
        reconnecting.  A server that does not take the last output within
        C{closeTimeout} seconds gets the connection aborted: the close is
        bounded.  C{onClosed} receives L{tcpsc.ClosedLocally} (or
        L{tcpsc.AbortedLocally} when the bound ran out).

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
        protocol.closeConnection("disconnect() called")
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
