# -*- test-case-name: tests.test_exports -*-
"""
tcpsc: message-oriented TCP and TLS 1.3 servers and clients on Twisted.

Fragmented mode (L{MessageProtocol}: messages separated by a delimiter) and
continuous mode (L{StreamProtocol}: a raw byte stream), served by L{Server}
and connected by L{Client}, with mutual certificate authentication through
L{TLSConfig}; reactor services for C{.tac} files (L{ServerService},
L{KeepConnectedService}); and the C++ original's blocking API (L{TcpServer},
L{TlsServer}, L{TcpClient}, L{TlsClient}) for programs that run no reactor.
L{writeCertificateSet} makes a CA, a server and client certificates for
trying TLS (what C{tcpsc certs} writes).
"""

from ._certgen import parseSubject, writeCertificateSet
from ._client import Client
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
from .blocking import ReactorThreadError, TcpClient, TcpServer, TlsClient, TlsServer

__all__ = [
    "FROM_PROTOCOL",
    "AbortedLocally",
    "CertificateLoadError",
    "Client",
    "ClientCertificateRejected",
    "ClientError",
    "ClosedLocally",
    "ConnectError",
    "FromProtocol",
    "KeepConnectedService",
    "ListenError",
    "MessageProtocol",
    "PortError",
    "ReactorThreadError",
    "Server",
    "ServerCertificateRejected",
    "ServerError",
    "ServerService",
    "Settings",
    "StartError",
    "StreamProtocol",
    "TLSConfig",
    "TLSHandshakeError",
    "TcpClient",
    "TcpServer",
    "TcpscError",
    "TlsClient",
    "TlsServer",
    "__version__",
    "parseSubject",
    "writeCertificateSet",
]
