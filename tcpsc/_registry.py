# -*- test-case-name: tests.test_registry -*-
"""
The registry of a server's connections: ids, lookup, send, broadcast, and
the counts its limits need.

L{IConnectionRegistry} is what L{tcpsc.Server} asks of a registry;
L{LocalRegistry} keeps the connections of one process in dictionaries.  The
server decides whom to accept and when a connection is established; the
registry names connections and reaches them.  Ids are positive integers
counted up and never reused: an id an application kept after its connection
ended never reaches a client that came later.

The interface is a C{zope.interface} one, as Twisted declares its own: a
second implementation is checked against it with C{verifyObject} in its
tests, and by mypy (with the mypy-zope plugin) where it is declared with
C{@implementer}; a C{typing.Protocol} would give the second of those only.

A connection goes through three states in a registry: I{registered} (counted
by L{IConnectionRegistry.openCount} and L{IConnectionRegistry.peerCount},
found by L{IConnectionRegistry.connections}, given its id), I{established}
(besides, listed by L{IConnectionRegistry.ids} and reached by C{lookup},
C{send}, C{broadcast}, C{address} and C{certificate}) and gone
(L{IConnectionRegistry.unregister}).

What another implementation must provide
========================================

A registry that spans processes and hosts (one directory shared by many
nodes, each with its own L{LocalRegistry}-like part for the connections it
holds) implements the same interface, with these promises:

  - B{Ids}: positive integers, unique across every node of the registry and
    never reused while it lives, issued by C{register} without waiting for
    another process (for instance from a block of ids reserved in advance).
    A registry of datagram peers hands out ids of the same kind, so that an
    application cannot tell a peer's id from a connection's.
  - B{Counts} (C{openCount}, C{peerCount}, C{connections}) are the local
    node's: the limits of a server protect its own process.
  - B{ids()} lists the established connections of every node, ascending.
  - B{send(id, data)} to a local id writes at once, or returns C{False} with
    nothing written, exactly as L{LocalRegistry.send}.  To the id of another
    node it returns C{True} when the message was accepted for delivery to
    that node (the node writes it, or drops it if the connection has gone or
    refuses it, with no answer to the sender), and C{False} when the id is
    not established anywhere as far as the directory knows.  Messages from
    one node to one connection arrive in the order they were sent.
  - B{broadcast(data, exclude)} reaches every established connection of
    every node exactly once, excluded ids left out wherever they are; it
    returns the number of local connections written to (those of other
    nodes are written later, by their node, with its own L{Broadcaster}).
  - B{address(id)} and B{certificate(id)} answer for the ids of every node
    (the node that holds a connection publishes its peer address and
    certificate when it is established).
  - B{lookup(id)} returns a protocol for local ids only: the protocol object
    of another process cannot be had.

A registry of datagram peers (UDP) can implement the interface for its
peers (no certificates: C{certificate} returns C{None}); it shares the kind
of ids, C{send}/C{broadcast} and C{address}, not this class, whose
broadcast path writes to stream transports.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface, implementer

from ._broadcast import Broadcaster
from ._errors import ServerError
from ._framing import MessageProtocol, StreamProtocol, _ConnectionBase
from ._tls import peerCertificate

if TYPE_CHECKING:
    from cryptography import x509
    from twisted.internet.interfaces import IReactorTime
    from twisted.logger import Logger

    from ._events import EventSummary

__all__ = ["IConnectionRegistry", "LocalRegistry"]


class IConnectionRegistry(Interface):
    """
    The connections of a server by id: registered while they are open,
    reachable once established.  See the module's docstring for what an
    implementation that spans processes promises.
    """

    registered = Attribute("How many connections this node registered in all.")

    def register(connection: _ConnectionBase, peerHost: str | None = None) -> int:
        """
        Count a new connection, give it its id (set as its C{connectionId}
        too) and return it.

        @param peerHost: the peer's host, counted in L{peerCount}; C{None}
            not to count the connection per peer.
        """

    def establish(connectionId: int) -> None:
        """
        Make a registered connection reachable: listed, looked up, sent to.
        """

    def withdraw(connectionId: int) -> None:
        """
        Make an established connection unreachable again while it is still
        open (and counted): it is being closed.
        """

    def unregister(connectionId: int) -> _ConnectionBase | None:
        """
        The connection ended: forget it.  Nothing happens for an unknown id.

        @return: its protocol, or C{None} for an unknown id.
        """

    def connections() -> Mapping[int, _ConnectionBase]:
        """
        This node's registered connections, established or not, by id: a
        view, to read and not to change.
        """

    def openCount() -> int:
        """
        How many connections this node has registered and not unregistered.
        """

    def peerCount(host: str) -> int:
        """
        How many of those were registered with C{host} as their peer host.
        """

    def lookup(connectionId: int) -> MessageProtocol | StreamProtocol | None:
        """
        The protocol of an established local connection, or C{None}.
        """

    def ids() -> list[int]:
        """
        The ids of the established connections, ascending.
        """

    def send(connectionId: int, data: bytes | str) -> bool:
        """
        Send a message (continuous mode: bytes) to one established
        connection.

        @return: C{False} (and nothing written) for an unknown id or a
            message the connection refuses.
        """

    def broadcast(data: bytes | str, exclude: int | Collection[int] | None = None) -> int:
        """
        Send one message to every established connection but those in
        C{exclude}.

        @return: how many local connections it was written to.
        """

    def address(connectionId: int) -> tuple[str, int]:
        """
        The peer address C{(host, port)} of an established connection.

        @raise ServerError: unknown id.
        """

    def certificate(connectionId: int) -> x509.Certificate | None:
        """
        The certificate the peer of an established connection presented, or
        C{None}.

        @raise ServerError: unknown id.
        """


@implementer(IConnectionRegistry)
class LocalRegistry:
    """
    The connections of one process, in dictionaries.

    @ivar broadcaster: the fan-out of L{broadcast}, with its policies and
        counts.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        events: EventSummary,
        log: Logger,
        maxBroadcastSkips: int | None = None,
        idSource: Callable[[], int] | None = None,
        *,
        firstId: int = 1,
        idStep: int = 1,
    ) -> None:
        """
        @param reactor: the reactor of the broadcasts' turns.
        @param events: where the broadcasts record a connection that starts
            missing them.
        @param log: where the broadcasts log a connection closed for missing
            too many.
        @param maxBroadcastSkips: see L{Broadcaster.maxBroadcastSkips}.
        @param idSource: called for the id of each connection registered,
            instead of counting them here (a cluster's registry issues ids
            unique across its nodes so); what it raises, C{register} raises.
        @param firstId: the id of the first connection.
        @param idStep: how much each id is above the one before.  The
            worker processes of one daemon (C{--workers N}) number their
            connections apart this way, with no coordination: worker C{i}
            (from 0) of C{N} issues C{i+1, i+1+N, i+1+2N, ...}, so that an
            id in the log names one connection of the whole daemon.
        @raise ValueError: C{firstId} or C{idStep} below 1.
        """
        if firstId < 1 or idStep < 1:
            raise ValueError(f"firstId and idStep must be 1 or more, not {firstId} and {idStep}")
        self._nextId = firstId
        self._idSource = idSource
        self._idStep = idStep
        self._registered = 0
        self._open: dict[int, _ConnectionBase] = {}
        self._established: dict[int, _ConnectionBase] = {}
        # Open connections by peer host, and the host of each connection
        # counted so.
        self._perPeer: dict[str, int] = {}
        self._peerHosts: dict[int, str] = {}
        self.broadcaster = Broadcaster(self._established, reactor, events, log, maxBroadcastSkips)

    @property
    def registered(self) -> int:
        return self._registered

    def register(self, connection: _ConnectionBase, peerHost: str | None = None) -> int:
        if self._idSource is not None:
            connectionId = self._idSource()
        else:
            connectionId = self._nextId
            self._nextId = connectionId + self._idStep
        self._registered += 1
        connection.connectionId = connectionId
        self._open[connectionId] = connection
        if peerHost is not None:
            self._perPeer[peerHost] = self._perPeer.get(peerHost, 0) + 1
            self._peerHosts[connectionId] = peerHost
        return connectionId

    def establish(self, connectionId: int) -> None:
        self._established[connectionId] = self._open[connectionId]
        self.broadcaster.changed()

    def withdraw(self, connectionId: int) -> None:
        if self._established.pop(connectionId, None) is not None:
            self.broadcaster.changed()

    def unregister(self, connectionId: int) -> _ConnectionBase | None:
        connection = self._open.pop(connectionId, None)
        self._established.pop(connectionId, None)
        self.broadcaster.forget(connectionId)
        host = self._peerHosts.pop(connectionId, None)
        if host is not None:
            remaining = self._perPeer.get(host, 1) - 1
            if remaining > 0:
                self._perPeer[host] = remaining
            else:
                self._perPeer.pop(host, None)
        return connection

    def connections(self) -> Mapping[int, _ConnectionBase]:
        return self._open

    def openCount(self) -> int:
        return len(self._open)

    def peerCount(self, host: str) -> int:
        return self._perPeer.get(host, 0)

    def lookup(self, connectionId: int) -> MessageProtocol | StreamProtocol | None:
        try:
            return self._established.get(connectionId)  # type: ignore[return-value]
        except TypeError:  # not hashable: no such id
            return None

    def ids(self) -> list[int]:
        return sorted(self._established)

    def send(self, connectionId: int, data: bytes | str) -> bool:
        """
        See L{IConnectionRegistry.send}: also C{False} for a congested
        connection that already accepted its C{maxPendingOutput} bytes.
        """
        protocol = self.lookup(connectionId)
        if protocol is None:
            return False
        if isinstance(protocol, MessageProtocol):
            return protocol.sendMessage(data)
        return protocol.sendData(data)

    def broadcast(self, data: bytes | str, exclude: int | Collection[int] | None = None) -> int:
        return self.broadcaster.broadcast(data, exclude)

    def _require(self, connectionId: int) -> _ConnectionBase:
        protocol = self.lookup(connectionId)
        if protocol is None:
            raise ServerError(f"no connected client with id {connectionId!r}")
        return protocol

    def address(self, connectionId: int) -> tuple[str, int]:
        peer = self._require(connectionId).transport.getPeer()
        return peer.host, peer.port

    def certificate(self, connectionId: int) -> x509.Certificate | None:
        return peerCertificate(self._require(connectionId).transport)
