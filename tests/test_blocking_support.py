"""
Helpers shared by the tests of L{tcpsc.blocking} (this module holds no
tests itself).

The blocking API runs its own reactor in a background thread (see
L{tcpsc._reactorthread}), not trial's global reactor, so these tests are
L{SynchronousTestCase}s that block the test thread on events, each wait
bounded by a timeout: L{Recorder.waitFor}, L{StreamRecorder.waitForLength},
L{waitUntil}.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tcpsc.blocking import TcpClient, TcpServer, TlsClient, TlsServer
from tests._helpers import CertFiles, certificates

#: The upstream tests' delimiter.
DELIMITER = b"\0"

#: The upstream tests' "short" maximum message length.
SHORT = 8

#: Seconds any single wait of these tests may take before it fails.
TIMEOUT = 10.0

#: The upstream suite's long message: 1,000,000 bytes cycling through 33..126.
LONG_MESSAGE = bytes(33 + i % 94 for i in range(1_000_000))


def waitUntil(
    condition: Callable[[], object], timeout: float = TIMEOUT, interval: float = 0.002
) -> None:
    """
    Poll C{condition()} until it is true; fail after C{timeout} seconds.  A
    bounded poll for state that has no event of its own (such as
    C{isRunning()}), not a fixed sleep.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


class Recorder:
    """
    A thread-safe callable that records what it is called with, for use as
    a worker; tests wait on it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.items: list[Any] = []

    def __call__(self, *args: Any) -> None:
        with self._cond:
            self.items.append(args[0] if len(args) == 1 else args)
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self.items)

    def waitFor(self, count: int, timeout: float = TIMEOUT) -> list[Any]:
        """
        Wait until at least C{count} calls were recorded.

        @return: a copy of the recorded items.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.items) >= count, timeout):
                raise AssertionError(
                    f"{len(self.items)} of {count} expected calls within {timeout} s: "
                    f"{self.items[:10]!r}"
                )
            return list(self.items)

    def snapshot(self) -> list[Any]:
        with self._cond:
            return list(self.items)


class StreamRecorder:
    """
    A binary file-like object for continuous mode that records what is
    written to it and whether it was closed.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._data = bytearray()
        self.closed = False
        self.writesAfterClose = 0

    def write(self, data: bytes) -> int:
        with self._cond:
            if self.closed:
                self.writesAfterClose += 1
            self._data += data
            self._cond.notify_all()
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    @property
    def data(self) -> bytes:
        with self._cond:
            return bytes(self._data)

    def waitForLength(self, length: int, timeout: float = TIMEOUT) -> bytes:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._data) >= length, timeout):
                raise AssertionError(f"{len(self._data)} of {length} bytes within {timeout} s")
            return bytes(self._data)

    def waitForClose(self, timeout: float = TIMEOUT) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self.closed, timeout):
                raise AssertionError(f"stream not closed within {timeout} s")


class ServerSide:
    """
    A blocking server with recording workers.

    @ivar established: ids passed to the established worker.
    @ivar closed: ids passed to the closed worker.
    @ivar messages: C{(id, message)} pairs passed to the message worker.
    @ivar streams: continuous mode: the forward stream of each id.
    """

    def __init__(self, server: TcpServer) -> None:
        self.server = server
        self.established = Recorder()
        self.closed = Recorder()
        self.messages = Recorder()
        self.streams: dict[int, StreamRecorder] = {}
        self.port = 0
        server.setWorkOnEstablished(self.established)
        server.setWorkOnClosed(self.closed)
        if server.continuous:
            server.setCreateForwardStream(self._createStream)
        else:
            server.setWorkOnMessage(self.messages)

    def _createStream(self, clientId: int) -> StreamRecorder:
        stream = self.streams[clientId] = StreamRecorder()
        return stream


class ClientSide:
    """
    A blocking client with recording workers.

    @ivar messages: messages passed to the message worker.
    @ivar closed: reasons passed to the closed worker.
    @ivar output: continuous mode: the client's output.
    """

    def __init__(self, client: TcpClient) -> None:
        self.client = client
        self.messages = Recorder()
        self.closed = Recorder()
        self.output: StreamRecorder | None = None
        client.setWorkOnClosed(self.closed)
        if client.continuous:
            self.output = StreamRecorder()
            client.output = self.output
        else:
            client.setWorkOnMessage(self.messages)


class BlockingTestCase(SynchronousTestCase):
    """
    Base class: makes servers and clients (plain or TLS, as L{tls} says)
    that are stopped when the test ends.
    """

    #: Whether the helpers make TLS servers and clients.
    tls = False

    @property
    def certs(self) -> CertFiles:
        return certificates()

    def makeServer(self, *args: Any, tls: bool | None = None, **kwargs: Any) -> ServerSide:
        """
        A server (not started), stopped at the end of the test.
        """
        tls = self.tls if tls is None else tls
        server = (TlsServer if tls else TcpServer)(*args, **kwargs)
        self.addCleanup(server.stop, 30.0)
        return ServerSide(server)

    def startServer(
        self,
        side: ServerSide,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        clientAuth: bool = True,
    ) -> int:
        """
        Start C{side}'s server on a free port of 127.0.0.1, with the main
        certificate set for TLS unless others are given.
        """
        server = side.server
        if isinstance(server, TlsServer):
            certs = self.certs
            server.setCertificates(
                certs.ca if ca is None else ca,
                certs.server if cert is None else cert,
                certs.serverKey if key is None else key,
            )
            server.requireClientAuthentication(clientAuth)
        side.port = server.start(0, interface="127.0.0.1")
        return side.port

    def server(self, *args: Any, **kwargs: Any) -> ServerSide:
        """
        A started server with the default certificates.
        """
        side = self.makeServer(*args, **kwargs)
        self.startServer(side)
        return side

    def makeClient(self, *args: Any, tls: bool | None = None, **kwargs: Any) -> ClientSide:
        """
        A client (not started), stopped at the end of the test.
        """
        tls = self.tls if tls is None else tls
        client = (TlsClient if tls else TcpClient)(*args, **kwargs)
        self.addCleanup(client.stop, 30.0)
        return ClientSide(client)

    def startClient(
        self,
        side: ClientSide,
        port: int,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        serverAuth: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        """
        Start C{side}'s client, with the main certificate set for TLS unless
        others are given.
        """
        client = side.client
        if isinstance(client, TlsClient):
            certs = self.certs
            client.setCertificates(
                certs.ca if ca is None else ca,
                certs.client if cert is None else cert,
                certs.clientKey if key is None else key,
            )
            client.requireServerAuthentication(serverAuth)
        client.start(host, port)

    def connect(self, serverSide: ServerSide, *args: Any, **kwargs: Any) -> tuple[ClientSide, int]:
        """
        Connect a new client (made with C{args}/C{kwargs}) to a started
        server and wait until the server established it.

        @return: the client and its id on the server.
        """
        before = len(serverSide.established)
        side = self.makeClient(*args, **kwargs)
        self.startClient(side, serverSide.port)
        clientId = serverSide.established.waitFor(before + 1)[before]
        return side, clientId


def echoServer(testCase: BlockingTestCase, *args: Any, **kwargs: Any) -> ServerSide:
    """
    A started server whose message worker records each message and sends
    it back.
    """
    side = testCase.makeServer(*args, **kwargs)
    server = side.server
    messages = side.messages

    def echo(clientId: int, message: bytes) -> None:
        messages(clientId, message)
        server.sendMsg(clientId, message)

    server.setWorkOnMessage(echo)
    testCase.startServer(side)
    return side
