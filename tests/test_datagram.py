"""
Tests for L{tcpsc.DatagramServer}, L{tcpsc.DatagramClient} and
L{tcpsc.DatagramPeer}: the framing of messages in datagrams, the bounds,
peer ids, expiry and the bounded peer table, the counts of what is lost,
and real sockets on 127.0.0.1 and ::1.

The unit tests drive the server's UDP protocol through a test transport
(L{_FakeUDPPort}, which records what is written and can be made to fail as
a full socket buffer does) on a L{Clock}; the integration tests use real
UDP sockets on loopback, with plain C{socket} peers that are not tcpsc.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpsc import (
    DEFAULT_MAX_DATAGRAM,
    DatagramClient,
    DatagramPeer,
    DatagramServer,
    ServerError,
    Settings,
)
from tcpsc._datagram import MAX_DATAGRAM_IPV4, MAX_DATAGRAM_IPV6, DatagramFraming

from ._helpers import asyncTest, waitFor, within


class _FakeUDPPort:
    """
    A test transport for a UDP protocol: records each datagram written, with
    its address; C{fail} makes the next writes raise an C{OSError} with
    that error number, as a socket does.
    """

    def __init__(self, protocol: Any, port: int, interface: str, maxPacketSize: int) -> None:
        self.protocol = protocol
        self.port = port or 40000
        self.interface = interface
        self.maxPacketSize = maxPacketSize
        self.written: list[tuple[bytes, Any]] = []
        self.fail: int | None = None
        self.listening = True

    def write(self, datagram: bytes, addr: Any = None) -> None:
        if self.fail is not None:
            raise OSError(self.fail, "simulated")
        self.written.append((datagram, addr))

    def getHost(self) -> Any:
        if ":" in self.interface:
            return IPv6Address("UDP", self.interface, self.port)
        return IPv4Address("UDP", self.interface or "0.0.0.0", self.port)

    def stopListening(self) -> None:
        self.listening = False
        self.protocol.doStop()


class _UDPClock(Clock):
    """
    A L{Clock} that can listen for datagrams through L{_FakeUDPPort}s.
    """

    def __init__(self) -> None:
        super().__init__()
        self.udpPorts: list[_FakeUDPPort] = []

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> _FakeUDPPort:
        fake = _FakeUDPPort(protocol, port, interface, maxPacketSize)
        self.udpPorts.append(fake)
        protocol.makeConnection(fake)
        return fake


def _listening(
    **kwargs: Any,
) -> tuple[DatagramServer, _UDPClock, _FakeUDPPort, list[tuple[int, bytes]]]:
    """
    A server on a L{_UDPClock}, listening, with its messages recorded
    (unless a protocol or onMessage is given).
    """
    clock = _UDPClock()
    received: list[tuple[int, bytes]] = []
    if "protocol" not in kwargs and "onMessage" not in kwargs:
        kwargs["onMessage"] = lambda peerId, message: received.append((peerId, message))
    server = DatagramServer(reactor=clock, **kwargs)
    server.listen(9000, "127.0.0.1")
    return server, clock, clock.udpPorts[-1], received


def _receive(port: _FakeUDPPort, datagram: bytes, address: tuple[str, int]) -> None:
    port.protocol.datagramReceived(datagram, address)


A = ("127.0.0.1", 5001)
B = ("127.0.0.1", 5002)
C = ("127.0.0.1", 5003)


class FramingTests(SynchronousTestCase):
    """
    L{DatagramFraming}: messages in datagrams, and what cannot be sent.
    """

    def test_oneMessagePerDatagram(self) -> None:
        """
        Without a delimiter a datagram is one message, whatever it holds,
        an empty one too; C{messageAppend} ends the datagram sent.
        """
        framing = DatagramFraming()
        self.assertEqual(framing.messages(b"a\nb"), [b"a\nb"])
        self.assertEqual(framing.messages(b""), [b""])
        self.assertEqual(framing.frame(b"a\nb"), b"a\nb")
        self.assertEqual(DatagramFraming(messageAppend=b"!").frame("é"), "é!".encode())

    def test_delimited(self) -> None:
        """
        With a delimiter a datagram holds messages; the datagram's end ends
        the last one whether a delimiter does or not; an empty datagram
        holds none.
        """
        framing = DatagramFraming(delimiter=b"\n")
        self.assertEqual(framing.messages(b"a\nb\n"), [b"a", b"b"])
        self.assertEqual(framing.messages(b"a\nb"), [b"a", b"b"])
        self.assertEqual(framing.messages(b"a\n\nb\n"), [b"a", b"", b"b"])
        self.assertEqual(framing.messages(b"\n"), [b""])
        self.assertEqual(framing.messages(b""), [])
        self.assertEqual(framing.frame(b"a"), b"a\n")

    def test_frameRefused(self) -> None:
        """
        A message whose datagram (message, append and delimiter) would be
        longer than the bound, or that holds the delimiter or forms one
        with what follows it, has no frame.
        """
        framing = DatagramFraming(delimiter=b"\r\n", maxMessageLength=5, messageAppend=b"!")
        self.assertEqual(framing.frame(b"ab"), b"ab!\r\n")
        self.assertIsNone(framing.frame(b"abc"))
        self.assertIsNone(framing.frame(b"a\r\n"))
        self.assertEqual(DatagramFraming(maxMessageLength=3).frame(b"abc"), b"abc")
        self.assertIsNone(DatagramFraming(maxMessageLength=3).frame(b"abcd"))
        dashes = DatagramFraming(delimiter=b"--")
        self.assertIsNone(dashes.frame(b"a-"))

    def test_bounds(self) -> None:
        """
        The bound is an int from 1 to the largest IPv6 datagram; a larger
        one is refused naming it, and over IPv4 the largest IPv4 datagram.
        """
        self.assertEqual(DEFAULT_MAX_DATAGRAM, 1472)
        self.assertEqual(DatagramFraming(maxMessageLength=MAX_DATAGRAM_IPV6).receiveSize, 65528)
        for bad in (0, -1, MAX_DATAGRAM_IPV6 + 1, None, 1.5, True):
            with self.assertRaises(ValueError) as raised:
                DatagramFraming(maxMessageLength=bad)  # type: ignore[arg-type]
            self.assertIn("maxMessageLength", str(raised.exception))
        framing = DatagramFraming(maxMessageLength=MAX_DATAGRAM_IPV4 + 1)
        framing.checkFamily(ipv6=True)
        with self.assertRaises(ValueError) as raised:
            framing.checkFamily(ipv6=False)
        self.assertIn("65,508", str(raised.exception))
        with self.assertRaises(ValueError):
            DatagramFraming(delimiter=b"")
        with self.assertRaises(ValueError):
            DatagramFraming(delimiter=b"\n", messageAppend=b"x\n")


class ServerPeerTests(SynchronousTestCase):
    """
    The peers of a L{DatagramServer}: ids, addresses, sending, and the
    framing of what they send and receive.
    """

    def test_idsPerAddress(self) -> None:
        """
        Each new source address gets the next id; datagrams from a known
        address keep its id; ids and addresses can be looked up.
        """
        server, _, port, received = _listening()
        _receive(port, b"one", A)
        _receive(port, b"two", B)
        _receive(port, b"three", A)
        self.assertEqual(received, [(1, b"one"), (2, b"two"), (1, b"three")])
        self.assertEqual(server.clientIds(), [1, 2])
        self.assertEqual(server.clientAddress(2), B)
        self.assertEqual(server.peer(1).address, A)
        self.assertEqual(server.peer(1).peerId, 1)
        with self.assertRaises(ServerError) as raised:
            server.clientAddress(3)
        self.assertIn("no peer with id 3", str(raised.exception))
        with self.assertRaises(ServerError):
            server.peer("x")  # type: ignore[arg-type]

    def test_sendAndSubclass(self) -> None:
        """
        A subclass of L{DatagramPeer} gets C{peerReady} before the first
        message, and replies through C{sendMessage}; C{send} by id reaches
        the peer's address.
        """
        events: list[object] = []

        class Echo(DatagramPeer):
            def peerReady(self) -> None:
                events.append(("ready", self.peerId, self.address))

            def messageReceived(self, message: bytes) -> None:
                events.append(message)
                self.sendMessage(message.upper())

        server, _, port, _ = _listening(protocol=Echo)
        _receive(port, b"hi", A)
        self.assertEqual(events, [("ready", 1, A), b"hi"])
        self.assertEqual(port.written, [(b"HI", A)])
        self.assertTrue(server.send(1, "é"))
        self.assertEqual(port.written[-1], ("é".encode(), A))
        self.assertFalse(server.send(2, b"nobody"))

    def test_sendTooLong(self) -> None:
        """
        A message whose datagram would be longer than the bound is refused
        (C{False}) and nothing is sent; with a delimiter, the delimiter
        counts.
        """
        server, _, port, _ = _listening(maxMessageLength=4, delimiter=b"\n")
        _receive(port, b"x", A)
        self.assertTrue(server.send(1, b"abc"))
        self.assertFalse(server.send(1, b"abcd"))
        self.assertFalse(server.send(1, b"a\nb"))
        self.assertEqual(port.written, [(b"abc\n", A)])

    def test_receivedTooLong(self) -> None:
        """
        A datagram longer than the bound is dropped whole and counted,
        never delivered cut; the port reads with room for one byte more
        than the bound, so that it sees one.  A datagram from an unknown
        address dropped so makes no peer.
        """
        tooLong: list[int] = []

        class Peer(DatagramPeer):
            def messageTooLong(self, length: int) -> None:
                tooLong.append(length)

        received: list[tuple[int, bytes]] = []
        server, _, port, _ = _listening(
            protocol=Peer, maxMessageLength=8, delimiter=b"\n", onMessage=None
        )
        server.onMessage = lambda peerId, message: received.append((peerId, message))
        self.assertEqual(port.maxPacketSize, 9)
        _receive(port, b"123456789", A)
        self.assertEqual(server.clientIds(), [])
        _receive(port, b"12345678", A)
        _receive(port, b"a\nb\nc\nd\ne", A)
        self.assertEqual(tooLong, [9])
        self.assertEqual(received, [(1, b"12345678")])
        self.assertEqual(server.eventCounts["datagramTooLong"], 2)
        self.flushLoggedErrors()

    def test_delimitedRepliesTogether(self) -> None:
        """
        With a delimiter, the replies to the messages of one datagram go
        back in as few datagrams as the bound allows, in order.
        """

        class Echo(DatagramPeer):
            def messageReceived(self, message: bytes) -> None:
                self.sendMessage(message)

        _, _, port, _ = _listening(protocol=Echo, delimiter=b"\n", maxMessageLength=8)
        _receive(port, b"a\nbb\nccc", A)
        self.assertEqual(port.written, [(b"a\nbb\n", A), (b"ccc\n", A)])

    def test_sendBufferFull(self) -> None:
        """
        A send that finds the socket's buffer full (ENOBUFS, EAGAIN)
        returns C{False} and is counted; another error is counted apart.
        """
        server, _, port, _ = _listening()
        _receive(port, b"x", A)
        port.fail = errno.ENOBUFS
        self.assertFalse(server.send(1, b"a"))
        port.fail = errno.EAGAIN
        self.assertFalse(server.send(1, b"b"))
        self.assertEqual(server.broadcast(b"c"), 0)
        port.fail = errno.EHOSTUNREACH
        self.assertFalse(server.send(1, b"d"))
        counts = server.eventCounts
        self.assertEqual(counts["sendBufferFull"], 3)
        self.assertEqual(counts["sendFailed"], 1)
        port.fail = None
        self.assertTrue(server.send(1, b"e"))
        self.assertEqual(port.written, [(b"e", A)])


class PeerTableTests(SynchronousTestCase):
    """
    Peers are forgotten when idle and, when the table is full, the one
    heard from least recently first.
    """

    def test_expiry(self) -> None:
        """
        A peer not heard from within C{peerIdleTimeout} is forgotten: its
        C{peerExpired} and C{onPeerExpired} are called, it is counted, its
        id is never given again, and a peer heard from meanwhile is kept.
        """
        expired: list[int] = []
        server, clock, port, _ = _listening(peerIdleTimeout=10.0, onPeerExpired=expired.append)
        _receive(port, b"a", A)
        clock.advance(5)
        _receive(port, b"b", B)
        clock.advance(4)
        _receive(port, b"a again", A)
        clock.advance(5.5)
        self.assertEqual(expired, [])
        clock.advance(0.5)
        self.assertEqual(expired, [2])
        self.assertEqual(server.clientIds(), [1])
        self.assertFalse(server.send(2, b"gone"))
        clock.advance(9)
        self.assertEqual(expired, [2, 1])
        self.assertEqual(server.eventCounts["peerExpired"], 2)
        _receive(port, b"back", A)
        self.assertEqual(server.clientIds(), [3])
        self.assertIn(clock.seconds() + 10, [call.getTime() for call in clock.getDelayedCalls()])

    def test_tableFull(self) -> None:
        """
        When the table holds C{maxPeers}, a new address makes the server
        forget the peer heard from least recently, counted apart from
        expiry.
        """
        expired: list[int] = []
        server, _, port, _ = _listening(maxPeers=2, onPeerExpired=expired.append)
        _receive(port, b"a", A)
        _receive(port, b"b", B)
        _receive(port, b"a", A)
        _receive(port, b"c", C)
        self.assertEqual(expired, [2])
        self.assertEqual(server.clientIds(), [1, 3])
        self.assertEqual(server.eventCounts["peerForgotten"], 1)

    def test_broadcastWindow(self) -> None:
        """
        A broadcast reaches the peers heard from within C{broadcastWindow},
        most recent first, leaving out the excluded.
        """
        server, clock, port, _ = _listening(broadcastWindow=10.0)
        _receive(port, b"a", A)
        clock.advance(6)
        _receive(port, b"b", B)
        _receive(port, b"c", C)
        clock.advance(5)
        self.assertEqual(server.broadcast(b"all", exclude=3), 1)
        self.assertEqual(port.written, [(b"all", B)])
        self.assertEqual(server.clientIds(), [1, 2, 3])

    def test_stopForgetsEveryone(self) -> None:
        """
        C{stop} stops listening and forgets every peer, calling their
        hooks, without counting them as expired; no timer is left.
        """
        expired: list[int] = []
        server, clock, port, _ = _listening(onPeerExpired=expired.append)
        _receive(port, b"a", A)
        _receive(port, b"b", B)
        server.stop()
        self.assertFalse(port.listening)
        self.assertEqual(expired, [1, 2])
        self.assertEqual(server.clientIds(), [])
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertNotIn("peerExpired", server.eventCounts)


class SettingsTests(SynchronousTestCase):
    """
    The datagram server's settings are fields of L{Settings}.
    """

    def test_keywordsOrSettings(self) -> None:
        server = DatagramServer(peerIdleTimeout=5.0, maxPeers=7, reactor=Clock())
        self.assertEqual(server.settings, Settings(peerIdleTimeout=5.0, maxPeers=7))
        server = DatagramServer(settings=Settings(maxPeers=3), reactor=Clock())
        self.assertEqual(server.maxPeers, 3)
        with self.assertRaises(TypeError):
            DatagramServer(maxPeers=4, settings=Settings(maxPeers=3), reactor=Clock())
        with self.assertRaises(ValueError):
            DatagramServer(maxPeers=0, reactor=Clock())
        with self.assertRaises(ValueError):
            DatagramServer(settings=Settings(maxMessageLength=None), reactor=Clock())

    def test_overridesMakeASubclass(self) -> None:
        """
        Framing given to the server that differs from the protocol's own
        is what its peers have.
        """
        seen: list[object] = []

        class Peer(DatagramPeer):
            delimiter = b"|"

            def peerReady(self) -> None:
                seen.append((self.delimiter, self.maxMessageLength, isinstance(self, Peer)))

        _, _, port, _ = _listening(protocol=Peer, maxMessageLength=100)
        _receive(port, b"a", A)
        self.assertEqual(seen, [(b"|", 100, True)])

    def test_onMessageWithOverride(self) -> None:
        class Peer(DatagramPeer):
            def messageReceived(self, message: bytes) -> None:
                pass

        with self.assertRaises(ValueError):
            DatagramServer(Peer, onMessage=print, reactor=Clock())
        with self.assertRaises(TypeError):
            DatagramServer(object, reactor=Clock())  # type: ignore[arg-type]


def _hasIPv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class LoopbackTests(TestCase):
    """
    Real UDP sockets on loopback.
    """

    async def _echoServer(self, interface: str, **kwargs: Any) -> tuple[DatagramServer, int]:
        server: DatagramServer

        def echo(peerId: int, message: bytes) -> None:
            server.send(peerId, message)

        server = DatagramServer(onMessage=echo, **kwargs)
        port = await server.listen(0, interface)
        self.addCleanup(server.stop)
        return server, port.getHost().port

    async def _client(self, host: str, port: int, **kwargs: Any) -> tuple[DatagramClient, list]:
        received: list[bytes] = []
        client = DatagramClient(onMessage=received.append, **kwargs)
        await within(client.connect(host, port))
        self.addCleanup(client.disconnect)
        return client, received

    @asyncTest
    async def test_echoIPv4(self) -> None:
        """
        A client and a server on 127.0.0.1 exchange messages; the server
        knows the client by its socket's address.
        """
        server, port = await self._echoServer("127.0.0.1")
        client, received = await self._client("127.0.0.1", port)
        self.assertTrue(client.send(b"hello"))
        await waitFor(lambda: received == [b"hello"], what="the echo")
        self.assertEqual(server.clientIds(), [1])
        assert client._port is not None
        self.assertEqual(server.clientAddress(1), ("127.0.0.1", client._port.getHost().port))

    @asyncTest
    async def test_echoIPv6(self) -> None:
        if not _hasIPv6():
            raise self.skipTest("no IPv6 loopback here")
        server, port = await self._echoServer("::1", delimiter=b"\n")
        client, received = await self._client("::1", port, delimiter=b"\n")
        self.assertTrue(client.send(b"a"))
        self.assertTrue(client.send(b"b"))
        await waitFor(lambda: received == [b"a", b"b"], what="both echoes")
        self.assertEqual(server.clientAddress(1)[0], "::1")
