"""
A TLS client at a plain port: the server recognises its ClientHello in the
first bytes a connection receives, logs it, answers with bytes that are not
TLS and closes the connection (C{tcpsc._server.Server._watchFirstBytes}), driven
deterministically with L{StringTransport} and L{Clock}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tcpsc import Server
from tcpsc._server import _ListeningFactory

#: The start of a real TLS 1.3 ClientHello: a handshake record (0x16), record
#: version TLS 1.0 (0x03 0x01) as TLS 1.3 clients send it, its length, then
#: the handshake message ClientHello (0x01).
CLIENT_HELLO = bytes.fromhex("160301020001") + b"\x00" * 64


class PlainPortTests(SynchronousTestCase):
    """
    The first bytes a plain port receives.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.received: list[bytes] = []
        self.closed: list[int] = []
        self.server = Server(
            onMessage=lambda i, m: self.received.append(m),
            onClosed=self.closed.append,
            reactor=Clock(),
        )
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def connect(self) -> tuple[Any, StringTransport]:
        peer = IPv4Address("TCP", "192.0.2.7", 40000)
        protocol = _ListeningFactory(self.server, None).buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_clientHelloIsRefused(self) -> None:
        """
        A ClientHello as the first bytes: one warning naming it, with the
        peer and a C{reason} field; the reply is not TLS; the connection is
        closed; nothing is taken for a message.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(CLIENT_HELLO)
        warnings = [e for e in self.events if e.get("reason") == "tlsClientOnPlainPort"]
        self.assertEqual(len(warnings), 1, self.events)
        text = formatEvent(warnings[0])
        self.assertIn("a TLS client connected to a plain port", text)
        self.assertIn("192.0.2.7:40000", text)
        self.assertEqual(warnings[0]["connectionId"], 1)
        self.assertEqual(transport.value(), b"this port does not speak TLS\n")
        self.assertNotEqual(transport.value()[:1], b"\x16")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.received, [])

    def test_plainBytesPass(self) -> None:
        """
        Other first bytes are messages as usual, and the check is gone after
        the first read: a later 0x16 0x03 is part of a message.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b"hello\n")
        self.assertNotIn("dataReceived", vars(protocol))
        protocol.dataReceived(b"\x16\x03 later\n")
        self.assertEqual(self.received, [b"hello", b"\x16\x03 later"])
        self.assertFalse(transport.disconnecting)
        self.assertEqual([e for e in self.events if e.get("reason") == "tlsClientOnPlainPort"], [])
