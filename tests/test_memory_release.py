"""
After a burst of connections closed, what they freed is given back to the
system: once for every connection that closed within a few seconds, never
for each one, and not for the steady coming and going of a few.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tcpsc import Server, _memory, _server
from tcpsc._server import _RELEASE_AFTER_CLOSES, _RELEASE_DELAY, _ListeningFactory


class ReleaseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.server = Server(reactor=self.clock, maxConnectionsPerPeer=None)
        self.releases: list[None] = []
        self.patch(_server, "releaseFreeMemory", lambda: self.releases.append(None))
        self.patch(_server, "canReleaseMemory", lambda: True)

    def connect(self, port: int) -> tuple[Any, StringTransport]:
        peer = IPv4Address("TCP", "192.0.2.7", port)
        protocol = _ListeningFactory(self.server, None).buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"hello\n")
        return protocol, transport

    def test_onceAfterABurst(self) -> None:
        """
        A thousand connections that close within the delay: the memory is
        released once, the delay after the first closed; the next close
        starts another delay.
        """
        protocols = [self.connect(40000 + i)[0] for i in range(1000)]
        for protocol in protocols[:500]:
            protocol.connectionLost()
        self.clock.advance(_RELEASE_DELAY / 2)
        for protocol in protocols[500:]:
            protocol.connectionLost()
        self.assertEqual(self.releases, [])
        self.clock.advance(_RELEASE_DELAY / 2)
        self.assertEqual(len(self.releases), 1)
        self.clock.advance(_RELEASE_DELAY * 10)
        self.assertEqual(len(self.releases), 1)
        for port in range(41000, 41000 + _RELEASE_AFTER_CLOSES):
            self.connect(port)[0].connectionLost()
        self.clock.advance(_RELEASE_DELAY)
        self.assertEqual(len(self.releases), 2)

    def test_notForAFew(self) -> None:
        """
        Fewer connections than a burst closing schedule nothing: a server
        whose clients come and go leaves no call pending for it.
        """
        for port in range(40000, 40000 + _RELEASE_AFTER_CLOSES - 1):
            self.connect(port)[0].connectionLost()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(_RELEASE_DELAY * 10)
        self.assertEqual(self.releases, [])

    def test_stopCancels(self) -> None:
        """
        A server stopped before the delay leaves nothing scheduled.
        """
        for port in range(40000, 40000 + _RELEASE_AFTER_CLOSES):
            self.connect(port)[0].connectionLost()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.successResultOf(self.server.stop())
        self.assertEqual(
            [c for c in self.clock.getDelayedCalls() if c.func == self.server._releaseMemory], []
        )
        self.clock.advance(_RELEASE_DELAY)
        self.assertEqual(self.releases, [])


class TrimTests(SynchronousTestCase):
    def test_glibc(self) -> None:
        """
        On Linux with glibc, freed memory can be given back, and doing so
        succeeds; elsewhere it is a no-op that says so.
        """
        libc = sys.platform.startswith("linux") and "glibc" in " ".join(
            __import__("platform").libc_ver()
        )
        self.assertEqual(_memory.canReleaseMemory(), bool(libc))
        self.assertEqual(_memory.releaseFreeMemory(), bool(libc))
