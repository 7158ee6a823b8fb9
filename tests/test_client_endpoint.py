"""
Tests for L{tcpsc.Client.connectTo}: a client connecting through a Twisted
client endpoint (a description or an endpoint object) instead of a host and
port, with everything C{connect()} gives: readiness, TLS checked against a
host name, the connect timeout, reconnecting, disconnecting, and failures
that say what went wrong.

Servers are tcpsc servers on UNIX sockets in a temporary directory and on
127.0.0.1; a listening TCP socket whose queue of connections is full is the
server that never answers a connection attempt (Linux drops the SYN), and a
UNIX socket that accepts and says nothing is the server whose TLS handshake
never completes.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import sys
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tcpsc import (
    Client,
    ConnectError,
    MessageProtocol,
    PortError,
    Server,
    ServerCertificateRejected,
    StartError,
    TLSConfig,
)
from tcpsc._client import _describedHost
from tests._helpers import waitFor
from tests.test_client import ClientTestCase, Silent
from tests.test_tls import SHORT, Echo, asyncTest, clientTLS, freePort, serverTLS, within


def shortDirectory(case: SynchronousTestCase) -> str:
    """
    A new directory with a short path (a UNIX socket's path has a small
    limit), removed at the end of the test.
    """
    directory = tempfile.mkdtemp(prefix="tcpsc-")
    case.addCleanup(shutil.rmtree, directory, True)
    return directory


class EndpointTestCase(ClientTestCase):
    """
    Servers on UNIX sockets and TCP listeners that never answer, in addition
    to what L{ClientTestCase} starts.
    """

    def socketPath(self) -> str:
        return os.path.join(shortDirectory(self), "s")

    async def unixServer(
        self, tls: TLSConfig | None = None, **kwargs: Any
    ) -> tuple[Server, str, list[int]]:
        """
        An echo server listening on a new UNIX socket.

        @return: the server, the socket's path, and the ids of the
            connections it established, in order.
        """
        path = self.socketPath()
        established: list[int] = []
        server = Server(Echo, onEstablished=established.append, **kwargs)
        self.addCleanup(lambda: within(server.stop(), 30))
        await within(server.listen(f"unix:{path}", tls=tls))
        return server, path, established

    def silentUnixListener(self) -> tuple[str, list[Silent]]:
        """
        A UNIX socket whose peers accept the connection and never say
        anything: for a TLS client, a server whose handshake never
        completes.
        """
        path = self.socketPath()
        peers: list[Silent] = []

        def build(addr: Any) -> Silent:
            peer = Silent()
            peers.append(peer)
            return peer

        factory = Factory()
        factory.buildProtocol = build  # type: ignore[method-assign]
        factory.noisy = False
        port = reactor.listenUNIX(path, factory)

        async def cleanup() -> None:
            await port.stopListening()
            for peer in peers:
                if not peer.lost.called:
                    peer.transport.abortConnection()
                    await within(peer.lost)

        self.addCleanup(lambda: Deferred.fromCoroutine(cleanup()))
        return path, peers

    def fullListener(self) -> int:
        """
        A TCP port on 127.0.0.1 whose queue of accepted connections is full
        and never read: Linux drops the SYN of any further connection, which
        then neither succeeds nor fails until its own timeout.

        @return: the port.
        """
        if not sys.platform.startswith("linux"):
            raise SkipTest("a full listen queue drops connection attempts on Linux only")
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        filler = socket.create_connection(("127.0.0.1", port), timeout=SHORT)
        self.addCleanup(filler.close)
        # The queue is full once the filler's connection is in it, which
        # makes the listening socket readable.
        readable, _, _ = select.select([listener], [], [], SHORT)
        self.assertEqual(readable, [listener], "the filler's connection never got queued")
        return port


class UnixSocketTests(EndpointTestCase):
    """
    A client reaching a tcpsc server on a UNIX socket, plain and over TLS.
    """

    @asyncTest
    async def test_description(self) -> None:
        """
        C{unix:PATH} connects; messages go both ways; the log names the
        socket by its description.
        """
        _, path, established = await self.unixServer()
        echoes: list[bytes] = []
        client = self.client(onMessage=echoes.append)
        protocol = await within(client.connectTo(f"unix:{path}"))
        self.assertIsInstance(protocol, MessageProtocol)
        self.assertIs(client.protocol, protocol)
        self.assertTrue(client.isConnected)
        self.assertTrue(client.send(b"over a unix socket"))
        await waitFor(lambda: echoes == [b"over a unix socket"], SHORT)
        self.assertEqual(len(established), 1)
        self.assertTrue(self.logged(f"Connected to unix:{path}"))

    @asyncTest
    async def test_endpointObject(self) -> None:
        """
        An endpoint object is used as it is.
        """
        _, path, _ = await self.unixServer()
        echoes: list[bytes] = []
        client = self.client(onMessage=echoes.append)
        await within(client.connectTo(UNIXClientEndpoint(reactor, path), name="the echo"))
        client.send(b"ping")
        await waitFor(lambda: echoes == [b"ping"], SHORT)
        self.assertTrue(self.logged("Connected to the echo"))

    @asyncTest
    async def test_disconnect(self) -> None:
        """
        C{disconnect()} closes the connection cleanly and the server sees it
        go.
        """
        server, path, established = await self.unixServer()
        closed: list[Failure] = []
        client = self.client(onClosed=closed.append)
        await within(client.connectTo(f"unix:{path}"))
        await waitFor(lambda: server.clientIds() == established == [1], SHORT)
        await within(client.disconnect())
        self.assertEqual(len(closed), 1)
        self.assertTrue(closed[0].check(ConnectionDone), closed[0])
        self.assertFalse(client.isConnected)
        self.assertFalse(client.send(b"too late"))
        await waitFor(lambda: server.clientIds() == [], SHORT)

    @asyncTest
    async def test_tls(self) -> None:
        """
        TLS over a UNIX socket: the server's certificate is checked against
        C{hostname}, and the client's certificate is accepted by the server
        before the connection is ready.
        """
        server, path, established = await self.unixServer(tls=serverTLS())
        echoes: list[bytes] = []
        client = self.client(onMessage=echoes.append)
        await within(client.connectTo(f"unix:{path}", clientTLS(), hostname="localhost"))
        self.assertEqual(client.serverSubjectPart("CN"), "localhost")
        # Ready means accepted: the server established this client already.
        self.assertEqual(len(established), 1)
        self.assertEqual(server.clientSubjectPart(established[0], "CN"), "client")
        client.send(b"sealed")
        await waitFor(lambda: echoes == [b"sealed"], SHORT)

    @asyncTest
    async def test_tlsChecksHostname(self) -> None:
        """
        The name checked is C{hostname}: a certificate for another name is
        refused (code 60) with a message naming both, and accepted when
        C{hostname} is its name.
        """
        _, path, _ = await self.unixServer(tls=serverTLS("wronghost"))
        client = self.client()
        error = await within(
            self.assertFailure(
                client.connectTo(f"unix:{path}", clientTLS(), hostname="localhost"),
                ServerCertificateRejected,
            )
        )
        self.assertEqual(error.code, 60)
        self.assertIn("'localhost'", str(error))
        self.assertIn("wrong.example", str(error))
        await within(client.connectTo(f"unix:{path}", clientTLS(), hostname="wrong.example"))
        self.assertTrue(client.isConnected)
        self.flushLoggedErrors()

    @asyncTest
    async def test_tlsConfigHostname(self) -> None:
        """
        C{TLSConfig(hostname=...)} names the server as well as C{hostname=}
        does.
        """
        _, path, _ = await self.unixServer(tls=serverTLS())
        client = self.client()
        await within(client.connectTo(f"unix:{path}", clientTLS(hostname="localhost")))
        self.assertTrue(client.isConnected)

    def test_tlsNeedsHostname(self) -> None:
        """
        TLS over an endpoint without a host name, with no C{hostname}: a
        C{TypeError} that says what is missing, before anything connects.
        """
        clock = MemoryReactorClock()
        client = Client(reactor=clock)
        path = os.path.join(shortDirectory(self), "s")
        cases: list[tuple[Any, str, str | None]] = [
            (f"unix:{path}", f"unix:{path}", None),
            (UNIXClientEndpoint(clock, path), "a socket", None),
            (f"unix:{path}", "an empty name", ""),
        ]
        for endpoint, name, hostname in cases:
            error = self.failureResultOf(
                client.connectTo(endpoint, clientTLS(), hostname=hostname, name=name), TypeError
            ).value
            self.assertEqual(
                str(error),
                f"TLS over {name} needs hostname=, the name the server's certificate is "
                f"checked against: the endpoint has no host name",
            )
        self.assertEqual(clock.unixClients, [])
        self.assertEqual(clock.getDelayedCalls(), [])


class FailureTests(EndpointTestCase):
    """
    Failing to connect through an endpoint is a L{ConnectError} (code 50)
    whose message a person reads: the target by its name, and why.
    """

    @asyncTest
    async def test_noSocketFile(self) -> None:
        """
        No file at the path.
        """
        path = self.socketPath()
        client = self.client()
        error = await within(self.assertFailure(client.connectTo(f"unix:{path}"), ConnectError))
        self.assertEqual(error.code, 50)
        self.assertEqual(error.args[0], f"cannot connect to unix:{path}: No such file or directory")
        self.assertFalse(client.isConnected)
        # The failed attempt is over: the client may try again.
        await within(self.assertFailure(client.connectTo(f"unix:{path}"), ConnectError))

    @asyncTest
    async def test_nobodyListens(self) -> None:
        """
        A socket file that nothing listens on: refused.
        """
        path = self.socketPath()
        bound = socket.socket(socket.AF_UNIX)
        self.addCleanup(bound.close)
        bound.bind(path)
        client = self.client()
        error = await within(self.assertFailure(client.connectTo(f"unix:{path}"), ConnectError))
        self.assertEqual(error.code, 50)
        self.assertEqual(
            error.args[0], f"connection to unix:{path} refused: no server is listening"
        )

    @asyncTest
    async def test_endpointNamedByRepr(self) -> None:
        """
        An endpoint object without C{name} is named by its C{repr}; with
        one, by it.
        """
        path = self.socketPath()
        endpoint = UNIXClientEndpoint(reactor, path)
        client = self.client()
        error = await within(self.assertFailure(client.connectTo(endpoint), ConnectError))
        self.assertEqual(
            error.args[0], f"cannot connect to {endpoint!r}: No such file or directory"
        )
        error = await within(
            self.assertFailure(client.connectTo(endpoint, name="the chat socket"), ConnectError)
        )
        self.assertEqual(
            error.args[0], "cannot connect to the chat socket: No such file or directory"
        )

    @asyncTest
    async def test_tcpRefused(self) -> None:
        port = freePort()
        client = self.client()
        error = await within(
            self.assertFailure(client.connectTo(f"tcp:127.0.0.1:{port}"), ConnectError)
        )
        self.assertEqual(
            error.args[0], f"connection to tcp:127.0.0.1:{port} refused: no server is listening"
        )

    @asyncTest
    async def test_unresolvableHost(self) -> None:
        """
        A C{tcp:} description's host name that does not resolve is named.
        """
        client = self.client()
        error = await within(
            self.assertFailure(
                client.connectTo("tcp:host=nonexistent.invalid:port=8081"), ConnectError
            ),
            30,
        )
        self.assertEqual(error.args[0], "cannot resolve the host name 'nonexistent.invalid'")

    def test_notAnEndpoint(self) -> None:
        """
        What is neither a description Twisted reads nor an endpoint is a
        L{PortError} (code 10) that quotes it.
        """
        client = Client(reactor=MemoryReactorClock())
        for value in ("bogus:x", "unix", "tcp:localhost", 8081, None):
            error = self.failureResultOf(client.connectTo(value), PortError).value  # type: ignore[arg-type]
            self.assertEqual(error.code, 10)
            self.assertIn(repr(value), str(error))

    @asyncTest
    async def test_connectTwice(self) -> None:
        """
        A client connected through an endpoint is connected: C{connect()}
        and C{connectTo()} both refuse (-1) until it is disconnected.
        """
        _, path, _ = await self.unixServer()
        client = self.client()
        await within(client.connectTo(f"unix:{path}"))
        for connecting in (client.connectTo(f"unix:{path}"), client.connect("127.0.0.1", 1)):
            self.assertEqual(self.failureResultOf(connecting, StartError).value.code, -1)
        await within(client.disconnect())
        await within(client.connectTo(f"unix:{path}"))


class TimeoutTests(EndpointTestCase):
    """
    C{connectTimeout} bounds becoming ready through an endpoint, whatever the
    endpoint's own timeout is, and leaves nothing behind (trial's check of a
    clean reactor).
    """

    @asyncTest
    async def test_connectionNeverAnswered(self) -> None:
        """
        A C{tcp:} description (whose own timeout is Twisted's 30 s) to a
        server that never answers.
        """
        port = self.fullListener()
        client = self.client(connectTimeout=0.5)
        error = await within(
            self.assertFailure(client.connectTo(f"tcp:127.0.0.1:{port}"), ConnectError)
        )
        self.assertEqual(error.code, 50)
        self.assertEqual(error.args[0], f"connecting to tcp:127.0.0.1:{port} timed out after 0.5 s")
        self.assertFalse(client.isConnected)

    @asyncTest
    async def test_endpointObjectNeverAnswered(self) -> None:
        """
        The same through an endpoint object, with TLS: the attempt ends at
        the connect timeout while TCP is still connecting.
        """
        port = self.fullListener()
        client = self.client(connectTimeout=0.5)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=3600)
        error = await within(
            self.assertFailure(
                client.connectTo(
                    endpoint, clientTLS(), hostname="localhost", name="the full queue"
                ),
                ConnectError,
            )
        )
        self.assertEqual(error.args[0], "connecting to the full queue timed out after 0.5 s")

    @asyncTest
    async def test_handshakeNeverCompletes(self) -> None:
        """
        Over a UNIX socket whose server accepts and never answers the TLS
        handshake: the timeout names the handshake, and the connection is
        closed.
        """
        path, peers = self.silentUnixListener()
        client = self.client(connectTimeout=0.5)
        error = await within(
            self.assertFailure(
                client.connectTo(f"unix:{path}", clientTLS(), hostname="localhost"), ConnectError
            )
        )
        self.assertEqual(error.args[0], f"the TLS handshake with unix:{path} timed out after 0.5 s")
        self.assertEqual(len(peers), 1)
        await within(peers[0].lost)


class ReconnectTests(EndpointTestCase):
    """
    C{reconnect=True} reconnects to the same endpoint.
    """

    async def dropAndReconnect(self, tls: bool) -> None:
        server, path, established = await self.unixServer(tls=serverTLS() if tls else None)
        ready: list[object] = []
        closed: list[Failure] = []
        echoes: list[bytes] = []
        client = self.client(
            reconnect=True,
            initialDelay=0.05,
            maxDelay=0.5,
            jitter=0,
            onEstablished=ready.append,
            onClosed=closed.append,
            onMessage=echoes.append,
        )
        await within(
            client.connectTo(f"unix:{path}", clientTLS() if tls else None, hostname="localhost")
        )
        await waitFor(lambda: len(established) == 1, SHORT)
        self.assertTrue(server.disconnect(established[0]))
        await waitFor(lambda: closed, SHORT, what="the client's onClosed")
        await waitFor(
            lambda: len(ready) == 2 and client.isConnected, SHORT, what="the client to reconnect"
        )
        self.assertEqual(len(established), 2)
        self.assertTrue(client.send(b"again"))
        await waitFor(lambda: echoes == [b"again"], SHORT)
        self.assertTrue(self.logged(f"Reconnecting to unix:{path} in"))
        await within(client.disconnect())
        await waitFor(lambda: server.clientIds() == [], SHORT)
        self.assertFalse(client.isConnected)

    @asyncTest
    async def test_afterServerDrops(self) -> None:
        await self.dropAndReconnect(tls=False)

    @asyncTest
    async def test_afterServerDropsTLS(self) -> None:
        await self.dropAndReconnect(tls=True)


class TCPDescriptionTests(EndpointTestCase):
    """
    A C{tcp:} description connects as C{connect()} does, and names the host
    a TLS server's certificate is checked against.
    """

    @asyncTest
    async def test_plain(self) -> None:
        _, port = await self.startServer(None)
        echoes: list[bytes] = []
        client = self.client(onMessage=echoes.append)
        await within(client.connectTo(f"tcp:host=127.0.0.1:port={port}"))
        client.send(b"described")
        await waitFor(lambda: echoes == [b"described"], SHORT)
        self.assertTrue(self.logged(f"Connected to tcp:host=127.0.0.1:port={port}"))

    @asyncTest
    async def test_tlsChecksTheDescribedHost(self) -> None:
        """
        Over TLS without C{hostname}, the certificate is checked against the
        description's host: 127.0.0.1 is among the subjectAltNames of the
        test server's certificate and not of C{wronghost}'s.
        """
        _, port = await self.startServer(serverTLS())
        client = self.client()
        await within(client.connectTo(f"tcp:127.0.0.1:{port}", clientTLS()))
        self.assertEqual(client.serverSubjectPart("CN"), "localhost")
        await within(client.disconnect())

        _, wrong = await self.startServer(serverTLS("wronghost"))
        error = await within(
            self.assertFailure(
                client.connectTo(f"tcp:127.0.0.1:{wrong}", clientTLS()), ServerCertificateRejected
            )
        )
        self.assertIn("IP address '127.0.0.1'", str(error))
        # hostname= names another server than the one connected to.
        await within(
            client.connectTo(f"tcp:127.0.0.1:{wrong}", clientTLS(), hostname="wrong.example")
        )
        self.assertEqual(client.serverSubjectPart("CN"), "wrong.example")
        self.flushLoggedErrors()


class DescribedHostTests(SynchronousTestCase):
    """
    L{_describedHost} reads the host of a C{tcp:} description as
    L{twisted.internet.endpoints.clientFromString} does.
    """

    def test_hosts(self) -> None:
        cases = {
            "tcp:example.org:8081": "example.org",
            "TCP:example.org:8081": "example.org",
            "tcp:host=example.org:port=8081": "example.org",
            "tcp:port=8081:host=example.org": "example.org",
            "tcp:8081:host=example.org": "example.org",
            "tcp:example.org:port=8081:timeout=5": "example.org",
            "tcp:host=\\:\\:1:port=8081": "::1",
            "tcp:h\\=x:8081": "h=x",
            "tcp:host=a=b:8081": "a=b",
            "unix:/run/tcpsc.sock": None,
            "unix:path=/run/tcpsc.sock": None,
            "tls:example.org:443": None,
        }
        for description, host in cases.items():
            self.assertEqual(_describedHost(description), host, description)
