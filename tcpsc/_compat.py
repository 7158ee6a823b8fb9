# -*- test-case-name: tests.test_compat -*-
"""
The one place that knows which private names of Twisted and pyOpenSSL tcpsc
relies on (and the one of the standard library's sockets, see
L{acceptOne}), and whether it may rely on them.

A few of tcpsc's fast paths reach into other libraries' private attributes
(a socket transport's buffer, a port's accept loop, pyOpenSSL's cffi
binding).  Private names can change in any release, so they are trusted only
in the releases they were checked against: L{PRIVATE} is decided once, here,
from the installed versions, and every fast path asks it, at the time it
runs, before it touches a private name.  Outside the checked releases each
falls back to the public path (Twisted's own transport, port and TLS
protocol), which is slower and behaves the same.

L{PRIVATE_NAMES} lists every private attribute used, by its owner and with
what uses it, so that a test fails on a release that renamed one instead of
a user finding out.  Tests set L{PRIVATE} to C{False} to run the public
fallbacks.  The fast paths defined here (L{writeToAll},
L{writeNow}, L{tcpEndpointArguments}, L{unsentBytes}, L{bufferedBytes},
L{writeClosing}, L{acceptOne}) each say their fallback.  Three subclasses of Twisted's
classes stay beside the code that uses them and are used only when
L{PRIVATE}: the server's listening port, whose accept loop pauses when out
of file descriptors (fallback: Twisted's own port, with the same listen
queue), tcpsc's TLS transport (C{tcpsc._tlstransport}; fallback:
Twisted's own L{TLSMemoryBIOFactory}, which waits for the peer's
close_notify within the connection's close timeout), and the connected UDP
port of a datagram client (C{tcpsc._datagram._SturdyPort}), which stays
open when the system reports a refusal (fallback: Twisted's own port, which
the poll-like reactors then close; the client says so and is
disconnected).

Public methods are replaced on live transport I{instances} in two places;
no release check applies to public names, but a transport class with
C{__slots__}, or whose methods are looked up other than on the instance,
would defeat them:

  - C{tcpsc._framing.MessageProtocol} replaces C{loseConnection} on its TLS
    transport, so that the replies batched during a read are written before
    close_notify (Twisted's own TLS transport sets C{write} on its instances
    the same way);
  - C{tcpsc._framing._OutputTracker} replaces C{registerProducer} and
    C{unregisterProducer} on the socket transport (and removes them again),
    so that an application's producer takes the transport's one producer
    slot from the tracker; defeated, the tracker does not track.  Twisted
    has no public way to share a transport's producer slot: the clean
    alternative is a transport of tcpsc's own (as for TLS) whose producer
    slot knows about the tracker.
"""

from __future__ import annotations

import socket
from typing import Any

import OpenSSL
from OpenSSL import SSL, _util
from twisted import version as _twistedVersion
from twisted.internet import abstract, posixbase, tcp, udp
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol

__all__ = [
    "PRIVATE",
    "PRIVATE_NAMES",
    "PYOPENSSL_CHECKED",
    "TWISTED_CHECKED",
    "acceptOne",
    "appendableTransport",
    "bufferedBytes",
    "checkedRelease",
    "tcpEndpointArguments",
    "unsentBytes",
    "writeClosing",
    "writeNow",
    "writeToAll",
]

#: The Twisted releases (major versions, inclusive) whose private names
#: tcpsc was checked against.
TWISTED_CHECKED = (24, 26)
#: The same for pyOpenSSL.
PYOPENSSL_CHECKED = (24, 26)


def _major(version: object) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def checkedRelease(twisted: object = None, pyopenssl: object = None) -> bool:
    """
    Whether the installed (or the given) Twisted and pyOpenSSL releases are
    ones whose private names tcpsc was checked against.

    @param twisted: a Twisted major version, or C{None} for the installed one.
    @param pyopenssl: a pyOpenSSL version string, or C{None} for the
        installed one.
    """
    twistedMajor = _major(_twistedVersion.major if twisted is None else twisted)
    pyopensslMajor = _major(OpenSSL.__version__ if pyopenssl is None else pyopenssl)
    if twistedMajor is None or pyopensslMajor is None:
        return False
    low, high = TWISTED_CHECKED
    if not low <= twistedMajor <= high:
        return False
    low, high = PYOPENSSL_CHECKED
    return low <= pyopensslMajor <= high


