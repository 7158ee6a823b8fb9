"""
Log lines a peer cannot multiply: events of one kind that repeat (refused
connections, dropped messages, failed handshakes) are logged once, in full,
then summarised once per period with their exact count, instead of a line
each.  A hostile peer that reconnects in a loop otherwise writes megabytes of
log a second, and the log, not the peer, fills the disk.

The counts are kept exact in one place per server (L{EventSummary.counts},
by kind), so that they can be read, or exported as metrics, whatever is
logged.
"""

from __future__ import annotations

from collections import Counter
from time import time
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger, LogLevel

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["KINDS", "MAX_DETAILS", "SUMMARY_PERIOD", "EventSummary", "FastLogger", "plural"]

#: Seconds between two summaries of events of one kind.
SUMMARY_PERIOD = 5.0

#: Details of one kind summarised apart within one period; beyond them, the
#: rest together: a peer cannot make the summary long either.
MAX_DETAILS = 8

#: The kinds of events summarised, and the words of their summary: C{{count}}
#: is replaced by the count, C{{s}} by the plural's C{s}, C{{period}} by the
#: period.
KINDS: dict[str, str] = {
    "maxConnections": "Refused {count} more connection{s} in the last {period} s: "
    "the connection limit (maxConnections)",
    "maxConnectionsPerPeer": "Refused {count} more connection{s} in the last {period} s: "
    "the limit per peer address (maxConnectionsPerPeer)",
    "allowedClients": "Refused {count} more connection{s} in the last {period} s: "
    "client certificate not on the allow-list",
    "handshakeTimeout": "Closed {count} more connection{s} in the last {period} s: "
    "TLS handshake not completed in time (handshakeTimeout)",
    "handshakeFailed": "{count} more TLS handshake{s} failed in the last {period} s",
    "firstByteTimeout": "Closed {count} more connection{s} in the last {period} s: "
    "nothing received in time (firstByteTimeout)",
    "tlsClientOnPlainPort": "Closed {count} more connection{s} in the last {period} s: "
    "a TLS client connected to a plain port",
    "proxyHeader": "Refused {count} more connection{s} in the last {period} s on "
    "PROXY-protocol ports: no valid PROXY header",
    "workerBehind": "Dropped {count} more message{s} in the last {period} s: "
    "their UDP peer's worker was too far behind",
    "messageTooLong": "Dropped {count} more message{s} in the last {period} s: "
    "longer than maxMessageLength",
    "broadcastSkipped": "{count} more connection{s} started missing broadcasts in the "
    "last {period} s: their peers do not read fast enough",
    "memoryBudget": "Dropped {count} more partial message{s} in the last {period} s to keep "
    "within the memory budget (memoryBudget)",
    "datagramTooLong": "Dropped {count} more datagram{s} in the last {period} s: "
    "longer than maxMessageLength",
    "sendBufferFull": "Dropped {count} more datagram{s} in the last {period} s: "
    "the socket's send buffer was full",
    "sendFailed": "Could not send {count} more datagram{s} in the last {period} s",
    "refused": "{count} more datagram{s} refused in the last {period} s: "
    "nothing listens at the destination (ICMP port unreachable)",
    "peerForgotten": "Forgot {count} more peer{s} in the last {period} s: "
    "the peer table was full (maxPeers)",
    "peerExpired": "Forgot {count} more peer{s} in the last {period} s: "
    "nothing heard from them within peerIdleTimeout",
}


#: Every log level, for L{FastLogger}.
_LEVELS = frozenset(LogLevel.iterconstants())


