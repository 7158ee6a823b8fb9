# -*- test-case-name: tests.test_multicast -*-
"""
Multicast: L{MulticastSender} sends messages to a group, L{MulticastReceiver}
joins a group and delivers what is sent to it; IPv4 groups (C{239.255.0.1})
and IPv6 groups (C{ff15::1}), on Twisted's C{listenMulticast}.

Several receivers may listen on one host and port, and every one of them
gets every datagram sent to its group: on Linux each socket sets
C{SO_REUSEADDR} only, and is adopted by the reactor (see
L{MulticastReceiver._listen} for why not C{SO_REUSEPORT}); elsewhere it is
C{listenMulticast}'s with C{listenMultiple}.  A receiver is bound to its
group's address (not the wildcard) and, on Linux, told to hear only the
groups it joined itself, on the interface it joined them on
(C{IP_MULTICAST_ALL} off): otherwise a socket bound to a port hears every
group any socket of the host joined on that port, on any interface.

The interface, the TTL (the hop limit, for IPv6) and loopback are socket
options set here through the port's socket (C{getHandle()}), not through
Twisted's C{IMulticastTransport} methods, which do not cover IPv6:
C{setTTL} sets the IPv4 option whatever the socket's family, C{joinGroup}
packs an IPv6 interface as an address where the system wants an interface
index, and an IPv4 interface can be given only by its address.  Every
option used is a public one of the system's sockets API.

Framing and bounds are those of datagrams (C{tcpsc._datagram}): without a
delimiter a datagram is one message; with one, a datagram holds one or more
delimited messages.  A datagram longer than C{maxMessageLength} is dropped
whole and counted (C{eventCounts["datagramTooLong"]}), never delivered cut.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorSocket
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from ._datagram import DEFAULT_MAX_DATAGRAM, DatagramFraming, writeDatagram
from ._errors import ListenError, PortError, StartError
from ._events import EventSummary
from ._reactor import defaultReactor

__all__ = ["MulticastReceiver", "MulticastSender"]

#: Linux's C{IP_MULTICAST_ALL} and C{IPV6_MULTICAST_ALL} (ip(7), ipv6(7)),
#: which Python's socket module does not name.
_MULTICAST_ALL = {socket.AF_INET: 49, socket.AF_INET6: 29}

log = Logger()


def _framing(
    delimiter: bytes | str | None, maxMessageLength: int, family: socket.AddressFamily
) -> DatagramFraming:
    """
    The framing of a group's datagrams, its bound checked against the
    group's family.

    @raise ValueError: an empty delimiter, a bound out of range.
    """
    framing = DatagramFraming(delimiter, maxMessageLength)
    framing.checkFamily(family == socket.AF_INET6)
    return framing


def _parseGroup(group: str) -> tuple[socket.AddressFamily, str]:
    """
    The address family and the normalised text of a multicast group.

    @raise ValueError: not an IP address, or not a multicast one.
    """
    if not isinstance(group, str):
        raise TypeError(f"the group must be an address as a str, not {group!r}")
    if "%" in group:
        raise ValueError(
            f"{group!r}: give the interface as interface=, not as a scope of the group"
        )
    try:
        address = ipaddress.ip_address(group)
    except ValueError:
        raise ValueError(
            f"{group!r} is not a multicast group: give an IPv4 (239.255.0.1) "
            "or IPv6 (ff15::1) address"
        ) from None
    if not address.is_multicast:
        raise ValueError(
            f"{group} is not a multicast address: IPv4 groups are 224.0.0.0/4 "
            "(239.0.0.0/8 for a site's own use), IPv6 groups ff00::/8"
        )
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    return family, str(address)


def _needsInterface(family: socket.AddressFamily, group: str) -> bool:
    """
    Whether a group is an IPv6 one of interface-local or link-local scope
    (C{ff01::/16}, C{ff02::/16}, and their C{ff1x} forms), which exist only
    on one interface: it must be given.
    """
    if family != socket.AF_INET6:
        return False
    scope = int(ipaddress.IPv6Address(group)) >> 112 & 0xF
    return scope in (1, 2)


def _checkPort(port: object, lowest: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise PortError(f"port must be a number, not {port!r}")
    if not lowest <= port <= 65535:
        raise PortError(f"port {port} is outside {lowest}-65535")
    return port


def _checkInterface(interface: str | None, family: socket.AddressFamily) -> str | None:
    """
    Check the form of an interface: an address of the group's family, or
    a name or index.  Whether it exists is seen when starting.
    """
    if interface is None:
        return None
    if not isinstance(interface, str) or not interface:
        raise ValueError(f"interface must be an address or an interface name, not {interface!r}")
    try:
        address = ipaddress.ip_address(interface.split("%", 1)[0])
    except ValueError:
        return interface
    version = 4 if family == socket.AF_INET else 6
    if address.version != version:
        raise ValueError(
            f"interface {interface} is an IPv{address.version} address, "
            f"the group an IPv{version} one"
        )
    return interface


def _indexOf(interface: str) -> int:
    """
    The index of an interface given by its name or index.

    @raise ListenError: no such interface.
    """
    if interface.isdigit():
        index = int(interface)
        try:
            socket.if_indextoname(index)
        except OSError:
            raise ListenError(f"there is no network interface with index {index}") from None
        return index
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise ListenError(f"there is no network interface named {interface!r}") from None


def _indexOfAddress6(interface: str) -> int:
    """
    The index of the interface that holds an IPv6 address (C{fe80::1%eth0}
    names it; otherwise, on Linux, C{/proc/net/if_inet6} tells).

    @raise ListenError: no interface of this host has the address.
    """
    address, _, scope = interface.partition("%")
    if scope:
        return _indexOf(scope)
    wanted = ipaddress.IPv6Address(address).packed.hex()
    try:
        with open("/proc/net/if_inet6") as table:
            for line in table:
                fields = line.split()
                if len(fields) >= 6 and fields[0] == wanted:
                    return int(fields[1], 16)
    except OSError:
        raise ListenError(
            f"cannot tell which interface holds {address} on this system: give the interface's name"
        ) from None
    raise ListenError(f"no network interface of this host has the address {address}")


def _checkLocal4(address: str) -> None:
    """
    Check that an interface of this host has an IPv4 address, by binding a
    socket to it (nothing is sent): the system's own words for a stranger
    (C{ENODEV} on a join, C{EADDRNOTAVAIL} on a send) do not say it.

    @raise ListenError: no interface has it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise ListenError(
                    f"no network interface of this host has the address {address}"
                ) from None
            raise ListenError(f"cannot use the address {address}: {e.strerror or e}") from None


