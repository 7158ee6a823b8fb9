"""
Tests for C{twistd tcpsc --cluster}: real daemons (child processes) sharing
a real Redis, with plain sockets as their clients.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpsc import Server
from tcpsc._apps import Chat
from tests._helpers import asyncTest, waitFor, within
from tests._redis import RedisServer, freePort, requireRedis
from tests.test_daemon import LOCAL, TIMEOUT, Daemon, Peer, _until


def chatDaemon(test: SynchronousTestCase | TestCase, url: str) -> tuple[Daemon, int]:
    daemon = Daemon(test, "--port", LOCAL, "--app", "chat", "--cluster", url)  # type: ignore[arg-type]
    return daemon, daemon.port()


class ChatAcrossDaemonsTests(SynchronousTestCase):
    def setUp(self) -> None:
        requireRedis()
        self.redis = RedisServer(self)  # type: ignore[arg-type]

    def test_chat(self) -> None:
        """
        C{--app chat} on two daemons on two ports: a client of one sees
        the messages of a client of the other, prefixed with the sender's
        cluster-wide id, and the ids of the two nodes differ.
        """
        first, portA = chatDaemon(self, self.redis.url)
        second, portB = chatDaemon(self, self.redis.url)
        alice = Peer(self, portA)
        bob = Peer(self, portB)
        # Both are in the directory once Redis has both ids.
        _until(
            lambda: self.redis.command("HLEN", "tcpsc:dir") == 2, what="two ids in the directory"
        )
        alice.send(b"hello from the first\n")
        bob.send(b"hello from the second\n")
        fromAlice = bob.receive()
        fromBob = alice.receive()
        aliceId, _, text = fromAlice.partition(b": ")
        self.assertEqual(text, b"hello from the first")
        bobId, _, text = fromBob.partition(b": ")
        self.assertEqual(text, b"hello from the second")
        self.assertNotEqual(int(aliceId), int(bobId))
        self.assertEqual(
            sorted(int(i) for i in self.redis.command("HKEYS", "tcpsc:dir")),  # type: ignore[union-attr]
            sorted([int(aliceId), int(bobId)]),
        )
        for daemon in (first, second):
            os.kill(daemon.process.pid, signal.SIGTERM)
            # twistd ends itself with the signal it got, as test_daemon says.
            self.assertEqual(daemon.exitStatus(), -signal.SIGTERM)
        self.assertIn("Left the cluster at", first.output)
        self.assertIn(f"a node of the cluster at {self.redis.url}", first.output)
        # Both left: nothing of them remains in the directory.
        self.assertEqual(self.redis.command("HLEN", "tcpsc:dir"), 0)
        self.assertEqual(self.redis.command("SCARD", "tcpsc:nodes"), 0)

    def test_unreachable(self) -> None:
        """
        A Redis that does not answer stops the daemon at start with one
        line naming the URL, status 1, and no port listens.
        """
        url = f"redis://127.0.0.1:{freePort()}/0"
        daemon = Daemon(self, "--port", LOCAL, "--cluster", url)
        self.assertEqual(daemon.exitStatus(), 1)
        self.assertIn(f"tcpsc: cannot join the cluster at {url}: Connection refused", daemon.output)
        self.assertNotIn("Listening on", daemon.output)

    def test_badURL(self) -> None:
        """
        A URL that is not C{redis://} is an option error naming it.
        """
        daemon = Daemon(self, "--port", LOCAL, "--cluster", "http://127.0.0.1:6379")
        self.assertEqual(daemon.exitStatus(), 1)
        self.assertIn(
            "--cluster: cluster URL 'http://127.0.0.1:6379': expected redis://HOST[:PORT][/DB]",
            daemon.output.strip().splitlines()[-1],
        )


class NodeKilledTests(TestCase):
    @asyncTest
    async def test_sigkill(self) -> None:
        """
        A daemon killed with SIGKILL: the node in this process keeps
        serving its clients, and once the dead node's heartbeat has expired
        (a TTL of 2 s here), its clients leave the directory, of Redis and
        of this node, and sends to them are refused.
        """
        requireRedis()
        redis = RedisServer(self)
        url = redis.url + "?ttl=2"
        daemon = Daemon(self, "--port", LOCAL, "--app", "chat", "--cluster", url)  # type: ignore[arg-type]
        portB = daemon.port()
        node = Server(Chat, cluster=url, reactor=reactor)
        self.addCleanup(lambda: within(node.stop(), 30))
        portA = (await within(node.listen(0, "127.0.0.1"), 30)).getHost().port
        remote = [socket.create_connection(("127.0.0.1", portB), timeout=TIMEOUT) for _ in range(3)]
        for s in remote:
            self.addCleanup(s.close)
        local = [socket.create_connection(("127.0.0.1", portA), timeout=TIMEOUT) for _ in range(2)]
        for s in local:
            self.addCleanup(s.close)
        await waitFor(lambda: len(node.clientIds()) == 5, timeout=TIMEOUT)
        remoteIds = [i for i in node.clientIds() if node._registry.lookup(i) is None]
        self.assertEqual(len(remoteIds), 3)
        os.kill(daemon.process.pid, signal.SIGKILL)
        daemon.process.wait(TIMEOUT)
        await waitFor(lambda: len(node.clientIds()) == 2, timeout=TIMEOUT)
        self.assertEqual(redis.command("HLEN", "tcpsc:dir"), 2)
        self.assertFalse(node.send(remoteIds[0], b"gone"))
        # The surviving node serves on: its two clients chat.
        local[0].sendall(b"still here\n")
        data = b""
        while b"\n" not in data:
            chunk = await deferToThreadRecv(local[1])
            self.assertTrue(chunk, "connection closed")
            data += chunk
        self.assertTrue(data.endswith(b": still here\n"), data)


def deferToThreadRecv(s: socket.socket) -> Deferred[bytes]:
    """
    Receive from a blocking socket in a thread, bounded.
    """
    return within(deferToThread(s.recv, 4096), TIMEOUT)


class BenchmarkSmokeTests(SynchronousTestCase):
    def test_quickRun(self) -> None:
        """
        C{benchmarks/cluster.py} with tiny counts starts its Redis and
        daemons, drives them, stops them and prints its figures (none of
        which is asserted on).
        """
        requireRedis()
        root = Path(__file__).resolve().parents[1]
        result = subprocess.run(
            [
                sys.executable,
                str(root / "benchmarks" / "cluster.py"),
                "--broadcasts",
                "20",
                "--delays",
                "3",
                "--pings",
                "3",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        figures = json.loads(result.stdout)
        self.assertGreater(figures["broadcast_ratio"], 0)
        self.assertIn("send_p50_extra_ms", figures)


#: Run before anything else in a subprocess: txredisapi cannot be imported,
#: as when it is not installed.
_BLOCKER = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "txredisapi":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Absent())
"""


class WithoutTxredisapiTests(SynchronousTestCase):
    """
    Without txredisapi: tcpsc and the daemon work, and asking for a cluster
    says which C{pip install} brings it.
    """

    def runBlocked(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        root = Path(__file__).resolve().parents[1]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
        return subprocess.run(
            [sys.executable, "-c", _BLOCKER + code, *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
        )

    def test_importWithout(self) -> None:
        """
        C{import tcpsc} and a server without a cluster do not import
        txredisapi; C{Server(cluster=...)} raises an C{ImportError} naming
        the install line.
        """
        result = self.runBlocked(
            "import tcpsc\n"
            "tcpsc.Server()\n"
            "assert 'txredisapi' not in sys.modules\n"
            "try:\n"
            "    tcpsc.Server(cluster='redis://127.0.0.1:6379/0')\n"
            "except ImportError as e:\n"
            "    print(e)\n"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stdout.strip(),
            'a cluster needs txredisapi, which is not installed: pip install "tcpsc[cluster]"',
        )

    def test_daemonOption(self) -> None:
        """
        C{--cluster} is a usage error naming the install line.
        """
        code = "from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
        result = self.runBlocked(
            code, "-n", "--pidfile=", "tcpsc", "--cluster", "redis://127.0.0.1:6379/0"
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        last = (result.stdout + result.stderr).strip().splitlines()[-1]
        self.assertIn(
            '--cluster needs txredisapi, which is not installed: pip install "tcpsc[cluster]"',
            last,
        )
