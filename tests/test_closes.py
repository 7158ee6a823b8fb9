"""
Every close is bounded, and says why: against peers that are not tcpsc and
never answer a close (Python's C{ssl} module in another process, raw
sockets that do not read), every close tcpsc starts ends within its bound,
frees the connection's slot, and passes on a reason a person reads.

Each case runs on tcpsc's own TLS transport (a close does not wait for the
peer's close_notify) and on the public fallback, Twisted's own TLS
transport, used where the private names are not trusted (it waits for
close_notify, within C{closeTimeout}).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectionDone, ConnectionLost, ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from tcpsc import (
    AbortedLocally,
    Client,
    ClosedLocally,
    MessageProtocol,
    Server,
    TLSConfig,
    _compat,
)
from tests._helpers import certificates
from tests.test_cli import _environment
from tests.test_daemon import LOCAL, Daemon
from tests.test_guarantees_stop import congestedPeer
from tests.test_guarantees_support import (
    SHORT,
    GuaranteeTestCase,
    asyncTest,
    clientTLS,
    serverTLS,
    waitFor,
    within,
)

#: The close timeout of these tests: short, so that a wait that runs into it
#: is seen, and long enough not to be reached by a close that does not.
CLOSE = 1.0


class SilentPeer(ProcessProtocol):
    """
    L{tests._silentpeer} in a process of its own: its lines of output, and
    its end.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._buffer = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        self.lines += [line.decode() for line in lines]

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class ClosesTestCase(GuaranteeTestCase):
    """
    Helpers: silent peers, and servers whose C{onClosed} records reasons.
    """

    def silentPeer(self, *args: str) -> SilentPeer:
        peer = SilentPeer()
        transport = reactor.spawnProcess(
            peer,
            sys.executable,
            [sys.executable, "-m", "tests._silentpeer", *args],
            env=_environment(),
        )

        def cleanup() -> Deferred[None] | None:
            if peer.ended.called:
                return None
            transport.signalProcess("KILL")
            return within(peer.ended)

        self.addCleanup(cleanup)
        return peer

    async def silentClient(self, port: int) -> SilentPeer:
        files = certificates()
        peer = self.silentPeer("client", str(port), files.ca, files.client, files.clientKey)
        await waitFor(lambda: "ready" in peer.lines, SHORT)
        return peer

    async def silentServer(self) -> int:
        files = certificates()
        peer = self.silentPeer("server", files.server, files.serverKey)
        await waitFor(lambda: peer.lines, SHORT, what="the silent peer to print its port")
        return int(peer.lines[0])

    async def recordingServer(self, **kwargs: Any) -> tuple[Server, int, list[tuple[int, str]]]:
        closed: list[tuple[int, str]] = []
        server, port = await self.startServer(
            closeTimeout=CLOSE, onClosed=lambda i, why: closed.append((i, why)), **kwargs
        )
        return server, port, closed


