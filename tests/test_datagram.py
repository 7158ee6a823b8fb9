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
import select
import socket
import tracemalloc
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHostnameResolver, IHostResolution, ISystemHandle
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tcpsc import (
    DEFAULT_MAX_DATAGRAM,
    ConnectError,
    DatagramClient,
    DatagramPeer,
    DatagramServer,
    ListenError,
    PortError,
    ServerError,
    Settings,
    StartError,
    _compat,
)
from tcpsc._datagram import MAX_DATAGRAM_IPV4, MAX_DATAGRAM_IPV6, DatagramFraming, _SturdyPort

from ._helpers import asyncTest, waitFor, within


@implementer(ISystemHandle)
@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class _NamesResolver:
    """
    A host name resolver with a fixed table of names, as a hosts file: it
    answers at once, with every address of the name.
    """

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        resolutionReceiver.resolutionBegan(_Resolution(hostName))
        for address in self.names.get(hostName, []):
            kind = IPv6Address if ":" in address else IPv4Address
            resolutionReceiver.addressResolved(kind("UDP", address, portNumber))
        resolutionReceiver.resolutionComplete()
        return resolutionReceiver


class _FakeUDPPort:
    """
    A test transport for a UDP protocol: records each datagram written, with
    its address; C{fail} makes the next writes raise an C{OSError} with
    that error number, as a socket does.  It is its own handle: its
    C{sendto} is its C{write}, as a socket's is the port's.
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

    def sendto(self, datagram: bytes, addr: Any) -> None:
        self.write(datagram, addr)

    def getHandle(self) -> _FakeUDPPort:
        return self

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

    def test_severalPorts(self) -> None:
        """
        One address heard on two ports is two peers, each answered through
        its own port; after C{stop}, a server listening again goes on
        counting ids.
        """
        server, clock, first, _ = _listening()
        server.listen(9001, "127.0.0.1")
        second = clock.udpPorts[-1]
        _receive(first, b"a", A)
        _receive(second, b"b", A)
        self.assertEqual(server.clientIds(), [1, 2])
        self.assertEqual(len(server.ports), 2)
        server.send(2, b"to the second")
        self.assertEqual((first.written, second.written), ([], [(b"to the second", A)]))
        server.stop()
        self.assertEqual(server.ports, [])
        _receive(first, b"late", B)
        self.assertEqual(server.clientIds(), [])
        server.listen(9000, "127.0.0.1")
        _receive(clock.udpPorts[-1], b"c", A)
        self.assertEqual(server.clientIds(), [3])

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

    def test_broadcastAfterReplies(self) -> None:
        """
        A broadcast made while the replies to a datagram are being put
        together sends those replies first: nothing overtakes them.
        """
        server: DatagramServer

        class Chat(DatagramPeer):
            def messageReceived(self, message: bytes) -> None:
                self.sendMessage(b"ack " + message)
                server.broadcast(message)

        server, _, port, _ = _listening(protocol=Chat, delimiter=b"\n")
        _receive(port, b"x", B)
        del port.written[:]
        _receive(port, b"a\nb", A)
        self.assertEqual(
            port.written,
            [
                (b"ack a\n", A),
                (b"a\n", A),
                (b"a\n", B),
                (b"ack b\n", A),
                (b"b\n", A),
                (b"b\n", B),
            ],
        )

    def test_lossLogged(self) -> None:
        """
        Datagrams dropped for their length are logged as the TCP server's
        refusals are: the first in full, naming the peer; the next ones
        counted, and summarised once with their count.
        """
        logged: list[dict[str, Any]] = []
        self.patch(DatagramServer, "log", Logger(observer=logged.append))
        server, clock, port, _ = _listening(maxMessageLength=4)
        self.assertIn("Listening for datagrams on 127.0.0.1:9000", formatEvent(logged.pop()))
        for _ in range(3):
            _receive(port, b"12345", A)
        self.assertEqual(len(logged), 1)
        self.assertEqual(
            formatEvent(logged[0]),
            "Dropped a datagram of more than 4 bytes from 127.0.0.1:5001: longer than "
            "maxMessageLength",
        )
        clock.advance(5)
        self.assertEqual(len(logged), 2)
        self.assertEqual(
            formatEvent(logged[1]),
            "Dropped 2 more datagrams in the last 5 s: longer than maxMessageLength",
        )
        self.assertEqual(server.eventCounts, {"datagramTooLong": 3})
        server.stop()

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

    def test_noIdleTimeout(self) -> None:
        """
        With C{peerIdleTimeout=None} peers are kept however long they are
        quiet, and no timer runs for them.
        """
        server, clock, port, _ = _listening(peerIdleTimeout=None)
        _receive(port, b"a", A)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10**6)
        self.assertEqual(server.clientIds(), [1])

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


class MemoryTests(SynchronousTestCase):
    """
    The memory a peer costs is bounded, and a flood of new source
    addresses does not grow the table past C{maxPeers} peers' worth.
    """

    def test_perPeer(self) -> None:
        """
        Measured with C{tracemalloc}, with the longest IPv6 addresses (made
        within the measure, as a socket's read makes them): at most 512
        bytes a peer once the table is full, 640 after a flood four times
        the table (the dictionaries keep room for what was deleted), 768 at
        the peak of a resize (README's "UDP and multicast" gives the
        figures measured).
        """
        maxPeers = 4096
        server, _, port, _ = _listening(maxPeers=maxPeers, onMessage=lambda *a: None)
        receive = port.protocol.datagramReceived

        def address(i: int) -> tuple[str, int]:
            return (f"2001:db8:1234:5678:9abc:def0:{i >> 16:04x}:{i & 0xFFFF:04x}", 40000 + i)

        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for i in range(maxPeers):
                receive(b"x", address(i))
            full = tracemalloc.get_traced_memory()[0] - base
            for i in range(maxPeers, 5 * maxPeers):
                receive(b"x", address(i))
            flooded, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual(len(server.clientIds()), maxPeers)
        self.assertEqual(server.eventCounts["peerForgotten"], 4 * maxPeers)
        self.assertLessEqual(full / maxPeers, 512)
        self.assertLessEqual((flooded - base) / maxPeers, 640)
        self.assertLessEqual((peak - base) / maxPeers, 768)
        server.stop()


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

    @asyncTest
    async def test_boundOnTheWire(self) -> None:
        """
        A datagram of exactly the bound arrives whole from a plain socket;
        one byte more, or far more, is dropped whole and counted, and the
        datagrams after it are delivered.
        """
        received: list[bytes] = []
        server = DatagramServer(
            maxMessageLength=100, onMessage=lambda peerId, message: received.append(message)
        )
        port = (await server.listen(0, "127.0.0.1")).getHost().port
        self.addCleanup(server.stop)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            for datagram in (b"a" * 101, b"b" * 100, b"c" * 5000, b"end"):
                peer.sendto(datagram, ("127.0.0.1", port))
            await waitFor(lambda: b"end" in received, what="the last datagram")
        self.assertEqual(received, [b"b" * 100, b"end"])
        self.assertEqual(server.eventCounts["datagramTooLong"], 2)

    async def _largest(self, interface: str, bound: int) -> None:
        received: list[bytes] = []
        server = DatagramServer(
            maxMessageLength=bound, onMessage=lambda peerId, message: received.append(message)
        )
        port = (await server.listen(0, interface)).getHost().port
        self.addCleanup(server.stop)
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"x" * bound, (interface, port))
            with self.assertRaises(OSError) as raised:
                peer.sendto(b"x" * (bound + 1), (interface, port))
            self.assertEqual(raised.exception.errno, errno.EMSGSIZE)
            await waitFor(lambda: received, what="the largest datagram")
        self.assertEqual([len(message) for message in received], [bound])

    @asyncTest
    async def test_largestIPv4(self) -> None:
        """
        The largest IPv4 datagram, 65,507 bytes, arrives whole with that
        bound (not cut to Twisted's default buffer of 8192); a larger bound
        on an IPv4 port is refused naming it.
        """
        await self._largest("127.0.0.1", MAX_DATAGRAM_IPV4)
        server = DatagramServer(maxMessageLength=MAX_DATAGRAM_IPV4 + 1)
        with self.assertRaises(ValueError) as raised:
            await server.listen(0, "127.0.0.1")
        self.assertIn("maxMessageLength 65,508", str(raised.exception))

    @asyncTest
    async def test_largestIPv6(self) -> None:
        """
        The largest IPv6 datagram, 65,527 bytes, arrives whole.
        """
        if not _hasIPv6():
            raise self.skipTest("no IPv6 loopback here")
        await self._largest("::1", MAX_DATAGRAM_IPV6)

    @asyncTest
    async def test_floodOfSourceAddresses(self) -> None:
        """
        Datagrams from many distinct source addresses (sockets bound to
        127.0.0.2, 127.0.0.3, ...: all of 127/8 is loopback) never make the
        table hold more than C{maxPeers}: the peers heard from least
        recently are forgotten first, and ids are never reused.
        """
        maxPeers = 40
        seen: list[int] = []
        largest = 0
        server: DatagramServer

        def onPeer(peerId: int) -> None:
            nonlocal largest
            seen.append(peerId)
            largest = max(largest, len(server.clientIds()))

        server = DatagramServer(maxPeers=maxPeers, onPeer=onPeer)
        port = (await server.listen(0, "127.0.0.1")).getHost().port
        self.addCleanup(server.stop)
        sources: list[tuple[str, int]] = []
        count = 120
        batch = 20
        for start in range(0, count, batch):
            for n in range(start, start + batch):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
                    peer.bind((f"127.0.{n // 200}.{n % 200 + 2}", 0))
                    sources.append(peer.getsockname())
                    peer.sendto(b"hello", ("127.0.0.1", port))
            expected = start + batch
            await waitFor(lambda n=expected: len(seen) == n, what="this batch's peers")  # type: ignore[misc]
        self.assertEqual(seen, list(range(1, count + 1)))
        self.assertEqual(largest, maxPeers)
        kept = server.clientIds()
        self.assertEqual(kept, list(range(count - maxPeers + 1, count + 1)))
        self.assertEqual([server.clientAddress(i) for i in kept], sources[-maxPeers:])
        self.assertEqual(server.eventCounts["peerForgotten"], count - maxPeers)

    @asyncTest
    async def test_dualStack(self) -> None:
        """
        A server on C{"::"} hears IPv4 peers too, by their IPv4-mapped
        address, and answers them.
        """
        if not _hasIPv6():
            raise self.skipTest("no IPv6 loopback here")
        server, port = await self._echoServer("::")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.settimeout(10)
            peer.sendto(b"v4", ("127.0.0.1", port))
            await waitFor(lambda: server.clientIds(), what="the peer")
            self.assertEqual(server.clientAddress(1), ("::ffff:127.0.0.1", peer.getsockname()[1]))
            self.assertEqual(peer.recv(100), b"v4")

    @asyncTest
    async def test_peerGone(self) -> None:
        """
        A reply to a peer whose socket is gone (the system answers it with
        an ICMP port unreachable) does not disturb the server: it goes on
        serving the others.
        """
        server, port = await self._echoServer("127.0.0.1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
            gone.sendto(b"bye", ("127.0.0.1", port))
            await waitFor(lambda: server.clientIds() == [1], what="the first peer")
        for _ in range(3):
            self.assertTrue(server.send(1, b"anyone?"))
        client, received = await self._client("127.0.0.1", port)
        self.assertTrue(client.send(b"still there"))
        await waitFor(lambda: received == [b"still there"], what="the echo to the second peer")
        self.assertEqual(len(server.ports), 1)

    @asyncTest
    async def test_hookRaises(self) -> None:
        """
        An exception raised by the application is logged, and the server
        goes on with the next datagram.
        """

        class Fragile(DatagramPeer):
            def messageReceived(self, message: bytes) -> None:
                if message == b"boom":
                    raise RuntimeError("boom")
                self.sendMessage(message)

        server = DatagramServer(Fragile)
        port = (await server.listen(0, "127.0.0.1")).getHost().port
        self.addCleanup(server.stop)
        client, received = await self._client("127.0.0.1", port)
        client.send(b"boom")
        client.send(b"after")
        await waitFor(lambda: received == [b"after"], what="the reply after the exception")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @asyncTest
    async def test_listenErrors(self) -> None:
        """
        A port in use, a port out of range and an interface that is not an
        address fail with the start errors of L{tcpsc.Server}, saying why.
        """
        server = DatagramServer()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            busy = taken.getsockname()[1]
            with self.assertRaises(ListenError) as raised:
                await server.listen(busy, "127.0.0.1")
            self.assertEqual(raised.exception.code, 42)
            self.assertIn(f"port {busy} on 127.0.0.1", str(raised.exception))
            self.assertIn("in use", str(raised.exception))
        for bad in (-1, 65536, "9000", True):
            with self.assertRaises(PortError) as portError:
                await server.listen(bad)  # type: ignore[arg-type]
            self.assertEqual(portError.exception.code, 10)
        with self.assertRaises(ListenError) as raised:
            await server.listen(0, "localhost")
        self.assertIn("not an IPv4 or IPv6 address", str(raised.exception))
        self.assertEqual(server.ports, [])


class ClientTests(TestCase):
    """
    L{DatagramClient}: connecting, names, refusals.
    """

    def _client(self, **kwargs: Any) -> tuple[DatagramClient, list[bytes]]:
        received: list[bytes] = []
        client = DatagramClient(onMessage=received.append, **kwargs)
        self.addCleanup(client.disconnect)
        return client, received

    async def _echo(self, interface: str = "127.0.0.1") -> int:
        server: DatagramServer
        server = DatagramServer(onMessage=lambda peerId, message: server.send(peerId, message))
        self.addCleanup(server.stop)
        return (await server.listen(0, interface)).getHost().port

    @asyncTest
    async def test_connectByName(self) -> None:
        """
        C{localhost} resolves, to its IPv4 address first (where a server
        listens unless told otherwise).
        """
        port = await self._echo()
        client, received = self._client()
        peer = await within(client.connect("localhost", port))
        self.assertEqual(peer.address, ("127.0.0.1", port))
        self.assertEqual(peer.peerId, 1)
        self.assertTrue(client.send("hi"))
        await waitFor(lambda: received == [b"hi"], what="the echo")

    @asyncTest
    async def test_connectByNameIPv6(self) -> None:
        """
        With an IPv6 interface, a name resolves to its IPv6 address, even
        when it has an IPv4 one too.  The name is served by a resolver that
        knows it (installed on the reactor, as a system's hosts file would
        be): this machine's own C{localhost} may have no IPv6 address.
        """
        if not _hasIPv6():
            raise self.skipTest("no IPv6 loopback here")
        previous = reactor.installNameResolver(_NamesResolver({"both.test": ["127.0.0.1", "::1"]}))
        self.addCleanup(reactor.installNameResolver, previous)
        port = await self._echo("::1")
        client, received = self._client()
        peer = await within(client.connect("both.test", port, interface="::1"))
        self.assertEqual(peer.address, ("::1", port))
        self.assertTrue(client.send("hi"))
        await waitFor(lambda: received == [b"hi"], what="the echo")

    @asyncTest
    async def test_disconnectWhileResolving(self) -> None:
        """
        C{disconnect} while a name is being resolved gives the attempt up:
        it fails, saying so, and leaves no socket.
        """
        port = await self._echo()
        client, _ = self._client()
        connecting = client.connect("localhost", port)
        await within(client.disconnect())
        with self.assertRaises(ConnectError) as raised:
            await within(connecting)
        self.assertIn("given up: disconnect() was called", str(raised.exception))
        self.assertIsNone(client.peer)
        self.assertIsNone(client._port)
        peer = await within(client.connect("localhost", port))
        self.assertEqual(peer.peerId, 1)

    @asyncTest
    async def test_unresolvable(self) -> None:
        client, _ = self._client()
        with self.assertRaises(ConnectError) as raised:
            await within(client.connect("nonexistent.invalid", 9000), 30)
        self.assertIn("cannot resolve the host name 'nonexistent.invalid'", str(raised.exception))
        self.assertEqual(raised.exception.code, 50)
        self.assertIsNone(client.peer)
        self.assertFalse(client.send(b"x"))

    @asyncTest
    async def test_badArguments(self) -> None:
        """
        A port outside 1-65535 is a L{PortError} (10); an interface that is
        not an address a L{ConnectError}; a second connect a L{StartError}
        (-1); an IPv4 server with a bound above the IPv4 datagram a
        C{ValueError}.
        """
        client, _ = self._client()
        for bad in (0, 65536, -1, "9000", None):
            with self.assertRaises(PortError) as raised:
                await client.connect("127.0.0.1", bad)  # type: ignore[arg-type]
            self.assertEqual(raised.exception.code, 10)
        with self.assertRaises(ConnectError):
            await client.connect("127.0.0.1", 9000, interface="eth0")
        port = await self._echo()
        await within(client.connect("127.0.0.1", port))
        with self.assertRaises(StartError) as started:
            await client.connect("127.0.0.1", port)
        self.assertEqual(started.exception.code, -1)
        large, _ = self._client(maxMessageLength=MAX_DATAGRAM_IPV4 + 1)
        with self.assertRaises(ValueError):
            await large.connect("127.0.0.1", port)

    @asyncTest
    async def test_refused(self) -> None:
        """
        Sending to a port where nothing listens: the system's ICMP port
        unreachable is counted as C{"refused"} and given to the peer's
        C{connectionRefused}; the client stays connected.  A send made
        while such a refusal is pending is not made, and returns C{False}.
        Once a server listens there, datagrams arrive.
        """
        refusals: list[int] = []

        class Peer(DatagramPeer):
            def connectionRefused(self) -> None:
                refusals.append(self.peerId)

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        received: list[bytes] = []
        client = DatagramClient(Peer)
        self.addCleanup(client.disconnect)
        await within(client.connect("127.0.0.1", port))
        if _compat.PRIVATE:
            self.assertIsInstance(client._port, _SturdyPort)
        self.assertTrue(client.send(b"one"))
        await waitFor(lambda: client.eventCounts.get("refused") == 1, what="the refusal")
        self.assertEqual(refusals, [1])
        # Another refusal, left pending on the socket (the reactor does not
        # run while this waits, bounded, for the socket to report it).
        self.assertTrue(client.send(b"two"))
        assert client._port is not None
        readable, _, _ = select.select([client._port.fileno()], [], [], 10)
        self.assertTrue(readable, "the second refusal was not reported within 10 s")
        self.assertFalse(client.send(b"three"))
        self.assertEqual(client.eventCounts["refused"], 2)
        self.assertEqual(refusals, [1, 1])
        server = DatagramServer(onMessage=lambda peerId, message: received.append(message))
        self.addCleanup(server.stop)
        await server.listen(port, "127.0.0.1")
        self.assertTrue(client.send(b"four"))
        await waitFor(lambda: received == [b"four"], what="the datagram after the server started")

    @asyncTest
    async def test_refusedPublicPath(self) -> None:
        """
        Without the private path, Twisted's own UDP port is used, which an
        epoll reactor closes when the system reports a refusal: the client
        says so (counted as C{"refused"}), its peer is told and forgotten,
        and sends return C{False}.
        """
        if type(reactor).__name__ != "EPollReactor":
            raise self.skipTest("the reactor is not epoll: it does not close the port")
        self.patch(_compat, "PRIVATE", False)
        calls: list[str] = []

        class Peer(DatagramPeer):
            def connectionRefused(self) -> None:
                calls.append("refused")

            def peerExpired(self) -> None:
                calls.append("expired")

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        client = DatagramClient(Peer)
        self.addCleanup(client.disconnect)
        await within(client.connect("127.0.0.1", port))
        self.assertNotIsInstance(client._port, _SturdyPort)
        self.assertTrue(client.send(b"one"))
        await waitFor(lambda: client.peer is None, what="the client disconnected")
        self.assertEqual(calls, ["refused", "expired"])
        self.assertEqual(client.eventCounts["refused"], 1)
        self.assertFalse(client.send(b"two"))

    @asyncTest
    async def test_disconnect(self) -> None:
        """
        C{disconnect} closes the socket and forgets the peer (its
        C{peerExpired} is called); the client can connect again, and its
        peer gets the next id.
        """
        expired: list[int] = []

        class Peer(DatagramPeer):
            def peerExpired(self) -> None:
                expired.append(self.peerId)

        port = await self._echo()
        client = DatagramClient(Peer)
        peer = await within(client.connect("127.0.0.1", port))
        await within(client.disconnect())
        self.assertEqual(expired, [1])
        self.assertIsNone(client.peer)
        self.assertFalse(client.send(b"x"))
        self.assertFalse(peer.sendMessage(b"x"))
        again = await within(client.connect("127.0.0.1", port))
        self.assertEqual(again.peerId, 2)
        await within(client.disconnect())
