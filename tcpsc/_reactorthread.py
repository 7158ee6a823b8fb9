# -*- test-case-name: tests.test_blocking_reactorthread -*-
"""
The reactor of the blocking API: one private reactor instance, run in one
daemon background thread shared by every blocking object of the process.

The reactor is instantiated but not installed as Twisted's global reactor:
every layer of tcpsc takes its reactor as an argument, so the blocking API
does not need the global one, and a program (or a test runner such as trial)
that runs the global reactor itself is not disturbed.  It runs without signal
handlers (only the main thread may install them) and is stopped when the
interpreter exits, with a bounded wait, so that exiting never hangs.

L{ReactorThread.call} runs a function in the reactor thread and waits for
its result, like L{twisted.internet.threads.blockingCallFromThread}, but with
a timeout and a clear error when called from the reactor thread itself (where
waiting would deadlock).
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["ReactorThread", "ReactorThreadError", "sharedReactorThread"]

#: How long interpreter exit waits for the reactor thread to stop.
EXIT_TIMEOUT = 5.0


class ReactorThreadError(RuntimeError):
    """
    A blocking call was made from the reactor thread, where it would wait
    for itself forever.  Code that runs in the reactor (Twisted callbacks,
    protocols) must use the Twisted-native API, L{tcpsc.Server} and
    L{tcpsc.Client}, which returns L{Deferred}s instead of blocking.
    """


def newReactor() -> Any:
    """
    Make a new reactor instance of the best kind for this platform, without
    installing it as the global reactor.
    """
    try:
        from twisted.internet.epollreactor import EPollReactor

        return EPollReactor()
    except ImportError:  # pragma: no cover - not Linux
        pass
    try:  # pragma: no cover - not Linux
        from twisted.internet.pollreactor import PollReactor

        return PollReactor()
    except ImportError:  # pragma: no cover - no poll()
        from twisted.internet.selectreactor import SelectReactor

        return SelectReactor()


class ReactorThread:
    """
    A reactor running in a daemon thread.

    @ivar reactor: the reactor; use it only from its thread, or through
        L{call} and C{reactor.callFromThread}.
    """

    log = Logger()

    def __init__(self, name: str = "tcpsc-reactor") -> None:
        self.reactor = newReactor()
        self._name = name
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        """
        Start the reactor thread (once) and wait until the reactor runs.

        @raise RuntimeError: it was stopped already; a reactor cannot be
            restarted.
        """
        with self._lock:
            if self._stopped:
                raise RuntimeError("the tcpsc reactor thread has been stopped")
            if self._thread is not None:
                return
            running = threading.Event()
            self.reactor.callWhenRunning(running.set)
            thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread = thread
            thread.start()
        if not running.wait(30):  # pragma: no cover - a machine this slow is broken
            raise RuntimeError("the tcpsc reactor thread did not start within 30 s")

    def _run(self) -> None:
        self._ident = threading.get_ident()
        try:
            self.reactor.run(installSignalHandlers=False)
        except BaseException:  # pragma: no cover - the reactor logs its own errors
            self.log.failure("The tcpsc reactor thread failed")

    def isReactorThread(self) -> bool:
        """
        Whether the calling thread is the reactor thread.
        """
        return self._ident is not None and threading.get_ident() == self._ident

    def isRunning(self) -> bool:
        """
        Whether the reactor thread is alive.
        """
        thread = self._thread
        return thread is not None and thread.is_alive() and not self._stopped

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        """
        Run C{f(*args)} in the reactor thread soon; do not wait.
        """
        self.reactor.callFromThread(f, *args)

    def call(self, timeout: float | None, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """
        Run C{f(*args, **kwargs)} in the reactor thread and wait for its
        result; if it returns a L{Deferred}, wait for that.

        @param timeout: seconds to wait; C{None} waits as long as it takes.
            On timeout the L{Deferred} (if any) is cancelled.
        @return: the result.
        @raise ReactorThreadError: called from the reactor thread.
        @raise TimeoutError: no result within C{timeout}.
        @raise BaseException: whatever C{f} raised or its L{Deferred} failed
            with.
        """
        if self.isReactorThread():
            raise ReactorThreadError(
                "this blocking call was made from the reactor thread, where it "
                "would wait for itself forever; code running in the reactor "
                "(Twisted callbacks and protocols) must use the Twisted-native "
                "API, tcpsc.Server and tcpsc.Client, instead of tcpsc.blocking"
            )
        self.start()
        done = threading.Event()
        outcome: list[object] = []
        pending: list[Deferred[Any]] = []

        def finished(result: object) -> None:
            outcome.append(result)
            done.set()

        def run() -> None:
            d = maybeDeferred(f, *args, **kwargs)
            pending.append(d)
            d.addBoth(finished)

        self.reactor.callFromThread(run)
        if not done.wait(timeout):

            def cancel() -> None:
                if pending:
                    pending[0].cancel()

            self.reactor.callFromThread(cancel)
            raise TimeoutError(
                f"the reactor did not complete {getattr(f, '__qualname__', f)!r} within {timeout} s"
            )
        result = outcome[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def stop(self, timeout: float = EXIT_TIMEOUT) -> None:
        """
        Stop the reactor (closing every connection it still has) and wait up
        to C{timeout} seconds for its thread to end.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            thread = self._thread
        if thread is None or not thread.is_alive():
            return

        def stopReactor() -> None:
            if self.reactor.running:
                self.reactor.stop()

        self.reactor.callFromThread(stopReactor)
        if threading.current_thread() is not thread:
            thread.join(timeout)


_shared: ReactorThread | None = None
_sharedLock = threading.Lock()


def sharedReactorThread() -> ReactorThread:
    """
    The process's reactor thread for the blocking API, started on first use
    and stopped at interpreter exit.
    """
    global _shared
    shared = _shared
    if shared is not None:
        return shared
    with _sharedLock:
        if _shared is None:
            thread = ReactorThread()
            thread.start()
            atexit.register(thread.stop)
            _shared = thread
        return _shared
