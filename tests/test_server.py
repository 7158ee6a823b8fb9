"""
Tests for L{tcpsc.Server} over real sockets on the loopback interface.

The peers are L{tcpsc.Client} instances in the same reactor where a
well-behaved client is what is being served, and plain TCP peers (a bare
Twisted L{Protocol}, or blocking sockets in a thread) where the point is what
the server does with a peer that is not a tcpsc client: one that connects and
says nothing, speaks plaintext to a TLS port, or connects and closes
thousands of times.

Every wait is on an event (a Deferred, or L{waitFor} with a bound); every
server is stopped and every client disconnected in the test's cleanups.
"""

from __future__ import annotations

import io
import itertools
import select
import socket
import threading
from typing import Any

from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

import tcpsc
from tcpsc import Client, MessageProtocol, Server, StreamProtocol, TLSConfig
from tests._helpers import (
    SHORT,
    RawPeer,
    asyncTest,
    certificates,
    openFileDescriptors,
    waitFor,
    within,
)


def serverTLS(requireClientCertificate: bool = True) -> TLSConfig:
    c = certificates()
    return TLSConfig(
        ca=c.ca, cert=c.server, key=c.serverKey, requireClientCertificate=requireClientCertificate
    )


def clientTLS(withCertificate: bool = True) -> TLSConfig:
    c = certificates()
    if withCertificate:
        return TLSConfig(ca=c.ca, cert=c.client, key=c.clientKey)
    return TLSConfig(ca=c.ca)


class Echo(MessageProtocol):
    """
    Sends every message back.
    """

    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(message)


class RecordingSink(io.BytesIO):
    """
    A continuous-mode sink that keeps its contents when it is closed.
    """

    value: bytes | None = None

    def close(self) -> None:
        if self.value is None:
            self.value = self.getvalue()
        super().close()


