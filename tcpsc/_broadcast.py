# -*- test-case-name: tests.test_broadcast_coalescing,tests.test_guarantees_fairness -*-
"""
One message to many connections: the fan-out of a registry's broadcast.

A broadcast validates and frames the message once, and writes the frame to
the connections in the common state (ready, not congested, no read being
handled) without a call per connection, through L{tcpsc._compat.writeToAll}.
Two policies keep it bounded whatever the peers do:

  - slow consumers: a congested connection without room for the message is
    I{skipped} (it misses the message, the others get it); with
    C{maxBroadcastSkips}, a connection skipped that many times in a row is
    aborted; without it, a connection found full is left out of the rest of
    the reactor turn's broadcasts without a look at each;
  - bounded work per turn: once a turn's broadcasts went to about
    L{TURN_BROADCAST_WORK} connections, the connection whose read is being
    handled stops being read until the next turn, so that a flood of
    messages to relay cannot make one turn last seconds, and senders take
    turns.

It is its own object, beside the registry that owns the connections, so that
a registry that spans processes delivers what other nodes broadcast to its
local connections with the same fan-out and the same bounds.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any, cast

from . import _compat
from ._addresses import describeAddress
from ._events import plural
from ._framing import MessageProtocol, StreamProtocol, _ConnectionBase

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime
    from twisted.logger import Logger

    from ._events import EventSummary

__all__ = ["TURN_BROADCAST_WORK", "Broadcaster"]

#: How many connections the broadcasts of one reactor turn may write to (or
#: skip) before the connection whose read is being handled stops being read
#: until the next turn.
TURN_BROADCAST_WORK = 20_000


class Broadcaster:
    """
    The broadcasts of one registry to its local established connections.

    @ivar maxBroadcastSkips: how many broadcasts in a row may leave out a
        congested connection before it is aborted, or C{None} for never.
    @ivar skips: how many times a broadcast left out a congested
        connection, in all.
    @ivar messages: how many frames were written by the direct path (not
        through a protocol's own counts), for the metrics.
    @ivar bytesWritten: the bytes of those frames.
    """

    def __init__(
        self,
        established: dict[int, _ConnectionBase],
        reactor: IReactorTime,
        events: EventSummary,
        log: Logger,
        maxBroadcastSkips: int | None = None,
    ) -> None:
        """
        @param established: the established connections by id, kept by the
            registry (read here, never changed); call L{changed} and
            L{forget} when it changes.
        @param reactor: for the call that starts the next turn.
        @param events: where the first skip of a connection is recorded.
        @param log: where a connection closed for its skips is logged.
        """
        self._established = established
        self._reactor = reactor
        self._events = events
        self._log = log
        self.maxBroadcastSkips = maxBroadcastSkips
        self.skips = 0
        self.messages = 0
        self.bytesWritten = 0
        # Broadcast work done in this reactor turn, the call that starts the
        # next turn, and the connections paused until then.
        self._turnWork = 0
        self._turnCall: IDelayedCall | None = None
        self._throttled: list[_ConnectionBase] = []
        # While a paused connection is resumed, its share of the turn's work.
        self._workLimit = TURN_BROADCAST_WORK
        # Broadcasts made, and the connections found full in this turn, each
        # with how many broadcasts excluded it since and the broadcast that
        # found it full (they skip the look at each until the next turn).
        self._serial = 0
        self._full: dict[int, list[Any]] = {}
        # The established connections not found full in this turn, with
        # their ids, in order; None when it must be made again.
        self._targets: list[tuple[int, _ConnectionBase]] | None = None

    def changed(self) -> None:
        """
        A connection was established, or is no longer.
        """
        self._targets = None

    def forget(self, connectionId: int) -> None:
        """
        A connection ended: nothing more is known about it.
        """
        self._targets = None
        self._full.pop(connectionId, None)

    def stop(self) -> None:
        """
        The server stops: no next turn is due, and nobody stays paused for
        one.
        """
        call, self._turnCall = self._turnCall, None
        if call is not None and call.active():
            call.cancel()
        self._turnWork = 0
        self._throttled = []
        self._full = {}
        self._targets = None

    def broadcast(self, data: bytes | str, exclude: int | Collection[int] | None = None) -> int:
        """
        Write C{data} to every target not excluded (see
        L{tcpsc.Server.broadcast}, which documents what a caller sees).

        @return: how many connections it was written to.
        """
        if isinstance(data, str):
            data = data.encode("utf-8")
        if exclude is None:
            excluded: Collection[int] = ()
        elif isinstance(exclude, int):
            excluded = (exclude,)
        else:
            excluded = exclude
        established = self._established
        full = self._full
        candidates = self._targets
        if candidates is None:
            candidates = self._targets = [(i, p) for i, p in established.items() if i not in full]
        if excluded:
            targets = [p for i, p in candidates if i not in excluded]
        else:
            targets = [p for _, p in candidates]
        if targets:
            first = targets[0]
        elif full:
            # Every target is full: the message is still counted as missed.
            first = next(iter(full.values()))[0]
        else:
            return 0
        work = self._turnWork + len(established)
        self._turnWork = work
        if self._turnCall is None:
            self._turnCall = self._reactor.callLater(0, self._nextTurn)
        if work > self._workLimit:
            self._yieldTurn(excluded, targets)
        written = 0
        if isinstance(first, MessageProtocol):
            frame = first.frame(data)
            if frame is None:
                return 0
            serial = self._serial = self._serial + 1
            if full:
                # The connections found full earlier in this turn miss this
                # one too, without a look at each.
                skipped = len(full)
                for i in set(excluded):
                    entry = full.get(i)
                    if entry is not None:
                        entry[1] += 1
                        skipped -= 1
                self.skips += skipped
            # The transports of the connections in the common state, and of
            # the congested ones with room, written to after the loop in one
            # go (see _compat.writeToAll).
            direct: list[Any] = []
            size = len(frame)
            # One protocol class serves all of a server's connections.
            for p in cast("list[MessageProtocol]", targets):
                transport: Any = p.transport
                if p._batch is not None or not p.ready:
                    # The checked path: a read being handled, not ready.
                    if p.sendFrame(frame):
                        written += 1
                    elif p._congested:
                        # Counted as a skip, not as a send refused.
                        p._outputDropped -= 1
                        self._skipped(p)
                elif p._congested:
                    # What sendFrame does for a congested connection.
                    if size > p._room and size > p._roomLeft():
                        self._skipped(p)
                        if self.maxBroadcastSkips is None:
                            full[p.connectionId] = [p, 0, serial]  # type: ignore[index]
                            self._targets = None
                    elif not transport.disconnecting:
                        p._room -= size
                        direct.append(transport)
                elif not transport.disconnecting:
                    # What sendFrame does for a connection in the common
                    # state, without a call per connection.
                    direct.append(transport)
            if direct:
                _compat.writeToAll(direct, frame)
                self.messages += len(direct)
                self.bytesWritten += size * len(direct)
            return written + len(direct)
        for stream in cast("list[StreamProtocol]", targets):
            if stream.sendData(data):
                written += 1
            elif stream._congested:
                stream._outputDropped -= 1
                self._skipped(stream)
        return written

    def _yieldTurn(self, excluded: Collection[int], targets: list[_ConnectionBase]) -> None:
        """
        This turn's broadcasts did their share of work: stop reading from
        the connection whose read is being handled (the sender, excluded or
        not) until the next turn.  It delivers the messages it holds then.
        """
        reader = None
        for candidate in (*(self._established.get(i) for i in excluded), *targets):
            if candidate is not None and getattr(candidate, "_batch", None) is not None:
                reader = candidate
                break
        if reader is None or reader._paused:
            return
        reader.pauseReading()
        reader._throttled = True
        self._throttled.append(reader)

    def _nextTurn(self) -> None:
        """
        A new reactor turn.  The connections found full in the last one
        count the broadcasts they missed and are looked at again.  The
        connections paused by L{_yieldTurn} are resumed in the order they
        were paused, each with an equal share of this turn's work (it
        delivers its messages until its share is used, at least one); those
        beyond the turn's work wait for the next one, first in line.
        """
        self._turnCall = None
        self._turnWork = 0
        full, self._full = self._full, {}
        if full:
            self._targets = None
        serial = self._serial
        for protocol, excludedTimes, since in full.values():
            if protocol._congested:
                protocol._broadcastSkips += serial - since - excludedTimes
        throttled, self._throttled = self._throttled, []
        waiting = [p for p in throttled if p._throttled]
        if not waiting:
            return
        share = max(1, TURN_BROADCAST_WORK // len(waiting))
        left: list[_ConnectionBase] = []
        try:
            for protocol in waiting:
                if self._turnWork >= TURN_BROADCAST_WORK:
                    left.append(protocol)
                    continue
                protocol._throttled = False
                if protocol.connected:
                    self._workLimit = min(TURN_BROADCAST_WORK, self._turnWork + share)
                    try:
                        protocol.resumeReading()
                    except Exception:
                        # As Twisted ends a connection whose dataReceived
                        # raised; the others are resumed all the same.
                        self._log.failure(
                            "Delivering the held messages of connection {connectionId} "
                            "raised an exception; closing it",
                            connectionId=protocol.connectionId,
                        )
                        protocol._abort("an exception while delivering its messages")
        finally:
            self._workLimit = TURN_BROADCAST_WORK
        if left:
            self._throttled[:0] = left
            if self._turnCall is None:
                self._turnCall = self._reactor.callLater(0, self._nextTurn)

    def _skipped(self, protocol: _ConnectionBase) -> None:
        """
        A broadcast left out a congested connection.
        """
        limit = self.maxBroadcastSkips
        if limit is not None and protocol._broadcastSkips >= limit:
            return  # being closed already
        self.skips += 1
        protocol._broadcastSkips += 1
        skips = protocol._broadcastSkips
        if limit is None and skips != 1:
            return
        peer = describeAddress(protocol.transport.getPeer())
        if limit is not None and skips >= limit:
            self._log.warn(
                "Closing connection {connectionId} from {peer}: it missed {missed} "
                "in a row, its peer does not read (maxBroadcastSkips {limit})",
                connectionId=protocol.connectionId,
                peer=peer,
                skips=skips,
                missed=plural(skips, "broadcast"),
                limit=limit,
            )
            protocol._abort(f"it missed {plural(skips, 'broadcast')} in a row (maxBroadcastSkips)")
        elif skips == 1:
            self._events.record(
                "broadcastSkipped",
                "Connection {connectionId} from {peer} misses broadcasts: its peer does not "
                "read fast enough, its output is over maxPendingOutput ({maxPendingOutput} "
                "bytes)",
                connectionId=protocol.connectionId,
                peer=peer,
                maxPendingOutput=protocol.maxPendingOutput,
            )
