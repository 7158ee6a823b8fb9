"""
tcpsc UDP echo server: a L{tcpsc.DatagramServer} whose peers send every
message back, one message per datagram, or with C{--delimiter} several
delimited messages per datagram.
"""

from __future__ import annotations

from typing import Any

from _common import SKIP, arguments, ready


def main() -> None:
    def extra(parser: Any) -> None:
        parser.add_argument(
            "--delimiter",
            help="frame messages in datagrams on this delimiter (\\n escapes as the "
            "daemon's -d; default: none, a datagram is a message)",
        )

    options = arguments(__doc__, tls=False, extra=extra)
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    try:
        from tcpsc import DatagramPeer, DatagramServer
    except ImportError:
        print("SKIP this tcpsc has no DatagramServer", flush=True)
        raise SystemExit(SKIP) from None
    from tcpsc.tap import parseDelimiter

    delimiter = parseDelimiter(options.delimiter) if options.delimiter else None

    class Echo(DatagramPeer):
        def messageReceived(self, message: bytes) -> None:
            self.sendMessage(message)

    server = DatagramServer(Echo, delimiter=delimiter)

    def listening(port: Any) -> None:
        ready(port.getHost().port)

    def failed(reason: object) -> None:
        print(f"FAILED {reason}", flush=True)
        reactor.stop()

    server.listen(options.port, "127.0.0.1").addCallbacks(listening, failed)
    reactor.run()


if __name__ == "__main__":
    main()