class ServerTestCase(TestCase):
    """
    Starting servers and peers whose cleanup is registered at once.
    """

    async def startServer(
        self,
        protocol: type | None = None,
        *,
        tls: TLSConfig | None = None,
        interface: str = "127.0.0.1",
        port: int = 0,
        **kwargs: Any,
    ) -> tuple[Server, int]:
        server = Server(protocol, **kwargs)
        self.addCleanup(lambda: within(server.stop(), 30))
        listening = await within(server.listen(port, interface, tls=tls))
        return server, listening.getHost().port

    async def connectClient(
        self, port: int, *, tls: TLSConfig | None = None, host: str = "127.0.0.1", **kwargs: Any
    ) -> Client:
        client = Client(**kwargs)
        self.addCleanup(lambda: within(client.disconnect()))
        await within(client.connect(host, port, tls=tls), 30)
        return client

    async def connectClients(self, count: int, port: int, **kwargs: Any) -> list[Client]:
        """
        Connect C{count} clients, at most 50 at a time, each with
        C{onMessage=kwargs["onMessage"][i]} if a list of callbacks is given.
        """
        onMessage = kwargs.pop("onMessage", None)
        clients: list[Client] = []
        for first in range(0, count, 50):
            group = [
                Deferred.fromCoroutine(
                    self.connectClient(
                        port, onMessage=onMessage[i] if onMessage is not None else None, **kwargs
                    )
                )
                for i in range(first, min(first + 50, count))
            ]
            clients.extend(await gatherResults(group, consumeErrors=True))
        return clients

    async def connectRaw(self, port: int, peer: RawPeer | None = None) -> RawPeer:
        peer = peer if peer is not None else RawPeer()

        def cleanup() -> Deferred[Any] | None:
            if peer.lost.called:
                return None
            peer.transport.abortConnection()
            return within(peer.lost)

        await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer))
        self.addCleanup(cleanup)
        return peer

    def captureLogs(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        observer = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return events

    def idOf(self, server: Server, client: Client) -> int:
        """
        The server's id of C{client}'s connection, found by its local port.
        """
        local = client.protocol.transport.getHost()  # type: ignore[union-attr]
        for clientId in server.clientIds():
            if server.clientAddress(clientId) == (local.host, local.port):
                return clientId
        raise AssertionError(f"the server has no connection from {local}")

    async def assertEchoes(
        self, client: Client, received: list[bytes], message: bytes = b"ping"
    ) -> None:
        """
        Send C{message} and wait until it comes back as the newest message.
        """
        count = len(received)
        self.assertTrue(client.send(message))
        await waitFor(lambda: len(received) > count, SHORT)
        self.assertEqual(received[count:], [message])


class EchoTests(ServerTestCase):
    """
    Messages round-trip; the callbacks fire with the right ids.
    """

    async def _echoWithCallbacks(self, tls: bool) -> None:
        established: list[int] = []
        closed: list[int] = []
        messages: list[tuple[int, bytes]] = []

        def onMessage(clientId: int, message: bytes) -> None:
            messages.append((clientId, message))
            server.send(clientId, message)

        server, port = await self.startServer(
            tls=serverTLS() if tls else None,
            onEstablished=established.append,
            onClosed=closed.append,
            onMessage=onMessage,
        )
        received: list[bytes] = []
        client = await self.connectClient(
            port, tls=clientTLS() if tls else None, onMessage=received.append
        )
        await waitFor(lambda: established, SHORT, what="the server's onEstablished")
        [clientId] = established
        self.assertEqual(server.clientIds(), [clientId])
        self.assertEqual(self.idOf(server, client), clientId)
        sent = [b"one", b"", "w\u00f6rld".encode(), b"x" * 100_000]
        for message in sent:
            self.assertTrue(client.send(message))
        await waitFor(lambda: len(received) >= len(sent), SHORT)
        self.assertEqual(received, sent)
        self.assertEqual(messages, [(clientId, m) for m in sent])
        self.assertEqual(closed, [])
        await within(client.disconnect())
        await waitFor(lambda: closed, SHORT, what="the server's onClosed")
        self.assertEqual(closed, [clientId])
        self.assertEqual(established, [clientId])
        self.assertEqual(server.clientIds(), [])

    @asyncTest
    async def test_echoCallbacksTCP(self) -> None:
        """
        Over TCP, C{onEstablished}, C{onMessage} and C{onClosed} fire with
        the connection's id, and C{send} from C{onMessage} echoes.
        """
        await self._echoWithCallbacks(tls=False)

    @asyncTest
    async def test_echoCallbacksTLS(self) -> None:
        """
        The same over TLS with a required client certificate.
        """
        await self._echoWithCallbacks(tls=True)

    async def _echoWithSubclass(self, tls: bool) -> None:
        established: list[int] = []
        closed: list[int] = []
        server, port = await self.startServer(
            Echo,
            tls=serverTLS() if tls else None,
            onEstablished=established.append,
            onClosed=closed.append,
        )
        received: list[bytes] = []
        clients = [
            await self.connectClient(
                port, tls=clientTLS() if tls else None, onMessage=received.append
            )
            for _ in range(2)
        ]
        await waitFor(lambda: len(established) == 2, SHORT)
        self.assertEqual(server.clientIds(), sorted(established))
        for clientId in established:
            protocol = server.connection(clientId)
            self.assertIsInstance(protocol, Echo)
            self.assertEqual(protocol.connectionId, clientId)
        await self.assertEchoes(clients[0], received, b"first")
        await self.assertEchoes(clients[1], received, b"second")
        second = self.idOf(server, clients[1])
        await within(clients[1].disconnect())
        await waitFor(lambda: closed, SHORT, what="the server's onClosed for the second client")
        self.assertEqual(closed, [second])
        self.assertEqual(server.clientIds(), [self.idOf(server, clients[0])])

    @asyncTest
    async def test_echoSubclassTCP(self) -> None:
        """
        A L{MessageProtocol} subclass serves each connection; the
        C{onEstablished}/C{onClosed} callbacks still fire.
        """
        await self._echoWithSubclass(tls=False)

    @asyncTest
    async def test_echoSubclassTLS(self) -> None:
        """
        The same over TLS.
        """
        await self._echoWithSubclass(tls=True)

    def test_onMessageWithOverridingSubclass(self) -> None:
        """
        C{onMessage} together with a protocol that overrides the hook it
        feeds would never be called: the constructor says so.
        """
        with self.assertRaises(ValueError) as caught:
            Server(Echo, onMessage=lambda clientId, message: None)
        self.assertIn("messageReceived", str(caught.exception))

        class Sink(StreamProtocol):
            def dataReceived(self, data: bytes) -> None:
                pass

        self.assertRaises(ValueError, Server, Sink, onMessage=lambda clientId, data: None)
        # Without the override both are fine.
        Server(MessageProtocol, onMessage=lambda clientId, message: None)
        Server(stream=True, onMessage=lambda clientId, data: None)


class CallbackErrorTests(ServerTestCase):
    """
    An exception raised by a user callback is logged; the server's
    bookkeeping and the other connections are unaffected.
    """

    @asyncTest
    async def test_onEstablishedAndOnClosedRaise(self) -> None:
        """
        Connections whose C{onEstablished} and C{onClosed} raise are still
        registered, served and unregistered, and C{stop()} completes.
        """
        calls: list[tuple[str, int]] = []

        def onEstablished(clientId: int) -> None:
            calls.append(("established", clientId))
            raise ZeroDivisionError("onEstablished")

        def onClosed(clientId: int) -> None:
            calls.append(("closed", clientId))
            raise ZeroDivisionError("onClosed")

        server, port = await self.startServer(Echo, onEstablished=onEstablished, onClosed=onClosed)
        received: list[list[bytes]] = [[], [], []]
        clients = await self.connectClients(3, port, onMessage=[r.append for r in received])
        await waitFor(lambda: len(server.clientIds()) == 3, SHORT)
        for client, r in zip(clients, received, strict=True):
            await self.assertEchoes(client, r, b"served anyway")
        await within(clients[0].disconnect())
        await waitFor(lambda: len(server.clientIds()) == 2, SHORT)
        await within(server.stop())
        self.assertEqual(server.openConnections(), 0)
        self.assertEqual(
            sorted(i for what, i in calls if what == "closed"),
            sorted(i for what, i in calls if what == "established"),
        )
        self.assertEqual(len(calls), 6)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 6)

    @asyncTest
    async def test_createSinkRaises(self) -> None:
        """
        A connection whose sink cannot be created is closed, never
        established; the next one is served.
        """
        sinks: list[RecordingSink] = []
        established: list[int] = []

        def createSink(clientId: int) -> RecordingSink:
            if not sinks:
                sinks.append(RecordingSink())
                raise OSError("disk full")
            sinks.append(RecordingSink())
            return sinks[-1]

        server, port = await self.startServer(
            stream=True, createSink=createSink, onEstablished=established.append
        )
        closed: list[Failure] = []
        first = Client(stream=True, onClosed=closed.append)
        self.addCleanup(first.disconnect)
        await within(first.connect("127.0.0.1", port))
        await waitFor(lambda: closed, SHORT, what="the client's onClosed")
        self.assertEqual(server.openConnections(), 0)
        self.assertEqual(established, [])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

        second = await self.connectClient(port, stream=True)
        await waitFor(
            lambda: established, SHORT, what="the server's onEstablished for the second connection"
        )
        self.assertTrue(second.send(b"kept"))
        await within(second.disconnect())
        await waitFor(lambda: sinks[-1].value is not None, SHORT)
        self.assertEqual(sinks[-1].value, b"kept")


