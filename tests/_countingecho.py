"""
An echo application for the daemon (C{--app tests._countingecho:CountingEcho})
that counts, inside the application, every message delivered to it, every
reply C{sendMessage} accepted and every reply it refused, and writes the
counts as JSON to C{counts.json} in the daemon's working directory when the
reactor shuts down: what a graceful stop delivered is compared with what it
answered.
"""

from __future__ import annotations

import json

from twisted.internet import reactor

from tcpsc import MessageProtocol

counts = {"received": 0, "answered": 0, "refused": 0}


class CountingEcho(MessageProtocol):
    def messageReceived(self, message: bytes) -> None:
        counts["received"] += 1
        if self.sendMessage(message):
            counts["answered"] += 1
        else:
            counts["refused"] += 1


def _write() -> None:
    with open("counts.json", "w") as f:
        json.dump(counts, f)


reactor.addSystemEventTrigger("after", "shutdown", _write)  # type: ignore[attr-defined]
