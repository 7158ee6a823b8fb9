"""
The PROXY protocol: a server's C{haproxy:} port takes the client's address
from the header a load balancer sends first, everywhere it uses one (log
lines, C{clientAddress}, the limit per peer address, the TLS allow-list's
refusals), and refuses, and logs once per kind, a connection without a
valid header.

Three levels: the parser's outcomes on header bytes built by hand; the
server's side of a connection over L{StringTransport} with a L{Clock}
(timeouts, limits, a header split over many reads); and real sockets on
loopback: raw peers that send headers themselves, a real C{haproxy}
(L{tests._haproxy}) with C{send-proxy} and C{send-proxy-v2} in front of a
server in this process and of the C{twistd} daemon, plain and TLS, and the
configuration the README shows, run with two daemons.
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
import threading
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.endpoints import TCP6ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tcpsc import MessageProtocol, Server
from tcpsc._events import KINDS
from tcpsc._proxy import (
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyHeaderError,
    parseProxyHeader,
    proxiedDescription,
)
from tcpsc._server import _ListeningFactory
from tcpsc.blocking import TcpServer
from tests._haproxy import HAProxy, freePort, requireHAProxy
from tests._helpers import RawPeer, certificates
from tests._readme import blocks
from tests._redis import RedisServer
from tests.test_daemon import Daemon, _until
from tests.test_guarantees_support import (
    Echo,
    GuaranteeTestCase,
    asyncTest,
    serverTLS,
    waitFor,
    within,
)

ROOT = Path(__file__).resolve().parent.parent
#: Bound of every blocking socket operation.
TIMEOUT = 30.0
#: The load balancer's address in the tests over StringTransport.
BALANCER = IPv4Address("TCP", "10.1.1.1", 40000)


def v1(source: str, destination: str, sourcePort: int, destinationPort: int) -> bytes:
    """
    A version 1 header, as the specification spells it.
    """
    protocol = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {protocol} {source} {destination} {sourcePort} {destinationPort}\r\n".encode()


def v2(
    source: str | None,
    destination: str | None = None,
    sourcePort: int = 0,
    destinationPort: int = 0,
    *,
    command: int = 1,
    family: int | None = None,
    transport: int = 1,
    extra: bytes = b"",
) -> bytes:
    """
    A version 2 header, byte by byte: the signature, version 2 and the
    command, the family and transport, the length, the addresses and ports
    (packed), and C{extra} (TLVs, say).
    """
    block = b""
    if source is not None:
        assert destination is not None
        kind = socket.AF_INET6 if ":" in source else socket.AF_INET
        if family is None:
            family = 2 if kind == socket.AF_INET6 else 1
        block = (
            socket.inet_pton(kind, source)
            + socket.inet_pton(kind, destination)
            + struct.pack("!HH", sourcePort, destinationPort)
        )
    elif family is None:
        family = 0
    block += extra
    return (
        V2_SIGNATURE
        + bytes([0x20 | command, (family << 4) | transport])
        + struct.pack("!H", len(block))
        + block
    )


class ParserTests(SynchronousTestCase):
    """
    L{parseProxyHeader}: what each header gives, and every fault named.
    """

    def test_v1(self) -> None:
        header = v1("203.0.113.5", "10.0.0.1", 4000, 8081)
        parsed = parseProxyHeader(header + b"hello\n")
        assert parsed is not None
        self.assertEqual(parsed.version, 1)
        self.assertEqual(parsed.source, IPv4Address("TCP", "203.0.113.5", 4000))
        self.assertEqual(parsed.destination, IPv4Address("TCP", "10.0.0.1", 8081))
        self.assertEqual(parsed.length, len(header))

    def test_v1IPv6(self) -> None:
        parsed = parseProxyHeader(v1("2001:db8:0:0::7", "::1", 65535, 0))
        assert parsed is not None
        # The address as Python writes it (compressed), as a socket's is.
        self.assertEqual(parsed.source, IPv6Address("TCP", "2001:db8::7", 65535))
        self.assertEqual(parsed.destination, IPv6Address("TCP", "::1", 0))

    def test_v1Unknown(self) -> None:
        """
        C{UNKNOWN}: the connection's own addresses stand (a health check).
        """
        parsed = parseProxyHeader(b"PROXY UNKNOWN whatever follows\r\n")
        assert parsed is not None
        self.assertIsNone(parsed.source)
        self.assertIsNone(parsed.destination)

    def test_v2(self) -> None:
        header = v2("198.51.100.9", "10.0.0.1", 5555, 443)
        parsed = parseProxyHeader(header + b"\x16\x03\x01")
        assert parsed is not None
        self.assertEqual(parsed.version, 2)
        self.assertEqual(parsed.source, IPv4Address("TCP", "198.51.100.9", 5555))
        self.assertEqual(parsed.destination, IPv4Address("TCP", "10.0.0.1", 443))
        self.assertEqual(parsed.length, len(header))

    def test_v2IPv6WithTLVs(self) -> None:
        """
        TLVs after the addresses are skipped: the header ends where its
        length says.
        """
        header = v2("2001:db8::1", "2001:db8::2", 1, 2, extra=b"\x04\x00\x03abc")
        parsed = parseProxyHeader(header + b"x")
        assert parsed is not None
        self.assertEqual(parsed.source, IPv6Address("TCP", "2001:db8::1", 1))
        self.assertEqual(parsed.length, len(header))

    def test_v2LocalAndUnspec(self) -> None:
        """
        C{LOCAL} (the load balancer's health check), whatever its address
        block holds, and C{UNSPEC}: the connection's own addresses stand.
        """
        for header in (
            v2(None, command=0),
            v2("192.0.2.1", "192.0.2.2", 1, 2, command=0),
            v2(None),
        ):
            parsed = parseProxyHeader(header)
            assert parsed is not None
            self.assertIsNone(parsed.source)
            self.assertEqual(parsed.length, len(header))

    def test_incomplete(self) -> None:
        """
        Every proper start of a header asks for more bytes: a header split
        over any number of reads is read whole.
        """
        for header in (v1("192.0.2.1", "192.0.2.2", 1, 2), v2("::1", "::2", 3, 4)):
            for end in range(len(header)):
                self.assertIsNone(parseProxyHeader(header[:end]), (header, end))

    def assertFault(self, data: bytes, kind: str, words: str) -> None:
        with self.assertRaises(ProxyHeaderError) as raised:
            parseProxyHeader(data)
        self.assertEqual(raised.exception.kind, kind)
        self.assertIn(words, str(raised.exception))

    def test_notAHeader(self) -> None:
        self.assertFault(b"GET / HTTP/1.1\r\n", "not a PROXY header", "b'GET / HTTP/1.1\\r\\n'")
        self.assertFault(b"PROXX TCP4", "not a PROXY header", "PROXX")
        self.assertFault(b"\r\n\r\nX", "not a PROXY header", "first bytes")
        self.assertFault(
            b"\x16\x03\x01\x02\x00", "a TLS ClientHello instead of a PROXY header", "ClientHello"
        )

    def test_v1Faults(self) -> None:
        malformed = "malformed PROXY v1 line"
        self.assertFault(
            b"PROXY TCP4 " + b"1" * V1_MAX_LENGTH, "PROXY v1 line too long", "107 bytes"
        )
        self.assertFault(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", malformed, "CRLF")
        self.assertFault(b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", malformed, "TCP4, TCP6")
        self.assertFault(b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", malformed, "two ports")
        self.assertFault(b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n", malformed, "single spaces")
        self.assertFault(b"PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\n", malformed, "not TCP4")
        self.assertFault(b"PROXY TCP4 ::1 ::1 1 2\r\n", malformed, "not TCP4")
        self.assertFault(b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", malformed, "not TCP6")
        self.assertFault(b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", malformed, "0-65535")
        self.assertFault(b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n", malformed, "0-65535")
        self.assertFault(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 x\r\n", malformed, "0-65535")
        self.assertFault(b"PROXY TCP4 \xff.2.3.4 1.2.3.4 1 2\r\n", malformed, "not TCP4")

    def test_v2Faults(self) -> None:
        header = v2("192.0.2.1", "192.0.2.2", 1, 2)
        self.assertFault(
            header[:12] + b"\x10" + header[13:], "unsupported PROXY version", "version 1"
        )
        self.assertFault(
            header[:12] + b"\x22" + header[13:], "unknown PROXY v2 command", "command 2"
        )
        self.assertFault(v2(None, family=3), "unsupported PROXY v2 address family", "UNIX socket")
        self.assertFault(
            v2("192.0.2.1", "192.0.2.2", 1, 2, transport=2), "PROXY v2 not for a stream", "datagram"
        )
        self.assertFault(
            V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4,
            "PROXY v2 addresses missing",
            "too short",
        )
        self.assertFault(
            V2_SIGNATURE + b"\x21\x21\x00\x0c" + b"\x00" * 12,
            "PROXY v2 addresses missing",
            "IPv6",
        )

    def test_description(self) -> None:
        self.assertEqual(proxiedDescription("haproxy:tcp:8081"), "tcp:8081")
        self.assertEqual(
            proxiedDescription("haproxy:tcp6:0:interface=\\:\\:1"), "tcp6:0:interface=\\:\\:1"
        )
        self.assertIsNone(proxiedDescription("tcp:8081"))
        self.assertIsNone(proxiedDescription(8081))

    def test_eventKind(self) -> None:
        """
        The refusals have their summary, and their metric label.
        """
        from tcpsc._metrics import REFUSAL_REASONS

        self.assertIn("proxyHeader", KINDS)
        self.assertEqual(REFUSAL_REASONS["proxyHeader"], "proxy_header")


class Collect(MessageProtocol):
    """
    Keeps the messages it receives, and echoes them.
    """

    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(message)


class ReceiverTests(SynchronousTestCase):
    """
    A server's PROXY-protocol port, one connection at a time over
    L{StringTransport}, on a L{Clock}.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def server(self, **kwargs: Any) -> tuple[Server, _ListeningFactory]:
        server = Server(Collect, reactor=self.clock, **kwargs)
        return server, _ListeningFactory(server, None, proxy=True)

    def accept(
        self, listening: _ListeningFactory, peer: IPv4Address = BALANCER
    ) -> tuple[Any, StringTransport]:
        protocol = listening.buildProtocol(peer)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "10.0.0.1", 8081), peerAddress=peer
        )
        if protocol is not None:
            protocol.makeConnection(transport)
        return protocol, transport

    def test_headerOverManyReads(self) -> None:
        """
        A header split into single bytes, and a message in the read that
        ends it: the connection is established with the client's address,
        which C{clientAddress}, the log line and the transport give.
        """
        server, listening = self.server()
        established: list[int] = []
        server.onEstablished = established.append
        protocol, transport = self.accept(listening)
        data = v1("203.0.113.5", "10.0.0.1", 4000, 8081) + b"hello\n"
        with capturedLogs() as events:
            for byte in data[:-7]:
                protocol.dataReceived(bytes([byte]))
            self.assertEqual(established, [])
            self.assertEqual(server.openConnections(), 1)
            protocol.dataReceived(data[-7:])
        self.assertEqual(established, [1])
        self.assertEqual(server.clientAddress(1), ("203.0.113.5", 4000))
        self.assertEqual(transport.value(), b"hello\n")
        connection = server.connection(1)
        self.assertEqual(connection.transport.getPeer(), IPv4Address("TCP", "203.0.113.5", 4000))
        self.assertEqual(connection.transport.getHost(), IPv4Address("TCP", "10.0.0.1", 8081))
        lines = [formatEvent(e) for e in events]
        self.assertIn("Connection 1 from 203.0.113.5:4000 established", lines)

    def test_v2IPv6(self) -> None:
        server, listening = self.server()
        protocol, transport = self.accept(listening)
        protocol.dataReceived(v2("2001:db8::7", "2001:db8::1", 5000, 8081) + b"hi\n")
        self.assertEqual(server.clientAddress(1), ("2001:db8::7", 5000))
        self.assertEqual(transport.value(), b"hi\n")

    def test_local(self) -> None:
        """
        A v2 C{LOCAL} header (the load balancer's own connection): the
        connection is served with the load balancer's address, never one
        the header's address block claims.
        """
        server, listening = self.server()
        protocol, _ = self.accept(listening)
        protocol.dataReceived(v2("192.0.2.66", "192.0.2.2", 1, 2, command=0))
        self.assertEqual(server.clientAddress(1), (BALANCER.host, BALANCER.port))

    def test_healthChecksQuiet(self) -> None:
        """
        The load balancer's own connections (HAProxy's health checks: v2
        C{LOCAL}, and v1 naming the connection's own address) are served,
        their lines not logged, or with C{logEveryEvent} at debug level; a
        client's at info.
        """
        for logEveryEvent in (False, True):
            server, listening = self.server(logEveryEvent=logEveryEvent)
            levels = {}
            for name, header in (
                ("v2 LOCAL", v2(None, command=0)),
                ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n"),
                ("v1 own address", v1(BALANCER.host, "10.0.0.1", BALANCER.port, 8081)),
                ("client", v1(BALANCER.host, "10.0.0.1", BALANCER.port + 1, 8081)),
            ):
                with capturedLogs() as events:
                    protocol, transport = self.accept(listening)
                    protocol.dataReceived(header)
                    self.assertFalse(transport.disconnected, name)
                    self.assertEqual(len(server.clientIds()), 1)
                    transport.loseConnection()
                    protocol.connectionLost(Failure(ConnectionDone()))
                levels[name] = sorted({e["log_level"].name for e in events if "connectionId" in e})
            own = ["debug"] if logEveryEvent else []
            self.assertEqual(
                levels,
                {
                    "v2 LOCAL": own,
                    "v1 UNKNOWN": own,
                    "v1 own address": own,
                    "client": ["info"],
                },
            )
            self.assertEqual(server.openConnections(), 0)

    def refusals(self, events: list[dict[str, Any]]) -> list[str]:
        return [formatEvent(e) for e in events if e.get("reason") == "proxyHeader"]

    def test_garbage(self) -> None:
        """
        Bytes that are not a header: refused at once (aborted), one line
        naming the peer and why; the next ones of the same kind are
        counted and summarised, not logged each.
        """
        server, listening = self.server()
        with capturedLogs() as events:
            for _ in range(3):
                protocol, transport = self.accept(listening)
                protocol.dataReceived(b"GET / HTTP/1.1\r\n")
                self.assertTrue(transport.disconnected)
                self.assertEqual(transport.value(), b"")
        self.assertEqual(
            self.refusals(events),
            [
                "Refused the connection from 10.1.1.1:40000 on a PROXY-protocol port: its "
                "first bytes are not a PROXY protocol header: b'GET / HTTP/1.1\\r\\n'"
            ],
        )
        self.assertEqual(server.eventCounts["proxyHeader"], 3)
        self.assertEqual(server.openConnections(), 0)
        self.assertEqual(server.clientIds(), [])
        with capturedLogs() as events:
            self.clock.advance(5)
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "Refused 2 more connections in the last 5 s on PROXY-protocol ports: no valid "
                "PROXY header: not a PROXY header"
            ],
        )

    def test_silent(self) -> None:
        """
        A peer that sends nothing, or part of a header, is closed when
        C{firstByteTimeout} runs out, counted from the accept.
        """
        server, listening = self.server(firstByteTimeout=3)
        _, silentTransport = self.accept(listening)
        partial, partialTransport = self.accept(listening)
        partial.dataReceived(b"PROXY TCP4 192.0")
        self.clock.advance(2.9)
        self.assertFalse(silentTransport.disconnected)
        with capturedLogs() as events:
            self.clock.advance(0.1)
        self.assertTrue(silentTransport.disconnected)
        self.assertTrue(partialTransport.disconnected)
        self.assertEqual(
            self.refusals(events),
            [
                "Refused the connection from 10.1.1.1:40000 on a PROXY-protocol port: no "
                "complete PROXY protocol header within 3 s (nothing received)"
            ],
        )
        self.assertEqual(server.openConnections(), 0)

    def test_boundWithoutFirstByteTimeout(self) -> None:
        """
        With C{firstByteTimeout} off, the header still has 10 s: it comes
        from the load balancer, whatever the client does.
        """
        _, listening = self.server(firstByteTimeout=None)
        _, transport = self.accept(listening)
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)

    def test_firstByteTimeoutFromTheHeader(self) -> None:
        """
        The connection's own first-byte timeout starts once the header is
        read.
        """
        server, listening = self.server(firstByteTimeout=3)
        protocol, transport = self.accept(listening)
        self.clock.advance(2)
        protocol.dataReceived(v1("192.0.2.1", "192.0.2.2", 1, 2))
        self.clock.advance(2.9)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(server.clientIds(), [1])
        with capturedLogs() as events:
            self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertIn(
            "Closing connection 1 from 192.0.2.1:1: nothing received within 3 s (firstByteTimeout)",
            [formatEvent(e) for e in events],
        )

    def test_closedBeforeTheHeader(self) -> None:
        server, listening = self.server()
        protocol, _ = self.accept(listening)
        protocol.dataReceived(b"PROXY TCP4")
        with capturedLogs() as events:
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            self.refusals(events),
            [
                "Connection from 10.1.1.1:40000 on a PROXY-protocol port closed before it was "
                "established: it closed after 10 bytes of a PROXY protocol header: "
                "b'PROXY TCP4'"
            ],
        )
        self.assertEqual(server.openConnections(), 0)

    def test_maxConnectionsFromAccept(self) -> None:
        """
        A connection waiting for its header counts against
        C{maxConnections}: the next one is refused at the accept.
        """
        server, listening = self.server(maxConnections=2)
        first, _ = self.accept(listening)
        self.accept(listening)
        with capturedLogs() as events:
            refused = listening.buildProtocol(BALANCER)
        self.assertIsNone(refused)
        self.assertEqual(
            [e["reason"] for e in events if e.get("log_level") == LogLevel.warn],
            ["maxConnections"],
        )
        first.dataReceived(v1("192.0.2.1", "192.0.2.2", 1, 2))
        self.assertEqual(server.openConnections(), 2)
        self.assertIsNone(listening.buildProtocol(BALANCER))

    def test_perPeerOnTheClient(self) -> None:
        """
        C{maxConnectionsPerPeer} counts the clients' addresses from the
        headers, not the load balancer's, which all connections share.
        """
        server, listening = self.server(maxConnectionsPerPeer=2)
        transports = []
        with capturedLogs() as events:
            for port in (1, 2, 3):
                protocol, transport = self.accept(listening)
                protocol.dataReceived(v1("192.0.2.1", "10.0.0.1", port, 8081))
                transports.append(transport)
            other, otherTransport = self.accept(listening)
            other.dataReceived(v1("192.0.2.2", "10.0.0.1", 1, 8081))
        self.assertEqual(server.clientIds(), [1, 2, 3])
        self.assertEqual(
            [t.disconnected for t in transports] + [otherTransport.disconnected],
            [False, False, True, False],
        )
        refused = [e for e in events if e.get("reason") == "maxConnectionsPerPeer"]
        self.assertEqual(len(refused), 1)
        self.assertEqual(refused[0]["host"], "192.0.2.1")
        self.assertEqual(refused[0]["peer"], "192.0.2.1:3")

    def test_stopClosesThoseWaiting(self) -> None:
        server, listening = self.server()
        _, transport = self.accept(listening)
        with capturedLogs() as events:
            server.stop()
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.refusals(events), [])
        self.assertEqual(server.openConnections(), 0)


