"""
Logs that cannot be flooded: repeated events of one kind (refused
connections, dropped messages, failed handshakes) are logged once in full,
then summarised with their exact count; the counts are kept exact in
L{tcpsc.Server.eventCounts}; with C{logEveryEvent} every event is still
logged, at debug level.  And the words of those lines: exact lengths,
singular and plural.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tcpsc import Server
from tcpsc._events import KINDS, MAX_DETAILS, EventSummary, FastLogger, plural
from tests.test_guarantees_support import (
    SHORT,
    Echo,
    GuaranteeTestCase,
    asyncTest,
    clientTLS,
    serverTLS,
    waitFor,
    within,
)


def texts(
    events: list[dict[str, Any]], level: LogLevel | None = LogLevel.warn, containing: str = ""
) -> list[str]:
    """
    The formatted lines of C{events} at C{level} containing C{containing}.
    """
    lines = [formatEvent(e) for e in events if level is None or e.get("log_level") == level]
    return [line for line in lines if containing in line]


class SummaryTests(SynchronousTestCase):
    """
    L{EventSummary} on a clock: first event in full, then one summary per
    period with the exact count, then quiet again.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.clock = Clock()
        self.summary = EventSummary(Logger(observer=self.events.append), self.clock)

    def refuse(self, times: int, kind: str = "maxConnections") -> None:
        for index in range(times):
            self.summary.record(kind, "Refused {index}", index=index)

    def test_firstThenSummary(self) -> None:
        self.refuse(78_519)
        self.assertEqual(texts(self.events), ["Refused 0"])
        self.clock.advance(5)
        self.assertEqual(
            texts(self.events)[1:],
            [
                "Refused 78,518 more connections in the last 5 s: the connection limit "
                "(maxConnections)"
            ],
        )
        self.assertEqual(self.events[-1]["count"], 78_518)
        self.assertEqual(self.events[-1]["total"], 78_519)
        self.assertEqual(self.summary.counts["maxConnections"], 78_519)

    def test_goesOnThenQuiet(self) -> None:
        self.refuse(3)
        self.clock.advance(5)
        self.refuse(1)
        self.clock.advance(5)
        # Still summarised while events go on: one more, in the singular.
        self.assertEqual(
            texts(self.events)[-1],
            "Refused 1 more connection in the last 5 s: the connection limit (maxConnections)",
        )
        # A period without any: quiet, no line, no timer left.
        count = len(self.events)
        self.clock.advance(5)
        self.assertEqual(len(self.events), count)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # The next event is logged in full again.
        self.refuse(1)
        self.assertEqual(texts(self.events)[-1], "Refused 0")
        self.assertEqual(self.summary.counts["maxConnections"], 5)

    def test_kindsApart(self) -> None:
        self.refuse(2)
        self.refuse(3, "messageTooLong")
        self.assertEqual(len(texts(self.events)), 2)
        self.clock.advance(5)
        self.assertEqual(
            sorted(texts(self.events)[2:]),
            [
                "Dropped 2 more messages in the last 5 s: longer than maxMessageLength",
                "Refused 1 more connection in the last 5 s: the connection limit (maxConnections)",
            ],
        )

    def test_details(self) -> None:
        """
        Details (the reason a handshake failed) are summarised apart, up to
        L{MAX_DETAILS}; the rest together.
        """
        for index in range(MAX_DETAILS + 5):
            for _ in range(2):
                self.summary.record(
                    "handshakeFailed", "Failed: {why}", detail=f"why {index}", why=f"why {index}"
                )
        self.assertEqual(len(texts(self.events)), MAX_DETAILS + 1)
        self.clock.advance(5)
        summaries = texts(self.events)[MAX_DETAILS + 1 :]
        self.assertEqual(len(summaries), MAX_DETAILS + 1)
        self.assertIn("9 more TLS handshakes failed in the last 5 s: other reasons", summaries)
        self.assertEqual(self.summary.counts["handshakeFailed"], 2 * (MAX_DETAILS + 5))

    def test_everyEventAtDebugLevel(self) -> None:
        self.summary.logEveryEvent = True
        self.refuse(4)
        self.assertEqual(
            texts(self.events, LogLevel.debug), ["Refused 1", "Refused 2", "Refused 3"]
        )

    def test_stopFlushes(self) -> None:
        self.refuse(2)
        self.summary.stop()
        self.assertEqual(len(texts(self.events)), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_braces(self) -> None:
        """
        A detail with braces is logged as it is.
        """
        for _ in range(2):
            self.summary.record("handshakeFailed", "x", detail="{odd}")
        self.clock.advance(5)
        self.assertTrue(texts(self.events)[-1].endswith(": {odd}"))

    def test_words(self) -> None:
        self.assertEqual(plural(1, "connection"), "1 connection")
        self.assertEqual(plural(0, "byte"), "0 bytes")
        self.assertEqual(plural(78_519, "connection"), "78519 connections")
        for text in KINDS.values():
            self.assertIn("{s}", text)


class FastLoggerTests(SynchronousTestCase):
    """
    L{FastLogger}, which logs each connection of a server: the events of
    Twisted's L{Logger}, field for field.
    """

    def emitBoth(self, level: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for logger in (
            Logger("tcpsc.test", self, observer=events.append),
            FastLogger("tcpsc.test", self, observer=events.append),
        ):
            logger.emit(level, *args, **dict(kwargs))
        return events

    def assertSameEvents(self, twisted: dict[str, Any], fast: dict[str, Any]) -> None:
        self.assertIsInstance(fast["log_logger"], FastLogger)
        for event in (twisted, fast):
            del event["log_logger"]
        self.assertLessEqual(fast.pop("log_time") - twisted.pop("log_time"), 60)
        self.assertEqual(list(fast.items()), list(twisted.items()))

    def test_sameEvent(self) -> None:
        """
        The same fields, in the same order, for every level.
        """
        for level in LogLevel.iterconstants():
            twisted, fast = self.emitBoth(
                level, "Connection {connectionId} from {peer}", connectionId=3, peer="a:1"
            )
            self.assertEqual(fast["log_level"], level)
            self.assertEqual(fast["log_source"], self)
            self.assertEqual(formatEvent(fast), "Connection 3 from a:1")
            self.assertSameEvents(twisted, fast)

    def test_trace(self) -> None:
        """
        A traced event records the logger and its observer, as Twisted's does.
        """
        events: list[dict[str, Any]] = []
        logger = FastLogger("tcpsc.test", self, observer=events.append)
        logger.emit(LogLevel.info, "x", log_trace=[])
        self.assertEqual(events[0]["log_trace"], [(logger, events.append)])

    def test_invalidLevel(self) -> None:
        """
        An invalid level is reported as Twisted reports it: a critical event
        naming it, and no event at the invalid level.
        """
        twisted, fast = self.emitBoth("bogus", "x")  # type: ignore[arg-type]
        self.assertEqual(fast["log_level"], LogLevel.critical)
        self.assertEqual(fast["invalidLevel"], "bogus")
        self.assertEqual(twisted["log_format"], fast["log_format"])

    def test_server(self) -> None:
        """
        The server's lines go through it.
        """
        self.assertIsInstance(Server(reactor=Clock()).log, FastLogger)


class ServerTests(GuaranteeTestCase):
    """
    A server's refusals, dropped messages and failed handshakes, from real
    peers on loopback.
    """

    @asyncTest
    async def test_refusals(self) -> None:
        events = self.captureLogs()
        server, port = await self.startServer(Echo, maxConnections=1)
        holder = await self.connectRaw(port)
        await waitFor(lambda: server.openConnections() == 1, SHORT)
        for _ in range(50):
            refused = await self.connectRaw(port)
            await within(refused.lost)
        self.assertEqual(len(texts(events, containing="Refused a connection")), 1)
        self.assertEqual(server.eventCounts["maxConnections"], 50)
        await within(server.stop())
        self.assertEqual(
            texts(events, containing="Refused 49 more connections in the last 5 s"),
            ["Refused 49 more connections in the last 5 s: the connection limit (maxConnections)"],
        )
        del holder

    @asyncTest
    async def test_refusalsEveryEvent(self) -> None:
        events = self.captureLogs()
        server, port = await self.startServer(Echo, maxConnections=1, logEveryEvent=True)
        await self.connectRaw(port)
        await waitFor(lambda: server.openConnections() == 1, SHORT)
        for _ in range(5):
            refused = await self.connectRaw(port)
            await within(refused.lost)
        self.assertEqual(len(texts(events, containing="Refused a connection")), 1)
        self.assertEqual(len(texts(events, LogLevel.debug, "Refused a connection")), 4)

    @asyncTest
    async def test_droppedMessages(self) -> None:
        events = self.captureLogs()
        server, port = await self.startServer(Echo, maxMessageLength=10)
        peer = await self.connectRaw(port)
        # 200 messages of 11 bytes, then one that fits: the connection is kept.
        peer.transport.write(b"x" * 11 + b"\n" + (b"y" * 11 + b"\n") * 199 + b"fits\n")
        await waitFor(lambda: bytes(peer.received) == b"fits\n", SHORT)
        dropped = texts(events, containing="Dropped")
        self.assertEqual(len(dropped), 1)
        self.assertIn("Dropped a message of 11 bytes from 127.0.0.1:", dropped[0])
        self.assertNotIn("or more", dropped[0])
        self.assertEqual(server.eventCounts["messageTooLong"], 200)
        await within(server.stop())
        self.assertEqual(len(texts(events, containing="Dropped 199 more messages")), 1)

    @asyncTest
    async def test_partialMessageWording(self) -> None:
        """
        A message found too long before its end is reported with the bytes
        received so far, in words that say so.
        """
        events = self.captureLogs()
        server, port = await self.startServer(Echo, maxMessageLength=1)
        peer = await self.connectRaw(port)
        peer.transport.write(b"xx")
        await waitFor(lambda: server.eventCounts.get("messageTooLong") == 1, SHORT)
        [line] = texts(events, containing="Dropping")
        self.assertIn("2 bytes received without a delimiter, more than maxMessageLength (1)", line)

    @asyncTest
    async def test_failedHandshakes(self) -> None:
        events = self.captureLogs()
        server, port = await self.startServer(Echo, tls=serverTLS())
        for _ in range(5):
            # Plain bytes on a TLS port: each handshake fails.
            peer = await self.connectRaw(port)
            peer.transport.write(b"GET / HTTP/1.0\r\n\r\n")
            await within(peer.lost)
        await waitFor(lambda: server.eventCounts.get("handshakeFailed") == 5, SHORT)
        self.assertEqual(len(texts(events, containing="TLS handshake failed")), 1)
        # A client that does it right is still served and logged.
        received: list[bytes] = []
        client = await self.connectClient(port, tls=clientTLS(), onMessage=received.append)
        client.send(b"fine")
        await waitFor(lambda: received == [b"fine"], SHORT)
        await within(server.stop())
        [summary] = texts(events, containing="more TLS handshakes failed")
        self.assertTrue(
            summary.startswith("4 more TLS handshakes failed in the last 5 s: "), summary
        )
