# -*- test-case-name: tests.test_guarantees_fds,tests.test_compat -*-
"""
The accept loop of a server's TCP ports, and what it does when the process
runs out of file descriptors.

A TCP port given by number or as a C{tcp:}/C{tcp6:} description listens
with the listen queue of L{BACKLOG} and, on a POSIX reactor while the
private path of L{tcpsc._compat} is checked, with a L{_GuardedPort}: when
C{accept()} fails for want of descriptors (or memory), it stops accepting
for a moment instead of being called again at once in a loop, and leaves
the waiting connections in the listen queue until descriptors are free.
Any other endpoint is used as it is.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred, execute
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.runtime import platformType
from zope.interface import implementer

from . import _compat
from ._addresses import describeAddress
from ._errors import PortError
from ._events import plural
from ._limits import openFileLimit

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime

    class _IPortReactor(IReactorFDSet, IReactorTime):
        """
        What a L{_GuardedPort} needs of its reactor: watching descriptors, as
        every port does, and timers for its pauses.
        """


__all__ = ["BACKLOG", "resumeAccepting", "serverEndpoint"]

_log = Logger()

#: The listen queue of a port given by number, as the original's
#: C{listen(SOMAXCONN)}: Twisted's default of 50 makes a burst of clients
#: wait for SYN retransmissions long before the connection limit is reached.
BACKLOG = max(50, socket.SOMAXCONN)

#: C{accept()} errors about the one connection being accepted: go on.  Any
#: other error (EMFILE, ENFILE: out of file descriptors; ENOBUFS, ENOMEM) would
#: fail the same way if retried at once.
_SKIPPED = frozenset({errno.EPERM, errno.ECONNABORTED, errno.EPROTO, errno.EINTR})

#: How long a port stops accepting after running out of file descriptors:
#: the first pause, and the longest while it goes on (each is twice the one
#: before).  A connection of the server that closes ends the pause at once.
_FIRST_ACCEPT_PAUSE = 0.05
_LONGEST_ACCEPT_PAUSE = 1.0


class _GuardedPort(tcp.Port):
    """
    A TCP port that stops accepting for a moment when C{accept()} fails for
    want of file descriptors (or memory), instead of being called again at
    once by the reactor, as the listening socket is still readable.

    Twisted's own port, out of descriptors (EMFILE), frees a spare one it
    keeps for the purpose, accepts every waiting connection and closes it at
    once, logging a line for each; for the other errors (ENFILE: the
    system's table is full; ENOBUFS, ENOMEM), or without its spare
    descriptor, it retries in a busy loop: 100 % of a core, and a log line
    per attempt.  This port instead leaves the waiting connections in the
    listen queue (the kernel completes their TCP handshake; they are served
    as soon as descriptors are free), retries after 50 ms, then twice as
    long each time up to 1 s, or at once when one of the server's
    connections closes (L{resumeAccepting}).  Each episode is logged twice:
    when it starts and when the port accepts again.

    Its accept loop is Twisted's, with private names of Twisted's port
    (listed in L{tcpsc._compat.PRIVATE_NAMES}): a server uses this port
    only while L{tcpsc._compat.PRIVATE}, and Twisted's own otherwise.
    """

    # Both are given to the constructor (only a POSIX reactor, see
    # serverEndpoint, gets this port).
    factory: Factory
    reactor: _IPortReactor

    #: Where the episodes are logged: the server's log, given by
    #: L{_GuardedTCPEndpoint}.
    log = _log

    #: The most connections accepted per wakeup, or C{None} for Twisted's
    #: own rule (more while every attempt succeeds).  Processes that share
    #: one listening socket (the workers of C{--workers N}) take 1, so that
    #: a burst of connections is shared among them rather than taken by
    #: the first to wake.
    maxAccepts: int | None = None
    _retryCall: IDelayedCall | None = None
    # The listening socket, with its family, type and protocol for the
    # sockets it accepts (see _compat.acceptOne).
    _socketKind: tuple[Any, tuple[int, int, int] | None] | None = None
    _starvedSince: float | None = None
    _pause = _FIRST_ACCEPT_PAUSE
    _refusals = 0

    def doRead(self) -> None:
        accepted = 0
        # Twisted's note: the win32 event loop breaks with more than one
        # accept() per iteration.
        attempts = 1 if platformType == "win32" else self.numberAccepts
        if self.maxAccepts is not None:
            attempts = min(attempts, self.maxAccepts)
        listening = self.socket
        kind = self._socketKind
        if kind is None or kind[0] is not listening:
            kind = self._socketKind = (
                listening,
                (listening.family, listening.type, listening.proto)
                if isinstance(listening, socket.socket)
                else None,
            )
        for _ in range(attempts):
            try:
                skt, addr = _compat.acceptOne(listening, kind[1])
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                if e.errno in _SKIPPED:
                    continue
                # Out of descriptors, or anything else that would fail again
                # on the next attempt: never retry in a loop.
                self._starve(e)
                return
            accepted += 1
            if self._starvedSince is not None:
                self._recovered()
            self._serve(skt, addr)
        # Scale the accept loop to the traffic, as Twisted's port does.
        if accepted == self.numberAccepts:
            self.numberAccepts += 20
        else:
            self.numberAccepts = max(1, accepted)

    def _serve(self, skt: socket.socket, addr: Any) -> None:
        try:
            if len(addr) == 4:
                # IPv6: the scope id, if any, in the host.
                host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
                addr = (host[0], *addr[1:])
            protocol = self.factory.buildProtocol(self._buildAddr(addr))
            if protocol is None:
                skt.close()
                return
            session = self.sessionno
            self.sessionno = session + 1
            transport = self.transport(skt, protocol, addr, self, session, self.reactor)
        except Exception:
            skt.close()
            self.log.failure("Could not set up an accepted connection from {address}", address=addr)
            return
        try:
            protocol.makeConnection(transport)
        except Exception:
            self.log.failure("The protocol of an accepted connection failed to start")
            transport.abortConnection()

    def _starve(self, error: OSError) -> None:
        self.stopReading()
        self._refusals += 1
        now = self.reactor.seconds()
        if self._starvedSince is None:
            self._starvedSince = now
            self._pause = _FIRST_ACCEPT_PAUSE
            self.log.warn(
                "Cannot accept connections on {address}: {error}; waiting connections "
                "stay queued, retrying within {longest} s or as soon as a connection closes",
                address=describeAddress(self.getHost()),
                error=f"{errno.errorcode.get(error.errno or 0, error.errno)} "
                f"({error.strerror or error})",
                errno=error.errno,
                longest=_LONGEST_ACCEPT_PAUSE,
                openFiles=openFileLimit(),
            )
        else:
            self._pause = min(self._pause * 2, _LONGEST_ACCEPT_PAUSE)
        self._retryCall = self.reactor.callLater(self._pause, self._retry)

    def _retry(self) -> None:
        self._retryCall = None
        if self.connected and not self.disconnecting:
            self.startReading()

    def resumeAccepting(self) -> None:
        """
        Try to accept again now, if a lack of descriptors paused accepting:
        called when the server closed a connection, which freed one.
        """
        call = self._retryCall
        if call is not None and call.active():
            call.cancel()
            self._retry()

    def _recovered(self) -> None:
        since, self._starvedSince = self._starvedSince, None
        self.log.info(
            "Accepting connections on {address} again after {seconds:.1f} s ({failed})",
            address=describeAddress(self.getHost()),
            seconds=self.reactor.seconds() - (since or 0.0),
            attempts=self._refusals,
            failed=plural(self._refusals, "failed attempt"),
        )
        self._refusals = 0

    def connectionLost(self, reason: Failure) -> None:
        call, self._retryCall = self._retryCall, None
        if call is not None and call.active():
            call.cancel()
        super().connectionLost(reason)


@implementer(IStreamServerEndpoint)
class _GuardedTCPEndpoint:
    """
    Listens on TCP (IPv4 or IPv6, by the interface) with a L{_GuardedPort}.
    """

    def __init__(
        self, reactor: Any, port: int, backlog: int, interface: str, log: Logger | None = None
    ) -> None:
        self._reactor = reactor
        self._port = port
        self._backlog = backlog
        self._interface = interface
        self._log = log

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        return execute(self._listen, factory)

    def _listen(self, factory: Any) -> IListeningPort:
        port = _GuardedPort(self._port, factory, self._backlog, self._interface, self._reactor)
        if self._log is not None:
            port.log = self._log
        port.startListening()
        return port


def serverEndpoint(
    reactor: Any,
    port: int | str | IStreamServerEndpoint,
    interface: str = "",
    log: Logger | None = None,
) -> IStreamServerEndpoint:
    """
    The endpoint to listen on for C{port}: a port number (on C{interface};
    an IPv6 address listens on IPv6), a Twisted endpoint description, or an
    endpoint, used as it is.  TCP ports listen with a queue of L{BACKLOG}
    (unless the description gives its own C{backlog=}) and, where they can,
    with a L{_GuardedPort} that logs its pauses to C{log}.

    @raise PortError: a number outside 0-65535, or not a port, description
        or endpoint.
    """
    if isinstance(port, bool):
        raise PortError(f"port must be a number, not {port!r}")
    if isinstance(port, int):
        if not 0 <= port <= 65535:
            raise PortError(f"port {port} is outside 0-65535")
        if _compat.PRIVATE and isinstance(reactor, PosixReactorBase):
            return _GuardedTCPEndpoint(reactor, port, BACKLOG, interface, log)
        if ":" in interface:
            return TCP6ServerEndpoint(reactor, port, backlog=BACKLOG, interface=interface)
        return TCP4ServerEndpoint(reactor, port, backlog=BACKLOG, interface=interface)
    if isinstance(port, str):
        if port.isdigit():
            return serverEndpoint(reactor, int(port), interface, log)
        try:
            endpoint = serverFromString(reactor, port)
        except (ValueError, TypeError) as e:
            raise PortError(f"not a port or endpoint description: {port!r} ({e})") from e
        if "backlog=" not in port and isinstance(
            endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint)
        ):
            # A description without backlog= gets Twisted's queue of 50; use
            # the same queue as a port number does.
            endpoint = serverFromString(reactor, f"{port}:backlog={BACKLOG}")
        return _guarded(reactor, endpoint, log)
    if IStreamServerEndpoint.providedBy(port):
        return port
    raise PortError(f"not a port, endpoint description or endpoint: {port!r}")


def _guarded(
    reactor: Any, endpoint: IStreamServerEndpoint, log: Logger | None
) -> IStreamServerEndpoint:
    """
    The same TCP endpoint with a port that pauses accepting when out of
    file descriptors; any other endpoint, or without the private path
    (see L{_compat}), the endpoint as it is.
    """
    if not isinstance(reactor, PosixReactorBase):
        return endpoint
    arguments = _compat.tcpEndpointArguments(endpoint)
    if arguments is None:
        return endpoint
    return _GuardedTCPEndpoint(reactor, *arguments, log=log)


def resumeAccepting(ports: Iterable[IListeningPort]) -> None:
    """
    A connection closed, so a descriptor is free again: the ports among
    C{ports} that stopped accepting for want of descriptors try again now.
    """
    for port in ports:
        if isinstance(port, _GuardedPort) and port._retryCall is not None:
            port.resumeAccepting()
