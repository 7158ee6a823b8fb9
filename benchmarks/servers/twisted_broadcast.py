"""
Baseline broadcast server: Twisted L{LineOnlyReceiver}, C{sendLine} of a
32-byte message (31 bytes and the delimiter) to every client in turn, as
fast as they read, pausing while any client's output is backed up.
"""

from __future__ import annotations

from typing import Any

from _broadcast import Pump
from _common import arguments, serveTwisted


def main() -> None:
    options = arguments(__doc__, extra=lambda p: p.add_argument("--size", type=int, default=32))
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    from twisted.internet.protocol import Factory
    from twisted.protocols.basic import LineOnlyReceiver

    message = (b"0123456789abcdefghijklmnopqrstuvwxyz" * (options.size // 36 + 1))[
        : options.size - 1
    ]
    clients: list[LineOnlyReceiver] = []

    class Reader(LineOnlyReceiver):
        delimiter = b"\n"

        def connectionMade(self) -> None:
            clients.append(self)
            pump.attach(self)

        def connectionLost(self, reason: object = None) -> None:
            if self in clients:
                clients.remove(self)
            pump.detach(self)

        def lineReceived(self, line: bytes) -> None:
            pass

        def pauseProducing(self) -> None:
            pump.pause(self)

        def resumeProducing(self) -> None:
            pump.resume(self)

        def stopProducing(self) -> None:
            pump.detach(self)

    def broadcastOne() -> None:
        for client in clients:
            client.sendLine(message)

    pump = Pump(reactor, broadcastOne)
    factory = Factory.forProtocol(Reader)
    serveTwisted(reactor, factory, options.port, options.tls)


if __name__ == "__main__":
    main()
