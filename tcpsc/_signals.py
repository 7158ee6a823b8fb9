"""
SIGHUP handed to the reactor, for the daemon (certificate reload) and the
parent of its worker processes (which passes it on).

Installed the way twistd handles SIGUSR1 and Twisted's reactor SIGTERM: the
Python signal handler only hands the work to the reactor
(C{callFromThread}, which wakes it up), so the callback runs in the
reactor's loop, never in the middle of other code.  The reactor's own
handlers (SIGINT, SIGTERM, SIGCHLD) are not touched.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

__all__ = ["HangupHandler"]


class HangupHandler:
    """
    Call C{callback} in the reactor's loop on each SIGHUP, while installed.
    """

    def __init__(self, reactor: Any, callback: Callable[[], object]) -> None:
        self._reactor = reactor
        self._callback = callback
        self._handler: Callable[[int, object], None] | None = None
        self._previous: Any = None

    @property
    def installed(self) -> bool:
        return self._handler is not None

    @staticmethod
    def available() -> bool:
        """
        Whether this platform has SIGHUP.
        """
        return hasattr(signal, "SIGHUP")

    def install(self) -> None:
        """
        Handle SIGHUP from now on, keeping the handler it had.

        @raise ValueError: not called from the main thread, the only one
            that can set signal handlers.
        """
        reactor, callback = self._reactor, self._callback

        def handler(number: int, frame: object) -> None:
            reactor.callFromThread(callback)

        self._previous = signal.signal(signal.SIGHUP, handler)
        self._handler = handler

    def restore(self) -> None:
        """
        Give SIGHUP back the handler it had before L{install}, unless
        another was set since.
        """
        handler, self._handler = self._handler, None
        if handler is None:
            return
        previous, self._previous = self._previous, None
        if signal.getsignal(signal.SIGHUP) is handler:
            signal.signal(signal.SIGHUP, signal.SIG_DFL if previous is None else previous)