class ServerClosesTLS(ClosesTestCase):
    """
    A tcpsc server closing connections of a TLS client that never answers
    close_notify: on tcpsc's transport the close does not wait for it.
    """

    #: The reason's end when the close ran into the bound: none here.
    cut: str | None = None

    def assertReason(self, why: str, reason: str) -> None:
        if self.cut is None:
            self.assertEqual(why, reason)
        else:
            self.assertEqual(why, f"{reason}; {self.cut}")

    @asyncTest
    async def test_disconnect(self) -> None:
        """
        C{disconnect()} ends, C{onClosed} says why, and the peer's slot under
        C{maxConnectionsPerPeer} is free again.
        """
        server, port, closed = await self.recordingServer(tls=serverTLS(), maxConnectionsPerPeer=1)
        await self.silentClient(port)
        await waitFor(
            lambda: server.clientIds(), SHORT, what="the server to register the connection"
        )
        [clientId] = server.clientIds()
        self.assertTrue(server.disconnect(clientId))
        await waitFor(lambda: closed, SHORT, what="the server's onClosed")
        [(closedId, why)] = closed
        self.assertEqual(closedId, clientId)
        self.assertReason(why, "disconnect() called")
        self.assertEqual(server.openConnections(), 0)
        # The slot is free: another connection from 127.0.0.1 is served.
        client = await self.connectClient(port, tls=clientTLS())
        self.assertTrue(client.isConnected)

    @asyncTest
    async def test_stop(self) -> None:
        """
        C{stop()} ends, and its last log line says what was dropped.
        """
        server, port, closed = await self.recordingServer(tls=serverTLS())
        await self.silentClient(port)
        await self.silentClient(port)
        await waitFor(lambda: len(server.clientIds()) == 2, SHORT)
        events = self.captureLogs()
        await within(server.stop(), SHORT)
        self.assertEqual(server.openConnections(), 0)
        self.assertEqual(len(closed), 2)
        for _, why in closed:
            self.assertReason(why, "server stopping")
        if self.cut is None:
            self.assertEqual(self.warnings(events), [])
            self.assertTrue([e for e in events if "no output dropped" in e.get("log_format", "")])
        else:
            [warning] = self.warnings(events, "did not close within")
            self.assertEqual(warning["count"], 2)
            self.assertEqual(warning["dropped"], 0)

    @asyncTest
    async def test_idleTimeout(self) -> None:
        """
        The idle timeout closes like any other close: with close_notify (a
        tcpsc client sees a clean close), and the reason says so.
        """
        _, port, closed = await self.recordingServer(tls=serverTLS(), idleTimeout=0.5)
        lost: Deferred[list[Failure]] = Deferred()
        await self.connectClient(
            port, tls=clientTLS(), onClosed=lambda reason: lost.callback([reason])
        )
        [reason] = await within(lost)
        self.assertTrue(reason.check(ConnectionDone), reason)
        await waitFor(lambda: closed, SHORT, what="the server's onClosed after the idle timeout")
        self.assertEqual(closed[0][1], "idle timeout (0.5 s)")


class ServerClosesTLSFallback(ServerClosesTLS):
    """
    The same on Twisted's own TLS transport: it waits for close_notify, and
    the close timeout cuts the wait short.  (The idle timeout's close is
    answered by a tcpsc client: no bound runs out there either.)
    """

    cut = f"the peer did not answer close_notify within {CLOSE:g} s"

    def setUp(self) -> None:
        super().setUp()
        self.patch(_compat, "PRIVATE", False)


class ServerClosesTCP(ClosesTestCase):
    """
    Plain TCP: a peer that does not read holds a close only until the close
    timeout.
    """

    @asyncTest
    async def test_disconnectPeerThatDoesNotRead(self) -> None:
        server, port, closed = await self.recordingServer(
            maxPendingOutput=64 * 1024, maxConnectionsPerPeer=1
        )
        clientId = await congestedPeer(self, server, port)
        self.assertTrue(server.disconnect(clientId))
        await waitFor(lambda: closed, SHORT, what="the server's onClosed")
        [(_, why)] = closed
        self.assertRegex(
            why,
            rf"^disconnect\(\) called; the peer did not read the last \d+ bytes within "
            rf"{CLOSE:g} s$",
        )
        self.assertEqual(server.openConnections(), 0)
        second = await self.connectRaw(port)
        self.assertTrue(second.transport.connected)
        await waitFor(
            lambda: server.clientIds(), SHORT, what="the server to register the second connection"
        )

    @asyncTest
    async def test_idleTimeout(self) -> None:
        _, port, closed = await self.recordingServer(idleTimeout=0.5)
        peer = await self.connectRaw(port)
        await within(peer.lost)
        await waitFor(lambda: closed, SHORT, what="the server's onClosed after the idle timeout")
        self.assertEqual(closed[0][1], "idle timeout (0.5 s)")


