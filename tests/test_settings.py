"""
L{tcpsc.Settings}: one frozen value holds every limit, timeout and bound of a
server's or a client's connections, checks each field where it is made, and
tells each connection's protocol what to override.
"""

from __future__ import annotations

import dataclasses
import inspect

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tcpsc import (
    FROM_PROTOCOL,
    Client,
    DatagramServer,
    MessageProtocol,
    Server,
    Settings,
    StreamProtocol,
)
from tcpsc._settings import SETTING_NAMES


class _Piped(MessageProtocol):
    delimiter = b"|"
    maxMessageLength = 100


class SettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        The defaults a server runs with when nothing is given: the
        protocol's own framing, the documented bounds.
        """
        settings = Settings()
        self.assertIs(settings.delimiter, FROM_PROTOCOL)
        self.assertIs(settings.maxMessageLength, FROM_PROTOCOL)
        self.assertEqual(settings.maxConnections, 4096)
        self.assertEqual(settings.maxConnectionsPerPeer, 256)
        self.assertEqual(settings.memoryBudget, 96 * 1024 * 1024)
        self.assertEqual(settings.firstByteTimeout, 10.0)
        self.assertEqual(settings.handshakeTimeout, 10.0)
        self.assertEqual(settings.closeTimeout, 5.0)
        self.assertIsNone(settings.idleTimeout)
        self.assertEqual(repr(FROM_PROTOCOL), "FROM_PROTOCOL")

    def test_frozen(self) -> None:
        """
        A value cannot change under the servers that share it; L{replace}
        makes a checked copy.
        """
        settings = Settings()
        with self.assertRaises(dataclasses.FrozenInstanceError):
            settings.maxConnections = 1  # type: ignore[misc]
        changed = settings.replace(maxConnections=7)
        self.assertEqual((settings.maxConnections, changed.maxConnections), (4096, 7))
        with self.assertRaises(ValueError):
            settings.replace(maxConnections=0)

    def test_refusals(self) -> None:
        """
        A value out of range is refused where it is made, naming the field
        and the value.
        """
        cases = [
            ({"maxConnections": 0}, "maxConnections must be at least 1, not 0"),
            (
                {"maxConnectionsPerPeer": 0},
                "maxConnectionsPerPeer must be an int of at least 1 or None, not 0",
            ),
            (
                {"maxBroadcastSkips": True},
                "maxBroadcastSkips must be an int of at least 1 or None, not True",
            ),
            (
                {"memoryBudget": -1},
                "memoryBudget must be a positive number of bytes or None, not -1",
            ),
            (
                {"firstByteTimeout": 0},
                "firstByteTimeout must be a positive number of seconds or None, not 0",
            ),
            (
                {"idleTimeout": "5"},
                "idleTimeout must be a positive number of seconds or None, not '5'",
            ),
            ({"closeTimeout": None}, "closeTimeout must be a positive number of seconds, not None"),
            ({"delimiter": b""}, "delimiter must be one or more bytes, not b''"),
            (
                {"maxMessageLength": -1},
                "maxMessageLength must be a non-negative int or None, not -1",
            ),
            (
                {"maxPendingOutput": 1.5},
                "maxPendingOutput must be a non-negative int or None, not 1.5",
            ),
            (
                {"delimiter": b"|", "messageAppend": b"a|"},
                "messageAppend b'a|' contains the delimiter b'|'",
            ),
        ]
        for changes, message in cases:
            with self.assertRaises(ValueError) as raised:
                Settings(**changes)
            self.assertEqual(str(raised.exception), message)

    def test_datagramFields(self) -> None:
        """
        The datagram server's fields: their defaults, C{None} where it
        means "no such bound", and values out of range refused naming the
        field; L{tcpsc.DatagramServer}'s signature shows the same defaults.
        """
        settings = Settings()
        self.assertEqual(settings.peerIdleTimeout, 300.0)
        self.assertEqual(settings.maxPeers, 65_536)
        self.assertIsNone(settings.broadcastWindow)
        Settings(peerIdleTimeout=None, broadcastWindow=1)
        cases = [
            ({"maxPeers": 0}, "maxPeers must be an int of at least 1, not 0"),
            ({"maxPeers": None}, "maxPeers must be an int of at least 1, not None"),
            ({"maxPeers": True}, "maxPeers must be an int of at least 1, not True"),
            (
                {"peerIdleTimeout": 0},
                "peerIdleTimeout must be a positive number of seconds or None, not 0",
            ),
            (
                {"broadcastWindow": -1.0},
                "broadcastWindow must be a positive number of seconds or None, not -1.0",
            ),
        ]
        for changes, message in cases:
            with self.assertRaises(ValueError) as raised:
                Settings(**changes)
            self.assertEqual(str(raised.exception), message)
        parameters = inspect.signature(DatagramServer).parameters
        for name in ("peerIdleTimeout", "maxPeers", "broadcastWindow"):
            self.assertEqual(parameters[name].default, getattr(settings, name), name)

    def test_strEncoded(self) -> None:
        """
        A str delimiter or append is taken as its UTF-8 bytes.
        """
        settings = Settings(delimiter="\r\n", messageAppend="é")
        self.assertEqual((settings.delimiter, settings.messageAppend), (b"\r\n", "é".encode()))

    def test_protocolAttributes(self) -> None:
        """
        Only what is not left to the protocol class overrides it; an append
        that contains the protocol's own delimiter is refused.
        """
        self.assertEqual(Settings().protocolAttributes(_Piped), {})
        self.assertEqual(
            Settings(maxMessageLength=None, maxPendingOutput=10).protocolAttributes(_Piped),
            {"maxMessageLength": None, "maxPendingOutput": 10},
        )
        with self.assertRaises(ValueError) as raised:
            Settings(messageAppend=b"x|").protocolAttributes(_Piped)
        self.assertEqual(str(raised.exception), "messageAppend b'x|' contains the delimiter b'|'")

    def test_streamRefusesFraming(self) -> None:
        """
        Continuous mode has no messages: framing fields are refused for a
        L{StreamProtocol}, the output bound is not.
        """
        self.assertEqual(
            Settings(maxPendingOutput=5).protocolAttributes(StreamProtocol), {"maxPendingOutput": 5}
        )
        with self.assertRaises(ValueError):
            Settings(maxMessageLength=10).protocolAttributes(StreamProtocol)


class SettingsArgumentTests(SynchronousTestCase):
    """
    C{settings=} of L{Server} and L{Client}, beside the keyword arguments
    that spell its fields.
    """

    def test_keywordsMakeSettings(self) -> None:
        """
        The keyword arguments make the settings in force; left out, the
        defaults.
        """
        server = Server(maxConnections=7, delimiter=b"|", reactor=Clock())
        self.assertEqual(server.settings, Settings(maxConnections=7, delimiter=b"|"))
        self.assertEqual(Server(reactor=Clock()).settings, Settings())
        self.assertEqual(
            Server(delimiter=None, messageAppend=None, reactor=Clock()).settings, Settings()
        )

    def test_settingsGiven(self) -> None:
        """
        C{settings=} is the value in force, and each field reads as the
        server's attribute of that name.
        """
        given = Settings(
            maxConnections=7,
            maxConnectionsPerPeer=None,
            idleTimeout=3.0,
            logConnections=False,
            maxBroadcastSkips=2,
        )
        server = Server(settings=given, reactor=Clock())
        self.assertIs(server.settings, given)
        self.assertEqual(
            (
                server.maxConnections,
                server.maxConnectionsPerPeer,
                server.idleTimeout,
                server.logConnections,
                server.maxBroadcastSkips,
            ),
            (7, None, 3.0, False, 2),
        )

    def test_bothRefused(self) -> None:
        """
        A keyword that differs from its default given with C{settings=} is
        a L{TypeError} naming it; a keyword left at its default is not.
        """
        with self.assertRaises(TypeError) as raised:
            Server(maxConnections=7, idleTimeout=1.0, settings=Settings(), reactor=Clock())
        self.assertEqual(
            str(raised.exception),
            "Server() takes idleTimeout, maxConnections either in settings= or "
            "as keyword arguments, not both",
        )
        with self.assertRaises(TypeError) as raised:
            Client(closeTimeout=1.0, settings=Settings(), reactor=Clock())
        self.assertIn("closeTimeout", str(raised.exception))
        server = Server(maxConnections=4096, settings=Settings(maxConnections=7), reactor=Clock())
        self.assertEqual(server.maxConnections, 7)
        with self.assertRaises(TypeError):
            Server(settings={"maxConnections": 7}, reactor=Clock())  # type: ignore[arg-type]

    def test_signatureDefaultsAreTheFields(self) -> None:
        """
        The defaults the signatures show are the fields' defaults, written
        once, in L{Settings}.
        """
        defaults = Settings()
        for cls in (Server, Client):
            for name, parameter in inspect.signature(cls).parameters.items():
                if name in SETTING_NAMES:
                    self.assertEqual(parameter.default, getattr(defaults, name), (cls, name))

    def test_attributeSetsCheckedCopy(self) -> None:
        """
        Setting one of the server's setting attributes replaces its
        settings with a checked copy; a value out of range is refused with
        the field's words, and nothing changes.
        """
        server = Server(reactor=Clock())
        before = server.settings
        server.maxConnections = 9
        server.logEveryEvent = True
        self.assertEqual(server.settings, before.replace(maxConnections=9, logEveryEvent=True))
        self.assertTrue(server._events.logEveryEvent)
        server.maxBroadcastSkips = 3
        self.assertEqual(server._registry.broadcaster.maxBroadcastSkips, 3)
        with self.assertRaises(ValueError) as raised:
            server.maxConnections = 0
        self.assertEqual(str(raised.exception), "maxConnections must be at least 1, not 0")
        self.assertEqual(server.maxConnections, 9)
        with self.assertRaises(ValueError):
            server.settings = Settings(messageAppend=b"x\n")
        self.assertEqual(server.settings.messageAppend, FROM_PROTOCOL)

    def test_protocolAttributesOnce(self) -> None:
        """
        The attributes each connection's protocol gets are worked out once,
        when the settings are set, not for each connection.
        """
        server = Server(
            _Piped, settings=Settings(maxMessageLength=5, maxPendingOutput=7), reactor=Clock()
        )
        calls: list[object] = []
        self.patch(Settings, "protocolAttributes", lambda *a: calls.append(a))
        protocols = [
            server._buildConnection(IPv4Address("TCP", "192.0.2.1", 1000 + i), tls=False)
            for i in range(3)
        ]
        self.assertEqual(calls, [])
        for protocol in protocols:
            assert isinstance(protocol, MessageProtocol)
            self.assertEqual(
                (protocol.delimiter, protocol.maxMessageLength, protocol.maxPendingOutput),
                (b"|", 5, 7),
            )

    def test_client(self) -> None:
        """
        A client takes the framing fields and C{closeTimeout} from
        C{settings=}, checked against its protocol class.
        """
        client = Client(
            _Piped, settings=Settings(maxMessageLength=9, closeTimeout=2.0), reactor=Clock()
        )
        self.assertEqual(client.closeTimeout, 2.0)
        self.assertEqual(client._protocolAttributes, {"maxMessageLength": 9})
        client.closeTimeout = 3.0
        self.assertEqual(client.settings.closeTimeout, 3.0)
        with self.assertRaises(ValueError):
            Client(_Piped, settings=Settings(messageAppend=b"|"), reactor=Clock())
        with self.assertRaises(ValueError):
            Client(stream=True, maxMessageLength=10, reactor=Clock())
