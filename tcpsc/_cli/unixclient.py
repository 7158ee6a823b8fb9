# -*- test-case-name: tests.test_cli.ConnectEndpointTests -*-
"""
A L{tcpsc.Client} that connects to a UNIX socket, for C{tcpsc connect
unix:PATH}.

STOPGAP: L{tcpsc.Client} connects only to a host and port, so this subclass
overrides three of its private methods (C{_endpoint}, C{_describeTarget},
C{_classifyConnectFailure}) and reads its private C{_reactor}.  It is the
one place where the command reaches into the library; it goes once
C{Client.connect} takes a client endpoint (or its description, such as
C{unix:/run/tcpsc.sock}) with the name to report it by and the host name a
TLS server certificate is checked against.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure

from tcpsc import Client, ConnectError

__all__ = ["unixClient"]


def unixClient(path: str, **kwargs: Any) -> Client:
    """
    A L{Client} (made with C{kwargs}) that connects to the UNIX socket
    C{path} instead of a host and port, whatever C{connect} is given, and
    names it C{unix:PATH} in what it reports.
    """

    class UNIXClient(Client):
        def _endpoint(self, host: str, port: int) -> Any:
            return UNIXClientEndpoint(self._reactor, path, timeout=self.connectTimeout)

        def _describeTarget(self) -> tuple[str, int]:
            # Shown as HOST:PORT, that is unix:PATH.
            return ("unix", path)  # type: ignore[return-value]

        def _classifyConnectFailure(self, f: Failure, host: str, port: int) -> Any:
            if f.check(ConnectionRefusedError):
                return ConnectError(f"connection to unix:{path} refused: no server is listening")
            code = getattr(f.value, "osError", None)
            why = os.strerror(code) if isinstance(code, int) else f.getErrorMessage()
            return ConnectError(f"cannot connect to unix:{path}: {why}")

    return UNIXClient(**kwargs)
