"""
Tests of L{tcpsc._compat}: the one version check for the private names of
Twisted and pyOpenSSL that tcpsc uses, the list of those names, and both
paths of every use: the fast one (private names, in the checked releases)
and the public fallback, over real sockets on 127.0.0.1.

A new release that renamed a private attribute fails
L{PrivateNamesTests.test_everyNameExists} here instead of a user's server.
"""

from __future__ import annotations

import ast
import socket
from pathlib import Path
from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    connectProtocol,
)
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import implementer

import tcpsc
from tcpsc import Client, MessageProtocol, Server, _compat
from tcpsc._accept import BACKLOG, _GuardedPort
from tcpsc._output import OutputQueue
from tcpsc._transports import socketTransport
from tests._helpers import RawPeer, asyncTest, within
from tests.test_broadcast_coalescing import countWrites
from tests.test_guarantees_support import (
    GuaranteeTestCase,
    clientTLS,
    serverTLS,
    shrinkBuffers,
)


class ReleaseCheckTests(SynchronousTestCase):
    """
    L{_compat.checkedRelease}: which releases the private names are trusted
    in.
    """

    def test_inRange(self) -> None:
        """
        Both releases within their checked ranges, bounds included.
        """
        for twisted in range(_compat.TWISTED_CHECKED[0], _compat.TWISTED_CHECKED[1] + 1):
            for pyopenssl in range(_compat.PYOPENSSL_CHECKED[0], _compat.PYOPENSSL_CHECKED[1] + 1):
                self.assertTrue(_compat.checkedRelease(twisted, f"{pyopenssl}.0.1"))

    def test_outOfRange(self) -> None:
        """
        Either release below or above its range: not checked.
        """
        twistedLow, twistedHigh = _compat.TWISTED_CHECKED
        low, high = _compat.PYOPENSSL_CHECKED
        self.assertFalse(_compat.checkedRelease(twistedLow - 1, f"{low}.0.0"))
        self.assertFalse(_compat.checkedRelease(twistedHigh + 1, f"{low}.0.0"))
        self.assertFalse(_compat.checkedRelease(twistedLow, f"{low - 1}.9.0"))
        self.assertFalse(_compat.checkedRelease(twistedLow, f"{high + 1}.0.0"))

    def test_unparsable(self) -> None:
        """
        A version that is not a number (Twisted's C{"NEXT"} for unreleased
        code, a development string) is not checked.
        """
        low = _compat.TWISTED_CHECKED[0]
        pyopenssl = f"{_compat.PYOPENSSL_CHECKED[0]}.0.0"
        self.assertFalse(_compat.checkedRelease("NEXT", pyopenssl))
        self.assertFalse(_compat.checkedRelease("", pyopenssl))
        self.assertFalse(_compat.checkedRelease(low, "dev"))
        self.assertFalse(_compat.checkedRelease(low, "x.y.z"))

    def test_installed(self) -> None:
        """
        Without arguments, the installed releases are checked, and
        L{_compat.PRIVATE} is that verdict.
        """
        import OpenSSL
        from twisted import version

        self.assertEqual(
            _compat.checkedRelease(), _compat.checkedRelease(version.major, OpenSSL.__version__)
        )
        self.assertEqual(_compat.PRIVATE, _compat.checkedRelease())


#: Modules whose private names are not listed in PRIVATE_NAMES: none.
_UNLISTED_MODULES: frozenset[str] = frozenset()


def _definedByTcpsc(trees: dict[Path, ast.Module]) -> set[str]:
    """
    The names tcpsc itself defines: functions, classes, arguments,
    imports, and attributes assigned on C{self} or in a class body.
    """
    defined: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.arg):
                defined.add(node.arg)
            elif isinstance(node, ast.alias):
                defined.add(node.asname or node.name.split(".")[-1])
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            ):
                defined.add(node.attr)
    return defined


