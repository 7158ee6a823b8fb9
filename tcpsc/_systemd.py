# -*- test-case-name: tests.test_systemd -*-
"""
Readiness notification to systemd (C{Type=notify}), the
C{sd_notify} protocol written with the standard library.

systemd gives a service the address of a unix datagram socket in
C{NOTIFY_SOCKET}: a path, or, starting with C{@}, a name in the abstract
namespace.  The service sends it newline-separated C{NAME=value} lines:
C{READY=1} once it serves, C{STOPPING=1} when it begins to stop,
C{STATUS=...} in words for C{systemctl status}.  The protocol is one
C{sendmsg} on such a socket, which is why this is a dozen lines rather than
a dependency (libsystemd's Python bindings need the C library and a
compiler; the small pure-Python packages add nothing to this).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from twisted.logger import Logger

__all__ = ["notify"]

_log = Logger(namespace="tcpsc.systemd")


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """
    Send C{state} (lines such as C{"READY=1"}) to systemd's notification
    socket, if C{NOTIFY_SOCKET} names one.

    A failure to send is logged as a warning and never raised: the service
    works on, and systemd, which waits for C{READY=1}, reports the start as
    timed out, which is where an operator looks.

    @param state: the lines to send.
    @param environ: where to read C{NOTIFY_SOCKET}; the process's
        environment by default.
    @return: whether it was sent; C{False} also when C{NOTIFY_SOCKET} is not
        set (not run by systemd with C{Type=notify}).
    """
    if environ is None:
        environ = os.environ
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        # The abstract namespace: a leading NUL byte instead of the '@'.
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:
        _log.warn(
            "Cannot notify systemd: NOTIFY_SOCKET={address!r} is neither a path nor an "
            "abstract socket name (@name)",
            address=address,
        )
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(target)
            s.sendall(state.encode("utf-8"))
    except OSError as e:
        _log.warn(
            "Cannot notify systemd through NOTIFY_SOCKET={address!r}: {error}",
            address=address,
            error=e.strerror or e,
        )
        return False
    return True
