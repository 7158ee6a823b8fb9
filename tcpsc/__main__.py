# -*- test-case-name: tests.test_cli -*-
"""
Layer 6: the C{tcpsc} command (console script, and C{python -m tcpsc}).

Each subcommand lives in its own module C{tcpsc/_cmd_NAME.py}, which
provides:

  - C{SUMMARY}: one line for C{tcpsc --help};
  - C{configure(parser)}: adds its arguments to an L{argparse.ArgumentParser}
    (whose description is the module's docstring);
  - C{run(args) -> int}: does the work and returns the exit status; it raises
    L{UsageError} for options that do not go together (exit status 2, like
    argparse's own errors) and L{CommandError} for a failure the user can
    fix (exit status 1), each printed as one line.

Adding a subcommand is adding its name to L{COMMANDS}.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from ._version import __version__

__all__ = [
    "COMMANDS",
    "CommandError",
    "Target",
    "UsageError",
    "addDelimiterOption",
    "addTargetArguments",
    "main",
    "parseTarget",
]

#: The subcommands, in the order C{tcpsc --help} lists them.
COMMANDS = ("certs", "connect", "bench")


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


def _delimiter(text: str) -> bytes:
    from ._delimiter import parseDelimiter

    try:
        return parseDelimiter(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def addDelimiterOption(parser: argparse.ArgumentParser) -> None:
    """
    Add C{-d}/C{--delimiter}, with the grammar and help text every tcpsc
    command and the daemon share (L{tcpsc._delimiter}); its value is bytes,
    a newline by default.
    """
    from ._delimiter import DELIMITER_HELP

    parser.add_argument("-d", "--delimiter", type=_delimiter, default=b"\n", metavar="D",
                        help=f"{DELIMITER_HELP} (default: \\n)")


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
    parser.add_argument("port", metavar="PORT", nargs="?", default=None,
                        help="the server's port (not with an endpoint description)")


def _portNumber(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise UsageError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise UsageError(f"port outside 1-65535: {text!r}")
    return port


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
        raise UsageError(f"PORT is missing after {host} "
                         "(or give an endpoint such as tcp:HOST:PORT or unix:PATH)")
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


class _Parser(argparse.ArgumentParser):
    """
    An argument parser whose errors are one line (the usage is one
    C{--help} away), exit status 2.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> _Parser:
    parser = _Parser(
        prog="tcpsc",
        description="Tools for tcpsc, message-oriented TCP/TLS 1.3 servers and clients. "
        "The server itself is the twistd plugin: twistd -n --pidfile= tcpsc --help",
    )
    parser.add_argument("--version", action="version", version=f"tcpsc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"tcpsc._cmd_{name}")
        subparser = subparsers.add_parser(
            name,
            help=module.SUMMARY,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(subparser)
        subparser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """
    Run the C{tcpsc} command and exit with its status: 0 success, 1 a
    failure (one line on standard error), 2 a usage error, 130 interrupted.
    """
    args = _parser().parse_args(argv)
    try:
        status = args._run(args)
    except UsageError as e:
        prog = " ".join(["tcpsc", args.command, *([args.mode] if "mode" in args else [])])
        print(f"{prog}: error: {e} (see {prog} --help)", file=sys.stderr)
        status = 2
    except CommandError as e:
        print(f"tcpsc {args.command}: {e}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)


if __name__ == "__main__":
    # Run the copy imported as tcpsc.__main__, the module the subcommands
    # import CommandError from, so that there is one CommandError class.
    from tcpsc.__main__ import main as _main

    _main()
