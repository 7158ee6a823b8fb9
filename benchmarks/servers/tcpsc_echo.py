"""
tcpsc echo server: a L{tcpsc.MessageProtocol} that sends every message
back, plain or over TLS 1.3 with client certificates.
"""

from __future__ import annotations

from typing import Any

from _common import SKIP, arguments, ready, tlsConfig


def main() -> None:
    def extra(parser: Any) -> None:
        parser.add_argument("--max-connections", type=int, default=20_000)
        parser.add_argument(
            "--batch",
            action="store_true",
            help="serve the daemon's echo application, which answers the messages of "
            "a read as one batch (messagesReceived)",
        )
        parser.add_argument(
            "--metrics",
            action="store_true",
            help="report Prometheus metrics (Server(metrics=...)), served "
            "at /metrics on another port of 127.0.0.1",
        )

    options = arguments(__doc__, extra=extra)
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    from tcpsc import MessageProtocol, Server

    class Echo(MessageProtocol):
        maxMessageLength = 64 * 1024 * 1024

        def messageReceived(self, message: bytes) -> None:
            self.sendMessage(message)

    if options.batch:
        from tcpsc._apps import Echo as BatchEcho

        class Echo(BatchEcho):  # type: ignore[no-redef]
            maxMessageLength = 64 * 1024 * 1024

    # The scenarios open up to 10,000 connections from one address, some
    # idle: no per-peer limit, no first-byte timeout.
    metrics: dict[str, Any] = {}
    if options.metrics:
        try:
            from prometheus_client import CollectorRegistry
            from prometheus_client.twisted import MetricsResource
        except ImportError:
            print(
                'SKIP prometheus-client is not installed: pip install "tcpsc[metrics]"', flush=True
            )
            raise SystemExit(SKIP) from None
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        metrics["metrics"] = registry = CollectorRegistry()
        root = Resource()
        root.putChild(b"metrics", MetricsResource(registry))
        reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    try:
        server = Server(
            Echo,
            maxConnections=options.max_connections,
            maxConnectionsPerPeer=None,
            firstByteTimeout=None,
            **metrics,
        )
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
