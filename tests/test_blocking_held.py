"""
Tests of the replies a message worker sends to its own connection while it
works through a batch of messages (L{tcpsc.blocking._BlockingConnection.send}):
held and queued at once, in order, within the output bound, and written
before the worker stops the server.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from twisted.internet import tcp
from twisted.trial.unittest import SkipTest

from tcpsc import _compat, blocking
from tests.test_blocking_support import TIMEOUT, BlockingTestCase, waitUntil


def readExactly(peer: socket.socket, length: int) -> bytes:
    """
    Read C{length} bytes from C{peer} (whose timeout bounds each read).
    """
    data = bytearray()
    while len(data) < length:
        chunk = peer.recv(length - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {length} bytes")
        data += chunk
    return bytes(data)


def readToEnd(peer: socket.socket) -> bytes:
    data = bytearray()
    while True:
        chunk = peer.recv(1 << 16)
        if not chunk:
            return bytes(data)
        data += chunk


class HeldRepliesTests(BlockingTestCase):
    def connectRaw(self, port: int) -> socket.socket:
        peer = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.addCleanup(peer.close)
        return peer

    def echoConnection(self) -> tuple[socket.socket, Any]:
        """
        A server whose message worker echoes each message with C{sendMsg},
        a raw peer connected to it, and the server's side of that
        connection.
        """
        side = self.makeServer(b"\n")
        server = side.server
        server.setWorkOnMessage(lambda clientId, message: server.sendMsg(clientId, message))
        self.startServer(side)
        peer = self.connectRaw(side.port)
        clientId = side.established.waitFor(1)[0]
        return peer, server._conns[clientId]

    def test_oneQueueingPerBatch(self) -> None:
        """
        The echoes of a batch of messages are queued for writing once per
        batch, not once per message, and arrive complete and in order.
        """
        self.patch(blocking, "HOLD_TIME", 60.0)
        peer, conn = self.echoConnection()
        counts = {"batches": 0, "accepted": 0, "put": 0}
        run, putAccepted, put = conn._run, conn.output.putAccepted, conn.output.put

        def countedRun(work: Any) -> None:
            counts["batches"] += 1
            run(work)

        def countedPutAccepted(frame: bytes) -> bool:
            counts["accepted"] += 1
            return putAccepted(frame)

        def countedPut(frame: bytes, timeout: float | None) -> bool:
            counts["put"] += 1
            return put(frame, timeout)

        conn._run = countedRun  # type: ignore[method-assign]
        conn.output.putAccepted = countedPutAccepted  # type: ignore[method-assign]
        conn.output.put = countedPut  # type: ignore[method-assign]
        messages = b"".join(b"%06d" % n + b"\n" for n in range(2000))
        peer.sendall(messages)
        self.assertEqual(readExactly(peer, len(messages)), messages)
        self.assertEqual(counts["put"], 0)
        self.assertGreaterEqual(counts["batches"], 1)
        self.assertLessEqual(counts["accepted"], counts["batches"])

    def test_flushSendsAtOnce(self) -> None:
        """
        On the private path the reactor thread hands what the output queue
        gathered to the socket in the turn that flushes it
        (L{_compat.writeNow}): the transport holds nothing afterwards and is
        not left registered for writing.
        """
        if not _compat.PRIVATE:
            raise SkipTest("the installed releases were not checked: no private path")
        peer, conn = self.echoConnection()
        flushed: list[tuple[int | None, bool]] = []
        looked = threading.Event()
        write = conn.output._write

        def watchedWrite(data: bytes) -> None:
            write(data)
            transport = conn.protocol.transport
            flushed.append(
                (_compat.unsentBytes(transport), transport in transport.reactor.getWriters())
            )
            looked.set()

        conn.output._write = watchedWrite
        peer.sendall(b"ping\n")
        self.assertEqual(readExactly(peer, 5), b"ping\n")
        # The peer may have the reply before the reactor thread looked.
        self.assertTrue(looked.wait(TIMEOUT))
        self.assertIs(type(conn.protocol.transport), tcp.Server)
        self.assertEqual(flushed, [(0, False)])

    def test_heldNoLongerThanHoldTime(self) -> None:
        """
        Replies held for longer than L{blocking.HOLD_TIME} are queued before
        the worker takes the next message of its batch: a worker that waits
        until the peer has the reply to the message before gets it.
        """
        self.patch(blocking, "HOLD_TIME", 0.0)
        side = self.makeServer(b"\n")
        server = side.server
        answered = threading.Event()
        waited: list[bool] = []

        def work(clientId: int, message: bytes) -> None:
            if message == b"first":
                server.sendMsg(clientId, b"reply")
            else:
                waited.append(answered.wait(TIMEOUT))

        server.setWorkOnMessage(work)
        self.startServer(side)
        peer = self.connectRaw(side.port)
        side.established.waitFor(1)
        peer.sendall(b"first\nsecond\n")
        self.assertEqual(readExactly(peer, 6), b"reply\n")
        answered.set()
        waitUntil(lambda: waited)
        self.assertEqual(waited, [True])

    def test_heldCountsAgainstTheBound(self) -> None:
        """
        A worker sending to its own connection, whose peer does not read,
        is refused once the output bound is reached (after C{sendTimeout}),
        and every message it was told was accepted arrives, in order.
        """
        side = self.makeServer(
            b"\n", maxMessageLength=None, sendTimeout=0.2, maxPendingOutput=128 * 1024
        )
        server = side.server
        results: list[tuple[int, bool]] = []

        def work(clientId: int, message: bytes) -> None:
            accepted = 0
            for n in range(100_000):
                if not server.sendMsg(clientId, b"%08d" % n + b"y" * 1015):
                    results.append((accepted, False))
                    return
                accepted += 1
            results.append((accepted, True))

        server.setWorkOnMessage(work)
        self.startServer(side)
        peer = self.connectRaw(side.port)
        side.established.waitFor(1)
        peer.sendall(b"go\n")
        waitUntil(lambda: results, timeout=2 * TIMEOUT)
        accepted, finished = results[0]
        self.assertFalse(finished)
        # The bound (128 KiB), what was held (64 KiB at most) and the
        # sockets' buffers, which are far below 100,000 KiB.
        self.assertLess(accepted, 50_000)
        data = readExactly(peer, accepted * 1024)
        expected = b"".join(b"%08d" % n + b"y" * 1015 + b"\n" for n in range(accepted))
        self.assertEqual(data, expected)

    def test_stopFromWorkerWritesHeld(self) -> None:
        """
        A worker that replies and then stops the server: the reply is
        written before the connection closes.
        """
        side = self.makeServer(b"\n")
        server = side.server

        def work(clientId: int, message: bytes) -> None:
            server.sendMsg(clientId, b"bye " + message)
            server.stop()

        server.setWorkOnMessage(work)
        self.startServer(side)
        peer = self.connectRaw(side.port)
        side.established.waitFor(1)
        peer.sendall(b"now\n")
        self.assertEqual(readToEnd(peer), b"bye now\n")

    def test_otherThreadsNotHeld(self) -> None:
        """
        A message sent to a connection from another thread while its worker
        is in a batch is not held with the worker's replies: it arrives
        while the worker still runs.
        """
        side = self.makeServer(b"\n")
        server = side.server
        release = threading.Event()
        released: list[bool] = []

        def work(clientId: int, message: bytes) -> None:
            server.sendMsg(clientId, b"held")
            released.append(release.wait(TIMEOUT))

        server.setWorkOnMessage(work)
        self.startServer(side)
        peer = self.connectRaw(side.port)
        clientId = side.established.waitFor(1)[0]
        peer.sendall(b"x\n")
        waitUntil(lambda: server._conns[clientId]._held)
        self.assertTrue(server.sendMsg(clientId, b"other"))
        self.assertEqual(readExactly(peer, 6), b"other\n")
        release.set()
        self.assertEqual(readExactly(peer, 5), b"held\n")
        waitUntil(lambda: released)
        self.assertEqual(released, [True])


class HeldRepliesClientTests(BlockingTestCase):
    def test_clientWorkerReplies(self) -> None:
        """
        A client's message worker answering the server: its replies arrive
        complete and in order.
        """
        side = self.makeServer(b"\n")
        server = side.server
        received: list[bytes] = []
        done = threading.Event()

        def work(clientId: int, message: bytes) -> None:
            received.append(message)
            if len(received) == 1000:
                done.set()

        server.setWorkOnMessage(work)
        self.startServer(side)
        client = self.makeClient(b"\n")
        client.client.setWorkOnMessage(lambda message: client.client.sendMsg(b"re " + message))
        self.startClient(client, side.port)
        clientId = side.established.waitFor(1)[0]
        payload = b"".join(b"%04d\n" % n for n in range(1000))
        # Raw bytes in one write, so that the client gets them in few reads.
        conn = server._conns[clientId]
        server._reactorThreadObject.callFromThread(conn.protocol.transport.write, payload)
        self.assertTrue(done.wait(TIMEOUT))
        self.assertEqual(received, [b"re %04d" % n for n in range(1000)])