def _privateUses(tree: ast.Module) -> list[tuple[int, str]]:
    """
    Every private name a module reads as an attribute, through
    C{getattr}/C{hasattr}, or imports from another package.
    """
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            uses.append((node.lineno, node.attr))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            uses.append((node.lineno, node.args[1].value))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            uses.extend((node.lineno, part) for part in node.module.split("."))
            uses.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                uses.extend((node.lineno, part) for part in alias.name.split("."))
    return [
        (line, name) for line, name in uses if name.startswith("_") and not name.startswith("__")
    ]


async def realInstances(testCase: Any) -> list[object]:
    """
    Real instances of the classes whose private names are instance
    attributes: a port listening on 127.0.0.1, the server side of a
    connection to it, Twisted's TCP server endpoints.  Nothing mocked; the
    port and the connection are closed by C{testCase}'s cleanups.
    """
    accepted: Deferred[Protocol] = Deferred()

    class Accepted(Protocol):
        def connectionMade(self) -> None:
            accepted.callback(self)

    port = reactor.listenTCP(0, Factory.forProtocol(Accepted), interface="127.0.0.1")
    testCase.addCleanup(port.stopListening)
    peer = RawPeer()
    await within(
        connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), peer)
    )
    testCase.addCleanup(lambda: within(peer.lost))
    testCase.addCleanup(peer.transport.loseConnection)
    server = await within(accepted)
    # A TLS connection over loopback, on Twisted's own TLS transport: the
    # names tcpsc's TLS transport uses are Twisted's.
    tls = TLSMemoryBIOFactory(
        serverTLS().serverOptions(),
        isClient=False,
        wrappedFactory=Factory.forProtocol(Protocol),
        clock=reactor,
    )
    tlsPort = reactor.listenTCP(0, tls, interface="127.0.0.1")
    testCase.addCleanup(tlsPort.stopListening)
    client = Client()
    await within(client.connect("localhost", tlsPort.getHost().port, tls=clientTLS()))
    testCase.addCleanup(lambda: within(client.disconnect()))
    tlsProtocol = client.protocol.transport  # type: ignore[union-attr]
    return [
        port,
        server.transport,
        TCP4ServerEndpoint(reactor, 0),
        TCP6ServerEndpoint(reactor, 0),
        tls,
        tlsProtocol,
        tlsProtocol.getHandle(),
    ]


class PrivateNamesTests(GuaranteeTestCase):
    """
    L{_compat.PRIVATE_NAMES}: every private name used exists in the
    installed releases, and no module outside L{tcpsc._compat} uses one
    that is not listed.
    """

    def test_wellFormed(self) -> None:
        """
        Each entry is a description, an owner and a tuple of names.
        """
        self.assertTrue(_compat.PRIVATE_NAMES)
        for description, owner, names in _compat.PRIVATE_NAMES:
            self.assertIsInstance(description, str)
            self.assertIsNotNone(owner)
            self.assertIsInstance(names, tuple)
            self.assertTrue(names)
            for name in names:
                self.assertIsInstance(name, str)

    @asyncTest
    async def test_everyNameExists(self) -> None:
        """
        Every listed name exists on its owner: on the module or class, or,
        for instance attributes, on a real instance built here (a listening
        port, a connected socket transport, Twisted's TCP server endpoints).
        """
        instances = await realInstances(self)
        missing = []
        for description, owner, names in _compat.PRIVATE_NAMES:
            targets = [i for i in instances if isinstance(owner, type) and isinstance(i, owner)]
            for name in names:
                if not (hasattr(owner, name) or any(hasattr(i, name) for i in targets)):
                    missing.append(f"{getattr(owner, '__name__', owner)}.{name} ({description})")
        self.assertEqual(missing, [], "private names missing in the installed releases")

    def test_noOtherModuleUsesPrivateNames(self) -> None:
        """
        Outside L{tcpsc._compat} (and the TLS modules, see
        L{_UNLISTED_MODULES}), every private name tcpsc uses that it does
        not define itself is listed in L{_compat.PRIVATE_NAMES}: a new use
        fails here until it is listed (and so checked by
        L{test_everyNameExists}).  A name that tcpsc also gives one of its
        own attributes escapes this check, as do private names without a
        leading underscore (such as a transport's C{dataBuffer}).
        """
        package = Path(tcpsc.__file__).parent
        trees = {
            path: ast.parse(path.read_text(), str(path))
            for path in sorted(package.rglob("*.py"))
            if path.name != "_compat.py"
        }
        defined = _definedByTcpsc(trees)
        listed = {name for _, _, names in _compat.PRIVATE_NAMES for name in names}
        unlisted = [
            f"{path.relative_to(package)}:{line}: {name}"
            for path, tree in trees.items()
            if path.name not in _UNLISTED_MODULES
            for line, name in _privateUses(tree)
            if name not in defined and name not in listed
        ]
        self.assertEqual(unlisted, [])


