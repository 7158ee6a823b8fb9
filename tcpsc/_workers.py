# -*- test-case-name: tests.test_blocking_workers -*-
"""
Worker threads of the blocking API.

Every connection has a L{SerialExecutor}: its tasks run one after the other,
in the order they were submitted, on a thread of a shared L{WorkerPool}, so
the callbacks of one connection never race and see its messages in order;
tasks of different connections run concurrently.

The pool is elastic: a task that finds no idle thread gets a new one, so a
callback that blocks (a slow worker) holds up only its own connection, never
the others; idle threads end after a while.  Threads are daemon threads so
that a worker blocked forever cannot keep the interpreter from exiting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

__all__ = ["SerialExecutor", "WorkerPool", "currentExecutor"]

_local = threading.local()


def currentExecutor() -> SerialExecutor | None:
    """
    The L{SerialExecutor} whose task the calling thread is running, if any.
    """
    return getattr(_local, "executor", None)


class _Worker:
    __slots__ = ("task", "wake")

    def __init__(self, task: Callable[[], object]) -> None:
        self.task: Callable[[], object] | None = task
        # A lock used as a binary semaphore: released to hand this worker a
        # task while it waits.
        self.wake = threading.Lock()
        self.wake.acquire()


class WorkerPool:
    """
    An elastic pool of daemon threads.

    L{submit} hands a task to an idle thread, or starts a new thread if none
    is idle, so a task never waits behind another one.  A thread idle for
    C{idleTimeout} seconds ends.
    """

    log = Logger()

    def __init__(self, name: str = "tcpsc-worker", idleTimeout: float = 30.0) -> None:
        self._name = name
        self._idleTimeout = idleTimeout
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._started = 0
        self._alive = 0

    @property
    def threads(self) -> int:
        """
        How many threads the pool has (busy or idle).
        """
        return self._alive

    @property
    def idleThreads(self) -> int:
        """
        How many threads wait for a task.
        """
        return len(self._idle)

    def submit(self, task: Callable[[], object]) -> None:
        """
        Run C{task()} on a pool thread as soon as possible.
        """
        with self._lock:
            if self._idle:
                worker = self._idle.pop()
                worker.task = task
                worker.wake.release()
                return
            self._started += 1
            self._alive += 1
            number = self._started
        worker = _Worker(task)
        thread = threading.Thread(
            target=self._run, args=(worker,), name=f"{self._name}-{number}", daemon=True
        )
        try:
            thread.start()
        except BaseException:
            with self._lock:
                self._alive -= 1
            raise

    def _run(self, worker: _Worker) -> None:
        lock = self._lock
        idle = self._idle
        while True:
            task, worker.task = worker.task, None
            try:
                task()  # type: ignore[misc]
            except BaseException:
                self.log.failure("A task of the tcpsc worker pool failed")
            del task
            with lock:
                idle.append(worker)
            if worker.wake.acquire(timeout=self._idleTimeout):
                continue
            with lock:
                for index, candidate in enumerate(idle):
                    if candidate is worker:
                        del idle[index]
                        self._alive -= 1
                        return
            # submit() took this worker just as the wait timed out: its task
            # is being handed over.
            worker.wake.acquire()


class SerialExecutor:
    """
    Runs submitted calls one after the other, in order, on threads of a
    L{WorkerPool}; at most one of its calls runs at any time.
    """

    log = Logger()

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._lock = threading.Lock()
        # A list, swapped for a new one at each drain: an idle executor
        # costs an empty list (a deque keeps a block of 64 slots), which
        # matters for the UDP server's many peers.
        self._queue: list[tuple[Callable[[Any], object], Any]] = []
        self._running = False

    def submit(self, f: Callable[[Any], object], argument: Any = None) -> None:
        """
        Call C{f(argument)} after every call submitted before it.
        """
        with self._lock:
            self._queue.append((f, argument))
            if self._running:
                return
            self._running = True
        self._pool.submit(self._drain)

    def isIdle(self) -> bool:
        """
        Whether nothing is queued or running.
        """
        return not self._running

    def _drain(self) -> None:
        previous = getattr(_local, "executor", None)
        _local.executor = self
        lock = self._lock
        try:
            while True:
                with lock:
                    batch = self._queue
                    if not batch:
                        self._running = False
                        return
                    self._queue = []
                for f, argument in batch:
                    try:
                        f(argument)
                    except Exception:
                        self.log.failure("A tcpsc worker callback raised an exception")
        finally:
            _local.executor = previous
