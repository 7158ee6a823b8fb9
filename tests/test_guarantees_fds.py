"""
File descriptors: a server that runs out of them (EMFILE) never spins a
core; it stops accepting for a moment, logs the episode once, leaves the
waiting connections queued, and serves them once descriptors are free.

The server runs in a subprocess whose descriptor limit is lowered with
C{setrlimit} (never in the test process itself), serving
L{tcpsc._apps.Echo}.  The test measures the subprocess's CPU time from
C{/proc} while the limit is hit.  The subprocess prints one JSON object a
line (its port, then its log events) and obeys C{fill} (hold every free
descriptor), C{release} (let them go) and C{quit} on its standard input.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tcpsc._accept import _GuardedPort
from tests.test_guarantees_support import (
    SHORT,
    GuaranteeTestCase,
    RawPeer,
    asyncTest,
    waitFor,
    within,
)

ROOT = str(Path(__file__).resolve().parent.parent)

#: The subprocess's soft and hard limit of open files.
LIMIT = 64

SERVER = r"""
import json, os, resource, sys
sys.path.insert(0, sys.argv[1])
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

from twisted.internet import epollreactor
epollreactor.install()
from twisted.internet import reactor, stdio
from twisted.logger import LogLevel, formatEvent, globalLogBeginner
from twisted.protocols.basic import LineReceiver

from tcpsc import Server
from tcpsc._apps import Echo

held = []

def fill():
    while True:
        try:
            held.append(open(os.devnull))
        except OSError:
            return

class Control(LineReceiver):
    delimiter = b"\n"

    def emit(self, **fields):
        self.transport.write(json.dumps(fields).encode() + b"\n")

    def lineReceived(self, line):
        if line == b"fill":
            fill()
            self.emit(kind="filled", held=len(held))
        elif line == b"release":
            while held:
                held.pop().close()
            self.emit(kind="released")
        elif line == b"quit":
            server.stop().addBoth(lambda _: reactor.stop())

control = Control()
stdio.StandardIO(control)

def observer(event):
    if event.get("log_level") in (LogLevel.info, LogLevel.warn, LogLevel.error,
                                  LogLevel.critical):
        control.emit(kind="log", level=event["log_level"].name,
                     format=event.get("log_format") or "", text=formatEvent(event))

globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

server = Server(Echo, maxConnections=1000)

def listen():
    d = server.listen(0, "127.0.0.1")
    d.addCallback(lambda port: control.emit(kind="port", port=port.getHost().port,
                                            held=len(held)))
    d.addErrback(lambda f: control.emit(kind="error", text=str(f.value)))

