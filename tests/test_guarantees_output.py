"""
Back-pressure, both ways: the output a connection accepts is bounded
(C{maxPendingOutput}), a connection whose messages are not consumed stops
being read (the kernel's window closes on its peer), and L{Server.broadcast}
leaves out a client that does not read, by a documented policy, so that the
server's memory stays bounded while the other clients keep receiving.

The accounting itself is tested over L{StringTransport} (congestion is what
the socket transport signals by pausing its producer, which these tests do
by hand); everything else over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import io
import socket
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.protocols.basic import FileSender
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tcpsc import MessageProtocol, Server, StreamProtocol
from tcpsc._apps import Echo as EchoApp
from tcpsc._apps import StreamEcho
from tcpsc._framing import DEFAULT_MAX_PENDING_OUTPUT, _OutputTracker
from tcpsc._transports import socketTransport
from tests.test_guarantees_support import (
    SHORT,
    GuaranteeTestCase,
    RawPeer,
    asyncTest,
    clientTLS,
    serverTLS,
    shrinkBuffers,
    turn,
    waitFor,
    within,
)


class Recorder(MessageProtocol):
    """
    Records the output hooks.
    """

    def __init__(self) -> None:
        self.events: list[str] = []

    def outputPaused(self) -> None:
        self.events.append("paused")

    def outputResumed(self) -> None:
        self.events.append("resumed")


def connected(protocol: Any, **attributes: Any) -> tuple[Any, StringTransport]:
    for name, value in attributes.items():
        setattr(protocol, name, value)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class AccountingTests(SynchronousTestCase):
    """
    What sending accepts while the transport signals congestion.
    """

    def test_defaultBound(self) -> None:
        """
        The default bound is 4 MiB, for both modes; a ready connection
        registers its tracker as the transport's streaming producer.
        """
        self.assertEqual(DEFAULT_MAX_PENDING_OUTPUT, 4 * 1024 * 1024)
        self.assertEqual(MessageProtocol.maxPendingOutput, DEFAULT_MAX_PENDING_OUTPUT)
        self.assertEqual(StreamProtocol.maxPendingOutput, DEFAULT_MAX_PENDING_OUTPUT)
        _, transport = connected(MessageProtocol())
        self.assertIsInstance(transport.producer, _OutputTracker)
        self.assertTrue(transport.streaming)

    def test_uncongestedAcceptsAnyValidMessage(self) -> None:
        """
        While the transport does not signal congestion, the bound does not
        apply: a message longer than it is sent.
        """
        protocol, transport = connected(MessageProtocol(), maxPendingOutput=10)
        self.assertTrue(protocol.sendMessage(b"x" * 1000))
        self.assertEqual(len(transport.value()), 1001)

    def test_congestedBound(self) -> None:
        """
        Once congested, frames are accepted until C{maxPendingOutput} bytes
        were; the next is refused and nothing of it written; once the
        transport drained, sending is unbounded again.
        """
        protocol, transport = connected(Recorder(), maxPendingOutput=100)
        transport.producer.pauseProducing()
        transport.producer.pauseProducing()  # on every write while full
        self.assertEqual(protocol.events, ["paused"])
        for i in range(10):
            self.assertTrue(protocol.sendMessage(b"%09d" % i), i)  # 10 bytes framed
        written = transport.value()
        self.assertFalse(protocol.sendMessage(b""))
        self.assertFalse(protocol.sendMessage("text"))
        self.assertEqual(transport.value(), written)
        transport.producer.resumeProducing()
        self.assertEqual(protocol.events, ["paused", "resumed"])
        self.assertTrue(protocol.sendMessage(b"y" * 1000))
        self.assertEqual(transport.value(), written + b"y" * 1000 + b"\n")

    def test_partialRoom(self) -> None:
        """
        A frame that does not fit the room left is refused while a smaller
        one that fits is still accepted.
        """
        protocol, transport = connected(MessageProtocol(), maxPendingOutput=20)
        transport.producer.pauseProducing()
        self.assertTrue(protocol.sendMessage(b"a" * 14))
        self.assertFalse(protocol.sendMessage(b"b" * 6))
        self.assertTrue(protocol.sendMessage(b"c" * 4))
        self.assertFalse(protocol.sendMessage(b""))
        self.assertEqual(transport.value(), b"a" * 14 + b"\n" + b"c" * 4 + b"\n")

    def test_everyPathCounts(self) -> None:
        """
        The checked paths count too: text, a multi-byte delimiter with an
        append, frames written by L{MessageProtocol.sendFrame}, and
        L{StreamProtocol.sendData}.
        """
        protocol, transport = connected(
            MessageProtocol(), maxPendingOutput=12, delimiter=b"\r\n", messageAppend=b"!"
        )
        transport.producer.pauseProducing()
        self.assertTrue(protocol.sendMessage("abc"))  # 6 bytes
        frame = protocol.frame(b"de")
        self.assertTrue(protocol.sendFrame(frame))  # 5 bytes
        self.assertFalse(protocol.sendFrame(frame))
        self.assertFalse(protocol.sendMessage("f"))
        self.assertEqual(transport.value(), b"abc!\r\nde!\r\n")

        stream, streamTransport = connected(StreamProtocol(), maxPendingOutput=5)
        streamTransport.producer.pauseProducing()
        self.assertTrue(stream.sendData(b"1234"))
        self.assertFalse(stream.sendData(b"56"))
        self.assertTrue(stream.sendData(b""))
        self.assertTrue(stream.sendData(b"5"))
        self.assertEqual(streamTransport.value(), b"12345")

    def test_repliesToOneReadCount(self) -> None:
        """
        Replies made while handling a read (written together at its end)
        are counted as they are made.
        """

        class Replies(MessageProtocol):
            maxPendingOutput = 8
            results: list[bool]

            def messageReceived(self, message: bytes) -> None:
                self.results.append(self.sendMessage(message))

        protocol = Replies()
        protocol.results = []
        transport = StringTransport()
        protocol.makeConnection(transport)
        transport.producer.pauseProducing()
        protocol.dataReceived(b"abc\ndef\nghi\n")
        self.assertEqual(protocol.results, [True, True, False])
        self.assertEqual(transport.value(), b"abc\ndef\n")

    def test_noBound(self) -> None:
        """
        C{maxPendingOutput = None} registers no producer: nothing is counted
        or refused.
        """
        protocol, transport = connected(MessageProtocol(), maxPendingOutput=None)
        self.assertIsNone(transport.producer)
        self.assertTrue(protocol.sendMessage(b"x" * 100_000))

    def test_hookErrorsAreLogged(self) -> None:
        """
        An exception from C{outputPaused} is logged, not raised into the
        transport (which calls it in the middle of a write).
        """

        class Broken(MessageProtocol):
            def outputPaused(self) -> None:
                raise RuntimeError("hook")

        protocol, transport = connected(Broken(), maxPendingOutput=10)
        transport.producer.pauseProducing()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(protocol.sendMessage(b"x" * 20))


class OtherProducerTests(SynchronousTestCase):
    """
    A transport holds one producer: the tracker gives way to any other and
    comes back when it goes.
    """

    def test_givesWay(self) -> None:
        """
        Registering another producer on the transport works (no
        C{RuntimeError}); a congestion in progress ends (C{outputResumed},
        so that a protocol that paused reading is not stuck).  When that
        producer is unregistered, the tracker is registered again.
        """
        protocol, transport = connected(Recorder(), maxPendingOutput=10)
        tracker = transport.producer
        tracker.pauseProducing()
        other = FileSender()
        transport.registerProducer(other, True)
        self.assertIs(transport.producer, other)
        self.assertEqual(protocol.events, ["paused", "resumed"])
        self.assertTrue(protocol.sendMessage(b"x" * 100))
        transport.unregisterProducer()
        self.assertIs(transport.producer, tracker)

    def test_notWhileClosing(self) -> None:
        """
        The tracker does not come back on a closing transport, whose close
        it would delay.
        """
        _, transport = connected(MessageProtocol())
        transport.registerProducer(FileSender(), True)
        transport.loseConnection()
        transport.unregisterProducer()
        self.assertIsNone(transport.producer)

    def test_resumedWhileClosing(self) -> None:
        """
        A closing transport that resumes its paused tracker (instead of
        closing) finds it unregistered, so that it can close.
        """
        _, transport = connected(MessageProtocol())
        transport.producer.pauseProducing()
        transport.loseConnection()
        transport.producer.resumeProducing()
        self.assertIsNone(transport.producer)

    def test_detachedWhenLost(self) -> None:
        """
        When the connection is lost nothing of the tracker is left on the
        transport.
        """
        protocol, transport = connected(MessageProtocol())
        self.assertIn("registerProducer", vars(transport))
        protocol.connectionLost()
        self.assertNotIn("registerProducer", vars(transport))
        self.assertNotIn("unregisterProducer", vars(transport))
        self.assertIsNone(transport.producer)


class WriteBoundTests(GuaranteeTestCase):
    """
    Over real sockets: a peer that does not read gets at most
    C{maxPendingOutput} bytes queued; past it C{Server.send} returns
    C{False}; once it reads, it receives everything that was accepted.
    """

    bound = 128 * 1024
    size = 1024

    async def fillUntilRefused(self, server: Server, clientId: int) -> list[bytes]:
        accepted: list[bytes] = []
        for i in range(100_000):
            message = b"%08d" % i + b"m" * (self.size - 8)
            if not server.send(clientId, message):
                break
            accepted.append(message)
            if i % 32 == 0:
                await turn()  # the reactor writes to the socket meanwhile
        else:
            self.fail("send never returned False to a peer that does not read")
        return accepted

    def assertBounded(self, protocol: Any, slack: int) -> None:
        unsent = protocol._unsentBytes()
        self.assertLessEqual(unsent, self.bound + 64 * 1024 + self.size + slack)

    @asyncTest
    async def test_tcp(self) -> None:
        events: list[str] = []

        class Tracked(MessageProtocol):
            def outputPaused(self) -> None:
                events.append("paused")

            def outputResumed(self) -> None:
                events.append("resumed")

        server, port = await self.startServer(Tracked, maxPendingOutput=self.bound)
        peer = await self.connectRaw(port)
        peer.transport.pauseProducing()
        shrinkBuffers(peer.transport)
        await waitFor(
            lambda: server.clientIds(), SHORT, what="the server to register the connection"
        )
        [clientId] = server.clientIds()
        protocol = server.connection(clientId)
        shrinkBuffers(protocol.transport)

        accepted = await self.fillUntilRefused(server, clientId)
        self.assertEqual(events, ["paused"])
        self.assertBounded(protocol, 0)
        before = protocol._unsentBytes()
        self.assertFalse(server.send(clientId, b"r" * self.size))
        self.assertEqual(protocol._unsentBytes(), before)

        peer.transport.resumeProducing()
        await waitFor(lambda: len(peer.messages()) >= len(accepted), SHORT)
        self.assertEqual(peer.messages(), accepted)
        await waitFor(lambda: events[-1] == "resumed", SHORT)
        self.assertTrue(server.send(clientId, b"again"))
        await waitFor(lambda: peer.messages()[-1:] == [b"again"], SHORT)

    @asyncTest
    async def test_tls(self) -> None:
        """
        The same over TLS, where the bound is kept on the socket below TLS
        (ciphertext, a little larger than what was sent).
        """
        server, port = await self.startServer(tls=serverTLS(), maxPendingOutput=self.bound)
        received: list[bytes] = []
        client = await self.connectClient(port, tls=clientTLS(), onMessage=received.append)
        client.protocol.pauseReading()  # type: ignore[union-attr]
        shrinkBuffers(socketTransport(client.protocol.transport))  # type: ignore[union-attr]
        await waitFor(
            lambda: server.clientIds(), SHORT, what="the server to register the connection"
        )
        [clientId] = server.clientIds()
        protocol = server.connection(clientId)
        shrinkBuffers(socketTransport(protocol.transport))

        accepted = await self.fillUntilRefused(server, clientId)
        self.assertBounded(protocol, slack=64 * 1024 + self.bound // 50)
        client.protocol.resumeReading()  # type: ignore[union-attr]
        await waitFor(lambda: len(received) >= len(accepted), SHORT)
        self.assertEqual(received, accepted)


@implementer(IHalfCloseableProtocol)
class HalfClosingPeer(RawPeer):
    """
    A peer that notices the end of what the server sends (a half-close).
    """

    def __init__(self) -> None:
        super().__init__()
        self.readEnded = False

    def readConnectionLost(self) -> None:
        self.readEnded = True

    def writeConnectionLost(self) -> None:
        pass


class HalfCloseTests(GuaranteeTestCase):
    """
    A congested connection whose server closes its writing side: the
    half-close happens once everything is written.
    """

    @asyncTest
    async def test_halfCloseWhileCongested(self) -> None:
        server, port = await self.startServer()
        peer = await self.connectRaw(port, HalfClosingPeer())
        peer.transport.pauseProducing()
        shrinkBuffers(peer.transport)
        await waitFor(
            lambda: server.clientIds(), SHORT, what="the server to register the connection"
        )
        [clientId] = server.clientIds()
        protocol = server.connection(clientId)
        shrinkBuffers(protocol.transport)
        sent = 0
        while not protocol._congested and sent < 10_000:
            self.assertTrue(server.send(clientId, b"h" * 1023))
            sent += 1
        self.assertTrue(protocol._congested)
        protocol.transport.loseWriteConnection()
        peer.transport.resumeProducing()
        await waitFor(lambda: peer.readEnded, SHORT, what="the peer to read the end of the stream")
        self.assertEqual(len(peer.messages()), sent)


class ReadBackPressureTests(GuaranteeTestCase):
    """
    A connection whose messages are not consumed stops being read: its peer
    can send only what the kernel buffers hold, then its sends block.
    """

    @asyncTest
    async def test_kernelWindowCloses(self) -> None:
        delivered: list[bytes] = []
        protocols: list[MessageProtocol] = []

        class Slow(MessageProtocol):
            def connectionReady(self) -> None:
                protocols.append(self)

            def messageReceived(self, message: bytes) -> None:
                delivered.append(message)
                if len(delivered) == 1:
                    self.pauseReading()

        _, port = await self.startServer(Slow)
        sock = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.setblocking(False)
        await waitFor(lambda: protocols, SHORT, what="the server's protocol for the connection")

        # The stream is this chunk over and over, whatever each send takes.
        chunk = b"".join(b"%07d" % i + b"r" * 1016 + b"\n" for i in range(64))
        total = quiet = 0
        for _ in range(1000):
            sent = 0
            while True:
                try:
                    sent += sock.send(chunk[(total + sent) % len(chunk) :])
                except BlockingIOError:
                    break
            total += sent
            quiet = quiet + 1 if sent == 0 else 0
            if quiet >= 10:
                break
            await turn(0.01)  # the server reads now, unless it paused
        else:
            self.fail(f"the sender never blocked: {total} bytes sent")
        # The window closed: what was sent sits in kernel buffers, and the
        # paused connection holds only what it had read when it paused.
        self.assertLess(total, 64 * 1024 * 1024)
        self.assertEqual(len(delivered), 1)
        held = sum(map(len, protocols[0]._held))
        self.assertLessEqual(held, 256 * 1024)

        protocols[0].resumeReading()
        await waitFor(lambda: len(delivered) == total // 1024, SHORT)
        self.assertEqual(delivered[:3], [chunk[:1023], chunk[1024:2047], chunk[2048:3071]])


class EchoBackPressureTests(GuaranteeTestCase):
    """
    The daemon's echo applications pass back-pressure on: a client that
    writes much more than the output bound before reading gets every echo,
    because the server stops reading instead of dropping.
    """

    async def writeThenRead(self, app: type, total: int, message: bytes) -> RawPeer:
        server, port = await self.startServer(app, maxPendingOutput=32 * 1024)
        peer = await self.connectRaw(port)
        peer.transport.pauseProducing()
        shrinkBuffers(peer.transport)
        await waitFor(
            lambda: server.clientIds(), SHORT, what="the server to register the connection"
        )
        shrinkBuffers(server.connection(server.clientIds()[0]).transport)
        peer.transport.write(message * (total // len(message)))
        # The client reads only once the server's output is congested.
        await waitFor(
            lambda: server.connection(server.clientIds()[0])._congested,
            SHORT,
            what="the server's output to the connection to be congested",
        )
        peer.transport.resumeProducing()
        await waitFor(lambda: len(peer.received) >= total, SHORT)
        return peer

    @asyncTest
    async def test_echo(self) -> None:
        message = b"e" * 1023 + b"\n"
        peer = await self.writeThenRead(EchoApp, 2 * 1024 * 1024, message)
        self.assertEqual(bytes(peer.received), message * 2048)

    @asyncTest
    async def test_streamEcho(self) -> None:
        message = bytes(range(256)) * 4
        peer = await self.writeThenRead(StreamEcho, 2 * 1024 * 1024, message)
        self.assertEqual(bytes(peer.received), message * 2048)


class BroadcastTests(GuaranteeTestCase):
    """
    L{Server.broadcast} with one client that never reads and three that do.
    """

    bound = 32 * 1024

    async def setUpClients(self, **kwargs: Any) -> tuple[Server, RawPeer, Any, list[list[bytes]]]:
        server, port = await self.startServer(maxPendingOutput=self.bound, **kwargs)
        slow = await self.connectRaw(port)
        slow.transport.pauseProducing()
        shrinkBuffers(slow.transport)
        await waitFor(lambda: len(server.clientIds()) == 1, SHORT)
        slowProtocol = server.connection(server.clientIds()[0])
        shrinkBuffers(slowProtocol.transport)
        readers: list[list[bytes]] = [[], [], []]
        for received in readers:
            await self.connectClient(port, onMessage=received.append)
        await waitFor(lambda: len(server.clientIds()) == 4, SHORT)
        return server, slow, slowProtocol, readers

    @asyncTest
    async def test_slowConsumerSkipped(self) -> None:
        """
        The slow client's pending output stays within the bound while the
        others receive every message, in order; broadcast returns how many
        it was written to, skips are counted, and the episode is logged
        once.
        """
        events = self.captureLogs()
        server, slow, slowProtocol, readers = await self.setUpClients()
        sent: list[bytes] = []
        counts: list[int] = []
        largest = 0
        for _ in range(40):
            for _ in range(25):
                message = b"%06d" % len(sent) + b"b" * 1018
                counts.append(server.broadcast(message))
                sent.append(message)
            largest = max(largest, slowProtocol._unsentBytes())
            await waitFor(lambda: all(len(r) == len(sent) for r in readers), SHORT)
        for received in readers:
            self.assertEqual(received, sent)
        self.assertEqual(counts[0], 4)
        self.assertEqual(counts[-1], 3)
        self.assertEqual(set(counts), {3, 4})
        self.assertLessEqual(largest, self.bound + 64 * 1024 + 2 * 1024)
        self.assertEqual(server.broadcastSkips, counts.count(3))
        skipped = self.warnings(events, "misses broadcasts")
        self.assertEqual(len(skipped), 1, skipped)
        self.assertEqual(skipped[0]["peer"], slow.address)
        self.assertFalse(slow.lost.called)

    @asyncTest
    async def test_maxBroadcastSkips(self) -> None:
        """
        With C{maxBroadcastSkips}, the slow client is disconnected once it
        missed that many broadcasts, and logged; the others go on.
        """
        events = self.captureLogs()
        server, slow, _, readers = await self.setUpClients(maxBroadcastSkips=5)
        sent: list[bytes] = []
        for _ in range(20):
            for _ in range(25):
                message = b"%06d" % len(sent) + b"c" * 1018
                server.broadcast(message)
                sent.append(message)
            await waitFor(lambda: all(len(r) == len(sent) for r in readers), SHORT)
            if len(server.clientIds()) == 3:
                break
        self.assertEqual(len(server.clientIds()), 3)
        # A peer that does not read cannot see the end either, until it reads.
        slow.transport.resumeProducing()
        await within(slow.lost)
        self.assertEqual(server.broadcastSkips, 5)
        closing = self.warnings(events, "missed {missed} in a row")
        self.assertEqual(len(closing), 1)
        self.assertEqual(closing[0]["peer"], slow.address)
        self.assertEqual(len(server.clientIds()), 3)
        message = b"after"
        self.assertEqual(server.broadcast(message), 3)
        await waitFor(lambda: all(r[-1] == message for r in readers), SHORT)


class ProducerCoexistenceTests(GuaranteeTestCase):
    """
    An application may still register its own producer on a connection (a
    file sender here): the bound gives way to it and comes back after.
    """

    async def sendFile(self, tls: bool) -> None:
        data = bytes(i % 251 for i in range(1_000_000))
        done: list[object] = []

        class SendsFile(StreamProtocol):
            def connectionReady(self) -> None:
                sender = FileSender()
                sender.beginFileTransfer(io.BytesIO(data), self.transport).addCallback(done.append)

        with capturedLogs() as events:
            server, port = await self.startServer(SendsFile, tls=serverTLS() if tls else None)
            received: list[bytes] = []
            await self.connectClient(
                port, stream=True, onMessage=received.append, tls=clientTLS() if tls else None
            )
            await waitFor(lambda: sum(map(len, received)) >= len(data), SHORT)
        self.assertEqual(b"".join(received), data)
        self.assertEqual(len(done), 1)
        self.assertEqual(
            [e for e in events if e.get("log_level") in (LogLevel.error, LogLevel.critical)], []
        )
        [clientId] = server.clientIds()
        protocol = server.connection(clientId)
        await waitFor(
            lambda: isinstance(socketTransport(protocol.transport).producer, _OutputTracker),
            SHORT,
            what="the output tracker to be the transport's producer",
        )
        self.assertTrue(server.send(clientId, b"more"))
        await waitFor(
            lambda: b"".join(received).endswith(b"more"),
            SHORT,
            what="the message sent after the file to arrive",
        )

    @asyncTest
    async def test_tcp(self) -> None:
        await self.sendFile(tls=False)

    @asyncTest
    async def test_tls(self) -> None:
        await self.sendFile(tls=True)
