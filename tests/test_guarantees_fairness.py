"""
Fair broadcast under slow readers: a reader that keeps up gets every
broadcast while peers that do not read are skipped, and a flood of messages
to relay cannot make one reactor turn do unbounded work.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor

from tcpsc import MessageProtocol
from tcpsc._apps import Chat
from tcpsc._broadcast import TURN_BROADCAST_WORK
from tests.test_guarantees_support import (
    SHORT,
    GuaranteeTestCase,
    RawPeer,
    asyncTest,
    shrinkBuffers,
    waitFor,
)


class Counting(RawPeer):
    """
    A peer that reads everything and counts the lines it gets; C{onLines} is
    called with the count after each read, in that read.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lines = 0
        self.rest = b""
        self.onLines: Any = None

    def dataReceived(self, data: bytes) -> None:
        data = self.rest + data
        self.lines += data.count(b"\n")
        self.rest = data[data.rfind(b"\n") + 1 :]
        if self.onLines is not None:
            self.onLines(self.lines)


class RoomTests(GuaranteeTestCase):
    """
    Congestion is judged by the bytes a connection's transport actually
    holds: a reader whose output never drains completely under a steady
    flow, but which reads, keeps its room.
    """

    @asyncTest
    async def test_readerThatKeepsUpGetsEverything(self) -> None:
        perBatch, batches = 512, 24
        bound = 2 * 1024 * 1024
        server, port = await self.startServer(MessageProtocol, maxPendingOutput=bound)
        reader = Counting()
        await self.connectRaw(port, reader)
        stuck = [await self.connectRaw(port) for _ in range(3)]
        for peer in stuck:
            peer.transport.pauseProducing()
        await waitFor(lambda: len(server.clientIds()) == 4, SHORT)
        readerId = server.clientIds()[0]
        # Small kernel buffers: most of what is in flight stays in the
        # server's transport, which never drains completely.
        shrinkBuffers(server.connection(readerId).transport)
        shrinkBuffers(reader.transport)
        sent = [0]

        def batch() -> None:
            for _ in range(perBatch):
                server.broadcast(b"%07d" % sent[0] + b"m" * 1016)
                sent[0] += 1

        def more(lines: int) -> None:
            # Two batches in flight: the next one as soon as the one before
            # the last is read, in the same read.
            while sent[0] < perBatch * batches and lines >= sent[0] - perBatch:
                batch()

        reader.onLines = more
        batch()
        batch()
        await waitFor(lambda: reader.lines == perBatch * batches, 30)
        self.assertGreater(server.broadcastSkips, 0)
        for peer in stuck:
            protocol = self.connectionOf(server, peer.transport)
            self.assertLessEqual(protocol._unsentBytes(), bound + 64 * 1024 + 1024)


class TurnTests(GuaranteeTestCase):
    """
    One turn of the reactor relays a bounded number of messages, however
    many senders flood it: the senders take turns, and every message is
    relayed.
    """

    @asyncTest
    async def test_boundedWorkPerTurn(self) -> None:
        relayed = [0]

        class CountingChat(Chat):
            def messageReceived(self, message: bytes) -> None:
                relayed[0] += 1
                super().messageReceived(message)

        senders, size = 30, 64 * 1024
        server, port = await self.startServer(CountingChat, maxConnectionsPerPeer=None)
        reader = Counting()
        await self.connectRaw(port, reader)
        flooders = []
        for _ in range(senders):
            sock = socket.create_connection(("127.0.0.1", port), timeout=SHORT)
            self.addCleanup(sock.close)
            flooders.append(sock)
        await waitFor(lambda: len(server.clientIds()) == senders + 1, SHORT)
        message = b"f" * 99 + b"\n"
        perSender = size // len(message)
        # All of it waits in the kernel when the reactor looks next.
        for sock in flooders:
            sock.sendall(message * perSender)
        perTurn: list[int] = []
        last = [0]

        def tick() -> None:
            perTurn.append(relayed[0] - last[0])
            last[0] = relayed[0]
            if relayed[0] < senders * perSender:
                calls.append(reactor.callLater(0, tick))

        calls = [reactor.callLater(0, tick)]
        self.addCleanup(lambda: calls[-1].active() and calls[-1].cancel())
        await waitFor(lambda: reader.lines == senders * perSender, 30)
        targets = senders + 1
        self.assertLessEqual(max(perTurn) * targets, 3 * TURN_BROADCAST_WORK, perTurn)


class LightSenderTests(GuaranteeTestCase):
    """
    While senders flood a chat, a connection whose read holds only a few
    messages delivers them all in the turn it is read, instead of one per
    turn like the connections that flood.
    """

    @asyncTest
    async def test_fewMessagesInOneTurn(self) -> None:
        relayed = [0]
        ticks: list[int] = []
        probeTicks: list[int] = []

        class CountingChat(Chat):
            def messageReceived(self, message: bytes) -> None:
                relayed[0] += 1
                if message.startswith(b"probe"):
                    probeTicks.append(len(ticks))
                super().messageReceived(message)

        senders, size = 30, 64 * 1024
        server, port = await self.startServer(CountingChat, maxConnectionsPerPeer=None)
        reader = Counting()
        await self.connectRaw(port, reader)
        probe = await self.connectRaw(port)
        flooders = []
        for _ in range(senders):
            sock = socket.create_connection(("127.0.0.1", port), timeout=SHORT)
            self.addCleanup(sock.close)
            flooders.append(sock)
        await waitFor(lambda: len(server.clientIds()) == senders + 2, SHORT)
        message = b"f" * 99 + b"\n"
        perSender = size // len(message)
        for sock in flooders:
            sock.sendall(message * perSender)

        def tick() -> None:
            ticks.append(relayed[0])
            if relayed[0] < senders * perSender + 3:
                calls.append(reactor.callLater(0, tick))

        calls = [reactor.callLater(0, tick)]
        self.addCleanup(lambda: calls[-1].active() and calls[-1].cancel())
        # In the middle of the flood, when every turn's work is used up by
        # the flooders before the probe is read.
        await waitFor(lambda: relayed[0] >= senders * perSender // 4, 30)
        self.assertLess(relayed[0], senders * perSender // 2)
        probe.transport.write(b"probe 1\nprobe 2\nprobe 3\n")
        await waitFor(lambda: reader.lines == senders * perSender + 3, 30)
        self.assertEqual(len(probeTicks), 3)
        self.assertEqual(len(set(probeTicks)), 1, probeTicks)
