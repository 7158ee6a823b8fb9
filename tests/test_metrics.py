"""
Prometheus metrics: the library's C{Server(metrics=registry)} driven in
memory (L{tcpsc.testing.MemoryNetwork}, real TLS over it), the daemon's
C{--metrics} scraped over HTTP from a real C{twistd} process after real
connections, messages, refusals and failed handshakes, and the daemon and the
library without prometheus-client installed.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tcpsc import Client, MessageProtocol, Server
from tcpsc._metrics import (
    CLOSE_REASONS,
    DROP_REASONS,
    HANDSHAKE_FAILURE_REASONS,
    REFUSAL_REASONS,
    closeReason,
)
from tcpsc.testing import MemoryNetwork

from ._helpers import certificates
from .test_daemon import LOCAL, ROOT, TIMEOUT, Daemon, _until
from .test_testing import Raw
from .test_tls import clientTLS, serverTLS

#: Every label value a metric may have, by metric.
LABELS = {
    "tcpsc_connections_refused": set(REFUSAL_REASONS.values()),
    "tcpsc_tls_handshake_failures": set(HANDSHAKE_FAILURE_REASONS),
    "tcpsc_messages_dropped": set(DROP_REASONS),
    "tcpsc_close_reasons": set(CLOSE_REASONS),
}


class Echo(MessageProtocol):
    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(message)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    The samples of a Prometheus text exposition, by name and labels.
    """
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


