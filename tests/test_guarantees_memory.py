"""
The memory budget: the partial messages of all connections together stay
within it (plus at most 1 MiB a connection not yet counted), the largest
being dropped first, while every connection is kept and goes on.
"""

from __future__ import annotations

from tcpsc import MessageProtocol, Server, _compat
from tcpsc._server import DEFAULT_MEMORY_BUDGET
from tcpsc._transports import socketTransport
from tests.test_guarantees_support import (
    SHORT,
    GuaranteeTestCase,
    RawPeer,
    asyncTest,
    shrinkBuffers,
    turn,
    waitFor,
)

MiB = 1024 * 1024


class BudgetTests(GuaranteeTestCase):
    @asyncTest
    async def test_partialMessages(self) -> None:
        budget, clients, size = 8 * MiB, 6, 4 * MiB
        peak = [0]
        servers: list[Server] = []

        class Echo(MessageProtocol):
            def dataReceived(self, data: bytes) -> None:
                super().dataReceived(data)
                held = sum(len(p._buffer) for p in servers[0]._registry.connections().values())  # type: ignore[attr-defined]
                peak[0] = max(peak[0], held)

            def messageReceived(self, message: bytes) -> None:
                self.sendMessage(message[-5:])

        server, port = await self.startServer(Echo, memoryBudget=budget)
        servers.append(server)
        peers = [await self.connectRaw(port) for _ in range(clients)]
        for peer in peers:
            peer.transport.write(b"x" * size)
        for peer in peers:
            peer.transport.write(b"\nafter\n")
        await waitFor(lambda: all(bytes(p.received).endswith(b"after\n") for p in peers), 30)
        dropped = [p for p in peers if bytes(p.received) == b"after\n"]
        kept = [p for p in peers if bytes(p.received) == b"xxxxx\nafter\n"]
        self.assertEqual(len(dropped) + len(kept), clients)
        self.assertGreaterEqual(len(dropped), 1)
        self.assertEqual(server.eventCounts["memoryBudget"], len(dropped))
        self.assertLessEqual(peak[0], budget + clients * MiB)
        self.assertFalse(any(p.lost.called for p in peers))
        # Nothing is left counted once the messages are complete.
        self.assertEqual(server._inputTotal, 0)

    @asyncTest
    async def test_noBudget(self) -> None:
        """
        With C{memoryBudget=None} nothing is dropped.
        """
        server, port = await self.startServer(MessageProtocol, memoryBudget=None)
        peer: RawPeer = await self.connectRaw(port)
        peer.transport.write(b"x" * 3 * MiB)
        await waitFor(
            lambda: (
                len(server.connection(server.clientIds()[0])._buffer)  # type: ignore[attr-defined]
                == 3 * MiB
            ),
            SHORT,
        )
        self.assertNotIn("memoryBudget", server.eventCounts)

    def test_defaultAndValidation(self) -> None:
        self.assertEqual(Server().memoryBudget, DEFAULT_MEMORY_BUDGET)
        self.assertEqual(DEFAULT_MEMORY_BUDGET, 96 * MiB)
        for wrong in (0, -1, True, 1.5, "1"):
            self.assertRaises(ValueError, Server, memoryBudget=wrong)


class OutputShareTests(GuaranteeTestCase):
    """
    Output: what the budget leaves is shared among the congested
    connections, each bounded by its share when it is below
    C{maxPendingOutput}.
    """

    @asyncTest
    async def test_shareBoundsPendingOutput(self) -> None:
        budget, peers = 1 * MiB, 4
        server, port = await self.startServer(MessageProtocol, memoryBudget=budget)
        stuck = [await self.connectRaw(port) for _ in range(peers)]
        for peer in stuck:
            peer.transport.pauseProducing()
        await waitFor(lambda: len(server.clientIds()) == peers, SHORT)
        protocols = [self.connectionOf(server, peer.transport) for peer in stuck]
        for protocol in protocols:
            shrinkBuffers(protocol.transport)
        message = b"s" * 1023
        for _ in range(200):
            if server.broadcast(message) == 0:
                break
            for _ in range(50):
                server.broadcast(message)
            await turn()
        self.assertEqual(server.broadcast(message), 0)
        share = budget // peers
        for protocol in protocols:
            # Far below maxPendingOutput (4 MiB): the share and one message.
            # The transport's buffers (what made the connection congested,
            # and what was written already of the string being written)
            # count against the share.
            self.assertLessEqual(protocol._unsentBytes(), share + 1024)
            buffered = _compat.bufferedBytes(socketTransport(protocol.transport))
            if _compat.PRIVATE:
                self.assertLessEqual(buffered, share + 1024)

    @asyncTest
    async def test_heldMessagesCounted(self) -> None:
        """
        The messages a connection paused in the middle of a read holds count
        against the budget, so the output share is smaller by them; they
        stop counting once delivered.  They are held as one string, not as
        an object a message.
        """
        budget, peers = 64 * MiB, 24
        received: list[bytes] = []

        class PauseAtFirst(MessageProtocol):
            def messageReceived(self, message: bytes) -> None:
                received.append(message)
                if message == b"first":
                    self.pauseReading()

        server, port = await self.startServer(PauseAtFirst, memoryBudget=budget)
        clients = [await self.connectRaw(port) for _ in range(peers)]
        await waitFor(lambda: len(server.clientIds()) == peers, SHORT)
        messages = b"first\n" + (b"m" * 99 + b"\n") * 600
        for client in clients:
            client.transport.write(messages)
        protocols = [self.connectionOf(server, client.transport) for client in clients]
        await waitFor(lambda: all(p._heldSplit is not None for p in protocols), SHORT)
        expected = 0
        for protocol in protocols:
            held, start, left, _ = protocol._heldSplit
            self.assertIsInstance(held, bytes)
            self.assertEqual(held[start:], (b"m" * 99 + b"\n") * left + held[start + 100 * left :])
            expected += len(held)
        self.assertGreater(expected, MiB)
        self.assertEqual(server._splitTotal, expected)
        # Shared again each time they changed by 1 MiB.
        self.assertLess(abs(budget - server._outputShare - expected), MiB)
        for protocol in protocols:
            protocol.resumeReading()
        await waitFor(lambda: len(received) == peers * 601, SHORT)
        self.assertEqual(received.count(b"first"), peers)
        self.assertEqual(set(received), {b"first", b"m" * 99})
        self.assertEqual(server._splitTotal, 0)
        self.assertEqual(server._outputShare, budget)
