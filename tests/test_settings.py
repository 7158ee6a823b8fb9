"""
L{tcpsc.Settings}: one frozen value holds every limit, timeout and bound of a
server's or a client's connections, checks each field where it is made, and
tells each connection's protocol what to override.
"""

from __future__ import annotations

import dataclasses

from twisted.trial.unittest import SynchronousTestCase

from tcpsc import FROM_PROTOCOL, MessageProtocol, Settings, StreamProtocol


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
            ({"maxConnectionsPerPeer": 0},
             "maxConnectionsPerPeer must be an int of at least 1 or None, not 0"),
            ({"maxBroadcastSkips": True},
             "maxBroadcastSkips must be an int of at least 1 or None, not True"),
            ({"memoryBudget": -1},
             "memoryBudget must be a positive number of bytes or None, not -1"),
            ({"firstByteTimeout": 0},
             "firstByteTimeout must be a positive number of seconds or None, not 0"),
            ({"idleTimeout": "5"},
             "idleTimeout must be a positive number of seconds or None, not '5'"),
            ({"closeTimeout": None},
             "closeTimeout must be a positive number of seconds, not None"),
            ({"delimiter": b""}, "delimiter must be one or more bytes, not b''"),
            ({"maxMessageLength": -1},
             "maxMessageLength must be a non-negative int or None, not -1"),
            ({"maxPendingOutput": 1.5},
             "maxPendingOutput must be a non-negative int or None, not 1.5"),
            ({"delimiter": b"|", "messageAppend": b"a|"},
             "messageAppend b'a|' contains the delimiter b'|'"),
        ]
        for changes, message in cases:
            with self.assertRaises(ValueError) as raised:
                Settings(**changes)
            self.assertEqual(str(raised.exception), message)

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
        self.assertEqual(Settings(maxPendingOutput=5).protocolAttributes(StreamProtocol),
                         {"maxPendingOutput": 5})
        with self.assertRaises(ValueError):
            Settings(maxMessageLength=10).protocolAttributes(StreamProtocol)