#: Whether the fast paths may use private names.  Read each time a fast path
#: is chosen, never copied at import, so that tests can turn it off.
PRIVATE: bool = checkedRelease()

#: Every private attribute tcpsc uses: C{(description, owner, names)}, where
#: C{owner} is the class or module object the names are looked up on (on an
#: instance of the class, for attributes its constructor sets).  Names that
#: look public but are undocumented internals (a transport's C{dataBuffer},
#: a port's C{numberAccepts}) are listed too.
#: C{tests.test_compat} asserts that each exists in the installed releases.
PRIVATE_NAMES: list[tuple[str, Any, tuple[str, ...]]] = [
    (
        "Server.broadcast appends to a socket transport's buffer (writeToAll)",
        tcp.Server,
        ("_tempDataBuffer", "_tempDataLen", "_maybePauseProducer", "dataBuffer", "TLS"),
    ),
    (
        "a read's replies sent in the turn that read them (writeNow)",
        tcp.Server,
        ("_tempDataLen", "dataBuffer", "_writeDisconnecting", "_aborting", "writeSomeData", "TLS"),
    ),
    (
        "the socket transport whose write writeToAll stands for (appendableTransport)",
        abstract.FileDescriptor,
        ("_maybePauseProducer", "_isSendBufferFull"),
    ),
    (
        "the write of a socket transport that may start TLS (appendableTransport)",
        tcp,
        ("_TLSConnectionMixin",),
    ),
    (
        "tcpsc._accept._GuardedPort re-implements the accept loop of Twisted's port",
        tcp.Port,
        ("_buildAddr", "sessionno", "numberAccepts", "transport", "socket"),
    ),
    (
        "a worker of --workers serves its inherited socket with _GuardedPort "
        "(tcpsc._supervisor.AdoptedEndpoint; fallback: the reactor's adoptStreamPort)",
        tcp.Port,
        ("_fromListeningDescriptor",),
    ),
    (
        "tcpsc._datagram._SturdyPort extends Twisted's UDP port (its module is not to be "
        "used directly) and relies on the reactor telling a half-closeable descriptor of an "
        "error condition through readConnectionLost",
        udp.Port,
        ("doRead", "startReading", "getHandle", "connectionLost", "stopListening"),
    ),
    (
        "the reactor's handling of an error condition that _SturdyPort relies on",
        posixbase.PosixReactorBase,
        ("_disconnectSelectable",),
    ),
    (
        "the arguments of Twisted's TCP server endpoints (tcpEndpointArguments)",
        TCP4ServerEndpoint,
        ("_port", "_backlog", "_interface"),
    ),
    (
        "the arguments of Twisted's TCP server endpoints (tcpEndpointArguments)",
        TCP6ServerEndpoint,
        ("_port", "_backlog", "_interface"),
    ),
    (
        "the unsent bytes of a socket transport (unsentBytes, bufferedBytes)",
        tcp.Server,
        ("dataBuffer", "offset", "_tempDataLen"),
    ),
    (
        "a socket transport that half-closes once its buffer is written (writeClosing)",
        tcp.Server,
        ("_writeDisconnecting",),
    ),
    (
        "tcpsc._tlstransport.TLSTransport extends Twisted's TLS protocol",
        TLSMemoryBIOProtocol,
        (
            "_write",
            "_checkHandshakeStatus",
            "_flushSendBIO",
            "_bufferedWrite",
            "_tlsShutdownFinished",
            "_shutdownTLS",
            "_unbufferPendingWrites",
            "_lostTLSConnection",
            "_aborted",
            "_handshakeDone",
            "_producer",
            "_reason",
            "_tlsConnection",
            "_appSendBuffer",
        ),
    ),
    (
        "tcpsc._accept._GuardedPort accepts with the socket method behind the standard "
        "library's socket.accept, which converts the listening socket's family and type to "
        "enums for every connection (acceptOne; fallback: socket.accept)",
        socket.socket,
        ("_accept",),
    ),
    (
        "tcpsc._tlstransport.TLSTransportFactory reads the clock of Twisted's TLS factory",
        TLSMemoryBIOFactory,
        ("_clock",),
    ),
    (
        "the direct OpenSSL path of TLSTransport: a pyOpenSSL connection",
        SSL.Connection,
        ("_raise_ssl_error", "_ssl", "_into_ssl", "_from_ssl"),
    ),
    (
        "the direct OpenSSL path of TLSTransport: pyOpenSSL's cffi binding",
        _util,
        ("lib", "ffi"),
    ),
    (
        "the direct OpenSSL path of TLSTransport: the OpenSSL functions it calls, among them "
        "those that replace a connection's memory BIOs after the handshake",
        _util.lib,
        (
            "SSL_read",
            "SSL_write",
            "SSL_get_error",
            "SSL_set_bio",
            "BIO_read",
            "BIO_write",
            "BIO_new",
            "BIO_free",
            "BIO_s_mem",
        ),
    ),
]


