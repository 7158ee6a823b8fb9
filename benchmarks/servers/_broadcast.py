"""
The pump both broadcast servers share: broadcast as fast as the clients
read, in rounds of C{BATCH} messages per reactor turn, and stop while any
client's transport has more than its buffer queued (the transports pause
their producer, the connection itself), so that memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Broadcasts per reactor turn.
BATCH = 64


class Pump:
    def __init__(self, reactor: Any, broadcastOne: Callable[[], object]) -> None:
        self.reactor = reactor
        self.broadcastOne = broadcastOne
        self.clients: set[object] = set()
        self.paused: set[object] = set()
        self.scheduled: Any = None
        self.sent = 0

    def attach(self, protocol: Any) -> None:
        """
        Register C{protocol} (with C{pauseProducing}, C{resumeProducing},
        C{stopProducing} delegating to this pump) on its transport.
        """
        self.clients.add(protocol)
        protocol.transport.registerProducer(protocol, True)
        self.schedule()

    def detach(self, protocol: object) -> None:
        self.clients.discard(protocol)
        self.paused.discard(protocol)
        self.schedule()

    def pause(self, protocol: object) -> None:
        self.paused.add(protocol)

    def resume(self, protocol: object) -> None:
        self.paused.discard(protocol)
        self.schedule()

    def schedule(self) -> None:
        if self.scheduled is None and self.clients and not self.paused:
            self.scheduled = self.reactor.callLater(0, self.run)

    def run(self) -> None:
        self.scheduled = None
        broadcastOne = self.broadcastOne
        paused = self.paused
        n = 0
        while n < BATCH and self.clients and not paused:
            broadcastOne()
            n += 1
        self.sent += n
        self.schedule()
