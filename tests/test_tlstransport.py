"""
Tests for L{tcpsc._tlstransport}: the TLS transport of tcpsc connections.

A server-side L{TLSTransport} and a client-side Twisted
L{TLSMemoryBIOProtocol} (without write aggregation, so that what the client
receives is exactly what the server sent) talk over two
L{StringTransport}s, with the bytes moved by hand and a L{Clock} for the
delayed flush: every test can see when the server's bytes leave.  Each test
runs twice, with OpenSSL called directly and through pyOpenSSL's methods.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tcpsc import TLSConfig, _tlstransport
from tcpsc._tlstransport import FLUSH_AT, TLSTransport, TLSTransportFactory
from tests._helpers import certificates


class Uppercase(Protocol):
    """
    Answers every line of a read with one write per line, upper-cased.
    """

    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.reads.append(data)
        for line in data.splitlines(keepends=True):
            self.transport.write(line.upper())

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.lost = reason


class Collector(Protocol):
    """
    The client's protocol: keeps each delivery (one per TLS record) apart.
    """

    def __init__(self) -> None:
        self.reads: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.reads.append(data)

    @property
    def received(self) -> bytes:
        return b"".join(self.reads)


class _PlainTLSFactory(TLSMemoryBIOFactory):
    # Twisted's TLS protocol without its write aggregation: a client write is
    # one TLS record, sent at once.
    protocol = TLSMemoryBIOProtocol


class Pair:
    """
    A TLS 1.3 server (tcpsc's transport) and client (Twisted's) on
    L{StringTransport}s, handshake done.
    """

    def __init__(self, early: bytes = b"") -> None:
        certs = certificates()
        self.clock = Clock()
        self.server = Uppercase()
        self.client = Collector()
        serverConfig = TLSConfig(ca=certs.ca, cert=certs.server, key=certs.serverKey)
        clientConfig = TLSConfig(ca=certs.ca, cert=certs.client, key=certs.clientKey)
        serverFactory = TLSTransportFactory(
            serverConfig.serverOptions(),
            isClient=False,
            wrappedFactory=Factory.forProtocol(lambda: self.server),
            clock=self.clock,
        )
        clientFactory = _PlainTLSFactory(
            clientConfig.clientCreator("localhost"),
            isClient=True,
            wrappedFactory=Factory.forProtocol(lambda: self.client),
            clock=self.clock,
        )
        self.serverTLS: TLSTransport = serverFactory.buildProtocol(None)  # type: ignore[assignment]
        self.clientTLS: Any = clientFactory.buildProtocol(None)
        self.serverWire = StringTransport()
        self.clientWire = StringTransport()
        self.serverTLS.makeConnection(self.serverWire)
        self.clientTLS.makeConnection(self.clientWire)
        self.serverBIOs = self.bios()
        if early:
            # Held by the client until its handshake is done, then sent right
            # after its Finished, in the same bytes.
            self.clientTLS.write(early)
        self.pump()
        assert self.serverTLS._handshakeDone and self.clientTLS._handshakeDone

    def bios(self) -> tuple[object, object]:
        """
        The server's memory BIOs (into and out of OpenSSL).
        """
        connection = self.serverTLS._tlsConnection
        return connection._into_ssl, connection._from_ssl

    def buffersHeld(self) -> list[bool]:
        """
        Whether each of the server's memory BIOs holds a buffer (a BIO that
        never held bytes has none; one that did keeps it).
        """
        from OpenSSL._util import ffi, lib

        held = []
        for bio in self.bios():
            data = ffi.new("char **")
            lib.BIO_get_mem_data(bio, data)
            held.append(data[0] != ffi.NULL)
        return held

    def flushPlanned(self) -> bool:
        """
        Whether a delayed flush of writes is planned.
        """
        return self.serverTLS._scheduled is not None

    def pump(self) -> None:
        """
        Move bytes both ways until neither side has anything to send.
        """
        while self.serverWire.value() or self.clientWire.value():
            self.toServer()
            self.toClient()

    def toServer(self) -> None:
        data = self.clientWire.value()
        self.clientWire.clear()
        if data:
            self.serverTLS.dataReceived(data)

    def toClient(self) -> None:
        data = self.serverWire.value()
        self.serverWire.clear()
        if data:
            self.clientTLS.dataReceived(data)


class TLSTransportTests(SynchronousTestCase):
    """
    Writes made in a read leave before the read returns; writes made outside
    a read wait for the next reactor iteration; both go out as one TLS write.
    """

    direct = True

    def setUp(self) -> None:
        if not self.direct:
            self.patch(_tlstransport, "_DIRECT", None)
        self.pair = Pair()

    def test_directPathInUse(self) -> None:
        """
        With this pyOpenSSL the transport calls OpenSSL directly (if a later
        pyOpenSSL changes what it relies on, this says so; TLS then still
        works, through pyOpenSSL's methods).
        """
        if self.direct:
            self.assertIsNotNone(_tlstransport._DIRECT)
            self.assertIsNotNone(self.pair.serverTLS._direct)
        else:
            self.assertIsNone(self.pair.serverTLS._direct)

    def test_repliesLeaveBeforeTheReadReturns(self) -> None:
        """
        The replies to the lines of one read are sent as one TLS record
        before C{dataReceived} returns, without the clock moving.
        """
        pair = self.pair
        pair.clientTLS.write(b"one\ntwo\nthree\n")
        pair.toServer()
        self.assertEqual(pair.server.reads, [b"one\ntwo\nthree\n"])
        self.assertEqual(pair.clock.getDelayedCalls(), [])
        pair.toClient()
        self.assertEqual(pair.client.reads, [b"ONE\nTWO\nTHREE\n"])

    def test_writesOutsideAReadWaitForTheNextIteration(self) -> None:
        """
        Writes made outside a read are sent together on the next reactor
        iteration.
        """
        pair = self.pair
        pair.serverTLS.write(b"first ")
        pair.serverTLS.writeSequence([b"second ", bytearray(b"third")])
        self.assertEqual(pair.serverWire.value(), b"")
        pair.clock.advance(0)
        pair.toClient()
        self.assertEqual(pair.client.reads, [b"first second third"])
        self.assertEqual(pair.clock.getDelayedCalls(), [])

    def test_mutableBufferIsCopied(self) -> None:
        """
        A C{bytearray} changed after C{write} returned is sent as it was.
        """
        pair = self.pair
        data = bytearray(b"before")
        pair.serverTLS.write(data)
        data[:] = b"AFTER!"
        pair.clock.advance(0)
        pair.toClient()
        self.assertEqual(pair.client.received, b"before")

    def test_writeRefusesNonBytes(self) -> None:
        """
        Text and numbers are refused with C{TypeError}, as by Twisted's
        transports, and nothing is sent.
        """
        pair = self.pair
        self.assertRaises(TypeError, pair.serverTLS.write, "text")
        self.assertRaises(TypeError, pair.serverTLS.write, 5)
        pair.clock.advance(0)
        pair.toClient()
        self.assertEqual(pair.client.received, b"")

    def test_producerWritesAfterLoseConnection(self) -> None:
        """
        With a producer registered, writes after C{loseConnection} are sent,
        and unregistering the producer sends them before closing TLS.
        """
        pair = self.pair

        @implementer(IPushProducer)
        class Producer:
            def pauseProducing(self) -> None:
                pass

            def resumeProducing(self) -> None:
                pass

            def stopProducing(self) -> None:
                pass

        pair.serverTLS.registerProducer(Producer(), True)
        pair.serverTLS.write(b"before ")
        pair.serverTLS.loseConnection()
        pair.serverTLS.write(b"after")
        pair.serverTLS.unregisterProducer()
        self.assertEqual(pair.clock.getDelayedCalls(), [])
        pair.toClient()
        self.assertEqual(pair.client.received, b"before after")
        self.assertTrue(pair.clientWire.disconnecting)

    def test_largeWriteLeavesAtOnce(self) -> None:
        """
        More than C{FLUSH_AT} bytes are encrypted and sent at once, whole.
        """
        pair = self.pair
        data = bytes(range(256)) * (4 * 1024)  # 1 MiB
        self.assertGreater(len(data), FLUSH_AT)
        pair.serverTLS.write(data)
        self.assertFalse(pair.flushPlanned())
        pair.toClient()
        self.assertEqual(pair.client.received, data)

    def test_loseConnectionSendsHeldWritesFirst(self) -> None:
        """
        C{loseConnection} sends what was written before it, then the
        close_notify; what is written after it is dropped, as Twisted's TLS
        transport does.
        """
        pair = self.pair
        pair.serverTLS.write(b"last words")
        pair.serverTLS.loseConnection()
        pair.serverTLS.write(b"too late")
        self.assertEqual(pair.clock.getDelayedCalls(), [])
        pair.toClient()
        self.assertEqual(pair.client.received, b"last words")
        # The client answered the close_notify with its own.
        self.assertTrue(pair.clientWire.disconnecting)

    def test_abortDropsHeldWrites(self) -> None:
        """
        C{abortConnection} drops what is held and leaves no delayed call.
        """
        pair = self.pair
        pair.serverTLS.write(b"never sent")
        pair.serverTLS.abortConnection()
        self.assertEqual(pair.clock.getDelayedCalls(), [])
        pair.toClient()
        self.assertEqual(pair.client.received, b"")

    def test_connectionLostLeavesNoDelayedCall(self) -> None:
        """
        A connection lost with writes held cancels their flush; the loss
        (no close_notify came) is reported as Twisted reports it.
        """
        pair = self.pair
        pair.serverTLS.write(b"held")
        pair.serverTLS.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(pair.clock.getDelayedCalls(), [])
        self.assertIsInstance(pair.server.lost.value, ConnectionLost)  # type: ignore[union-attr]

    def test_peerCloseNotify(self) -> None:
        """
        The peer's close_notify is answered and the connection closed.
        """
        pair = self.pair
        pair.clientTLS.write(b"bye\n")
        pair.clientTLS.loseConnection()
        pair.toServer()
        self.assertEqual(pair.server.reads, [b"bye\n"])
        self.assertTrue(pair.serverWire.disconnecting)
        pair.serverTLS.connectionLost(Failure(ConnectionDone()))
        self.assertIsInstance(pair.server.lost.value, ConnectionDone)  # type: ignore[union-attr]

    def test_corruptRecord(self) -> None:
        """
        A record that fails to decrypt ends the connection with pyOpenSSL's
        error, and nothing of it is delivered.
        """
        pair = self.pair
        pair.clientTLS.write(b"tampered\n")
        record = bytearray(pair.clientWire.value())
        pair.clientWire.clear()
        record[-1] ^= 0xFF
        pair.serverTLS.dataReceived(bytes(record))
        self.assertEqual(pair.server.reads, [])
        self.assertTrue(pair.serverWire.disconnecting)
        pair.serverTLS.connectionLost(Failure(ConnectionDone()))
        self.assertIsInstance(pair.server.lost.value, SSL.Error)  # type: ignore[union-attr]

    def test_manyRecordsInOneRead(self) -> None:
        """
        Several records arriving in one read are all delivered, in order,
        and answered with one write.
        """
        pair = self.pair
        for n in range(5):
            pair.clientTLS.write(b"line %d\n" % n)
        pair.toServer()
        self.assertEqual(len(pair.server.reads), 5)
        pair.toClient()
        self.assertEqual(pair.client.reads, [b"".join(b"LINE %d\n" % n for n in range(5))])

    def test_handshakeBuffersReleased(self) -> None:
        """
        Once the handshake is done, the server's memory BIOs hold no buffer:
        the ones that held the handshake's flights were replaced (on the
        direct path; through pyOpenSSL's methods they stay).
        """
        pair = self.pair
        if self.direct:
            self.assertNotEqual(pair.bios(), pair.serverBIOs)
            self.assertEqual(pair.buffersHeld(), [False, False])
        else:
            self.assertEqual(pair.bios(), pair.serverBIOs)
        # And the connection works on.
        pair.clientTLS.write(b"still here\n")
        pair.pump()
        self.assertEqual(pair.client.received, b"STILL HERE\n")

    def test_bytesAfterTheHandshakeKept(self) -> None:
        """
        Application data that arrives in the same read as the client's
        Finished is delivered: replacing the BIOs keeps what OpenSSL did not
        read yet.
        """
        pair = Pair(early=b"right after finished\n")
        self.assertEqual(pair.server.reads, [b"right after finished\n"])
        self.assertEqual(pair.client.received, b"RIGHT AFTER FINISHED\n")

    def test_largeReadBuffersReleased(self) -> None:
        """
        A read larger than C{RELEASE_ABOVE} grows the BIOs' buffers; they are
        released C{RELEASE_DELAY} seconds later, and a record that was only
        partly received then is completed and delivered whole.
        """
        pair = self.pair
        line = b"x" * (4 * _tlstransport.RELEASE_ABOVE) + b"\n"
        pair.clientTLS.write(line)
        pair.pump()
        self.assertEqual(pair.client.received, line.upper())
        if not self.direct:
            self.assertEqual(pair.clock.getDelayedCalls(), [])
            return
        self.assertEqual(pair.buffersHeld(), [True, True])
        pair.clock.advance(_tlstransport.RELEASE_DELAY)
        self.assertEqual(pair.buffersHeld(), [False, False])
        self.assertEqual(pair.clock.getDelayedCalls(), [])
        # A release while a large record is half received.
        pair.client.reads.clear()
        pair.clientTLS.write(line)
        wire = pair.clientWire.value()
        pair.clientWire.clear()
        half = len(wire) // 2
        pair.serverTLS.dataReceived(wire[:half])
        pair.clock.advance(_tlstransport.RELEASE_DELAY)
        pair.serverTLS.dataReceived(wire[half:])
        pair.pump()
        self.assertEqual(pair.client.received, line.upper())

    def test_largeWriteBuffersReleased(self) -> None:
        """
        A write larger than C{RELEASE_ABOVE} grows the outgoing BIO's
        buffer; it is released C{RELEASE_DELAY} seconds later.
        """
        pair = self.pair
        data = b"y" * (4 * _tlstransport.RELEASE_ABOVE)
        pair.serverTLS.write(data)
        pair.toClient()
        self.assertEqual(pair.client.received, data)
        if not self.direct:
            self.assertEqual(pair.clock.getDelayedCalls(), [])
            return
        self.assertEqual(pair.buffersHeld(), [False, True])
        pair.clock.advance(_tlstransport.RELEASE_DELAY)
        self.assertEqual(pair.buffersHeld(), [False, False])

    def test_connectionLostCancelsRelease(self) -> None:
        """
        A connection lost before its buffers are released leaves no delayed
        call behind.
        """
        pair = self.pair
        pair.serverTLS.write(b"z" * (2 * _tlstransport.RELEASE_ABOVE))
        pair.serverTLS.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(pair.clock.getDelayedCalls(), [])


class PyOpenSSLPathTests(TLSTransportTests):
    """
    The same, through pyOpenSSL's methods (another pyOpenSSL than the ones
    the direct path was checked against).
    """

    direct = False
