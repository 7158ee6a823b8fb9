"""
Tests for a cluster of servers over one real Redis (L{tcpsc._cluster}): two
nodes in this process, on this reactor, each with its own Redis
connections, and clients that are plain TCP sockets (or Python's C{ssl} for
the TLS test), so that what a client of one node sees of the other is what
goes over the wire.

Every wait is on an event with a bound (L{waitFor}, L{within}); Redis is
started per test (L{tests._redis.RedisServer}) and stopped by its PID.
"""

from __future__ import annotations

from typing import Any

from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tcpsc import Client, MessageProtocol, Server, TLSConfig
from tcpsc._apps import Chat
from tcpsc._cluster import ClusterError, ClusterRegistry, parseClusterURL
from tcpsc._registry import IConnectionRegistry
from tests._helpers import RawPeer, asyncTest, certificates, waitFor, within
from tests._redis import RedisServer, freePort, requireRedis


class Silent(MessageProtocol):
    """
    Receives and says nothing: what reaches its clients comes from the
    server's send and broadcast.
    """

    def messageReceived(self, message: bytes) -> None:
        pass


class ParseTests(SynchronousTestCase):
    """
    L{parseClusterURL} accepts C{redis://} URLs and refuses anything else
    with a message naming the URL.
    """

    def test_defaults(self) -> None:
        config = parseClusterURL("redis://127.0.0.1")
        self.assertEqual(
            (config.host, config.port, config.db, config.prefix, config.ttl),
            ("127.0.0.1", 6379, 0, "tcpsc:", 15.0),
        )

    def test_everything(self) -> None:
        config = parseClusterURL("redis://node%40a:p%3Ass@[::1]:7000/3?prefix=chat:&ttl=4")
        self.assertEqual(
            (config.host, config.port, config.db, config.username, config.password),
            ("::1", 7000, 3, "node@a", "p:ss"),
        )
        self.assertEqual((config.prefix, config.ttl), ("chat:", 4.0))
        self.assertEqual(config.describe(), "redis://node@a@[::1]:7000/3")

    def test_refused(self) -> None:
        for url, why in [
            ("http://127.0.0.1:6379", "expected redis://"),
            ("redis://127.0.0.1:99999", "port"),
            ("redis://127.0.0.1:6379/zero", "database"),
            ("redis:///0", "no host"),
            ("redis://127.0.0.1/0?tll=3", "unknown parameter 'tll'"),
            ("redis://127.0.0.1/0?ttl=0", "ttl"),
        ]:
            with self.assertRaises(ValueError) as raised:
                parseClusterURL(url)
            self.assertIn(repr(url), str(raised.exception))
            self.assertIn(why, str(raised.exception))

    def test_serverRefusesBadURL(self) -> None:
        """
        A bad URL is refused when the server is made, not when it listens.
        """
        with self.assertRaises(ValueError) as raised:
            Server(cluster="redis//127.0.0.1")
        self.assertIn("'redis//127.0.0.1'", str(raised.exception))


class ClusterTestCase(TestCase):
    """
    Two-node set-up: a Redis, servers joined to it, raw TCP clients.
    """

    def setUp(self) -> None:
        requireRedis()
        self.redis = RedisServer(self)

    async def node(
        self, protocol: Any = Silent, url: str | None = None, **kwargs: Any
    ) -> tuple[Server, int]:
        tls = kwargs.pop("tls", None)
        server = Server(protocol, cluster=url or self.redis.url, reactor=reactor, **kwargs)
        self.addCleanup(lambda: within(server.stop(), 30))
        port = await within(server.listen(0, "127.0.0.1", tls=tls), 30)
        return server, port.getHost().port

    async def client(self, port: int) -> RawPeer:
        peer = RawPeer()
        await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer))
        self.addCleanup(lambda: peer.transport.loseConnection() if peer.transport else None)
        return peer

    async def clients(self, server: Server, port: int, count: int) -> list[RawPeer]:
        """
        Connect C{count} clients to C{server} and wait until it established
        them all (a plain TCP client is established on its first byte: each
        sends an empty line... no: the server establishes plain TCP at once).
        """
        before = len(server._registry._local.ids())  # type: ignore[union-attr]
        peers = [await self.client(port) for _ in range(count)]
        await waitFor(lambda: len(server._registry._local.ids()) == before + count)  # type: ignore[union-attr]
        return peers


