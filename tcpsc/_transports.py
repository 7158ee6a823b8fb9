# -*- test-case-name: tests.test_compat,tests.test_blocking_output -*-
"""
What the streaming producers of tcpsc need to know about the transport that
owns a connection's socket.

Two producers sit on that transport: a connection's output tracker
(L{tcpsc._framing}) and the blocking API's output queue (L{tcpsc._output}).
Both go on the socket transport, below TLS and any other protocol wrapper
(L{socketTransport}), because a producer registered on Twisted's TLS
transport delays that transport's C{loseConnection} until it is
unregistered.  And both must let go of the transport when it resumes them
while it is closing (L{releaseIfClosing}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.protocols.policies import ProtocolWrapper

from . import _compat

__all__ = ["releaseIfClosing", "socketTransport"]


def socketTransport(transport: Any) -> Any:
    """
    The transport that owns the socket under C{transport}: below TLS and any
    other protocol wrapper.
    """
    while isinstance(transport, ProtocolWrapper) and transport.transport is not None:
        transport = transport.transport
    return transport


def releaseIfClosing(
    transport: Any, producer: IPushProducer, unregister: Callable[[], object]
) -> None:
    """
    Called by C{producer}, the streaming producer of the socket transport
    C{transport}, when that transport resumes it: let a closing transport
    close.

    A socket transport that was asked to close (C{loseConnection}) or to
    close its write half (C{loseWriteConnection}) while its producer was
    paused resumes the producer once its buffer is written, I{instead} of
    closing.  So the producer unregisters (with C{unregister}, which must
    call the transport's C{unregisterProducer}); for a full close that makes
    the transport write again and close, for a half-close the transport is
    made to write again here.  When it cannot be told whether the transport
    half-closes (L{tcpsc._compat.writeClosing}), the transport is made to
    look at its buffer again, which half-closes it if it was asked to, since
    its producer is no longer paused.
    """
    disconnecting = getattr(transport, "disconnecting", False)
    writeClosing = _compat.writeClosing(transport)
    if disconnecting or writeClosing:
        if getattr(transport, "producer", None) is producer:
            unregister()
            if not disconnecting:
                transport.startWriting()
    elif writeClosing is None:
        startWriting = getattr(transport, "startWriting", None)
        if startWriting is not None:
            startWriting()
