"""
Tests for L{tcpsc.Client}: connecting and its errors, timeouts and
cancellation, sending and closing, reconnecting with backoff, and continuous
mode.

Peers are tcpsc servers on 127.0.0.1, plain Twisted listeners that accept TCP
and then say nothing (a server that never completes a TLS handshake), and
C{openssl s_server} where a TLS server that sends no session ticket is
needed.  Every wait is on an event with a bound; every server, listener and
client is stopped in the test's cleanups, and trial's check for a clean
reactor is what proves that a failed or abandoned attempt left no timer or
connection behind.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tcpsc import (
    CertificateLoadError,
    Client,
    ClientCertificateRejected,
    ConnectError,
    MessageProtocol,
    PortError,
    Server,
    StartError,
    StreamProtocol,
    TLSConfig,
)
from tcpsc._client import _Attempt
from tests._helpers import certificates, waitFor
from tests.test_tls import (
    SHORT,
    Echo,
    RealTLSTestCase,
    asyncTest,
    clientTLS,
    freePort,
    serverTLS,
    within,
)


class Silent(Protocol):
    """
    Accepts a TCP connection and never says anything: for a TLS client, a
    server whose handshake never completes.
    """

    def __init__(self) -> None:
        self.lost: Deferred[None] = Deferred()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost.callback(None)


class CountingServer(Server):
    """
    A server that counts the connections it accepted (before any TLS).
    """

    accepted = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.accepted += 1
        return super().buildProtocol(addr)


class ClientTestCase(RealTLSTestCase):
    """
    Silent listeners, in addition to the servers, clients and processes of
    L{RealTLSTestCase}.
    """

    def silentListener(self) -> tuple[int, list[Silent]]:
        """
        Listen on 127.0.0.1 with L{Silent} peers.

        @return: the port and the list of peers, in order of connection.
        """
        peers: list[Silent] = []

        def build(addr: Any) -> Silent:
            peer = Silent()
            peers.append(peer)
            return peer

        factory = Factory()
        factory.buildProtocol = build  # type: ignore[method-assign]
        factory.noisy = False
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")

        async def cleanup() -> None:
            await port.stopListening()
            for peer in peers:
                if not peer.lost.called:
                    peer.transport.abortConnection()
                    await within(peer.lost)

        self.addCleanup(lambda: Deferred.fromCoroutine(cleanup()))
        return port.getHost().port, peers

    def delays(self) -> list[float]:
        """
        The reconnect delays the clients logged, in order.
        """
        return [
            e["delay"]
            for e in self.events
            if "Reconnecting to" in e.get("log_format", "") and "delay" in e
        ]


class ConnectErrorTests(ClientTestCase):
    """
    Failing to connect is a specific error with the original's code and a
    message naming the cause.
    """

    @asyncTest
    async def test_connectionRefused(self) -> None:
        port = freePort()
        client = self.client()
        error = await within(self.assertFailure(client.connect("127.0.0.1", port), ConnectError))
        self.assertEqual(error.code, 50)
        self.assertIn(f"127.0.0.1:{port}", str(error))
        self.assertIn("refused", str(error))
        self.assertFalse(client.isConnected)
        # The failed attempt is over: the client may try again.
        await within(self.assertFailure(client.connect("127.0.0.1", port), ConnectError))

    @asyncTest
    async def test_unresolvableHost(self) -> None:
        client = self.client()
        error = await within(
            self.assertFailure(client.connect("nonexistent.invalid", 8081), ConnectError), 30
        )
        self.assertEqual(error.code, 50)
        self.assertIn("nonexistent.invalid", str(error))
        self.assertIn("resolve", str(error))

    def test_badPort(self) -> None:
        client = Client()
        ports: tuple[Any, ...] = (0, -1, 65536, 70000, "8081", 8081.0, True, None)
        for port in ports:
            error = self.failureResultOf(client.connect("127.0.0.1", port), PortError).value
            self.assertEqual(error.code, 10, port)
            self.assertIsInstance(error, ValueError)
            self.assertIn(repr(port), str(error))

    @asyncTest
    async def test_connectTwice(self) -> None:
        server, port = await self.startServer(None, protocol=Echo)
        client = self.client()
        await within(client.connect("127.0.0.1", port))
        error = self.failureResultOf(client.connect("127.0.0.1", port), StartError).value
        self.assertEqual(error.code, -1)
        self.assertTrue(client.isConnected)
        await waitFor(lambda: len(server.clientIds()) == 1, SHORT)

    @asyncTest
    async def test_connectTwiceWhileConnecting(self) -> None:
        port, _ = self.silentListener()
        client = self.client(connectTimeout=SHORT)
        connecting = client.connect("127.0.0.1", port, tls=clientTLS())
        connecting.addErrback(lambda f: f.trap(ConnectError))
        error = self.failureResultOf(client.connect("127.0.0.1", port), StartError).value
        self.assertEqual(error.code, -1)
        await within(client.disconnect())

    @asyncTest
    async def test_certificateErrorBeforeNetwork(self) -> None:
        """
        Certificates are checked before connecting: a missing key is
        reported as such (32), even where no server listens.
        """
        c = certificates()
        client = self.client()
        config = TLSConfig(ca=c.ca, cert=c.client, key=c.path("nokey.key"))
        error = await within(
            self.assertFailure(
                client.connect("127.0.0.1", freePort(), tls=config), CertificateLoadError
            )
        )
        self.assertEqual(error.code, 32)
        self.assertFalse(client.isConnected)


class TimeoutAndCancelTests(ClientTestCase):
    """
    An attempt that does not become ready in time, or that its caller gives
    up, leaves nothing behind: no connection, no timer.
    """

    @asyncTest
    async def test_handshakeNeverCompletes(self) -> None:
        port, peers = self.silentListener()
        client = self.client(connectTimeout=0.3)
        started = reactor.seconds()
        error = await within(
            self.assertFailure(client.connect("127.0.0.1", port, tls=clientTLS()), ConnectError)
        )
        elapsed = reactor.seconds() - started
        self.assertEqual(error.code, 50)
        self.assertIn("timed out", str(error))
        self.assertIn("TLS handshake", str(error))
        self.assertGreaterEqual(elapsed, 0.3)
        self.assertLess(elapsed, 5.0)
        self.assertEqual(len(peers), 1)
        await within(peers[0].lost)
        self.assertFalse(client.isConnected)

    @asyncTest
    async def test_timeoutWhileWaitingForAcceptance(self) -> None:
        """
        A server that asks for a certificate and sends no session ticket
        keeps the client waiting for acceptance; the connect timeout still
        ends the attempt, and the acceptance timer goes with it.
        """
        port = await self.sServer("-Verify", "1", "-CAfile", certificates().ca, "-num_tickets", "0")
        client = self.client(connectTimeout=0.5, acceptanceGrace=30.0)
        error = await within(
            self.assertFailure(client.connect("localhost", port, tls=clientTLS()), ConnectError)
        )
        self.assertIn("timed out", str(error))
        leftovers = [
            call
            for call in reactor.getDelayedCalls()
            if "Acceptance" in getattr(call.func, "__qualname__", "")
        ]
        self.assertEqual(leftovers, [])

    @asyncTest
    async def test_cancel(self) -> None:
        """
        Cancelling the Deferred of connect() aborts the connection in its
        handshake and stops the timer; the client may connect again.
        """
        port, peers = self.silentListener()
        client = self.client(connectTimeout=SHORT)
        connecting = client.connect("127.0.0.1", port, tls=clientTLS())
        await waitFor(lambda: peers, SHORT, what="the silent listener to accept the connection")
        connecting.cancel()
        self.failureResultOf(connecting, CancelledError)
        await within(peers[0].lost)
        again = client.connect("127.0.0.1", port, tls=clientTLS())
        again.cancel()
        self.failureResultOf(again, CancelledError)

    @asyncTest
    async def test_disconnectWhileConnecting(self) -> None:
        port, peers = self.silentListener()
        client = self.client(connectTimeout=SHORT)
        connecting = client.connect("127.0.0.1", port, tls=clientTLS())
        await waitFor(lambda: peers, SHORT, what="the silent listener to accept the connection")
        await within(client.disconnect())
        error = self.failureResultOf(connecting, ConnectError).value
        self.assertIn("disconnect()", str(error))
        await within(peers[0].lost)


class ReadinessGuardTests(SynchronousTestCase):
    """
    An attempt that already failed never reports a connection as
    established, whatever becomes ready afterwards.
    """

    def test_readyAfterFailureIsRefused(self) -> None:
        established: list[object] = []
        client = Client(reactor=Clock(), onEstablished=established.append)
        attempt = _Attempt(client, None)
        failures: list[Failure] = []
        attempt.ready.addErrback(failures.append)
        attempt.fail(ConnectError("timed out"))
        hooks: list[str] = []

        class Protocol(MessageProtocol):
            def connectionReady(self) -> None:
                hooks.append("ready")

        protocol = Protocol()
        protocol._observer = attempt
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(len(failures), 1)
        self.assertFalse(protocol.ready)
        self.assertTrue(transport.disconnected)
        self.assertEqual((hooks, established, client.protocol), ([], [], None))
        # Its end is not reported either.
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(failures), 1)


class SendAndCloseTests(ClientTestCase):
    """
    Sending needs a ready connection; disconnecting is reported and waited
    for.
    """

    @asyncTest
    async def test_sendAndDisconnect(self) -> None:
        server, port = await self.startServer(None, protocol=Echo)
        echoes: list[bytes] = []
        closed: list[Failure] = []
        client = self.client(onMessage=echoes.append, onClosed=closed.append)
        self.assertFalse(client.send(b"too early"))
        self.assertFalse(client.isConnected)
        await within(client.connect("127.0.0.1", port))
        self.assertTrue(client.isConnected)
        self.assertTrue(client.send(b"hello"))
        await waitFor(lambda: echoes == [b"hello"], SHORT)
        disconnecting = client.disconnect()
        self.assertIsInstance(disconnecting, Deferred)
        await within(disconnecting)
        self.assertEqual(len(closed), 1)
        self.assertTrue(closed[0].check(ConnectionDone))
        self.assertFalse(client.isConnected)
        self.assertFalse(client.send(b"too late"))
        await waitFor(lambda: server.clientIds() == [], SHORT)

    @asyncTest
    async def test_sendAndDisconnectTLS(self) -> None:
        _, port = await self.startServer(serverTLS(), protocol=Echo)
        echoes: list[bytes] = []
        closed: list[Failure] = []
        client = self.client(onMessage=echoes.append, onClosed=closed.append)
        await within(client.connect("localhost", port, tls=clientTLS()))
        # Closing right after becoming ready is a clean TLS shutdown.
        await within(client.disconnect())
        self.assertEqual(len(closed), 1)
        self.assertTrue(closed[0].check(ConnectionDone), closed[0])
        self.assertFalse(client.send(b"too late"))

    def test_disconnectWhenNotConnected(self) -> None:
        client = Client()
        self.assertIsNone(self.successResultOf(client.disconnect()))

    @asyncTest
    async def test_serverCloses(self) -> None:
        established: list[int] = []
        server, port = await self.startServer(None, protocol=Echo, onEstablished=established.append)
        closed: list[Failure] = []
        client = self.client(onClosed=closed.append)
        await within(client.connect("127.0.0.1", port))
        await waitFor(lambda: established, SHORT, what="the server's onEstablished")
        server.disconnect(established[0])
        await waitFor(lambda: closed, SHORT, what="the client's onClosed")
        self.assertFalse(client.isConnected)
        self.assertFalse(client.send(b"nobody there"))
        # Without reconnect, the client is free to connect again.
        await within(client.connect("127.0.0.1", port))
        self.assertTrue(client.isConnected)

    @asyncTest
    async def test_failingCallbacks(self) -> None:
        """
        An exception in a callback is logged; it breaks neither connecting
        nor closing.
        """

        def fail(*args: object) -> None:
            raise RuntimeError("callback failed")

        _, port = await self.startServer(None, protocol=Echo)
        client = self.client(onEstablished=fail, onClosed=fail)
        protocol = await within(client.connect("127.0.0.1", port))
        self.assertIs(protocol, client.protocol)
        self.assertTrue(client.isConnected)
        await within(client.disconnect())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class ReconnectTests(ClientTestCase):
    """
    Reconnecting after a lost connection, with growing delays, and never
    with a certificate the server rejects.
    """

    @asyncTest
    async def test_reconnectsAfterServerRestart(self) -> None:
        server, port = await self.startServer(None, protocol=Echo)
        established: list[object] = []
        closed: list[Failure] = []
        echoes: list[bytes] = []
        client = self.client(
            reconnect=True,
            initialDelay=0.05,
            maxDelay=0.5,
            jitter=0,
            onEstablished=established.append,
            onClosed=closed.append,
            onMessage=echoes.append,
        )
        await within(client.connect("127.0.0.1", port))
        client.send(b"one")
        await waitFor(lambda: echoes == [b"one"], SHORT)
        await within(server.stop())
        await waitFor(lambda: closed, SHORT, what="the client's onClosed after the server stopped")
        self.assertFalse(client.isConnected)

        await self.startServer(None, protocol=Echo, port=port)
        await waitFor(lambda: len(established) == 2, SHORT)
        self.assertTrue(client.isConnected)
        client.send(b"two")
        await waitFor(lambda: echoes == [b"one", b"two"], SHORT)

    @asyncTest
    async def test_backoffDelaysGrow(self) -> None:
        server, port = await self.startServer(None, protocol=Echo)
        client = self.client(reconnect=True, initialDelay=0.02, factor=2.0, maxDelay=0.1, jitter=0)
        await within(client.connect("127.0.0.1", port))
        await within(server.stop())
        await waitFor(lambda: len(self.delays()) >= 5, SHORT)
        expected = [0.02, 0.04, 0.08, 0.1, 0.1]
        for delay, wanted in zip(self.delays(), expected, strict=False):
            self.assertAlmostEqual(delay, wanted)
        self.assertTrue(self.logged("Reconnecting to 127.0.0.1", "failed", "refused"))
        await within(client.disconnect())

    def test_jitter(self) -> None:
        """
        Jitter adds up to C{jitter} times the delay, and varies.
        """
        clock = Clock()
        client = Client(
            reactor=clock, reconnect=True, initialDelay=1.0, factor=2.0, maxDelay=100.0, jitter=0.5
        )
        client._random.seed(7)
        client._target = ("127.0.0.1", 1, None)
        delays = []
        for _ in range(6):
            client._scheduleRetry()
            call = client._retryCall
            assert call is not None
            delays.append(call.getTime() - clock.seconds())
            call.cancel()
        for n, delay in enumerate(delays):
            base = 2.0**n
            self.assertTrue(base <= delay <= base * 1.5, (n, delay))
        self.assertNotEqual([d / 2.0**n for n, d in enumerate(delays)], [1.0] * 6)

    @asyncTest
    async def test_rejectedCertificateOnReconnectStops(self) -> None:
        """
        The server restarts with another CA and rejects the certificate it
        accepted before: the client tries once, gets the rejection, and stops
        reconnecting, with onClosed told why.
        """
        c = certificates()
        server, port = await self.startServer(serverTLS())
        established: list[object] = []
        closed: list[Failure] = []
        client = self.client(
            reconnect=True,
            initialDelay=0.05,
            maxDelay=0.5,
            jitter=0,
            onEstablished=established.append,
            onClosed=closed.append,
        )
        await within(client.connect("localhost", port, tls=clientTLS()))
        await within(server.stop())

        strict = CountingServer(Echo)
        self.addCleanup(lambda: within(strict.stop(), 30))
        await within(strict.listen(port, "127.0.0.1", tls=serverTLS(ca=c.path("other-ca.pem"))))

        def rejected() -> list[Failure]:
            return [f for f in closed if f.check(ClientCertificateRejected)]

        await waitFor(rejected, SHORT, what="the client's onClosed with ClientCertificateRejected")
        self.assertIn("unknown ca", str(rejected()[0].value))
        self.assertEqual(strict.accepted, 1)
        self.assertEqual(len(established), 1)
        self.assertEqual(strict.clientIds(), [])
        self.assertFalse(client.isConnected)
        self.assertIsNone(client._retryCall)
        self.assertTrue(self.logged("Stopped reconnecting", "unknown ca"))
        # Stopped means stopped, not stuck: a new connect() is allowed (and
        # rejected the same way).
        await within(
            self.assertFailure(
                client.connect("localhost", port, tls=clientTLS()), ClientCertificateRejected
            )
        )
        self.assertEqual(strict.accepted, 2)

    def test_rejectionAfterReadyStops(self) -> None:
        """
        A rejection can arrive after the client became ready (a server that
        sends no session ticket, past the grace period): it ends the
        reconnecting just the same, while an ordinary loss does not.
        """
        closed: list[Failure] = []
        clock = Clock()
        client = Client(
            reactor=clock, reconnect=True, initialDelay=0.5, jitter=0, onClosed=closed.append
        )
        alert = SSL.Error([("SSL routines", "", "tlsv1 alert unknown ca")])
        for reason, retries in ((ConnectionLost(), True), (alert, False)):
            client._target = ("localhost", 1, clientTLS())
            attempt = _Attempt(client, object())
            attempt.connectedAt = clock.seconds()
            client._connectionClosed(attempt, Failure(reason))
            self.assertEqual(client._retryCall is not None, retries, reason)
            if client._retryCall is not None:
                client._retryCall.cancel()
                client._retryCall = None
        self.assertTrue(closed[0].check(ConnectionLost))
        self.assertTrue(closed[1].check(ClientCertificateRejected))
        self.assertIsNone(client._target)

    @asyncTest
    async def test_disconnectStopsReconnecting(self) -> None:
        server, port = await self.startServer(None, protocol=Echo)
        client = self.client(reconnect=True, initialDelay=0.02, jitter=0)
        await within(client.connect("127.0.0.1", port))
        await within(server.stop())
        await waitFor(lambda: len(self.delays()) >= 2, SHORT)
        await within(client.disconnect())
        self.assertIsNone(client._retryCall)
        self.assertFalse(client.isConnected)


class StreamModeTests(ClientTestCase):
    """
    C{stream=True}: the client sends and receives raw bytes, no framing.
    """

    async def roundTrip(self, tls: bool) -> None:
        server = Server(stream=True, onMessage=lambda i, data: server.send(i, data))
        self.addCleanup(lambda: within(server.stop(), 30))
        listening = await within(server.listen(0, "127.0.0.1", tls=serverTLS() if tls else None))
        chunks: list[bytes] = []
        client = self.client(stream=True, onMessage=chunks.append)
        protocol = await within(
            client.connect("localhost", listening.getHost().port, tls=clientTLS() if tls else None)
        )
        self.assertIsInstance(protocol, StreamProtocol)
        data = b"no\nframing\x00here\n" * 100
        self.assertTrue(client.send(data))
        await waitFor(lambda: len(b"".join(chunks)) >= len(data), SHORT)
        self.assertEqual(b"".join(chunks), data)

    @asyncTest
    async def test_rawBytes(self) -> None:
        await self.roundTrip(tls=False)

    @asyncTest
    async def test_rawBytesTLS(self) -> None:
        await self.roundTrip(tls=True)


class EndpointChoiceTests(SynchronousTestCase):
    """
    An IP address is connected to directly; only a name goes through name
    resolution (Twisted's L{HostnameEndpoint}, which tries every address of
    the name and reports a refusal only at its next attempt tick).
    """

    def connect(self, host: str) -> tuple[MemoryReactorClock, Deferred[Any]]:
        clock = MemoryReactorClock()
        client = Client(reactor=clock)
        return clock, client.connect(host, 9)

    def test_ipv4AddressRefusedAtOnce(self) -> None:
        """
        A refused connection to an IPv4 address fails C{connect()} at once,
        with code 50, without the clock moving.
        """
        clock, connecting = self.connect("127.0.0.1")
        self.assertEqual([c[:2] for c in clock.tcpClients], [("127.0.0.1", 9)])
        factory = clock.tcpClients[0][2]
        factory.clientConnectionFailed(clock.connectors[0], Failure(ConnectionRefusedError()))
        error = self.failureResultOf(connecting, ConnectError).value
        self.assertEqual(error.code, 50)
        self.assertIn("refused", str(error))
        # Only the client's own connect timer was there, and it is gone.
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_ipv6Address(self) -> None:
        """
        An IPv6 address is connected to directly too.
        """
        clock, connecting = self.connect("::1")
        self.assertEqual([c[:2] for c in clock.tcpClients], [("::1", 9)])
        connecting.cancel()
        self.failureResultOf(connecting, CancelledError)
        self.assertEqual(clock.connectors[0].stoppedConnecting, True)