class ClientClosesTLS(ClosesTestCase):
    """
    A tcpsc client (and C{tcpsc connect}) closing its connection to a TLS
    server that never answers close_notify.
    """

    fallback = False

    def setUp(self) -> None:
        super().setUp()
        if self.fallback:
            self.patch(_compat, "PRIVATE", False)

    @asyncTest
    async def test_disconnect(self) -> None:
        port = await self.silentServer()
        lost: Deferred[list[Failure]] = Deferred()
        client = Client(closeTimeout=CLOSE, onClosed=lambda reason: lost.callback([reason]))
        await within(client.connect("localhost", port, tls=TLSConfig(ca=certificates().ca)))
        self.assertTrue(client.send(b"hello"))
        await within(client.disconnect(), SHORT)
        [reason] = await within(lost)
        if self.fallback:
            self.assertIsInstance(reason.value, AbortedLocally)
            self.assertEqual(
                str(reason.value),
                f"disconnect() called; the peer did not answer close_notify within {CLOSE:g} s",
            )
        else:
            self.assertIsInstance(reason.value, ClosedLocally)
            self.assertEqual(str(reason.value), "disconnect() called")

    @asyncTest
    async def test_connectCommandExits(self) -> None:
        """
        C{tcpsc connect --wait 0} exits once its input ended.
        """
        if self.fallback:
            return
        port = await self.silentServer()
        ended: Deferred[int] = Deferred()

        class Command(ProcessProtocol):
            def processEnded(self, reason: Failure) -> None:
                ended.callback(0 if reason.check(ProcessDone) else reason.value.exitCode)

        transport = reactor.spawnProcess(
            Command(),
            sys.executable,
            [
                sys.executable,
                "-m",
                "tcpsc",
                "connect",
                "localhost",
                str(port),
                "--tls",
                "--ca",
                certificates().ca,
                "--wait",
                "0",
            ],
            env=_environment(),
        )
        transport.write(b"secret\n")
        transport.closeStdin()

        def kill() -> None:
            if not ended.called:
                transport.signalProcess("KILL")

        self.addCleanup(kill)
        self.assertEqual(await within(ended, 30), 0)


class ClientClosesTLSFallback(ClientClosesTLS):
    fallback = True


class Streamer(MessageProtocol):
    """
    A client that keeps C{inFlight} messages in flight: it sends that many
    when ready, and one more for each echo.
    """

    inFlight = 50
    received = 0

    def connectionReady(self) -> None:
        for _ in range(self.inFlight):
            self.sendMessage(b"m" * 32)

    def messageReceived(self, message: bytes) -> None:
        self.received += 1
        self.sendMessage(message)


class DaemonStopTests(ClosesTestCase):
    """
    SIGTERM to the TLS daemon while its clients stream: the application
    answers every message it was delivered (counted inside it), the clients
    get every answer, and the daemon exits promptly with nothing alarming in
    its log.
    """

    CLIENTS = 20

    @asyncTest
    async def test_sigtermWhileStreaming(self) -> None:
        files = certificates()
        daemon = Daemon(
            self,
            "--port",
            LOCAL,
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            files.server,
            "--key",
            files.serverKey,
            "--app",
            "tests._countingecho:CountingEcho",
        )
        port = daemon.port()
        protocols: list[Streamer] = []
        lost: list[Deferred[list[Failure]]] = []
        for _ in range(self.CLIENTS):
            closed: Deferred[list[Failure]] = Deferred()
            lost.append(closed)
            client = Client(
                Streamer,
                onEstablished=protocols.append,
                onClosed=lambda reason, closed=closed: closed.callback([reason]),
            )
            self.addCleanup(lambda client=client: within(client.disconnect()))
            await within(client.connect("localhost", port, tls=clientTLS()), 30)
        await waitFor(lambda: all(p.received >= 200 for p in protocols), 30)

        os.kill(daemon.process.pid, signal.SIGTERM)
        reasons = [reason for [reason] in await within(gatherResults(lost), 30)]
        await waitFor(lambda: daemon.process.poll() is not None, 30)
        self.assertIn(daemon.process.returncode, (0, -signal.SIGTERM))
        output = daemon.output
        self.assertNotIn("Traceback", output)
        self.assertIn(f"Stopped: {self.CLIENTS} connections closed, no output dropped", output)
        counts = json.loads((daemon.directory / "counts.json").read_text())
        self.assertEqual(counts["refused"], 0, counts)
        self.assertEqual(counts["answered"], counts["received"], counts)
        self.assertEqual(sum(p.received for p in protocols), counts["answered"])
        # A client still sending when the server closed may see its
        # connection reset rather than closed: it is closed either way.
        for reason in reasons:
            self.assertTrue(reason.check(ConnectionDone, ConnectionLost), reason)
