"""
What the line commands (C{tcpsc connect}, C{tcpsc udp}, C{tcpsc multicast})
share: standard input read as lines, output that pauses input, their log
lines on standard error, and how they run on the reactor and end on a
signal.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["Terminal", "Throttle", "beginLogging", "runCommand"]

#: The longest line of standard input; a longer one is dropped, said once.
_MAX_LINE = 16 * 1024 * 1024


@implementer(IPushProducer)
class Throttle:
    """
    Pauses one side while the other cannot keep up: registered as the
    producer of a consumer it does not own, so C{stopProducing} (called when
    that consumer goes away) only lets the producer run again.
    """

    def __init__(self, pause: Any, resume: Any) -> None:
        self._pause = pause
        self._resume = resume

    def pauseProducing(self) -> None:
        self._pause()

    def resumeProducing(self) -> None:
        self._resume()

    def stopProducing(self) -> None:
        self._resume()


@implementer(IHalfCloseableProtocol)
class Terminal(Protocol):
    """
    Standard input and output: splits input into lines for the session
    (C{lineReceived}), and tells it when input ends (C{inputEnded}) or
    output is closed (C{outputClosed}).  C{command} names the command in
    what it says.
    """

    def __init__(self, session: Any, command: str) -> None:
        self._session = session
        self._command = command
        self._buffer = bytearray()
        self._dropping = False
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while True:
            at = self._buffer.find(b"\n")
            if at < 0:
                break
            line = bytes(self._buffer[:at])
            del self._buffer[: at + 1]
            if self._dropping:
                self._dropping = False
                continue
            self._session.lineReceived(line.removesuffix(b"\r"))
        if len(self._buffer) > _MAX_LINE:
            print(
                f"tcpsc {self._command}: input line longer than {_MAX_LINE} bytes: dropped",
                file=sys.stderr,
                flush=True,
            )
            self._buffer.clear()
            self._dropping = True

    def readConnectionLost(self) -> None:
        if self._buffer and not self._dropping:
            self._session.lineReceived(bytes(self._buffer).removesuffix(b"\r"))
        self._buffer.clear()
        self._session.inputEnded()

    def writeConnectionLost(self) -> None:
        self._session.outputClosed()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.closed.called:
            self.closed.callback(None)


def beginLogging(command: str, verbose: bool, quiet: Any = None) -> None:
    """
    Show Twisted's and tcpsc's errors on standard error, one line each (no
    tracebacks), prefixed like the command's own messages; with
    C{verbose}, tcpsc's warnings and information too.  C{quiet} is the
    lowest level of tcpsc's events shown without C{verbose}: errors by
    default (the datagram commands say themselves what a user needs to know
    of the datagrams, so that it is said once), warnings for C{connect}.
    """
    from twisted.logger import (
        FileLogObserver,
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        formatEvent,
        globalLogBeginner,
    )

    def format(event: dict[str, Any]) -> str:
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += f": {failure.getErrorMessage()}"
        return f"tcpsc {command}: {text}\n"

    levels: Any = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    levels.setLogLevelForNamespace("tcpsc", LogLevel.info if verbose else (quiet or LogLevel.error))
    output: Any = FileLogObserver(sys.stderr, format)
    observer: Any = FilteringLogObserver(output, [levels])
    globalLogBeginner.beginLoggingTo([observer], discardBuffer=True, redirectStandardIO=False)


def runCommand(
    start: Callable[[Any], Coroutine[Any, Any, int]], interrupt: Callable[[], None]
) -> int:
    """
    Run C{start(reactor)} on the global reactor and return its exit status.

    SIGINT ends the run with 130 and SIGTERM with the signal itself (after
    the reactor stopped), as twistd does; C{interrupt}
    is called first, so that what ends on the way is not reported.
    """
    from twisted.internet import reactor as globalReactor

    reactor: Any = globalReactor
    outcome: list[object] = []
    signals: list[int] = []

    def stopReactor(_: object = None) -> None:
        if reactor.running:
            reactor.stop()

    def interrupted() -> None:
        interrupt()
        stopReactor()

    def onSignal(number: int, frame: object) -> None:
        if signals:
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)
            return
        signals.append(number)
        reactor.callFromThread(interrupted)

    def begin() -> None:
        d = Deferred.fromCoroutine(start(reactor))
        d.addBoth(outcome.append)
        d.addBoth(stopReactor)

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, onSignal)
    reactor.callWhenRunning(begin)
    reactor.run(installSignalHandlers=False)
    if signals:
        if signals[0] == signal.SIGTERM:
            sys.stderr.flush()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        return 130
    if not outcome:
        return 130
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return int(result)  # type: ignore[call-overload]
