"""
L{tcpsc._registry.LocalRegistry} on its own, without a server or a socket:
protocols on L{StringTransport}s, the reactor a L{Clock}.  What a server
relies on: ids that are positive and never reused, counts for the limits,
only established connections reachable, send and broadcast (with
C{exclude}) written to the right transports, addresses and certificates.
The same registry inside L{tcpsc.Server} is tested over real sockets by
C{tests.test_server} and the guarantee tests.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyClass, verifyObject

from tcpsc import Client, MessageProtocol, Server, ServerError, StreamProtocol
from tcpsc._events import EventSummary
from tcpsc._registry import IConnectionRegistry, LocalRegistry
from tcpsc.testing import MemoryNetwork


def makeRegistry(clock: Clock | None = None) -> LocalRegistry:
    clock = Clock() if clock is None else clock
    log = Logger()
    return LocalRegistry(clock, EventSummary(log, clock), log)


def connected(
    protocol: MessageProtocol | StreamProtocol | None = None,
    host: str = "192.0.2.1",
    port: int = 40000,
) -> tuple[MessageProtocol | StreamProtocol, StringTransport]:
    """
    A protocol connected to a L{StringTransport} whose peer is C{host}.
    """
    protocol = MessageProtocol() if protocol is None else protocol
    peer = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    return protocol, transport


class InterfaceTests(SynchronousTestCase):
    def test_provides(self) -> None:
        """
        L{LocalRegistry} provides every method and attribute of
        L{IConnectionRegistry}, with their signatures.
        """
        self.assertTrue(verifyClass(IConnectionRegistry, LocalRegistry))
        self.assertTrue(verifyObject(IConnectionRegistry, makeRegistry()))


class IdTests(SynchronousTestCase):
    def test_positiveAscendingNeverReused(self) -> None:
        """
        Ids count up from 1, are set on the connection, and an id whose
        connection is gone is not given again.
        """
        registry = makeRegistry()
        first, _ = connected()
        second, _ = connected()
        self.assertEqual(registry.register(first), 1)
        self.assertEqual(first.connectionId, 1)
        registry.unregister(1)
        self.assertEqual(registry.register(second), 2)
        self.assertEqual(second.connectionId, 2)
        self.assertEqual(registry.registered, 2)

    def test_unregisterUnknown(self) -> None:
        """
        Unregistering an id that is not registered changes nothing.
        """
        registry = makeRegistry()
        protocol, _ = connected()
        registry.register(protocol, "192.0.2.1")
        self.assertIsNone(registry.unregister(7))
        self.assertEqual((registry.openCount(), registry.peerCount("192.0.2.1")), (1, 1))
        self.assertIs(registry.unregister(1), protocol)
        self.assertIsNone(registry.unregister(1))


class CountTests(SynchronousTestCase):
    def test_counts(self) -> None:
        """
        Every registered connection counts, established or not; per peer
        only those registered with a host; a host's count falls back to 0.
        """
        registry = makeRegistry()
        ids = [
            registry.register(connected()[0], host)
            for host in ("192.0.2.1", "192.0.2.1", "2001:db8::1", None)
        ]
        registry.establish(ids[0])
        self.assertEqual(registry.openCount(), 4)
        self.assertEqual(registry.peerCount("192.0.2.1"), 2)
        self.assertEqual(registry.peerCount("2001:db8::1"), 1)
        self.assertEqual(sorted(registry.connections()), ids)
        for connectionId in ids:
            registry.unregister(connectionId)
        self.assertEqual(registry.openCount(), 0)
        self.assertEqual(registry.peerCount("192.0.2.1"), 0)
        self.assertEqual(registry._perPeer, {})


class ReachTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.registry = makeRegistry()
        self.transports: dict[int, StringTransport] = {}
        for host in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
            protocol, transport = connected(host=host)
            self.transports[self.registry.register(protocol, host)] = transport

    def test_onlyEstablished(self) -> None:
        """
        A registered connection is counted but not reachable until it is
        established, and again not once withdrawn (while it is closing).
        """
        registry = self.registry
        self.assertEqual(registry.ids(), [])
        self.assertIsNone(registry.lookup(1))
        self.assertFalse(registry.send(1, b"x"))
        self.assertEqual(registry.broadcast(b"x"), 0)
        with self.assertRaises(ServerError):
            registry.address(1)
        registry.establish(2)
        registry.establish(1)
        self.assertEqual(registry.ids(), [1, 2])
        self.assertIs(registry.lookup(1), registry.connections()[1])
        registry.withdraw(1)
        self.assertEqual(registry.ids(), [2])
        self.assertFalse(registry.send(1, b"x"))
        self.assertEqual(registry.openCount(), 3)

    def test_send(self) -> None:
        """
        C{send} frames the message for the one connection; C{False}, with
        nothing written, for an unknown id, an id that is not an int, or a
        message the connection refuses (it contains the delimiter).
        """
        registry = self.registry
        for connectionId in (1, 2, 3):
            registry.establish(connectionId)
        self.assertTrue(registry.send(2, b"hello"))
        self.assertTrue(registry.send(2, "é"))
        self.assertFalse(registry.send(2, b"two\nlines"))
        self.assertFalse(registry.send(9, b"hello"))
        self.assertFalse(registry.send([2], b"hello"))  # type: ignore[arg-type]
        self.assertEqual(
            [t.value() for t in self.transports.values()], [b"", "hello\né\n".encode(), b""]
        )

    def test_sendStream(self) -> None:
        """
        To a L{StreamProtocol} connection, C{send} writes the bytes as they
        are.
        """
        registry = makeRegistry()
        protocol, transport = connected(StreamProtocol())
        registry.establish(registry.register(protocol))
        self.assertTrue(registry.send(1, b"no\nframing"))
        self.assertEqual(transport.value(), b"no\nframing")

    def test_broadcastExclude(self) -> None:
        """
        C{broadcast} writes the frame to every established connection but
        those excluded (one id or several), and says to how many.
        """
        registry = self.registry
        for connectionId in (1, 2, 3):
            registry.establish(connectionId)
        self.assertEqual(registry.broadcast(b"all"), 3)
        self.assertEqual(registry.broadcast(b"not 2", exclude=2), 2)
        self.assertEqual(registry.broadcast("not 1 or 3", exclude={1, 3}), 1)
        self.assertEqual(registry.broadcast(b"too\nmany"), 0)
        self.assertEqual(
            [t.value() for t in self.transports.values()],
            [b"all\nnot 2\n", b"all\nnot 1 or 3\n", b"all\nnot 2\n"],
        )

    def test_broadcastAfterUnregister(self) -> None:
        """
        A connection that ended gets no more broadcasts, and the others
        still do.
        """
        registry = self.registry
        for connectionId in (1, 2, 3):
            registry.establish(connectionId)
        registry.broadcast(b"a")
        registry.unregister(2)
        self.assertEqual(registry.broadcast(b"b"), 2)
        self.assertEqual(
            [t.value() for t in self.transports.values()], [b"a\nb\n", b"a\n", b"a\nb\n"]
        )

    def test_addressAndCertificate(self) -> None:
        """
        The peer address of an established connection; no certificate on a
        plain transport; L{ServerError} naming an unknown id.
        """
        registry = self.registry
        registry.establish(3)
        self.assertEqual(registry.address(3), ("192.0.2.3", 40000))
        self.assertIsNone(registry.certificate(3))
        with self.assertRaises(ServerError) as raised:
            registry.certificate(4)
        self.assertEqual(str(raised.exception), "no connected client with id 4")


class ServerWithdrawTests(SynchronousTestCase):
    """
    The one place a server withdraws an established connection: its
    C{createSink} callback failed.
    """

    def test_createSinkFails(self) -> None:
        """
        A connection whose sink could not be made is closed, never listed
        nor reachable, and no callback fires for it; the server serves the
        next one.
        """
        network = MemoryNetwork()
        events: list[tuple[str, int]] = []
        sinks: list[object] = []

        def createSink(clientId: int) -> object:
            if clientId == 1:
                raise RuntimeError("no room for the sink")
            sinks.append(clientId)
            return _Sink()

        server = Server(
            stream=True,
            createSink=createSink,
            reactor=network.reactor,
            onEstablished=lambda i: events.append(("established", i)),
            onClosed=lambda i: events.append(("closed", i)),
        )
        server.listen(8081)
        first = Client(stream=True, reactor=network.reactor)
        connected = first.connect("127.0.0.1", 8081)
        network.flush()
        self.successResultOf(connected)
        first.send(b"x")
        network.flush()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual((server.clientIds(), server.openConnections(), events), ([], 0, []))
        self.assertFalse(server.send(1, b"late"))
        second = Client(stream=True, reactor=network.reactor)
        connected = second.connect("127.0.0.1", 8081)
        network.flush()
        self.successResultOf(connected)
        self.assertEqual((server.clientIds(), events, sinks), ([2], [("established", 2)], [2]))


class _Sink:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass
