"""
Tests of L{tcpsc.testing.MemoryNetwork}, and through it, deterministic
tests of the reactor services (retry delays to the second, refusals,
stops) that real sockets could only show with waits.

The example test of the README, C{examples/test_inmemory.py}, runs here too.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from examples.test_inmemory import GreeterTests, GreeterTLSTests
from tcpsc import (
    Client,
    ConnectError,
    KeepConnectedService,
    ListenError,
    MessageProtocol,
    Server,
    ServerService,
)
from tcpsc.testing import MemoryNetwork
from tests.test_tls import Echo, clientTLS, serverTLS

__all__ = ["GreeterTLSTests", "GreeterTests"]


class Raw(Protocol):
    """
    A plain Twisted protocol: keeps what it receives and how it ended.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost = reason


class Pinger(MessageProtocol):
    """
    Answers every message with a message: two of them never stop.
    """

    def connectionReady(self) -> None:
        self.sendMessage(b"ping")

    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(message)


class MemoryNetworkTests(SynchronousTestCase):
    """
    L{MemoryNetwork}: ports, connections, refusals, time.
    """

    def setUp(self) -> None:
        self.network = MemoryNetwork()

    def client(self, **kwargs: object) -> Client:
        return Client(reactor=self.network.reactor, **kwargs)  # type: ignore[arg-type]

    def test_refusedWhenNothingListens(self) -> None:
        """
        A connection to a port nobody listens on is refused, as on loopback.
        """
        connected = self.client().connect("127.0.0.1", 8081)
        self.assertNoResult(connected)
        self.network.flush()
        failure = self.failureResultOf(connected, ConnectError)
        self.assertIn("refused", str(failure.value))

    def test_interfaces(self) -> None:
        """
        A port on one address takes connections to that address only; one
        on all IPv4 addresses takes any IPv4 address, not IPv6.
        """
        Server(reactor=self.network.reactor).listen(8081, interface="127.0.0.1")
        Server(reactor=self.network.reactor).listen(8082)
        attempts = {
            ("127.0.0.1", 8081): True,
            ("127.0.0.2", 8081): False,
            ("127.0.0.2", 8082): True,
            ("::1", 8082): False,
        }
        results = {}
        for host, port in attempts:
            d = self.client().connect(host, port)
            self.network.flush()
            results[host, port] = bool(self.successResultOf(d.addErrback(lambda f: None)))
        self.assertEqual(results, attempts)

    def test_portZeroAndInUse(self) -> None:
        """
        Port 0 picks a free port; a port in use is refused with tcpsc's
        L{ListenError}, as a real one.
        """
        server = Server(reactor=self.network.reactor)
        port = self.successResultOf(server.listen(0))
        number = port.getHost().port
        self.assertGreater(number, 0)
        failure = self.failureResultOf(
            Server(reactor=self.network.reactor).listen(number), ListenError
        )
        self.assertIn("in use", str(failure.value))
        self.successResultOf(server.stop())
        self.assertEqual(self.network.listeningPorts(), [])
        self.successResultOf(Server(reactor=self.network.reactor).listen(number))

    def test_addresses(self) -> None:
        """
        The server sees the client's address on the connected address.
        """
        server = Server(Echo, reactor=self.network.reactor)
        server.listen(8081)
        d = self.client().connect("127.0.0.1", 8081)
        self.network.flush()
        self.successResultOf(d)
        (clientId,) = server.clientIds()
        host, port = server.clientAddress(clientId)
        self.assertEqual(host, "127.0.0.1")
        self.assertNotEqual(port, 8081)

    def test_hostNames(self) -> None:
        """
        C{localhost}, and names added to L{MemoryNetwork.hosts}, resolve;
        others fail as an unknown name does.
        """
        Server(Echo, reactor=self.network.reactor).listen(8081)
        self.network.hosts["server.test"] = "127.0.0.1"
        for name in ("localhost", "server.test"):
            d = self.client().connect(name, 8081)
            self.network.flush()
            self.successResultOf(d)
        d = self.client().connect("nowhere.test", 8081)
        self.network.flush()
        self.failureResultOf(d, ConnectError)

    def test_rawProtocol(self) -> None:
        """
        Any Twisted client on the network's reactor connects too: here a
        raw protocol through an endpoint, sending a message in two pieces.
        """
        Server(Echo, reactor=self.network.reactor).listen(8081)
        raw = Raw()
        d = connectProtocol(TCP4ClientEndpoint(self.network.reactor, "127.0.0.1", 8081), raw)
        self.network.flush()
        self.successResultOf(d)
        assert raw.transport is not None
        raw.transport.write(b"hel")
        self.network.flush()
        raw.transport.write(b"lo\n")
        self.network.flush()
        self.assertEqual(raw.received, b"hello\n")

    def test_hostnameEndpoint(self) -> None:
        """
        Twisted's L{HostnameEndpoint} resolves through the network's names.
        """
        Server(Echo, reactor=self.network.reactor).listen(8081)
        raw = Raw()
        d = connectProtocol(HostnameEndpoint(self.network.reactor, "localhost", 8081), raw)
        self.network.flush()
        self.successResultOf(d)

    def test_connectionLimitRefusal(self) -> None:
        """
        A server's refusal (its connection limit) closes the connection at
        once: the raw peer sees it closed.
        """
        server = Server(Echo, maxConnections=1, reactor=self.network.reactor)
        server.listen(8081)
        first, second = Raw(), Raw()
        for raw in (first, second):
            connectProtocol(TCP4ClientEndpoint(self.network.reactor, "127.0.0.1", 8081), raw)
        with capturedLogs() as events:
            self.network.flush()
        self.assertIsNone(first.lost)
        self.assertIsNotNone(second.lost)
        self.assertTrue(any(e.get("reason") == "maxConnections" for e in events))
        self.assertEqual(len(self.network.pumps), 1)

    def test_timeWithoutWaiting(self) -> None:
        """
        L{MemoryNetwork.advance} moves the clock: a handshake timeout of 10
        s fires at 10 s, not before, for a client that never speaks TLS.
        """
        server = Server(Echo, handshakeTimeout=10, reactor=self.network.reactor)
        server.listen(8443, tls=serverTLS())
        raw = Raw()
        connectProtocol(TCP4ClientEndpoint(self.network.reactor, "127.0.0.1", 8443), raw)
        self.network.flush()
        with capturedLogs():
            self.network.advance(9.9)
            self.assertIsNone(raw.lost)
            self.network.advance(0.1)
        self.assertIsNotNone(raw.lost)
        self.assertEqual(server.openConnections(), 0)

    def test_tls(self) -> None:
        """
        TLS 1.3 with client certificates, over memory.
        """
        server = Server(Echo, reactor=self.network.reactor)
        server.listen(8443, tls=serverTLS())
        received: list[bytes] = []
        client = self.client(onMessage=received.append)
        d = client.connect("localhost", 8443, tls=clientTLS())
        self.network.flush()
        self.successResultOf(d)
        client.send(b"secret")
        self.network.flush()
        self.assertEqual(received, [b"secret"])
        (clientId,) = server.clientIds()
        self.assertEqual(server.clientSubjectPart(clientId, "CN"), "client")

    def test_endlessTraffic(self) -> None:
        """
        Two peers that answer each other forever make L{flush} fail instead
        of hanging the test.
        """
        Server(Pinger, reactor=self.network.reactor).listen(8081)
        self.client(protocol=Pinger).connect("127.0.0.1", 8081)
        with self.assertRaises(AssertionError) as raised:
            self.network.flush()
        self.assertIn("still move", str(raised.exception))


