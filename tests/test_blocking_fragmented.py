"""
Tests of L{tcpsc.blocking} in fragmented mode (messages separated by a
delimiter), over TCP and TLS.

Ports the C++ original's C{Fragmentation_*} fixtures; the
table in C{tests/README.md} maps each upstream case to its test here.  The
upstream C{*_ExceedMaxLen_OnRec} cases are vacuous (they look at another
object than the receiver); here they check the receiver itself: the
oversized message is dropped and the next one still arrives.
"""

from __future__ import annotations

import socket
import threading

from tests.test_blocking_support import (
    DELIMITER,
    LONG_MESSAGE,
    SHORT,
    TIMEOUT,
    BlockingTestCase,
    ClientSide,
    Recorder,
    ServerSide,
)

CLIENT_APPEND = b"Appended message from client"
SERVER_APPEND = b"Appended message from server"

#: Clients of the upstream ManyClients fixtures.
MANY = 10


class _ClientSendTests:
    """
    C{Fragmentation_Tcp/TlsClient_Test_Send}.
    """

    def setUp(self) -> None:
        self.serverSide = self.server(DELIMITER)
        self.clientSide, _ = self.connect(self.serverSide, DELIMITER)

    def test_negTestServerNotRunning(self) -> None:
        """
        Once the server stopped (and the client saw it), C{sendMsg} returns
        C{False}; the server received nothing.
        """
        self.serverSide.server.stop()
        self.clientSide.closed.waitFor(1)
        self.assertFalse(self.clientSide.client.sendMsg(b"Hello server!"))
        self.assertEqual(self.serverSide.messages.snapshot(), [])

    def test_negTestClientNotRunning(self) -> None:
        """
        After the client's own C{stop()}, C{sendMsg} returns C{False}; the
        server received nothing.
        """
        self.clientSide.client.stop()
        self.assertFalse(self.clientSide.client.isRunning())
        self.assertFalse(self.clientSide.client.sendMsg(b"Hello server!"))
        self.serverSide.closed.waitFor(1)
        self.assertEqual(self.serverSide.messages.snapshot(), [])


class TcpClientSendTests(_ClientSendTests, BlockingTestCase):
    """
    C{Fragmentation_TcpClient_Test_Send}.
    """


class TlsClientSendTests(_ClientSendTests, BlockingTestCase):
    """
    C{Fragmentation_TlsClient_Test_Send}.
    """

    tls = True


class _MsgAppendTests:
    """
    C{Fragmentation_Tcp/TlsConnection_Test_MsgAppend}: the receiver gets the
    message with the sender's append.
    """

    def setUp(self) -> None:
        self.serverSide = self.server(DELIMITER, SERVER_APPEND)
        self.clientSide, self.clientId = self.connect(self.serverSide, DELIMITER, CLIENT_APPEND)

    def test_posTestClientToServerNormalMsg(self) -> None:
        self.assertTrue(self.clientSide.client.sendMsg(b"Hello server!"))
        self.assertEqual(
            self.serverSide.messages.waitFor(1), [(self.clientId, b"Hello server!" + CLIENT_APPEND)]
        )

    def test_posTestServerToClientNormalMsg(self) -> None:
        self.assertTrue(self.serverSide.server.sendMsg(self.clientId, b"Hello client!"))
        self.assertEqual(self.clientSide.messages.waitFor(1), [b"Hello client!" + SERVER_APPEND])


class TcpMsgAppendTests(_MsgAppendTests, BlockingTestCase):
    """
    C{Fragmentation_TcpConnection_Test_MsgAppend}.
    """


class TlsMsgAppendTests(_MsgAppendTests, BlockingTestCase):
    """
    C{Fragmentation_TlsConnection_Test_MsgAppend}.
    """

    tls = True


