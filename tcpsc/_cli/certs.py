# -*- test-case-name: tests.test_cli -*-
"""
Write a certificate authority, a server certificate and client certificates
for tcpsc with mutual TLS authentication:

  DIR/ca.pem, ca.key          the CA (keep ca.key private)
  DIR/server.pem, server.key  the server, for localhost, 127.0.0.1, ::1 and --host
  DIR/NAME.pem, NAME.key      one pair per --client NAME (default: client)

Keys are EC P-256 (RSA 3072 with --rsa), unencrypted, mode 0600.  Existing
files are never overwritten without --force.
"""

from __future__ import annotations

import argparse

from cryptography.x509.oid import NameOID

from tcpsc import parseSubject, writeCertificateSet
from tcpsc.tap import OutOfRange, parseCount

from .common import CommandError, UsageError

__all__ = ["SUMMARY", "configure", "run"]

SUMMARY = "write a CA, a server certificate and client certificates"


def _days(text: str) -> int:
    try:
        days = parseCount(text)
    except OutOfRange:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}") from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    assert days is not None
    return days


def _subject(text: str) -> str:
    """
    The shared subject fields, checked: valid, and without the OU and CN
    that each certificate gets of its own (they would be dropped).
    """
    try:
        name = parseSubject(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    own = [
        attribute.rfc4514_string()
        for attribute in name
        if attribute.oid in (NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME)
    ]
    if own:
        raise argparse.ArgumentTypeError(
            f"each certificate gets its own OU and CN (OU=server, CN=localhost for the "
            f"server, OU=NAME, CN=NAME for --client NAME): drop {', '.join(own)}"
        )
    return text


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory", metavar="DIR", help="where to write the files (created if missing)"
    )
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME",
        help="a further host name or IP address of the server (repeatable)",
    )
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NAME",
        help="make a client certificate NAME.pem with CN=NAME "
        "(repeatable; default: one named client)",
    )
    parser.add_argument(
        "--subject",
        metavar="FIELDS",
        type=_subject,
        help="subject fields shared by all certificates, such as "
        '"C=DE,ST=Bavaria,L=Munich,O=Example"; each certificate gets '
        "its own OU and CN, so FIELDS has none (default: O=tcpsc)",
    )
    parser.add_argument("--rsa", action="store_true", help="RSA 3072 keys instead of EC P-256")
    parser.add_argument(
        "--days", type=_days, default=365, metavar="N", help="validity in days (default: 365)"
    )
    parser.add_argument("--force", action="store_true", help="replace existing files")


def run(args: argparse.Namespace) -> int:
    try:
        paths = writeCertificateSet(
            args.directory,
            hosts=args.host,
            clients=args.client or ("client",),
            subject=args.subject,
            keyType="rsa" if args.rsa else "ec",
            days=args.days,
            force=args.force,
        )
    except FileExistsError as e:
        raise CommandError(f"{e} (--force replaces it)") from None
    except ValueError as e:
        # Every ValueError is about an argument: a client name, a host.
        raise UsageError(str(e)) from None
    except OSError as e:
        where = f" {e.filename!r}" if e.filename else ""
        raise CommandError(f"cannot write{where}: {e.strerror or e}") from None
    for path in paths.values():
        print(path)
    client = (args.client or ["client"])[0]
    ca, server, serverKey = paths["ca.pem"], paths["server.pem"], paths["server.key"]
    clientCert, clientKey = paths[f"{client}.pem"], paths[f"{client}.key"]
    print(
        f"\nServe with:   twistd -n --pidfile= tcpsc --port 8443 --tls "
        f"--ca {ca} --cert {server} --key {serverKey}\n"
        f"Connect with: tcpsc connect localhost 8443 --tls --ca {ca} "
        f"--cert {clientCert} --key {clientKey}"
    )
    return 0
