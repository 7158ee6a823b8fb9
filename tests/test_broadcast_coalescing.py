"""
L{Server.broadcast} to plain TCP connections appends a frame to the buffer
of a socket transport that already holds data written since its last write
to the socket, instead of calling its C{write} (which costs about ten Python
calls per connection, the bulk of a broadcast).  These tests check that the
short cut is taken, and that nothing a user relies on changes with it: every
message arrives, in order with the other sends of the same reactor turn; a
connection is closed only after what was broadcast to it; the output bound,
congestion and skips are exactly those of C{write} (the same tests run with
the short cut disabled).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp
from twisted.trial.unittest import SkipTest

from tcpsc import Server, _compat
from tests.test_guarantees_support import (
    SHORT,
    GuaranteeTestCase,
    RawPeer,
    asyncTest,
    waitFor,
    within,
)


def countWrites(transport: Any) -> list[bytes]:
    """
    Record every call of C{transport.write} (the instance's, which the
    broadcast calls when it does not append).
    """
    calls: list[bytes] = []
    write = transport.write

    def counting(data: bytes) -> None:
        calls.append(data)
        write(data)

    transport.write = counting
    return calls


class AppendTests(GuaranteeTestCase):
    """
    Broadcasts with the short cut, as a server uses them.
    """

    appendable = True

    def setUp(self) -> None:
        if not self.appendable:
            self.patch(_compat, "PRIVATE", False)
        elif not _compat.checkedRelease():
            raise SkipTest("the installed releases were not checked: no short cut")

    async def connectPeers(self, count: int, **kwargs: Any) -> tuple[Server, list[RawPeer]]:
        server, port = await self.startServer(**kwargs)
        peers = [await self.connectRaw(port) for _ in range(count)]
        await waitFor(lambda: len(server.clientIds()) == count, SHORT)
        return server, peers

    def test_transportClass(self) -> None:
        """
        The short cut applies to the socket transport of this Twisted: if a
        later Twisted changes it, this test says so (broadcasts then still
        work, through C{write}).
        """
        if self.appendable:
            self.assertIs(_compat.appendableTransport(), tcp.Server)
        else:
            self.assertIsNone(_compat.appendableTransport())

    @asyncTest
    async def test_orderWithOtherSends(self) -> None:
        """
        Broadcasts interleaved in one reactor turn with L{Server.send} and
        L{tcpsc.MessageProtocol.sendMessage} reach every peer complete and in
        the order they were made; with the short cut, the broadcasts call
        C{write} only once per connection and turn.
        """
        server, peers = await self.connectPeers(3)
        ids = server.clientIds()
        protocols: list[Any] = [server.connection(i) for i in ids]
        writes = [countWrites(p.transport) for p in protocols]
        expected: list[list[bytes]] = [[], [], []]
        for n in range(200):
            message = b"broadcast %d" % n
            self.assertEqual(server.broadcast(message), 3)
            for e in expected:
                e.append(message)
            if n % 10 == 3:
                message = b"send %d" % n
                self.assertTrue(server.send(ids[1], message))
                expected[1].append(message)
            if n % 10 == 7:
                message = b"sendMessage %d" % n
                self.assertTrue(protocols[2].sendMessage(message))
                expected[2].append(message)
        extra = [0, 20, 20]
        for calls, sends in zip(writes, extra, strict=True):
            if self.appendable:
                self.assertLessEqual(len(calls), 1 + sends)
            else:
                self.assertEqual(len(calls), 200 + sends)
        await waitFor(
            lambda: all(len(p.messages()) >= len(e) for p, e in zip(peers, expected, strict=True)),
            SHORT,
        )
        for peer, e in zip(peers, expected, strict=True):
            self.assertEqual(peer.messages(), e)

    @asyncTest
    async def test_manyTurns(self) -> None:
        """
        Over many reactor turns, while the peers read, every broadcast
        arrives once and in order.
        """
        server, peers = await self.connectPeers(4)
        sent: list[bytes] = []
        for turnNumber in range(30):
            for n in range(50):
                message = b"%d.%d" % (turnNumber, n) + b"m" * 100
                self.assertEqual(server.broadcast(message), 4)
                sent.append(message)
            await waitFor(lambda: all(len(p.messages()) == len(sent) for p in peers), SHORT)
        for peer in peers:
            self.assertEqual(peer.messages(), sent)

    @asyncTest
    async def test_congestionAsWrite(self) -> None:
        """
        The output bound is that of C{write}: in one turn (nothing reaches
        the socket), frames of 1025 bytes are accepted until the transport
        holds more than its C{bufferSize} of 64 KiB (the 64th), then while
        they fit in C{maxPendingOutput} (31 more); the rest are skipped and
        counted.  The peer, once it reads, gets exactly the accepted ones.
        """
        server, peers = await self.connectPeers(1, maxPendingOutput=32 * 1024)
        protocol: Any = server.connection(server.clientIds()[0])
        self.assertEqual(protocol.transport.bufferSize, 64 * 1024)
        counts = []
        sent = []
        for n in range(300):
            message = b"%06d" % n + b"c" * 1018
            count = server.broadcast(message)
            counts.append(count)
            if count:
                sent.append(message)
        self.assertEqual(counts, [1] * 95 + [0] * 205)
        self.assertTrue(protocol._congested)
        self.assertEqual(server.broadcastSkips, 205)
        self.assertLessEqual(protocol._unsentBytes(), 64 * 1024 + 32 * 1024 + 1025)
        await waitFor(lambda: len(peers[0].messages()) == 95, SHORT)
        self.assertEqual(peers[0].messages(), sent)
        await waitFor(lambda: not protocol._congested, SHORT)
        self.assertEqual(server.broadcast(b"after"), 1)
        await waitFor(lambda: peers[0].messages()[-1:] == [b"after"], SHORT)

    @asyncTest
    async def test_disconnectAfterBroadcasts(self) -> None:
        """
        L{Server.disconnect} right after broadcasts in the same turn closes
        the connection after they were written.
        """
        server, peers = await self.connectPeers(2)
        sent = [b"last words %d" % n for n in range(100)]
        for message in sent:
            server.broadcast(message)
        self.assertTrue(server.disconnect(server.clientIds()[0]))
        await within(peers[0].lost)
        self.assertEqual(peers[0].messages(), sent)
        self.assertEqual(bytes(peers[0].received), b"".join(m + b"\n" for m in sent))
        await waitFor(lambda: len(peers[1].messages()) == len(sent), SHORT)

    @asyncTest
    async def test_stopAfterBroadcasts(self) -> None:
        """
        Every message broadcast before L{Server.stop} reaches the reading
        peers.
        """
        server, peers = await self.connectPeers(3)
        sent = [b"before stop %d" % n for n in range(100)]
        for message in sent:
            self.assertEqual(server.broadcast(message), 3)
        await within(server.stop(), 30)
        for peer in peers:
            await within(peer.lost)
            self.assertEqual(peer.messages(), sent)


class WriteTests(AppendTests):
    """
    The same, with the short cut disabled (the private names of Twisted
    off, as in a release L{tcpsc._compat} was not checked against): the
    broadcast calls C{write} for every connection.
    """

    appendable = False
