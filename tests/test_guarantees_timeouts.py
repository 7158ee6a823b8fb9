"""
Timeouts: the server's handshake timeout (10 s by default) and optional idle
timeout, and the client's connect timeout.  A peer that stalls is cut when
its time is up and never holds up anyone else; a peer that keeps sending is
still cut at the handshake timeout, and an active connection is not cut by
the idle timeout.

Also covered elsewhere: a silent peer on a TLS port
(L{tests.test_server.HostilePeerTests.test_silentPeerTimesOutWithoutBlockingOthers}),
a client whose TLS handshake never completes
(L{tests.test_client.TimeoutAndCancelTests}), the daemon's C{--idle-timeout}
(L{tests.test_tap}).
"""

from __future__ import annotations

import socket

from OpenSSL import SSL
from twisted.internet import reactor, tcp
from twisted.internet.task import LoopingCall

from tcpsc import Client, ConnectError
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


def clientHello() -> bytes:
    """
    The first bytes of a real TLS 1.3 client: its ClientHello record.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


class HandshakeTimeoutTests(GuaranteeTestCase):
    """
    A TLS peer that sends its ClientHello a byte at a time (slowloris).
    """

    @asyncTest
    async def test_slowlorisCutWithoutBlockingOthers(self) -> None:
        """
        The dripping peer keeps sending, yet it is disconnected once
        C{handshakeTimeout} has passed since it connected, and logged once;
        meanwhile other TLS clients complete their handshakes and are
        served.
        """
        timeout = 1.5
        events = self.captureLogs()
        server, port = await self.startServer(Echo, tls=serverTLS(), handshakeTimeout=timeout)
        peer = await self.connectRaw(port)
        hello = clientHello()
        self.assertGreater(len(hello), 100)
        dripped: list[int] = []

        def drip() -> None:
            if peer.lost.called or len(dripped) >= len(hello):
                return
            at = len(dripped)
            peer.transport.write(hello[at : at + 1])
            dripped.append(at)

        dripping = LoopingCall(drip)
        dripping.start(0.1)
        self.addCleanup(lambda: dripping.running and dripping.stop())
        await waitFor(lambda: server.openConnections() == 1, SHORT)

        for n in range(3):
            received: list[bytes] = []
            client = await self.connectClient(port, tls=clientTLS(), onMessage=received.append)
            self.assertTrue(client.send(b"served %d" % n))
            await waitFor(lambda received=received: received, SHORT, what="the echo to the client")
            self.assertEqual(received, [b"served %d" % n])
        self.assertFalse(
            peer.lost.called,
            "the slow peer was cut before the others were "
            "served: the check proves nothing on this machine",
        )

        await within(peer.lost, timeout + SHORT)
        elapsed = peer.lostAt - peer.connectedAt  # type: ignore[operator]
        self.assertGreaterEqual(elapsed, timeout * 0.9)
        self.assertLess(elapsed, timeout + 5)
        # It kept sending until the end: activity does not extend the time.
        self.assertGreaterEqual(len(dripped), int(timeout / 0.1 * 0.5))
        self.assertLess(len(dripped), len(hello))
        cut = [e for e in self.warnings(events) if e.get("peer") == peer.address]
        self.assertEqual(len(cut), 1, cut)
        self.assertIn(f"handshake timeout ({timeout:g} s)", cut[0]["why"])
        self.assertEqual(len(server.clientIds()), 3)


class IdleTimeoutTests(GuaranteeTestCase):
    """
    C{idleTimeout}: a connection without traffic is closed; one with
    traffic is not.
    """

    @asyncTest
    async def test_idleCutActiveKept(self) -> None:
        timeout = 1.0
        server, port = await self.startServer(Echo, idleTimeout=timeout)
        idle = await self.connectRaw(port)
        received: list[bytes] = []
        closed: list[object] = []
        active = await self.connectClient(port, onMessage=received.append, onClosed=closed.append)
        talking = LoopingCall(lambda: active.send(b"tick"))
        talking.start(0.2)
        self.addCleanup(lambda: talking.running and talking.stop())

        await within(idle.lost, timeout + SHORT)
        elapsed = idle.lostAt - idle.connectedAt  # type: ignore[operator]
        self.assertGreaterEqual(elapsed, timeout * 0.9)
        self.assertLess(elapsed, timeout + 5)
        # The active connection lives on for more than another idle period.
        start = reactor.seconds()
        count = len(received)
        await waitFor(lambda: len(received) >= count + 8, SHORT)
        self.assertGreater(reactor.seconds() - start, timeout)
        self.assertEqual(closed, [])
        self.assertTrue(active.isConnected)
        self.assertEqual(len(server.clientIds()), 1)


class ConnectTimeoutTests(GuaranteeTestCase):
    """
    C{Client(connectTimeout=...)} bounds the TCP connection attempt itself,
    not only the TLS handshake after it.
    """

    @asyncTest
    async def test_tcpConnectTimesOut(self) -> None:
        """
        A listener whose queue is full drops new connection attempts; the
        client gives up after its connect timeout with code 50.
        """
        await self.connectTimesOut("127.0.0.1")

    @asyncTest
    async def test_tcpConnectTimesOutByName(self) -> None:
        """
        The same through name resolution (Twisted's L{HostnameEndpoint},
        whose attempts must be cancelled too).
        """
        await self.connectTimesOut("localhost")

    async def connectTimesOut(self, host: str) -> None:
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):
            filler = socket.socket()
            self.addCleanup(filler.close)
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
        client = Client(connectTimeout=0.5)
        self.addCleanup(client.disconnect)
        started = reactor.seconds()
        error = await within(self.assertFailure(client.connect(host, port), ConnectError))
        elapsed = reactor.seconds() - started
        self.assertEqual(error.code, 50)
        self.assertIn("timed out", str(error))
        self.assertGreaterEqual(elapsed, 0.45)
        self.assertLess(elapsed, 5)
        # Nothing of the attempt lingers: no socket still connecting, no
        # timer of Twisted's endpoint left to fire.
        connecting = [
            s for s in reactor.getWriters() + reactor.getReaders() if isinstance(s, tcp.Client)
        ]
        self.assertEqual(connecting, [])
        leftover = [
            c
            for c in reactor.getDelayedCalls()
            if "failIfNotConnected" in repr(c) or "iterateEndpoint" in repr(c)
        ]
        self.assertEqual(leftover, [])
