# -*- test-case-name: tests.test_udp_cli -*-
"""
Exchange messages with a UDP server, as tcpsc connect does over TCP: each
line of standard input is sent as one message, each message received is
printed on its own line.  Interactive, or in a pipe:

  printf 'hello\\nworld\\n' | tcpsc udp localhost 9000

A message is one datagram (with --delimiter, the line and the delimiter; a
datagram received may then hold several messages, each printed on its own
line).  A line longer than --max-length, or one containing the delimiter,
is not sent, and said so.  UDP has no connection: nothing arrives when no
server answers, and a lost datagram is not sent again.  At the end of the
input (Ctrl-D, or the end of a pipe) it keeps printing what arrives until
nothing has arrived for --wait seconds (default 1).  Exit status:

  0    the input ended
  1    one line on standard error: the host name cannot be resolved, or
       the host answered that nothing listens on the port (ICMP port
       unreachable, which a host that drops datagrams does not send)
  2    a usage error
  130  Ctrl-C (SIGINT); SIGTERM ends it with the signal's own status, as
       twistd does (143 in a shell, -15 from Python's subprocess)

Status messages go to standard error, so standard output holds only
messages.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet.defer import Deferred

from tcpsc import DEFAULT_MAX_DATAGRAM, DatagramClient, DatagramPeer, StartError
from tcpsc.tap import DELIMITER_HELP, parseCount, parseDelimiter

from .common import CommandError, UsageError, secondsOrZeroArgument
from .terminal import Terminal, Throttle, beginLogging, runCommand

__all__ = ["SUMMARY", "configure", "run"]

SUMMARY = "send stdin lines as UDP datagrams, print the messages received"


def _delimiter(text: str) -> bytes:
    try:
        return parseDelimiter(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


#: The largest UDP datagram, over IPv4 and over IPv6.
_LARGEST_IPV4 = 65_507
_LARGEST_IPV6 = 65_527


def _length(text: str) -> int:
    try:
        value = parseCount(text, minimum=1)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e}: {text!r}") from None
    assert value is not None
    if value > _LARGEST_IPV6:
        raise argparse.ArgumentTypeError(
            f"above {_LARGEST_IPV6}, the largest UDP datagram (over IPv6; "
            f"{_LARGEST_IPV4} over IPv4): {text!r}"
        )
    return value


def addDatagramOptions(parser: argparse.ArgumentParser) -> None:
    """
    Add C{-d}/C{--delimiter} (none by default: one message per datagram)
    and C{-m}/C{--max-length}, which the UDP and multicast commands share.
    """
    parser.add_argument(
        "-d",
        "--delimiter",
        type=_delimiter,
        default=None,
        metavar="D",
        help=f"{DELIMITER_HELP}; a datagram then holds one or more messages, each ended by "
        "D (default: none, one message per datagram)",
    )
    parser.add_argument(
        "-m",
        "--max-length",
        type=_length,
        default=DEFAULT_MAX_DATAGRAM,
        metavar="N",
        help="longest datagram in bytes, sent or received (the delimiter included); a "
        "longer one received is dropped, never printed cut; at most 65507 over IPv4, "
        f"65527 over IPv6 (default: {DEFAULT_MAX_DATAGRAM}, one Ethernet frame)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", metavar="HOST", help="the server's host name or IP address")
    parser.add_argument("port", metavar="PORT", help="the server's UDP port")
    addDatagramOptions(parser)
    parser.add_argument(
        "--wait",
        type=secondsOrZeroArgument,
        default=1.0,
        metavar="SECONDS",
        help="at the end of the input, exit once nothing has arrived for "
        "this long (default: 1; 0 exits at once)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also say where the datagrams go, and what was dropped when the command ends",
    )


def note(command: str, message: str) -> None:
    """
    One status line on standard error, C{tcpsc COMMAND: MESSAGE}.
    """
    print(f"tcpsc {command}: {message}", file=sys.stderr, flush=True)


#: What a count of a sender's C{eventCounts} that grew with a refused send
#: means, in words.
_REASONS = {
    "sendBufferFull": "the socket's send buffer is full (the datagram is dropped)",
    "sendFailed": "the system refused the datagram (no route to it?)",
}


def sendLine(sender: Any, line: bytes, delimiter: bytes | None, maxLength: int) -> str | None:
    """
    Send C{line} with C{sender} (a datagram client or multicast sender).

    @return: C{None} if it was sent; otherwise why not, in words.
    """
    before = sender.eventCounts
    if sender.send(line):
        return None
    if delimiter is not None and delimiter in line:
        return "not sent: the line contains the delimiter"
    if len(line) + len(delimiter or b"") > maxLength:
        return f"not sent: the line is longer than --max-length ({maxLength} bytes)"
    after = sender.eventCounts
    for kind, words in _REASONS.items():
        if after.get(kind, 0) > before.get(kind, 0):
            return f"not sent: {words}"
    grown = [kind for kind, count in after.items() if count > before.get(kind, 0)]
    return f"not sent ({', '.join(grown) or 'not connected'})"


class _ServerPeer(DatagramPeer):
    """
    The server, as the command's client sees it: what it sends goes to the
    session; a refusal and a datagram too long are said on standard error.
    """

    session: _Session

    def messageReceived(self, message: bytes) -> None:
        self.session.messageReceived(message)

    def messageTooLong(self, length: int) -> None:
        bound = self.session.args.max_length
        note("udp", f"a datagram longer than --max-length ({bound} bytes) was dropped")

    def connectionRefused(self) -> None:
        self.session.refused()


class _Session:
    """
    One run of C{tcpsc udp}: the client, standard input and output, and the
    decision when to exit.

    @ivar done: fires with the exit status.
    """

    def __init__(self, reactor: Any, args: argparse.Namespace, interactive: bool) -> None:
        self.reactor = reactor
        self.args = args
        self.interactive = interactive
        self.done: Deferred[int] = Deferred()
        self.client: Any = None
        self.terminal = Terminal(self, "udp")
        self.stdio: Any = None
        self._inputEnded = False
        self._stdoutClosed = False
        self._finishing = False
        self._quietTimer: Any = None

    def messageReceived(self, message: bytes) -> None:
        if self.stdio is not None and not self._stdoutClosed:
            self.stdio.writeSequence((message, b"\n"))
        if self._inputEnded:
            self._startQuietTimer()

    def refused(self) -> None:
        """
        The host said that nothing listens on the port.
        """
        if self._finishing:
            return
        note("udp", f"nothing listens on UDP {self.args.target} (ICMP port unreachable)")
        self.finish(1)

    def lineReceived(self, line: bytes) -> None:
        if self._finishing:
            return
        why = sendLine(self.client, line, self.args.delimiter, self.args.max_length)
        if why is not None:
            if self._refusedCount():
                self.refused()
                return
            note("udp", why)

    def _refusedCount(self) -> int:
        return int(self.client.eventCounts.get("refused", 0))

    def inputEnded(self) -> None:
        self._inputEnded = True
        if self.args.wait <= 0:
            self.finish(0)
        else:
            self._startQuietTimer()

    def outputClosed(self) -> None:
        self._stdoutClosed = True
        self.finish(0)

    def _startQuietTimer(self) -> None:
        if self._finishing:
            return
        if self._quietTimer is not None and self._quietTimer.active():
            self._quietTimer.reset(self.args.wait)
        else:
            self._quietTimer = self.reactor.callLater(self.args.wait, self.finish, 0)

    def interrupt(self) -> None:
        self._finishing = True

    def finish(self, status: int) -> None:
        """
        Close the socket, then standard output once what was received is
        written, then exit with C{status}.
        """
        if self._finishing:
            return
        self._finishing = True
        if self._quietTimer is not None and self._quietTimer.active():
            self._quietTimer.cancel()
        if self.stdio is not None:
            self.stdio.pauseProducing()
            if not self._stdoutClosed:
                self.stdio.unregisterProducer()
        if status == 0 and self.client is not None and self._refusedCount():
            # The last datagrams were answered by "port unreachable".
            note("udp", f"nothing listens on UDP {self.args.target} (ICMP port unreachable)")
            status = 1
        if self.args.verbose and self.client is not None:
            counts = {kind: n for kind, n in self.client.eventCounts.items() if n}
            if counts:
                said = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
                note("udp", f"dropped or refused: {said}")
        closing: Deferred[Any] = self.client.disconnect() if self.client is not None else Deferred()
        if self.client is None:
            closing.callback(None)

        def closeOutput(_: object) -> Deferred[None] | None:
            if self.stdio is None:
                return None
            self.stdio.loseConnection()
            if self._stdoutClosed:
                return None
            return self.terminal.closed

        closing.addBoth(closeOutput)
        closing.addBoth(lambda _: self.done.callback(status))


def _makeClient(reactor: Any, args: argparse.Namespace, session: _Session) -> None:
    """
    Make the session's client.

    @raise UsageError: options the client refuses.
    """
    peer = type("ServerPeer", (_ServerPeer,), {"session": session})
    try:
        session.client = DatagramClient(
            peer,
            delimiter=args.delimiter,
            maxMessageLength=args.max_length,
            reactor=reactor,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None


async def _main(reactor: Any, args: argparse.Namespace, session: _Session) -> int:
    from twisted.internet.stdio import StandardIO

    client = session.client
    session.stdio = StandardIO(session.terminal, reactor=reactor)
    session.stdio.pauseProducing()
    try:
        await client.connect(args.host, args.port)
    except ValueError:
        session.stdio.loseConnection()
        raise UsageError(
            f"--max-length {args.max_length} is above {_LARGEST_IPV4}, the largest UDP "
            f"datagram over IPv4, and {args.host} is reached over IPv4"
        ) from None
    except (StartError, OSError) as e:
        if session.done.called:
            return await session.done
        session.stdio.loseConnection()
        raise CommandError(str(e)) from None
    if args.verbose or session.interactive:
        note("udp", f"sending to UDP {args.target}; type messages, Ctrl-D to quit")
    stdio = session.stdio
    # Output that cannot be written pauses the input: replies answer lines.
    stdio.registerProducer(Throttle(stdio.pauseProducing, stdio.resumeProducing), True)
    stdio.resumeProducing()
    return await session.done


def run(args: argparse.Namespace) -> int:
    from tcpsc.tap import OutOfRange, parsePortNumber

    try:
        args.port = parsePortNumber(args.port)
    except OutOfRange as e:
        raise UsageError(f"port {e}: {args.port!r}") from None
    except ValueError as e:
        raise UsageError(f"{e}: {args.port!r}") from None
    host = args.host
    if host.startswith("[") and host.endswith("]"):
        host = args.host = host[1:-1]
    args.target = f"[{host}]:{args.port}" if ":" in host else f"{host}:{args.port}"
    from twisted.internet import reactor

    session = _Session(reactor, args, interactive=sys.stdin.isatty())
    _makeClient(reactor, args, session)
    beginLogging("udp", args.verbose)

    async def start(reactor: Any) -> int:
        return await _main(reactor, args, session)

    return runCommand(start, session.interrupt)
