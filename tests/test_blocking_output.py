"""
Tests of L{tcpsc._output}: the output queue of the blocking API (batched
flushing, back-pressure, bounded memory, closing).
"""

from __future__ import annotations

import socket
import threading
import time

from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.trial.unittest import SynchronousTestCase

from tcpsc._output import OutputQueue
from tcpsc._transports import socketTransport
from tests.test_blocking_support import (
    TIMEOUT,
    BlockingTestCase,
    Recorder,
    echoServer,
    waitUntil,
)


class FakeReactor:
    """
    Collects C{callFromThread} calls; the test runs them as "the reactor".
    """

    def __init__(self) -> None:
        self.calls: list = []

    def callFromThread(self, f, *args) -> None:
        self.calls.append((f, args))

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)


class OutputQueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.written: list[bytes] = []
        self.queue = OutputQueue(self.reactor.callFromThread, self.written.append, limit=100)

    def test_oneFlushForManyFrames(self) -> None:
        """
        Frames queued before the flush runs are written as one write, after
        one hop to the reactor.
        """
        for n in range(10):
            self.assertTrue(self.queue.put(b"%d," % n, 0))
        self.assertEqual(len(self.reactor.calls), 1)
        self.reactor.run()
        self.assertEqual(self.written, [b"0,1,2,3,4,5,6,7,8,9,"])
        self.assertEqual(self.queue.queued, 0)
        self.queue.put(b"again", 0)
        self.assertEqual(len(self.reactor.calls), 1)

    def test_pausedHoldsFrames(self) -> None:
        """
        While the transport has paused the queue, nothing is written; on
        resume, everything queued is.
        """
        self.queue.pauseProducing()
        self.queue.put(b"a", 0)
        self.queue.put(b"b", 0)
        self.reactor.run()
        self.assertEqual(self.written, [])
        self.assertEqual(self.queue.queued, 2)
        self.queue.resumeProducing()
        self.assertEqual(self.written, [b"ab"])

    def test_fullQueueRefusesOrWaits(self) -> None:
        """
        With C{limit} bytes queued, C{put} refuses at once with timeout 0,
        gives up after a positive timeout, and succeeds once a flush made
        room.
        """
        self.queue.pauseProducing()
        self.assertTrue(self.queue.put(b"x" * 90, 0))
        self.assertFalse(self.queue.put(b"y" * 20, 0))
        started = time.monotonic()
        self.assertFalse(self.queue.put(b"y" * 20, 0.05))
        self.assertGreaterEqual(time.monotonic() - started, 0.04)
        self.assertTrue(self.queue.put(b"z" * 10, 0))
        result = Recorder()
        waiter = threading.Thread(target=lambda: result(self.queue.put(b"w" * 20, TIMEOUT)))
        waiter.start()
        self.addCleanup(waiter.join, TIMEOUT)
        self.assertEqual(result.snapshot(), [])
        self.queue.resumeProducing()
        self.assertEqual(result.waitFor(1), [True])
        self.assertEqual(self.written, [b"x" * 90 + b"z" * 10])

    def test_largeFrameWhenEmpty(self) -> None:
        """
        A frame larger than C{limit} is accepted when nothing is queued.
        """
        self.assertTrue(self.queue.put(b"L" * 1000, 0))
        self.assertFalse(self.queue.put(b"s", 0))
        self.reactor.run()
        self.assertEqual(self.written, [b"L" * 1000])

    def test_closeReleasesWaiters(self) -> None:
        """
        Closing drops what is queued and makes waiting and later C{put}s
        return C{False}.
        """
        self.queue.pauseProducing()
        self.queue.put(b"x" * 100, 0)
        result = Recorder()
        waiter = threading.Thread(target=lambda: result(self.queue.put(b"y", TIMEOUT)))
        waiter.start()
        self.addCleanup(waiter.join, TIMEOUT)
        self.queue.close()
        self.assertEqual(result.waitFor(1), [False])
        self.assertFalse(self.queue.put(b"z", 0))
        self.queue.resumeProducing()
        self.reactor.run()
        self.assertEqual(self.written, [])

    def test_finishWritesEverything(self) -> None:
        """
        L{OutputQueue.finish} writes what is queued even while paused,
        then refuses more and unregisters from the transport.
        """
        transport = StringTransport()
        self.queue.attach(transport)
        self.assertIs(transport.producer, self.queue)
        self.queue.pauseProducing()
        self.queue.put(b"a", 0)
        self.queue.put(b"b", 0)
        self.queue.finish()
        self.assertEqual(self.written, [b"ab"])
        self.assertIsNone(transport.producer)
        self.assertFalse(self.queue.put(b"c", 0))

    def test_resumeWhileClosingUnregisters(self) -> None:
        """
        A closing transport that resumes the queue gets it unregistered, so
        that it can close (a TCP transport resumes a paused producer instead
        of closing).
        """
        transport = StringTransport()
        self.queue.attach(transport)
        self.queue.pauseProducing()
        transport.loseConnection()
        self.queue.resumeProducing()
        self.assertIsNone(transport.producer)

    def test_stopProducingCloses(self) -> None:
        """
        When the transport's connection is lost, the queue closes.
        """
        self.queue.attach(StringTransport())
        self.queue.stopProducing()
        self.assertTrue(self.queue.closed)
        self.assertFalse(self.queue.put(b"x", 0))

    def test_socketTransport(self) -> None:
        """
        The producer goes on the transport below any protocol wrapper (such
        as TLS), where registering does not delay closing.
        """
        transport = StringTransport()
        wrapper = ProtocolWrapper(WrappingFactory(None), Protocol())
        wrapper.makeConnection(transport)
        self.assertIs(socketTransport(wrapper), transport)
        self.assertIs(socketTransport(transport), transport)


class RealSocketTests(BlockingTestCase):
    """
    Back-pressure against a real socket.
    """

    def test_pausedQueueStillCloses(self) -> None:
        """
        A server stopped while its output to a slow reader is paused writes
        everything accepted and closes as soon as the reader has read it,
        without waiting for C{closeTimeout}.
        """
        side = echoServer(
            self,
            b"\n",
            maxMessageLength=None,
            sendTimeout=0.2,
            maxPendingOutput=128 * 1024,
            closeTimeout=60.0,
        )
        server = side.server
        reader = socket.create_connection(("127.0.0.1", side.port), timeout=TIMEOUT)
        self.addCleanup(reader.close)
        readerId = side.established.waitFor(1)[0]
        chunk = b"z" * 32767 + b"\n"
        accepted = 0
        for _ in range(2000):
            if not server.sendMsg(readerId, chunk[:-1]):
                break
            accepted += 1
        output = server._conns[readerId].output
        self.assertTrue(output.paused)
        received = bytearray()

        def read() -> None:
            while True:
                data = reader.recv(1 << 20)
                if not data:
                    return
                received.extend(data)

        thread = threading.Thread(target=read)
        thread.start()
        started = time.monotonic()
        server.stop()
        self.assertLess(time.monotonic() - started, 20.0)
        thread.join(TIMEOUT)
        self.assertFalse(thread.is_alive())
        self.assertEqual(len(received), accepted * len(chunk))
        waitUntil(lambda: side.closed.snapshot() == [readerId])
