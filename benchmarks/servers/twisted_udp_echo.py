"""
Baseline: a plain Twisted L{DatagramProtocol} that sends every datagram back
to where it came from, on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

from _common import arguments, ready


def main() -> None:
    options = arguments(__doc__, tls=False)
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    from twisted.internet.protocol import DatagramProtocol

    class Echo(DatagramProtocol):
        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            self.transport.write(datagram, addr)

    port = reactor.listenUDP(options.port, Echo(), interface="127.0.0.1")
    ready(port.getHost().port)
    reactor.run()


if __name__ == "__main__":
    main()