class ManyClientsTests(ServerTestCase):
    """
    Many clients at once, each with its own ordered conversation.
    """

    @asyncTest
    async def test_everyEchoInOrder(self) -> None:
        """
        200 clients each send 1,000 numbered messages, in batches; each gets
        back every one of its own messages, in order, and nothing else.
        """
        clientCount, messageCount, batch = 200, 1000, 250
        server, port = await self.startServer(Echo)
        received: list[list[bytes]] = [[] for _ in range(clientCount)]
        clients = await self.connectClients(
            clientCount, port, onMessage=[r.append for r in received]
        )
        await waitFor(lambda: len(server.clientIds()) == clientCount, 30)
        expected = [[b"%d:%d" % (i, n) for n in range(messageCount)] for i in range(clientCount)]
        for first in range(0, messageCount, batch):
            refused = 0
            for i, client in enumerate(clients):
                for message in expected[i][first : first + batch]:
                    refused += not client.send(message)
            self.assertEqual(refused, 0)
            done = first + batch
            await waitFor(lambda done=done: all(len(r) >= done for r in received), 60)
        for i in range(clientCount):
            self.assertEqual(received[i], expected[i], f"client {i}")

    test_everyEchoInOrder.timeout = 120  # type: ignore[attr-defined]


class BroadcastTests(ServerTestCase):
    """
    L{Server.broadcast}.
    """

    async def _setUp(self, count: int) -> tuple[Server, list[Client], list[list[bytes]], list[int]]:
        server, port = await self.startServer()
        received: list[list[bytes]] = [[] for _ in range(count)]
        clients = await self.connectClients(count, port, onMessage=[r.append for r in received])
        await waitFor(lambda: len(server.clientIds()) == count, SHORT)
        ids = [self.idOf(server, c) for c in clients]
        return server, clients, received, ids

    @asyncTest
    async def test_reachesEveryClientOnce(self) -> None:
        """
        A broadcast is written once to every established connection; its
        return value is their number.
        """
        server, _, received, _ = await self._setUp(5)
        self.assertEqual(server.broadcast(b"hello"), 5)
        self.assertEqual(server.broadcast("end"), 5)
        await waitFor(lambda: all(b"end" in r for r in received), SHORT)
        for r in received:
            self.assertEqual(r, [b"hello", b"end"])

    @asyncTest
    async def test_exclude(self) -> None:
        """
        C{exclude} leaves out one id, or a collection of ids.
        """
        server, _, received, ids = await self._setUp(4)
        self.assertEqual(server.broadcast(b"not-0", exclude=ids[0]), 3)
        self.assertEqual(server.broadcast(b"not-1-2", exclude=[ids[1], ids[2]]), 2)
        self.assertEqual(server.broadcast(b"not-any", exclude={12345}), 4)
        await waitFor(lambda: all(b"not-any" in r for r in received), SHORT)
        self.assertEqual(received[0], [b"not-1-2", b"not-any"])
        self.assertEqual(received[1], [b"not-0", b"not-any"])
        self.assertEqual(received[2], [b"not-0", b"not-any"])
        self.assertEqual(received[3], [b"not-0", b"not-1-2", b"not-any"])

    @asyncTest
    async def test_refusedMessageWritesNothing(self) -> None:
        """
        A message that contains the delimiter is refused: 0, and no byte of
        it reaches any client (the next message arrives intact, first).
        """
        server, _, received, _ = await self._setUp(3)
        self.assertEqual(server.broadcast(b"one\ntwo"), 0)
        self.assertEqual(server.broadcast(b"after"), 3)
        await waitFor(lambda: all(r for r in received), SHORT)
        for r in received:
            self.assertEqual(r, [b"after"])

    @asyncTest
    async def test_noClients(self) -> None:
        """
        With nobody connected, or everybody excluded, a broadcast reaches 0.
        """
        server, clients, _, ids = await self._setUp(1)
        self.assertEqual(server.broadcast(b"x", exclude=ids[0]), 0)
        await within(clients[0].disconnect())
        await waitFor(lambda: not server.clientIds(), SHORT)
        self.assertEqual(server.broadcast(b"x"), 0)