reactor.callWhenRunning(listen)
reactor.run()
"""


class ServerProcess(ProcessProtocol):
    """
    The subprocess's side: its port, its log events, its end.
    """

    def __init__(self) -> None:
        self.port: Deferred[int] = Deferred()
        self.messages: list[dict[str, Any]] = []
        self.ended: Failure | None = None
        self.stderr = b""
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            message = json.loads(line)
            self.messages.append(message)
            if message["kind"] == "port" and not self.port.called:
                self.port.callback(message["port"])
            elif message["kind"] == "error" and not self.port.called:
                self.port.errback(RuntimeError(message["text"]))

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        self.ended = reason

    def logs(self, text: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["kind"] == "log" and text in m["format"]]

    def seen(self, kind: str) -> bool:
        return any(m["kind"] == kind for m in self.messages)

    def command(self, line: bytes) -> None:
        self.transport.write(line + b"\n")

    def cpuSeconds(self) -> float:
        """
        User and system CPU time of the subprocess so far.
        """
        pid = self.transport.pid
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of stat(5), the 12th and
        # 13th after the command name.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class DescriptorExhaustionTests(GuaranteeTestCase):
    """
    The subprocess hits its descriptor limit while clients wait.
    """

    def setUp(self) -> None:
        if not sys.platform.startswith("linux"):
            raise SkipTest("needs /proc and Linux's accept() errors")

    async def startProcess(self) -> ServerProcess:
        process = ServerProcess()
        reactor.spawnProcess(
            process,
            sys.executable,
            [sys.executable, "-c", SERVER, ROOT, str(LIMIT)],
            env=os.environ.copy(),
        )

        async def stop() -> None:
            if process.ended is not None:
                return
            process.command(b"quit")
            try:
                await waitFor(lambda: process.ended is not None, SHORT)
            except AssertionError:
                process.transport.signalProcess("KILL")
                await waitFor(lambda: process.ended is not None, SHORT)
                raise
            if not process.ended.check(ProcessDone):  # type: ignore[union-attr]
                raise AssertionError(
                    f"the server ended with {process.ended.value!r}: "  # type: ignore[union-attr]
                    f"{process.stderr[-2000:]!r}"
                )

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        await within(process.port, 30)
        return process

    async def assertQuietFor(self, process: ServerProcess, seconds: float) -> float:
        """
        Measure the subprocess's CPU use over C{seconds} of wall time.
        """
        before = process.cpuSeconds()
        started = reactor.seconds()
        await deferLater(reactor, seconds, lambda: None)  # the measuring window
        used = process.cpuSeconds() - before
        elapsed = reactor.seconds() - started
        self.assertLess(
            used,
            0.25 * elapsed,
            f"the server used {used:.2f} s of CPU in {elapsed:.2f} s while out "
            f"of descriptors: {process.stderr[-2000:]!r}",
        )
        return used

    async def connectAll(self, port: int, count: int) -> list[RawPeer]:
        peers = []
        for n in range(count):
            peer = await self.connectRaw(port)
            peer.transport.write(b"ping %d\n" % n)
            peers.append(peer)
        return peers

    @asyncTest
    async def test_filledByTheApplication(self) -> None:
        """
        The application itself holds every free descriptor: clients wait in
        the queue (Twisted's own port would accept and close them), the
        server does not spin, logs once, and serves every one of them once
        it lets the descriptors go.
        """
        process = await self.startProcess()
        port = await process.port
        process.command(b"fill")
        await waitFor(
            lambda: process.seen("filled"),
            SHORT,
            what="the process to say its descriptors are filled",
        )
        peers = await self.connectAll(port, 5)
        await waitFor(
            lambda: process.logs("Cannot accept connections"),
            SHORT,
            what="the log line about accepting no more connections",
        )
        await self.assertQuietFor(process, 1.0)
        [warning] = process.logs("Cannot accept connections")
        self.assertIn("EMFILE", warning["text"])
        self.assertFalse(any(peer.received or peer.lost.called for peer in peers))

        process.command(b"release")
        for n, peer in enumerate(peers):
            await waitFor(
                lambda peer=peer: peer.received,
                SHORT,
                what="the peer's ping once descriptors are released",
            )
            self.assertEqual(bytes(peer.received), b"ping %d\n" % n)
        await waitFor(
            lambda: process.logs("again after"),
            SHORT,
            what="the log line that accepting works again",
        )
        self.assertEqual(len(process.logs("Cannot accept connections")), 1)

    @asyncTest
    async def test_exhaustedByConnections(self) -> None:
        """
        More clients than descriptors: those the server could accept are
        served, the others wait (neither served nor closed) while the
        server stays idle; when served clients leave, the waiting ones are
        served.
        """
        process = await self.startProcess()
        port = await process.port
        peers = await self.connectAll(port, LIMIT + 20)
        await waitFor(
            lambda: process.logs("Cannot accept connections"),
            SHORT,
            what="the log line about accepting no more connections",
        )
        served = [p for p in peers if p.received]
        await waitFor(
            lambda: (
                len([p for p in peers if p.received]) == len(served) and len(served) > LIMIT // 2
            ),
            SHORT,
        )
        await self.assertQuietFor(process, 1.0)
        served = [p for p in peers if p.received]
        waiting = [p for p in peers if not p.received]
        self.assertGreater(len(waiting), 10)
        self.assertFalse(any(p.lost.called for p in peers), "a waiting client was disconnected")
        self.assertEqual(len(process.logs("Cannot accept connections")), 1)

        for peer in served[:30]:
            peer.transport.loseConnection()
        for peer in waiting:
            await waitFor(
                lambda peer=peer: peer.received,
                SHORT,
                what="the waiting peer's ping once others closed",
            )
            self.assertEqual(bytes(peer.received), b"ping %d\n" % peers.index(peer))
        await waitFor(
            lambda: process.logs("again after"),
            SHORT,
            what="the log line that accepting works again",
        )


class _FailingSocket:
    """
    A listening socket whose C{accept()} fails with C{errno} a number of
    times, then hands out the sockets in C{ready}, then has none.
    """

    def __init__(self, error: int, failures: int, ready: list[socket.socket]) -> None:
        self.error = error
        self.failures = failures
        self.ready = ready
        self.accepts = 0

    def accept(self) -> tuple[socket.socket, tuple[str, int]]:
        self.accepts += 1
        if self.failures:
            self.failures -= 1
            raise OSError(self.error, os.strerror(self.error))
        if self.ready:
            return self.ready.pop(), ("127.0.0.1", 40000 + self.accepts)
        raise BlockingIOError(errno.EAGAIN, "no connection")

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 8081)

    def fileno(self) -> int:
        return -1

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        pass


class AcceptErrorTests(SynchronousTestCase):
    """
    The port itself, with a fake listening socket: errors Twisted's own
    port retries at once, in a busy loop, since the socket stays readable
    (ENFILE: the system's file table is full; ENOBUFS, ENOMEM).
    """

    def listeningPort(
        self, error: int, failures: int, ready: list[socket.socket]
    ) -> tuple[_GuardedPort, MemoryReactorClock]:
        clock = MemoryReactorClock()
        port = _GuardedPort(0, Factory.forProtocol(Protocol), 50, "127.0.0.1", clock)
        port.socket = _FailingSocket(error, failures, ready)  # type: ignore[assignment]
        # What startListening sets up.
        port.connected = True
        port.fileno = port.socket.fileno  # type: ignore[method-assign]
        port.numberAccepts = 100
        port.startReading()
        return port, clock

    def test_pausesAndBacksOff(self) -> None:
        for error in (errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EMFILE):
            port, clock = self.listeningPort(error, failures=4, ready=[])
            with capturedLogs() as events:
                port.doRead()
                # Not readable any more: the reactor does not call it again...
                self.assertNotIn(port, clock.readers)
                [retry] = clock.getDelayedCalls()
                self.assertAlmostEqual(retry.getTime(), 0.05)
                # ...until the pause is over; each pause is twice the last.
                pauses = []
                for _ in range(3):
                    clock.advance(retry.getTime() - clock.seconds())
                    self.assertIn(port, clock.readers)
                    port.doRead()
                    [retry] = clock.getDelayedCalls()
                    pauses.append(round(retry.getTime() - clock.seconds(), 3))
            self.assertEqual(pauses, [0.1, 0.2, 0.4], error)
            self.assertEqual(port.socket.accepts, 4)
            warnings = [e for e in events if e["log_level"] == LogLevel.warn]
            self.assertEqual(len(warnings), 1, warnings)
            self.assertEqual(warnings[0]["errno"], error)
            self.assertIn(errno.errorcode[error], formatEvent(warnings[0]))
            port.connectionLost(Failure(Exception("done")))
            self.assertEqual(clock.getDelayedCalls(), [])

    def test_longestPause(self) -> None:
        port, clock = self.listeningPort(errno.EMFILE, failures=100, ready=[])
        pauses = []
        for _ in range(8):
            port.doRead()
            [retry] = clock.getDelayedCalls()
            pauses.append(retry.getTime() - clock.seconds())
            clock.advance(pauses[-1])
        self.assertEqual(max(pauses), 1.0)
        self.assertEqual(pauses[-1], 1.0)
        port.connectionLost(Failure(Exception("done")))

    def test_recovers(self) -> None:
        """
        Once accepting works again, connections are served and the end of
        the episode is logged once; a connection that closes ends a pause
        at once (L{_GuardedPort.resumeAccepting}).
        """
        a, b = socket.socketpair()
        self.addCleanup(b.close)
        port, clock = self.listeningPort(errno.EMFILE, failures=1, ready=[a])
        with capturedLogs() as events:
            port.doRead()
            self.assertNotIn(port, clock.readers)
            port.resumeAccepting()
            self.assertIn(port, clock.readers)
            self.assertEqual(clock.getDelayedCalls(), [])
            port.doRead()
        self.assertEqual(port.sessionno, 1)
        infos = [e for e in events if "again after" in e.get("log_format", "")]
        self.assertEqual(len(infos), 1)
        self.assertEqual(infos[0]["attempts"], 1)
        transport = [r for r in clock.readers if r is not port]
        self.assertEqual(len(transport), 1)
        transport[0].connectionLost(Failure(Exception("done")))
        port.connectionLost(Failure(Exception("done")))