class Echo(MessageProtocol):
    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(message)


@implementer(IHalfCloseableProtocol)
class Peer(RawPeer):
    """
    A plain TCP peer whose Deferreds fire when a number of messages has
    arrived and when the server closed its writing side.
    """

    def __init__(self) -> None:
        super().__init__()
        self.readEnded: Deferred[None] = Deferred()
        self._waiting: list[tuple[int, Deferred[list[bytes]]]] = []

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self._check()

    def _check(self) -> None:
        messages = self.messages()
        waiting, self._waiting = self._waiting, []
        for count, d in waiting:
            if len(messages) >= count:
                d.callback(messages)
            else:
                self._waiting.append((count, d))

    def arrived(self, count: int) -> Deferred[list[bytes]]:
        """
        Fires with the messages received once there are C{count} of them.
        """
        d: Deferred[list[bytes]] = Deferred()
        self._waiting.append((count, d))
        self._check()
        return within(d)

    def readConnectionLost(self) -> None:
        self.readEnded.callback(None)

    def writeConnectionLost(self) -> None:
        pass


class _PathTests:
    """
    What a server does on one path (see L{private}): the same behaviour on
    both, with the port, broadcast and buffers of that path.  Mixed into a
    L{GuaranteeTestCase} once per path.
    """

    #: Whether the fast paths may use private names (L{_compat.PRIVATE}).
    private: bool

    def setUp(self) -> None:
        if self.private and not _compat.checkedRelease():
            raise SkipTest("the installed releases were not checked: no private path")
        self.patch(_compat, "PRIVATE", self.private)

    def assertPortClass(self, port: object) -> None:
        if self.private:
            self.assertIsInstance(port, _GuardedPort)
        else:
            self.assertIs(type(port), tcp.Port)

    async def establishedServer(self, count: int, **kwargs: Any) -> tuple[Server, int, list[Peer]]:
        """
        A server on 127.0.0.1 and C{count} peers, each established.
        """
        pending: list[Deferred[int]] = [Deferred() for _ in range(count)]

        def established(clientId: int) -> None:
            if clientId <= count:
                pending[clientId - 1].callback(clientId)

        server, port = await self.startServer(onEstablished=established, **kwargs)
        peers = [await self.connectRaw(port, Peer()) for _ in range(count)]
        for d in pending:
            await within(d)
        return server, port, peers  # type: ignore[return-value]

    @asyncTest
    async def test_portNumber(self) -> None:
        """
        A port number: the private path's port (which pauses accepting when
        out of file descriptors), or Twisted's own, with the same listen
        queue.
        """
        server = Server()
        self.addCleanup(lambda: within(server.stop()))
        port = await within(server.listen(0, "127.0.0.1"))
        self.assertPortClass(port)
        self.assertEqual(port.backlog, BACKLOG)  # type: ignore[attr-defined]

    @asyncTest
    async def test_description(self) -> None:
        """
        An endpoint description: the same port class and listen queue as a
        port number, unless it gives its own queue.
        """
        server = Server()
        self.addCleanup(lambda: within(server.stop()))
        port = await within(server.listen("tcp:0:interface=127.0.0.1"))
        self.assertPortClass(port)
        self.assertEqual(port.backlog, BACKLOG)  # type: ignore[attr-defined]
        port = await within(server.listen("tcp:0:interface=127.0.0.1:backlog=7"))
        self.assertPortClass(port)
        self.assertEqual(port.backlog, 7)  # type: ignore[attr-defined]

    @asyncTest
    async def test_endpoint(self) -> None:
        """
        An endpoint given as an object is listened on as it is, on either
        path.
        """
        server = Server()
        self.addCleanup(lambda: within(server.stop()))
        endpoint = TCP4ServerEndpoint(reactor, 0, backlog=9, interface="127.0.0.1")
        port = await within(server.listen(endpoint))
        self.assertIs(type(port), tcp.Port)
        self.assertEqual(port.backlog, 9)  # type: ignore[attr-defined]

    @asyncTest
    async def test_acceptEchoClose(self) -> None:
        """
        The server accepts, echoes, notices a peer leaving, and accepts
        again after it.
        """
        closed: Deferred[int] = Deferred()

        def onClosed(clientId: int) -> None:
            if not closed.called:
                closed.callback(clientId)

        server, port, peers = await self.establishedServer(2, protocol=Echo, onClosed=onClosed)
        self.assertPortClass(server.ports[0])
        for n, peer in enumerate(peers):
            peer.transport.write(b"hello %d\nworld %d\n" % (n, n))
        for n, peer in enumerate(peers):
            self.assertEqual(await peer.arrived(2), [b"hello %d" % n, b"world %d" % n])
        peers[0].transport.loseConnection()
        self.assertEqual(await within(closed), 1)
        again = await self.connectRaw(port, Peer())
        again.transport.write(b"again\n")
        self.assertEqual(await again.arrived(1), [b"again"])
        self.assertEqual(server.clientIds(), [2, 3])

    @asyncTest
    async def test_broadcast(self) -> None:
        """
        Broadcasts made in one reactor turn reach every peer complete and
        in order; the private path calls a transport's C{write} once for
        them (then appends to its buffer), the public one once each.
        """
        server, _, peers = await self.establishedServer(3)
        writes = [countWrites(server.connection(i).transport) for i in server.clientIds()]
        sent = [b"broadcast %d" % n for n in range(50)]
        for message in sent:
            self.assertEqual(server.broadcast(message), 3)
        for calls in writes:
            self.assertEqual(len(calls), 1 if self.private else len(sent))
        for peer in peers:
            self.assertEqual(await peer.arrived(len(sent)), sent)
        self.assertEqual(_compat.appendableTransport(), tcp.Server if self.private else None)

    @asyncTest
    async def test_unsentBytes(self) -> None:
        """
        What a connection holds unsent, as the warning of a forced close
        reports it: the socket transport's buffer on the private path; on
        the public one, what it accepted while congested.
        """
        server, _, [peer] = await self.establishedServer(1, maxPendingOutput=32 * 1024)
        peer.transport.pauseProducing()
        [clientId] = server.clientIds()
        protocol: Any = server.connection(clientId)
        # In one reactor turn: nothing reaches the socket meanwhile.
        frame = b"u" * 1023
        beforeCongestion = 0
        while not protocol._congested:
            self.assertTrue(server.send(clientId, frame))
            beforeCongestion += 1
        for _ in range(10):
            self.assertTrue(server.send(clientId, frame))
        base = socketTransport(protocol.transport)
        if self.private:
            self.assertEqual(_compat.unsentBytes(base), (beforeCongestion + 10) * 1024)
            self.assertEqual(protocol._unsentBytes(), (beforeCongestion + 10) * 1024)
            # Nothing was written yet: the buffers hold just what is unsent.
            self.assertEqual(_compat.bufferedBytes(base), (beforeCongestion + 10) * 1024)
        else:
            self.assertIsNone(_compat.unsentBytes(base))
            self.assertIsNone(_compat.bufferedBytes(base))
            self.assertEqual(protocol._unsentBytes(), 10 * 1024)
        peer.transport.resumeProducing()
        await peer.arrived(beforeCongestion + 10)

    @asyncTest
    async def test_halfCloseWhileCongested(self) -> None:
        """
        A congested connection closed for writing (its output tracker
        paused) half-closes once everything is written.
        """
        server, _, [peer] = await self.establishedServer(1)
        peer.transport.pauseProducing()
        shrinkBuffers(peer.transport)
        [clientId] = server.clientIds()
        protocol: Any = server.connection(clientId)
        shrinkBuffers(protocol.transport)
        sent = 0
        while not protocol._congested:
            self.assertTrue(server.send(clientId, b"h" * 1023))
            sent += 1
        self.assertIs(_compat.writeClosing(protocol.transport), False if self.private else None)
        protocol.transport.loseWriteConnection()
        if self.private:
            self.assertIs(_compat.writeClosing(protocol.transport), True)
        peer.transport.resumeProducing()
        await within(peer.readEnded)
        self.assertEqual(len(peer.messages()), sent)

    @asyncTest
    async def test_outputQueueHalfClose(self) -> None:
        """
        The same with the blocking API's output queue as the producer:
        paused by the socket transport, which is then closed for writing,
        it lets the half-close happen once the peer read everything.
        """
        server, _, [peer] = await self.establishedServer(1)
        peer.transport.pauseProducing()
        shrinkBuffers(peer.transport)
        [clientId] = server.clientIds()
        transport: Any = server.connection(clientId).transport
        shrinkBuffers(transport)
        queue = OutputQueue(lambda f, *args: f(*args), transport.write, limit=1 << 20)
        self.addCleanup(queue.close)
        queue.attach(transport)
        self.assertIs(socketTransport(transport).producer, queue)
        sent = 0
        while not queue.paused:
            self.assertTrue(queue.put(b"q" * 1023 + b"\n", 0))
            sent += 1
        transport.loseWriteConnection()
        peer.transport.resumeProducing()
        await within(peer.readEnded)
        self.assertEqual(len(peer.messages()), sent)

    @asyncTest
    async def test_replySentInTheTurnThatRead(self) -> None:
        """
        The replies to a read go to the socket before the read's handling
        returns (L{_compat.writeNow}), on the private path: the transport
        is not left waiting for the reactor to find its socket writable. On
        the public path Twisted's C{write} leaves them for the next turn.
        """
        self.assertEqual(await self.echoOnce(), [not self.private])

    @asyncTest
    async def test_replySentInTheTurnThatReadTLS(self) -> None:
        """
        The same over TLS: the records of a read's replies go to the socket
        in the turn that read them, on the private path (tcpsc's TLS
        transport).  Twisted's TLS protocol, the public path, writes them
        from a delayed call of its own, after the read.
        """
        writing = await self.echoOnce(tls=True)
        if self.private:
            self.assertEqual(writing, [False])

    async def echoOnce(self, tls: bool = False) -> list[bool]:
        """
        Echo one message from a client and say, for each read of the
        socket that carried it, whether the socket transport was left
        registered for writing once the read was handled.
        """
        writing: list[bool] = []

        class Watched(Echo):
            def connectionReady(self) -> None:
                base = socketTransport(self.transport)
                handler = base.protocol
                handle = handler.dataReceived

                def dataReceived(data: bytes) -> None:
                    handle(data)
                    writing.append(base in reactor.getWriters())

                handler.dataReceived = dataReceived

        _, port = await self.startServer(Watched, tls=serverTLS() if tls else None)
        arrived: Deferred[bytes] = Deferred()
        client = await self.connectClient(
            port, tls=clientTLS() if tls else None, onMessage=arrived.callback
        )
        client.send(b"ping")
        self.assertEqual(await within(arrived), b"ping")
        return writing

    @asyncTest
    async def test_replyLargerThanTheSocketTakes(self) -> None:
        """
        A reply larger than the socket takes at once: what it takes goes
        now, the rest through the transport's buffer, and the peer gets
        every byte, in order, followed by the next reply.
        """

        class Large(Echo):
            maxMessageLength = 32 * 1024 * 1024

        server, _, [peer] = await self.establishedServer(1, protocol=Large)
        [clientId] = server.clientIds()
        shrinkBuffers(server.connection(clientId).transport)
        large = bytes(range(256)).replace(b"\n", b"m") * (8 * 4096)
        peer.transport.write(large + b"\nafter\n")
        self.assertEqual(await peer.arrived(2), [large, b"after"])  # type: ignore[attr-defined]


