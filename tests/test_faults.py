"""
Fault injection: a client process killed with SIGKILL in the middle of a
stream, the daemon killed with SIGKILL and restarted while
L{tcpsc.Client}s reconnect with backoff, and L{tcpsc.Server.stop} while
messages are still on their way to slow readers.

The servers and clients run in this process on trial's reactor, except the
processes being killed: a Python child streaming messages over a plain
socket, and the real C{twistd tcpsc} daemon.  Every process is killed in a
cleanup by its id; every wait is bounded.  The only fixed wait is the
downtime of the daemon, which is the fault being injected, not a way to
wait for something.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface import directlyProvides, providedBy

from tcpsc import Client, Server

from ._helpers import asyncTest, openFileDescriptors, waitFor
from .test_daemon import ROOT, _twistd

#: Bound of any single wait.
TIMEOUT = 30.0

#: A client that streams numbered messages as fast as it can, never reads,
#: and stops by itself after 60 s if nobody kills it.
STREAMER = r"""
import socket, sys, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
deadline = time.monotonic() + 60
n = 0
while time.monotonic() < deadline:
    sock.sendall(b"".join(b"%d\n" % i for i in range(n, n + 500)))
    n += 500
"""


def killProcess(process: subprocess.Popen[bytes]) -> None:
    """
    SIGKILL C{process} by its id if it still runs, and reap it.
    """
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(TIMEOUT)


class CountingReactor:
    """
    Trial's reactor, counting the TCP connection attempts made through it:
    one per client, to count each client's attempts.
    """

    def __init__(self, real: Any) -> None:
        self._real = real
        self.attempts: list[float] = []
        directlyProvides(self, providedBy(real))

    def connectTCP(self, *args: Any, **kwargs: Any) -> Any:
        self.attempts.append(self._real.seconds())
        return self._real.connectTCP(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class AsyncDaemon:
    """
    A C{twistd tcpsc} echo daemon started without blocking the reactor.
    """

    def __init__(self, test: TestCase, directory: Path, port: str) -> None:
        self.logPath = directory / f"twistd-{len(list(directory.iterdir()))}.out"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                [*_twistd(), "-n", "--pidfile=", "tcpsc", "--port", port],
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        test.addCleanup(killProcess, self.process)

    def output(self) -> str:
        return self.logPath.read_text(errors="replace")

    async def listening(self) -> int:
        """
        Wait until the daemon listens.

        @return: its port.
        """
        pattern = r"Listening on 127\.0\.0\.1:(\d+)"

        def started() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"twistd exited:\n{self.output()}")
            return re.search(pattern, self.output()) is not None

        await waitFor(started, TIMEOUT, interval=0.02, what="the daemon to log that it listens")
        return int(re.search(pattern, self.output()).group(1))  # type: ignore[union-attr]


class FaultTests(TestCase):
    """
    Faults injected into a running system.
    """

    @asyncTest
    async def test_clientKilledMidStream(self) -> None:
        """
        A client process streaming messages (and never reading the server's
        acknowledgements) is killed with SIGKILL: the server closes that
        connection (C{onClosed}, once), has delivered its messages in order
        with no gap and no partial last message, kept answering another
        client throughout, and is left with no more file descriptors than
        before the process started.
        """

        received: dict[int, list[bytes]] = {}
        established: list[int] = []
        closed: list[int] = []

        def onMessage(clientId: int, message: bytes) -> None:
            if message.startswith(b"ping"):
                server.send(clientId, message)
                return
            messages = received.setdefault(clientId, [])
            messages.append(message)
            if len(messages) % 5000 == 0:
                server.send(clientId, b"ack %d" % len(messages))

        server = Server(
            onMessage=onMessage, onEstablished=established.append, onClosed=closed.append
        )
        self.addCleanup(lambda: server.stop().addTimeout(TIMEOUT, reactor))
        port = (await server.listen(0, "127.0.0.1")).getHost().port
        echoes: list[bytes] = []
        client = Client(onMessage=echoes.append)
        self.addCleanup(client.disconnect)
        await client.connect("127.0.0.1", port).addTimeout(TIMEOUT, reactor)
        [clientId] = established
        before = openFileDescriptors()

        streamer = subprocess.Popen(
            [sys.executable, "-c", STREAMER, str(port)], stdin=subprocess.DEVNULL
        )
        self.addCleanup(killProcess, streamer)
        await waitFor(lambda: len(established) == 2, TIMEOUT)
        streamerId = established[1]
        await waitFor(lambda: len(received.get(streamerId, ())) >= 20_000, TIMEOUT)
        self.assertTrue(client.send(b"ping during"))
        await waitFor(lambda: echoes == [b"ping during"], TIMEOUT)

        os.kill(streamer.pid, signal.SIGKILL)
        await waitFor(lambda: streamer.poll() is not None, TIMEOUT)
        await waitFor(lambda: streamerId in closed, TIMEOUT)
        self.assertEqual(closed, [streamerId])
        self.assertEqual(server.clientIds(), [clientId])
        messages = received[streamerId]
        self.assertEqual(messages, [b"%d" % i for i in range(len(messages))])

        self.assertTrue(client.send(b"ping after"))
        await waitFor(lambda: echoes == [b"ping during", b"ping after"], TIMEOUT)
        await waitFor(lambda: openFileDescriptors() <= before, TIMEOUT)

    test_clientKilledMidStream.timeout = 90  # type: ignore[attr-defined]

    @asyncTest
    async def test_daemonRestartClientsReconnect(self) -> None:
        """
        20 clients with C{reconnect=True} are connected to the daemon, which
        is killed with SIGKILL and, after 2 s down, started again on the same
        port.  Every client comes back and is echoed again; none spins:
        while the daemon was down each made at most as many connection
        attempts as its backoff schedule allows (delays 0.1, 0.2, 0.4, 0.8,
        0.8... s without the jitter, which only lengthens them), and at
        least two.
        """
        count, initialDelay, factor, maxDelay, jitter = 20, 0.1, 2.0, 0.8, 0.25

        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        first = AsyncDaemon(self, directory, "tcp:0:interface=127.0.0.1")
        port = await first.listening()
        received: list[list[bytes]] = [[] for _ in range(count)]
        clients: list[Client] = []
        counters: list[CountingReactor] = []
        for index in range(count):
            counter = CountingReactor(reactor)
            client = Client(
                onMessage=received[index].append,
                reconnect=True,
                initialDelay=initialDelay,
                factor=factor,
                maxDelay=maxDelay,
                jitter=jitter,
                connectTimeout=5,
                reactor=counter,
            )
            self.addCleanup(client.disconnect)
            await client.connect("127.0.0.1", port).addTimeout(TIMEOUT, reactor)
            clients.append(client)
            counters.append(counter)
        for index, client in enumerate(clients):
            self.assertTrue(client.send(b"before %d" % index))
        await waitFor(lambda: all(len(r) == 1 for r in received), TIMEOUT)

        killedAt = reactor.seconds()
        os.kill(first.process.pid, signal.SIGKILL)
        await waitFor(lambda: not any(c.isConnected for c in clients), TIMEOUT)
        await deferLater(reactor, 2.0, lambda: None)
        second = AsyncDaemon(self, directory, f"tcp:{port}:interface=127.0.0.1")
        self.assertEqual(await second.listening(), port)
        downtime = reactor.seconds() - killedAt
        await waitFor(lambda: all(c.isConnected for c in clients), maxDelay * (1 + jitter) + 10)

        # The schedule allows k attempts within the downtime when the
        # first k delays, without jitter, fit in it.
        allowed, elapsed = 0, 0.0
        while True:
            delay = min(maxDelay, initialDelay * factor**allowed)
            if elapsed + delay > downtime:
                break
            elapsed += delay
            allowed += 1
        for index, counter in enumerate(counters):
            during = [t for t in counter.attempts if killedAt <= t <= killedAt + downtime]
            self.assertLessEqual(
                len(during),
                allowed,
                f"client {index}: {len(during)} attempts in "
                f"{downtime:.1f} s, the schedule allows {allowed}",
            )
            self.assertGreaterEqual(len(during), 2, f"client {index} did not retry")
        for index, client in enumerate(clients):
            self.assertTrue(client.send(b"after %d" % index))
        await waitFor(lambda: all(len(r) == 2 for r in received), TIMEOUT)
        for index, messages in enumerate(received):
            self.assertEqual(messages, [b"before %d" % index, b"after %d" % index])
        self.assertEqual(
            len(re.findall(r"Connection \d+ from 127\.0\.0\.1:\d+ established", second.output())),
            count,
        )

    test_daemonRestartClientsReconnect.timeout = 90  # type: ignore[attr-defined]

    @asyncTest
    async def test_stopUnderLoad(self) -> None:
        """
        Five clients read while the server sends them numbered messages;
        one of them stops reading for a while.  C{stop()} is called while
        messages are still on their way (the clients have received fewer
        than were accepted), and the slow client resumes reading only
        after that: C{stop()} fires once every connection is closed, C{send}
        is refused from then on, and every message C{send} accepted before
        C{stop()} reaches its client, in order, none missing, none
        duplicated.
        """

        established: list[int] = []
        server = Server(onEstablished=established.append)
        self.addCleanup(lambda: server.stop().addTimeout(TIMEOUT, reactor))
        port = (await server.listen(0, "127.0.0.1")).getHost().port
        received: list[list[bytes]] = [[] for _ in range(5)]
        clients = []
        for index in range(5):
            client = Client(onMessage=received[index].append)
            self.addCleanup(client.disconnect)
            await client.connect("127.0.0.1", port).addTimeout(TIMEOUT, reactor)
            clients.append(client)
        await waitFor(lambda: len(established) == 5, TIMEOUT)
        ids = list(established)
        accepted: dict[int, int] = dict.fromkeys(ids, 0)
        padding = b"." * 200

        def burst(messages: int) -> None:
            for clientId in ids:
                for _ in range(messages):
                    if server.send(clientId, b"%d %s" % (accepted[clientId], padding)):
                        accepted[clientId] += 1

        slow = clients[4].protocol
        assert slow is not None
        slow.pauseReading()
        for _ in range(20):
            burst(500)
            await deferLater(reactor, 0, lambda: None)
        burst(5000)
        inFlight = sum(accepted[i] - len(r) for i, r in zip(ids, received, strict=True))
        self.assertGreater(inFlight, 0)
        self.assertGreater(accepted[ids[4]] - len(received[4]), 1000)
        reactor.callLater(0.5, slow.resumeReading)
        stopped: list[object] = []
        stopping = server.stop().addBoth(stopped.append)
        self.assertFalse(server.send(ids[0], b"after stop"))
        await stopping.addTimeout(TIMEOUT, reactor)
        self.assertEqual(stopped, [None])
        await waitFor(lambda: not any(c.isConnected for c in clients), TIMEOUT)
        for clientId, messages in zip(ids, received, strict=True):
            self.assertEqual(len(messages), accepted[clientId])
            self.assertEqual(messages, [b"%d %s" % (n, padding) for n in range(accepted[clientId])])
