"""
Baseline: Twisted's L{LineOnlyReceiver} echo (C{sendLine} per line), plain
or over TLS 1.3 with client certificates.  C{MAX_LENGTH} is raised so that
64 KiB messages are echoed rather than dropped.
"""

from __future__ import annotations

from typing import Any

from _common import arguments, serveTwisted


def main() -> None:
    options = arguments(__doc__)
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    from twisted.internet.protocol import Factory
    from twisted.protocols.basic import LineOnlyReceiver

    class Echo(LineOnlyReceiver):
        delimiter = b"\n"
        MAX_LENGTH = 64 * 1024 * 1024

        def lineReceived(self, line: bytes) -> None:
            self.sendLine(line)

    factory = Factory.forProtocol(Echo)
    serveTwisted(reactor, factory, options.port, options.tls)


if __name__ == "__main__":
    main()
