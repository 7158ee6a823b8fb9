"""
Tests for L{tcpsc.blocking.UdpServer} and L{tcpsc.blocking.UdpClient}: the
blocking API over UDP, on real sockets on 127.0.0.1 and ::1, against peers
that are not tcpsc (Python's own UDP sockets).

Like the other blocking tests these block the test thread on events, every
wait bounded (L{Recorder.waitFor}, L{waitUntil}, socket timeouts); a peer's
expiry is waited for through the closed worker, with a short
C{peerIdleTimeout}, never slept for.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import tcpsc
import tcpsc.blocking
from tcpsc import DEFAULT_MAX_DATAGRAM, ServerError, StartError
from tcpsc._reactorthread import sharedReactorThread
from tcpsc.blocking import UDP_INBOX_PER_PEER, UdpClient, UdpServer
from tests.test_blocking_support import TIMEOUT, Recorder, waitUntil


def _ipv6() -> bool:
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            probe.bind(("::1", 0))
        finally:
            probe.close()
    except OSError:
        return False
    return True


HAS_IPV6 = _ipv6()


class Peer:
    """
    A UDP peer that is not tcpsc: a plain socket, every receive bounded.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(TIMEOUT)

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, (self.host, port))

    def receive(self) -> tuple[bytes, Any]:
        """
        The next datagram and its sender; fails after L{TIMEOUT} seconds.
        """
        try:
            return self.sock.recvfrom(70_000)
        except TimeoutError:
            raise AssertionError(f"no datagram within {TIMEOUT} s") from None

    def close(self) -> None:
        self.sock.close()


class UdpTestCase(SynchronousTestCase):
    """
    Servers, clients and peers that are stopped or closed when the test
    ends.
    """

    def server(
        self, *args: Any, host: str = "127.0.0.1", start: bool = True, **kwargs: Any
    ) -> tuple[UdpServer, dict[str, Recorder]]:
        """
        A L{UdpServer} with recording workers, started on a free port of
        C{host} unless C{start} is false.
        """
        server = UdpServer(*args, **kwargs)
        self.addCleanup(server.stop, 30.0)
        recorders = {"established": Recorder(), "message": Recorder(), "closed": Recorder()}
        server.setWorkOnEstablished(recorders["established"])
        server.setWorkOnMessage(recorders["message"])
        server.setWorkOnClosed(recorders["closed"])
        if start:
            server.start(0, interface=host)
        return server, recorders

    def echoServer(self, *args: Any, host: str = "127.0.0.1", **kwargs: Any) -> UdpServer:
        server = UdpServer(*args, **kwargs)
        self.addCleanup(server.stop, 30.0)
        server.setWorkOnMessage(lambda clientId, message: server.sendMsg(clientId, message))
        server.start(0, interface=host)
        return server

    def peer(self, host: str = "127.0.0.1") -> Peer:
        peer = Peer(host)
        self.addCleanup(peer.close)
        return peer

    def client(self, *args: Any, **kwargs: Any) -> tuple[UdpClient, Recorder]:
        client = UdpClient(*args, **kwargs)
        self.addCleanup(client.stop, 30.0)
        messages = Recorder()
        client.setWorkOnMessage(messages)
        return client, messages