class ConnectionLimitTests(ServerTestCase):
    """
    C{maxConnections} is a real limit.
    """

    @asyncTest
    async def test_refusesBeyondLimitTCP(self) -> None:
        """
        With 10 connections open the 11th is closed at once, unserved, and a
        warning names the peer and the limit; once one closes, a new
        connection is served again.
        """
        events = self.captureLogs()
        server, port = await self.startServer(Echo, maxConnections=10)
        received: list[bytes] = []
        clients = await self.connectClients(10, port, onMessage=[received.append] * 10)
        await waitFor(lambda: server.openConnections() == 10, SHORT)

        peer = await self.connectRaw(port)
        peer.transport.write(b"are you there?\n")
        await within(peer.lost, 5)
        self.assertEqual(bytes(peer.received), b"")
        self.assertLess(peer.lostAt - peer.connectedAt, 5)  # type: ignore[operator]
        self.assertEqual(server.openConnections(), 10)
        self.assertEqual(len(server.clientIds()), 10)
        warnings = [
            e
            for e in events
            if e.get("log_level") == LogLevel.warn and e.get("peer") == peer.localAddress()
        ]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertEqual(warnings[0]["maxConnections"], 10)

        await within(clients[0].disconnect())
        await waitFor(lambda: server.openConnections() == 9, SHORT)
        again: list[bytes] = []
        newcomer = await self.connectClient(port, onMessage=again.append)
        await self.assertEchoes(newcomer, again, b"welcome")
        self.assertEqual(server.openConnections(), 10)

    @asyncTest
    async def test_refusesBeyondLimitTLS(self) -> None:
        """
        The limit applies before any TLS work: a TLS client beyond it fails
        its handshake, the others are still served.
        """
        server, port = await self.startServer(Echo, tls=serverTLS(), maxConnections=2)
        received: list[bytes] = []
        clients = [
            await self.connectClient(port, tls=clientTLS(), onMessage=received.append)
            for _ in range(2)
        ]
        extra = Client()
        self.addCleanup(extra.disconnect)
        await self.assertFailure(
            within(extra.connect("127.0.0.1", port, tls=clientTLS())), tcpsc.TLSHandshakeError
        )
        self.assertEqual(server.openConnections(), 2)
        await self.assertEchoes(clients[1], received, b"still here")


class BacklogTests(ServerTestCase):
    """
    The listen queue of a port given by number.
    """

    @asyncTest
    async def test_burstOfConnections(self) -> None:
        """
        200 connections made while the server is busy (the reactor does not
        get to accept them) all complete at once, as with the original's
        C{listen(SOMAXCONN)}; with Twisted's default queue of 50 the rest
        would wait for SYN retransmissions, a second or more.
        """
        server, port = await self.startServer()
        await self.burst(server, port)

    @asyncTest
    async def test_burstOfConnectionsEndpointDescription(self) -> None:
        """
        A port given as an endpoint description without C{backlog=} (what
        the daemon's C{--port} becomes) gets the same listen queue.
        """
        server = Server()
        self.addCleanup(lambda: within(server.stop(), 30))
        listening = await within(server.listen("tcp:0:interface=127.0.0.1"))
        await self.burst(server, listening.getHost().port)

    async def burst(self, server: Server, port: int) -> None:
        count = 200
        sockets: list[socket.socket] = []

        def closeAll() -> None:
            for s in sockets:
                s.close()

        self.addCleanup(closeAll)
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
        # Still inside one reactor callback: nothing has been accepted.
        pending = set(sockets)
        deadline = reactor.seconds() + 1.0
        while pending and reactor.seconds() < deadline:
            _, writable, _ = select.select([], list(pending), [], 0.1)
            pending.difference_update(writable)
        self.assertEqual(len(pending), 0, f"{len(pending)} of {count} connections waiting")
        self.assertTrue(all(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 for s in sockets))
        await waitFor(lambda: server.openConnections() == count, SHORT)
        closeAll()
        await waitFor(lambda: server.openConnections() == 0, SHORT)


class HalfCloseTests(ServerTestCase):
    """
    A peer that half-closes after sending (C{shutdown(SHUT_WR)}, as
    C{printf ... | nc -N} does) still gets every reply.
    """

    async def echoAfterHalfClose(self, **kwargs: Any) -> None:
        server, port = await self.startServer(Echo, **kwargs)

        def peer() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=SHORT) as s:
                s.sendall(b"".join(b"message %d\n" % i for i in range(50)))
                s.shutdown(socket.SHUT_WR)
                received = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return received
                    received += chunk

        received = await within(deferToThread(peer))
        self.assertEqual(received, b"".join(b"message %d\n" % i for i in range(50)))
        await waitFor(lambda: server.openConnections() == 0, SHORT)

    @asyncTest
    async def test_halfClose(self) -> None:
        await self.echoAfterHalfClose()

    @asyncTest
    async def test_halfCloseWithIdleTimeout(self) -> None:
        """
        The same through the idle-timeout wrapper.
        """
        await self.echoAfterHalfClose(idleTimeout=30.0)


