# -*- test-case-name: tests.test_cli -*-
"""
The C{tcpsc} command's entry point: the console script and
C{python -m tcpsc} call L{main}.

Each subcommand is a module of this package, which provides:

  - C{SUMMARY}: one line for C{tcpsc --help};
  - C{configure(parser)}: adds its arguments to an L{argparse.ArgumentParser}
    (whose description is the module's docstring);
  - C{run(args) -> int}: does the work and returns the exit status; it raises
    L{UsageError} for options that do not go together (exit status 2, like
    argparse's own errors) and L{CommandError} for a failure the user can
    fix (exit status 1), each printed as one line.

Adding a subcommand is adding its module to L{COMMANDS}.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from tcpsc import __version__

from . import bench, certs, connect, multicast, udp
from .common import CommandError, UsageError

__all__ = ["COMMANDS", "main"]

#: The subcommands by name, in the order C{tcpsc --help} lists them.
COMMANDS: dict[str, ModuleType] = {
    "certs": certs,
    "connect": connect,
    "udp": udp,
    "multicast": multicast,
    "bench": bench,
}


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
        description="Tools for tcpsc, message-oriented TCP/TLS 1.3 and UDP servers and clients. "
        "The server itself is the twistd plugin: twistd -n --pidfile= tcpsc --help",
    )
    parser.add_argument("--version", action="version", version=f"tcpsc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
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