class EchoTests(UdpTestCase):
    """
    Echo both ways, over IPv4 and IPv6, with a peer that is not tcpsc.
    """

    def assertServerEchoes(self, host: str) -> None:
        server = self.echoServer(host=host)
        assert server.port is not None
        peer = self.peer(host)
        peer.send(b"hello", server.port)
        data, sender = peer.receive()
        self.assertEqual(data, b"hello")
        self.assertEqual(sender[1], server.port)

    def test_serverEchoesIPv4(self) -> None:
        """
        A L{UdpServer} whose worker sends each message back: a plain UDP
        socket gets its datagram back, from the server's port.
        """
        self.assertServerEchoes("127.0.0.1")

    def test_serverEchoesIPv6(self) -> None:
        """
        The same on ::1.
        """
        if not HAS_IPV6:
            raise self.skipTest("no IPv6 loopback")
        self.assertServerEchoes("::1")

    def assertClientTalks(self, host: str) -> None:
        server = self.peer(host)
        client, messages = self.client()
        client.start(host, server.port)
        self.assertTrue(client.isRunning())
        self.assertTrue(client.sendMsg(b"ping"))
        self.assertTrue(client.sendMsg("str too"))
        data, sender = server.receive()
        self.assertEqual(data, b"ping")
        self.assertEqual(server.receive()[0], b"str too")
        server.sock.sendto(b"pong", sender)
        self.assertEqual(messages.waitFor(1), [b"pong"])

    def test_clientIPv4(self) -> None:
        """
        A L{UdpClient} sends each message as one datagram to a plain UDP
        server, and hands the server's answer to its worker.
        """
        self.assertClientTalks("127.0.0.1")

    def test_clientIPv6(self) -> None:
        """
        The same on ::1.
        """
        if not HAS_IPV6:
            raise self.skipTest("no IPv6 loopback")
        self.assertClientTalks("::1")

    def test_clientAndServer(self) -> None:
        """
        A L{UdpClient} and an echo L{UdpServer} with a delimiter, 200
        messages in order.
        """
        server = self.echoServer(b"\n")
        assert server.port is not None
        client, messages = self.client(b"\n")
        client.start("127.0.0.1", server.port)
        sent = [f"message {i}".encode() for i in range(200)]
        # Paced by the echoes: loopback does not drop what is read in time.
        for i in range(0, len(sent), 20):
            for message in sent[i : i + 20]:
                self.assertTrue(client.sendMsg(message))
            messages.waitFor(i + 20)
        self.assertEqual(messages.snapshot(), sent)