class TwoNodesTests(ClusterTestCase):
    @asyncTest
    async def test_interface(self) -> None:
        """
        The cluster's registry provides the interface the server asks of a
        registry.
        """
        server, _ = await self.node()
        self.assertIsInstance(server._registry, ClusterRegistry)
        self.assertTrue(verifyObject(IConnectionRegistry, server._registry))

    @asyncTest
    async def test_chat(self) -> None:
        """
        The chat app across two nodes: a client of one sees the messages of
        a client of the other, prefixed with the sender's cluster-wide id,
        and not its own.
        """
        a, portA = await self.node(Chat)
        b, portB = await self.node(Chat)
        alice = await self.client(portA)
        bob = await self.client(portB)
        carol = await self.client(portB)
        await waitFor(lambda: len(a.clientIds()) == 3 and len(b.clientIds()) == 3)
        self.assertEqual(a.clientIds(), b.clientIds())
        aliceId = a._registry._local.ids()[0]  # type: ignore[union-attr]
        bobId, carolId = b._registry._local.ids()  # type: ignore[union-attr]
        self.assertEqual(len({aliceId, bobId, carolId}), 3)
        alice.transport.write(b"hello from a\n")
        bob.transport.write(b"hello from b\n")
        await waitFor(lambda: len(alice.messages()) == 1 and len(carol.messages()) == 2)
        self.assertEqual(alice.messages(), [b"%d: hello from b" % bobId])
        self.assertEqual(
            sorted(carol.messages()),
            sorted([b"%d: hello from a" % aliceId, b"%d: hello from b" % bobId]),
        )
        await waitFor(lambda: len(bob.messages()) == 1)
        self.assertEqual(bob.messages(), [b"%d: hello from a" % aliceId])

    @asyncTest
    async def test_sendRemote(self) -> None:
        """
        C{send} to an id of the other node returns C{True} and the client
        gets the messages, in order; to an id known nowhere, C{False}.
        """
        a, _ = await self.node()
        b, portB = await self.node()
        (peer,) = await self.clients(b, portB, 1)
        (remoteId,) = b.clientIds()
        await waitFor(lambda: a.clientIds() == [remoteId])
        for i in range(200):
            self.assertTrue(a.send(remoteId, b"message %d" % i))
        self.assertFalse(a.send(remoteId + 10_000, b"nobody"))
        await waitFor(lambda: len(peer.messages()) == 200)
        self.assertEqual(peer.messages(), [b"message %d" % i for i in range(200)])

    @asyncTest
    async def test_broadcastOnce(self) -> None:
        """
        A broadcast from either node reaches every client of both nodes
        exactly once, and the excluded ids of either node are left out.
        """
        a, portA = await self.node()
        b, portB = await self.node()
        peersA = await self.clients(a, portA, 5)
        peersB = await self.clients(b, portB, 5)
        await waitFor(lambda: len(a.clientIds()) == 10 and len(b.clientIds()) == 10)
        idsA = a._registry._local.ids()  # type: ignore[union-attr]
        idsB = b._registry._local.ids()  # type: ignore[union-attr]
        self.assertEqual(a.broadcast(b"one"), 5)
        self.assertEqual(b.broadcast(b"two", exclude=[idsA[0], idsB[0]]), 4)
        a.broadcast(b"three", exclude=idsB[1])
        everyone = peersA + peersB
        expected = {
            id(p): [b"one"] + ([] if i in (0, 5) else [b"two"]) + ([] if i == 6 else [b"three"])
            for i, p in enumerate(everyone)
        }
        await waitFor(lambda: all(len(p.messages()) >= len(expected[id(p)]) for p in everyone))
        # Anything delivered twice would have arrived by the time the
        # marker, sent after, does.
        a.broadcast(b"marker")
        await waitFor(lambda: all(p.messages()[-1:] == [b"marker"] for p in everyone))
        for p in everyone:
            # In order from each node; the two nodes' broadcasts interleave.
            self.assertEqual(sorted(p.messages()), sorted(expected[id(p)] + [b"marker"]))
            self.assertEqual(
                [m for m in p.messages() if m != b"two"],
                [m for m in expected[id(p)] if m != b"two"] + [b"marker"],
            )

    @asyncTest
    async def test_idsAndDirectory(self) -> None:
        """
        Ids are unique across nodes; C{clientIds()} and C{clientAddress}
        answer for the clients of both; a client that leaves leaves the
        directory of the other node too.
        """
        a, portA = await self.node()
        b, portB = await self.node()
        peersA = await self.clients(a, portA, 3)
        peersB = await self.clients(b, portB, 3)
        await waitFor(lambda: len(a.clientIds()) == 6 and len(b.clientIds()) == 6)
        self.assertEqual(len(set(a.clientIds())), 6)
        self.assertEqual(a.clientIds(), b.clientIds())
        for peer, node in [(peersB[0], b), (peersA[0], a)]:
            host = peer.transport.getHost()
            (clientId,) = [
                i
                for i in node._registry._local.ids()
                if node.clientAddress(i)[1] == host.port  # type: ignore[union-attr]
            ]
            self.assertEqual(a.clientAddress(clientId), ("127.0.0.1", host.port))
            self.assertEqual(b.clientAddress(clientId), ("127.0.0.1", host.port))
        gone = b._registry._local.ids()[0]  # type: ignore[union-attr]
        b.disconnect(gone)
        await waitFor(lambda: gone not in a.clientIds())
        self.assertFalse(a.send(gone, b"late"))

    @asyncTest
    async def test_unreachable(self) -> None:
        """
        A server whose Redis does not answer fails to listen with a clear
        error naming the URL, within the connect timeout, and listens on
        nothing.
        """
        url = f"redis://127.0.0.1:{freePort()}/0"
        server = Server(Silent, cluster=url, reactor=reactor)
        started = reactor.seconds()
        with self.assertRaises(ClusterError) as raised:
            await within(server.listen(0, "127.0.0.1"), 30)
        self.assertLess(reactor.seconds() - started, 10)
        self.assertIn(f"cannot join the cluster at {url}", str(raised.exception))
        self.assertEqual(server.ports, [])
        await within(server.stop())


