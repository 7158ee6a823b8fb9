# -*- test-case-name: tests.test_cli -*-
"""
What the subcommands of C{tcpsc} share: their errors, where they connect
(C{HOST PORT} or an endpoint description), and the converters of their
option values, which read a value as the daemon's options do
(L{tcpsc.tap.parseSeconds} and the rest of that grammar).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from tcpsc.tap import (
    DELIMITER_HELP,
    OutOfRange,
    parseCount,
    parseDelimiter,
    parsePortNumber,
    parseSeconds,
)

__all__ = [
    "CommandError",
    "Target",
    "UsageError",
    "addDelimiterOption",
    "addTargetArguments",
    "countArgument",
    "parseTarget",
    "secondsArgument",
    "secondsOrZeroArgument",
]

_T = TypeVar("_T")


class CommandError(Exception):
    """
    A failure of a subcommand that the user can fix: printed as
    C{tcpsc NAME: MESSAGE} on one line, exit status 1.
    """


class UsageError(Exception):
    """
    Options of a subcommand that do not go together (C{--cert} without
    C{--key}): printed as argparse prints a usage error, exit status 2.
    """


def _argument(parse: Callable[[str], _T | None]) -> Callable[[str], _T]:
    """
    An argparse C{type} that reads a value with C{parse}: a L{ValueError}
    becomes an argparse error naming the option, what is wrong and the text
    typed, on one line.
    """

    def convert(text: str) -> _T:
        try:
            value = parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{e}: {text!r}") from None
        assert value is not None
        return value

    return convert


#: argparse types: a number of seconds more than 0; 0 or more; a whole
#: number of 1 or more.
secondsArgument = _argument(parseSeconds)
secondsOrZeroArgument = _argument(partial(parseSeconds, allowZero=True))
countArgument = _argument(parseCount)


def _delimiter(text: str) -> bytes:
    try:
        return parseDelimiter(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def addDelimiterOption(parser: argparse.ArgumentParser) -> None:
    """
    Add C{-d}/C{--delimiter}, with the grammar and help text every tcpsc
    command and the daemon share (L{tcpsc.tap.parseDelimiter}); its value is
    bytes, a newline by default.
    """
    parser.add_argument(
        "-d",
        "--delimiter",
        type=_delimiter,
        default=b"\n",
        metavar="D",
        help=f"{DELIMITER_HELP} (default: \\n)",
    )


#: What C{HOST PORT} or an endpoint description may name, for C{--help}.
TARGET_HELP = (
    "the server: HOST PORT (a host name or address and a port), or a client endpoint "
    "description: tcp:HOST:PORT, or unix:PATH for a UNIX socket (as the daemon's "
    "--port unix:PATH)"
)


@dataclass(frozen=True)
class Target:
    """
    Where a command connects: C{host} and C{port}, or C{path}, a UNIX
    socket (then C{host} is the name a TLS server certificate is checked
    against, C{localhost}).
    """

    host: str
    port: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def addTargetArguments(parser: argparse.ArgumentParser) -> None:
    """
    Add the positional C{HOST PORT} (or one endpoint description) that
    L{parseTarget} reads.
    """
    parser.add_argument("host", metavar="HOST", help=TARGET_HELP)
    parser.add_argument(
        "port",
        metavar="PORT",
        nargs="?",
        default=None,
        help="the server's port (not with an endpoint description)",
    )


def _portNumber(text: str) -> int:
    try:
        return parsePortNumber(text)
    except OutOfRange as e:
        raise UsageError(f"port {e}: {text!r}") from None
    except ValueError as e:
        raise UsageError(f"{e}: {text!r}") from None


def parseTarget(host: str, port: str | None) -> Target:
    """
    The L{Target} of C{HOST PORT}, or of one endpoint description
    (C{tcp:HOST:PORT}, with an IPv6 address as C{[::1]} or with its colons
    escaped as C{\\:}; C{unix:PATH}) given as C{host} alone.

    @raise UsageError: neither, or both.
    """
    kind, colon, rest = host.partition(":")
    described = colon and kind in ("tcp", "tcp6", "unix")
    if port is not None:
        if described:
            raise UsageError(f"{host} is an endpoint description: give it without a PORT")
        return Target(host, _portNumber(port))
    if not described:
        raise UsageError(
            f"PORT is missing after {host} (or give an endpoint such as tcp:HOST:PORT or unix:PATH)"
        )
    if kind == "unix":
        path = rest.removeprefix("path=")
        if not path:
            raise UsageError(f"{host} names no socket path")
        return Target("localhost", None, path)
    address, colon, number = rest.replace("\\:", "\0").rpartition(":")
    address = address.replace("\0", ":").strip("[]")
    if not colon or not address:
        raise UsageError(f"{host} is not tcp:HOST:PORT")
    return Target(address, _portNumber(number))