class ServerTests(GuaranteeTestCase):
    """
    A L{Server} listening on C{haproxy:tcp:0:interface=127.0.0.1}, and raw
    peers on loopback that send the headers themselves.
    """

    async def proxied(self, **kwargs: Any) -> tuple[Server, int]:
        server = Server(Echo, **kwargs)
        self.addCleanup(lambda: within(server.stop(), 30))
        listening = await within(server.listen("haproxy:tcp:0:interface=127.0.0.1"))
        return server, listening.getHost().port

    @asyncTest
    async def test_addresses(self) -> None:
        events = self.captureLogs()
        server, port = await self.proxied()
        first = await self.connectRaw(port)
        first.transport.write(v1("203.0.113.5", "127.0.0.1", 4000, port) + b"one\n")
        second = await self.connectRaw(port)
        second.transport.write(v2("2001:db8::7", "::1", 5000, port))
        second.transport.write(b"two\n")
        await waitFor(lambda: first.messages() == [b"one"] and second.messages() == [b"two"])
        self.assertEqual(server.clientAddress(1), ("203.0.113.5", 4000))
        self.assertEqual(server.clientAddress(2), ("2001:db8::7", 5000))
        lines = [formatEvent(e) for e in events]
        self.assertIn("Connection 1 from 203.0.113.5:4000 established", lines)
        self.assertIn("Connection 2 from [2001:db8::7]:5000 established", lines)
        self.assertTrue(
            any(
                re.fullmatch(r"Listening on 127.0.0.1:\d+ \(fragmented, PROXY protocol\)", line)
                for line in lines
            ),
            lines,
        )

    @asyncTest
    async def test_ipv6Port(self) -> None:
        """
        A PROXY-protocol port on ::1 (C{haproxy:tcp6:...}), the description
        escaped as the daemon's C{--port} takes it; a v1 header with IPv4
        addresses on it.
        """
        try:
            probe = socket.socket(socket.AF_INET6)
            probe.bind(("::1", 0))
            probe.close()
        except OSError as e:
            raise self.skipTest(f"no IPv6 loopback here: {e}") from None
        server = Server(Echo)
        self.addCleanup(lambda: within(server.stop(), 30))
        listening = await within(server.listen("haproxy:tcp6:0:interface=\\:\\:1"))
        port = listening.getHost().port
        peer = RawPeer()
        await within(connectProtocol(TCP6ClientEndpoint(reactor, "::1", port), peer))
        self.addCleanup(peer.transport.abortConnection)
        peer.transport.write(v1("192.0.2.44", "192.0.2.1", 3000, 8081) + b"six\n")
        await waitFor(lambda: peer.messages() == [b"six"])
        self.assertEqual(server.clientAddress(1), ("192.0.2.44", 3000))

    @asyncTest
    async def test_tlsHandshakeTimeoutAfterTheHeader(self) -> None:
        """
        On a TLS port the header comes first, in clear; the handshake
        timeout starts once it is read, and its line names the client.
        """
        events = self.captureLogs()
        server = Server(Echo, handshakeTimeout=0.5)
        self.addCleanup(lambda: within(server.stop(), 30))
        listening = await within(
            server.listen("haproxy:tcp:0:interface=127.0.0.1", tls=serverTLS())
        )
        peer = await self.connectRaw(listening.getHost().port)
        peer.transport.write(v2("198.51.100.20", "127.0.0.1", 6000, 443))
        await within(peer.lost)
        self.assertEqual(server.eventCounts.get("proxyHeader", 0), 0)
        timeouts = [
            e
            for e in events
            if e.get("log_namespace", "").startswith("tcpsc")
            and "handshake timeout" in str(e.get("why", ""))
        ]
        self.assertEqual([e["peer"] for e in timeouts], ["198.51.100.20:6000"], timeouts)

    @asyncTest
    async def test_hostilePeers(self) -> None:
        """
        Garbage, an over-long v1 line, a silent peer: each closed, the
        first two at once, the silent one by C{firstByteTimeout}; logged
        with the peer's own address; nothing reaches the application.
        """
        events = self.captureLogs()
        server, port = await self.proxied(firstByteTimeout=0.5)
        garbage = await self.connectRaw(port)
        garbage.transport.write(b"hello\n")
        long = await self.connectRaw(port)
        long.transport.write(b"PROXY TCP4 " + b"9" * 200 + b"\r\n")
        silent = await self.connectRaw(port)
        await within(garbage.lost)
        await within(long.lost)
        await within(silent.lost)
        self.assertEqual(server.clientIds(), [])
        self.assertEqual(server.eventCounts["proxyHeader"], 3)
        warned = {
            e["peer"]: e["why"] for e in self.warnings(events) if "proxyHeader" == e.get("reason")
        }
        self.assertIn("not a PROXY protocol header", warned[garbage.localAddress()])
        # Logged in full once per kind of fault: the other kinds too.
        self.assertIn("no line end within 107 bytes", warned[long.localAddress()])
        self.assertIn("within 0.5 s", warned[silent.localAddress()])
        self.assertEqual(bytes(garbage.received) + bytes(silent.received), b"")