class PeerTests(UdpTestCase):
    """
    Peers: ids, order, addresses, the established and closed workers.
    """

    def test_severalPeersInOrder(self) -> None:
        """
        Each of several peers gets its own positive id, and its messages
        reach the worker in the order it sent them, one at a time, after
        the established worker and with that id.
        """
        server, recorders = self.server()
        assert server.port is not None
        peers = [self.peer() for _ in range(5)]
        count = 100
        for i in range(count):
            for peer in peers:
                peer.send(b"%d" % i, server.port)
            if i % 20 == 19:
                # Bounded pacing: loopback drops only what is not read.
                recorders["message"].waitFor((i + 1) * len(peers))
        received = recorders["message"].waitFor(count * len(peers))
        ids = recorders["established"].waitFor(len(peers))
        self.assertEqual(len(set(ids)), len(peers))
        self.assertTrue(all(isinstance(i, int) and i > 0 for i in ids))
        for clientId in ids:
            self.assertEqual(
                [message for i, message in received if i == clientId],
                [b"%d" % i for i in range(count)],
            )
        self.assertEqual(server.getAllClientIds(), sorted(ids))

    def test_workersOnWorkerThreads(self) -> None:
        """
        Every worker runs on a worker thread, never in the reactor thread.
        """
        server = UdpServer(peerIdleTimeout=0.2)
        self.addCleanup(server.stop, 30.0)
        threads = Recorder()

        def record(*args: object) -> None:
            threads((threading.current_thread(), sharedReactorThread().isReactorThread()))

        server.setWorkOnEstablished(record)
        server.setWorkOnMessage(record)
        server.setWorkOnClosed(record)
        port = server.start(0, interface="127.0.0.1")
        self.peer().send(b"x", port)
        seen = threads.waitFor(3)
        self.assertEqual([inReactor for _, inReactor in seen], [False] * 3)
        self.assertNotIn(threading.current_thread(), [thread for thread, _ in seen])

    def test_sendFromManyThreads(self) -> None:
        """
        C{sendMsg} may be called from any thread: 4 threads sending 50
        messages each to one peer, every message arrives.
        """
        server, recorders = self.server()
        assert server.port is not None
        peer = self.peer()
        peer.send(b"hi", server.port)
        (clientId,) = recorders["established"].waitFor(1)
        results: list[bool] = []

        def send(thread: int) -> None:
            results.extend(server.sendMsg(clientId, b"%d-%d" % (thread, i)) for i in range(50))

        senders = [threading.Thread(target=send, args=(n,)) for n in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(TIMEOUT)
        self.assertEqual(results, [True] * 200)
        received = {peer.receive()[0] for _ in range(200)}
        self.assertEqual(received, {b"%d-%d" % (n, i) for n in range(4) for i in range(50)})

    def test_getClientIp(self) -> None:
        """
        C{getClientIp} answers the IP address of a peer; an unknown id is a
        L{ServerError}.
        """
        server, recorders = self.server()
        assert server.port is not None
        self.peer().send(b"x", server.port)
        (clientId,) = recorders["established"].waitFor(1)
        self.assertEqual(server.getClientIp(clientId), "127.0.0.1")
        with self.assertRaises(ServerError):
            server.getClientIp(clientId + 1)

    def test_getClientIpIPv6(self) -> None:
        """
        An IPv6 peer's address.
        """
        if not HAS_IPV6:
            raise self.skipTest("no IPv6 loopback")
        server, recorders = self.server(host="::1")
        assert server.port is not None
        self.peer("::1").send(b"x", server.port)
        (clientId,) = recorders["established"].waitFor(1)
        self.assertEqual(server.getClientIp(clientId), "::1")

    def test_establishedThenMessagesThenClosed(self) -> None:
        """
        The established worker runs on a peer's first datagram, before its
        message; the closed worker runs when the peer is forgotten after
        C{peerIdleTimeout}, after its messages; then the peer is no longer
        listed, C{sendMsg} to it is C{False}, and C{getClientIp} fails.
        """
        server, _ = self.server(peerIdleTimeout=1.0)
        assert server.port is not None
        order = Recorder()
        server.setWorkOnEstablished(lambda clientId: order("established", clientId))
        server.setWorkOnMessage(lambda clientId, message: order("message", clientId, message))
        server.setWorkOnClosed(lambda clientId: order("closed", clientId))
        peer = self.peer()
        peer.send(b"one", server.port)
        peer.send(b"two", server.port)
        events = order.waitFor(4)
        clientId = events[0][1]
        self.assertEqual(
            events,
            [
                ("established", clientId),
                ("message", clientId, b"one"),
                ("message", clientId, b"two"),
                ("closed", clientId),
            ],
        )
        self.assertEqual(server.getAllClientIds(), [])
        self.assertFalse(server.sendMsg(clientId, b"late"))
        with self.assertRaises(ServerError):
            server.getClientIp(clientId)

    def test_idsNeverReused(self) -> None:
        """
        A peer forgotten and heard from again gets a new, larger id; so
        does a peer after a restart of the server.
        """
        server, recorders = self.server(peerIdleTimeout=0.2)
        port = server.port
        assert port is not None
        peer = self.peer()
        peer.send(b"a", port)
        first = recorders["established"].waitFor(1)[0]
        self.assertEqual(recorders["closed"].waitFor(1), [first])
        peer.send(b"b", port)
        second = recorders["established"].waitFor(2)[1]
        self.assertGreater(second, first)
        self.assertEqual(server.getAllClientIds(), [second])
        server.stop(TIMEOUT)
        self.assertEqual(recorders["closed"].waitFor(2), [first, second])
        self.assertEqual(server.start(port, interface="127.0.0.1"), port)
        peer.send(b"c", port)
        third = recorders["established"].waitFor(3)[2]
        self.assertGreater(third, second)

    def test_tableFullForgetsLeastRecent(self) -> None:
        """
        With C{maxPeers} peers known, a new one makes the server forget the
        one heard from least recently: its closed worker runs.
        """
        server, recorders = self.server(maxPeers=2)
        assert server.port is not None
        a, b, c = self.peer(), self.peer(), self.peer()
        a.send(b"a", server.port)
        idA = recorders["established"].waitFor(1)[0]
        b.send(b"b", server.port)
        idB = recorders["established"].waitFor(2)[1]
        a.send(b"a again", server.port)
        recorders["message"].waitFor(3)
        c.send(b"c", server.port)
        idC = recorders["established"].waitFor(3)[2]
        self.assertEqual(recorders["closed"].waitFor(1), [idB])
        self.assertEqual(server.getAllClientIds(), sorted([idA, idC]))

    def test_manyAddressesBounded(self) -> None:
        """
        Datagrams from many more addresses than C{maxPeers} (as a flood of
        spoofed sources would be) leave at most C{maxPeers} peers known:
        each one forgotten has had its closed worker, after its established
        worker and its message.
        """
        server, recorders = self.server(maxPeers=8)
        assert server.port is not None
        peers = [self.peer() for _ in range(40)]
        for peer in peers:
            peer.send(b"x", server.port)
        established = recorders["established"].waitFor(40)
        closed = recorders["closed"].waitFor(32)
        recorders["message"].waitFor(40)
        self.assertEqual(len(set(established)), 40)
        self.assertLessEqual(set(closed), set(established))
        known = server.getAllClientIds()
        self.assertLessEqual(len(known), 8)
        self.assertEqual(set(known) | set(closed), set(established))


class SendTests(UdpTestCase):
    """
    C{sendMsg}: what is sent, and what is refused with nothing sent.
    """

    def test_oversizeRefused(self) -> None:
        """
        A message whose datagram would be longer than C{maxMessageLength}
        is refused (C{False}) and nothing is sent: the next datagram the
        peer gets is the one sent after it.  One of exactly the bound is
        sent.
        """
        server, recorders = self.server(maxMessageLength=100)
        assert server.port is not None
        peer = self.peer()
        peer.send(b"hi", server.port)
        (clientId,) = recorders["established"].waitFor(1)
        self.assertFalse(server.sendMsg(clientId, b"x" * 101))
        self.assertTrue(server.sendMsg(clientId, b"y" * 100))
        self.assertEqual(peer.receive()[0], b"y" * 100)

    def test_oversizeRefusedDefaultBound(self) -> None:
        """
        The default bound is one Ethernet frame's payload, 1,472 bytes.
        """
        server, recorders = self.server()
        assert server.port is not None
        peer = self.peer()
        peer.send(b"hi", server.port)
        (clientId,) = recorders["established"].waitFor(1)
        self.assertFalse(server.sendMsg(clientId, b"x" * (DEFAULT_MAX_DATAGRAM + 1)))
        self.assertTrue(server.sendMsg(clientId, b"marker"))
        self.assertEqual(peer.receive()[0], b"marker")

    def test_oversizeRefusedWithDelimiterAndAppend(self) -> None:
        """
        With a delimiter and C{messageAppend}, both count against the
        bound; a message holding the delimiter is refused.
        """
        server, recorders = self.server(b"\n", b"!", maxMessageLength=10)
        assert server.port is not None
        peer = self.peer()
        peer.send(b"hi\n", server.port)
        (clientId,) = recorders["established"].waitFor(1)
        self.assertFalse(server.sendMsg(clientId, b"x" * 9))
        self.assertFalse(server.sendMsg(clientId, b"a\nb"))
        self.assertTrue(server.sendMsg(clientId, b"y" * 8))
        self.assertEqual(peer.receive()[0], b"y" * 8 + b"!\n")

    def test_clientOversizeRefused(self) -> None:
        """
        The client refuses an oversized message too, and sends nothing.
        """
        server = self.peer()
        client, _ = self.client(maxMessageLength=50)
        client.start("127.0.0.1", server.port)
        self.assertFalse(client.sendMsg(b"x" * 51))
        self.assertTrue(client.sendMsg(b"marker"))
        self.assertEqual(server.receive()[0], b"marker")

    def test_unknownPeerOrNotRunning(self) -> None:
        """
        C{sendMsg} to an id no peer has is C{False}; so is any C{sendMsg}
        of a client not started.
        """
        server, _ = self.server()
        self.assertFalse(server.sendMsg(1, b"x"))
        client, _ = self.client()
        self.assertFalse(client.sendMsg(b"x"))

    def test_oversizeReceivedDropped(self) -> None:
        """
        A datagram longer than the bound is dropped whole, never delivered
        cut, and counted; the next one is delivered.
        """
        server, recorders = self.server(maxMessageLength=100)
        assert server.port is not None
        peer = self.peer()
        peer.send(b"z" * 101, server.port)
        peer.send(b"after", server.port)
        self.assertEqual([m for _, m in recorders["message"].waitFor(1)], [b"after"])
        self.assertEqual(server.eventCounts.get("datagramTooLong"), 1)


class DelimiterTests(UdpTestCase):
    """
    With a delimiter, a datagram holds several messages.
    """

    def test_severalMessagesPerDatagram(self) -> None:
        """
        One datagram of three delimited messages and a trailing part
        without a delimiter: four messages, in order.  The server's answer
        carries C{messageAppend} and the delimiter.
        """
        server, recorders = self.server(b"|", b"!")
        assert server.port is not None
        peer = self.peer()
        peer.send(b"a|bb|ccc|tail", server.port)
        received = recorders["message"].waitFor(4)
        self.assertEqual([m for _, m in received], [b"a", b"bb", b"ccc", b"tail"])
        self.assertTrue(server.sendMsg(received[0][0], b"answer"))
        self.assertEqual(peer.receive()[0], b"answer!|")

    def test_clientWithDelimiter(self) -> None:
        """
        The client splits a datagram into its messages, and appends the
        delimiter to what it sends.
        """
        server = self.peer()
        client, messages = self.client(b"\0")
        client.start("127.0.0.1", server.port)
        self.assertTrue(client.sendMsg(b"one"))
        data, sender = server.receive()
        self.assertEqual(data, b"one\0")
        server.sock.sendto(b"x\0y\0", sender)
        self.assertEqual(messages.waitFor(2), [b"x", b"y"])


class StartTests(UdpTestCase):
    """
    C{start()} raises L{StartError} with the original's codes.
    """

    def assertCode(self, code: int, start: Any, *args: Any, **kwargs: Any) -> StartError:
        with self.assertRaises(StartError) as raised:
            start(*args, **kwargs)
        self.assertEqual(raised.exception.code, code, str(raised.exception))
        return raised.exception

    def test_serverBadPort(self) -> None:
        """
        Ports outside 0-65535: code 10, and the server does not run.
        """
        server, _ = self.server(start=False)
        for port in (-1, 65536):
            self.assertCode(10, server.start, port, interface="127.0.0.1")
        self.assertFalse(server.isRunning())

    def test_serverPortInUse(self) -> None:
        """
        A UDP port another socket holds: code 42, with the reason.
        """
        holder = self.peer()
        server, _ = self.server(start=False)
        error = self.assertCode(42, server.start, holder.port, interface="127.0.0.1")
        self.assertIn(str(holder.port), str(error))
        self.assertFalse(server.isRunning())

    def test_serverAlreadyRunning(self) -> None:
        """
        Starting a running server: code -1; it still listens on its port.
        """
        server, _ = self.server()
        port = server.port
        self.assertCode(-1, server.start, 0, interface="127.0.0.1")
        self.assertTrue(server.isRunning())
        self.assertEqual(server.port, port)

    def test_serverStartsAgainOnItsPort(self) -> None:
        """
        After C{stop()} the server starts again at once on the same port.
        """
        server, _ = self.server()
        port = server.port
        assert port is not None
        server.stop(TIMEOUT)
        self.assertFalse(server.isRunning())
        self.assertIsNone(server.port)
        self.assertEqual(server.start(port, interface="127.0.0.1"), port)
        self.assertTrue(server.isRunning())

    def test_clientBadPort(self) -> None:
        """
        Client ports outside 1-65535: code 10.
        """
        client, _ = self.client()
        for port in (-1, 0, 65536):
            self.assertCode(10, client.start, "127.0.0.1", port)
        self.assertFalse(client.isRunning())

    def test_clientUnresolvableHost(self) -> None:
        """
        A host name that does not resolve: code 50.
        """
        client, _ = self.client()
        self.assertCode(50, client.start, "no-such-host.invalid", 9)
        self.assertFalse(client.isRunning())
        self.assertFalse(client.sendMsg(b"x"))

    def test_clientAlreadyRunning(self) -> None:
        """
        Starting a running client: code -1; it still sends where it did.
        """
        server = self.peer()
        client, _ = self.client()
        client.start("127.0.0.1", server.port)
        self.assertCode(-1, client.start, "127.0.0.1", server.port)
        self.assertTrue(client.sendMsg(b"still"))
        self.assertEqual(server.receive()[0], b"still")

    def test_clientStartsAgain(self) -> None:
        """
        After C{stop()} a client starts again, and its worker gets the new
        socket's messages.
        """
        server = self.peer()
        client, messages = self.client()
        client.start("127.0.0.1", server.port)
        client.stop(TIMEOUT)
        self.assertFalse(client.isRunning())
        self.assertFalse(client.sendMsg(b"stopped"))
        client.start("127.0.0.1", server.port)
        self.assertTrue(client.sendMsg(b"again"))
        data, sender = server.receive()
        self.assertEqual(data, b"again")
        server.sock.sendto(b"back", sender)
        self.assertEqual(messages.waitFor(1), [b"back"])

    def test_clientToNothingListening(self) -> None:
        """
        A client whose server is not there yet: its datagram is refused
        (ICMP port unreachable), counted as C{refused}; the client keeps
        running, and reaches the server once one listens there.
        """
        placeholder = Peer()
        port = placeholder.port
        placeholder.close()
        client, messages = self.client()
        client.start("127.0.0.1", port)
        self.assertTrue(client.sendMsg(b"anyone?"))
        waitUntil(lambda: client.eventCounts.get("refused", 0) >= 1)
        self.assertTrue(client.isRunning())
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", port))
        server.settimeout(TIMEOUT)
        self.assertTrue(client.sendMsg(b"now"))
        data, sender = server.recvfrom(100)
        self.assertEqual(data, b"now")
        server.sendto(b"hello", sender)
        self.assertEqual(messages.waitFor(1), [b"hello"])

    def test_clientStopsWhenItsSocketIsGone(self) -> None:
        """
        When the core client forgets the server on its own (as it does when
        the reactor closed its socket), the L{UdpClient} stops running:
        C{sendMsg} is C{False}, C{stop()} returns, and it starts again.
        """
        server = self.peer()
        client, _ = self.client()
        client.start("127.0.0.1", server.port)
        core: Any = client._core
        sharedReactorThread().call(TIMEOUT, core.disconnect)
        self.assertFalse(client.isRunning())
        self.assertFalse(client.sendMsg(b"x"))
        client.stop(TIMEOUT)
        client.start("127.0.0.1", server.port)
        self.assertTrue(client.sendMsg(b"again"))
        self.assertEqual(server.receive()[0], b"again")

    def test_badArguments(self) -> None:
        """
        Bounds out of range are a L{ValueError} naming them.
        """
        for kwargs, name in [
            ({"maxMessageLength": 65_528}, "maxMessageLength"),
            ({"maxMessageLength": 0}, "maxMessageLength"),
            ({"peerIdleTimeout": 0}, "peerIdleTimeout"),
            ({"maxPeers": 0}, "maxPeers"),
        ]:
            with self.assertRaises(ValueError) as raised:
                UdpServer(**kwargs)
            self.assertIn(name, str(raised.exception))
        with self.assertRaises(ValueError) as raised:
            UdpClient(maxMessageLength=70_000)
        self.assertIn("maxMessageLength", str(raised.exception))


class StopTests(UdpTestCase):
    """
    C{stop()} is bounded, and runs every closed worker after the messages.
    """

    def test_stopWhileWorkerBusy(self) -> None:
        """
        With a worker blocked, C{stop(timeout)} closes the port and returns
        after its timeout; the peer's closed worker runs once the blocked
        worker returns, after the message queued behind it.
        """
        server, recorders = self.server(b"|")
        port = server.port
        assert port is not None
        release = threading.Event()
        order = Recorder()

        def worker(clientId: int, message: bytes) -> None:
            release.wait(TIMEOUT)
            order("message", message)

        server.setWorkOnMessage(worker)
        server.setWorkOnClosed(lambda clientId: order("closed", clientId))
        peer = self.peer()
        # Two messages in one datagram: the second is queued behind the
        # first, whose worker blocks.
        peer.send(b"first|second", port)
        (clientId,) = recorders["established"].waitFor(1)
        server.stop(timeout=0.1)
        self.assertFalse(server.isRunning())
        self.assertEqual(server.getAllClientIds(), [])
        # The port is closed: another socket can take it.
        taker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(taker.close)
        taker.bind(("127.0.0.1", port))
        self.assertEqual(len(order), 0)
        release.set()
        self.assertEqual(
            order.waitFor(3),
            [("message", b"first"), ("message", b"second"), ("closed", clientId)],
        )

    def test_stopFromWorker(self) -> None:
        """
        A worker may stop its own server: C{stop()} returns in it, and the
        peer's closed worker runs after it.
        """
        server, recorders = self.server()
        assert server.port is not None
        stopped = threading.Event()

        def worker(clientId: int, message: bytes) -> None:
            server.stop()
            stopped.set()

        server.setWorkOnMessage(worker)
        self.peer().send(b"stop", server.port)
        self.assertTrue(stopped.wait(TIMEOUT))
        self.assertEqual(len(recorders["closed"].waitFor(1)), 1)
        self.assertFalse(server.isRunning())

    def test_queuedSendsGoOutBeforeStop(self) -> None:
        """
        What C{sendMsg} accepted before C{stop()} is sent.
        """
        server, recorders = self.server()
        assert server.port is not None
        peer = self.peer()
        peer.send(b"hi", server.port)
        (clientId,) = recorders["established"].waitFor(1)
        for i in range(50):
            self.assertTrue(server.sendMsg(clientId, b"%d" % i))
        server.stop(TIMEOUT)
        self.assertEqual([peer.receive()[0] for _ in range(50)], [b"%d" % i for i in range(50)])

    def test_clientQueuedSendsGoOutBeforeStop(self) -> None:
        """
        What the client's C{sendMsg} accepted before C{stop()} is sent.
        """
        server = self.peer()
        client, _ = self.client()
        client.start("127.0.0.1", server.port)
        for i in range(50):
            self.assertTrue(client.sendMsg(b"%d" % i))
        client.stop(TIMEOUT)
        self.assertEqual([server.receive()[0] for _ in range(50)], [b"%d" % i for i in range(50)])


class BoundTests(UdpTestCase):
    """
    A worker that falls behind costs messages, counted, not memory.
    """

    def test_workerBehindDropsAndCounts(self) -> None:
        """
        While a peer's worker is blocked, its messages queue up to
        L{UDP_INBOX_PER_PEER} bytes; the rest are dropped and counted as
        C{workerBehind}.  Once the worker returns, what was queued is
        delivered, in order, and the peer is served again.
        """
        server, _ = self.server()
        assert server.port is not None
        release = threading.Event()
        received = Recorder()

        def worker(clientId: int, message: bytes) -> None:
            release.wait(TIMEOUT)
            received(message)

        server.setWorkOnMessage(worker)
        peer = self.peer()
        size = 1400
        limit = 10 * (UDP_INBOX_PER_PEER // size)
        sent = 0
        while server.eventCounts.get("workerBehind", 0) == 0 and sent < limit:
            for _ in range(50):
                peer.send(b"%08d" % sent + b"x" * (size - 8), server.port)
                sent += 1
        release.set()
        self.assertGreater(server.eventCounts.get("workerBehind", 0), 0)
        # The peer is served again once its worker caught up: a marker gets
        # through (sent again while the backlog may still fill the queue).
        for _ in range(20):
            peer.send(b"marker", server.port)
            try:
                waitUntil(lambda: b"marker" in received.snapshot(), timeout=0.5)
                break
            except AssertionError:
                continue
        delivered = received.snapshot()
        self.assertIn(b"marker", delivered)
        numbers = [int(m[:8]) for m in delivered if m != b"marker"]
        self.assertEqual(numbers, sorted(numbers))
        # The messages queued before the first loss fit in the bound.
        run = 0
        while run < len(numbers) and numbers[run] == run:
            run += 1
        self.assertLessEqual(run * size, UDP_INBOX_PER_PEER)


class ExportTests(SynchronousTestCase):
    def test_exports(self) -> None:
        """
        C{UdpServer} and C{UdpClient} are in C{tcpsc.blocking} only.
        """
        self.assertIn("UdpServer", tcpsc.blocking.__all__)
        self.assertIn("UdpClient", tcpsc.blocking.__all__)
        self.assertNotIn("UdpServer", tcpsc.__all__)
        self.assertNotIn("UdpClient", tcpsc.__all__)
        self.assertFalse(hasattr(tcpsc, "UdpServer"))
        self.assertFalse(hasattr(tcpsc, "UdpClient"))
