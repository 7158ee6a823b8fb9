# -*- test-case-name: tests.test_tls,tests.test_server,tests.test_client -*-
"""
Exceptions raised by tcpsc.

Every failure that the C++ original reports as a C{start()} return code is a
L{StartError} here, and carries that number as C{code}, so that the blocking
API can keep the original's contract while Twisted-native callers catch the
more specific subclasses (L{CertificateLoadError}, L{ConnectError},
L{TLSHandshakeError}, ...).  The message always names the cause in plain
words; the code is for programs.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone, ConnectionLost

__all__ = [
    "AbortedLocally",
    "CertificateLoadError",
    "ClientCertificateRejected",
    "ClientError",
    "ClosedLocally",
    "ConnectError",
    "ListenError",
    "PortError",
    "ServerCertificateRejected",
    "ServerError",
    "StartError",
    "TLSHandshakeError",
    "TcpscError",
]


class TcpscError(Exception):
    """
    Base class of every exception raised by tcpsc.
    """


class StartError(TcpscError):
    """
    Starting a server or a client failed.

    @ivar code: the return code the C++ original uses for this failure
        (-1 already running, 10 bad port, 30-35 certificate files, 42 port in
        use, 50 connect failed, 60 TLS handshake failed).
    """

    #: Default code of the class; instances may carry another one.
    defaultCode: int = 0

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code: int = self.defaultCode if code is None else code

    def __str__(self) -> str:
        return f"{self.args[0]} (code {self.code})"


class PortError(StartError, ValueError):
    """
    The port number is outside 0-65535 (code 10).
    """

    defaultCode = 10


class ListenError(StartError):
    """
    Listening failed, for example because the port is in use (code 42).
    """

    defaultCode = 42


class CertificateLoadError(StartError):
    """
    A CA certificate, certificate or private key could not be read or parsed.

    Codes: 30/31/32 the CA/certificate/key file is unreadable; 33/34/35 it is
    not a valid PEM CA certificate/certificate/private key, or the key does
    not match the certificate (35).

    @ivar path: the file (or C{"<PEM bytes>"}) that caused the error.
    """

    defaultCode = 33

    def __init__(self, message: str, code: int | None = None, path: str = "") -> None:
        # code and path have defaults so that copies and pickles, which
        # rebuild the exception from its message alone, work.
        super().__init__(message, code)
        self.path = path


class ConnectError(StartError):
    """
    A client could not connect: refused, unresolvable host, timeout (code 50).
    """

    defaultCode = 50


class TLSHandshakeError(StartError):
    """
    The TLS handshake failed (code 60).

    @ivar reason: the underlying exception, usually an L{OpenSSL.SSL.Error}.
    """

    defaultCode = 60

    def __init__(self, message: str, reason: BaseException | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class ServerCertificateRejected(TLSHandshakeError):
    """
    The client rejected the server's certificate: not signed by the configured
    CA, expired, or issued for another host name.
    """


class ClientCertificateRejected(TLSHandshakeError):
    """
    The server rejected this client's certificate (or its absence).

    With TLS 1.3 the server verifies the client certificate only after the
    client's side of the handshake is complete, so this arrives as an alert
    after C{handshakeCompleted}; tcpsc reports it as this error rather than a
    plain disconnect.
    """


class ServerError(TcpscError, LookupError):
    """
    A server lookup failed: unknown connection id, or no such certificate data.
    """


class ClientError(TcpscError, LookupError):
    """
    A client lookup failed: not connected, or no such certificate data.
    """


class _InWords(Exception):
    """
    A reason given in words: C{str()} is those words, without the class's
    own description that Twisted's connection errors prepend.

    @ivar why: the words.
    """

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why

    def __str__(self) -> str:
        return self.why


class ClosedLocally(_InWords, ConnectionDone):
    """
    This side closed the connection cleanly: its pending output was written
    (and, over TLS, its close_notify sent) before the socket was closed.
    The reason a connection's C{connectionLost} and the C{onClosed}
    callbacks receive; C{str()} says why, in words: C{"disconnect()
    called"}, C{"server stopping"}, C{"idle timeout (60 s)"}, ...

    A subclass of Twisted's L{ConnectionDone}, so code that checks for a
    clean close keeps working.
    """


class AbortedLocally(_InWords, ConnectionLost):
    """
    This side closed the connection by force (it aborted the socket): a
    bound ran out, such as the peer not reading the last output, or not
    answering close_notify, within the close timeout; or a handshake that
    did not complete in time.  C{str()} says which, in words.

    A subclass of Twisted's L{ConnectionLost}.
    """
