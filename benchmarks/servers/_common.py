"""
What the benchmark servers share: arguments, the reactor choice, TLS
options from a certificate directory, and the C{READY <port>} line the
suite waits for.

Each server is its own script so that it runs in its own process, pinned to
its own core by C{benchmarks/run.py}.  They listen on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

# The work tree's tcpsc, not an installed one.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

warnings.filterwarnings("ignore", category=DeprecationWarning)

#: Exit status of a server that cannot run here (a module is missing).
SKIP = 3

#: The listen queue of every baseline: the same number as tcpsc's own
#: (C{tcpsc._accept.BACKLOG}), computed the same way rather than imported, so
#: that a baseline never loads tcpsc.  With Twisted's default of 50, a
#: hundred clients connecting at once leave some waiting about a second for
#: a SYN retransmission.
BACKLOG = max(50, socket.SOMAXCONN)


def arguments(
    description: str, tls: bool = True, reactor: bool = True, extra: Any = None
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("port", type=int)
    if tls:
        parser.add_argument(
            "--tls",
            metavar="DIR",
            help="serve TLS 1.3 with client certificates required, using "
            "ca.pem, server.pem and server.key from DIR",
        )
    if reactor:
        parser.add_argument(
            "--reactor", choices=("default", "asyncio", "uvloop"), default="default"
        )
    if extra is not None:
        extra(parser)
    options = parser.parse_args()
    raiseFileLimit()
    if reactor:
        installReactor(options.reactor)
    return options


def raiseFileLimit() -> None:
    """
    Room for the idle-connections scenario (10,000 connections).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            pass


def installReactor(name: str) -> None:
    if name == "default":
        return
    import asyncio

    loop: Any
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("SKIP uvloop is not installed", flush=True)
            raise SystemExit(SKIP) from None
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)


def tlsConfig(directory: str) -> Any:
    from tcpsc import TLSConfig

    return TLSConfig(
        ca=os.path.join(directory, "ca.pem"),
        cert=os.path.join(directory, "server.pem"),
        key=os.path.join(directory, "server.key"),
    )


def serverOptions(directory: str) -> Any:
    """
    Twisted TLS options for the baselines: the same as tcpsc's (TLS 1.3,
    client certificate required, verified against the CA), made with
    Twisted alone so that a baseline never loads tcpsc.
    """
    from twisted.internet import ssl

    def read(name: str) -> bytes:
        with open(os.path.join(directory, name), "rb") as f:
            return f.read()

    identity = ssl.PrivateCertificate.loadPEM(read("server.pem") + read("server.key"))
    return ssl.CertificateOptions(
        privateKey=identity.privateKey.original,
        certificate=identity.original,
        trustRoot=ssl.trustRootFromCertificates([ssl.Certificate.loadPEM(read("ca.pem"))]),
        raiseMinimumTo=ssl.TLSVersion.TLSv1_3,
    )


def serveTwisted(reactor: Any, factory: Any, port: int, tls: str | None) -> None:
    """
    Serve C{factory} with plain Twisted on 127.0.0.1 (TLS from the certificate
    directory C{tls}, if given), say C{READY}, and run the reactor.
    """
    if tls:
        listening = reactor.listenSSL(
            port, factory, serverOptions(tls), interface="127.0.0.1", backlog=BACKLOG
        )
    else:
        listening = reactor.listenTCP(port, factory, interface="127.0.0.1", backlog=BACKLOG)
    ready(listening.getHost().port)
    reactor.run()


def ready(port: int) -> None:
    print(f"READY {port}", flush=True)
