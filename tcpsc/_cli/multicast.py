# -*- test-case-name: tests.test_udp_cli -*-
"""
Send to a multicast group, or listen to one, as CppServer's multicast
server and client do:

  tcpsc multicast listen 239.255.0.1:9000
  printf 'hello\\nworld\\n' | tcpsc multicast send 239.255.0.1:9000

send: each line of standard input is sent to the group as one message (one
datagram, or with --delimiter the line and the delimiter); a line longer
than --max-length, or one containing the delimiter, is not sent, and said
so.  It exits at the end of the input.

listen: joins the group and prints each message received on its own line
(a datagram with --delimiter may hold several), until Ctrl-C, SIGTERM or
--count messages.  Several listeners may share one host and port.

GROUP:PORT is an IPv4 group and a port (239.255.0.1:9000) or an IPv6 group
in brackets ([ff15::1]:9000).  Multicast is UDP: nothing says whether
anyone listens, and a datagram lost is not sent again.  Exit status:

  0    send: the input ended; listen: --count messages received, or
       standard output was closed
  1    one line on standard error: the socket cannot be made, bound, or
       join the group (no route for multicast, an --interface the host
       does not have); send: the system refused a datagram (no route to
       the group: a line each)
  2    a usage error
  130  Ctrl-C (SIGINT); SIGTERM ends it with the signal's own status, as
       twistd does (143 in a shell, -15 from Python's subprocess)

Status messages go to standard error, so standard output holds only
messages.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

from twisted.internet.defer import Deferred

from tcpsc import MulticastReceiver, MulticastSender, StartError
from tcpsc.tap import OutOfRange, parseCount, parseHostPort

from .common import CommandError, UsageError
from .terminal import Terminal, beginLogging, runCommand
from .udp import addDatagramOptions, note, sendLine

__all__ = ["SUMMARY", "configure", "run"]

SUMMARY = "send stdin lines to a multicast group, or print what a group receives"


def _group(text: str) -> tuple[str, int]:
    """
    The group and port of C{GROUP:PORT}.

    @raise argparse.ArgumentTypeError: not that, or not a multicast group.
    """
    try:
        group, port = parseHostPort(text)
    except OutOfRange as e:
        raise argparse.ArgumentTypeError(f"port {e}: {text!r}") from None
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e}: {text!r}") from None
    if not ipaddress.ip_address(group).is_multicast:
        raise argparse.ArgumentTypeError(
            f"{group} is not a multicast group (224.0.0.0/4 for IPv4, ff00::/8 for IPv6): {text!r}"
        )
    return group, port


def _ttl(text: str) -> int:
    try:
        value = parseCount(text, minimum=0)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e}: {text!r}") from None
    assert value is not None
    if value > 255:
        raise argparse.ArgumentTypeError(f"must be 255 or less: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = parseCount(text, minimum=1)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e}: {text!r}") from None
    assert value is not None
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "group",
        metavar="GROUP:PORT",
        type=_group,
        help="the group and port: 239.255.0.1:9000, or [ff15::1]:9000 for IPv6",
    )
    parser.add_argument(
        "--interface",
        default=None,
        metavar="ADDR",
        help="the interface to use: its address (of the group's family), its name "
        "(eth0; for IPv4 on Linux only) or index (default: the one the system routes "
        "the group through)",
    )
    addDatagramOptions(parser)
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also say when the socket is ready"
    )


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="mode", required=True, metavar="ACTION")
    send = actions.add_parser(
        "send",
        help="send each line of standard input to the group",
        description="Send each line of standard input to the group as one message; "
        "exit at the end of the input.",
    )
    _common(send)
    send.add_argument(
        "--ttl",
        type=_ttl,
        default=1,
        metavar="N",
        help="time to live (IPv4) or hop limit (IPv6): how many routers a datagram may "
        "cross, 0 to 255 (default: 1, this network only)",
    )
    send.add_argument(
        "--no-loopback",
        action="store_true",
        help="do not deliver to listeners on this host (default: they receive too)",
    )
    listen = actions.add_parser(
        "listen",
        help="join the group and print each message received on its own line",
        description="Join the group and print each message received on its own line, until "
        "Ctrl-C, SIGTERM or --count messages.",
    )
    _common(listen)
    listen.add_argument(
        "-n",
        "--count",
        type=_count,
        default=None,
        metavar="N",
        help="exit (status 0) after N messages (default: run until stopped)",
    )
    listen.add_argument(
        "--show-sender",
        action="store_true",
        help="begin each line with the sender's address and a space",
    )


def _where(args: argparse.Namespace) -> str:
    group, port = args.group
    return f"[{group}]:{port}" if ":" in group else f"{group}:{port}"


class _Send:
    """
    One run of C{tcpsc multicast send}: standard input, line by line, to
    the group.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sender: Any = None
        self.terminal = Terminal(self, f"multicast {args.mode}")
        self.done: Deferred[int] = Deferred()
        self._finishing = False

    def lineReceived(self, line: bytes) -> None:
        if self._finishing:
            return
        why = sendLine(self.sender, line, self.args.delimiter, self.args.max_length)
        if why is not None:
            note("multicast send", why)

    def inputEnded(self) -> None:
        # A datagram the system refused (no route) is a failure a script
        # must see; one dropped for a full buffer is UDP's loss.
        self.finish(1 if self.sender.eventCounts.get("sendFailed") else 0)

    def outputClosed(self) -> None:
        pass

    def interrupt(self) -> None:
        self._finishing = True

    def finish(self, status: int) -> None:
        if self._finishing:
            return
        self._finishing = True
        d = self.sender.stop()
        d.addBoth(lambda _: self.done.callback(status))

    def make(self, reactor: Any) -> None:
        """
        Make the sender.

        @raise UsageError: options the sender refuses.
        """
        group, port = self.args.group
        try:
            self.sender = MulticastSender(
                group,
                port,
                interface=self.args.interface,
                ttl=self.args.ttl,
                loopback=not self.args.no_loopback,
                delimiter=self.args.delimiter,
                maxMessageLength=self.args.max_length,
                reactor=reactor,
            )
        except ValueError as e:
            raise UsageError(str(e)) from None

    async def main(self, reactor: Any) -> int:
        from twisted.internet.stdio import StandardIO

        try:
            await self.sender.start()
        except (StartError, OSError) as e:
            raise CommandError(str(e)) from None
        if self.args.verbose or sys.stdin.isatty():
            note("multicast send", f"sending to {_where(self.args)}; type messages, Ctrl-D to quit")
        StandardIO(self.terminal, reactor=reactor)
        return await self.done