class PrivatePathTests(_PathTests, GuaranteeTestCase):
    """
    The fast paths, as in the releases L{tcpsc._compat} was checked against.
    """

    private = True


class PublicPathTests(_PathTests, GuaranteeTestCase):
    """
    The public fallbacks, as in a release L{tcpsc._compat} was not checked
    against: Twisted's own port, C{write} for every broadcast, no look into
    a transport's buffer.
    """

    private = False


class EndpointArgumentsTests(SynchronousTestCase):
    """
    L{_compat.tcpEndpointArguments} on its own.
    """

    def test_arguments(self) -> None:
        """
        The port, queue and interface of Twisted's TCP server endpoints
        while the private path is on; C{None} for other endpoints, or when
        it is off.
        """
        if not _compat.checkedRelease():
            raise SkipTest("the installed releases were not checked: no private path")
        self.patch(_compat, "PRIVATE", True)
        self.assertEqual(
            _compat.tcpEndpointArguments(TCP4ServerEndpoint(reactor, 8081, 11, "127.0.0.1")),
            (8081, 11, "127.0.0.1"),
        )
        self.assertEqual(
            _compat.tcpEndpointArguments(TCP6ServerEndpoint(reactor, 8082, 12, "::1")),
            (8082, 12, "::1"),
        )
        self.assertIsNone(_compat.tcpEndpointArguments(object()))
        self.patch(_compat, "PRIVATE", False)
        self.assertIsNone(
            _compat.tcpEndpointArguments(TCP4ServerEndpoint(reactor, 8081, 11, "127.0.0.1"))
        )


