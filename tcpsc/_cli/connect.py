# -*- test-case-name: tests.test_cli -*-
"""
Connect to a message server: each line of standard input is sent as one
message, each message received is printed on its own line.  Interactive, or
in a pipe:

  printf 'hello\\nworld\\n' | tcpsc connect localhost 8081
  tcpsc connect unix:/run/tcpsc.sock

At the end of the input (Ctrl-D, or the end of a pipe) it keeps printing
what arrives until nothing has arrived for --wait seconds (default 1), then
closes the connection after what was sent is flushed.  Exit status:

  0    the input ended; or the server closed the connection cleanly after
       answering, or after the input ended with nothing sent
  1    one line on standard error: it cannot connect (refused, unknown host,
       --connect-timeout, a certificate problem, the server does not speak
       TLS), the connection failed, or the server closed it before answering
       what was sent (or before any input was sent)
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
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from tcpsc import (
    Client,
    ClientCertificateRejected,
    ServerCertificateRejected,
    StartError,
    TLSConfig,
)

from .common import (
    CommandError,
    Target,
    UsageError,
    addDelimiterOption,
    addTargetArguments,
    parseTarget,
    secondsArgument,
    secondsOrZeroArgument,
)
from .terminal import Terminal, Throttle, beginLogging, runCommand

__all__ = ["SUMMARY", "configure", "run"]

SUMMARY = "send stdin lines as messages, print received messages (a chat client)"

#: The longest line read from standard input; longer ones are dropped, so
#: that input without newlines cannot make the buffer grow without bound.
_MAX_LINE = 16 * 1024 * 1024


def configure(parser: argparse.ArgumentParser) -> None:
    addTargetArguments(parser)
    parser.add_argument(
        "--tls",
        action="store_true",
        help="TLS 1.3; the server's certificate must be valid for HOST "
        "(for unix:PATH, for localhost)",
    )
    parser.add_argument(
        "--ca",
        metavar="PEM",
        help="with --tls: CA the server's certificate must be issued by "
        "(default: the system's trusted CAs)",
    )
    parser.add_argument("--cert", metavar="PEM", help="with --tls: this client's certificate")
    parser.add_argument("--key", metavar="PEM", help="with --tls: the key of --cert")
    addDelimiterOption(parser)
    parser.add_argument(
        "--connect-timeout",
        type=secondsArgument,
        default=30.0,
        metavar="SECONDS",
        help="give up connecting (TLS handshake included) after this long (default: 30)",
    )
    parser.add_argument(
        "--reconnect",
        action="store_true",
        help="after the connection is lost, connect again (with backoff) until the input ends",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show connection events (connected, closed, reconnecting)",
    )
    parser.add_argument(
        "--wait",
        type=secondsOrZeroArgument,
        default=1.0,
        metavar="SECONDS",
        help="at the end of the input, exit once nothing has arrived for "
        "this long (default: 1; 0 exits at once)",
    )


def _note(message: str) -> None:
    print(f"tcpsc connect: {message}", file=sys.stderr, flush=True)


class _Session:
    """
    One run of C{tcpsc connect}: the client, standard input and output, and
    the decision when to exit.

    @ivar done: fires with the exit status.
    """

    def __init__(
        self,
        reactor: Any,
        args: argparse.Namespace,
        interactive: bool,
        target: Target | None = None,
    ) -> None:
        self.reactor = reactor
        self.args = args
        self.target = target if target is not None else Target(args.host, args.port)
        self.interactive = interactive
        self.done: Deferred[int] = Deferred()
        self.client: Any = None
        self.terminal = Terminal(self, "connect")
        self.stdio: Any = None
        self._inputEnded = False
        self._stdoutClosed = False
        self._finishing = False
        self._quietTimer: Any = None
        self._connectedOnce = False
        # What the current connection carried: whether the server closing
        # it is an answer or a refusal.
        self._sentHere = False
        self._receivedHere = False

    # -- the connection ---------------------------------------------------

    def messageReceived(self, message: bytes) -> None:
        self._receivedHere = True
        if self.stdio is not None and not self._stdoutClosed:
            self.stdio.writeSequence((message, b"\n"))
        if self._inputEnded:
            self._startQuietTimer()

    def established(self, protocol: Any) -> None:
        if self._connectedOnce:
            _note(f"reconnected to {self.target}")
        elif self.interactive:
            _note(f"connected to {self.target}; type messages, Ctrl-D to quit")
        self._connectedOnce = True
        self._sentHere = self._receivedHere = False
        stdio = self.stdio
        protocol.transport.registerProducer(
            Throttle(stdio.pauseProducing, stdio.resumeProducing), True
        )
        if not self._stdoutClosed:
            stdio.unregisterProducer()
            stdio.registerProducer(Throttle(protocol.pauseReading, protocol.resumeReading), True)

    def closed(self, reason: Failure) -> None:
        if self._finishing:
            return
        if reason.check(ServerCertificateRejected, ClientCertificateRejected):
            # Reconnecting gave up: the client logged why.
            self.finish(1)
        elif self.args.reconnect:
            _note(f"connection lost ({reason.getErrorMessage()}); reconnecting")
        elif not self._receivedHere and (self._sentHere or not self._inputEnded):
            # Nothing came back for what was sent, or the input was cut
            # short: a refusal (a TLS port, a connection limit), not an end.
            cause = "" if reason.check(ConnectionDone) else f" ({reason.getErrorMessage()})"
            what = "answering" if self._sentHere else "any input was sent"
            hint = "" if self.args.tls else "; does it require --tls?"
            _note(f"the server closed the connection before {what}{cause}{hint}")
            self.finish(1)
        elif reason.check(ConnectionDone):
            if self.interactive:
                _note("the server closed the connection")
            self.finish(0)
        else:
            _note(f"connection lost: {reason.getErrorMessage()}")
            self.finish(1)

    # -- standard input and output ----------------------------------------

    def lineReceived(self, line: bytes) -> None:
        if self._finishing:
            return
        if self.client.send(line):
            self._sentHere = True
            return
        protocol = self.client.protocol
        if protocol is None or not protocol.ready or protocol.transport.disconnecting:
            _note("not connected: line dropped")
        else:
            _note("not sent: the line contains the delimiter or is too long")

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

    # -- the end ----------------------------------------------------------

    def interrupt(self) -> None:
        """
        A signal ends the run: whatever the connection does from now on is
        not news (no "reconnecting", no cause), and it is not made again.
        """
        self._finishing = True
        if self.client is not None:
            self.client.reconnect = False

    def finish(self, status: int) -> None:
        """
        Close the connection once what was sent is flushed, then standard
        output once what was received is written, then exit with C{status}.
        """
        if self._finishing:
            return
        self._finishing = True
        if self.stdio is not None:
            self.stdio.pauseProducing()
        if self._quietTimer is not None and self._quietTimer.active():
            self._quietTimer.cancel()
        protocol = self.client.protocol if self.client is not None else None
        if protocol is not None and protocol.connected:
            # A TLS transport waits for its producer to go away before it
            # closes: the input is done producing.
            protocol.transport.unregisterProducer()
        if self.stdio is not None and not self._stdoutClosed:
            self.stdio.unregisterProducer()
        closing = self.client.disconnect() if self.client is not None else Deferred()
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


def _connect(reactor: Any, client: Client, target: Target, tls: TLSConfig | None) -> Deferred[Any]:
    """
    Connect C{client} to C{target}: its host and port, or its UNIX socket,
    named C{unix:PATH} and, over TLS, checked as C{target.host}.
    """
    if target.path is None:
        assert target.port is not None
        return client.connect(target.host, target.port, tls)
    from twisted.internet.endpoints import UNIXClientEndpoint

    # An endpoint of the path as parseTarget read it (as tcpsc bench uses
    # it), rather than the description read a second time by Twisted.
    return client.connectTo(
        UNIXClientEndpoint(reactor, target.path), tls, hostname=target.host, name=str(target)
    )


async def _main(
    reactor: Any, args: argparse.Namespace, session: _Session, delimiter: bytes, tls: Any
) -> int:
    from twisted.internet.stdio import StandardIO

    target = session.target
    settings: dict[str, Any] = dict(
        delimiter=delimiter,
        onMessage=session.messageReceived,
        onEstablished=session.established,
        onClosed=session.closed,
        reconnect=args.reconnect,
        connectTimeout=args.connect_timeout,
        reactor=reactor,
    )
    client = Client(**settings)
    # Standard output is ready before anything can arrive; input is read
    # only once connected.
    session.stdio = StandardIO(session.terminal, reactor=reactor)
    session.stdio.pauseProducing()
    session.client = client
    try:
        await _connect(reactor, client, target, tls)
    except StartError as e:
        if session.done.called:
            # Standard output was closed while connecting.
            return await session.done
        session.stdio.loseConnection()
        raise CommandError(str(e)) from None
    session.stdio.resumeProducing()
    return await session.done


def run(args: argparse.Namespace) -> int:
    target = parseTarget(args.host, args.port)
    tls = None
    if args.tls:
        if (args.cert is None) != (args.key is None):
            raise UsageError("--cert and --key go together")
        tls = TLSConfig(ca=args.ca, cert=args.cert, key=args.key)
    elif args.ca or args.cert or args.key:
        raise UsageError("--ca, --cert and --key apply only with --tls")

    from twisted.internet import reactor
    from twisted.logger import LogLevel

    beginLogging("connect", args.verbose, quiet=LogLevel.warn)
    session = _Session(reactor, args, interactive=sys.stdin.isatty(), target=target)
    return runCommand(
        lambda reactor: _main(reactor, args, session, args.delimiter, tls), session.interrupt
    )
