"""
Tests of L{tcpsc._workers}: the elastic worker pool and the per-connection
serial executors of the blocking API.
"""

from __future__ import annotations

import threading

from twisted.trial.unittest import SynchronousTestCase

from tcpsc._workers import SerialExecutor, WorkerPool, currentExecutor
from tests.test_blocking_support import TIMEOUT, Recorder, waitUntil


class SerialExecutorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pool = WorkerPool(name="test-worker", idleTimeout=1.0)

    def test_order(self) -> None:
        """
        Calls run in the order submitted, one at a time.
        """
        executor = SerialExecutor(self.pool)
        seen = Recorder()
        running = [0]
        overlaps = []

        def task(n: int) -> None:
            running[0] += 1
            if running[0] > 1:
                overlaps.append(n)
            seen(n)
            running[0] -= 1

        for n in range(2000):
            executor.submit(task, n)
        self.assertEqual(seen.waitFor(2000), list(range(2000)))
        self.assertEqual(overlaps, [])
        waitUntil(executor.isIdle)

    def test_executorsRunConcurrently(self) -> None:
        """
        A call that blocks holds up its own executor only.
        """
        gate = threading.Event()
        self.addCleanup(gate.set)
        blocked, free = SerialExecutor(self.pool), SerialExecutor(self.pool)
        seen = Recorder()
        blocked.submit(lambda _: gate.wait(TIMEOUT))
        blocked.submit(lambda _: seen("blocked"))
        for n in range(5):
            free.submit(seen, n)
        self.assertEqual(seen.waitFor(5), [0, 1, 2, 3, 4])
        self.assertFalse(blocked.isIdle())
        gate.set()
        self.assertEqual(seen.waitFor(6)[-1], "blocked")

    def test_exceptionIsLogged(self) -> None:
        """
        A call that raises is logged; the next call still runs.
        """
        executor = SerialExecutor(self.pool)
        seen = Recorder()

        def fail(_: object) -> None:
            raise ZeroDivisionError()

        executor.submit(fail)
        executor.submit(seen, "next")
        self.assertEqual(seen.waitFor(1), ["next"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_currentExecutor(self) -> None:
        """
        Inside a call, L{currentExecutor} is the executor running it;
        elsewhere C{None}.
        """
        executor = SerialExecutor(self.pool)
        seen = Recorder()
        executor.submit(lambda _: seen(currentExecutor()))
        self.assertIs(seen.waitFor(1)[0], executor)
        self.assertIsNone(currentExecutor())


class WorkerPoolTests(SynchronousTestCase):
    def test_reuseIdleThread(self) -> None:
        """
        A task submitted while a thread is idle runs on that thread.
        """
        pool = WorkerPool(name="test-reuse", idleTimeout=TIMEOUT)
        names = Recorder()
        for n in range(5):
            pool.submit(lambda: names(threading.current_thread().name))
            names.waitFor(n + 1)
            waitUntil(lambda: pool.idleThreads == 1)
        self.assertEqual(len(set(names.snapshot())), 1)
        self.assertEqual(pool.threads, 1)

    def test_newThreadWhenAllBusy(self) -> None:
        """
        A task never waits for a busy thread: the pool grows.
        """
        pool = WorkerPool(name="test-grow", idleTimeout=TIMEOUT)
        gate = threading.Event()
        self.addCleanup(gate.set)
        started = Recorder()

        def task() -> None:
            started(threading.current_thread())
            gate.wait(TIMEOUT)

        for _ in range(4):
            pool.submit(task)
        threads = started.waitFor(4)
        self.assertEqual(len(set(threads)), 4)
        self.assertTrue(all(t.daemon for t in threads))

    def test_idleThreadsEnd(self) -> None:
        """
        A thread idle for C{idleTimeout} seconds ends; tasks submitted
        around that moment still run.
        """
        pool = WorkerPool(name="test-idle", idleTimeout=0.001)
        done = Recorder()
        for n in range(300):
            pool.submit(lambda n=n: done(n))
            if n % 10 == 0:
                done.waitFor(n + 1)
        self.assertEqual(sorted(done.waitFor(300)), list(range(300)))
        waitUntil(lambda: pool.threads == 0)
