"""
No data lost on a graceful path: every message a send accepted before
L{Server.stop} reaches a peer that reads, over TCP and TLS, even when it
was still queued when C{stop()} was called; a peer that does not read is
aborted after C{closeTimeout}, with a warning that says how many
connections and how many bytes were dropped.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from tcpsc import Server
from tests.test_guarantees_support import (
    SHORT,
    GuaranteeTestCase,
    asyncTest,
    clientTLS,
    serverTLS,
    shrinkBuffers,
    turn,
    waitFor,
    within,
)


async def sendUntilRefused(server: Server, clientId: int, size: int = 512) -> list[bytes]:
    """
    Send numbered messages until C{send} refuses one (the connection is
    congested and its bound reached), letting the reactor write meanwhile.
    """
    accepted: list[bytes] = []
    for i in range(200_000):
        message = b"%08d" % i + b"s" * (size - 8)
        if not server.send(clientId, message):
            return accepted
        accepted.append(message)
        if i % 64 == 0:
            await turn()
    raise AssertionError("send never refused a message to a peer that does not read")


async def congestedPeer(test: GuaranteeTestCase, server: Server, port: int) -> int:
    """
    Connect a raw peer that does not read, with small socket buffers, and
    send to it until the server refuses: its connection's output is full.

    @return: the connection's id.
    """
    peer = await test.connectRaw(port)
    peer.transport.pauseProducing()
    shrinkBuffers(peer.transport)
    await waitFor(lambda: server.clientIds(), SHORT, what="the server to register the connection")
    [clientId] = server.clientIds()
    shrinkBuffers(server.connection(clientId).transport)
    await sendUntilRefused(server, clientId)
    return clientId


class GracefulStopTests(GuaranteeTestCase):
    """
    C{stop()} flushes what was accepted before it closes.
    """

    async def stopWhileQueued(self, tls: bool) -> None:
        server, port = await self.startServer(
            tls=serverTLS() if tls else None, maxPendingOutput=256 * 1024
        )
        received: list[bytes] = []
        closed: Deferred[list[Any]] = Deferred()
        client = await self.connectClient(
            port,
            tls=clientTLS() if tls else None,
            onMessage=received.append,
            onClosed=lambda reason: closed.callback([reason]),
        )
        # The client reads only once stop() was called: until then
        # everything accepted piles up in the kernel and in the server.
        client.protocol.pauseReading()  # type: ignore[union-attr]
        await waitFor(
            lambda: server.clientIds(), SHORT, what="the server to register the connection"
        )
        [clientId] = server.clientIds()
        accepted = await sendUntilRefused(server, clientId)
        protocol = server.connection(clientId)
        self.assertGreater(protocol._unsentBytes(), 64 * 1024)

        stopping = server.stop()
        self.assertFalse(server.send(clientId, b"after stop"))
        client.protocol.resumeReading()  # type: ignore[union-attr]
        await within(stopping, 30)
        [reason] = await within(closed)
        self.assertEqual(len(received), len(accepted))
        self.assertEqual(received, accepted)
        self.assertIn("closed cleanly", reason.getErrorMessage())

    @asyncTest
    async def test_tcp(self) -> None:
        await self.stopWhileQueued(tls=False)

    @asyncTest
    async def test_tls(self) -> None:
        await self.stopWhileQueued(tls=True)


class AbortTests(GuaranteeTestCase):
    """
    A peer that never reads does not hold C{stop()} up beyond
    C{closeTimeout}, and what it never got is reported.
    """

    @asyncTest
    async def test_abortReportsDrops(self) -> None:
        bound = 64 * 1024
        server, port = await self.startServer(closeTimeout=0.5, maxPendingOutput=bound)
        clientId = await congestedPeer(self, server, port)

        events = self.captureLogs()
        started = reactor.seconds()
        await within(server.stop(), 30)
        self.assertGreaterEqual(reactor.seconds() - started, 0.45)
        self.assertLess(reactor.seconds() - started, 5)
        self.assertEqual(server.openConnections(), 0)
        [warning] = self.warnings(events, "did not close within")
        self.assertEqual(warning["count"], 1)
        self.assertEqual(warning["connectionIds"], [clientId])
        self.assertGreater(warning["dropped"], 0)
        self.assertLessEqual(warning["dropped"], bound + 64 * 1024 + 1024)