class LibraryTests(SynchronousTestCase):
    """
    C{Server(metrics=registry)}, deterministically in memory.
    """

    def setUp(self) -> None:
        self.network = MemoryNetwork()
        self.registry = CollectorRegistry()

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def connect(self, port: int) -> Raw:
        raw = Raw()
        connectProtocol(TCP4ClientEndpoint(self.network.reactor, "127.0.0.1", port), raw)
        self.network.flush()
        return raw

    def test_messagesAndBytes(self) -> None:
        """
        Messages and bytes are counted both ways, however they are split
        into reads, and whether sent while a read is handled (a batch) or
        on their own; connections open and in all.
        """
        server = Server(Echo, reactor=self.network.reactor, metrics=self.registry)
        server.listen(8081)
        raw = self.connect(8081)
        self.assertEqual(self.sample("tcpsc_connections_open"), 1)
        raw.transport.write(b"one\ntwo\nth")
        self.network.flush()
        raw.transport.write(b"ree\n")
        self.network.flush()
        (clientId,) = server.clientIds()
        self.assertTrue(server.send(clientId, b"alone"))
        self.network.flush()
        self.assertEqual(raw.received, b"one\ntwo\nthree\nalone\n")
        self.assertEqual(self.sample("tcpsc_messages_received_total"), 3)
        self.assertEqual(self.sample("tcpsc_messages_sent_total"), 4)
        self.assertEqual(self.sample("tcpsc_bytes_received_total"), 14)
        self.assertEqual(self.sample("tcpsc_bytes_sent_total"), 20)
        raw.transport.loseConnection()
        self.network.flush()
        # Moved into the server's totals when the connection ended.
        self.assertEqual(self.sample("tcpsc_connections_open"), 0)
        self.assertEqual(self.sample("tcpsc_connections_total"), 1)
        self.assertEqual(self.sample("tcpsc_messages_received_total"), 3)
        self.assertEqual(self.sample("tcpsc_bytes_sent_total"), 20)
        self.assertEqual(self.sample("tcpsc_close_reasons_total", reason="peer_closed"), 1)

    def test_broadcast(self) -> None:
        """
        A broadcast counts one message, and its bytes, per connection it
        was written to.
        """
        server = Server(reactor=self.network.reactor, metrics=self.registry)
        server.listen(8081)
        peers = [self.connect(8081) for _ in range(3)]
        self.assertEqual(server.broadcast(b"news"), 3)
        self.network.flush()
        self.assertEqual([p.received for p in peers], [b"news\n"] * 3)
        self.assertEqual(self.sample("tcpsc_messages_sent_total"), 3)
        self.assertEqual(self.sample("tcpsc_bytes_sent_total"), 15)

    def test_refusalsDropsAndCloses(self) -> None:
        """
        Refusals by the connection limit and the per-peer limit, messages
        too long, and closes by the first-byte and idle timeouts, each under
        its own label.
        """
        server = Server(
            Echo,
            reactor=self.network.reactor,
            metrics=self.registry,
            maxConnections=3,
            maxConnectionsPerPeer=2,
            maxMessageLength=4,
            firstByteTimeout=5,
            idleTimeout=60,
        )
        server.listen(8081)
        with capturedLogs():
            first, second, third = (self.connect(8081) for _ in range(3))
            self.assertIsNotNone(third.lost)
            first.transport.write(b"toolong\nok\n")
            second.transport.write(b"x\n")
            self.network.flush()
            self.network.advance(30)
            self.network.advance(30)
            self.network.flush()
        self.assertEqual(first.received, b"ok\n")
        self.assertEqual(self.sample("tcpsc_connections_refused_total", reason="per_peer_limit"), 1)
        self.assertEqual(
            self.sample("tcpsc_connections_refused_total", reason="connection_limit"), 0
        )
        self.assertEqual(self.sample("tcpsc_messages_dropped_total", reason="too_long"), 1)
        self.assertEqual(self.sample("tcpsc_messages_received_total"), 2)
        self.assertEqual(self.sample("tcpsc_close_reasons_total", reason="idle_timeout"), 2)
        self.assertEqual(self.sample("tcpsc_connections_total"), 2)
        silent = self.connect(8081)
        with capturedLogs():
            self.network.advance(5)
            self.network.flush()
        self.assertIsNotNone(silent.lost)
        self.assertEqual(self.sample("tcpsc_close_reasons_total", reason="first_byte_timeout"), 1)

    def test_tls(self) -> None:
        """
        A TLS handshake that completes is observed by the histogram; one
        whose client certificate is rejected, and one that times out, are
        counted as failures by reason.
        """
        server = Server(
            Echo, reactor=self.network.reactor, metrics=self.registry, handshakeTimeout=10
        )
        server.listen(8443, tls=serverTLS())
        client = Client(reactor=self.network.reactor)
        self.addCleanup(client.disconnect)
        connected = client.connect("localhost", 8443, tls=clientTLS())
        self.network.flush()
        self.successResultOf(connected)
        # In memory the handshake takes no time on the server's clock.
        self.assertEqual(self.sample("tcpsc_tls_handshake_seconds_count"), 1)
        self.assertEqual(self.sample("tcpsc_tls_handshake_seconds_bucket", le="0.001"), 1)
        self.assertEqual(self.sample("tcpsc_tls_handshake_seconds_sum"), 0)
        stranger = Client(reactor=self.network.reactor)
        with capturedLogs():
            refused = stranger.connect("localhost", 8443, tls=clientTLS(cert="other-client"))
            self.network.flush()
            self.failureResultOf(refused)
            self.connect(8443)
            self.network.advance(10)
            self.network.flush()
        self.assertEqual(
            self.sample("tcpsc_tls_handshake_failures_total", reason="certificate_rejected"), 1
        )
        self.assertEqual(self.sample("tcpsc_tls_handshake_failures_total", reason="timeout"), 1)
        self.assertEqual(self.sample("tcpsc_tls_handshake_seconds_count"), 1)
        self.assertEqual(self.sample("tcpsc_close_reasons_total", reason="handshake_timeout"), 1)

    def test_outputBoundAndBroadcastSkips(self) -> None:
        """
        A congested connection's refused sends are C{output_bound} drops,
        the broadcasts it misses C{broadcast_skip} drops (once each, not
        both); what was refused is not counted as sent.
        """
        server = Server(reactor=self.network.reactor, metrics=self.registry, maxPendingOutput=10)
        server.listen(8081)
        self.connect(8081)
        (clientId,) = server.clientIds()
        # Congested, as the socket transport signals it by pausing its
        # producer (see tests.test_guarantees_output).
        server.connection(clientId).transport.producer.pauseProducing()
        self.assertTrue(server.send(clientId, b"123456789"))
        self.assertFalse(server.send(clientId, b"x"))
        self.assertFalse(server.send(clientId, b"y"))
        with capturedLogs():
            self.assertEqual(server.broadcast(b"z"), 0)
        self.assertEqual(self.sample("tcpsc_messages_dropped_total", reason="output_bound"), 2)
        self.assertEqual(self.sample("tcpsc_messages_dropped_total", reason="broadcast_skip"), 1)
        self.assertEqual(self.sample("tcpsc_messages_sent_total"), 1)
        self.assertEqual(self.sample("tcpsc_bytes_sent_total"), 10)

    def test_memoryBudget(self) -> None:
        """
        A partial message dropped to keep within the memory budget is a
        C{memory_budget} drop.
        """
        server = Server(
            reactor=self.network.reactor,
            metrics=self.registry,
            memoryBudget=3 << 20,
            maxMessageLength=None,
        )
        server.listen(8081)
        with capturedLogs():
            for _ in range(2):
                self.connect(8081).transport.write(b"x" * (2 << 20))
                self.network.flush()
        self.assertEqual(
            self.sample("tcpsc_messages_dropped_total", reason="memory_budget"),
            server.eventCounts["memoryBudget"],
        )
        self.assertGreaterEqual(server.eventCounts["memoryBudget"], 1)

    def test_allowListAndStop(self) -> None:
        """
        A client whose certificate is not on the allow-list is refused under
        C{allow_list}; the connections a stop closes are C{server_stopping}.
        """
        server = Server(Echo, reactor=self.network.reactor, metrics=self.registry)
        server.listen(8443, tls=serverTLS(allowedClients=frozenset({"someone-else"})))
        server.listen(8081)
        stranger = Client(reactor=self.network.reactor)
        with capturedLogs():
            stranger.connect("localhost", 8443, tls=clientTLS()).addErrback(lambda f: None)
            self.network.flush()
        self.assertEqual(self.sample("tcpsc_connections_refused_total", reason="allow_list"), 1)
        self.assertEqual(self.sample("tcpsc_close_reasons_total", reason="allow_list"), 1)
        self.connect(8081)
        self.connect(8081)
        stopped = server.stop()
        self.network.flush()
        self.successResultOf(stopped)
        self.assertEqual(self.sample("tcpsc_close_reasons_total", reason="server_stopping"), 2)
        self.assertEqual(self.sample("tcpsc_connections_open"), 0)

    def test_labelsFromAFixedSet(self) -> None:
        """
        Whatever peers send (text that looks like labels, a TLS ClientHello
        on a plain port, garbage instead of a handshake), every label value
        is one of the fixed names, and the exposition has the same samples
        as with nothing counted.
        """
        server = Server(
            Echo, reactor=self.network.reactor, metrics=self.registry, maxMessageLength=8
        )
        server.listen(8081)
        server.listen(8443, tls=serverTLS())
        before = set(samples(generate_latest(self.registry).decode()))
        with capturedLogs():
            for port, data in (
                (8081, b'reason="evil"} 1\n' * 3),
                (8081, b"\x16\x03\x01\x02\x00evil"),
                (8443, b'GET /reason="evil" HTTP/1.0\r\n\r\n'),
                (8081, b"\xff" * 100 + b"\n"),
            ):
                raw = self.connect(port)
                raw.transport.write(data)
                self.network.flush()
                raw.transport.loseConnection()
                self.network.flush()
        text = generate_latest(self.registry).decode()
        self.assertNotIn("evil", text)
        self.assertEqual(set(samples(text)), before)
        for (name, labels), _ in samples(text).items():
            for key, label in labels:
                if key == "le":
                    continue
                self.assertEqual(key, "reason")
                self.assertIn(label, LABELS[name.removesuffix("_total")])
        self.assertEqual(
            value(text, "tcpsc_connections_refused_total", reason="tls_client_on_plain_port"), 1
        )
        self.assertEqual(value(text, "tcpsc_tls_handshake_failures_total", reason="tls_error"), 1)
        self.assertEqual(value(text, "tcpsc_messages_dropped_total", reason="too_long"), 4)

    def test_closeReasonsNamed(self) -> None:
        """
        Every close reason a server gives itself has a name of its own, and
        words of the application's own are C{closed_locally}.
        """
        from twisted.python.failure import Failure

        from tcpsc._errors import AbortedLocally, ClosedLocally

        for words, label in (
            ("idle timeout (60 s)", "idle_timeout"),
            ("server stopping", "server_stopping"),
            ("disconnect() called", "disconnect"),
            ('reason="evil"', "closed_locally"),
        ):
            self.assertEqual(closeReason(Failure(ClosedLocally(words))), label)
        self.assertEqual(
            closeReason(Failure(AbortedLocally("mine; the peer did not read"))), "close_timeout"
        )

    def test_onePerRegistry(self) -> None:
        """
        A second server in the same registry is refused (its names would
        repeat); each server gets a registry of its own.
        """
        Server(reactor=self.network.reactor, metrics=self.registry)
        with self.assertRaises(ValueError):
            Server(reactor=self.network.reactor, metrics=self.registry)


