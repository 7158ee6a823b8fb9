"""
Limits: the connection limit and the optional per-peer-address limit refuse
promptly (the refused connection is closed before any TLS work) and log
each refusal once, with the peer and the reason; and the daemon's options
for the limits and the output bound.

The message length limit is covered by L{tests.test_framing.TooLongTests}
(a too-long message is dropped and logged once, the connection kept).
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tcpsc import Server
from tcpsc._apps import Echo as EchoApp
from tcpsc._server import DEFAULT_MAX_CONNECTIONS_PER_PEER
from tcpsc.tap import Options, makeService
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


class PerPeerLimitTests(GuaranteeTestCase):
    """
    C{maxConnectionsPerPeer} counts open connections by peer host.
    """

    async def limitPerPeer(self, tls: bool) -> None:
        events = self.captureLogs()
        server, port = await self.startServer(
            Echo, maxConnectionsPerPeer=2, tls=serverTLS() if tls else None
        )
        first = await self.connectRaw(port)
        second = await self.connectRaw(port)
        await waitFor(lambda: server.openConnections() == 2, SHORT)

        refused = await self.connectRaw(port)
        await within(refused.lost)
        # Prompt: closed at accept, before any byte (or TLS handshake).
        self.assertLess(refused.lostAt - refused.connectedAt, 2.0)  # type: ignore[operator]
        self.assertEqual(bytes(refused.received), b"")
        self.assertEqual(server.openConnections(), 2)
        logged = [e for e in self.warnings(events) if e.get("peer") == refused.address]
        self.assertEqual(len(logged), 1, logged)
        self.assertEqual(logged[0]["reason"], "maxConnectionsPerPeer")
        self.assertEqual(logged[0]["host"], "127.0.0.1")
        self.assertEqual(logged[0]["count"], 2)

        # Another peer address is not limited by the first one's count.
        other = await self.connectRaw(port, bindAddress=("127.0.0.2", 0))
        await waitFor(lambda: server.openConnections() == 3, SHORT)
        self.assertFalse(other.lost.called)

        # A connection that ends frees its place.
        first.transport.loseConnection()
        await within(first.lost)
        await waitFor(lambda: server.openConnections() == 2, SHORT)
        received: list[bytes] = []
        client = await self.connectClient(
            port, tls=clientTLS() if tls else None, onMessage=received.append
        )
        self.assertTrue(client.send(b"welcome back"))
        await waitFor(lambda: received == [b"welcome back"], SHORT)
        self.assertFalse(second.lost.called)

    @asyncTest
    async def test_tcp(self) -> None:
        await self.limitPerPeer(tls=False)

    @asyncTest
    async def test_tls(self) -> None:
        await self.limitPerPeer(tls=True)

    def test_validation(self) -> None:
        """
        The limit is an int of at least 1 (256 by default), or C{None}.
        """
        self.assertEqual(Server().maxConnectionsPerPeer, DEFAULT_MAX_CONNECTIONS_PER_PEER)
        self.assertIsNone(Server(maxConnectionsPerPeer=None).maxConnectionsPerPeer)
        for wrong in (0, -1, 1.5, True, "2"):
            self.assertRaises(ValueError, Server, maxConnectionsPerPeer=wrong)
        self.assertRaises(ValueError, Server, maxPendingOutput=-1)
        self.assertRaises(ValueError, Server, maxBroadcastSkips=0)


class NoLockOutTests(GuaranteeTestCase):
    """
    With the defaults, one address cannot take every slot: it gets at most
    C{DEFAULT_MAX_CONNECTIONS_PER_PEER} connections, and a plain TCP
    connection that sends nothing is closed after C{firstByteTimeout}.
    """

    @asyncTest
    async def test_defaultPerPeerLimit(self) -> None:
        server, port = await self.startServer(Echo)
        limit = DEFAULT_MAX_CONNECTIONS_PER_PEER
        for _ in range(limit):
            await self.connectRaw(port)
        await waitFor(lambda: server.openConnections() == limit, SHORT)
        refused = await self.connectRaw(port)
        await within(refused.lost)
        self.assertEqual(bytes(refused.received), b"")
        # Everyone else is still served.
        other = await self.connectRaw(port, bindAddress=("127.0.0.2", 0))
        other.transport.write(b"served\n")
        await waitFor(lambda: bytes(other.received) == b"served\n", SHORT)
        self.assertFalse(other.lost.called)

    async def silentClosed(self, **kwargs: object) -> None:
        closed: list[tuple[int, str]] = []
        server, port = await self.startServer(
            Echo, firstByteTimeout=0.2, onClosed=lambda i, why: closed.append((i, why)), **kwargs
        )
        # A client that talks, connected before the silent one: its timer
        # would have run out first.
        talker = await self.connectRaw(port)
        talker.transport.write(b"hello\n")
        await waitFor(lambda: bytes(talker.received) == b"hello\n", SHORT)
        silent = await self.connectRaw(port)
        await within(silent.lost)
        self.assertEqual(
            [why for _, why in closed], ["nothing received within 0.2 s (firstByteTimeout)"]
        )
        talker.transport.write(b"still here\n")
        await waitFor(lambda: bytes(talker.received) == b"hello\nstill here\n", SHORT)
        self.assertFalse(talker.lost.called)
        self.assertEqual(server.openConnections(), 1)

    @asyncTest
    async def test_firstByteTimeout(self) -> None:
        await self.silentClosed()

    @asyncTest
    async def test_firstByteTimeoutWithIdleTimeout(self) -> None:
        """
        Under the idle timeout's wrapper too.
        """
        await self.silentClosed(idleTimeout=60.0)

    @asyncTest
    async def test_notForTLS(self) -> None:
        """
        A TLS connection has its handshake timeout instead: a client that
        completed its handshake and then only listens is kept.
        """
        server, port = await self.startServer(Echo, firstByteTimeout=0.05, tls=serverTLS())
        client = await self.connectClient(port, tls=clientTLS())
        # A plain connection's timer (started later) runs out while the TLS
        # one is kept.
        plainServer, plainPort = await self.startServer(Echo, firstByteTimeout=0.05)
        silent = await self.connectRaw(plainPort)
        await within(silent.lost)
        self.assertEqual(server.openConnections(), 1)
        self.assertTrue(client.isConnected)
        del plainServer

    def test_defaultAndValidation(self) -> None:
        self.assertEqual(Server().firstByteTimeout, 10.0)
        self.assertIsNone(Server(firstByteTimeout=None).firstByteTimeout)
        for wrong in (0, -1, True, "2", float("nan")):
            self.assertRaises(ValueError, Server, firstByteTimeout=wrong)


class ConnectionLimitTests(GuaranteeTestCase):
    """
    C{maxConnections}: a refusal is one warning naming the peer and the
    reason; those that follow it are counted (see
    L{tests.test_guarantees_logs}).
    """

    @asyncTest
    async def test_refusalsLogged(self) -> None:
        events = self.captureLogs()
        server, port = await self.startServer(Echo, maxConnections=2)
        for _ in range(2):
            await self.connectRaw(port)
        await waitFor(lambda: server.openConnections() == 2, SHORT)
        refused = [await self.connectRaw(port) for _ in range(3)]
        for peer in refused:
            await within(peer.lost)
        logged = [e for e in self.warnings(events) if e.get("reason") == "maxConnections"]
        self.assertEqual(len(logged), 1, logged)
        self.assertEqual(logged[0]["peer"], refused[0].address)
        self.assertEqual(server.eventCounts["maxConnections"], 3)
        self.assertEqual(server.openConnections(), 2)


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class DaemonOptionTests(SynchronousTestCase):
    """
    C{--max-connections-per-peer}, C{--max-pending-output} and
    C{--allow-client}.
    """

    def assertUsageError(self, *args: str, match: str) -> None:
        with self.assertRaises(usage.UsageError) as raised:
            parse(*args)
        self.assertIn(match, str(raised.exception))

    def test_defaults(self) -> None:
        options = parse()
        self.assertEqual(options["max-connections-per-peer"], 256)
        self.assertEqual(options["first-byte-timeout"], 10.0)
        self.assertEqual(options["memory-budget"], 96 * 1024 * 1024)
        self.assertNotIn("max-pending-output", options)
        self.assertEqual(options["allow-client"], [])
        service = makeService(options, reactor=reactor)
        self.assertEqual(service.server.maxConnectionsPerPeer, 256)
        self.assertEqual(service.server.firstByteTimeout, 10.0)
        self.assertIn("at most 4096 connections, at most 256 per peer address", service.description)
        self.assertNotIn("maxPendingOutput", service.server._protocolAttributes)
        self.assertEqual(EchoApp.maxPendingOutput, 4 * 1024 * 1024)

    def test_broadcastClientsOnlyListen(self) -> None:
        """
        The clients of C{--app broadcast} only read: no first-byte timeout
        unless one is given.
        """
        self.assertIsNone(parse("--app", "broadcast")["first-byte-timeout"])
        self.assertEqual(
            parse("--app", "broadcast", "--first-byte-timeout", "3")["first-byte-timeout"], 3.0
        )

    def test_values(self) -> None:
        options = parse("--max-connections-per-peer", "3", "--max-pending-output", "65536")
        self.assertEqual(options["max-connections-per-peer"], 3)
        self.assertEqual(options["max-pending-output"], 65536)
        service = makeService(options, reactor=reactor)
        self.assertEqual(service.server.maxConnectionsPerPeer, 3)
        self.assertEqual(service.server._protocolAttributes["maxPendingOutput"], 65536)
        self.assertIn("at most 3 per peer", service.description)
        self.assertIsNone(parse("--max-pending-output", "none")["max-pending-output"])
        self.assertIsNone(parse("--max-connections-per-peer", "none")["max-connections-per-peer"])
        self.assertIsNone(parse("--first-byte-timeout", "none")["first-byte-timeout"])
        self.assertIsNone(parse("--memory-budget", "none")["memory-budget"])
        self.assertEqual(
            makeService(parse("--memory-budget", "1048576"), reactor=reactor).server.memoryBudget,
            1048576,
        )
        self.assertEqual(parse("--first-byte-timeout", "2.5")["first-byte-timeout"], 2.5)
        self.assertIn(
            "at most 1 connection,",
            makeService(parse("--max-connections", "1"), reactor=reactor).description,
        )

    def test_errors(self) -> None:
        self.assertUsageError("--max-connections-per-peer", "0", match="1 or more")
        self.assertUsageError("--max-connections-per-peer", "x", match="1 or more")
        self.assertUsageError("--max-pending-output", "-5", match="number of bytes")
        self.assertUsageError("--first-byte-timeout", "0", match="more than 0 seconds")
        self.assertUsageError("--memory-budget", "0", match="1 or more")
        self.assertUsageError(
            "--allow-client", "client", match="--allow-client only applies with --tls"
        )
        self.assertUsageError(
            "--tls",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--no-client-auth",
            "--allow-client",
            "client",
            match="--no-client-auth",
        )
        self.assertUsageError(
            "--tls",
            "--ca",
            "a.pem",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--allow-client",
            " ",
            match="needs a name",
        )

    def test_allowClients(self) -> None:
        options = parse(
            "--tls",
            "--ca",
            "a.pem",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
            "--allow-client",
            "alice",
            "--allow-client",
            "bob.example",
        )
        self.assertEqual(options["allow-client"], ["alice", "bob.example"])
