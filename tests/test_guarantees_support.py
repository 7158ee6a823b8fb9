"""
What the C{test_guarantees_*} modules share: a test case that starts servers
and peers with their cleanup registered at once, peers that do not behave
like tcpsc clients, bounded waits, and log capture.  It holds no tests.

Every wait is on an event (a Deferred, or L{waitFor} with a bound); every
server is stopped and every peer disconnected in the test's cleanups.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from tcpsc import Client, MessageProtocol, Server, TLSConfig
from tests._helpers import SHORT, RawPeer, asyncTest, certificates, waitFor, within


def turn(seconds: float = 0.0) -> Deferred[None]:
    """
    Let the reactor run (other connections read and write) for at least one
    iteration, or C{seconds}.
    """
    return deferLater(reactor, seconds, lambda: None)


def serverTLS(**kwargs: Any) -> TLSConfig:
    c = certificates()
    return TLSConfig(ca=c.ca, cert=c.server, key=c.serverKey, **kwargs)


def clientTLS() -> TLSConfig:
    c = certificates()
    return TLSConfig(ca=c.ca, cert=c.client, key=c.clientKey)


class Echo(MessageProtocol):
    """
    Sends every message back (and ignores the bound: a refused echo is lost).
    """

    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(message)


def shrinkBuffers(transport: Any, size: int = 16 * 1024) -> None:
    """
    Make the kernel buffers of C{transport}'s socket small, so that a peer
    that does not read is noticed after kilobytes rather than megabytes.
    """
    handle = transport.getHandle()
    handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class GuaranteeTestCase(TestCase):
    """
    Starting servers and peers whose cleanup is registered at once.
    """

    async def startServer(
        self,
        protocol: type | None = None,
        *,
        tls: TLSConfig | None = None,
        interface: str = "127.0.0.1",
        **kwargs: Any,
    ) -> tuple[Server, int]:
        server = Server(protocol, **kwargs)
        self.addCleanup(lambda: within(server.stop(), 30))
        listening = await within(server.listen(0, interface, tls=tls))
        return server, listening.getHost().port

    async def connectClient(
        self, port: int, *, tls: TLSConfig | None = None, host: str = "127.0.0.1", **kwargs: Any
    ) -> Client:
        client = Client(**kwargs)
        self.addCleanup(lambda: within(client.disconnect()))
        await within(client.connect("localhost" if tls is not None else host, port, tls=tls), 30)
        return client

    async def connectRaw(
        self, port: int, peer: RawPeer | None = None, bindAddress: tuple[str, int] | None = None
    ) -> RawPeer:
        peer = peer if peer is not None else RawPeer()

        def cleanup() -> Deferred[Any] | None:
            if peer.lost.called:
                return None
            peer.transport.abortConnection()
            return within(peer.lost)

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=bindAddress)
        await within(connectProtocol(endpoint, peer))
        self.addCleanup(cleanup)
        return peer

    def captureLogs(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        observer = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return events

    @staticmethod
    def warnings(events: list[dict[str, Any]], text: str = "") -> list[dict[str, Any]]:
        """
        The warnings among C{events} whose format contains C{text}.
        """
        return [
            e
            for e in events
            if e.get("log_level") == LogLevel.warn and text in e.get("log_format", "")
        ]

    def connectionOf(self, server: Server, transport: Any) -> Any:
        """
        The server's protocol of the connection whose other end is
        C{transport}, found by its address.
        """
        local = transport.getHost()
        for clientId in server.clientIds():
            if server.clientAddress(clientId) == (local.host, local.port):
                return server.connection(clientId)
        raise AssertionError(f"the server has no connection from {local}")


__all__ = [
    "SHORT",
    "Echo",
    "GuaranteeTestCase",
    "RawPeer",
    "asyncTest",
    "clientTLS",
    "serverTLS",
    "shrinkBuffers",
    "turn",
    "waitFor",
    "within",
]