class ServerServiceMemoryTests(SynchronousTestCase):
    """
    L{ServerService}, deterministically.
    """

    def test_stopWaitsForTheFlush(self) -> None:
        """
        C{stopService}'s Deferred fires only once the last output reached a
        slow peer and the connection closed.
        """
        network = MemoryNetwork()
        server = Server(Echo, reactor=network.reactor)
        service = ServerService(server, [8081, "tcp:8082"])
        service.privilegedStartService()
        service.startService()
        self.assertEqual(
            sorted(p.getHost().port for p in self.successResultOf(service.whenListening())),
            [8081, 8082],
        )
        raw = Raw()
        connectProtocol(TCP4ClientEndpoint(network.reactor, "127.0.0.1", 8082), raw)
        network.flush()
        self.assertEqual(server.broadcast(b"last words"), 1)
        stopped = service.stopService()
        self.assertIsInstance(stopped, Deferred)
        self.assertNoResult(stopped)
        self.assertEqual(raw.received, b"")
        network.flush()
        self.successResultOf(stopped)
        self.assertEqual(raw.received, b"last words\n")
        self.assertIsNotNone(raw.lost)
        self.assertEqual(network.listeningPorts(), [])


class KeepConnectedMemoryTests(SynchronousTestCase):
    """
    L{KeepConnectedService}, deterministically: the exact delays of the
    client's policy.
    """

    def setUp(self) -> None:
        self.network = MemoryNetwork()
        self.established: list[object] = []
        self.client = Client(
            reactor=self.network.reactor,
            initialDelay=1.0,
            factor=2.0,
            maxDelay=4.0,
            jitter=0.0,
            onEstablished=self.established.append,
        )
        self.service = KeepConnectedService(self.client, "127.0.0.1", 8081)

    def test_backoff(self) -> None:
        """
        Refused attempts are retried after 1, 2, 4 and then 4 s (the
        client's initialDelay, factor and maxDelay, no jitter); once the
        server listens, the next attempt connects.
        """
        with capturedLogs() as events:
            self.service.startService()
            self.network.flush()
            for _ in range(15):
                self.network.advance(1)
            delays = [e["delay"] for e in events if "trying again" in e["log_format"]]
            self.assertEqual(delays, [1.0, 2.0, 4.0, 4.0, 4.0, 4.0])
            Server(Echo, reactor=self.network.reactor).listen(8081)
            self.network.advance(3.9)
            self.assertEqual(self.established, [])
            self.network.advance(0.1)
        self.assertEqual(len(self.established), 1)
        self.assertEqual(self.network.reactor.seconds(), 19.0)
        stopped = self.service.stopService()
        self.network.flush()
        self.successResultOf(stopped)
        self.assertEqual(self.network.reactor.getDelayedCalls(), [])

    def test_stopCancelsTheNextAttempt(self) -> None:
        """
        Stopped while waiting to retry: nothing more is tried.
        """
        with capturedLogs():
            self.service.startService()
            self.network.flush()
        self.assertEqual(len(self.network.reactor.getDelayedCalls()), 1)
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.network.reactor.getDelayedCalls(), [])
        self.network.advance(100)
        self.assertEqual(self.network._pending, [])