def _multicastOptions(
    family: socket.AddressFamily, group: str, interface: str | None
) -> tuple[bytes, bytes | int | None]:
    """
    What to join a group with (C{IP_ADD_MEMBERSHIP} / C{IPV6_JOIN_GROUP}),
    and what to send through the interface with (C{IP_MULTICAST_IF} /
    C{IPV6_MULTICAST_IF}; C{None}: the system's choice).

    @raise ListenError: the interface does not exist.
    @raise ValueError: an IPv4 interface given by name, where the system
        takes only addresses.
    """
    packedGroup = socket.inet_pton(family, group)
    if family == socket.AF_INET6:
        if interface is None:
            index = 0
        elif ":" in interface:
            index = _indexOfAddress6(interface)
        else:
            index = _indexOf(interface)
        return packedGroup + struct.pack("@I", index), (index or None)
    if interface is None:
        return packedGroup + socket.inet_aton("0.0.0.0"), None
    try:
        ipaddress.IPv4Address(interface)
    except ValueError:
        pass
    else:
        _checkLocal4(interface)
        packed = socket.inet_aton(interface)
        return packedGroup + packed, packed
    index = _indexOf(interface)
    if not sys.platform.startswith("linux"):
        raise ValueError(
            f"give the IPv4 address of interface {interface!r}: this system "
            "takes IPv4 multicast interfaces by address only"
        )
    # Linux's struct ip_mreqn: group, local address (any), interface index.
    mreqn = socket.inet_aton("0.0.0.0") + socket.inet_aton("0.0.0.0") + struct.pack("@i", index)
    return packedGroup + mreqn[4:], mreqn