class FastLogger(Logger):
    """
    A C{twisted.logger.Logger} whose C{emit} makes the same event for less: Twisted's
    checks the level against a list of the levels made anew for every
    event, which costs more than the rest of C{emit}; this one checks it
    against a set made once (an invalid level goes to Twisted's C{emit},
    which logs the error as it always does).  What a server logs for every
    connection goes through it.
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        if level not in _LEVELS:
            super().emit(level, format, **kwargs)
            return
        # The fields of Twisted's Logger.emit, set one by one (cheaper than
        # a dict.update with keywords).
        event = kwargs
        event["log_logger"] = self
        event["log_level"] = level
        event["log_namespace"] = self.namespace
        event["log_source"] = self.source
        event["log_format"] = format
        event["log_time"] = time()
        if "log_trace" in event:
            event["log_trace"].append((self, self.observer))  # type: ignore[attr-defined]
        self.observer(event)


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """
    C{"1 connection"}, C{"2 connections"}: the number as it is, as in the
    other lines and fields of the log (only summaries group its digits).
    """
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


class EventSummary:
    """
    Logs events of the kinds in L{KINDS} without flooding.

    The first event of a kind is logged in full, at its own level.  The ones
    that follow within the period are counted, and when the period ends one
    line says how many there were; a kind with none in a whole period is
    quiet again, and its next event is logged in full.  With
    C{logEveryEvent}, each event that is not logged in full is logged at
    debug level as well, with the same fields.

    @ivar counts: every event recorded, by kind, since the start: exact,
        whatever was logged.
    """

    def __init__(
        self,
        log: Logger,
        clock: IReactorTime,
        period: float = SUMMARY_PERIOD,
        logEveryEvent: bool = False,
    ) -> None:
        self._log = log
        self._clock = clock
        self.period = period
        self.logEveryEvent = logEveryEvent
        self.counts: Counter[str] = Counter()
        # Kinds (with their detail) logged in full within the current
        # period, with how many more events of the kind came since.
        self._recent: dict[tuple[str, str], int] = {}
        self._timer: IDelayedCall | None = None

    def record(
        self,
        kind: str,
        format: str,
        level: LogLevel = LogLevel.warn,
        detail: str = "",
        **fields: Any,
    ) -> bool:
        """
        Count an event of C{kind}, and log it if it is the first in a while.

        @param format: the full log line, a C{twisted.logger} format.
        @param detail: what tells events of one kind apart in the summary
            (the reason a handshake failed), in words; the events of a kind
            with more than L{MAX_DETAILS} details in one period are
            summarised together beyond that.
        @return: whether it was logged in full.
        """
        self.counts[kind] += 1
        recent = self._recent
        key = (kind, detail)
        if key not in recent and detail and sum(k == kind for k, _ in recent) >= MAX_DETAILS:
            key = (kind, "other reasons")
        if key in recent:
            recent[key] += 1
            if self.logEveryEvent:
                self._log.emit(LogLevel.debug, format, kind=kind, **fields)
            return False
        recent[key] = 0
        self._log.emit(level, format, kind=kind, **fields)
        if self._timer is None:
            self._timer = self._clock.callLater(self.period, self._summarise)
        return True

    def _summarise(self) -> None:
        self._timer = None
        self.flush(keep=True)
        if self._recent:
            self._timer = self._clock.callLater(self.period, self._summarise)

    def flush(self, keep: bool = False) -> None:
        """
        Log a summary of each kind with events not logged yet.

        @param keep: whether a kind with events stays summarised (the next
            period's events are counted, not logged in full); otherwise
            every kind is quiet again.
        """
        recent = self._recent
        for key, count in list(recent.items()):
            kind, detail = key
            if count:
                text = KINDS[kind].format(
                    count=f"{count:,}", s="" if count == 1 else "s", period=f"{self.period:g}"
                )
                self._log.emit(
                    LogLevel.warn,
                    # The counts are in the text already: no braces left
                    # for the logger to format, whatever the detail holds.
                    (text + (f": {detail}" if detail else ""))
                    .replace("{", "{{")
                    .replace("}", "}}"),
                    kind=kind,
                    detail=detail,
                    count=count,
                    total=self.counts[kind],
                    summary=True,
                )
                if keep:
                    recent[key] = 0
                    continue
            del recent[key]

    def stop(self) -> None:
        """
        Log what is not logged yet and stop the timer.
        """
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self.flush()
