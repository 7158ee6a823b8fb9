"""
The first-byte and handshake timeouts of a server's connections, watched
with one timer for all the connections waiting rather than one each
(C{tcpsc._server._Deadlines}): each connection is still closed at its own
deadline, never before, with the same log event and count; and the timer
runs only while some connection waits.  Driven deterministically with
L{Clock} and string transports.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tcpsc import Server, Settings
from tcpsc._server import _Deadlines, _ListeningFactory
from tests.test_properties import FakeTransport, _PassThroughTLS


class DeadlineTests(SynchronousTestCase):
    """
    Connections waiting for their first bytes or their handshake.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[dict[str, Any]] = []
        self.closed: list[tuple[int, str]] = []
        self.server = Server(
            firstByteTimeout=10.0,
            handshakeTimeout=4.0,
            closeTimeout=1.0,
            reactor=self.clock,
            onClosed=lambda i, why: self.closed.append((i, why)),
        )
        self.plain = _ListeningFactory(self.server, None)
        self.tls = _ListeningFactory(self.server, _PassThroughTLS())  # type: ignore[arg-type]
        self.port = 40000
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def connect(self, tls: bool = False) -> tuple[Any, FakeTransport]:
        self.port += 1
        factory = self.tls if tls else self.plain
        protocol = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", self.port))
        transport = FakeTransport(self.port, tls)
        protocol.makeConnection(transport)
        transport.protocol = protocol
        return protocol, transport

    def timers(self) -> int:
        """
        The timers of the server's deadlines (not those of the closes, nor
        of the log summaries).
        """
        return sum(
            isinstance(getattr(call.func, "__self__", None), _Deadlines)
            for call in self.clock.getDelayedCalls()
        )

    def test_eachClosedAtItsDeadline(self) -> None:
        """
        Silent connections accepted at 0, 4 and 8 s are each closed at
        their own deadline (10, 14, 18 s), not a moment before, counted and
        logged as before; one that sent bytes is kept.
        """
        first, firstTransport = self.connect()
        self.clock.advance(4)
        talker, talkerTransport = self.connect()
        self.clock.advance(4)
        third, thirdTransport = self.connect()
        talker.dataReceived(b"hello\n")
        self.clock.advance(1.999)
        self.assertFalse(firstTransport.disconnecting)
        self.clock.advance(0.001)
        self.assertTrue(firstTransport.disconnecting)
        self.assertEqual(self.server.eventCounts["firstByteTimeout"], 1)
        firstTransport.finish()
        self.assertEqual(
            self.closed, [(first.connectionId, "nothing received within 10 s (firstByteTimeout)")]
        )
        self.clock.advance(7.999)
        self.assertFalse(thirdTransport.disconnecting)
        self.clock.advance(0.001)
        self.assertTrue(thirdTransport.disconnecting)
        self.assertEqual(self.server.eventCounts["firstByteTimeout"], 2)
        logged = [e for e in self.events if e.get("log_format", "").startswith("Closing conn")]
        self.assertEqual(
            [e["connectionId"] for e in logged], [first.connectionId, third.connectionId]
        )
        thirdTransport.finish()
        self.clock.advance(100)
        self.assertFalse(talkerTransport.disconnecting)

    def test_oneTimer(self) -> None:
        """
        However many connections wait, the server has one timer for them.
        """
        for _ in range(50):
            self.connect()
            self.clock.advance(0.1)
        self.assertEqual(self.timers(), 1)

    def test_timerSetRarely(self) -> None:
        """
        Under a steady flow of connections that each send their first bytes
        soon, with a few always waiting, the timer is set once, not once per
        connection.
        """
        made: list[float] = []
        callLater = self.clock.callLater

        def counting(delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(getattr(f, "__self__", None), _Deadlines):
                made.append(delay)
            return callLater(delay, f, *args, **kwargs)

        self.clock.callLater = counting  # type: ignore[method-assign]
        waiting = [self.connect() for _ in range(3)]
        for _ in range(400):
            waiting.append(self.connect())
            protocol, transport = waiting.pop(0)
            protocol.dataReceived(b"hi\n")
            self.assertFalse(transport.disconnecting)
            self.assertEqual(self.timers(), 1)
            transport.finish()
            self.clock.advance(0.05)
        # 400 connections over 20 s, a timeout of 10 s: set once, then
        # once more when it fired for a connection gone.
        self.assertLessEqual(len(made), 3, made)

    def test_timerOnlyWhileWaiting(self) -> None:
        """
        Once no connection waits any more (each sent its first bytes, or
        closed), the timer is gone: a server at rest has none.
        """
        talker, talkerTransport = self.connect()
        _, leaverTransport = self.connect()
        self.assertEqual(self.timers(), 1)
        talker.dataReceived(b"hi\n")
        self.assertEqual(self.timers(), 1)
        leaverTransport.finish()
        self.assertEqual(self.timers(), 0)
        # It starts again for the next one.
        _, laterTransport = self.connect()
        self.assertEqual(self.timers(), 1)
        self.clock.advance(10)
        self.assertTrue(laterTransport.disconnecting)
        laterTransport.finish()
        talkerTransport.finish()
        self.assertEqual(self.timers(), 0)

    def test_newTimeoutForNewConnections(self) -> None:
        """
        A new C{firstByteTimeout} applies to the connections accepted from
        then on; those already waiting keep theirs.
        """
        _, beforeTransport = self.connect()
        self.server.settings = Settings(
            firstByteTimeout=2.0, handshakeTimeout=4.0, closeTimeout=1.0
        )
        _, afterTransport = self.connect()
        self.clock.advance(2)
        self.assertTrue(afterTransport.disconnecting)
        self.assertFalse(beforeTransport.disconnecting)
        self.clock.advance(8)
        self.assertTrue(beforeTransport.disconnecting)

    def test_handshakeTimeout(self) -> None:
        """
        TLS connections are aborted at their handshake deadline, each at
        its own; one that completed its handshake is kept, and with none
        left in a handshake, no timer is left either.
        """
        slow, slowTransport = self.connect(tls=True)
        self.clock.advance(1)
        done, doneTransport = self.connect(tls=True)
        done.handshakeCompleted()
        self.clock.advance(2.999)
        self.assertFalse(slowTransport.ended)
        self.clock.advance(0.001)
        self.assertTrue(slowTransport.ended)
        self.assertEqual(self.server.eventCounts["handshakeTimeout"], 1)
        self.assertFalse(doneTransport.disconnecting)
        self.assertEqual(self.timers(), 0)
        # Not established: no onClosed; the reason is the timeout.
        self.assertEqual(self.closed, [])
        self.assertEqual(slow._closing, "handshake timeout (4 s)")

    def test_failureDoesNotStopTheOthers(self) -> None:
        """
        If closing one connection at its deadline fails, the error reaches
        the reactor (which logs it) and the connections after it are still
        closed at their own deadlines.
        """
        first, firstTransport = self.connect()
        self.clock.advance(1)
        _, secondTransport = self.connect()

        def failing(why: str = "") -> None:
            raise RuntimeError("close failed")

        first.closeConnection = failing
        self.assertRaises(RuntimeError, self.clock.advance, 9)
        self.assertFalse(firstTransport.disconnecting)
        self.assertEqual(self.timers(), 1)
        self.clock.advance(0.999)
        self.assertFalse(secondTransport.disconnecting)
        self.clock.advance(0.001)
        self.assertTrue(secondTransport.disconnecting)
