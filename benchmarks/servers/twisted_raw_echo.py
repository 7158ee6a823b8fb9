"""
Baseline and ceiling: a raw Twisted L{Protocol} that writes back whatever
arrives, with no framing at all.
"""

from __future__ import annotations

from typing import Any

from _common import arguments, serveTwisted


def main() -> None:
    options = arguments(__doc__)
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    from twisted.internet.protocol import Factory, Protocol

    class Echo(Protocol):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[union-attr,call-arg,misc]

    factory = Factory.forProtocol(Echo)
    serveTwisted(reactor, factory, options.port, options.tls)


if __name__ == "__main__":
    main()
