"""
Tests of L{tcpsc._reactorthread}: a private reactor in a background thread,
calls into it with a timeout, and a clean interpreter exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from tcpsc._reactorthread import ReactorThread, ReactorThreadError, sharedReactorThread
from tests.test_blocking_support import TIMEOUT, Recorder


class ReactorThreadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.thread = ReactorThread(name="test-reactor")
        self.addCleanup(self.thread.stop)

    def test_callReturns(self) -> None:
        """
        L{ReactorThread.call} runs the function in the reactor thread and
        returns its result, or that of the L{Deferred} it returns.
        """
        self.assertEqual(
            self.thread.call(TIMEOUT, lambda: threading.current_thread().name), "test-reactor"
        )

        def later() -> Deferred[str]:
            d: Deferred[str] = Deferred()
            self.thread.reactor.callLater(0.01, d.callback, "later")
            return d

        self.assertEqual(self.thread.call(TIMEOUT, later), "later")

    def test_callRaises(self) -> None:
        """
        An exception, raised or as a failed L{Deferred}, is raised in the
        caller.
        """

        def fail() -> None:
            raise KeyError("x")

        self.assertRaises(KeyError, self.thread.call, TIMEOUT, fail)
        self.assertRaises(
            ValueError,
            self.thread.call,
            TIMEOUT,
            lambda: Deferred.fromCoroutine(self._raiseValueError()),
        )

    async def _raiseValueError(self) -> None:
        raise ValueError()

    def test_timeoutCancels(self) -> None:
        """
        Without a result in time, C{call} raises L{TimeoutError} and cancels
        the L{Deferred}.
        """
        cancelled = Recorder()
        never: Deferred[None] = Deferred(lambda d: cancelled(d))
        never.addErrback(lambda f: cancelled(f.check(CancelledError)))
        self.assertRaises(TimeoutError, self.thread.call, 0.05, lambda: never)
        self.assertEqual(len(cancelled.waitFor(2)), 2)
        self.assertIs(cancelled.snapshot()[1], CancelledError)

    def test_fromReactorThread(self) -> None:
        """
        C{call} from the reactor thread raises L{ReactorThreadError} instead
        of waiting for itself.
        """
        errors = Recorder()

        def inside() -> None:
            try:
                self.thread.call(TIMEOUT, lambda: None)
            except ReactorThreadError as e:
                errors(e)

        self.thread.start()
        self.thread.callFromThread(inside)
        self.assertIsInstance(errors.waitFor(1)[0], ReactorThreadError)

    def test_stop(self) -> None:
        """
        C{stop} ends the daemon thread; the reactor cannot be started again.
        """
        self.thread.start()
        worker = self.thread._thread
        self.assertTrue(worker.daemon)
        self.assertTrue(self.thread.isRunning())
        self.thread.stop()
        self.assertFalse(worker.is_alive())
        self.assertFalse(self.thread.isRunning())
        self.assertRaises(RuntimeError, self.thread.start)

    def test_notTheGlobalReactor(self) -> None:
        """
        The shared reactor is a private instance, not the global reactor
        (which trial, or the program, may run itself).
        """
        from twisted.internet import reactor

        self.assertIsNot(sharedReactorThread().reactor, reactor)
        self.assertIs(sharedReactorThread(), sharedReactorThread())


class ExitTests(SynchronousTestCase):
    def test_exitWithRunningServerAndClient(self) -> None:
        """
        A program that leaves a server and a connected client running exits
        promptly, with status 0 and no traceback.
        """
        program = textwrap.dedent("""
            from tcpsc.blocking import TcpClient, TcpServer
            server = TcpServer(b"\\n")
            server.setWorkOnMessage(lambda i, m: server.sendMsg(i, m))
            port = server.start(0, interface="127.0.0.1")
            client = TcpClient(b"\\n")
            client.start("127.0.0.1", port)
            client.sendMsg(b"hello")
            print("started", flush=True)
        """)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        environment = dict(os.environ, PYTHONPATH=root)
        result = subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            timeout=30,
            env=environment,
            text=True,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "started\n")
        self.assertNotIn("Traceback", result.stderr)