class TLSTests(ClusterTestCase):
    @asyncTest
    async def test_remoteCertificate(self) -> None:
        """
        The certificate a TLS client presented to one node, and its
        subject, are answered by the other node too.
        """
        c = certificates()
        tls = TLSConfig(ca=c.ca, cert=c.server, key=c.serverKey)
        a, _ = await self.node()
        b, portB = await self.node(tls=tls)
        client = Client()
        self.addCleanup(lambda: within(client.disconnect()))
        await within(
            client.connect(
                "127.0.0.1", portB, tls=TLSConfig(ca=c.ca, cert=c.client, key=c.clientKey)
            ),
            30,
        )
        await waitFor(lambda: len(a.clientIds()) == 1)
        (clientId,) = a.clientIds()
        certificate = a.clientCertificate(clientId)
        self.assertIsNotNone(certificate)
        self.assertEqual(certificate, b.clientCertificate(clientId))
        self.assertEqual(a.clientSubjectPart(clientId, NameOID.COMMON_NAME), "client")
        self.assertEqual(a.clientSubjectPart(clientId, "CN"), b.clientSubjectPart(clientId, "CN"))
        self.assertEqual(a.clientAddress(clientId), b.clientAddress(clientId))


class OutageTests(ClusterTestCase):
    @asyncTest
    async def test_connectionCutForSeconds(self) -> None:
        """
        Node B's Redis connections are cut (C{CLIENT KILL USER}) and its
        reconnects refused for a few seconds (its Redis user switched off
        with C{ACL SETUSER}, a real refusal at C{AUTH}); meanwhile node A
        sends to a client of B and broadcasts, and B sends to a client of A.
        Once B is back, every message has arrived, in order, once.
        """
        self.redis.command("ACL", "SETUSER", "nodeb", "on", ">secret", "~*", "&*", "+@all")
        urlB = f"redis://nodeb:secret@127.0.0.1:{self.redis.port}/0"
        a, portA = await self.node()
        b, portB = await self.node(url=urlB)
        (peerA,) = await self.clients(a, portA, 1)
        (peerB,) = await self.clients(b, portB, 1)
        await waitFor(lambda: len(a.clientIds()) == 2 and len(b.clientIds()) == 2)
        (idA,) = a._registry._local.ids()  # type: ignore[union-attr]
        (idB,) = b._registry._local.ids()  # type: ignore[union-attr]
        cluster = b._cluster
        assert cluster is not None
        self.redis.command("ACL", "SETUSER", "nodeb", "off")
        killed = self.redis.command("CLIENT", "KILL", "USER", "nodeb")
        self.assertEqual(killed, 2)
        await waitFor(lambda: not cluster._reader.ready and not cluster._writer.ready)
        expectedB: list[bytes] = []
        expectedA: list[bytes] = []
        # Three seconds of traffic, ten rounds a second, while B is cut
        # off: B's reconnects fail at AUTH all along.
        for round in range(30):
            for i in range(5):
                message = b"send %d.%d" % (round, i)
                self.assertTrue(a.send(idB, message))
                expectedB.append(message)
            a.broadcast(b"broadcast %d" % round)
            expectedB.append(b"broadcast %d" % round)
            expectedA.append(b"broadcast %d" % round)
            self.assertTrue(b.send(idA, b"from b %d" % round))
            expectedA.append(b"from b %d" % round)
            await deferLater(reactor, 0.1, lambda: None)
        self.assertFalse(cluster._reader.ready)
        self.assertIn("WRONGPASS", cluster._reader.lastError)
        self.assertEqual(peerB.messages(), [])
        self.redis.command("ACL", "SETUSER", "nodeb", "on")
        await waitFor(lambda: len(peerB.messages()) >= len(expectedB), timeout=20)
        await waitFor(lambda: len(peerA.messages()) >= len(expectedA), timeout=20)
        # A marker after everything: anything delivered twice shows by then.
        a.send(idB, b"end")
        b.send(idA, b"end")
        await waitFor(
            lambda: peerB.messages()[-1:] == [b"end"] and peerA.messages()[-1:] == [b"end"]
        )
        self.assertEqual(peerB.messages(), [*expectedB, b"end"])
        # What A's client got: A's own broadcasts at once, B's sends after
        # the outage, each in its order.
        self.assertEqual(
            [m for m in peerA.messages() if m.startswith(b"broadcast")],
            [m for m in expectedA if m.startswith(b"broadcast")],
        )
        self.assertEqual(
            [m for m in peerA.messages() if not m.startswith(b"broadcast")],
            [m for m in expectedA if not m.startswith(b"broadcast")] + [b"end"],
        )
        self.assertEqual(a.clientIds(), b.clientIds())

    @asyncTest
    async def test_idsRunOut(self) -> None:
        """
        A node cut off from Redis issues the ids of the block it has, then
        refuses connections, with a logged reason, rather than wait or issue
        an id twice; once Redis is back it reserves a new block and accepts
        again.
        """
        self.redis.command("ACL", "SETUSER", "nodeb", "on", ">secret", "~*", "&*", "+@all")
        server = Server(
            Silent, cluster=f"redis://nodeb:secret@127.0.0.1:{self.redis.port}/0", reactor=reactor
        )
        self.addCleanup(lambda: within(server.stop(), 30))
        cluster = server._cluster
        assert cluster is not None
        cluster.blockSize = 4
        port = (await within(server.listen(0, "127.0.0.1"), 30)).getHost().port
        self.redis.command("ACL", "SETUSER", "nodeb", "off")
        self.redis.command("CLIENT", "KILL", "USER", "nodeb")
        await waitFor(lambda: not cluster._writer.ready)
        await self.clients(server, port, 4)
        self.assertEqual(server.clientIds(), [1, 2, 3, 4])
        refused = await self.client(port)
        await within(refused.lost)
        self.assertEqual(server.eventCounts.get("clusterIds"), 1)
        self.redis.command("ACL", "SETUSER", "nodeb", "on")
        await waitFor(lambda: cluster._writer.ready and len(cluster._blocks) > 0, timeout=20)
        await self.clients(server, port, 1)
        self.assertEqual(server.clientIds(), [1, 2, 3, 4, 5])

    @asyncTest
    async def test_redisRestarted(self) -> None:
        """
        Redis restarted without persistence: the nodes connect again and
        announce their clients again, so that the directory is whole again,
        and the ids reserved from then on stay above those in use.
        """
        a, portA = await self.node()
        b, portB = await self.node()
        await self.clients(a, portA, 2)
        await self.clients(b, portB, 2)
        await waitFor(lambda: len(a.clientIds()) == 4 and len(b.clientIds()) == 4)
        before = a.clientIds()
        self.redis.stop()
        self.redis.start()
        await waitFor(lambda: self.redis.command("HLEN", "tcpsc:dir") == 4, timeout=20)
        self.assertEqual(sorted(int(i) for i in self.redis.command("HKEYS", "tcpsc:dir")), before)  # type: ignore[union-attr]
        self.assertGreaterEqual(int(self.redis.command("GET", "tcpsc:next") or 0), max(before))  # type: ignore[arg-type]
        (peer,) = await self.clients(b, portB, 1)
        await waitFor(lambda: len(a.clientIds()) == 5)
        self.assertEqual(len(set(a.clientIds())), 5)
        a.broadcast(b"after the restart")
        await waitFor(lambda: peer.messages() == [b"after the restart"])

    @asyncTest
    async def test_queueBound(self) -> None:
        """
        While a node is cut off from Redis, what it sends to other nodes
        waits up to the bound of its queue; past it, a send to a remote id
        returns C{False} and the refusal is counted and logged, while its
        local clients are still served.
        """
        self.redis.command("ACL", "SETUSER", "nodeb", "on", ">secret", "~*", "&*", "+@all")
        a, portA = await self.node()
        b, portB = await self.node(url=f"redis://nodeb:secret@127.0.0.1:{self.redis.port}/0")
        await self.clients(a, portA, 1)
        (localPeer,) = await self.clients(b, portB, 1)
        await waitFor(lambda: len(b.clientIds()) == 2)
        (remoteId,) = a._registry._local.ids()  # type: ignore[union-attr]
        cluster = b._cluster
        assert cluster is not None
        cluster.maxQueuedBytes = 10_000
        self.redis.command("ACL", "SETUSER", "nodeb", "off")
        self.redis.command("CLIENT", "KILL", "USER", "nodeb")
        await waitFor(lambda: not cluster._writer.ready)
        accepted = 0
        while b.send(remoteId, b"x" * 100):
            accepted += 1
            self.assertLess(accepted, 1000)
        self.assertGreater(accepted, 50)
        self.assertEqual(b.eventCounts.get("clusterQueueFull"), 1)
        self.assertEqual(b.broadcast(b"local only"), 1)
        await waitFor(lambda: localPeer.messages() == [b"local only"])