class ChurnTests(ServerTestCase):
    """
    Many short connections.
    """

    @asyncTest
    async def test_sequentialConnectClose(self) -> None:
        """
        5,000 connect/close cycles from a plain socket in a thread: every
        connection gets a new, larger id (ids are never recycled, unlike file
        descriptor numbers), each is established and closed exactly once, and
        no file descriptor is left behind.
        """
        cycles = 5000
        established: list[int] = []
        closed: list[int] = []
        # A few connections may be in flight at once, so that the thread
        # and the reactor overlap; each closed connection lets one more start.
        window = threading.Semaphore(8)
        stopping = threading.Event()
        errors: list[BaseException | str] = []

        def onClosed(clientId: int) -> None:
            closed.append(clientId)
            window.release()

        server, port = await self.startServer(onEstablished=established.append, onClosed=onClosed)
        before = openFileDescriptors()

        def churn() -> None:
            try:
                for _ in range(cycles):
                    if stopping.is_set():
                        return
                    if not window.acquire(timeout=30):
                        errors.append("the server stopped closing connections")
                        return
                    with socket.create_connection(("127.0.0.1", port), timeout=10):
                        pass
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=churn, name="churn", daemon=True)
        self.addCleanup(thread.join, 30)
        self.addCleanup(stopping.set)
        thread.start()
        await waitFor(lambda: not thread.is_alive() or errors, 60)
        self.assertEqual(errors, [])
        await waitFor(lambda: len(closed) == cycles and server.openConnections() == 0, 30)

        self.assertEqual(len(established), cycles)
        self.assertEqual(len(set(established)), cycles)
        self.assertTrue(
            all(a < b for a, b in itertools.pairwise(established)), "ids are not increasing"
        )
        self.assertGreaterEqual(min(established), 1)
        self.assertEqual(sorted(closed), established)
        self.assertEqual(server.clientIds(), [])
        self.assertLessEqual(openFileDescriptors(), before + 3)

    test_sequentialConnectClose.timeout = 90  # type: ignore[attr-defined]


