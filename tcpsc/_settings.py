"""
The settings of a server's or a client's connections, as one frozen value.

L{Settings} holds every limit, timeout and bound that L{tcpsc.Server},
L{tcpsc.Client}, the blocking classes and the daemon's options share, with
its default and its check, so that a new setting is added here and reaches
all of them.  The keyword arguments of those classes are spellings of these
fields.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields, replace
from typing import Any, Final, Generic, TypeVar, cast, overload

from ._framing import DEFAULT_CLOSE_TIMEOUT, MessageProtocol, StreamProtocol, _ConnectionBase

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "DEFAULT_FIRST_BYTE_TIMEOUT",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_CONNECTIONS_PER_PEER",
    "DEFAULT_MAX_PEERS",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_PEER_IDLE_TIMEOUT",
    "FROM_PROTOCOL",
    "FromProtocol",
    "SettingAttribute",
    "Settings",
    "protocolClass",
    "settingsFrom",
]


class FromProtocol(enum.Enum):
    """
    The type of L{FROM_PROTOCOL}: a setting left to the protocol class.
    """

    FROM_PROTOCOL = "the protocol's own"

    def __repr__(self) -> str:
        return "FROM_PROTOCOL"


#: The value of a setting that the protocol class decides: its class
#: attribute of that name (C{delimiter}, C{maxMessageLength},
#: C{messageAppend}, C{maxPendingOutput}) is used as it is.
FROM_PROTOCOL: Final = FromProtocol.FROM_PROTOCOL

#: The most connections a server keeps open at once.
DEFAULT_MAX_CONNECTIONS: Final = 4096

#: The most connections a server keeps open at once from one peer address:
#: one host cannot take every slot of the connection limit.
DEFAULT_MAX_CONNECTIONS_PER_PEER: Final = 256

#: Bytes a server's connections may hold in their buffers together.
DEFAULT_MEMORY_BUDGET: Final = 96 * 1024 * 1024

#: The most peers a datagram server keeps at once: past it, the one heard
#: from least recently is forgotten.
DEFAULT_MAX_PEERS: Final = 65_536

#: Seconds after which a datagram server forgets a peer it heard nothing
#: from.
DEFAULT_PEER_IDLE_TIMEOUT: Final = 300.0

#: Seconds a plain TCP client has to send its first byte: a connection that
#: sends nothing cannot hold a slot for ever.
DEFAULT_FIRST_BYTE_TIMEOUT: Final = 10.0

#: Seconds a TLS client has to complete its handshake.
DEFAULT_HANDSHAKE_TIMEOUT: Final = 10.0

#: The fields that are class attributes of the protocols, applied to each
#: connection's protocol.
_PROTOCOL_FIELDS: Final = ("delimiter", "maxMessageLength", "messageAppend", "maxPendingOutput")

#: The fields of fragmented mode, which a L{StreamProtocol} does not have.
_FRAGMENTED_FIELDS: Final = ("delimiter", "maxMessageLength", "messageAppend")


def _isCount(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _isSeconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class Settings:
    """
    The limits, timeouts and bounds of a server's connections, or a
    client's.  Frozen: derive a changed copy with L{replace}.

    The fields marked I{server} apply to L{tcpsc.Server} and the blocking
    servers only; a client uses the others.  The fields marked I{datagram
    server} apply to L{tcpsc.DatagramServer} (and the blocking UDP server)
    only; it also uses C{delimiter}, C{maxMessageLength}, C{messageAppend}
    and C{logEveryEvent}, and no other.

    @ivar delimiter: the bytes that end each message (fragmented mode);
        a str is encoded as UTF-8.  L{FROM_PROTOCOL} (the default): the
        protocol class's own, C{b"\\n"} for L{tcpsc.MessageProtocol}.
    @ivar maxMessageLength: the longest message received or sent, in bytes,
        or C{None} for no limit; L{FROM_PROTOCOL} (the default): the
        protocol class's own, 16 MiB for L{tcpsc.MessageProtocol}.
    @ivar messageAppend: bytes added to every message sent, before the
        delimiter; L{FROM_PROTOCOL} (the default): the protocol class's own,
        C{b""} for L{tcpsc.MessageProtocol}.
    @ivar maxPendingOutput: bytes of output a connection accepts while its
        peer does not keep up (beyond them a send returns C{False}), or
        C{None} for no bound; L{FROM_PROTOCOL} (the default): the protocol
        class's own, 4 MiB for the protocols of tcpsc.
    @ivar closeTimeout: seconds every close tcpsc starts gives the peer to
        take the last output and, over TLS, close_notify, before the
        connection is aborted.
    @ivar handshakeTimeout: I{server}: seconds a TLS client has to complete
        its handshake before it is disconnected; C{None} for no limit.
    @ivar idleTimeout: I{server}: seconds without any byte received or sent
        after which a connection is closed; C{None} (the default) for never.
    @ivar firstByteTimeout: I{server}: seconds a plain TCP connection has to
        send its first byte before it is closed, or C{None} for no such
        limit (a server whose clients only listen).  TLS connections have
        C{handshakeTimeout} instead.
    @ivar maxConnections: I{server}: the most connections open at once
        (established or still in the TLS handshake); the next one is closed
        at once and a warning logged.
    @ivar maxConnectionsPerPeer: I{server}: the most connections open at
        once from one peer address, or C{None} for no such limit.
    @ivar maxBroadcastSkips: I{server}: how many broadcasts in a row may
        leave out a congested connection before it is closed, or C{None}
        for never (see L{tcpsc.Server.broadcast}).
    @ivar memoryBudget: I{server}: the most bytes, or C{None} for no bound,
        the server's connections may hold in their buffers together (see
        L{tcpsc.Server.memoryBudget}).
    @ivar logConnections: I{server}: whether each connection established
        and each one closed is logged (at info level).  Refusals, failed
        handshakes and errors are logged either way.
    @ivar logEveryEvent: I{server}: whether the events that repeat
        (refusals, failed handshakes, dropped messages) are each logged, at
        debug level, besides the first of each kind in full and the
        summaries logged either way.
    @ivar peerIdleTimeout: I{datagram server}: seconds without a datagram
        from a peer after which it is forgotten (300 by default), or
        C{None} to forget peers only when the table is full.
    @ivar maxPeers: I{datagram server}: the most peers kept at once (65,536
        by default); a datagram from a new address when the table is full
        makes the server forget the peer heard from least recently.
    @ivar broadcastWindow: I{datagram server}: a broadcast reaches the peers
        heard from within this many seconds; C{None} (the default) for
        every peer kept, the same as C{peerIdleTimeout}.
    """

    delimiter: bytes | FromProtocol = FROM_PROTOCOL
    maxMessageLength: int | FromProtocol | None = FROM_PROTOCOL
    messageAppend: bytes | FromProtocol = FROM_PROTOCOL
    maxPendingOutput: int | FromProtocol | None = FROM_PROTOCOL
    closeTimeout: float = DEFAULT_CLOSE_TIMEOUT
    handshakeTimeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT
    idleTimeout: float | None = None
    firstByteTimeout: float | None = DEFAULT_FIRST_BYTE_TIMEOUT
    maxConnections: int = DEFAULT_MAX_CONNECTIONS
    maxConnectionsPerPeer: int | None = DEFAULT_MAX_CONNECTIONS_PER_PEER
    maxBroadcastSkips: int | None = None
    memoryBudget: int | None = DEFAULT_MEMORY_BUDGET
    logConnections: bool = True
    logEveryEvent: bool = False
    peerIdleTimeout: float | None = DEFAULT_PEER_IDLE_TIMEOUT
    maxPeers: int = DEFAULT_MAX_PEERS
    broadcastWindow: float | None = None

    def __post_init__(self) -> None:
        """
        Check every field; encode C{str} delimiters and appends.

        @raise ValueError: a field out of its range, naming the field and
            the value.
        """
        for name in ("delimiter", "messageAppend"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = value.encode("utf-8")
                object.__setattr__(self, name, value)
            if value is FROM_PROTOCOL:
                continue
            if not isinstance(value, bytes) or (name == "delimiter" and not value):
                what = "one or more bytes" if name == "delimiter" else "bytes"
                raise ValueError(f"{name} must be {what}, not {value!r}")
        if self.maxMessageLength is not FROM_PROTOCOL and self.maxMessageLength is not None:
            if not _isCount(self.maxMessageLength, 0):
                raise ValueError(
                    f"maxMessageLength must be a non-negative int or None, not "
                    f"{self.maxMessageLength!r}"
                )
        if self.maxPendingOutput is not FROM_PROTOCOL and self.maxPendingOutput is not None:
            if not _isCount(self.maxPendingOutput, 0):
                raise ValueError(
                    f"maxPendingOutput must be a non-negative int or None, not "
                    f"{self.maxPendingOutput!r}"
                )
        if (
            isinstance(self.delimiter, bytes)
            and isinstance(self.messageAppend, bytes)
            and self.messageAppend
            and self.delimiter in self.messageAppend
        ):
            raise ValueError(
                f"messageAppend {self.messageAppend!r} contains the delimiter {self.delimiter!r}"
            )
        if not _isCount(self.maxConnections, 1):
            raise ValueError(f"maxConnections must be at least 1, not {self.maxConnections}")
        for name in ("maxConnectionsPerPeer", "maxBroadcastSkips"):
            value = getattr(self, name)
            if value is not None and not _isCount(value, 1):
                raise ValueError(f"{name} must be an int of at least 1 or None, not {value!r}")
        if self.memoryBudget is not None and not _isCount(self.memoryBudget, 1):
            raise ValueError(
                f"memoryBudget must be a positive number of bytes or None, not "
                f"{self.memoryBudget!r}"
            )
        if not _isCount(self.maxPeers, 1):
            raise ValueError(f"maxPeers must be an int of at least 1, not {self.maxPeers!r}")
        for name in (
            "firstByteTimeout",
            "handshakeTimeout",
            "idleTimeout",
            "peerIdleTimeout",
            "broadcastWindow",
        ):
            value = getattr(self, name)
            if value is not None and not _isSeconds(value):
                raise ValueError(
                    f"{name} must be a positive number of seconds or None, not {value!r}"
                )
        if not _isSeconds(self.closeTimeout):
            raise ValueError(
                f"closeTimeout must be a positive number of seconds, not {self.closeTimeout!r}"
            )

    def replace(self, **changes: Any) -> Settings:
        """
        A copy with C{changes} made (and checked).

        @raise TypeError: a name that is not a field.
        @raise ValueError: a value out of its field's range.
        """
        return replace(self, **changes)

    def protocolAttributes(
        self, protocol: type[MessageProtocol] | type[StreamProtocol]
    ) -> dict[str, Any]:
        """
        The attributes to set on each connection of C{protocol}: the fields
        of the protocol that are not L{FROM_PROTOCOL}.

        @raise ValueError: a fragmented-mode field given for a
            L{StreamProtocol}, or a C{messageAppend} that contains the
            protocol's own delimiter.
        """
        if issubclass(protocol, StreamProtocol):
            given = [
                name for name in _FRAGMENTED_FIELDS if getattr(self, name) is not FROM_PROTOCOL
            ]
            if given:
                raise ValueError(
                    "delimiter, messageAppend and maxMessageLength apply to "
                    "fragmented mode only, not to stream=True"
                )
        attributes = {
            name: getattr(self, name)
            for name in _PROTOCOL_FIELDS
            if getattr(self, name) is not FROM_PROTOCOL
        }
        if issubclass(protocol, MessageProtocol):
            delimiter = attributes.get("delimiter", protocol.delimiter)
            append = attributes.get("messageAppend", protocol.messageAppend)
            if append and delimiter in append:
                raise ValueError(f"messageAppend {append!r} contains the delimiter {delimiter!r}")
        return attributes


#: The names of the fields of L{Settings}, in order.
SETTING_NAMES: Final = tuple(field.name for field in fields(Settings))


#: The fields whose keyword spells "the protocol's own" as C{None} too, as
#: it did before L{FROM_PROTOCOL}.
_NONE_FROM_PROTOCOL: Final = frozenset({"delimiter", "messageAppend"})


def _isDefault(name: str, value: object) -> bool:
    default = getattr(Settings, name)
    if value is default:
        return True
    if value is None and name in _NONE_FROM_PROTOCOL:
        return True
    return type(value) is type(default) and value == default


def settingsFrom(owner: str, settings: Settings | None, keywords: dict[str, Any]) -> Settings:
    """
    The settings of a class that takes both C{settings=} and keyword
    arguments that spell some of its fields (whose defaults are the fields'
    defaults).

    The rule: a keyword equal to its field's default is as if it were not
    given.  Without C{settings}, the keywords that differ from their
    defaults make the value; with C{settings}, a keyword that differs is
    refused: give a setting one way or the other, never both, so that no
    precedence is left to guess.  C{None} for C{delimiter} or
    C{messageAppend} means L{FROM_PROTOCOL}.

    @param owner: the class, for the message (C{"Server"}).
    @param keywords: the keyword arguments as given, by field name.
    @raise TypeError: C{settings} is not a L{Settings}, or keywords that
        differ from their defaults were given with it (naming them).
    @raise ValueError: a keyword out of its field's range (see L{Settings}).
    """
    changed = {name: value for name, value in keywords.items() if not _isDefault(name, value)}
    if settings is None:
        return Settings(**changed) if changed else _DEFAULT_SETTINGS
    if not isinstance(settings, Settings):
        raise TypeError(f"settings must be a tcpsc.Settings, not {settings!r}")
    if changed:
        names = ", ".join(sorted(changed))
        raise TypeError(
            f"{owner}() takes {names} either in settings= or as keyword arguments, not both"
        )
    return settings


def protocolClass(
    protocol: type[_ConnectionBase] | None, stream: bool
) -> type[MessageProtocol] | type[StreamProtocol]:
    """
    The protocol class of a server or client: C{protocol}, checked, or the
    default of the mode.

    @raise TypeError: not a subclass of L{MessageProtocol} or
        L{StreamProtocol}, or C{stream} with a L{MessageProtocol}.
    """
    if protocol is None:
        return StreamProtocol if stream else MessageProtocol
    if not (isinstance(protocol, type) and issubclass(protocol, _ConnectionBase)):
        raise TypeError(
            f"protocol must be a subclass of tcpsc.MessageProtocol or "
            f"tcpsc.StreamProtocol, not {protocol!r}"
        )
    if stream and not issubclass(protocol, StreamProtocol):
        raise TypeError("stream=True needs a StreamProtocol subclass")
    # The two classes of tcpsc are the only subclasses of _ConnectionBase.
    return protocol  # type: ignore[return-value]


#: The settings of everything left at its default, made once.
_DEFAULT_SETTINGS: Final = Settings()


_T = TypeVar("_T")


class SettingAttribute(Generic[_T]):
    """
    An attribute of a server or client that is the field of the same name
    of its settings: read from its C{_settings}, and set by assigning its
    C{settings} a checked copy with that field changed, so that the
    settings in force stay one frozen value.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, instance: None, owner: type) -> SettingAttribute[_T]: ...

    @overload
    def __get__(self, instance: object, owner: type) -> _T: ...

    def __get__(self, instance: object, owner: type) -> SettingAttribute[_T] | _T:
        if instance is None:
            return self
        return cast(_T, getattr(instance._settings, self._name))  # type: ignore[attr-defined]

    def __set__(self, instance: Any, value: _T) -> None:
        instance.settings = instance._settings.replace(**{self._name: value})
