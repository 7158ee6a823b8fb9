"""
tcpsc broadcast server: L{tcpsc.Server.broadcast} of 32-byte messages
(31 bytes and the delimiter) to every connected client, as fast as they
read, pausing while any client's output is backed up.
"""

from __future__ import annotations

from typing import Any

from _broadcast import Pump
from _common import arguments, ready, tlsConfig


def main() -> None:
    options = arguments(__doc__, extra=lambda p: p.add_argument("--size", type=int, default=32))
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    from tcpsc import MessageProtocol, Server

    message = (b"0123456789abcdefghijklmnopqrstuvwxyz" * (options.size // 36 + 1))[
        : options.size - 1
    ]

    class Reader(MessageProtocol):
        def connectionReady(self) -> None:
            pump.attach(self)

        def connectionLost(self, reason: Any = None) -> None:
            pump.detach(self)
            super().connectionLost(reason)

        def pauseProducing(self) -> None:
            pump.pause(self)

        def resumeProducing(self) -> None:
            pump.resume(self)

        def stopProducing(self) -> None:
            pump.detach(self)

    # Many connections from one address: no per-peer limit.
    try:
        server = Server(
            Reader, maxConnections=20_000, maxConnectionsPerPeer=None, firstByteTimeout=None
        )
    except TypeError:  # a tcpsc without these settings
        server = Server(Reader, maxConnections=20_000)
    pump = Pump(reactor, lambda: server.broadcast(message))
    tls = tlsConfig(options.tls) if options.tls else None

    def listening(port: Any) -> None:
        ready(port.getHost().port)

    server.listen(options.port, "127.0.0.1", tls=tls).addCallback(listening)
    reactor.run()


if __name__ == "__main__":
    main()