# -- broadcast: appending to a socket transport's buffer ---------------------


def _appendable() -> type | None:
    """
    The socket transport class whose buffer L{writeToAll} may append to,
    or C{None} if this Twisted's transport is not the one this was
    written for (then every broadcast goes through C{write}).

    Twisted's C{write} costs about ten Python calls per connection (the TLS
    switch, the type check, the producer check, C{startWriting} and the
    reactor's registration check): for a broadcast, most of its time.  Once
    a transport holds data written since it last wrote to its socket
    (C{_tempDataLen} > 0), the rest is done already: only C{write} appends
    to that buffer, and it was connected and open for writing then, and
    registered with the reactor for writing, which only C{doWrite} undoes
    once the buffer is empty, or the end of the connection (after which the
    protocol is no longer ready and never gets here).  What is left of
    C{write} is appending to the buffer and pausing the producer (the
    connection's output tracker) when the buffer is over C{bufferSize},
    which L{writeToAll} does itself.
    """
    fileDescriptor = abstract.FileDescriptor
    server = tcp.Server
    switch = getattr(tcp, "_TLSConnectionMixin", None)
    try:
        expected = (
            server.write in (fileDescriptor.write, getattr(switch, "write", None))
            and server.TLS is False
            and server._maybePauseProducer is fileDescriptor._maybePauseProducer
            and server._isSendBufferFull is fileDescriptor._isSendBufferFull
            and server.doWrite is fileDescriptor.doWrite
            and server.stopWriting is fileDescriptor.stopWriting
        )
    except AttributeError:  # pragma: no cover - another Twisted
        return None
    return server if expected else None


#: See L{_appendable}; decided once, but used only while L{PRIVATE}.
_APPENDABLE: type | None = _appendable() if PRIVATE else None


def appendableTransport() -> type | None:
    """
    The socket transport class whose buffer L{writeToAll} appends to, or
    C{None}: the private path is off, or this Twisted's transport is not the
    one it was written for.
    """
    return _APPENDABLE if PRIVATE else None


def writeToAll(transports: list[Any], frame: bytes) -> None:
    """
    C{transport.write(frame)} for each transport; for one of the
    L{appendableTransport} that holds data written since it last wrote to
    its socket, only what is left of its C{write} (see L{_appendable}):
    append to its buffer, and pause its producer if the buffer is over
    C{bufferSize}.  A loop here rather than a call per transport: this is
    what a broadcast spends its time on.
    """
    # Only bytes may be appended: anything else goes to write, which
    # refuses it.
    appendable: Any = appendableTransport() if frame.__class__ is bytes else None
    if appendable is None:
        for transport in transports:
            transport.write(frame)
        return
    size = len(frame)
    for transport in transports:
        if transport.__class__ is appendable and transport._tempDataLen and not transport.TLS:
            transport._tempDataBuffer.append(frame)
            transport._tempDataLen += size
            # A producer paused already (a congested connection's) is not
            # paused again for every frame.
            if (
                not transport.producerPaused
                and transport._tempDataLen + len(transport.dataBuffer) > transport.bufferSize
            ):
                transport._maybePauseProducer()
        else:
            transport.write(frame)