def _describe(group: str, port: int) -> str:
    return f"[{group}]:{port}" if ":" in group else f"{group}:{port}"


def _cannotListen(error: CannotListenError, what: str) -> ListenError:
    return ListenError(f"{what}: {error.socketError}")


class _ReceiverProtocol(DatagramProtocol):
    def __init__(self, receiver: MulticastReceiver) -> None:
        self.receiver = receiver

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.receiver._datagramReceived(datagram, (addr[0], addr[1]))


class MulticastReceiver:
    """
    Joins a multicast group and delivers each message sent to it, with the
    sender's address, to L{messageReceived} (by default, C{onMessage}).

    Subclass it and override L{messageReceived}, or pass C{onMessage}.
    Several receivers may listen on one host and port, each for its group:
    each gets every datagram sent to its group and port.

    @ivar eventCounts: see L{eventCounts}.
    """

    def __init__(
        self,
        group: str,
        port: int,
        *,
        interface: str | None = None,
        onMessage: Callable[[bytes, tuple[str, int]], object] | None = None,
        delimiter: bytes | str | None = None,
        maxMessageLength: int = DEFAULT_MAX_DATAGRAM,
        reactor: Any = None,
    ) -> None:
        """
        @param group: the group's address: IPv4 (C{239.255.0.1}) or IPv6
            (C{ff15::1}).
        @param port: the UDP port the group's datagrams are sent to
            (0: one the system picks, then read from L{port}).
        @param interface: the interface to join the group on: its address
            (of the group's family), its name (C{"eth0"}; for IPv4 groups
            on Linux only) or index; C{None}, the one the system routes the
            group through.
        @param onMessage: called with each message and the sender's
            C{(host, port)}.
        @param delimiter: C{None}, one message per datagram; otherwise the
            bytes that end each of the several messages of a datagram.
        @param maxMessageLength: the longest datagram delivered; a longer
            one is dropped whole and counted.
        @raise ValueError: the group is not a multicast address, the port or
            the bound is out of range (L{PortError} for the port), the
            interface is of the other family, or missing for an IPv6 group
            of link-local scope (C{ff02::1}).
        """
        self.family, self.group = _parseGroup(group)
        self._port = _checkPort(port, 0)
        self.interface = _checkInterface(interface, self.family)
        if self.interface is None and _needsInterface(self.family, self.group):
            raise ValueError(
                f"{self.group} is a group of one link (or one interface): give its interface"
            )
        self.framing = _framing(delimiter, maxMessageLength, self.family)
        self.onMessage = onMessage
        self._reactor = reactor if reactor is not None else defaultReactor()
        self._events = EventSummary(log, self._reactor)
        self._listening: Any = None

    @property
    def port(self) -> int:
        """
        The port listened on: the one given, or the one the system picked
        for port 0 once started.
        """
        if self._listening is not None:
            return int(self._listening.getHost().port)
        return self._port

    @property
    def eventCounts(self) -> dict[str, int]:
        """
        Datagrams lost, by kind, since the receiver was made:
        C{datagramTooLong}, datagrams longer than C{maxMessageLength},
        dropped whole.
        """
        return dict(self._events.counts)

    def start(self) -> Deferred[None]:
        """
        Listen on the port and join the group.

        @return: fires when the group is joined, or fails with
            L{ListenError}: the port cannot be bound, the interface does not
            exist, the group cannot be joined on it; L{StartError} (-1) if
            started already.
        """
        if self._listening is not None:
            return fail(StartError("the multicast receiver is started already", -1))
        where = _describe(self.group, self._port)
        try:
            try:
                join, _ = _multicastOptions(self.family, self.group, self.interface)
            except ListenError as e:
                raise ListenError(f"cannot join multicast group {self.group}: {e.args[0]}") from e
            # Bound to the group's address, the socket hears that group
            # only, not the port's unicast datagrams; Windows cannot bind
            # to a multicast address.
            bindTo = self.group
            if sys.platform == "win32":
                bindTo = "" if self.family == socket.AF_INET else "::"
            # An IPv6 group of link-local scope is bound on its interface.
            scope = struct.unpack("@I", join[16:])[0] if self.family == socket.AF_INET6 else 0
            listening = self._listen(bindTo, scope, where)
            handle = listening.getHandle()
            level = socket.IPPROTO_IP if self.family == socket.AF_INET else socket.IPPROTO_IPV6
            try:
                if sys.platform.startswith("linux"):
                    handle.setsockopt(level, _MULTICAST_ALL[self.family], 0)
                handle.setsockopt(
                    level,
                    socket.IP_ADD_MEMBERSHIP
                    if self.family == socket.AF_INET
                    else socket.IPV6_JOIN_GROUP,
                    join,
                )
            except OSError as e:
                listening.stopListening()
                on = f" on interface {self.interface}" if self.interface else ""
                raise ListenError(
                    f"cannot join multicast group {self.group}{on}: {e.strerror or e}"
                ) from e
        except Exception:
            return fail()
        self._listening = listening
        log.info(
            "Multicast receiver joined {group} on port {port}{on}",
            group=self.group,
            port=self.port,
            on=f", interface {self.interface}" if self.interface else "",
        )
        return succeed(None)

    def _listen(self, bindTo: str, scope: int, where: str) -> Any:
        """
        The receiver's listening port, bound to C{bindTo} and the port (and
        for an IPv6 group of link-local scope to the interface of index
        C{scope}; 0 for any other).

        On Linux a socket of this module's own, with C{SO_REUSEADDR} only,
        adopted by the reactor: Linux lets several sockets with
        C{SO_REUSEADDR} bind one UDP port and gives each of them every
        multicast datagram, whereas sockets that also set C{SO_REUSEPORT}
        (as C{listenMulticast}'s C{listenMultiple} does) form a group among
        which a datagram that came in through a network interface goes to
        I{one} socket only, when their memberships differ: a receiver
        joined on another interface then takes datagrams from one that
        should have them.  Elsewhere (the BSDs need C{SO_REUSEPORT}),
        and for a reactor that cannot adopt sockets, C{listenMulticast}
        with C{listenMultiple}.

        @raise ListenError: the port cannot be bound.
        """
        protocol = _ReceiverProtocol(self)
        # One byte more than the bound: a longer datagram is seen.
        size = self.framing.receiveSize
        if sys.platform.startswith("linux") and IReactorSocket.providedBy(self._reactor):
            sock = socket.socket(self.family, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setblocking(False)
                try:
                    sock.bind((bindTo, self._port, 0, scope) if scope else (bindTo, self._port))
                except OSError as e:
                    raise ListenError(f"cannot listen on {where}: {e.strerror or e}") from e
                return self._reactor.adoptDatagramPort(sock.fileno(), self.family, protocol, size)
            finally:
                # The port holds a duplicate of the socket.
                sock.close()
        try:
            return self._reactor.listenMulticast(
                self._port, protocol, interface=bindTo, maxPacketSize=size, listenMultiple=True
            )
        except CannotListenError as e:
            raise _cannotListen(e, f"cannot listen on {where}") from e

    def stop(self) -> Deferred[None]:
        """
        Leave the group and close the socket.

        @return: fires once the socket is closed; at once if not started.
        """
        listening, self._listening = self._listening, None
        self._events.stop()
        if listening is None:
            return succeed(None)
        d = listening.stopListening()
        return d if d is not None else succeed(None)

    def _datagramReceived(self, datagram: bytes, address: tuple[str, int]) -> None:
        if len(datagram) > self.framing.maxMessageLength:
            self._events.record(
                "datagramTooLong",
                "Dropped a datagram of more than {maxMessageLength} bytes to {group} from "
                "{sender}: longer than maxMessageLength",
                group=self.group,
                sender=_describe(*address),
                length=len(datagram),
                maxMessageLength=self.framing.maxMessageLength,
            )
            self.messageTooLong(len(datagram), address)
            return
        for message in self.framing.messages(datagram):
            try:
                self.messageReceived(message, address)
            except Exception:
                log.failure(
                    "onMessage of the multicast receiver of {group} failed",
                    group=self.group,
                )

    def messageReceived(self, message: bytes, address: tuple[str, int]) -> None:
        """
        One message of the group, from C{address}; calls C{onMessage}.
        """
        if self.onMessage is not None:
            self.onMessage(message, address)

    def messageTooLong(self, length: int, address: tuple[str, int]) -> None:
        """
        A datagram from C{address} longer than C{maxMessageLength} was
        dropped, counted (C{datagramTooLong}) and logged already (the first
        in full, then a summary of the count); does nothing more.

        @param length: at least C{maxMessageLength + 1}: more than that is
            not read.
        """


class MulticastSender:
    """
    Sends messages to a multicast group: each L{send} is one datagram.
    """

    def __init__(
        self,
        group: str,
        port: int,
        *,
        interface: str | None = None,
        ttl: int = 1,
        loopback: bool = True,
        delimiter: bytes | str | None = None,
        maxMessageLength: int = DEFAULT_MAX_DATAGRAM,
        reactor: Any = None,
    ) -> None:
        """
        @param group: the group's address: IPv4 (C{239.255.0.1}) or IPv6
            (C{ff15::1}).
        @param port: the UDP port the receivers listen on (1-65535).
        @param interface: the interface to send through: its address (of
            the group's family), its name (C{"eth0"}; for IPv4 groups on
            Linux only) or index; C{None}, the one the system routes the
            group through.
        @param ttl: the TTL (IPv4) or hop limit (IPv6) of the datagrams,
            0-255: 1 keeps them on the local network, 0 on this host.
        @param loopback: whether receivers on this host get the datagrams
            sent through a real interface (through the loopback interface
            they always do).
        @param delimiter: C{None}, one message per datagram; otherwise the
            bytes appended to each message.
        @param maxMessageLength: the longest datagram sent (the message and
            its delimiter); a longer one is refused.
        @raise ValueError: the group is not a multicast address, the port,
            TTL or bound is out of range (L{PortError} for the port), the
            interface is of the other family, or missing for an IPv6 group
            of link-local scope (C{ff02::1}).
        """
        self.family, self.group = _parseGroup(group)
        self._port = _checkPort(port, 1)
        self.interface = _checkInterface(interface, self.family)
        if self.interface is None and _needsInterface(self.family, self.group):
            raise ValueError(
                f"{self.group} is a group of one link (or one interface): give its interface"
            )
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 255:
            raise ValueError(f"ttl must be 0-255, not {ttl!r}")
        self.ttl = ttl
        self.loopback = bool(loopback)
        self.framing = _framing(delimiter, maxMessageLength, self.family)
        self._reactor = reactor if reactor is not None else defaultReactor()
        self._events = EventSummary(log, self._reactor)
        self._listening: Any = None
        self._destination = (self.group, self._port)

    @property
    def port(self) -> int:
        """
        The port the datagrams are sent to.
        """
        return self._port

    @property
    def eventCounts(self) -> dict[str, int]:
        """
        Messages not sent, by kind: C{sendBufferFull}, the socket's buffer
        was full (the datagram is dropped, as UDP drops datagrams);
        C{sendFailed}, the system refused the datagram (no route to the
        group, for one).
        """
        return dict(self._events.counts)

    def start(self) -> Deferred[None]:
        """
        Open the socket and set its interface, TTL and loopback.

        @return: fires when the sender can send, or fails with
            L{ListenError}: the interface does not exist, or a socket
            option was refused; L{StartError} (-1) if started already.
        """
        if self._listening is not None:
            return fail(StartError("the multicast sender is started already", -1))
        try:
            try:
                _, outgoing = _multicastOptions(self.family, self.group, self.interface)
            except ListenError as e:
                raise ListenError(
                    f"cannot send to multicast group {self.group}: {e.args[0]}"
                ) from e
            v4 = self.family == socket.AF_INET
            try:
                listening = self._reactor.listenMulticast(
                    0, DatagramProtocol(), interface="" if v4 else "::"
                )
            except CannotListenError as e:
                raise _cannotListen(e, "cannot open a UDP socket to send from") from e
            handle = listening.getHandle()
            level = socket.IPPROTO_IP if v4 else socket.IPPROTO_IPV6
            try:
                what = "the interface"
                if outgoing is not None:
                    handle.setsockopt(
                        level, socket.IP_MULTICAST_IF if v4 else socket.IPV6_MULTICAST_IF, outgoing
                    )
                # IPv4's TTL and loopback are one byte (the BSDs take
                # nothing else, Linux takes that too); IPv6's are ints.
                what = "the TTL" if v4 else "the hop limit"
                handle.setsockopt(
                    level,
                    socket.IP_MULTICAST_TTL if v4 else socket.IPV6_MULTICAST_HOPS,
                    struct.pack("B", self.ttl) if v4 else self.ttl,
                )
                what = "loopback"
                handle.setsockopt(
                    level,
                    socket.IP_MULTICAST_LOOP if v4 else socket.IPV6_MULTICAST_LOOP,
                    struct.pack("B", self.loopback) if v4 else int(self.loopback),
                )
            except OSError as e:
                listening.stopListening()
                value = {
                    "the interface": self.interface,
                    "loopback": self.loopback,
                }.get(what, self.ttl)
                raise ListenError(
                    f"cannot set {what} ({value}) of multicast to {self.group}: {e.strerror or e}"
                ) from e
        except Exception:
            return fail()
        self._listening = listening
        log.info(
            "Multicast sender to {destination}: ttl {ttl}, loopback {loopback}{on}",
            destination=_describe(*self._destination),
            ttl=self.ttl,
            loopback="on" if self.loopback else "off",
            on=f", interface {self.interface}" if self.interface else "",
        )
        return succeed(None)

    def send(self, data: bytes | str) -> bool:
        """
        Send one message to the group, as one datagram (with the delimiter
        appended, if there is one).

        @return: whether the datagram was handed to the system: C{False} if
            the sender is not started, the message holds the delimiter or
            would make a datagram longer than C{maxMessageLength} (nothing
            is sent), or the system dropped it (counted in
            L{eventCounts}).
        """
        return self._sendDatagram(self.framing.frame(data))

    def sendMessages(self, messages: list[bytes | str]) -> bool:
        """
        Send several messages in one datagram, each ended by the delimiter:
        what a receiver with the same delimiter delivers as that many
        messages.  Without a delimiter, a datagram is one message: use
        L{send}.

        @return: as L{send}, for the whole datagram: all of it or nothing.
        @raise ValueError: the sender has no delimiter.
        """
        if self.framing.delimiter is None:
            raise ValueError("several messages in one datagram need a delimiter")
        frames = [self.framing.frame(m) for m in messages]
        if any(f is None for f in frames):
            return False
        return self._sendDatagram(b"".join(f for f in frames if f is not None))

    def _sendDatagram(self, datagram: bytes | None) -> bool:
        listening = self._listening
        if listening is None or datagram is None or len(datagram) > self.framing.maxMessageLength:
            return False
        return writeDatagram(listening, datagram, self._destination, self._events)

    def stop(self) -> Deferred[None]:
        """
        Close the socket.

        @return: fires once it is closed; at once if not started.
        """
        listening, self._listening = self._listening, None
        self._events.stop()
        if listening is None:
            return succeed(None)
        d = listening.stopListening()
        return d if d is not None else succeed(None)
