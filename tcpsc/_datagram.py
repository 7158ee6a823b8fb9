# -*- test-case-name: tests.test_datagram -*-
"""
Datagrams (UDP): a server that learns its peers from their datagrams, a
client on a connected UDP socket, and the framing of messages in datagrams
that both share with the multicast classes.

A datagram is one message by default (C{delimiter=None}).  With a delimiter,
a datagram holds one or more delimited messages and a message never spans
datagrams: the end of a datagram ends its last message, delimiter or not.
Every datagram is bounded (C{maxMessageLength}, 1472 bytes by default): one
that would be longer is not sent, one received longer is dropped whole and
counted, never delivered cut.

L{DatagramServer} gives each new source address an id (positive, counted
up, never reused: the kind of id L{tcpsc.Server} gives its connections, from
a counter of its own) and keeps at most C{maxPeers} peers, forgetting the
one heard from least recently first, and those not heard from within
C{peerIdleTimeout}: a flood of spoofed source addresses costs a bounded
amount of memory.  The peers are kept in one C{OrderedDict} by id, in the
order they were last heard from, so that hearing from a peer, forgetting
the oldest and finding who was heard from within a window are each O(1) per
peer; the same structure drives expiry with a single timer, that of the
oldest peer.

Loss is counted, not hidden (L{DatagramServer.eventCounts}), and logged
through L{EventSummary} like the refusals of the TCP server.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, ClassVar, Final

from twisted.internet import udp
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.internet.error import CannotListenError, MessageLengthError
from twisted.internet.interfaces import (
    IHalfCloseableDescriptor,
    IResolutionReceiver,
    ISystemHandle,
)
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger, LogLevel
from zope.interface import implementer

from . import _compat
from ._addresses import describeAddress
from ._errors import ConnectError, ListenError, PortError, ServerError, StartError
from ._events import EventSummary
from ._reactor import defaultReactor
from ._settings import FROM_PROTOCOL, Settings, settingsFrom

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IDelayedCall, IListeningPort
    from twisted.python.failure import Failure

__all__ = [
    "DEFAULT_MAX_DATAGRAM",
    "MAX_DATAGRAM_IPV4",
    "MAX_DATAGRAM_IPV6",
    "DatagramClient",
    "DatagramFraming",
    "DatagramPeer",
    "DatagramServer",
    "writeDatagram",
    "writeFailed",
]

#: The default bound of a datagram, in bytes: the payload of one Ethernet
#: frame (1500 bytes) after the IPv4 and UDP headers, so that a datagram is
#: never fragmented on the usual networks.
DEFAULT_MAX_DATAGRAM: Final = 1472

#: The largest payload of a UDP datagram over IPv4 (65,535 less the IPv4
#: and UDP headers).
MAX_DATAGRAM_IPV4: Final = 65_507

#: The largest payload of a UDP datagram over IPv6 (65,535 less the UDP
#: header; without jumbograms).
MAX_DATAGRAM_IPV6: Final = 65_527

#: The errors of a send that found the socket's send buffer (or the
#: interface's queue) full: the datagram is dropped.
_SEND_BUFFER_FULL: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})


def _asBytes(value: bytes | str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


class DatagramFraming:
    """
    How messages are put in datagrams and taken out of them: one message
    per datagram without a delimiter; with one, delimited messages that
    never span datagrams.

    @ivar delimiter: the bytes that end each message, or C{None}.
    @ivar maxMessageLength: the longest datagram sent or received, in bytes.
    @ivar messageAppend: bytes added to every message sent, before the
        delimiter (without a delimiter: at the end of the datagram).
    @ivar receiveSize: the buffer to receive a datagram into: one byte more
        than the bound, so that a datagram longer than the bound is seen to
        be (the system cuts a datagram to the buffer it is read into).
    @ivar plain: whether a message is sent as it is: no delimiter, nothing
        appended.
    """

    __slots__ = (
        "_suffix",
        "delimiter",
        "maxMessageLength",
        "messageAppend",
        "plain",
        "receiveSize",
    )

    def __init__(
        self,
        delimiter: bytes | str | None = None,
        maxMessageLength: int = DEFAULT_MAX_DATAGRAM,
        messageAppend: bytes | str = b"",
    ) -> None:
        """
        @raise ValueError: an empty delimiter, an append that contains the
            delimiter, or a bound that is not an int from 1 to 65,527
            (L{MAX_DATAGRAM_IPV6}).
        """
        if delimiter is not None:
            delimiter = _asBytes(delimiter)
            if not delimiter:
                raise ValueError("delimiter must be one or more bytes or None, not b''")
        append = _asBytes(messageAppend)
        if delimiter is not None and delimiter in append:
            raise ValueError(f"messageAppend {append!r} contains the delimiter {delimiter!r}")
        if (
            isinstance(maxMessageLength, bool)
            or not isinstance(maxMessageLength, int)
            or not 1 <= maxMessageLength <= MAX_DATAGRAM_IPV6
        ):
            raise ValueError(
                f"maxMessageLength must be an int from 1 to {MAX_DATAGRAM_IPV6:,} (the largest "
                f"UDP datagram, over IPv6; {MAX_DATAGRAM_IPV4:,} over IPv4), not "
                f"{maxMessageLength!r}"
            )
        self.delimiter = delimiter
        self.maxMessageLength = maxMessageLength
        self.messageAppend = append
        self.receiveSize = maxMessageLength + 1
        self._suffix = append + (delimiter or b"")
        self.plain = not self._suffix

    def checkFamily(self, ipv6: bool) -> None:
        """
        Check that the bound fits a datagram of the address family.

        @raise ValueError: over IPv4, a bound above L{MAX_DATAGRAM_IPV4}.
        """
        if not ipv6 and self.maxMessageLength > MAX_DATAGRAM_IPV4:
            raise ValueError(
                f"maxMessageLength {self.maxMessageLength:,} is more than an IPv4 UDP "
                f"datagram holds ({MAX_DATAGRAM_IPV4:,} bytes)"
            )

    def frame(self, message: bytes | str) -> bytes | None:
        """
        The datagram that carries one message: C{message + messageAppend +
        delimiter}.

        @return: C{None} when it cannot be sent: longer than
            C{maxMessageLength}, or, with a delimiter, the message contains
            it (or would form one with what follows it).
        """
        if message.__class__ is not bytes:
            message = _asBytes(message)
        datagram = message + self._suffix if self._suffix else message
        if len(datagram) > self.maxMessageLength:
            return None
        delimiter = self.delimiter
        if delimiter is not None:
            if delimiter in message:
                return None
            if len(delimiter) > 1 and datagram.find(delimiter) != len(datagram) - len(delimiter):
                return None
        return datagram

    def messages(self, datagram: bytes) -> list[bytes]:
        """
        The messages of a received datagram (within the bound): the
        datagram itself without a delimiter; with one, the parts it
        separates, the last one ended by the datagram's end if not by a
        delimiter (an empty datagram holds none).
        """
        delimiter = self.delimiter
        if delimiter is None:
            return [datagram]
        messages = datagram.split(delimiter)
        if not messages[-1]:
            messages.pop()
        return messages

    def describe(self) -> str:
        """
        The framing in words, for log lines.
        """
        if self.delimiter is None:
            return "one message per datagram"
        return f"messages ended by {self.delimiter!r}"


def writeDatagram(
    transport: Any, datagram: bytes, address: tuple[str, int] | None, events: EventSummary
) -> bool:
    """
    Write one datagram, counting and logging a failure instead of raising
    it.

    @param address: where to, or C{None} on a connected socket.
    @return: whether the system took it: C{False} when the send buffer was
        full (C{ENOBUFS}, C{EAGAIN}: counted as C{"sendBufferFull"}) or the
        send failed otherwise (counted as C{"sendFailed"}, the error in
        words).
    """
    try:
        transport.write(datagram, address)
    except (OSError, MessageLengthError) as e:
        return writeFailed(e, datagram, address, events)
    return True


def writeFailed(
    e: OSError | MessageLengthError,
    datagram: bytes,
    address: tuple[str, int] | None,
    events: EventSummary,
) -> bool:
    """
    Count and log a datagram the system refused to send (see
    L{writeDatagram}).

    @return: C{False}.
    """
    if isinstance(e, OSError):
        where = "the connected peer" if address is None else describeAddress(_hostPort(address))
        if e.errno in _SEND_BUFFER_FULL:
            events.record(
                "sendBufferFull",
                "Dropped a datagram of {size} bytes to {peer}: the socket's send buffer is "
                "full ({error})",
                size=len(datagram),
                peer=where,
                error=os.strerror(e.errno) if e.errno else str(e),
            )
            return False
        reason = os.strerror(e.errno) if e.errno else str(e)
        events.record(
            "sendFailed",
            "Could not send a datagram of {size} bytes to {peer}: {error}",
            detail=reason,
            size=len(datagram),
            peer=where,
            error=reason,
        )
        return False
    reason = "message too long for the path (EMSGSIZE)"
    events.record(
        "sendFailed",
        "Could not send a datagram of {size} bytes: {error}",
        detail=reason,
        size=len(datagram),
        error=reason,
    )
    return False


class _HostPort:
    """
    An address with C{host} and C{port}, for L{describeAddress}.
    """

    __slots__ = ("host", "port")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port


def _hostPort(address: tuple[str, int]) -> Any:
    return _HostPort(address[0], address[1])


class DatagramPeer:
    """
    One remote address of a L{DatagramServer} (or the server of a
    L{DatagramClient}): subclass it as you would L{tcpsc.MessageProtocol};
    one instance per peer, made by the server when the first datagram comes
    from a new address (by the client when it connects).

    The class attributes C{delimiter}, C{maxMessageLength} and
    C{messageAppend} are the framing, as on L{tcpsc.MessageProtocol}; a
    server or client given other values makes the peers of a subclass that
    has those.

    The per-peer state is kept small (C{__slots__}): a subclass that adds no
    C{__slots__} of its own gets a C{__dict__} for its attributes as usual.

    @ivar peerId: the peer's id, set before L{peerReady}.
    @ivar address: the peer's C{(host, port)}, IPv4 or IPv6.
    """

    __slots__ = ("_lastHeard", "_owner", "_via", "address", "peerId")

    delimiter: ClassVar[bytes | None] = None
    maxMessageLength: ClassVar[int] = DEFAULT_MAX_DATAGRAM
    messageAppend: ClassVar[bytes] = b""

    peerId: int
    address: tuple[str, int]

    def __init__(self) -> None:
        self._owner: _Owner | None = None
        self._via: _Port | None = None
        self._lastHeard = 0.0

    def __repr__(self) -> str:
        peerId = getattr(self, "peerId", None)
        address = getattr(self, "address", None)
        where = describeAddress(_hostPort(address)) if address else "no address"
        return f"<{type(self).__name__} {peerId} {where}>"

    @property
    def transport(self) -> Any:
        """
        The UDP port (Twisted's C{IUDPTransport}) the peer's datagrams come
        through, or C{None} once the peer is forgotten.
        """
        via = self._via
        return via.transport if via is not None else None

    def peerReady(self) -> None:
        """
        Called once, when the first datagram from the peer arrived (before
        its messages are delivered); on a client, when it is connected.
        """

    def messageReceived(self, message: bytes) -> None:
        """
        Called with each message received from the peer, in the order they
        came.  The default calls the owner's C{onMessage}.
        """
        owner = self._owner
        if owner is not None:
            owner._onMessage(self, message)

    def messageTooLong(self, length: int) -> None:
        """
        Called for each datagram from the peer that was longer than
        C{maxMessageLength}: it was dropped whole (it is counted in the
        owner's C{eventCounts["datagramTooLong"]} and logged whatever this
        does).

        @param length: how much of it was read: more than
            C{maxMessageLength}, at most one byte more (the rest of it is
            not read).
        """

    def peerExpired(self) -> None:
        """
        Called once when the peer is forgotten: nothing heard from it within
        the idle timeout, the table full and the peer the one heard from
        least recently, or the server stopping (the client disconnecting).
        On a server, L{sendMessage} still works in this call (a goodbye), and
        no more after it.
        """

    def connectionRefused(self) -> None:
        """
        A client's peer only: the system reported that a datagram sent to
        the peer was refused (an ICMP port unreachable: nothing listens at
        its address).  The client stays connected, and counts it in
        C{eventCounts["refused"]}.
        """

    def sendMessage(self, message: bytes | str) -> bool:
        """
        Send one message to the peer: a datagram of C{message +
        messageAppend + delimiter}.

        With a delimiter, the replies sent to a peer while the messages of
        one of its datagrams are delivered are put together and leave in as
        few datagrams as the bound allows once they all are: C{True} then
        means the message was taken into such a datagram, and a refusal of
        the system to send that datagram is counted (see C{eventCounts}).

        @param message: bytes, or text to be encoded as UTF-8.
        @return: C{True} if it was handed to the system (which does not mean
            it will arrive); C{False}, with nothing sent, if it does not fit
            in C{maxMessageLength}, contains the delimiter, the socket's
            send buffer is full (or, on a client, a refusal of an earlier
            datagram was still pending), or the peer is forgotten.
        """
        owner = self._owner
        if owner is None:
            return False
        framing = owner._framing
        if message.__class__ is bytes and framing.plain:
            # One message per datagram, nothing appended: the common case,
            # kept short.
            if len(message) > framing.maxMessageLength:
                return False
            return owner._write(self, message)
        return owner._sendMessage(self, message)


class _Owner:
    """
    What L{DatagramServer} and L{DatagramClient} share: the framing, the
    log summary, and sending to a peer.
    """

    log: ClassVar[Logger]
    _framing: DatagramFraming
    _events: EventSummary
    # The peer whose datagram is being delivered, when replies to it are
    # put together (with a delimiter), and those replies.
    _replyTo: DatagramPeer | None = None
    _replies: list[bytes]
    _repliesSize = 0

    def _onMessage(self, peer: DatagramPeer, message: bytes) -> None:
        raise NotImplementedError()

    def _sendMessage(self, peer: DatagramPeer, message: bytes | str) -> bool:
        framing = self._framing
        if message.__class__ is bytes and framing.plain:
            # One message per datagram, nothing appended: the common case,
            # kept short.
            if len(message) > framing.maxMessageLength:
                return False
            return self._write(peer, message)
        datagram = framing.frame(message)
        if datagram is None:
            return False
        if peer is self._replyTo:
            size = self._repliesSize + len(datagram)
            if size > self._framing.maxMessageLength:
                self._flushReplies()
                size = len(datagram)
            self._replies.append(datagram)
            self._repliesSize = size
            return True
        return self._write(peer, datagram)

    def _write(self, peer: DatagramPeer, datagram: bytes) -> bool:
        via = peer._via
        if via is None:
            return False
        return writeDatagram(via.transport, datagram, via.destination(peer), self._events)

    def _flushReplies(self) -> None:
        peer = self._replyTo
        if peer is None or not self._replies:
            return
        replies = self._replies
        self._replies = []
        self._repliesSize = 0
        self._write(peer, b"".join(replies))

    def _deliver(self, peer: DatagramPeer, datagram: bytes) -> None:
        """
        Deliver the messages of a datagram (within the bound) to its peer.
        With a delimiter, the replies the peer is sent meanwhile go out
        together, in as few datagrams as the bound allows, once the
        datagram's messages are delivered.
        """
        framing = self._framing
        if framing.delimiter is None:
            peer.messageReceived(datagram)
            return
        self._replyTo = peer
        self._replies = []
        self._repliesSize = 0
        try:
            for message in framing.messages(datagram):
                if peer._owner is None:
                    break
                peer.messageReceived(message)
        finally:
            self._flushReplies()
            self._replyTo = None

    def _tooLong(self, peer: DatagramPeer | None, length: int, address: tuple[str, int]) -> None:
        self._events.record(
            "datagramTooLong",
            "Dropped a datagram of more than {maxMessageLength} bytes from {peer}: longer "
            "than maxMessageLength",
            peer=describeAddress(_hostPort(address)),
            peerId=peer.peerId if peer is not None else None,
            length=length,
            maxMessageLength=self._framing.maxMessageLength,
        )
        if peer is not None:
            peer.messageTooLong(length)

    @property
    def eventCounts(self) -> dict[str, int]:
        """
        What was lost, counted exactly since this was made, by kind:
        datagrams received longer than C{maxMessageLength} and dropped
        (C{"datagramTooLong"}), datagrams not sent because the socket's send
        buffer was full (C{"sendBufferFull"}) or for another error
        (C{"sendFailed"}), and on a server peers forgotten because the table
        was full (C{"peerForgotten"}) or they were idle (C{"peerExpired"});
        on a client, datagrams refused (C{"refused"}: ICMP port
        unreachable).  The first of each kind is logged in full; while they
        go on, one summary every 5 s says how many more there were.
        """
        return dict(self._events.counts)


class _Port(DatagramProtocol):
    """
    The Twisted protocol of one UDP port of a server or client: finds the
    peer of each datagram, checks the bound, and hands the datagram on.
    """

    noisy = False
    #: The C{sendto} of the port's socket, for a server's port that gives it.
    sendto: Callable[[bytes, tuple[str, int]], object] | None = None

    def __init__(self, owner: Any) -> None:
        self._owner = owner
        self._maxLength = owner._framing.maxMessageLength

    def destination(self, peer: DatagramPeer) -> tuple[str, int] | None:
        """
        The address to write the peer's datagrams to.
        """
        return peer.address

    def logPrefix(self) -> str:
        return self._owner.logPrefix()


class _ServerPort(_Port):
    """
    A port of a L{DatagramServer}, with its peers by address.
    """

    #: Whether the server stopped: the datagrams of a read that was in
    #: progress then are not delivered.
    stopped = False

    def __init__(self, owner: DatagramServer) -> None:
        super().__init__(owner)
        self.peers: dict[tuple[str, int], DatagramPeer] = {}
        # What each datagram needs, looked up once.
        self._seconds = owner._reactor.seconds
        self._heard = owner._peers.move_to_end
        self._plain = owner._framing.delimiter is None

    def makeConnection(self, transport: Any) -> None:
        """
        Take the port, and its socket's C{sendto} where the port gives its
        socket (C{ISystemHandle}): the server sends each datagram with it,
        the addresses being those its datagrams came from (which
        C{IUDPTransport.write} would check again, each time).
        """
        super().makeConnection(transport)
        if ISystemHandle.providedBy(transport):
            self.sendto = getattr(transport.getHandle(), "sendto", None)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        peer = self.peers.get(addr)
        if peer is None or len(datagram) > self._maxLength or self.stopped:
            self._otherDatagram(datagram, addr, peer)
            return
        peer._lastHeard = self._seconds()
        self._heard(peer.peerId)
        if self._plain:
            peer.messageReceived(datagram)
        else:
            self._owner._deliver(peer, datagram)

    def _otherDatagram(self, datagram: bytes, addr: Any, peer: DatagramPeer | None) -> None:
        """
        A datagram from a new address, too long, or come after the server
        stopped.
        """
        if self.stopped:
            return
        owner = self._owner
        if len(datagram) > self._maxLength:
            owner._tooLong(peer, len(datagram), addr)
            return
        owner._deliver(owner._newPeer(self, addr), datagram)


def _peerClass(
    protocol: type[DatagramPeer] | None, framing: dict[str, Any]
) -> tuple[type[DatagramPeer], DatagramFraming]:
    """
    The class of the peers, and their framing: C{protocol} (L{DatagramPeer}
    by default) with the framing values given that differ from its own, as
    a subclass that has them.

    @param framing: the C{delimiter}, C{maxMessageLength} and
        C{messageAppend} given; C{FROM_PROTOCOL} or C{None} for the
        protocol's own.
    @raise TypeError: not a subclass of L{DatagramPeer}.
    @raise ValueError: a framing value out of range.
    """
    if protocol is None:
        protocol = DatagramPeer
    elif not (isinstance(protocol, type) and issubclass(protocol, DatagramPeer)):
        raise TypeError(f"protocol must be a subclass of tcpsc.DatagramPeer, not {protocol!r}")
    values = {
        name: getattr(protocol, name)
        if value is FROM_PROTOCOL or (value is None and name != "maxMessageLength")
        else value
        for name, value in framing.items()
    }
    if values["maxMessageLength"] is None:
        raise ValueError(
            "maxMessageLength must be a number of bytes: every datagram is bounded, not None"
        )
    result = DatagramFraming(**values)
    changed = {
        "delimiter": result.delimiter,
        "maxMessageLength": result.maxMessageLength,
        "messageAppend": result.messageAppend,
    }
    changed = {name: value for name, value in changed.items() if getattr(protocol, name) != value}
    if changed:
        protocol = type(
            protocol.__name__,
            (protocol,),
            {
                "__slots__": (),
                "__module__": protocol.__module__,
                "__qualname__": protocol.__qualname__,
                **changed,
            },
        )
    return protocol, result


def _checkOnMessage(protocol: type[DatagramPeer], onMessage: object) -> None:
    if onMessage is not None and protocol.messageReceived is not DatagramPeer.messageReceived:
        raise ValueError(
            f"onMessage is never called: {protocol.__name__} overrides messageReceived"
        )


class DatagramServer(_Owner):
    """
    A datagram (UDP) server: listens on any number of ports, learns its
    peers from their datagrams, gives each an id, and forgets them when idle
    or when the table is full.

    Use it with callbacks::

        server = DatagramServer(onMessage=lambda peerId, message: server.send(peerId, message))

    or with your own peer class::

        class Echo(DatagramPeer):
            def messageReceived(self, message):
                self.sendMessage(message)
        server = DatagramServer(Echo)

    The peer ids are positive, counted up and never reused, like the
    connection ids of L{tcpsc.Server}, from a counter of the datagram
    server's own.

    @ivar onMessage: called with C{(peerId, message)} for each message, by
        the default L{DatagramPeer.messageReceived}.
    @ivar onPeer: called with the id of each new peer, after its
        L{DatagramPeer.peerReady}.
    @ivar onPeerExpired: called with the id of each peer forgotten, after
        its L{DatagramPeer.peerExpired}.
    """

    log = Logger()

    def __init__(
        self,
        protocol: type[DatagramPeer] | None = None,
        *,
        delimiter: bytes | str | None = None,
        maxMessageLength: int = DEFAULT_MAX_DATAGRAM,
        messageAppend: bytes | str = b"",
        peerIdleTimeout: float | None = Settings.peerIdleTimeout,
        maxPeers: int = Settings.maxPeers,
        broadcastWindow: float | None = Settings.broadcastWindow,
        onMessage: Callable[[int, bytes], object] | None = None,
        onPeer: Callable[[int], object] | None = None,
        onPeerExpired: Callable[[int], object] | None = None,
        reactor: Any = None,
        settings: Settings | None = None,
    ) -> None:
        """
        @param protocol: a L{DatagramPeer} subclass, one instance per peer;
            L{DatagramPeer} by default.
        @param delimiter: the bytes that end each message, so that a
            datagram holds one or more; C{None} (the default): the
            protocol's own, C{None} for L{DatagramPeer}: one message per
            datagram.
        @param maxMessageLength: the longest datagram sent or received, in
            bytes, from 1 to 65,527 (65,507 for an IPv4 port); the default,
            1472, is the protocol's own.
        @param messageAppend: bytes added to every message sent, before the
            delimiter; C{b""} (the default): the protocol's own.
        @param peerIdleTimeout: seconds without a datagram from a peer
            after which it is forgotten, or C{None} for never.
        @param maxPeers: the most peers kept at once; a new one past it
            makes the server forget the peer heard from least recently.
        @param broadcastWindow: a broadcast reaches the peers heard from
            within this many seconds; C{None}: every peer kept.
        @param reactor: the reactor to listen with; the global one by
            default.
        @param settings: the datagram fields of L{Settings}
            (C{peerIdleTimeout}, C{maxPeers}, C{broadcastWindow}), the
            framing and C{logEveryEvent} as one value, instead of the
            keyword arguments (the rule of L{tcpsc.Server}: a keyword that
            differs from its default given with C{settings} is a
            C{TypeError}).
        @raise TypeError: a protocol that is not a L{DatagramPeer}
            subclass; a setting given both ways.
        @raise ValueError: a setting out of its range; C{onMessage} with a
            protocol that overrides C{messageReceived}.
        """
        self._settings = settingsFrom(
            "DatagramServer",
            settings,
            {
                "delimiter": delimiter,
                "maxMessageLength": FROM_PROTOCOL
                if maxMessageLength == DEFAULT_MAX_DATAGRAM
                else maxMessageLength,
                "messageAppend": FROM_PROTOCOL if messageAppend in (b"", "") else messageAppend,
                "peerIdleTimeout": peerIdleTimeout,
                "maxPeers": maxPeers,
                "broadcastWindow": broadcastWindow,
            },
        )
        settings_ = self._settings
        self._protocol, self._framing = _peerClass(
            protocol,
            {
                "delimiter": settings_.delimiter,
                "maxMessageLength": settings_.maxMessageLength,
                "messageAppend": settings_.messageAppend,
            },
        )
        _checkOnMessage(self._protocol, onMessage)
        self.onMessage = onMessage
        self.onPeer = onPeer
        self.onPeerExpired = onPeerExpired
        self._reactor: Any = reactor if reactor is not None else defaultReactor()
        self._events = EventSummary(self.log, self._reactor, logEveryEvent=settings_.logEveryEvent)
        self._ports: list[IListeningPort] = []
        self._serverPorts: list[_ServerPort] = []
        # The peers by id, in the order they were last heard from: the
        # first is the one to forget first.
        self._peers: OrderedDict[int, DatagramPeer] = OrderedDict()
        self._nextId = 1
        self._expiryCall: IDelayedCall | None = None

    def logPrefix(self) -> str:
        return "tcpsc.DatagramServer"

    @property
    def settings(self) -> Settings:
        """
        The settings in force (the framing as given, C{FROM_PROTOCOL} where
        it is the protocol's own).
        """
        return self._settings

    @property
    def peerIdleTimeout(self) -> float | None:
        return self._settings.peerIdleTimeout

    @property
    def maxPeers(self) -> int:
        return self._settings.maxPeers

    @property
    def broadcastWindow(self) -> float | None:
        return self._settings.broadcastWindow

    @property
    def maxMessageLength(self) -> int:
        """
        The bound of every datagram sent and received, in bytes.
        """
        return self._framing.maxMessageLength

    # -- listening --------------------------------------------------------

    def listen(self, port: int, interface: str = "") -> Deferred[IListeningPort]:
        """
        Start listening for datagrams.

        @param port: a port number (0 picks a free one).
        @param interface: the address to bind to: all IPv4 addresses by
            default (C{""}); an IPv6 address (C{"::"}, C{"::1"}) listens on
            IPv6 (C{"::"} takes IPv4 datagrams too, their senders' addresses
            then IPv4-mapped: C{::ffff:127.0.0.1}).
        @return: fires with the listening port, or fails with L{PortError}
            (10) for a port outside 0-65535, L{ListenError} (42) with the
            system's reason (the port in use, an address not of this host
            or not an address), or C{ValueError} for an IPv4 port with a
            C{maxMessageLength} above 65,507.
        """
        if isinstance(port, bool) or not isinstance(port, int):
            return fail(PortError(f"port must be a number, not {port!r}"))
        if not 0 <= port <= 65535:
            return fail(PortError(f"port {port} is outside 0-65535"))
        if interface and not (isIPAddress(interface) or isIPv6Address(interface)):
            return fail(
                ListenError(
                    f"cannot listen on port {port} on {interface!r}: not an IPv4 or IPv6 address"
                )
            )
        try:
            self._framing.checkFamily(isIPv6Address(interface))
        except ValueError:
            return fail()
        protocol = _ServerPort(self)
        try:
            listening = self._reactor.listenUDP(
                port, protocol, interface=interface, maxPacketSize=self._framing.receiveSize
            )
        except CannotListenError as e:
            where = f"port {port}" + (f" on {interface}" if interface else "")
            return fail(ListenError(f"cannot listen on {where}: {e.socketError}"))
        self._ports.append(listening)
        self._serverPorts.append(protocol)
        self.log.info(
            "Listening for datagrams on {address} ({framing}, at most {maxMessageLength} bytes)",
            address=describeAddress(listening.getHost()),
            framing=self._framing.describe(),
            maxMessageLength=self._framing.maxMessageLength,
        )
        return succeed(listening)

    @property
    def ports(self) -> list[IListeningPort]:
        """
        The ports this server listens on.
        """
        return list(self._ports)

    def stop(self) -> Deferred[None]:
        """
        Stop listening and forget every peer (each one's
        L{DatagramPeer.peerExpired} and C{onPeerExpired} are called; these
        are not counted as expired).

        @return: fires when no port is listening; the server may then
            L{listen} again (its peer ids go on counting up).
        """
        ports, self._ports = self._ports, []
        for protocol in self._serverPorts:
            protocol.stopped = True
        self._serverPorts = []
        stopping = gatherResults([maybeDeferred(p.stopListening) for p in ports])
        call, self._expiryCall = self._expiryCall, None
        if call is not None and call.active():
            call.cancel()
        peers = self._peers
        while peers:
            _, peer = peers.popitem(last=False)
            self._forget(peer, None)
        self._events.stop()
        return stopping.addCallback(lambda _: None)

    # -- the peers --------------------------------------------------------

    def _newPeer(self, port: _ServerPort, address: tuple[str, int]) -> DatagramPeer:
        peers = self._peers
        while len(peers) >= self._settings.maxPeers:
            _, oldest = peers.popitem(last=False)
            self._forget(oldest, "peerForgotten")
        peerId = self._nextId
        self._nextId = peerId + 1
        peer = self._protocol()
        peer.peerId = peerId
        peer.address = address
        peer._owner = self
        peer._via = port
        peer._lastHeard = self._reactor.seconds()
        port.peers[address] = peer
        peers[peerId] = peer
        if self._expiryCall is None:
            self._scheduleExpiry()
        peer.peerReady()
        onPeer = self.onPeer
        if onPeer is not None:
            onPeer(peerId)
        return peer

    def _forget(self, peer: DatagramPeer, kind: str | None) -> None:
        """
        Forget a peer already taken out of C{_peers}.

        @param kind: what to count it as (C{"peerForgotten"},
            C{"peerExpired"}), or C{None}: the server is stopping.
        """
        via = peer._via
        if via is not None and isinstance(via, _ServerPort):
            via.peers.pop(peer.address, None)
        if kind == "peerForgotten":
            self._events.record(
                "peerForgotten",
                "Forgot peer {peerId} ({peer}): the peer table is full (maxPeers {maxPeers}) "
                "and it was heard from least recently",
                peerId=peer.peerId,
                peer=describeAddress(_hostPort(peer.address)),
                maxPeers=self._settings.maxPeers,
            )
        elif kind == "peerExpired":
            self._events.record(
                "peerExpired",
                "Forgot peer {peerId} ({peer}): nothing heard from it for {timeout} s "
                "(peerIdleTimeout)",
                level=LogLevel.info,
                peerId=peer.peerId,
                peer=describeAddress(_hostPort(peer.address)),
                timeout=self._settings.peerIdleTimeout,
            )
        try:
            peer.peerExpired()
            onPeerExpired = self.onPeerExpired
            if onPeerExpired is not None:
                onPeerExpired(peer.peerId)
        finally:
            peer._owner = None
            peer._via = None

    def _scheduleExpiry(self) -> None:
        timeout = self._settings.peerIdleTimeout
        if timeout is None or not self._peers:
            return
        oldest = next(iter(self._peers.values()))
        delay = max(0.0, oldest._lastHeard + timeout - self._reactor.seconds())
        self._expiryCall = self._reactor.callLater(delay, self._expire)

    def _expire(self) -> None:
        self._expiryCall = None
        timeout = self._settings.peerIdleTimeout
        if timeout is None:
            return
        deadline = self._reactor.seconds() - timeout
        peers = self._peers
        try:
            while peers:
                peerId, oldest = next(iter(peers.items()))
                if oldest._lastHeard > deadline:
                    break
                del peers[peerId]
                self._forget(oldest, "peerExpired")
        finally:
            if self._expiryCall is None:
                self._scheduleExpiry()

    def _write(self, peer: DatagramPeer, datagram: bytes) -> bool:
        # writeDatagram, inline: this is every reply's path.
        via = peer._via
        if via is None:
            return False
        try:
            sendto = via.sendto
            if sendto is not None:
                sendto(datagram, peer.address)
            else:
                transport: Any = via.transport
                transport.write(datagram, peer.address)
        except (OSError, MessageLengthError) as e:
            return writeFailed(e, datagram, peer.address, self._events)
        return True

    def _onMessage(self, peer: DatagramPeer, message: bytes) -> None:
        onMessage = self.onMessage
        if onMessage is not None:
            onMessage(peer.peerId, message)

    def clientIds(self) -> list[int]:
        """
        The ids of the peers kept, ascending.
        """
        return sorted(self._peers)

    def peer(self, peerId: int) -> DatagramPeer:
        """
        The peer of an id.

        @raise ServerError: unknown id (never given, or forgotten).
        """
        try:
            return self._peers[peerId]
        except (KeyError, TypeError):
            raise ServerError(f"no peer with id {peerId!r}") from None

    def clientAddress(self, peerId: int) -> tuple[str, int]:
        """
        The peer's address: C{(host, port)}, IPv4 or IPv6.

        @raise ServerError: unknown id.
        """
        return self.peer(peerId).address

    def send(self, peerId: int, data: bytes | str) -> bool:
        """
        Send one message to a peer (see L{DatagramPeer.sendMessage}).

        @return: C{False}, with nothing sent, for an unknown id or a message
            the peer's C{sendMessage} refuses.
        """
        try:
            peer = self._peers[peerId]
        except (KeyError, TypeError):
            return False
        return peer.sendMessage(data)

    def broadcast(self, data: bytes | str, exclude: int | Collection[int] | None = None) -> int:
        """
        Send one message to every peer heard from within C{broadcastWindow}
        seconds (every peer kept when it is C{None}), framed once.

        @param exclude: an id, or ids, to leave out.
        @return: how many peers it was handed to the system for; 0 when the
            message is refused (too long, or it contains the delimiter).
        """
        datagram = self._framing.frame(data)
        if datagram is None:
            return 0
        # Replies put together for the peer being handled go first.
        self._flushReplies()
        if exclude is None:
            excluded: Collection[int] = ()
        elif isinstance(exclude, int):
            excluded = (exclude,)
        else:
            excluded = exclude if isinstance(exclude, (set, frozenset)) else set(exclude)
        settings = self._settings
        window = settings.broadcastWindow
        if window is None:
            window = settings.peerIdleTimeout
        since = self._reactor.seconds() - window if window is not None else None
        write = self._write
        sent = 0
        for peer in reversed(self._peers.values()):
            if since is not None and peer._lastHeard < since:
                break
            if peer.peerId in excluded:
                continue
            if write(peer, datagram):
                sent += 1
        return sent


class _ClientPort(_Port):
    """
    The port of a L{DatagramClient}: connected to one address, so that only
    its datagrams arrive.
    """

    peer: DatagramPeer | None = None
    #: Whether a refusal was reported since the last send began.
    refusedNow = False

    def destination(self, peer: DatagramPeer) -> None:
        return None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        peer = self.peer
        if peer is None:
            return
        owner = self._owner
        if len(datagram) > self._maxLength:
            owner._tooLong(peer, len(datagram), addr)
            return
        owner._deliver(peer, datagram)

    def connectionRefused(self) -> None:
        self.refusedNow = True
        self._owner._refused()

    def socketError(self, number: int) -> None:
        """
        The system reported another error for a datagram sent earlier (an
        ICMP host or network unreachable).
        """
        self._owner._unreachable(number)

    def stopProtocol(self) -> None:
        # The port closed: by disconnect(), or by a reactor that closes a
        # connected UDP port when the system reports a refusal (Twisted's
        # poll-like reactors do, twisted#5377; see _SturdyPort).
        if self.peer is not None:
            self._owner._portLost()


@implementer(IHalfCloseableDescriptor)
class _SturdyPort(udp.Port):
    """
    A connected UDP port that stays open when the system reports an error
    for a datagram sent before (an ICMP port unreachable), and tells its
    protocol.

    The system reports such an error on a connected socket as an error
    condition of the socket (C{EPOLLERR}) without data to read; Twisted's
    poll-like reactors (epoll, poll) then close the port as if a connection
    had ended (twisted#5377), and its select reactor calls C{doRead}, which
    calls C{connectionRefused}.  A descriptor that is half-closeable gets
    C{readConnectionLost} instead of being closed: this one takes the
    error from the socket (which clears it), tells its protocol, and reads
    again.  An error other than a refusal that C{doRead} meets is told to
    the protocol (L{_ClientPort.socketError}) instead of closing the port.

    Used only while L{tcpsc._compat.PRIVATE}, with a reactor of Twisted's
    POSIX family; otherwise the reactor's own port, which a refusal closes
    under epoll (the client then says so and is disconnected).
    """

    _stopping = False

    def doRead(self) -> None:
        try:
            super().doRead()
        except OSError as e:
            if e.errno in _READ_IGNORED:
                return
            self.protocol.socketError(e.errno or 0)

    def readConnectionLost(self, reason: Failure) -> None:
        number = self.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not number or self._stopping:
            # Not an error the system reported: the socket really ended.
            self.connectionLost(reason)
            return
        if number == errno.ECONNREFUSED:
            self.protocol.connectionRefused()
        else:
            self.protocol.socketError(number)
        if not self._stopping:
            self.startReading()

    def writeConnectionLost(self, reason: Failure) -> None:
        """
        Never called: a UDP port does not register for writing.
        """

    def stopListening(self) -> Any:
        self._stopping = True
        return super().stopListening()


#: Errors of a read that mean nothing is to be read now.
_READ_IGNORED: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


@implementer(IResolutionReceiver)
class _Addresses:
    """
    Collects the addresses a name resolves to.
    """

    def __init__(self) -> None:
        self.addresses: list[IAddress] = []
        self.done: Deferred[list[IAddress]] = Deferred()

    def resolutionBegan(self, resolutionInProgress: object) -> None:
        pass

    def addressResolved(self, address: IAddress) -> None:
        self.addresses.append(address)

    def resolutionComplete(self) -> None:
        self.done.callback(self.addresses)


class DatagramClient(_Owner):
    """
    A datagram (UDP) client: one connected UDP socket, so that only the
    server's datagrams reach it.

    @ivar onMessage: called with each message received, by the default
        L{DatagramPeer.messageReceived}.
    @ivar peer: the server's L{DatagramPeer} while connected, or C{None}.
    """

    log = Logger()

    def __init__(
        self,
        protocol: type[DatagramPeer] | None = None,
        *,
        delimiter: bytes | str | None = None,
        maxMessageLength: int = DEFAULT_MAX_DATAGRAM,
        messageAppend: bytes | str = b"",
        onMessage: Callable[[bytes], object] | None = None,
        reactor: Any = None,
    ) -> None:
        """
        @param protocol: the L{DatagramPeer} subclass of the server's peer;
            L{DatagramPeer} by default.
        @param delimiter: as for L{DatagramServer}.
        @param maxMessageLength: as for L{DatagramServer}.
        @param messageAppend: as for L{DatagramServer}.
        @param onMessage: see L{onMessage}.
        @param reactor: the reactor to use; the global one by default.
        @raise TypeError: a protocol that is not a L{DatagramPeer} subclass.
        @raise ValueError: a framing value out of range; C{onMessage} with
            a protocol that overrides C{messageReceived}.
        """
        self._protocol, self._framing = _peerClass(
            protocol,
            {
                "delimiter": delimiter,
                "maxMessageLength": FROM_PROTOCOL
                if maxMessageLength == DEFAULT_MAX_DATAGRAM
                else maxMessageLength,
                "messageAppend": FROM_PROTOCOL if messageAppend in (b"", "") else messageAppend,
            },
        )
        _checkOnMessage(self._protocol, onMessage)
        self.onMessage = onMessage
        self._reactor: Any = reactor if reactor is not None else defaultReactor()
        self._events = EventSummary(self.log, self._reactor)
        self._port: Any = None
        self._clientPort: _ClientPort | None = None
        self._connecting = False
        # Counted up by disconnect(), so that a connect in progress then
        # knows it was given up.
        self._attempt = 0
        self._nextId = 1
        self.peer: DatagramPeer | None = None

    def logPrefix(self) -> str:
        return "tcpsc.DatagramClient"

    @property
    def maxMessageLength(self) -> int:
        """
        The bound of every datagram sent and received, in bytes.
        """
        return self._framing.maxMessageLength

    def connect(self, host: str, port: int, interface: str = "") -> Deferred[DatagramPeer]:
        """
        Connect a UDP socket to C{host}:C{port}: only datagrams from there
        are received, and sends go there.

        @param host: an IPv4 or IPv6 address, or a name, resolved by the
            reactor's resolver; of the addresses of a name, the first IPv4
            one is used when there is one (servers listen on IPv4 unless
            told otherwise; UDP cannot try one address after the other as
            TCP does), else the first IPv6 one; with an IPv6 C{interface},
            the first IPv6 one.
        @param interface: the local address to send from; any by default.
        @return: fires with the server's peer once connected, or fails with
            L{StartError} (-1: already connected or connecting),
            L{PortError} (10: a port outside 1-65535) or L{ConnectError}
            (50: a name that does not resolve, an address the system
            cannot send to), or C{ValueError} (an IPv4 address with a
            C{maxMessageLength} above 65,507).
        """
        if self._connecting or self.peer is not None:
            return fail(StartError("the client is already connected or connecting", -1))
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            return fail(PortError(f"port {port!r} is outside 1-65535"))
        if interface and not (isIPAddress(interface) or isIPv6Address(interface)):
            return fail(ConnectError(f"the interface {interface!r} is not an IPv4 or IPv6 address"))
        self._connecting = True
        attempt = self._attempt
        resolving = self._resolve(host, interface)

        def resolved(address: tuple[str, int]) -> DatagramPeer:
            if self._attempt != attempt:
                raise ConnectError(
                    f"connecting to {host}:{port} was given up: disconnect() was called"
                )
            return self._connectTo(address[0], port, interface)

        def done(result: Any) -> Any:
            if self._attempt == attempt:
                self._connecting = False
            return result

        return resolving.addCallback(resolved).addBoth(done)

    def _resolve(self, host: str, interface: str) -> Deferred[tuple[str, int]]:
        if isIPAddress(host) or isIPv6Address(host):
            return succeed((host, 0))
        receiver = _Addresses()
        try:
            self._reactor.nameResolver.resolveHostName(
                receiver, host, 0, [IPv4Address, IPv6Address], "UDP"
            )
        except Exception as e:
            return fail(ConnectError(f"cannot resolve the host name {host!r}: {e}"))

        def choose(addresses: list[IAddress]) -> tuple[str, int]:
            v4 = [a for a in addresses if isinstance(a, IPv4Address)]
            v6 = [a for a in addresses if isinstance(a, IPv6Address)]
            if interface:
                usable = v6 if isIPv6Address(interface) else v4
            else:
                usable = v4 or v6
            if not usable:
                if addresses:
                    raise ConnectError(
                        f"the host name {host!r} has no address of the family of the "
                        f"interface {interface!r}"
                    )
                raise ConnectError(f"cannot resolve the host name {host!r}")
            return (usable[0].host, 0)

        return receiver.done.addCallback(choose)

    def _connectTo(self, host: str, port: int, interface: str) -> DatagramPeer:
        ipv6 = isIPv6Address(host)
        self._framing.checkFamily(ipv6)
        clientPort = _ClientPort(self)
        target = describeAddress(_hostPort((host, port)))
        bind = interface or ("::" if ipv6 else "")
        reactor = self._reactor
        try:
            if _compat.PRIVATE and isinstance(reactor, PosixReactorBase):
                listening: Any = _SturdyPort(
                    0, clientPort, bind, self._framing.receiveSize, reactor
                )
                listening.startListening()
            else:
                listening = reactor.listenUDP(
                    0, clientPort, interface=bind, maxPacketSize=self._framing.receiveSize
                )
        except CannotListenError as e:
            raise ConnectError(
                f"cannot connect to {target} from {interface}: {e.socketError}"
            ) from e
        try:
            listening.connect(host, port)
        except OSError as e:
            listening.stopListening()
            raise ConnectError(f"cannot connect to {target}: {e.strerror or e}") from e
        peerId = self._nextId
        self._nextId = peerId + 1
        peer = self._protocol()
        peer.peerId = peerId
        peer.address = (host, port)
        peer._owner = self
        peer._via = clientPort
        peer._lastHeard = self._reactor.seconds()
        self._port = listening
        self._clientPort = clientPort
        clientPort.peer = peer
        self.peer = peer
        self.log.info(
            "Connected to {address} for datagrams ({framing}, at most {maxMessageLength} bytes)",
            address=describeAddress(_hostPort((host, port))),
            framing=self._framing.describe(),
            maxMessageLength=self._framing.maxMessageLength,
        )
        peer.peerReady()
        return peer

    def _write(self, peer: DatagramPeer, datagram: bytes) -> bool:
        clientPort = self._clientPort
        if clientPort is None or peer is not self.peer:
            return False
        clientPort.refusedNow = False
        written = _Owner._write(self, peer, datagram)
        # A refusal still pending on the socket is reported by this send,
        # which the system then did not make: Twisted calls
        # connectionRefused and returns as if it had written.
        return written and not clientPort.refusedNow

    def _refused(self) -> None:
        peer = self.peer
        if peer is None:
            return
        self._events.record(
            "refused",
            "A datagram to {peer} was refused: nothing listens there (ICMP port unreachable)",
            peer=describeAddress(_hostPort(peer.address)),
        )
        peer.connectionRefused()

    def _unreachable(self, number: int) -> None:
        peer = self.peer
        if peer is None:
            return
        reason = os.strerror(number) if number else "unknown error"
        self._events.record(
            "sendFailed",
            "A datagram to {peer} did not arrive: {error}",
            detail=reason,
            peer=describeAddress(_hostPort(peer.address)),
            error=reason,
        )

    def _portLost(self) -> None:
        """
        The reactor closed the socket (Twisted's poll-like reactors do when
        the system reports a refusal, where L{_SturdyPort} is not used): the
        client is disconnected.
        """
        peer = self.peer
        if peer is None:
            return
        self._events.record(
            "refused",
            "The socket connected to {peer} was closed by the reactor after the system "
            "reported an error for a datagram sent (an ICMP port unreachable: nothing "
            "listens there); the client is disconnected",
            peer=describeAddress(_hostPort(peer.address)),
        )
        peer.connectionRefused()
        self._port = None
        self._clientPort = None
        self.peer = None
        try:
            peer.peerExpired()
        finally:
            peer._owner = None
            peer._via = None

    def _onMessage(self, peer: DatagramPeer, message: bytes) -> None:
        onMessage = self.onMessage
        if onMessage is not None:
            onMessage(message)

    def send(self, data: bytes | str) -> bool:
        """
        Send one message to the server (see L{DatagramPeer.sendMessage}).

        @return: C{False}, with nothing sent, when not connected or the
            message is refused.
        """
        peer = self.peer
        if peer is None:
            return False
        return peer.sendMessage(data)

    def disconnect(self) -> Deferred[None]:
        """
        Close the socket; the peer's L{DatagramPeer.peerExpired} is called.

        @return: fires once the socket is closed; the client may then
            L{connect} again.  A L{connect} still resolving its name fails
            with L{ConnectError}.
        """
        self._attempt += 1
        self._connecting = False
        port, self._port = self._port, None
        peer, self.peer = self.peer, None
        clientPort, self._clientPort = self._clientPort, None
        if clientPort is not None:
            clientPort.peer = None
        if peer is not None:
            try:
                peer.peerExpired()
            finally:
                peer._owner = None
                peer._via = None
        self._events.stop()
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening).addCallback(lambda _: None)
