# -*- test-case-name: tests.test_service -*-
"""
Reactor services, for C{.tac} files and the daemon.

L{ServerService} serves a L{Server} on one or more endpoints while it runs;
L{KeepConnectedService} keeps a L{Client} connected while it runs.  Both are
L{twisted.application.service.IService} providers: add them to an
C{Application} (or any L{twisted.application.service.MultiService}) and
twistd starts them, and at shutdown waits for what their C{stopService}
returns, so that a server flushes and closes its connections before the
process exits.

L{KeepConnectedService} is not Twisted's
L{twisted.application.internet.ClientService}: that one connects a factory
through an endpoint and counts a TLS connection as made at TCP connect; this
one drives a tcpsc L{Client}, whose connection is ready only once the TLS
handshake is done and the server accepted the client's certificate, and
which never retries a rejected certificate.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._client import NOT_RETRIED, Client
from ._errors import ConnectError, StartError, TLSHandshakeError
from ._server import Server

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IListeningPort, IStreamServerEndpoint

    from ._framing import _ConnectionBase
    from ._tls import TLSConfig

__all__ = ["KeepConnectedService", "ServerService"]


class ServerService(Service):
    """
    Serves a L{Server} on one or more ports while the service runs.

    It listens on every port in C{privilegedStartService} (before twistd
    sheds privileges, so that ports below 1024 work with C{--uid}), or in
    C{startService} when a runner does not call that (C{twist}).  A port
    that cannot be listened on at once makes that call raise, so twistd
    stops with the cause instead of running without the port; the ports
    already opened are closed again.  C{stopService} calls L{Server.stop}
    and returns its Deferred: twistd waits for it, so every connection is
    flushed and closed (bounded by the server's C{closeTimeout}) before the
    process exits.

    Example, in a C{.tac} file::

        from twisted.application.service import Application
        from tcpsc import Server, ServerService

        application = Application("echo")
        server = Server(onMessage=lambda clientId, message: server.send(clientId, message))
        ServerService(server, ["tcp:8081"]).setServiceParent(application)

    @ivar server: the server.
    @ivar ports: the ports listened on: numbers, endpoint descriptions
        (C{"tcp:8081:interface=127.0.0.1"}) or endpoints.
    @ivar tls: the TLS settings every port is served with, or C{None} for
        plain TCP.
    """

    log = Logger()

    def __init__(
        self,
        server: Server,
        ports: Sequence[int | str | IStreamServerEndpoint] | int | str,
        tls: TLSConfig | None = None,
    ) -> None:
        """
        @param server: the server to serve.
        @param ports: one port, or a sequence of them: port numbers, Twisted
            server endpoint descriptions or endpoints (see L{Server.listen}).
        @param tls: serve TLS 1.3 with these settings on every port.
        @raise ValueError: no port given.
        """
        if isinstance(ports, (int, str)):
            ports = [ports]
        self.ports: list[int | str | IStreamServerEndpoint] = list(ports)
        if not self.ports:
            raise ValueError("a ServerService needs at least one port")
        self.server = server
        self.tls = tls
        self._listenStarted = False
        self._starting = False
        self._startFailure: Failure | None = None
        self._listening: Deferred[list[IListeningPort]] | None = None
        self._waiters: list[Deferred[list[IListeningPort]]] = []

    def privilegedStartService(self) -> None:
        """
        Listen on every port.

        @raise Exception: the error of the first port that could not be
            listened on (L{tcpsc.PortError}, L{tcpsc.ListenError},
            L{tcpsc.CertificateLoadError}, ...), once it was logged and the
            ports already opened were closed.
        """
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        """
        Start; listen now if L{privilegedStartService} was not called.

        @raise Exception: as L{privilegedStartService}; the service is then
            not running.
        """
        super().startService()
        if not self._listenStarted:
            try:
                self._listen()
            except BaseException:
                self.running = False
                raise

    def _listen(self) -> None:
        self._listenStarted = True
        self._startFailure = None
        pending: list[Deferred[IListeningPort]] = []
        self._starting = True
        try:
            for port in self.ports:
                d = self.server.listen(port, tls=self.tls)
                d.addErrback(self._listenFailed, port)
                pending.append(d)
                if self._startFailure is not None:
                    break
        finally:
            self._starting = False
        failure = self._startFailure
        if failure is not None:
            self._startFailure = None
            self._listenStarted = False
            for d in pending:
                d.addErrback(lambda f: None)
            self.server.stop()
            failure.raiseException()
        listening: Deferred[list[IListeningPort]] = gatherResults(pending, consumeErrors=True)
        self._listening = listening
        listening.addBoth(self._listened)

    def _listenFailed(self, failure: Failure, port: int | str | IStreamServerEndpoint) -> Failure:
        self.logListenFailure(port, failure)
        if self._starting:
            # Endpoints that listen at once (TCP, UNIX, TLS, systemd) fail
            # here, synchronously: raised from the start of the service.
            self._startFailure = failure
        else:
            self.listenFailedLater(port, failure)
        return failure

    def logListenFailure(self, port: int | str | IStreamServerEndpoint, failure: Failure) -> None:
        """
        Log that C{port} could not be listened on: one critical line.
        Override to word it otherwise.
        """
        self.log.critical(
            "Cannot listen on {port}: {error}",
            port=port,
            error=failure.getErrorMessage(),
            code=getattr(failure.value, "code", None),
        )

    def listenFailedLater(self, port: int | str | IStreamServerEndpoint, failure: Failure) -> None:
        """
        Called when an endpoint that listens asynchronously failed after the
        service started (it was logged already): L{whenListening} fails.
        Override to stop the process, as the daemon does.
        """

    def _listened(self, result: list[IListeningPort] | Failure) -> None:
        if isinstance(result, Failure):
            # gatherResults wraps the first failure in a FirstError.
            value = getattr(result.value, "subFailure", None)
            if isinstance(value, Failure):
                result = value
        if not self._listenStarted and not isinstance(result, Failure):
            # Stopped before an asynchronous endpoint was listening: the
            # ports it opened since must not stay open.
            self.server.stop()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(list(result))
        if isinstance(result, Failure):
            self._listening = None

    def whenListening(self) -> Deferred[list[IListeningPort]]:
        """
        Wait until every port listens.

        @return: fires with the listening ports once all of them listen (at
            once if they do), or fails with the error of the first port that
            could not be listened on.  Before the service started, it waits
            for the start.
        """
        listening = self._listening
        if listening is not None and listening.called and self.server.ports:
            return succeed(self.server.ports)
        waiter: Deferred[list[IListeningPort]] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting, flush and close every connection (L{Server.stop}).

        @return: fires once no port listens and no connection is open.
        """
        super().stopService()
        self._listenStarted = False
        self._listening = None
        return self.server.stop()


class KeepConnectedService(Service):
    """
    Keeps a L{Client} connected while the service runs.

    C{startService} connects; a connection that fails (refused, timed out,
    a TLS handshake that failed) is tried again, and a ready connection that
    is lost is made again, after the delays of the client's own policy:
    C{initialDelay * factor ** n} seconds, at most C{maxDelay}, plus up to
    C{jitter} of that.  The service turns the client's C{reconnect} on while
    it runs (keeping it connected is its purpose) and back as it was when it
    stops.  A certificate the server rejects, or a server certificate the
    client rejects, stops the attempts: the same certificates cannot
    succeed later, and retrying would only hammer the server.  The error is
    logged.  C{stopService} closes the connection (L{Client.disconnect}) and
    returns its Deferred.

    Its name is not C{ClientService} on purpose: see the module's
    docstring.

    @ivar client: the client.
    @ivar host: the server's host name or address.
    @ivar port: the server's port.
    @ivar tls: TLS settings, or C{None} for plain TCP.
    """

    log = Logger()

    def __init__(self, client: Client, host: str, port: int, tls: TLSConfig | None = None) -> None:
        """
        @param client: the client to keep connected; it must not be
            connected or connecting when the service starts.
        @param host: the server's host name or address.
        @param port: the server's port.
        @param tls: connect with TLS 1.3 and these settings.
        """
        self.client = client
        self.host = host
        self.port = port
        self.tls = tls
        self._attempts = 0
        self._retryCall: IDelayedCall | None = None
        self._starting = False
        self._startFailure: Failure | None = None
        self._reconnect = client.reconnect
        self._random = random.Random()

    def startService(self) -> None:
        """
        Start connecting.

        @raise Exception: the settings cannot work at all, whatever the
            server does: L{tcpsc.PortError} (10), L{tcpsc.CertificateLoadError}
            (30-35), L{tcpsc.StartError} (-1, the client is connected
            already).  The service is then not running.
        """
        super().startService()
        self._reconnect = self.client.reconnect
        self.client.reconnect = True
        self._attempts = 0
        self._starting = True
        self._startFailure = None
        try:
            self._connect()
        finally:
            self._starting = False
        failure, self._startFailure = self._startFailure, None
        if failure is not None:
            self.running = False
            self.client.reconnect = self._reconnect
            failure.raiseException()

    def _connect(self) -> None:
        self._retryCall = None

        def connected(protocol: _ConnectionBase) -> None:
            self._attempts = 0

        def failed(f: Failure) -> None:
            if not self.running:
                return
            if self._starting and not f.check(ConnectError, TLSHandshakeError):
                # Refused before any connection was tried: settings that
                # cannot work (a port out of range, an unreadable file).
                self._startFailure = f
                return
            if (
                f.check(*NOT_RETRIED)
                or not f.check(StartError)
                or (isinstance(f.value, StartError) and f.value.code == -1)
            ):
                self.log.error(
                    "Stopped connecting to {host}:{port}: {error}",
                    host=self.host,
                    port=self.port,
                    error=f.getErrorMessage(),
                )
                return
            self._scheduleRetry(f)

        self.client.connect(self.host, self.port, tls=self.tls).addCallbacks(connected, failed)

    def _scheduleRetry(self, f: Failure) -> None:
        client = self.client
        delay = min(client.maxDelay, client.initialDelay * client.factor ** min(self._attempts, 64))
        delay += delay * client.jitter * self._random.random()
        self._attempts += 1
        self.log.info(
            "Connecting to {host}:{port} failed: {error}; trying again in {delay:.2f} s "
            "(attempt {attempt})",
            host=self.host,
            port=self.port,
            error=f.getErrorMessage(),
            delay=delay,
            attempt=self._attempts,
        )
        self._retryCall = client._reactor.callLater(delay, self._connect)

    def stopService(self) -> Deferred[None]:
        """
        Stop connecting and close the connection (L{Client.disconnect}:
        the last output is written first, bounded by the client's
        C{closeTimeout}).

        @return: fires once the connection is closed.
        """
        super().stopService()
        call, self._retryCall = self._retryCall, None
        if call is not None and call.active():
            call.cancel()
        self.client.reconnect = self._reconnect
        return self.client.disconnect()
