"""
Regression tests of L{tcpsc.blocking} for the C++ original's bugs that apply
to a Python port (numbered as the original's bug list numbers them):
connection churn (B3), restart (B4, B5), slow readers (B10) and slow
workers, an idle connection stalling TLS handshakes (B11), message order
(B9), an unresolvable host (B13), stopping from a callback (B20), and
flushing on stop.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from tcpsc import StartError
from tcpsc.blocking import TcpClient, TcpServer, TlsClient
from tests._helpers import openFileDescriptors
from tests.test_blocking_support import (
    TIMEOUT,
    BlockingTestCase,
    Recorder,
    echoServer,
    waitUntil,
)

#: Connect/send/close cycles of each churn thread: a count, not a time, so
#: that nothing asserted depends on the machine's speed; ten times more with
#: TCPSC_LONG_TESTS=1 in the environment (see tests/README.md).
CHURN_CYCLES = 1000 if os.environ.get("TCPSC_LONG_TESTS", "") not in ("", "0") else 100
CHURN_THREADS = 8


def assertClosedByPeer(testCase: BlockingTestCase, peer: socket.socket) -> None:
    """
    Wait (up to the socket's timeout) until the other end closes or aborts
    C{peer}, sending nothing before.
    """
    try:
        data = peer.recv(1)
    except ConnectionResetError:
        return
    testCase.assertEqual(data, b"")


class ChurnTests(BlockingTestCase):
    """
    B3: connection churn crashes the original (fd-number ids reused under a
    running thread).
    """

    def test_churn(self) -> None:
        """
        Eight threads connect, exchange a message and close, over and over
        (L{CHURN_CYCLES} times each): every exchange works, ids are never
        reused, the server stays up and no file descriptor leaks.
        """
        side = echoServer(self, b"\n")
        # One connection first, so that everything created once (the
        # resolver's threads, the worker pool) exists before counting.
        warm, _ = self.connect(side, b"\n")
        warm.client.stop()
        side.closed.waitFor(1)
        before = openFileDescriptors()
        failures: list[BaseException] = []
        cycles = Recorder()

        def churn(n: int) -> None:
            try:
                for _ in range(CHURN_CYCLES):
                    got = Recorder()
                    client = TcpClient(b"\n")
                    client.setWorkOnMessage(got)
                    client.start("127.0.0.1", side.port)
                    assert client.sendMsg(b"churn %d" % n)
                    assert got.waitFor(1) == [b"churn %d" % n]
                    client.stop()
                    cycles(n)
            except BaseException as e:  # reported by the main thread
                failures.append(e)

        threads = [threading.Thread(target=churn, args=(n,)) for n in range(CHURN_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(CHURN_CYCLES + TIMEOUT)
        self.assertEqual(failures, [])
        total = len(cycles)
        self.assertGreater(total, CHURN_THREADS)
        waitUntil(lambda: len(side.closed) == total + 1)
        established = side.established.snapshot()
        self.assertEqual(len(established), len(set(established)))
        self.assertEqual(side.server.getAllClientIds(), [])
        waitUntil(lambda: openFileDescriptors() <= before)
        self.assertTrue(side.server.isRunning())
        after, _ = self.connect(side, b"\n")
        self.assertTrue(after.client.sendMsg(b"still there"))
        self.assertEqual(after.messages.waitFor(1), [b"still there"])


class RestartTests(BlockingTestCase):
    """
    B4/B5: the original aborts when restarted, and cannot rebind its port
    for a minute after connections existed.
    """

    def test_restartServer(self) -> None:
        """
        A server stopped with connections starts again at once on the same
        port, serves, and keeps counting ids up.
        """
        side = echoServer(self, b"\n")
        port = side.port
        client, first = self.connect(side, b"\n")
        self.assertTrue(client.client.sendMsg(b"one"))
        self.assertEqual(client.messages.waitFor(1), [b"one"])
        side.server.stop()
        self.assertEqual(side.server.start(port, interface="127.0.0.1"), port)
        client2, second = self.connect(side, b"\n")
        self.assertGreater(second, first)
        self.assertTrue(client2.client.sendMsg(b"two"))
        self.assertEqual(client2.messages.waitFor(1), [b"two"])

    def test_restartClient(self) -> None:
        """
        A client that received messages is stopped and started again and
        works (the original aborts on its next message).
        """
        side = echoServer(self, b"\n")
        client = self.makeClient(b"\n")
        for round in range(3):
            self.startClient(client, side.port)
            self.assertTrue(client.client.sendMsg(b"round %d" % round))
            client.messages.waitFor(round + 1)
            client.client.stop()
            self.assertFalse(client.client.isRunning())
        self.assertEqual(client.messages.snapshot(), [b"round 0", b"round 1", b"round 2"])
        self.assertEqual(len(client.closed.waitFor(3)), 3)

    def test_restartAfterServerClosed(self) -> None:
        """
        A client whose server went away can start again once the server is
        back.
        """
        side = echoServer(self, b"\n")
        client, _ = self.connect(side, b"\n")
        side.server.stop()
        client.closed.waitFor(1)
        side.server.start(side.port, interface="127.0.0.1")
        self.startClient(client, side.port)
        self.assertTrue(client.client.sendMsg(b"back"))
        self.assertEqual(client.messages.waitFor(1), [b"back"])


class SlowPeerTests(BlockingTestCase):
    """
    B10: a client that stops reading blocks every sender of the original.
    """

    def test_slowReaderDoesNotBlockOthers(self) -> None:
        """
        Sending to a client that does not read fills a bounded queue, then
        C{sendMsg} gives up after C{sendTimeout}; meanwhile another client
        is served without delay.
        """
        limit = 256 * 1024
        side = echoServer(
            self, b"\n", maxMessageLength=None, sendTimeout=0.5, maxPendingOutput=limit
        )
        server = side.server
        slow = socket.socket()
        self.addCleanup(slow.close)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", side.port))
        slowId = side.established.waitFor(1)[0]
        fast, _ = self.connect(side, b"\n")
        chunk = b"x" * 65536
        outcome = Recorder()

        def flood() -> None:
            started = time.monotonic()
            for sent in range(4000):  # at most 256 MiB
                if not server.sendMsg(slowId, chunk):
                    outcome(sent, time.monotonic() - started)
                    return
            outcome(None, time.monotonic() - started)

        sender = threading.Thread(target=flood)
        sender.start()
        self.addCleanup(sender.join, TIMEOUT)
        output = server._conns[slowId].output
        waitUntil(lambda: output.paused and output.queued > 0)
        for n in range(20):
            self.assertTrue(fast.client.sendMsg(b"ping %d" % n))
            self.assertEqual(fast.messages.waitFor(n + 1)[-1], b"ping %d" % n)
        self.assertLessEqual(output.queued, limit + len(chunk) + 1)
        sent, elapsed = outcome.waitFor(1)[0]
        self.assertIsNotNone(sent, "sendMsg never gave up")
        self.assertLess(elapsed, TIMEOUT)
        self.assertLessEqual(output.queued, limit + len(chunk) + 1)

    def test_slowWorkerPausesOnlyItsConnection(self) -> None:
        """
        A worker that blocks holds up only its own connection: that
        connection stops being read (so its client's C{sendMsg} eventually
        gives up), another connection is served meanwhile, and once the
        worker goes on every message accepted arrives, in order.
        """
        gate = threading.Event()
        self.addCleanup(gate.set)
        side = self.makeServer(b"\n")
        server = side.server
        received: dict[int, list[bytes]] = {}
        blockedId: list[int] = []

        def work(clientId: int, message: bytes) -> None:
            if blockedId and clientId == blockedId[0]:
                gate.wait(TIMEOUT)
            received.setdefault(clientId, []).append(message)
            side.messages(clientId, message)
            if message.startswith(b"ping"):
                server.sendMsg(clientId, message)

        server.setWorkOnMessage(work)
        self.startServer(side)
        flooder, flooderId = self.connect(side, b"\n", sendTimeout=0.3)
        blockedId.append(flooderId)
        other, otherId = self.connect(side, b"\n")
        message = b"y" * 1023
        accepted = 0
        for _ in range(50_000):  # at most 50 MiB
            if not flooder.client.sendMsg(message):
                break
            accepted += 1
        else:
            self.fail("the flooding client's sendMsg never gave up")
        connection = server._conns[flooderId]
        self.assertTrue(connection._readPaused)
        self.assertTrue(other.client.sendMsg(b"ping"))
        self.assertEqual(other.messages.waitFor(1), [b"ping"])
        self.assertEqual(received[otherId], [b"ping"])
        gate.set()
        side.messages.waitFor(accepted + 1, timeout=30)
        self.assertEqual(received[flooderId], [message] * accepted)


class HandshakeStallTests(BlockingTestCase):
    """
    B11: one idle TCP connection stalls every TLS handshake of the
    original.
    """

    tls = True

    def test_idleConnectionDoesNotBlockHandshakes(self) -> None:
        """
        While a TCP connection that sends nothing is open, TLS clients
        connect: all three are established while the idle one is still open,
        and the idle one is dropped after C{handshakeTimeout}.
        """
        side = self.makeServer(b"\n", handshakeTimeout=3.0)
        self.startServer(side)
        idle = socket.create_connection(("127.0.0.1", side.port), timeout=TIMEOUT)
        self.addCleanup(idle.close)
        for _ in range(3):
            client = self.makeClient(b"\n")
            self.startClient(client, side.port)
        self.assertEqual(len(side.established.waitFor(3)), 3)
        # Still open, nothing to read: not closed (b"") and no data.
        idle.setblocking(False)
        with self.assertRaises(BlockingIOError):
            idle.recv(1, socket.MSG_PEEK)
        idle.settimeout(TIMEOUT)
        assertClosedByPeer(self, idle)


class OrderTests(BlockingTestCase):
    """
    B9: the original delivers the messages of one connection out of order.
    """

    def test_order100000(self) -> None:
        """
        100,000 messages from one client reach the server's worker in the
        order sent, and their echoes come back in that order.
        """
        count = 100_000
        side = echoServer(self, b"\n")
        client, clientId = self.connect(side, b"\n")
        sent = [b"%d" % i for i in range(count)]
        for message in sent:
            self.assertTrue(client.client.sendMsg(message))
        self.assertEqual(side.messages.waitFor(count, timeout=60), [(clientId, m) for m in sent])
        self.assertEqual(client.messages.waitFor(count, timeout=60), sent)


class UnresolvableHostTests(BlockingTestCase):
    """
    B13: the original crashes on a host name that does not resolve.
    """

    def test_tcp(self) -> None:
        client = TcpClient(b"\n")
        with self.assertRaises(StartError) as raised:
            client.start("host.invalid", 8081)
        self.assertEqual(raised.exception.code, 50)
        self.assertIn("host.invalid", str(raised.exception))
        self.assertFalse(client.isRunning())

    def test_tls(self) -> None:
        client = TlsClient(b"\n")
        client.setCertificates(self.certs.ca, self.certs.client, self.certs.clientKey)
        with self.assertRaises(StartError) as raised:
            client.start("host.invalid", 8081)
        self.assertEqual(raised.exception.code, 50)


class StopFromWorkerTests(BlockingTestCase):
    """
    B20: calling C{stop()} from a callback deadlocks the original.
    """

    def test_serverStopFromMessageWorker(self) -> None:
        """
        A message worker stops the server: C{stop()} returns, every
        connection closes, and the closed worker runs for each, that of the
        calling connection after the calling worker returned.
        """
        side = self.makeServer(b"\n")
        server = side.server
        returned = Recorder()

        def work(clientId: int, message: bytes) -> None:
            server.stop()
            returned(clientId, len(side.closed))

        server.setWorkOnMessage(work)
        self.startServer(side)
        caller, callerId = self.connect(side, b"\n")
        other, otherId = self.connect(side, b"\n")
        self.assertTrue(caller.client.sendMsg(b"stop"))
        clientId, closedBefore = returned.waitFor(1)[0]
        self.assertEqual(clientId, callerId)
        self.assertEqual(closedBefore, 1)  # the other connection's
        self.assertEqual(side.closed.waitFor(2), [otherId, callerId])
        self.assertFalse(server.isRunning())
        caller.closed.waitFor(1)
        other.closed.waitFor(1)
        side.server.start(side.port, interface="127.0.0.1")

    def test_concurrentStopsFromWorkers(self) -> None:
        """
        Two connections' workers stop the server at the same time: both
        return.
        """
        side = self.makeServer(b"\n")
        server = side.server
        arrived = threading.Barrier(2, timeout=TIMEOUT)
        returned = Recorder()

        def work(clientId: int, message: bytes) -> None:
            arrived.wait()
            server.stop()
            returned(clientId)

        server.setWorkOnMessage(work)
        self.startServer(side)
        clients = [self.connect(side, b"\n") for _ in range(2)]
        for client, _ in clients:
            client.client.sendMsg(b"stop")
        self.assertEqual(sorted(returned.waitFor(2)), sorted(i for _, i in clients))
        self.assertEqual(len(side.closed.waitFor(2)), 2)

    def test_clientStopFromItsWorker(self) -> None:
        """
        A client's message worker stops the client.
        """
        side = echoServer(self, b"\n")
        client = self.makeClient(b"\n")
        returned = Recorder()

        def work(message: bytes) -> None:
            client.client.stop()
            returned(message)

        client.client.setWorkOnMessage(work)
        self.startClient(client, side.port)
        self.assertTrue(client.client.sendMsg(b"bye"))
        self.assertEqual(returned.waitFor(1), [b"bye"])
        client.closed.waitFor(1)
        self.assertFalse(client.client.isRunning())


class StopFlushesTests(BlockingTestCase):
    """
    C{stop()} writes what C{sendMsg} accepted before closing.
    """

    def test_serverStopFlushes(self) -> None:
        side = self.server(b"\n")
        client, clientId = self.connect(side, b"\n")
        sent = [b"%d" % i for i in range(5000)]
        for message in sent:
            self.assertTrue(side.server.sendMsg(clientId, message))
        side.server.stop()
        client.closed.waitFor(1)
        self.assertEqual(client.messages.snapshot(), sent)

    def test_clientStopFlushes(self) -> None:
        side = self.server(b"\n")
        client, clientId = self.connect(side, b"\n")
        sent = [b"%d" % i for i in range(5000)]
        for message in sent:
            self.assertTrue(client.client.sendMsg(message))
        client.client.stop()
        side.closed.waitFor(1)
        self.assertEqual(side.messages.snapshot(), [(clientId, m) for m in sent])


class WorkerErrorTests(BlockingTestCase):
    """
    An exception in a worker is logged; it neither ends the process (the
    original terminates, B20) nor stops the connection.
    """

    def test_workerRaises(self) -> None:
        side = self.makeServer(b"\n")
        server = side.server

        def work(clientId: int, message: bytes) -> None:
            if message == b"boom":
                raise ValueError("boom")
            side.messages(clientId, message)

        server.setWorkOnMessage(work)
        self.startServer(side)
        client, clientId = self.connect(side, b"\n")
        client.client.sendMsg(b"boom")
        client.client.sendMsg(b"after")
        self.assertEqual(side.messages.waitFor(1), [(clientId, b"after")])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertTrue(client.client.isRunning())


class ConnectionLimitTests(BlockingTestCase):
    """
    The connection limit is real (the original's "4096" is only the listen
    backlog).
    """

    def test_limit(self) -> None:
        side = self.server(b"\n", maxConnections=1)
        self.connect(side, b"\n")
        extra = socket.create_connection(("127.0.0.1", side.port), timeout=TIMEOUT)
        self.addCleanup(extra.close)
        assertClosedByPeer(self, extra)
        self.assertEqual(len(side.server.getAllClientIds()), 1)


class EchoHelperTests(BlockingTestCase):
    """
    The echo server the tests above rely on echoes.
    """

    def test_echo(self) -> None:
        side = echoServer(self, b"\n")
        client, clientId = self.connect(side, b"\n")
        self.assertTrue(client.client.sendMsg(b"hi"))
        self.assertEqual(client.messages.waitFor(1), [b"hi"])
        self.assertEqual(side.messages.snapshot(), [(clientId, b"hi")])
        self.assertIsInstance(side.server, TcpServer)