def writeNow(transport: Any, data: bytes) -> None:
    """
    C{transport.write(data)}, sending C{data} to the socket at once when
    C{transport} is an L{appendableTransport} that holds nothing unsent.

    Twisted's C{write} never sends: it buffers, asks the reactor to watch
    the socket for writability, and the next reactor turn sends and stops
    watching.  For a reply to a read that is a reactor turn, an
    C{epoll_wait} and two C{epoll_ctl} calls per read, and on the round
    trip of one message in flight it is much of the server's time.  A
    transport whose buffer is empty has nothing that must go first, so
    what its socket takes now is sent now, through the transport's own
    C{writeSomeData} (which stops at C{SEND_LIMIT} and turns a full socket
    into 0 and a lost connection into an exception); whatever is left, or
    all of it when the socket is full or the connection lost, goes to
    C{write} as before, which buffers it, pauses the producer when over
    C{bufferSize} and lets the reactor find the error.  Not while the
    transport is closing (C{loseConnection} or C{loseWriteConnection}):
    Twisted's close path then decides when the socket is done; and never
    after C{abortConnection}, whose transport drops what it holds.

    Fallback (the private path off, another transport, or not C{bytes}):
    C{write}.
    """
    base: Any = transport
    appendable: Any = _APPENDABLE
    if (
        base.__class__ is appendable
        and PRIVATE
        and data.__class__ is bytes
        and not base._tempDataLen
        and not base.dataBuffer
        and base.connected
        and not base.disconnecting
        and not base._writeDisconnecting
        and not base._aborting
        and not base.TLS
    ):
        sent = base.writeSomeData(data)
        if sent.__class__ is int and sent > 0:
            if sent == len(data):
                return
            data = data[sent:]
    base.write(data)


# -- listening: Twisted's TCP server endpoints -------------------------------


def tcpEndpointArguments(endpoint: object) -> tuple[int, int, str] | None:
    """
    The port number, listen queue and interface of one of Twisted's TCP
    server endpoints, to listen on them with another port class; C{None}
    for any other endpoint, or when the private path is off.
    """
    if not (PRIVATE and isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint))):
        return None
    try:
        return endpoint._port, endpoint._backlog, endpoint._interface
    except AttributeError:  # pragma: no cover - another Twisted
        return None


# -- the buffer of a socket transport ----------------------------------------


def acceptOne(listening: Any, kind: tuple[int, int, int] | None) -> tuple[socket.socket, Any]:
    """
    C{listening.accept()}, without what it costs beyond the system call for
    every connection: the standard library's converts the family and type
    of C{listening} to enums each time to make the new socket; here the
    socket is made from C{kind}, the family, type and protocol numbers of
    C{listening}, taken once.  Otherwise the same socket, made the same
    way (blocking as C{socket.accept} makes it).  With C{kind} C{None}
    (C{listening} is not a C{socket.socket}), its own C{accept()}.

    @raise OSError: as C{accept} does (C{EAGAIN} when none is waiting).
    """
    if not PRIVATE or kind is None:
        return listening.accept()
    fd, address = listening._accept()
    family, type_, proto = kind
    accepted = socket.socket(family, type_, proto, fileno=fd)
    if socket.getdefaulttimeout() is None and listening.gettimeout():
        accepted.setblocking(True)
    return accepted, address


def unsentBytes(transport: object) -> int | None:
    """
    How many bytes a socket transport holds that it did not write to its
    socket yet; C{None} if that cannot be told (not a socket transport of
    Twisted's, or the private path is off).
    """
    if not PRIVATE:
        return None
    try:
        base: Any = transport
        return len(base.dataBuffer) - base.offset + base._tempDataLen
    except (AttributeError, TypeError):
        return None


def bufferedBytes(transport: object) -> int | None:
    """
    How many bytes a socket transport's buffers hold: what it did not write
    to its socket yet, and what it wrote already from the string it is
    writing (Twisted keeps that string whole until less than C{SEND_LIMIT}
    of it is left, so the bytes written stay in memory meanwhile); C{None}
    if that cannot be told (see L{unsentBytes}).
    """
    if not PRIVATE:
        return None
    try:
        base: Any = transport
        return len(base.dataBuffer) + base._tempDataLen
    except (AttributeError, TypeError):
        return None


def writeClosing(transport: object) -> bool | None:
    """
    Whether a socket transport was asked to close its write half
    (C{loseWriteConnection}) and will once its buffer is written; C{None}
    if that cannot be told (the private path is off).

    A transport whose buffer empties resumes its paused producer I{instead}
    of half-closing, so a producer that is resumed while this is true must
    unregister, and make the transport write again, for the half-close to
    happen.  When this cannot be told, a producer that is resumed makes the
    transport look at its buffer again (C{startWriting}; one call per
    congestion episode), which half-closes it if it was asked to, since the
    producer is no longer paused then.
    """
    if not PRIVATE:
        return None
    return bool(getattr(transport, "_writeDisconnecting", False))
