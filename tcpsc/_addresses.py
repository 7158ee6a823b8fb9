"""
Addresses in words, for log lines and messages.
"""

from __future__ import annotations

import os

from twisted.internet.address import UNIXAddress
from twisted.internet.interfaces import IAddress


def describeAddress(address: IAddress | None) -> str:
    """
    C{host:port}, or C{[host]:port} for IPv6, or C{unix:PATH} (C{unix
    socket} for an unnamed peer), for log lines.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None:
        if isinstance(address, UNIXAddress):
            name = address.name
            if isinstance(name, bytes):
                name = os.fsdecode(name)
            return f"unix:{name}" if name else "unix socket"
        return str(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
