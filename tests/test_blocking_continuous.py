"""
Tests of L{tcpsc.blocking} in continuous mode (a raw byte stream per
connection), over TCP and TLS.

Ports the C++ original's C{Continuous_*} fixtures; the
table in C{tests/README.md} maps each upstream case to its test here.
Received bytes go to the server's per-connection forward stream and to the
client's output.
"""

from __future__ import annotations

import sys
import threading
from types import SimpleNamespace

from tcpsc.blocking import TcpClient, TcpServer
from tests.test_blocking_support import (
    LONG_MESSAGE,
    TIMEOUT,
    BlockingTestCase,
    Recorder,
    StreamRecorder,
)

MANY = 10


class _ClientSendTests:
    """
    C{Continuous_Tcp/TlsClient_Test_Send}.
    """

    def setUp(self) -> None:
        self.serverSide = self.server()
        self.clientSide, self.clientId = self.connect(self.serverSide)

    def test_negTestServerNotRunning(self) -> None:
        """
        Once the server stopped (and the client saw it): C{False}; the
        server's stream got nothing.
        """
        self.serverSide.server.stop()
        self.clientSide.closed.waitFor(1)
        self.assertFalse(self.clientSide.client.sendMsg(b"Hello server!"))
        self.assertEqual(self.serverSide.streams[self.clientId].data, b"")

    def test_negTestClientNotRunning(self) -> None:
        """
        After the client's C{stop()}: C{False}.
        """
        self.clientSide.client.stop()
        self.assertFalse(self.clientSide.client.sendMsg(b"Hello server!"))
        self.serverSide.closed.waitFor(1)
        self.assertEqual(self.serverSide.streams[self.clientId].data, b"")


class TcpClientSendTests(_ClientSendTests, BlockingTestCase):
    """
    C{Continuous_TcpClient_Test_Send}.
    """


class TlsClientSendTests(_ClientSendTests, BlockingTestCase):
    """
    C{Continuous_TlsClient_Test_Send}.
    """

    tls = True


class _MsgTransferTests:
    """
    C{Continuous_Tcp/TlsConnection_Test_MsgTransfer}.
    """

    def setUp(self) -> None:
        self.serverSide = self.server()
        self.clientSide, self.clientId = self.connect(self.serverSide)

    def test_posTestClientToServerNormalMsg(self) -> None:
        """
        The server's stream for the connection gets the bytes sent.
        """
        self.assertTrue(self.clientSide.client.sendMsg(b"Hello server!"))
        stream = self.serverSide.streams[self.clientId]
        self.assertEqual(stream.waitForLength(13), b"Hello server!")

    def test_posTestServerToClientNormalMsg(self) -> None:
        """
        The client's output gets the bytes sent.
        """
        self.assertTrue(self.serverSide.server.sendMsg(self.clientId, "Hello client!"))
        self.assertEqual(self.clientSide.output.waitForLength(13), b"Hello client!")

    def test_posTestClientToServerLongMsg(self) -> None:
        self.assertTrue(self.clientSide.client.sendMsg(LONG_MESSAGE))
        stream = self.serverSide.streams[self.clientId]
        self.assertEqual(stream.waitForLength(len(LONG_MESSAGE)), LONG_MESSAGE)

    def test_posTestServerToClientLongMsg(self) -> None:
        self.assertTrue(self.serverSide.server.sendMsg(self.clientId, LONG_MESSAGE))
        self.assertEqual(self.clientSide.output.waitForLength(len(LONG_MESSAGE)), LONG_MESSAGE)

    def test_noBoundaries(self) -> None:
        """
        There are no message boundaries: C{"abc"}, C{"def\\n"} arrive as
        C{"abcdef\\n"}; the empty message sends nothing and returns C{True}.
        """
        client = self.clientSide.client
        self.assertTrue(client.sendMsg(b"abc"))
        self.assertTrue(client.sendMsg(b""))
        self.assertTrue(client.sendMsg(b"def\n"))
        stream = self.serverSide.streams[self.clientId]
        self.assertEqual(stream.waitForLength(7), b"abcdef\n")

    def test_streamClosedAtEnd(self) -> None:
        """
        The server closes the connection's stream when the connection ends,
        after the closed worker, and writes nothing to it afterwards.
        """
        stream = self.serverSide.streams[self.clientId]
        self.assertFalse(stream.closed)
        self.clientSide.client.stop()
        self.serverSide.closed.waitFor(1)
        stream.waitForClose()
        self.assertEqual(stream.writesAfterClose, 0)


class TcpMsgTransferTests(_MsgTransferTests, BlockingTestCase):
    """
    C{Continuous_TcpConnection_Test_MsgTransfer}.
    """


class TlsMsgTransferTests(_MsgTransferTests, BlockingTestCase):
    """
    C{Continuous_TlsConnection_Test_MsgTransfer}.
    """

    tls = True