class HAProxyServerTests(GuaranteeTestCase):
    """
    A real HAProxy (C{send-proxy}: v1, C{send-proxy-v2}: v2) in front of a
    L{Server} of this process; the clients connect to HAProxy from
    127.0.0.2 and 127.0.0.3, HAProxy to the server from 127.0.0.1.
    """

    def setUp(self) -> None:
        requireHAProxy()

    async def proxied(self, **kwargs: Any) -> tuple[Server, int]:
        server = Server(Echo, **kwargs)
        self.addCleanup(lambda: within(server.stop(), 30))
        listening = await within(server.listen("haproxy:tcp:0:interface=127.0.0.1"))
        return server, listening.getHost().port

    async def addresses(self, sendProxy: str) -> None:
        events = self.captureLogs()
        server, port = await self.proxied()
        balancer = HAProxy(self, [port], sendProxy).start()
        peers = [
            await self.connectRaw(balancer.port, bindAddress=(host, 0))
            for host in ("127.0.0.2", "127.0.0.3")
        ]
        for peer in peers:
            peer.transport.write(b"hello\n")
        await waitFor(lambda: all(peer.messages() == [b"hello"] for peer in peers))
        # The real client sockets' own addresses (getsockname).
        expected = sorted((p.transport.getHost().host, p.transport.getHost().port) for p in peers)
        self.assertEqual(sorted(server.clientAddress(i) for i in server.clientIds()), expected)
        lines = [formatEvent(e) for e in events]
        for host, port_ in expected:
            self.assertTrue(
                any(
                    re.fullmatch(rf"Connection \d from {host}:{port_} established", line)
                    for line in lines
                ),
                lines,
            )

    @asyncTest
    async def test_v1(self) -> None:
        await self.addresses("send-proxy")

    @asyncTest
    async def test_v2(self) -> None:
        await self.addresses("send-proxy-v2")

    @asyncTest
    async def test_perPeerLimit(self) -> None:
        """
        Every connection comes from HAProxy's address; the limit per peer
        address counts the clients': two from 127.0.0.2 are served, the
        third is refused, and 127.0.0.3 is served.
        """
        events = self.captureLogs()
        server, port = await self.proxied(maxConnectionsPerPeer=2)
        balancer = HAProxy(self, [port], "send-proxy-v2").start()
        served = [
            await self.connectRaw(balancer.port, bindAddress=("127.0.0.2", 0)) for _ in range(2)
        ]
        for peer in served:
            peer.transport.write(b"in\n")
        await waitFor(lambda: all(peer.messages() == [b"in"] for peer in served))
        refused = await self.connectRaw(balancer.port, bindAddress=("127.0.0.2", 0))
        refused.transport.write(b"refused\n")
        await within(refused.lost, 30)
        self.assertEqual(refused.messages(), [])
        other = await self.connectRaw(balancer.port, bindAddress=("127.0.0.3", 0))
        other.transport.write(b"other\n")
        await waitFor(lambda: other.messages() == [b"other"])
        self.assertEqual(len(server.clientIds()), 3)
        limits = [e for e in events if e.get("reason") == "maxConnectionsPerPeer"]
        self.assertTrue(limits)
        self.assertEqual({e["host"] for e in limits}, {"127.0.0.2"})
        self.assertEqual(
            formatEvent(limits[0]),
            f"Refused a connection from {limits[0]['peer']}: the limit per peer address is "
            "reached (2 open from 127.0.0.2, maxConnectionsPerPeer 2)",
        )
        self.assertTrue(limits[0]["peer"].startswith("127.0.0.2:"))


