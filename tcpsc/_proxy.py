# -*- test-case-name: tests.test_proxy -*-
"""
The PROXY protocol (versions 1 and 2) on a server's port behind a load
balancer: the client's real address, read from the header the load balancer
sends first, before anything of the client's, TLS included.

A port given as C{haproxy:DESCRIPTION} (Twisted's own prefix for it, as in
C{haproxy:tcp:8081}) listens on C{DESCRIPTION} and expects every connection
to start with a PROXY header.  L{ProxyHeaderReceiver} reads it, and then
builds the connection with the client's address: the server's limits, log
lines, C{clientAddress} and everything else that asks a transport's
C{getPeer} see the client, not the load balancer.  A connection whose first
bytes are not a valid header, that closes before its header is complete, or
that does not complete it in time, is refused and logged once per kind of
fault (L{tcpsc._events}).

Twisted's own wrapper (C{twisted.protocols.haproxy}, used by
C{serverFromString} for the same prefix) is not used: its factory builds the
wrapped protocol with the load balancer's address, before the header, so a
limit per peer address would count the load balancer; it drops a connection
whose first read is shorter than the start of a header (a header split over
several TCP segments); it sets no bound on the time a header may take; it
logs nothing; and a malformed port number in a version 1 header raises out
of its C{dataReceived}.  Its parsers are private names.  This module is the
protocol as the specification (HAProxy's C{proxy-protocol.txt}) writes it,
on public names only.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol, ITransport
from twisted.internet.protocol import Protocol
from twisted.logger import LogLevel
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import alsoProvides, directlyProvides, providedBy

from ._addresses import describeAddress
from ._events import plural

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
    from twisted.python.failure import Failure

    from ._events import EventSummary

__all__ = [
    "PREFIX",
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxyHeaderReceiver",
    "parseProxyHeader",
    "proxiedDescription",
]

#: The prefix of a port description that expects PROXY headers: Twisted's.
PREFIX = "haproxy:"

#: The longest version 1 header, CRLF included (the specification's 107).
V1_MAX_LENGTH = 107
_V1_START = b"PROXY "

#: The twelve bytes a version 2 header starts with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = 16

#: The kind of the events recorded (see L{tcpsc._events.KINDS}).
EVENT_KIND = "proxyHeader"


def proxiedDescription(port: object) -> Any:
    """
    What to listen on if C{port} is a C{haproxy:} description
    (C{"haproxy:tcp:8081"} gives C{"tcp:8081"}), or an endpoint that says
    its connections start with a PROXY header (its C{proxiedEndpoint}
    attribute, the endpoint to listen on: a worker's adopted socket of a
    C{haproxy:} port); else C{None}.
    """
    if isinstance(port, str) and port[: len(PREFIX)].lower() == PREFIX:
        return port[len(PREFIX) :]
    return getattr(port, "proxiedEndpoint", None)


class ProxyHeaderError(Exception):
    """
    What a connection sent is not a valid PROXY header.

    @ivar kind: the fault in a few fixed words, the same for every
        connection with this fault (log summaries group by it); the
        exception's message says it in full, with what was received.
    """

    def __init__(self, kind: str, message: str | None = None) -> None:
        super().__init__(message or kind)
        self.kind = kind


@dataclass(frozen=True)
class ProxyHeader:
    """
    A complete PROXY header.

    @ivar version: 1 or 2.
    @ivar source: the client's address, or C{None} when the header gives
        none (version 1 C{UNKNOWN}, version 2 C{LOCAL} or C{UNSPEC}: a
        connection of the load balancer's own, such as a health check), in
        which case the connection's own addresses stand.
    @ivar destination: the address the client connected to, or C{None}
        likewise.
    @ivar length: how many bytes the header took.
    """

    version: int
    source: IPv4Address | IPv6Address | None
    destination: IPv4Address | IPv6Address | None
    length: int


def _firstBytes(data: bytes | bytearray) -> str:
    """
    What a peer sent, shortened, for a log line.
    """
    shown = bytes(data[:24])
    return repr(shown) + ("..." if len(data) > 24 else "")


def parseProxyHeader(data: bytes | bytearray) -> ProxyHeader | None:
    """
    Parse the PROXY header at the start of C{data}.

    @return: the header, or C{None} if C{data} is the start of one and more
        bytes are needed.
    @raise ProxyHeaderError: C{data} does not start with a valid header.
    """
    if not data:
        return None
    if data[0] == V2_SIGNATURE[0]:
        return _parseV2(data)
    if data[0] == _V1_START[0]:
        return _parseV1(data)
    if data[:2] == b"\x16\x03":
        raise ProxyHeaderError(
            "a TLS ClientHello instead of a PROXY header",
            "it sent a TLS ClientHello instead of a PROXY protocol header (a client "
            "connecting directly, or a load balancer that does not send the PROXY protocol)",
        )
    raise ProxyHeaderError(
        "not a PROXY header",
        f"its first bytes are not a PROXY protocol header: {_firstBytes(data)}",
    )


def _parseV1(data: bytes | bytearray) -> ProxyHeader | None:
    start = bytes(data[: len(_V1_START)])
    if not _V1_START.startswith(start):
        raise ProxyHeaderError(
            "not a PROXY header",
            f"its first bytes are not a PROXY protocol header: {_firstBytes(data)}",
        )
    end = data.find(b"\n", 0, V1_MAX_LENGTH)
    if end < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyHeaderError(
                "PROXY v1 line too long",
                f"its PROXY v1 header has no line end within {V1_MAX_LENGTH} bytes: "
                f"{_firstBytes(data)}",
            )
        return None
    if end == 0 or data[end - 1] != 0x0D:
        raise ProxyHeaderError(
            "malformed PROXY v1 line",
            f"its PROXY v1 header line does not end with CRLF: {_firstBytes(data[: end + 1])}",
        )
    line = bytes(data[: end - 1])

    def malformed(why: str) -> ProxyHeaderError:
        return ProxyHeaderError("malformed PROXY v1 line", f"its PROXY v1 header {why}: {line!r}")

    parts = line.split(b" ")
    if len(parts) < 2:
        raise malformed("names no protocol")
    protocol = parts[1]
    if protocol == b"UNKNOWN":
        return ProxyHeader(1, None, None, end + 1)
    if protocol not in (b"TCP4", b"TCP6"):
        raise malformed("names a protocol other than TCP4, TCP6 or UNKNOWN")
    if len(parts) != 6:
        raise malformed("does not have two addresses and two ports, separated by single spaces")
    family: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address] = (
        ipaddress.IPv4Address if protocol == b"TCP4" else ipaddress.IPv6Address
    )
    try:
        source, destination = (family(part.decode("ascii")) for part in parts[2:4])
    except ValueError:
        raise malformed(f"has an address that is not {protocol.decode()}") from None
    ports = []
    for part in parts[4:6]:
        if not (part.isdigit() and len(part) <= 5 and int(part) <= 65535):
            raise malformed("has a port that is not a number in 0-65535")
        ports.append(int(part))
    return ProxyHeader(
        1,
        _address(str(source), ports[0]),
        _address(str(destination), ports[1]),
        end + 1,
    )


def _address(host: str, port: int) -> IPv4Address | IPv6Address:
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


def _parseV2(data: bytes | bytearray) -> ProxyHeader | None:
    if not V2_SIGNATURE.startswith(bytes(data[: len(V2_SIGNATURE)])):
        raise ProxyHeaderError(
            "not a PROXY header",
            f"its first bytes are not a PROXY protocol header: {_firstBytes(data)}",
        )
    if len(data) < _V2_FIXED:
        return None
    versionCommand, familyProtocol, length = struct.unpack_from("!BBH", data, 12)
    if versionCommand >> 4 != 2:
        raise ProxyHeaderError(
            "unsupported PROXY version",
            f"its PROXY v2 header has version {versionCommand >> 4}, not 2",
        )
    command = versionCommand & 0x0F
    if command not in (0, 1):
        raise ProxyHeaderError(
            "unknown PROXY v2 command",
            f"its PROXY v2 header has the unknown command {command} (0 LOCAL and 1 PROXY "
            "are defined)",
        )
    total = _V2_FIXED + length
    if len(data) < total:
        return None
    if command == 0:
        # LOCAL: a connection of the load balancer's own (a health check);
        # the address block, whatever it holds, is skipped.
        return ProxyHeader(2, None, None, total)
    family, transport = familyProtocol >> 4, familyProtocol & 0x0F
    if family == 0:
        # UNSPEC: the connection's own addresses stand.
        return ProxyHeader(2, None, None, total)
    if family not in (1, 2):
        raise ProxyHeaderError(
            "unsupported PROXY v2 address family",
            "its PROXY v2 header relays a "
            + ("UNIX socket" if family == 3 else f"family {family}")
            + " connection; only TCP over IPv4 and IPv6 is served",
        )
    if transport != 1:
        raise ProxyHeaderError(
            "PROXY v2 not for a stream",
            f"its PROXY v2 header relays a "
            f"{'datagram' if transport == 2 else f'protocol {transport}'} connection, "
            "not a TCP stream",
        )
    size = 4 if family == 1 else 16
    if length < 2 * size + 4:
        raise ProxyHeaderError(
            "PROXY v2 addresses missing",
            f"its PROXY v2 header is {length} bytes long after its first 16, too short "
            f"for two IPv{4 if family == 1 else 6} addresses and two ports",
        )
    block = bytes(data[_V2_FIXED : _V2_FIXED + 2 * size + 4])
    factory = ipaddress.IPv4Address if family == 1 else ipaddress.IPv6Address
    source = factory(block[:size])
    destination = factory(block[size : 2 * size])
    sourcePort, destinationPort = struct.unpack_from("!HH", block, 2 * size)
    return ProxyHeader(
        2,
        _address(str(source), sourcePort),
        _address(str(destination), destinationPort),
        total,
    )


class ProxyHeaderReceiver(ProtocolWrapper):
    """
    The protocol of a connection accepted on a PROXY-protocol port: reads
    the header, then becomes the transport of the connection's own protocol
    (built only then, by C{connect}, with the client's address), as
    Twisted's protocol wrappers do: its C{getPeer} is the client's address
    and its C{getHost} the address the client connected to, as the header
    gives them.

    The header must be complete within C{timeout} seconds of the accept, or
    the connection is closed; a header that is invalid, and a connection
    that closes before its header is complete, are refused.  Each is
    recorded in C{events} (kind C{"proxyHeader"}), naming the load
    balancer's address (the client's is not known) and why.
    """

    #: The socket's transport.
    transport: Any

    def __init__(
        self,
        clock: IReactorTime,
        timeout: float,
        events: EventSummary,
        connect: Callable[[IAddress, IAddress, bool], IProtocol | None],
        finished: Callable[[ProxyHeaderReceiver], object],
        logPrefix: str = "PROXY",
    ) -> None:
        """
        @param clock: the reactor of the timeout.
        @param timeout: seconds the header may take from the accept.
        @param events: where refusals are recorded.
        @param connect: called with the client's address, the address it
            connected to, and whether the connection is the load
            balancer's own (L{balancerOwn}) once the header is complete:
            returns the
            connection's protocol, or C{None} to refuse the connection (it
            is closed at once; C{connect} logs why).
        @param finished: called once, when the header was read or the
            connection was refused or lost before it was.
        """
        self.wrappedProtocol: Any = None
        self.factory: Any = None
        self._clock = clock
        self._timeout = timeout
        self._events = events
        self._connect = connect
        self._finished: Callable[[ProxyHeaderReceiver], object] | None = finished
        self._logPrefix = logPrefix
        self._buffer = bytearray()
        self._header: ProxyHeader | None = None
        self._timer: IDelayedCall | None = None
        # Set once the connection was refused, or closed by the server.
        self._closed = False

    def logPrefix(self) -> str:
        return self._logPrefix

    @property
    def balancerOwn(self) -> bool:
        """
        Whether the header says that the connection is the load balancer's
        own, not a client's: it names no client (version 2 C{LOCAL}, version
        1 C{UNKNOWN}, C{UNSPEC}), or names as the client the very address
        the connection comes from (HAProxy's version 1 health checks).
        """
        header = self._header
        if header is None:
            return False
        source = header.source
        if source is None:
            return True
        peer = self.transport.getPeer()
        return bool(source.host == getattr(peer, "host", None) and source.port == peer.port)

    # -- as a transport ---------------------------------------------------

    @property
    def disconnecting(self) -> bool:  # type: ignore[override]
        transport = self.transport
        return transport is None or bool(transport.disconnecting)

    def loseConnection(self) -> None:
        self.transport.loseConnection()

    def getPeer(self) -> IAddress:
        header = self._header
        if header is not None and header.source is not None:
            return header.source
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        header = self._header
        if header is not None and header.destination is not None:
            return header.destination
        return self.transport.getHost()

    # -- as a protocol ----------------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)

    def connectionMade(self) -> None:
        self._timer = self._clock.callLater(self._timeout, self._timedOut)

    def dataReceived(self, data: bytes) -> None:
        wrapped = self.wrappedProtocol
        if wrapped is not None:
            wrapped.dataReceived(data)
            return
        if self._closed:
            return
        buffer = self._buffer
        buffer += data
        try:
            header = parseProxyHeader(buffer)
        except ProxyHeaderError as e:
            self._refuse(e.kind, str(e))
            return
        if header is None:
            return
        rest = bytes(buffer[header.length :])
        self._buffer = bytearray()
        self._header = header
        self._done()
        transport = self.transport
        protocol = self._connect(self.getPeer(), self.getHost(), self.balancerOwn)
        if protocol is None:
            # Refused (and logged) by connect: a limit.
            self._closed = True
            transport.abortConnection()
            return
        self.wrappedProtocol = protocol
        # What the protocol writes goes to the socket without a call of
        # this wrapper's in between (as Twisted's TLS transport does).
        self.write = transport.write  # type: ignore[method-assign]
        self.writeSequence = transport.writeSequence  # type: ignore[method-assign]
        if IHalfCloseableProtocol.providedBy(protocol):
            alsoProvides(self, IHalfCloseableProtocol)
        protocol.makeConnection(cast(ITransport, self))
        if rest and self.wrappedProtocol is not None and not transport.disconnected:
            self.wrappedProtocol.dataReceived(rest)

    def readConnectionLost(self) -> None:
        # Provided only once the connection's protocol provides it.
        self.wrappedProtocol.readConnectionLost()

    def writeConnectionLost(self) -> None:
        self.wrappedProtocol.writeConnectionLost()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        wrapped, self.wrappedProtocol = self.wrappedProtocol, None
        if wrapped is not None:
            wrapped.connectionLost(reason)
            return
        if not self._closed:
            received = len(self._buffer)
            self._record(
                "closed before its PROXY header",
                "it closed "
                + (
                    f"after {plural(received, 'byte')} of a PROXY protocol header: "
                    f"{_firstBytes(self._buffer)}"
                    if received
                    else "without sending a PROXY protocol header"
                ),
                LogLevel.info,
                "Connection from {peer} on a PROXY-protocol port closed before it was "
                "established: {why}",
            )
        self._done()

    # -- refusals ---------------------------------------------------------

    def close(self) -> None:
        """
        Close the connection without recording a refusal: the server stops.
        """
        if self.wrappedProtocol is not None or self._closed:
            return
        self._closed = True
        self._done()
        self.transport.abortConnection()

    def _timedOut(self) -> None:
        self._timer = None
        if self._header is not None or self._closed:
            return
        received = len(self._buffer)
        self._refuse(
            "PROXY header not complete in time",
            f"no complete PROXY protocol header within {self._timeout:g} s"
            + (
                f" ({plural(received, 'byte')} of one: {_firstBytes(self._buffer)})"
                if received
                else " (nothing received)"
            ),
        )

    def _refuse(self, kind: str, why: str) -> None:
        self._closed = True
        self._record(kind, why)
        self._done()
        # Nothing is owed to a peer that did not speak the protocol.
        self.transport.abortConnection()

    def _record(
        self,
        kind: str,
        why: str,
        level: LogLevel = LogLevel.warn,
        format: str = "Refused the connection from {peer} on a PROXY-protocol port: {why}",
    ) -> None:
        self._events.record(
            EVENT_KIND,
            format,
            level,
            detail=kind,
            peer=describeAddress(self.transport.getPeer()),
            why=why,
            reason=EVENT_KIND,
        )

    def _done(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        finished, self._finished = self._finished, None
        if finished is not None:
            finished(self)
