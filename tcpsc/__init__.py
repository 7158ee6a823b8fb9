# -*- test-case-name: tests.test_signatures -*-
"""
tcpsc: message-oriented TCP and TLS 1.3 servers and clients on Twisted.

Fragmented mode (L{MessageProtocol}: messages separated by a delimiter) and
continuous mode (L{StreamProtocol}: a raw byte stream), served by L{Server}
and connected by L{Client}; datagrams (UDP) with L{DatagramServer},
L{DatagramClient} and L{DatagramPeer}; with mutual certificate authentication through
L{TLSConfig} and limits, timeouts and bounds as one L{Settings} value;
reactor services for C{.tac} files (L{ServerService},
L{KeepConnectedService}); L{writeCertificateSet} makes a CA, a server and
client certificates for trying TLS (what C{tcpsc certs} writes).

The C++ original's classes, for programs that run no reactor, are in
L{tcpsc.blocking} (C{TcpServer}, C{TlsServer}, C{TcpClient}, C{TlsClient}).
"""

from typing import Any

from ._certgen import parseSubject, writeCertificateSet
from ._client import Client
from ._datagram import DEFAULT_MAX_DATAGRAM, DatagramClient, DatagramPeer, DatagramServer
from ._errors import (
    AbortedLocally,
    CertificateLoadError,
    ClientCertificateRejected,
    ClientError,
    ClosedLocally,
    ConnectError,
    ListenError,
    PortError,
    ServerCertificateRejected,
    ServerError,
    StartError,
    TcpscError,
    TLSHandshakeError,
)
from ._framing import MessageProtocol, StreamProtocol
from ._server import Server
from ._service import KeepConnectedService, ServerService
from ._settings import FROM_PROTOCOL, FromProtocol, Settings
from ._tls import TLSConfig
from ._version import __version__

__all__ = [
    "DEFAULT_MAX_DATAGRAM",
    "FROM_PROTOCOL",
    "AbortedLocally",
    "CertificateLoadError",
    "Client",
    "ClientCertificateRejected",
    "ClientError",
    "ClosedLocally",
    "ConnectError",
    "DatagramClient",
    "DatagramPeer",
    "DatagramServer",
    "FromProtocol",
    "KeepConnectedService",
    "ListenError",
    "MessageProtocol",
    "PortError",
    "Server",
    "ServerCertificateRejected",
    "ServerError",
    "ServerService",
    "Settings",
    "StartError",
    "StreamProtocol",
    "TLSConfig",
    "TLSHandshakeError",
    "TcpscError",
    "__version__",
    "parseSubject",
    "writeCertificateSet",
]

#: Names that C{tcpsc} exported before the blocking classes had one home.
_MOVED_TO_BLOCKING = frozenset(
    {"TcpServer", "TlsServer", "TcpClient", "TlsClient", "ReactorThreadError"}
)


def __getattr__(name: str) -> Any:
    """
    The blocking classes under their old names (C{tcpsc.TcpServer}), with a
    C{DeprecationWarning}: they live in L{tcpsc.blocking}, which is loaded
    only when one of them is used.
    """
    if name in _MOVED_TO_BLOCKING:
        import warnings

        from . import blocking

        warnings.warn(
            f"tcpsc.{name} is deprecated: import it from tcpsc.blocking "
            f"(from tcpsc.blocking import {name})",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(blocking, name)
    raise AttributeError(f"module 'tcpsc' has no attribute {name!r}")