def _tlsClient(port: int, host: str) -> ssl.SSLSocket:
    """
    A TLS 1.3 client with the test set's client certificate, connected from
    C{host} to 127.0.0.1:C{port}.
    """
    files = certificates()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(files.ca)
    context.load_cert_chain(files.client, files.clientKey)
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT, source_address=(host, 0))
    return context.wrap_socket(raw, server_hostname="localhost")


def _receiveLine(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


class HAProxyDaemonTests(SynchronousTestCase):
    """
    The C{twistd tcpsc} daemon itself behind a real HAProxy: its log lines
    name the client sockets' own addresses, over TLS too (TLS from the
    client to tcpsc, through HAProxy in TCP mode).
    """

    def setUp(self) -> None:
        requireHAProxy()

    def daemon(self, *args: str) -> tuple[Daemon, int]:
        daemon = Daemon(self, "--port", "haproxy:tcp:0:interface=127.0.0.1", *args)
        port = int(
            daemon.waitFor(r"Listening on 127\.0\.0\.1:(\d+) \(fragmented, PROXY protocol").group(1)
        )
        return daemon, port

    def test_plainV1(self) -> None:
        daemon, port = self.daemon()
        balancer = HAProxy(self, [port], "send-proxy").start()
        with socket.create_connection(
            ("127.0.0.1", balancer.port), timeout=TIMEOUT, source_address=("127.0.0.2", 0)
        ) as client:
            host, clientPort = client.getsockname()
            client.sendall(b"hello\n")
            self.assertEqual(_receiveLine(client), b"hello\n")
            daemon.waitFor(rf"Connection 1 from {re.escape(host)}:{clientPort} established")
        daemon.waitFor(rf"Connection 1 from {re.escape(host)}:{clientPort} closed")
        self.assertNotIn("Traceback", daemon.output)

    def tlsDaemon(self, *args: str) -> tuple[Daemon, int]:
        files = certificates()
        return self.daemon(
            "--tls", "--ca", files.ca, "--cert", files.server, "--key", files.serverKey, *args
        )

    def test_tlsV2(self) -> None:
        daemon, port = self.tlsDaemon()
        self.assertIn("PROXY protocol, TLS 1.3", daemon.output)
        balancer = HAProxy(self, [port], "send-proxy-v2").start()
        with _tlsClient(balancer.port, "127.0.0.3") as client:
            host, clientPort = client.getsockname()
            client.sendall(b"secure hello\n")
            self.assertEqual(_receiveLine(client), b"secure hello\n")
            daemon.waitFor(
                rf"Connection 1 from {re.escape(host)}:{clientPort} established "
                r"\(client certificate CN='client'\)"
            )
        self.assertNotIn("Traceback", daemon.output)

    def test_tlsAllowListRefusal(self) -> None:
        """
        The allow-list's refusal names the client, not HAProxy.
        """
        daemon, port = self.tlsDaemon("--allow-client", "somebody-else")
        balancer = HAProxy(self, [port], "send-proxy").start()
        with _tlsClient(balancer.port, "127.0.0.2") as client:
            host, clientPort = client.getsockname()
            try:
                client.sendall(b"let me in\n")
                self.assertEqual(_receiveLine(client), b"")
            except (ssl.SSLError, ConnectionError):
                pass
        daemon.waitFor(
            rf"Refused the connection from {re.escape(host)}:{clientPort}: its client "
            r"certificate \(CN='client'.*is not on the allow-list"
        )

    def test_directClientRefused(self) -> None:
        """
        A client that reaches the port without HAProxy is refused, and the
        daemon logs it once, with its address and why.
        """
        daemon, port = self.daemon()
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            clientPort = client.getsockname()[1]
            client.sendall(b"hello\n")
            try:
                self.assertEqual(client.recv(100), b"")
            except ConnectionResetError:
                pass
        daemon.waitFor(
            rf"Refused the connection from 127\.0\.0\.1:{clientPort} on a PROXY-protocol port: "
            r"its first bytes are not a PROXY protocol header: b'hello\\n'"
        )


class BlockingTests(SynchronousTestCase):
    """
    The blocking API's server behind a real HAProxy: C{getClientIp} is the
    client's.
    """

    def test_getClientIp(self) -> None:
        requireHAProxy()
        server = TcpServer(b"\n")
        established: list[int] = []
        seen = threading.Event()

        def onEstablished(clientId: int) -> None:
            established.append(clientId)
            seen.set()

        server.setWorkOnEstablished(onEstablished)
        port = server.start(0, interface="127.0.0.1", proxyProtocol=True)
        self.addCleanup(server.stop)
        balancer = HAProxy(self, [port], "send-proxy").start()
        with socket.create_connection(
            ("127.0.0.1", balancer.port), timeout=TIMEOUT, source_address=("127.0.0.2", 0)
        ) as client:
            client.sendall(b"hello\n")
            self.assertTrue(seen.wait(TIMEOUT), "no connection established")
            self.assertEqual(server.getClientIp(established[0]), "127.0.0.2")


class ReadmeConfigTests(SynchronousTestCase):
    """
    The README's C{haproxy.cfg} and its two nodes, as written but for the
    ports (free loopback ones instead of 8081, 8091 and 8092: C{bind :8081}
    becomes C{bind 127.0.0.1:PORT}) and the Redis of C{--cluster} (a real
    one of the test's own): a client through HAProxy reaches a node, each
    node's log names the client socket's own address, and the chat spans
    both nodes.
    """

    def readmeBlock(self, key: str) -> str:
        found = [b.text for b in blocks() if key in b.text]
        self.assertEqual(len(found), 1, f"README blocks with {key!r}")
        return found[0]

    def test_twoNodes(self) -> None:
        requireHAProxy()
        redis = RedisServer(self)
        config = self.readmeBlock("send-proxy-v2")
        commands = self.readmeBlock("--port haproxy:tcp:8091").splitlines()
        self.assertEqual(commands[2], "haproxy -f haproxy.cfg -db")
        front, node1, node2 = freePort(), freePort(), freePort()
        self.assertIn("    bind :8081\n", config)
        config = config.replace("    bind :8081\n", f"    bind 127.0.0.1:{front}\n")
        daemons = []
        for line, old, new in ((commands[0], 8091, node1), (commands[1], 8092, node2)):
            self.assertIn(f"127.0.0.1:{old} send-proxy-v2 check", config)
            config = config.replace(f"127.0.0.1:{old} ", f"127.0.0.1:{new} ")
            words = line.split()
            self.assertEqual(words[:3], ["twistd", "-n", f"--pidfile=node{len(daemons) + 1}.pid"])
            arguments = words[words.index("tcpsc") + 1 :]
            cluster = arguments.index("--cluster")
            self.assertEqual(arguments[cluster + 1], "redis://127.0.0.1:6379/0")
            arguments[cluster + 1] = redis.url
            arguments = [a.replace(f"tcp:{old}:", f"tcp:{new}:") for a in arguments]
            daemon = Daemon(self, *arguments)
            daemon.waitFor(rf"Listening on 127\.0\.0\.1:{new} \(fragmented, PROXY protocol\)")
            daemons.append(daemon)
        balancer = HAProxy(self, config=config, port=front).start()
        clients = []
        for host in ("127.0.0.2", "127.0.0.3"):
            client = socket.create_connection(
                ("127.0.0.1", balancer.port), timeout=TIMEOUT, source_address=(host, 0)
            )
            self.addCleanup(client.close)
            clients.append(client)
            address, port = client.getsockname()
            # leastconn: the second client goes to the node without one.
            pattern = rf"Connection \d+ from {re.escape(address)}:{port} established"
            _until(
                lambda pattern=pattern: any(re.search(pattern, d.output) for d in daemons),
                what=f"a node logging {pattern!r}",
            )
        logged = [
            sorted(re.findall(r"from (127\.0\.0\.[23]):\d+ established", d.output)) for d in daemons
        ]
        self.assertEqual(sorted(logged), [["127.0.0.2"], ["127.0.0.3"]], logged)
        # One chat over both nodes: the client of one node sees the other's
        # message, prefixed with its sender's cluster-wide id.
        senderId = re.search(
            rf"Connection (\d+) from 127\.0\.0\.2:{clients[0].getsockname()[1]} established",
            "".join(d.output for d in daemons),
        )
        assert senderId is not None
        clients[0].sendall(b"hello across nodes\n")
        received = b""
        while not received.endswith(b"\n"):
            chunk = clients[1].recv(4096)
            self.assertTrue(chunk, "the chat client's node closed the connection")
            received += chunk
        self.assertEqual(received, b"%s: hello across nodes\n" % senderId.group(1).encode())
        for daemon in daemons:
            self.assertNotIn("Traceback", daemon.output)
            self.assertNotIn("Refused", daemon.output)