class DaemonMetricsTests(SynchronousTestCase):
    """
    C{twistd -n tcpsc --metrics}, scraped over HTTP.
    """

    def scrape(self, port: int) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT
        ) as response:
            self.assertEqual(response.status, 200)
            self.assertIn("text/plain", response.headers["Content-Type"])
            text: str = response.read().decode()
            return text

    def test_scrape(self) -> None:
        """
        After a TLS client that echoes two messages and sends one too long,
        a TLS client whose certificate is rejected, and one refused by the
        per-peer limit, the scrape says so.
        """
        c = certificates()
        daemon = Daemon(
            self,
            "--port",
            LOCAL,
            "--tls",
            "--ca",
            c.ca,
            "--cert",
            c.server,
            "--key",
            c.serverKey,
            "--max-connections-per-peer",
            "1",
            "--max-length",
            "16",
            "--metrics",
            LOCAL,
        )
        port = daemon.port()
        metricsPort = int(
            daemon.waitFor(
                r"Serving Prometheus metrics at http://127\.0\.0\.1:(\d+)/metrics"
            ).group(1)
        )

        def tlsClient(cert: str, key: str) -> ssl.SSLSocket:
            clientContext = ssl.create_default_context(cafile=c.ca)
            clientContext.load_cert_chain(cert, key)
            raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
            return clientContext.wrap_socket(raw, server_hostname="localhost")

        # Rejected: its CA is not the daemon's.  TLS 1.3 tells the client
        # after its side of the handshake, at its first read.
        stranger = tlsClient(c.path("other-client.pem"), c.path("other-client.key"))
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            stranger.recv(1)
        stranger.close()
        _until(
            lambda: value(self.scrape(metricsPort), "tcpsc_connections_open") == 0,
            what="the rejected client gone",
        )
        good = tlsClient(c.client, c.clientKey)
        self.addCleanup(good.close)
        good.sendall(b"hello\nworld\n" + b"x" * 20 + b"\n")
        self.assertEqual(self._read(good, 12), b"hello\nworld\n")
        refused = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.assertEqual(refused.recv(1), b"")
        refused.close()

        def settled() -> str | None:
            text = self.scrape(metricsPort)
            done = value(text, "tcpsc_connections_refused_total", reason="per_peer_limit") == 1
            return text if done else None

        text: str = _until(settled, what="the refusal counted")  # type: ignore[assignment]
        self.assertEqual(value(text, "tcpsc_connections_open"), 1)
        self.assertEqual(value(text, "tcpsc_connections_total"), 2)
        self.assertEqual(value(text, "tcpsc_messages_received_total"), 2)
        self.assertEqual(value(text, "tcpsc_messages_sent_total"), 2)
        self.assertEqual(value(text, "tcpsc_bytes_received_total"), 33)
        self.assertEqual(value(text, "tcpsc_bytes_sent_total"), 12)
        self.assertEqual(value(text, "tcpsc_messages_dropped_total", reason="too_long"), 1)
        self.assertEqual(
            value(text, "tcpsc_tls_handshake_failures_total", reason="certificate_rejected"), 1
        )
        self.assertEqual(value(text, "tcpsc_tls_handshake_seconds_count"), 1)
        self.assertGreater(value(text, "tcpsc_tls_handshake_seconds_sum"), 0)
        self.assertEqual(value(text, "tcpsc_close_reasons_total", reason="tls_error"), 1)
        good.close()
        _until(
            lambda: value(self.scrape(metricsPort), "tcpsc_connections_open") == 0,
            what="the client gone",
        )

    def _read(self, peer: ssl.SSLSocket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = peer.recv(size - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def test_metricsPortInUse(self) -> None:
        """
        A C{--metrics} endpoint that cannot be listened on stops the daemon
        with one line naming it, as a C{--port} does.
        """
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        daemon = Daemon(self, "--port", LOCAL, "--metrics", f"tcp:{busy}:interface=127.0.0.1")
        self.assertEqual(daemon.exitStatus(), 1)
        self.assertIn(f"tcpsc cannot start: --metrics: cannot listen on tcp:{busy}", daemon.output)
        self.assertNotIn("Traceback", daemon.output)


#: Run before anything else in a subprocess: prometheus_client cannot be
#: imported, as when it is not installed.
_BLOCKER = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "prometheus_client" or name.startswith("prometheus_client."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Absent())
"""


class WithoutPrometheusTests(SynchronousTestCase):
    """
    Without prometheus-client: the daemon and the library work, and asking
    for metrics says which C{pip install} brings it.
    """

    def runBlocked(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        return subprocess.run(
            [sys.executable, "-c", _BLOCKER + args[0], *args[1:]],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
        )

    def test_daemonOption(self) -> None:
        """
        C{--metrics} is a usage error naming the install line.
        """
        code = "from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
        result = self.runBlocked(code, "-n", "--pidfile=", "tcpsc", "--metrics", "tcp:0")
        self.assertEqual(result.returncode, 1, result.stderr)
        last = (result.stdout + result.stderr).strip().splitlines()[-1]
        self.assertIn(
            "--metrics needs prometheus-client, which is not installed: "
            'pip install "tcpsc[metrics]"',
            last,
        )

    def test_daemonWithoutMetrics(self) -> None:
        """
        The daemon without C{--metrics} serves as ever.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        logPath = directory / "twistd.out"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        code = _BLOCKER + "from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
        with open(logPath, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", code, "-n", "--pidfile=", "tcpsc", "--port", LOCAL],
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.addCleanup(lambda: (process.poll() is None and process.kill(), process.wait()))
        import re

        match: Any = _until(
            lambda: (
                re.search(r"Listening on 127\.0\.0\.1:(\d+)", logPath.read_text())
                or (process.poll() is not None and self.fail(logPath.read_text()))
            ),
            what="the daemon listening",
        )
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=TIMEOUT) as peer:
            peer.sendall(b"still here\n")
            self.assertEqual(peer.recv(100), b"still here\n")

    def test_library(self) -> None:
        """
        tcpsc imports; C{Server(metrics=...)} raises C{ImportError} naming
        the install line.
        """
        result = self.runBlocked(
            "import tcpsc\n"
            "try:\n"
            "    tcpsc.Server(metrics=object())\n"
            "except ImportError as e:\n"
            "    print(e)\n"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            result.stdout.strip(),
            "tcpsc metrics need prometheus-client, which is "
            'not installed: pip install "tcpsc[metrics]"',
        )