class StopTests(ServerTestCase):
    """
    L{Server.stop} and listening again.
    """

    async def _stopFlushesThenRelisten(self, tls: bool) -> None:
        closed: list[int] = []
        serverConfig = serverTLS() if tls else None
        clientConfig = clientTLS() if tls else None
        server, port = await self.startServer(Echo, tls=serverConfig, onClosed=closed.append)
        received: list[list[bytes]] = [[] for _ in range(3)]
        clients = [
            await self.connectClient(port, tls=clientConfig, onMessage=received[i].append)
            for i in range(3)
        ]
        await waitFor(lambda: len(server.clientIds()) == 3, SHORT)
        ids = server.clientIds()
        big = bytes(range(256)).replace(b"\n", b"") * (4 * 1024 * 1024 // 255)
        self.assertTrue(server.send(self.idOf(server, clients[0]), big))

        await within(server.stop(), 30)
        self.assertEqual(sorted(closed), ids)
        self.assertEqual(server.clientIds(), [])
        self.assertEqual(server.openConnections(), 0)
        self.assertEqual(server.ports, [])
        self.assertFalse(server.send(ids[1], b"too late"))
        await waitFor(lambda: not any(c.isConnected for c in clients), SHORT)
        self.assertEqual(len(received[0]), 1)
        self.assertEqual(received[0][0], big)
        self.assertEqual(received[1:], [[], []])

        # Nobody listens any more.
        refused = Client()
        await self.assertFailure(within(refused.connect("127.0.0.1", port)), tcpsc.ConnectError)

        # The same port at once, though connections existed (TIME_WAIT).
        listening = await within(server.listen(port, "127.0.0.1", tls=serverConfig))
        self.assertEqual(listening.getHost().port, port)
        again: list[bytes] = []
        client = await self.connectClient(port, tls=clientConfig, onMessage=again.append)
        await self.assertEchoes(client, again, b"back again")
        [newId] = server.clientIds()
        self.assertGreater(newId, max(ids))

    @asyncTest
    async def test_stopFlushesThenRelistenTCP(self) -> None:
        """
        C{stop()} writes what was sent before it (4 MB), closes every
        connection with C{onClosed} for each, stops listening; the same port
        can be listened on again at once and is served.
        """
        await self._stopFlushesThenRelisten(tls=False)

    @asyncTest
    async def test_stopFlushesThenRelistenTLS(self) -> None:
        """
        The same over TLS.
        """
        await self._stopFlushesThenRelisten(tls=True)

    @asyncTest
    async def test_stopTwice(self) -> None:
        """
        Stopping a stopped server (or one that never listened) is harmless.
        """
        idle = Server()
        await within(idle.stop())
        server, _ = await self.startServer()
        await within(server.stop())
        await within(server.stop())
        self.assertEqual(server.ports, [])

    @asyncTest
    async def test_stopAbortsConnectionsThatDoNotClose(self) -> None:
        """
        A TLS peer that never answers the close keeps its connection open;
        C{stop()} aborts it after C{closeTimeout} instead of waiting forever.
        """
        server, port = await self.startServer(
            tls=serverTLS(), closeTimeout=0.5, handshakeTimeout=None
        )
        peer = await self.connectRaw(port)
        await waitFor(lambda: server.openConnections() == 1, SHORT)
        started = reactor.seconds()
        await within(server.stop())
        self.assertEqual(server.openConnections(), 0)
        self.assertLess(reactor.seconds() - started, 5)
        await within(peer.lost)


class SendAndLookupTests(ServerTestCase):
    """
    C{send}, C{clientAddress}, C{clientCertificate}, C{clientSubjectPart}.
    """

    @asyncTest
    async def test_sendToUnknownOrClosed(self) -> None:
        """
        C{send} returns C{False} for an id never given out and for a
        connection that has closed; C{True} while it is open.
        """
        closed: list[int] = []
        server, port = await self.startServer(onClosed=closed.append)
        self.assertFalse(server.send(1, b"nobody"))
        self.assertFalse(server.send(12345, b"nobody"))
        received: list[bytes] = []
        client = await self.connectClient(port, onMessage=received.append)
        await waitFor(
            lambda: server.clientIds(), SHORT, what="the server to register the connection"
        )
        clientId = self.idOf(server, client)
        self.assertTrue(server.send(clientId, b"hi"))
        self.assertFalse(server.send(clientId, b"two\nlines"))
        await waitFor(lambda: received, SHORT, what="the echo to the client")
        self.assertEqual(received, [b"hi"])
        await within(client.disconnect())
        await waitFor(lambda: closed, SHORT, what="the server's onClosed")
        self.assertFalse(server.send(clientId, b"gone"))
        self.assertFalse(server.disconnect(clientId))

    @asyncTest
    async def test_sendAfterStop(self) -> None:
        """
        After C{stop()} every send returns C{False}.
        """
        server, port = await self.startServer()
        client = await self.connectClient(port)
        await waitFor(
            lambda: server.clientIds(), SHORT, what="the server to register the connection"
        )
        clientId = self.idOf(server, client)
        await within(server.stop())
        self.assertFalse(server.send(clientId, b"after stop"))
        self.assertEqual(server.broadcast(b"after stop"), 0)

    @asyncTest
    async def test_clientAddressIPv4(self) -> None:
        """
        C{clientAddress} is the peer's C{(host, port)}.
        """
        server, port = await self.startServer()
        client = await self.connectClient(port)
        await waitFor(
            lambda: server.clientIds(), SHORT, what="the server to register the connection"
        )
        [clientId] = server.clientIds()
        local = client.protocol.transport.getHost()  # type: ignore[union-attr]
        self.assertEqual(server.clientAddress(clientId), ("127.0.0.1", local.port))

    @asyncTest
    async def test_clientAddressIPv6(self) -> None:
        """
        Listening on C{::1} serves IPv6 clients, whose address is IPv6.
        """
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
                probe.bind(("::1", 0))
        except OSError as e:
            raise SkipTest(f"IPv6 is not available: {e}") from e
        server, port = await self.startServer(Echo, interface="::1")
        received: list[bytes] = []
        client = await self.connectClient(port, host="::1", onMessage=received.append)
        await self.assertEchoes(client, received, b"over IPv6")
        [clientId] = server.clientIds()
        local = client.protocol.transport.getHost()  # type: ignore[union-attr]
        self.assertEqual(server.clientAddress(clientId), ("::1", local.port))

    @asyncTest
    async def test_unknownIdRaises(self) -> None:
        """
        Looking up an id that is not connected raises L{tcpsc.ServerError}.
        """
        server, _ = await self.startServer()
        for lookup in (server.clientAddress, server.clientCertificate, server.connection):
            self.assertRaises(tcpsc.ServerError, lookup, 7)
        self.assertRaises(tcpsc.ServerError, server.clientSubjectPart, 7, "CN")

    @asyncTest
    async def test_clientCertificateSubject(self) -> None:
        """
        Over TLS the client's certificate and its subject parts are known,
        by short name or by L{NameOID}; an absent part is C{None}, an unknown
        short name a L{ValueError}.
        """
        server, port = await self.startServer(tls=serverTLS())
        client = await self.connectClient(port, tls=clientTLS())
        await waitFor(
            lambda: server.clientIds(), SHORT, what="the server to register the connection"
        )
        clientId = self.idOf(server, client)
        certificate = server.clientCertificate(clientId)
        self.assertIsNotNone(certificate)
        self.assertEqual(server.clientSubjectPart(clientId, "CN"), "client")
        self.assertEqual(server.clientSubjectPart(clientId, "L"), "my city")
        self.assertEqual(server.clientSubjectPart(clientId, NameOID.COMMON_NAME), "client")
        self.assertEqual(server.clientSubjectPart(clientId, "OU"), "Client")
        self.assertIsNone(server.clientSubjectPart(clientId, "emailAddress"))
        self.assertRaises(ValueError, server.clientSubjectPart, clientId, "XX")

    @asyncTest
    async def test_noClientCertificate(self) -> None:
        """
        A TLS server that does not require client certificates serves a
        client without one; its certificate is C{None} and every subject
        part C{None} (the original crashes here: B12).
        """
        server, port = await self.startServer(Echo, tls=serverTLS(requireClientCertificate=False))
        received: list[bytes] = []
        client = await self.connectClient(
            port, tls=clientTLS(withCertificate=False), onMessage=received.append
        )
        await self.assertEchoes(client, received, b"anonymous")
        clientId = self.idOf(server, client)
        self.assertIsNone(server.clientCertificate(clientId))
        self.assertIsNone(server.clientSubjectPart(clientId, "CN"))
        self.assertIsNone(server.clientSubjectPart(clientId, NameOID.LOCALITY_NAME))
        self.assertRaises(ValueError, server.clientSubjectPart, clientId, "XX")

    @asyncTest
    async def test_plainTCPHasNoCertificate(self) -> None:
        """
        A plain TCP connection has no certificate.
        """
        server, port = await self.startServer()
        client = await self.connectClient(port)
        await waitFor(
            lambda: server.clientIds(), SHORT, what="the server to register the connection"
        )
        clientId = self.idOf(server, client)
        self.assertIsNone(server.clientCertificate(clientId))
        self.assertIsNone(server.clientSubjectPart(clientId, "CN"))


class ListenTests(ServerTestCase):
    """
    L{Server.listen} and its errors.
    """

    def test_portOutOfRange(self) -> None:
        """
        A port outside 0-65535 fails the Deferred with L{tcpsc.PortError},
        code 10, rather than raising.
        """
        server = Server()
        for port in (-1, 65536):
            d = server.listen(port, "127.0.0.1")
            failure = self.failureResultOf(d, tcpsc.PortError)
            self.assertEqual(failure.value.code, 10)
            self.assertIn(str(port), str(failure.value))
        self.assertEqual(server.ports, [])

    @asyncTest
    async def test_portInUse(self) -> None:
        """
        A port another socket listens on fails with L{tcpsc.ListenError},
        code 42, naming the port (given as a number or in an endpoint
        description).
        """
        _, port = await self.startServer()
        second = Server()
        self.addCleanup(second.stop)
        for where in (port, str(port), f"tcp:{port}:interface=127.0.0.1"):
            error = await self.assertFailure(
                within(second.listen(where, "127.0.0.1")), tcpsc.ListenError
            )
            self.assertEqual(error.code, 42)
            self.assertIn(str(port), str(error))
        self.assertEqual(second.ports, [])

    @asyncTest
    async def test_endpointDescription(self) -> None:
        """
        An endpoint description string is listened on, and served.
        """
        server = Server(Echo)
        self.addCleanup(lambda: within(server.stop()))
        listening = await within(server.listen("tcp:0:interface=127.0.0.1"))
        port = listening.getHost().port
        self.assertEqual(listening.getHost().host, "127.0.0.1")
        self.assertEqual(server.ports, [listening])
        received: list[bytes] = []
        client = await self.connectClient(port, onMessage=received.append)
        await self.assertEchoes(client, received, b"via endpoint")

    def test_badEndpointDescription(self) -> None:
        """
        A string that is neither a port nor an endpoint description is a
        L{tcpsc.PortError}.
        """
        d = Server().listen("no-such-endpoint-type:1234")
        self.assertEqual(self.failureResultOf(d, tcpsc.PortError).value.code, 10)

    def test_missingCertificateFile(self) -> None:
        """
        TLS with a certificate file that does not exist fails the Deferred
        with L{tcpsc.CertificateLoadError} code 31 naming the file; nothing
        is raised, nothing listens.
        """
        c = certificates()
        missing = c.path("missing.pem")
        server = Server()
        d = server.listen(0, "127.0.0.1", tls=TLSConfig(ca=c.ca, cert=missing, key=c.serverKey))
        error = self.failureResultOf(d, tcpsc.CertificateLoadError).value
        self.assertEqual(error.code, 31)
        self.assertIn("missing.pem", str(error))
        self.assertEqual(server.ports, [])


class ContinuousModeTests(ServerTestCase):
    """
    C{Server(stream=True)}: raw bytes per connection.
    """

    @asyncTest
    async def test_sinkPerConnection(self) -> None:
        """
        Each connection's bytes go to its own sink, intact (1,000,000 bytes),
        and the sink is closed when the connection ends; C{send} writes raw
        bytes, delimiters and all.
        """
        sinks: dict[int, RecordingSink] = {}

        def createSink(clientId: int) -> RecordingSink:
            sinks[clientId] = RecordingSink()
            return sinks[clientId]

        server, port = await self.startServer(stream=True, createSink=createSink)
        chunks: list[bytes] = []
        first = await self.connectClient(port, stream=True, onMessage=chunks.append)
        second = await self.connectClient(port, stream=True)
        await waitFor(lambda: len(server.clientIds()) == 2, SHORT)
        firstId, secondId = self.idOf(server, first), self.idOf(server, second)
        self.assertEqual(sorted(sinks), sorted([firstId, secondId]))

        data = bytes(i * 7 % 251 for i in range(1_000_000))
        self.assertTrue(first.send(data))
        self.assertTrue(second.send(b"second\nstream"))
        raw = b"raw\nbytes\x00\n"
        self.assertTrue(server.send(firstId, raw))
        await waitFor(lambda: b"".join(chunks) == raw, SHORT)

        await within(first.disconnect())
        await waitFor(lambda: sinks[firstId].value is not None, SHORT)
        self.assertEqual(len(sinks[firstId].value), len(data))  # type: ignore[arg-type]
        self.assertEqual(sinks[firstId].value, data)
        self.assertTrue(sinks[firstId].closed)
        self.assertIsNone(sinks[secondId].value)
        await within(second.disconnect())
        await waitFor(lambda: sinks[secondId].value is not None, SHORT)
        self.assertEqual(sinks[secondId].value, b"second\nstream")


class HostilePeerTests(ServerTestCase):
    """
    Peers that do not speak TLS on a TLS port.
    """

    @asyncTest
    async def test_silentPeerTimesOutWithoutBlockingOthers(self) -> None:
        """
        A TCP peer that connects to a TLS port and sends nothing is
        disconnected after C{handshakeTimeout}; meanwhile, a TLS client
        connects and is served (the original serves nobody while one silent
        peer is connected: B11).
        """
        timeout = 1.0
        events = self.captureLogs()
        server, port = await self.startServer(Echo, tls=serverTLS(), handshakeTimeout=timeout)
        peer = await self.connectRaw(port)
        await waitFor(lambda: server.openConnections() == 1, SHORT)

        received: list[bytes] = []
        client = await self.connectClient(port, tls=clientTLS(), onMessage=received.append)
        await self.assertEchoes(client, received, b"not blocked")
        self.assertFalse(
            peer.lost.called,
            "the silent peer was dropped before the client "
            "was served: the check proves nothing on this machine",
        )

        await within(peer.lost, timeout + SHORT)
        elapsed = peer.lostAt - peer.connectedAt  # type: ignore[operator]
        self.assertGreaterEqual(elapsed, timeout * 0.9)
        self.assertLess(elapsed, timeout + 5)
        self.assertEqual(server.openConnections(), 1)
        self.assertTrue(client.isConnected)
        await self.assertEchoes(client, received, b"still served")
        warnings = [
            e
            for e in events
            if e.get("log_level") == LogLevel.warn and e.get("peer") == peer.localAddress()
        ]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("handshake timeout", warnings[0]["why"])

    @asyncTest
    async def test_plaintextToTLSPort(self) -> None:
        """
        Plaintext sent to a TLS port ends that connection (logged, no
        callback); the server keeps serving TLS clients.
        """
        events = self.captureLogs()
        established: list[int] = []
        server, port = await self.startServer(
            Echo, tls=serverTLS(), onEstablished=established.append
        )
        peer = await self.connectRaw(port)
        peer.transport.write(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\nhello\n")
        await within(peer.lost)
        self.assertEqual(established, [])
        self.assertEqual(server.openConnections(), 0)
        self.assertTrue(
            any(
                e.get("log_level") == LogLevel.warn and e.get("peer") == peer.localAddress()
                for e in events
            ),
            events,
        )

        received: list[bytes] = []
        client = await self.connectClient(port, tls=clientTLS(), onMessage=received.append)
        await self.assertEchoes(client, received, b"still serving")
        self.assertEqual(len(established), 1)


class ConnectionLogTests(ServerTestCase):
    """
    Each established connection and each close is logged, unless
    C{logConnections=False}; refusals are logged either way.
    """

    def serverEvents(self, events: list[dict[str, Any]]) -> list[str]:
        """
        The formats of the server's events about connections.
        """
        return [
            e.get("log_format", "")
            for e in events
            if e.get("log_namespace", "").startswith("tcpsc._server")
            and e.get("log_format", "").startswith(("Connection ", "Refused"))
        ]

    async def connectAndClose(self, **kwargs: Any) -> tuple[list[str], RawPeer]:
        events = self.captureLogs()
        server, port = await self.startServer(Echo, maxConnections=1, **kwargs)
        received: list[bytes] = []
        client = await self.connectClient(port, onMessage=received.append)
        await self.assertEchoes(client, received)
        refused = await self.connectRaw(port)
        await within(refused.lost, 5)
        await within(client.disconnect())
        await waitFor(lambda: server.openConnections() == 0, SHORT)
        return self.serverEvents(events), refused

    @asyncTest
    async def test_logged(self) -> None:
        """
        By default: established, refused (over the limit), closed.
        """
        formats, _ = await self.connectAndClose()
        self.assertEqual(len([f for f in formats if "established" in f]), 1, formats)
        self.assertEqual(len([f for f in formats if "closed:" in f]), 1, formats)
        self.assertEqual(len([f for f in formats if f.startswith("Refused")]), 1, formats)
        self.assertEqual(len(formats), 3, formats)

    @asyncTest
    async def test_quiet(self) -> None:
        """
        With C{logConnections=False} only the refusal is logged.
        """
        formats, _ = await self.connectAndClose(logConnections=False)
        self.assertEqual(len(formats), 1, formats)
        self.assertTrue(formats[0].startswith("Refused a connection"), formats)