class _MsgTransferTests:
    """
    C{Fragmentation_Tcp/TlsConnection_Test_MsgTransfer}.  "Short" peers have
    a maximum message length of 8, "long" ones the default.
    """

    def pair(
        self, serverMax: int | None = None, clientMax: int | None = None
    ) -> tuple[ServerSide, ClientSide, int]:
        serverArgs = {} if serverMax is None else {"maxMessageLength": serverMax}
        clientArgs = {} if clientMax is None else {"maxMessageLength": clientMax}
        serverSide = self.server(DELIMITER, **serverArgs)
        clientSide, clientId = self.connect(serverSide, DELIMITER, **clientArgs)
        return serverSide, clientSide, clientId

    def test_posTestClientToServerNormalMsg(self) -> None:
        """
        A message from the client arrives once, with the client's id.
        """
        server, client, clientId = self.pair()
        self.assertTrue(client.client.sendMsg(b"Hello server!"))
        self.assertEqual(server.messages.waitFor(1), [(clientId, b"Hello server!")])

    def test_posTestServerToClientNormalMsg(self) -> None:
        server, client, clientId = self.pair()
        self.assertTrue(server.server.sendMsg(clientId, "Hello client!"))
        self.assertEqual(client.messages.waitFor(1), [b"Hello client!"])

    def test_posTestClientToServerMaxLen(self) -> None:
        """
        A message of the maximum length passes between short peers.
        """
        server, client, clientId = self.pair(SHORT, SHORT)
        self.assertTrue(client.client.sendMsg(b"12345678"))
        self.assertEqual(server.messages.waitFor(1), [(clientId, b"12345678")])

    def test_posTestServerToClientMaxLen(self) -> None:
        server, client, clientId = self.pair(SHORT, SHORT)
        self.assertTrue(server.server.sendMsg(clientId, b"12345678"))
        self.assertEqual(client.messages.waitFor(1), [b"12345678"])

    def test_negTestClientToServerExceedMaxLenOnRec(self) -> None:
        """
        A long client sends 9 bytes to a short server: sent, but dropped by
        the server, whose next message still arrives.
        """
        server, client, clientId = self.pair(serverMax=SHORT)
        self.assertTrue(client.client.sendMsg(b"123456789"))
        self.assertTrue(client.client.sendMsg(b"ok"))
        self.assertEqual(server.messages.waitFor(1), [(clientId, b"ok")])

    def test_negTestServerToClientExceedMaxLenOnRec(self) -> None:
        server, client, clientId = self.pair(clientMax=SHORT)
        self.assertTrue(server.server.sendMsg(clientId, b"123456789"))
        self.assertTrue(server.server.sendMsg(clientId, b"ok"))
        self.assertEqual(client.messages.waitFor(1), [b"ok"])

    def test_negTestClientToServerExceedMaxLenOnSend(self) -> None:
        """
        A short client refuses to send 9 bytes; nothing reaches the server.
        """
        server, client, clientId = self.pair(clientMax=SHORT)
        self.assertFalse(client.client.sendMsg(b"123456789"))
        self.assertTrue(client.client.sendMsg(b"ok"))
        self.assertEqual(server.messages.waitFor(1), [(clientId, b"ok")])

    def test_negTestServerToClientExceedMaxLenOnSend(self) -> None:
        server, client, clientId = self.pair(serverMax=SHORT)
        self.assertFalse(server.server.sendMsg(clientId, b"123456789"))
        self.assertTrue(server.server.sendMsg(clientId, b"ok"))
        self.assertEqual(client.messages.waitFor(1), [b"ok"])

    def test_posTestClientToServerLongMsg(self) -> None:
        """
        A 1,000,000-byte message arrives intact.
        """
        server, client, clientId = self.pair()
        self.assertTrue(client.client.sendMsg(LONG_MESSAGE))
        self.assertEqual(server.messages.waitFor(1), [(clientId, LONG_MESSAGE)])

    def test_posTestServerToClientLongMsg(self) -> None:
        server, client, clientId = self.pair()
        self.assertTrue(server.server.sendMsg(clientId, LONG_MESSAGE))
        self.assertEqual(client.messages.waitFor(1), [LONG_MESSAGE])

    def test_appendCountsTowardsMaxLen(self) -> None:
        """
        C{messageAppend} counts towards the maximum on both sides (the
        original checks the sender without it and the receiver with it,
        B6/B7): what one short peer sends, the other accepts.
        """
        server = self.server(DELIMITER, maxMessageLength=SHORT)
        client, clientId = self.connect(server, DELIMITER, b"ab", SHORT)
        self.assertFalse(client.client.sendMsg(b"1234567"))
        self.assertTrue(client.client.sendMsg(b"123456"))
        self.assertEqual(server.messages.waitFor(1), [(clientId, b"123456ab")])

    def test_delimiterInMessage(self) -> None:
        """
        A message containing the delimiter is refused; nothing is sent.
        """
        server, client, clientId = self.pair()
        self.assertFalse(client.client.sendMsg(b"a\0b"))
        self.assertFalse(server.server.sendMsg(clientId, b"a\0b"))
        self.assertTrue(client.client.sendMsg(b"c"))
        self.assertEqual(server.messages.waitFor(1), [(clientId, b"c")])

    def test_emptyMessage(self) -> None:
        """
        The empty message is a message.
        """
        server, client, clientId = self.pair()
        self.assertTrue(client.client.sendMsg(b""))
        self.assertTrue(server.server.sendMsg(clientId, ""))
        self.assertEqual(server.messages.waitFor(1), [(clientId, b"")])
        self.assertEqual(client.messages.waitFor(1), [b""])

    def test_orderAndEcho(self) -> None:
        """
        Messages of one connection reach its worker in order, and a worker
        may answer with C{sendMsg}: the echoes come back in order too (the
        original delivers out of order, B9).
        """
        serverSide = self.makeServer(DELIMITER)
        server = serverSide.server
        server.setWorkOnMessage(lambda i, m: server.sendMsg(i, m))
        self.startServer(serverSide)
        client, _ = self.connect(serverSide, DELIMITER)
        sent = [b"%d" % i for i in range(2000)]
        for message in sent:
            self.assertTrue(client.client.sendMsg(message))
        self.assertEqual(client.messages.waitFor(len(sent)), sent)


