# -*- test-case-name: tests.test_cli -*-
"""
Layer 6: the C{tcpsc} command (console script, and C{python -m tcpsc}).

Each subcommand lives in its own module C{tcpsc/_cmd_NAME.py}, which
provides:

  - C{SUMMARY}: one line for C{tcpsc --help};
  - C{configure(parser)}: adds its arguments to an L{argparse.ArgumentParser}
    (whose description is the module's docstring);
  - C{run(args) -> int}: does the work and returns the exit status; it raises
    L{CommandError} for a failure the user can fix, which is printed as one
    line.

Adding a subcommand is adding its name to L{COMMANDS}.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from ._version import __version__

__all__ = ["COMMANDS", "CommandError", "main"]

#: The subcommands, in the order C{tcpsc --help} lists them.
COMMANDS = ("certs", "connect", "bench")


class CommandError(Exception):
    """
    A failure of a subcommand that the user can fix: printed as
    C{tcpsc NAME: MESSAGE} on one line, exit status 1.
    """


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