class AcceptOneTests(SynchronousTestCase):
    """
    L{_compat.acceptOne}: the socket C{socket.accept} makes, on either path,
    for IPv4 and IPv6 listening sockets on loopback.
    """

    def accepted(self, family: int, host: str, private: bool) -> tuple[Any, Any, Any]:
        self.patch(_compat, "PRIVATE", private)
        listening = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(listening.close)
        listening.bind((host, 0))
        listening.listen(4)
        listening.setblocking(False)
        client = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(listening.getsockname()[:2])
        kind = (listening.family, listening.type, listening.proto)
        accepted, address = _compat.acceptOne(listening, kind)
        self.addCleanup(accepted.close)
        return accepted, address, client

    def check(self, family: int, host: str) -> None:
        for private in (True, False):
            accepted, address, client = self.accepted(family, host, private)
            self.assertIs(type(accepted), socket.socket)
            self.assertEqual(accepted.family, family)
            self.assertIsInstance(accepted.family, socket.AddressFamily)
            self.assertEqual(accepted.type, socket.SOCK_STREAM)
            self.assertEqual(accepted.proto, client.proto)
            self.assertEqual(address[:2], client.getsockname()[:2])
            self.assertEqual(accepted.getpeername(), client.getsockname())
            # As socket.accept leaves it: blocking, no timeout.
            self.assertIsNone(accepted.gettimeout())
            self.assertFalse(accepted.get_inheritable())
            client.sendall(b"x")
            self.assertEqual(accepted.recv(1), b"x")

    def test_ipv4(self) -> None:
        self.check(socket.AF_INET, "127.0.0.1")

    def test_ipv6(self) -> None:
        if not socket.has_ipv6:
            raise SkipTest("no IPv6")
        try:
            self.check(socket.AF_INET6, "::1")
        except OSError as e:
            raise SkipTest(f"no IPv6 loopback: {e}") from e

    def test_nothingWaiting(self) -> None:
        """
        With no connection waiting, the error of C{accept}.
        """
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        listening.setblocking(False)
        for private in (True, False):
            self.patch(_compat, "PRIVATE", private)
            self.assertRaises(
                BlockingIOError, _compat.acceptOne, listening, (listening.family, listening.type, 0)
            )