class TcpMsgTransferTests(_MsgTransferTests, BlockingTestCase):
    """
    C{Fragmentation_TcpConnection_Test_MsgTransfer}, and reassembly checked
    with a raw socket.
    """

    def rawPeer(self, server: ServerSide) -> tuple[socket.socket, int]:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        self.addCleanup(raw.close)
        return raw, server.established.waitFor(1)[0]

    def test_splitAcrossReads(self) -> None:
        """
        Messages split at any point, and several in one read, are
        reassembled (the original's verified framing case).
        """
        server = self.server(b"\n")
        raw, clientId = self.rawPeer(server)
        raw.sendall(b"hel")
        raw.sendall(b"lo\nwor")
        server.messages.waitFor(1)
        raw.sendall(b"ld\n\nlast")
        server.messages.waitFor(3)
        raw.sendall(b"\n")
        self.assertEqual(
            server.messages.waitFor(4),
            [(clientId, b"hello"), (clientId, b"world"), (clientId, b""), (clientId, b"last")],
        )

    def test_unterminatedTailDiscarded(self) -> None:
        """
        Bytes after the last delimiter when the connection closes are no
        message.
        """
        server = self.server(b"\n")
        raw, clientId = self.rawPeer(server)
        raw.sendall(b"one\ntail")
        raw.close()
        server.closed.waitFor(1)
        self.assertEqual(server.messages.snapshot(), [(clientId, b"one")])

    def test_multiByteDelimiter(self) -> None:
        """
        A delimiter of several bytes works both ways, split across reads.
        """
        server = self.server(b"\r\n")
        raw, clientId = self.rawPeer(server)
        raw.sendall(b"ab\r")
        raw.sendall(b"\ncd\r\n")
        self.assertEqual(server.messages.waitFor(2), [(clientId, b"ab"), (clientId, b"cd")])
        self.assertFalse(server.server.sendMsg(clientId, b"x\r\ny"))
        self.assertTrue(server.server.sendMsg(clientId, b"back"))
        self.assertEqual(raw.recv(100), b"back\r\n")


class TlsMsgTransferTests(_MsgTransferTests, BlockingTestCase):
    """
    C{Fragmentation_TlsConnection_Test_MsgTransfer}.
    """

    tls = True