class _ManyClientsTests:
    """
    C{Continuous_Tcp/TlsServer_Test_ManyClients}: per client, the stream
    content equals the message.
    """

    def setUp(self) -> None:
        self.serverSide = self.server()
        self.clients = [self.connect(self.serverSide) for _ in range(MANY)]

    def inThreads(self, calls: list) -> None:
        results = Recorder()
        threads = [threading.Thread(target=lambda c=call: results(c())) for call in calls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        self.assertEqual(results.waitFor(len(calls)), [True] * len(calls))

    def assertServerGotEach(self) -> None:
        for _, clientId in self.clients:
            expected = b"Message from client %d" % clientId
            stream = self.serverSide.streams[clientId]
            self.assertEqual(stream.waitForLength(len(expected)), expected)

    def test_sendingClientsSingleThread(self) -> None:
        for client, clientId in self.clients:
            self.assertTrue(client.client.sendMsg(b"Message from client %d" % clientId))
        self.assertServerGotEach()

    def test_sendingClientsMultipleThreads(self) -> None:
        self.inThreads(
            [
                lambda c=client, i=clientId: c.client.sendMsg(b"Message from client %d" % i)
                for client, clientId in self.clients
            ]
        )
        self.assertServerGotEach()

    def assertEachClientGotItsMessage(self) -> None:
        for client, clientId in self.clients:
            expected = b"Message to client %d" % clientId
            self.assertEqual(client.output.waitForLength(len(expected)), expected)

    def test_sendingServerSingleThread(self) -> None:
        for _, clientId in self.clients:
            self.assertTrue(
                self.serverSide.server.sendMsg(clientId, b"Message to client %d" % clientId)
            )
        self.assertEachClientGotItsMessage()

    def test_sendingServerMultipleThreads(self) -> None:
        server = self.serverSide.server
        self.inThreads(
            [
                lambda i=clientId: server.sendMsg(i, b"Message to client %d" % i)
                for _, clientId in self.clients
            ]
        )
        self.assertEachClientGotItsMessage()


class TcpManyClientsTests(_ManyClientsTests, BlockingTestCase):
    """
    C{Continuous_TcpServer_Test_ManyClients}.
    """


class TlsManyClientsTests(_ManyClientsTests, BlockingTestCase):
    """
    C{Continuous_TlsServer_Test_ManyClients}.
    """

    tls = True


class _ServerSendTests:
    """
    C{Continuous_Tcp/TlsServer_Test_Send}.
    """

    def setUp(self) -> None:
        self.serverSide = self.server()
        self.clientSide, self.clientId = self.connect(self.serverSide)

    def test_negTestClientNotConnected(self) -> None:
        server = self.serverSide.server
        self.assertFalse(server.sendMsg(self.clientId + 1, b"Hello client!"))
        self.assertTrue(server.sendMsg(self.clientId, b"marker"))
        self.assertEqual(self.clientSide.output.waitForLength(6), b"marker")

    def test_negTestClientDisconnectedBefore(self) -> None:
        self.clientSide.client.stop()
        self.serverSide.closed.waitFor(1)
        self.assertFalse(self.serverSide.server.sendMsg(self.clientId, b"Hello client!"))
        self.assertEqual(self.clientSide.output.data, b"")

    def test_negTestServerNotRunning(self) -> None:
        self.serverSide.server.stop()
        self.assertFalse(self.serverSide.server.sendMsg(self.clientId, b"Hello client!"))
        self.clientSide.closed.waitFor(1)
        self.assertEqual(self.clientSide.output.data, b"")


class TcpServerSendTests(_ServerSendTests, BlockingTestCase):
    """
    C{Continuous_TcpServer_Test_Send}.
    """


class TlsServerSendTests(_ServerSendTests, BlockingTestCase):
    """
    C{Continuous_TlsServer_Test_Send}.
    """

    tls = True


class WithoutStreamTests(BlockingTestCase):
    """
    Continuous mode without a forward stream, and the client's default
    output.
    """

    def test_noCreatorDiscards(self) -> None:
        """
        Without a stream creator the server discards the bytes (as the
        original), but a message worker, if set, gets each chunk.
        """
        server = TcpServer()
        self.addCleanup(server.stop)
        chunks = Recorder()
        server.setWorkOnMessage(chunks)
        port = server.start(0, interface="127.0.0.1")
        client = TcpClient(output=StreamRecorder())
        self.addCleanup(client.stop)
        client.start("127.0.0.1", port)
        self.assertTrue(client.sendMsg(b"data"))
        self.assertEqual(chunks.waitFor(1), [(server.getAllClientIds()[0], b"data")])

    def test_defaultOutputIsStdout(self) -> None:
        """
        A continuous client without an output writes to C{sys.stdout.buffer}.
        """
        captured = StreamRecorder()
        self.patch(sys, "stdout", SimpleNamespace(buffer=captured))
        side = self.server()
        client = TcpClient()
        self.addCleanup(client.stop)
        client.start("127.0.0.1", side.port)
        clientId = side.established.waitFor(1)[0]
        self.assertTrue(side.server.sendMsg(clientId, b"to stdout"))
        self.assertEqual(captured.waitForLength(9), b"to stdout")
