"""
The TLS transport of tcpsc connections: Twisted's memory-BIO TLS protocol
with the writes of one read turned into one TLS write, made before the read
returns.

Twisted's own TLS transport (L{twisted.protocols.tls.BufferingTLSTransport})
gathers small writes and encrypts them on the next reactor iteration, through
a C{callLater(0)}.  For a message protocol that answers the messages of a
read, the answers of that read are all there when the read ends: encrypting
them then saves the delayed call, a reactor iteration per read and one empty
read of OpenSSL's send buffer (an exception in pyOpenSSL), and makes the reply
leave with the same reactor turn, as it does on plain TCP.  Writes made
outside a read (a timer, a broadcast, another connection's read) are still
gathered until the next reactor iteration, as Twisted does.

Once the handshake is done, the hot calls (C{SSL_read}, C{SSL_write} and
the memory BIOs' C{BIO_read}/C{BIO_write}) go to OpenSSL directly through the
cffi binding pyOpenSSL itself uses, with one buffer per factory, rather than
through pyOpenSSL's methods, which allocate a buffer and raise an exception
for every empty read (see L{_directOpenSSL}; C{benchmarks/RESULTS.md} says
what that saves).  Errors still go through pyOpenSSL, so they are reported
as they always are.

The same binding lets go of memory an idle connection does not need: a
memory BIO never gives back the buffer it grew to hold the largest piece
written to it, so once the handshake is done (its flights are several KiB)
both BIOs are replaced with fresh, empty ones (see L{TLSTransport._releaseBIOs}),
and again a little after a large read or write made them grow.

Part of the TLS layer: it knows nothing of messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from OpenSSL.SSL import Connection, Error, WantReadError, ZeroReturnError
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure

from . import _compat

__all__ = ["TLSTransport", "TLSTransportFactory", "tlsFactory"]


#: Bytes of pending writes that are encrypted at once rather than held for
#: the end of the read or the next reactor iteration; Twisted uses the same
#: bound.
FLUSH_AT = 64_000
#: Bytes asked of OpenSSL per read of decrypted data; a TLS record holds at
#: most 16 KiB, so one call returns at most one record's worth.
RECEIVE_SIZE = 2**16
#: Bytes handed to OpenSSL per C{SSL_write}: bounds OpenSSL's send buffer
#: between two reads of it.
SEND_SLICE = 2**16
#: A read or write larger than this grows a memory BIO's buffer by more than
#: an idle connection should keep: the BIOs are replaced (their buffers
#: freed) L{RELEASE_DELAY} seconds later.
RELEASE_ABOVE = 2**14
#: Seconds from a read or write larger than L{RELEASE_ABOVE} to the
#: replacement of the BIOs: a connection that keeps moving large messages
#: reallocates their buffers once per delay, not once per message.
RELEASE_DELAY = 1.0


def _directOpenSSL() -> tuple[Any, Any] | None:
    """
    The cffi C{lib} and C{ffi} through which pyOpenSSL calls OpenSSL, or
    C{None} when the binding is not what the direct path was written for
    (then every call goes through pyOpenSSL's methods).

    The direct path uses private parts of pyOpenSSL (its binding module and
    a L{Connection}'s C{_ssl}, C{_into_ssl}, C{_from_ssl} and
    C{_raise_ssl_error}): like L{TLSTransport} itself, it is used only where
    L{tcpsc._compat.PRIVATE} says the installed releases were checked.
    """
    try:
        from OpenSSL import _util
    except ImportError:  # pragma: no cover - another pyOpenSSL
        return None
    lib, ffi = getattr(_util, "lib", None), getattr(_util, "ffi", None)
    needed = (
        "SSL_read",
        "SSL_write",
        "SSL_get_error",
        "BIO_read",
        "BIO_write",
        "BIO_new",
        "BIO_free",
        "BIO_s_mem",
        "SSL_set_bio",
        "SSL_ERROR_WANT_READ",
    )
    if lib is None or ffi is None or not all(hasattr(lib, name) for name in needed):
        return None  # pragma: no cover - another pyOpenSSL
    if not callable(getattr(Connection, "_raise_ssl_error", None)):
        return None  # pragma: no cover - another pyOpenSSL
    return lib, ffi


#: See L{_directOpenSSL}; tests set it to C{None} to run pyOpenSSL's path.
_DIRECT: tuple[Any, Any] | None = _directOpenSSL() if _compat.PRIVATE else None


class _Direct:
    """
    What the direct path needs of one connection: OpenSSL's C{SSL} and the
    two memory C{BIO}s of a pyOpenSSL L{Connection}, which this keeps alive,
    and the factory's buffer.
    """

    __slots__ = (
        "buffer",
        "connection",
        "ffi",
        "fromSSL",
        "intoSSL",
        "lib",
        "size",
        "ssl",
        "wantRead",
    )

    def __init__(self, lib: Any, ffi: Any, connection: Connection, buffer: Any) -> None:
        self.lib = lib
        self.ffi = ffi
        self.connection = connection
        self.ssl = connection._ssl
        self.intoSSL = connection._into_ssl
        self.fromSSL = connection._from_ssl
        self.buffer = buffer
        self.size = len(buffer)
        self.wantRead = lib.SSL_ERROR_WANT_READ


class TLSTransport(TLSMemoryBIOProtocol):
    """
    A L{TLSMemoryBIOProtocol} whose writes are encrypted in one piece at the
    end of the read they were made in, or on the next reactor iteration when
    made outside a read.

    @ivar _pending: writes not encrypted yet.
    @ivar _pendingSize: their total length.
    @ivar _reading: C{True} while the wrapped protocol handles received data.
    @ivar _scheduled: the delayed flush of writes made outside a read.
    """

    factory: TLSTransportFactory
    # Set by makeConnection: None only before the connection is made.
    transport: ITransport

    #: A close this side starts does not wait for the peer's close_notify
    #: (see L{_shutdownTLS}): the framing need not keep reading to close.
    waitsForCloseNotify = False

    _reading: bool = False
    _pendingSize: int = 0
    _scheduled: IDelayedCall | None = None
    _release: IDelayedCall | None = None
    _direct: _Direct | None = None

    def __init__(
        self, factory: TLSTransportFactory, wrappedProtocol: Any, _connectWrapped: bool = True
    ) -> None:
        self._pending: list[bytes] = []
        self._clock: IReactorTime = factory._clock
        # An instance attribute rather than ProtocolWrapper's class one: the
        # framing reads it for every message sent, and Python finds an
        # instance's own attributes faster.
        self.disconnecting = False
        super().__init__(factory, wrappedProtocol, _connectWrapped)

    def makeConnection(self, transport: Any) -> None:
        binding = _DIRECT
        # Twisted's makeConnection makes the pyOpenSSL Connection and starts
        # the handshake (which takes pyOpenSSL's path).
        super().makeConnection(transport)
        connection = self._tlsConnection
        if (
            binding is not None
            and connection is not None
            and getattr(connection, "_into_ssl", None) is not None
            and getattr(connection, "_from_ssl", None) is not None
        ):
            lib, ffi = binding
            self._direct = _Direct(lib, ffi, connection, self.factory.buffer(ffi))

    def _checkHandshakeStatus(self) -> None:
        done = self._handshakeDone
        super()._checkHandshakeStatus()
        if self._handshakeDone and not done:
            self._releaseBIOs()

    def _releaseLater(self) -> None:
        """
        Replace the BIOs L{RELEASE_DELAY} seconds from now, if that is not
        planned already: a large read or write made their buffers grow.
        """
        if self._release is None:
            self._release = self._clock.callLater(RELEASE_DELAY, self._releaseGrownBIOs)

    def _releaseGrownBIOs(self) -> None:
        self._release = None
        self._releaseBIOs()

    def _releaseBIOs(self) -> None:
        """
        Replace the connection's two memory BIOs with new, empty ones, moving
        over what the receiving one holds that OpenSSL has not read yet (the
        start of a record that is not complete yet).

        A memory BIO keeps the buffer it grew to hold the largest piece
        written to it, and frees it only with the BIO: the handshake's
        flights (certificates, signatures, session tickets) leave several
        KiB per connection, a large message up to a read's or a write's size
        (C{benchmarks/RESULTS.md} says how much), held for nothing while the
        connection is idle.  So this runs once the handshake is done, and
        after large reads or writes (L{_releaseLater}).  OpenSSL frees the
        old BIOs when it is given the new ones.  Only on the direct path;
        through pyOpenSSL's methods the BIOs stay.
        """
        direct = self._direct
        if direct is None or self._lostTLSConnection or self._aborted:
            return
        # What OpenSSL has to send (the last flight, session tickets) goes
        # first: the BIO that holds it is about to go.  (A server that
        # refuses the client has aborted by now, before its session
        # tickets were sent: see _flushSendBIO.)
        self._flushSendBIO()
        lib = direct.lib
        ffi = direct.ffi
        buffer = direct.buffer
        left = []
        while True:
            result = lib.BIO_read(direct.intoSSL, buffer, direct.size)
            if result <= 0:
                break
            left.append(ffi.unpack(buffer, result))
        intoSSL = lib.BIO_new(lib.BIO_s_mem())
        fromSSL = lib.BIO_new(lib.BIO_s_mem())
        if intoSSL == ffi.NULL or fromSSL == ffi.NULL:  # pragma: no cover - out of memory
            for bio in (intoSSL, fromSSL):
                if bio != ffi.NULL:
                    lib.BIO_free(bio)
            # The old BIO keeps working: give back what was taken from it.
            for data in left:
                lib.BIO_write(direct.intoSSL, data, len(data))
            return
        # OpenSSL takes both and frees the ones it had.
        lib.SSL_set_bio(direct.ssl, intoSSL, fromSSL)
        connection = direct.connection
        connection._into_ssl = direct.intoSSL = intoSSL
        connection._from_ssl = direct.fromSSL = fromSSL
        for data in left:
            if lib.BIO_write(intoSSL, data, len(data)) != len(data):
                raise MemoryError("OpenSSL could not buffer the bytes received")

    # -- writing ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        """
        Hold C{data} until the end of the current read (or the next reactor
        iteration), unless enough is held to be worth encrypting now.

        Like Twisted's TLS transport, writes after C{loseConnection} are
        dropped unless a producer is registered.
        """
        if self.disconnecting and self._producer is None:
            return
        if type(data) is not bytes:
            # A bytearray or memoryview may change after write() returns; an
            # int or str is a TypeError, as on Twisted's transports (bytes(5)
            # would be five zero bytes).
            data = bytes(memoryview(data))
        self._pending.append(data)
        self._pendingSize += len(data)
        if self._pendingSize > FLUSH_AT:
            self._flushPending()
        elif not self._reading and self._scheduled is None:
            self._scheduled = self._clock.callLater(0, self._scheduledFlush)

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        self.write(b"".join(iovec))

    def _scheduledFlush(self) -> None:
        self._scheduled = None
        self._flushPending()

    def _flushPending(self) -> None:
        """
        Encrypt and send everything held, as one TLS write.
        """
        self._cancelScheduled()
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._pendingSize = 0
        self._write(data)

    def _dropPending(self) -> None:
        self._cancelScheduled()
        self._pending.clear()
        self._pendingSize = 0

    def _cancelScheduled(self) -> None:
        scheduled = self._scheduled
        if scheduled is not None:
            self._scheduled = None
            scheduled.cancel()

    # -- receiving --------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """
        Decrypt C{data}, hand the application bytes to the wrapped protocol,
        then encrypt what it wrote meanwhile and send it with whatever
        OpenSSL has to send.
        """
        if not self._handshakeDone or self._appSendBuffer:
            # The handshake, or writes OpenSSL could not take: Twisted's path,
            # with the writes still gathered.
            self._reading = True
            try:
                super().dataReceived(data)
            finally:
                self._reading = False
            self._flushPending()
            return
        direct = self._direct
        if direct is not None:
            self._receiveDirect(direct, data)
            return
        connection = self._tlsConnection
        connection.bio_write(data)
        deliver = self.wrappedProtocol.dataReceived
        self._reading = True
        try:
            while not self._lostTLSConnection:
                try:
                    received = connection.recv(RECEIVE_SIZE)
                except WantReadError:
                    break
                except Error as e:
                    self._readFailed(e)
                else:
                    if not self._aborted:
                        deliver(received)
        finally:
            self._reading = False
        self._sendAfterRead()

    def _readFailed(self, error: Error) -> None:
        """
        Reading failed with C{error}: the peer's close_notify is answered
        and the connection closed; anything else ends it with the error.
        """
        if isinstance(error, ZeroReturnError):
            self._shutdownTLS()
            self._tlsShutdownFinished(None)
        else:
            self._tlsShutdownFinished(Failure(error))

    def _sendAfterRead(self) -> None:
        """
        Send what the read's handling wrote, or else what OpenSSL produced
        itself (a key update's answer, session tickets).
        """
        if self._pending and not self._lostTLSConnection:
            self._flushPending()
        else:
            self._flushSendBIO()

    def _receiveDirect(self, direct: _Direct, data: bytes) -> None:
        """
        L{dataReceived} after the handshake, calling OpenSSL directly.
        """
        lib = direct.lib
        ssl = direct.ssl
        buffer = direct.buffer
        size = direct.size
        unpack = direct.ffi.unpack
        if lib.BIO_write(direct.intoSSL, data, len(data)) != len(data):
            # A memory BIO only fails to take bytes when out of memory.
            raise MemoryError("OpenSSL could not buffer the bytes received")
        if len(data) > RELEASE_ABOVE:
            self._releaseLater()
        deliver = self.wrappedProtocol.dataReceived
        self._reading = True
        try:
            while not self._lostTLSConnection:
                result = lib.SSL_read(ssl, buffer, size)
                if result > 0:
                    if not self._aborted:
                        deliver(unpack(buffer, result))
                    continue
                if lib.SSL_get_error(ssl, result) == direct.wantRead:
                    break
                # Anything else: let pyOpenSSL raise what it always raises.
                try:
                    direct.connection._raise_ssl_error(ssl, result)
                except Error as e:
                    self._readFailed(e)
                else:  # pragma: no cover - an error that is no error
                    break
        finally:
            self._reading = False
        self._sendAfterRead()

    def _write(self, data: bytes) -> None:
        """
        Encrypt C{data} and send it, as Twisted's C{_write} does, calling
        OpenSSL directly once the handshake is done.
        """
        direct = self._direct
        if direct is None or not self._handshakeDone:
            super()._write(data)
            return
        if self._lostTLSConnection:
            return
        lib = direct.lib
        ssl = direct.ssl
        total = len(data)
        if total > RELEASE_ABOVE:
            self._releaseLater()
        sent = 0
        while sent < total:
            piece = data[sent : sent + SEND_SLICE] if sent or total > SEND_SLICE else data
            result = lib.SSL_write(ssl, piece, len(piece))
            if result > 0:
                sent += result
                self._flushSendBIO()
                continue
            if lib.SSL_get_error(ssl, result) == direct.wantRead:
                self._bufferedWrite(data[sent:])
                break
            try:
                direct.connection._raise_ssl_error(ssl, result)
            except Error:
                self._tlsShutdownFinished(Failure())
            break

    def _flushSendBIO(self) -> None:
        """
        Send everything OpenSSL has to send (Twisted's reads at most 32 KiB),
        what the socket takes at once (L{_compat.writeNow}).  Never at once
        once aborted: the close_notify Twisted's C{abortConnection} makes,
        and anything OpenSSL still held (a refused client's session
        tickets), are written to a transport about to drop them, as they
        always were.
        """
        direct = self._direct
        if direct is None:
            super()._flushSendBIO()
            return
        lib = direct.lib
        fromSSL = direct.fromSSL
        buffer = direct.buffer
        size = direct.size
        while True:
            result = lib.BIO_read(fromSSL, buffer, size)
            if result <= 0:
                return
            if not self._aborted:
                _compat.writeNow(self.transport, direct.ffi.unpack(buffer, result))
            else:
                self.transport.write(direct.ffi.unpack(buffer, result))
            if result < size:
                return

    # -- closing ----------------------------------------------------------

    def loseConnection(self) -> None:
        if not (self.disconnecting or not self.connected):
            self._flushPending()
        super().loseConnection()

    def unregisterProducer(self) -> None:
        # Unregistering after loseConnection shuts TLS down: what was written
        # before goes first.
        if self.disconnecting and not self._lostTLSConnection:
            self._flushPending()
        super().unregisterProducer()

    def _shutdownTLS(self) -> None:
        """
        Send close_notify (or answer the peer's) and close the socket once it
        is written, without waiting for the peer's close_notify.

        Twisted's TLS protocol closes the socket only once the peer answered
        close_notify: a peer that never answers (some TLS stacks, any hostile
        client) would keep the connection, its slot and a stop waiting
        forever, and one that keeps sending meanwhile would have its data
        delivered after the close began.  RFC 8446 (6.1) lets the side that
        sent close_notify close the connection without waiting; Python's
        C{ssl}, OpenSSL's C{s_client} and browsers do.
        """
        try:
            self._tlsConnection.shutdown()
        except Error:
            # Mid-handshake OpenSSL cannot shut down (Twisted's comment in
            # its own _shutdownTLS): there is nothing to flush cleanly.
            pass
        self._flushSendBIO()
        # Nothing more is read or written over TLS: the end of the socket
        # that follows is the end of a clean shutdown, not an EOF without
        # close_notify.
        self._lostTLSConnection = True
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        self._dropPending()
        super().abortConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        # Nothing held can be delivered any more, nor what the wrapped
        # protocol writes while it hears of the loss.
        self._dropPending()
        super().connectionLost(reason)
        self._dropPending()
        # Twisted let go of the pyOpenSSL Connection: so does this.
        self._direct = None
        release, self._release = self._release, None
        if release is not None and release.active():
            release.cancel()


class TLSTransportFactory(TLSMemoryBIOFactory):
    """
    A L{TLSMemoryBIOFactory} whose connections are L{TLSTransport}s.
    """

    protocol = TLSTransport
    _buffer: Any = None

    def buffer(self, ffi: Any) -> Any:
        """
        The buffer this factory's connections read OpenSSL's output into: one
        per factory, as a factory's connections all run in its reactor's
        thread, and each use copies the bytes out before anything else runs.
        """
        if self._buffer is None:
            self._buffer = ffi.new("char[]", RECEIVE_SIZE)
        return self._buffer


def tlsFactory(
    contextFactory: Any, isClient: bool, wrappedFactory: Any, clock: IReactorTime
) -> TLSMemoryBIOFactory:
    """
    The TLS factory of tcpsc's connections: L{TLSTransportFactory} where the
    installed Twisted and pyOpenSSL are releases its private names were
    checked against (L{tcpsc._compat.PRIVATE}); Twisted's own
    L{TLSMemoryBIOFactory} otherwise, which is slower and waits (within the
    connection's C{closeTimeout}) for the peer's close_notify.
    """
    factoryClass = TLSTransportFactory if _compat.PRIVATE else TLSMemoryBIOFactory
    return factoryClass(
        contextFactory, isClient=isClient, wrappedFactory=wrappedFactory, clock=clock
    )