class _ManyClientsTests:
    """
    C{Fragmentation_Tcp/TlsServer_Test_ManyClients}: ten clients.
    """

    def setUp(self) -> None:
        self.serverSide = self.server(DELIMITER)
        self.clients = [self.connect(self.serverSide, DELIMITER) for _ in range(MANY)]
        self.assertEqual(
            sorted(i for _, i in self.clients), self.serverSide.server.getAllClientIds()
        )

    def inThreads(self, calls: list) -> None:
        results = Recorder()
        threads = [threading.Thread(target=lambda c=call: results(c())) for call in calls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(TIMEOUT)
        self.assertEqual(results.waitFor(len(calls)), [True] * len(calls))

    def expectedAtServer(self) -> list[tuple[int, bytes]]:
        return sorted((i, b"Message from client %d" % n) for n, (_, i) in enumerate(self.clients))

    def test_sendingClientsSingleThread(self) -> None:
        """
        Each client sends one message: the server gets each once, with the
        right id (in any order).
        """
        for n, (client, _) in enumerate(self.clients):
            self.assertTrue(client.client.sendMsg(b"Message from client %d" % n))
        self.assertEqual(sorted(self.serverSide.messages.waitFor(MANY)), self.expectedAtServer())

    def test_sendingClientsMultipleThreads(self) -> None:
        self.inThreads(
            [
                lambda c=client, n=n: c.client.sendMsg(b"Message from client %d" % n)
                for n, (client, _) in enumerate(self.clients)
            ]
        )
        self.assertEqual(sorted(self.serverSide.messages.waitFor(MANY)), self.expectedAtServer())

    def assertEachClientGotItsMessage(self) -> None:
        for client, clientId in self.clients:
            self.assertEqual(client.messages.waitFor(1), [b"Message to client %d" % clientId])

    def test_sendingServerSingleThread(self) -> None:
        """
        The server sends each client its own message; each gets exactly it.
        """
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
    C{Fragmentation_TcpServer_Test_ManyClients}.
    """


class TlsManyClientsTests(_ManyClientsTests, BlockingTestCase):
    """
    C{Fragmentation_TlsServer_Test_ManyClients}.
    """

    tls = True


class _ServerSendTests:
    """
    C{Fragmentation_Tcp/TlsServer_Test_Send}: sending to a client that is
    not there.
    """

    def setUp(self) -> None:
        self.serverSide = self.server(DELIMITER)
        self.clientSide, self.clientId = self.connect(self.serverSide, DELIMITER)

    def test_negTestClientNotConnected(self) -> None:
        """
        An id no client has: C{False}, and the connected client receives
        nothing (the message sent after it is the first to arrive).
        """
        server = self.serverSide.server
        self.assertFalse(server.sendMsg(self.clientId + 1, b"Hello client!"))
        self.assertFalse(server.sendMsg(0, b"Hello client!"))
        self.assertTrue(server.sendMsg(self.clientId, b"marker"))
        self.assertEqual(self.clientSide.messages.waitFor(1), [b"marker"])

    def test_negTestClientDisconnectedBefore(self) -> None:
        """
        To a client that just left: C{False}.
        """
        self.clientSide.client.stop()
        self.serverSide.closed.waitFor(1)
        self.assertFalse(self.serverSide.server.sendMsg(self.clientId, b"Hello client!"))
        self.assertEqual(self.clientSide.messages.snapshot(), [])

    def test_negTestServerNotRunning(self) -> None:
        """
        After the server's C{stop()}: C{False}; the client received nothing.
        """
        self.serverSide.server.stop()
        self.assertFalse(self.serverSide.server.sendMsg(self.clientId, b"Hello client!"))
        self.clientSide.closed.waitFor(1)
        self.assertEqual(self.clientSide.messages.snapshot(), [])


class TcpServerSendTests(_ServerSendTests, BlockingTestCase):
    """
    C{Fragmentation_TcpServer_Test_Send}.
    """


class TlsServerSendTests(_ServerSendTests, BlockingTestCase):
    """
    C{Fragmentation_TlsServer_Test_Send}.
    """

    tls = True
