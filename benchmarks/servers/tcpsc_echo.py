"""
tcpsc echo server: a L{tcpsc.MessageProtocol} that sends every message
back, plain or over TLS 1.3 with client certificates.
"""

from __future__ import annotations

from typing import Any

from _common import arguments, ready, tlsConfig


def main() -> None:
    options = arguments(__doc__, extra=lambda p: p.add_argument(
        "--max-connections", type=int, default=20_000))
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    from tcpsc import MessageProtocol, Server

    class Echo(MessageProtocol):
        maxMessageLength = 64 * 1024 * 1024

        def messageReceived(self, message: bytes) -> None:
            self.sendMessage(message)

    # The scenarios open up to 10,000 connections from one address, some
    # idle: no per-peer limit, no first-byte timeout.
    try:
        server = Server(Echo, maxConnections=options.max_connections,
                        maxConnectionsPerPeer=None, firstByteTimeout=None)
    except TypeError:  # a tcpsc without these settings
        server = Server(Echo, maxConnections=options.max_connections)
    tls = tlsConfig(options.tls) if options.tls else None

    def listening(port: Any) -> None:
        ready(port.getHost().port)

    def failed(reason: object) -> None:
        print(f"FAILED {reason}", flush=True)
        reactor.stop()

    server.listen(options.port, "127.0.0.1", tls=tls).addCallbacks(listening, failed)
    reactor.run()


if __name__ == "__main__":
    main()