class _Receiver(MulticastReceiver):
    """
    A receiver that says on standard error when it drops a datagram for
    its length.

    @ivar bound: C{--max-length}.
    """

    bound = 0

    def messageTooLong(self, length: int, address: tuple[str, int]) -> None:
        host, port = address[0], address[1]
        sender = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        note(
            "multicast listen",
            f"a datagram from {sender} longer than --max-length ({self.bound} bytes) was dropped",
        )


class _Listen:
    """
    One run of C{tcpsc multicast listen}: what the group receives, to
    standard output.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.receiver: Any = None
        self.terminal = Terminal(self, f"multicast {args.mode}")
        self.stdio: Any = None
        self.done: Deferred[int] = Deferred()
        self.received = 0
        self._finishing = False

    def messageReceived(self, message: bytes, sender: tuple[str, int]) -> None:
        if self._finishing or self.stdio is None:
            return
        if self.args.show_sender:
            host, port = sender[0], sender[1]
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            self.stdio.writeSequence((where.encode(), b" ", message, b"\n"))
        else:
            self.stdio.writeSequence((message, b"\n"))
        self.received += 1
        if self.args.count is not None and self.received >= self.args.count:
            self.finish(0)

    # Standard input is not read; these are the terminal's callbacks.
    def lineReceived(self, line: bytes) -> None:
        pass

    def inputEnded(self) -> None:
        pass

    def outputClosed(self) -> None:
        self.finish(0)

    def interrupt(self) -> None:
        self._finishing = True

    def finish(self, status: int) -> None:
        if self._finishing:
            return
        self._finishing = True
        d = self.receiver.stop()

        def closeOutput(_: object) -> Deferred[None] | None:
            self.stdio.loseConnection()
            return self.terminal.closed

        d.addBoth(closeOutput)
        d.addBoth(lambda _: self.done.callback(status))

    def make(self, reactor: Any) -> None:
        """
        Make the receiver.

        @raise UsageError: options the receiver refuses.
        """
        group, port = self.args.group
        try:
            self.receiver = _Receiver(
                group,
                port,
                interface=self.args.interface,
                onMessage=self.messageReceived,
                delimiter=self.args.delimiter,
                maxMessageLength=self.args.max_length,
                reactor=reactor,
            )
        except ValueError as e:
            raise UsageError(str(e)) from None
        self.receiver.bound = self.args.max_length

    async def main(self, reactor: Any) -> int:
        from twisted.internet.stdio import StandardIO

        self.stdio = StandardIO(self.terminal, reactor=reactor)
        # Standard input is not read: only its end would be news, and a
        # listener in the background has none.
        self.stdio.pauseProducing()
        try:
            await self.receiver.start()
        except (StartError, OSError) as e:
            self.stdio.loseConnection()
            raise CommandError(str(e)) from None
        if self.args.verbose:
            note("multicast listen", f"listening to {_where(self.args)}")
        return await self.done


def run(args: argparse.Namespace) -> int:
    from twisted.internet import reactor

    session: _Send | _Listen = _Send(args) if args.mode == "send" else _Listen(args)
    session.make(reactor)
    beginLogging(f"multicast {args.mode}", args.verbose)
    return runCommand(session.main, session.interrupt)
