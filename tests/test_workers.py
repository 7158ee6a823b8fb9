"""
C{twistd tcpsc --workers N}: worker processes serving the ports their parent
bound, restarted when they end, stopped together, gone with their parent.

The tests run the real twistd process, its real workers, and plain sockets
(or Python's C{ssl}) as clients on 127.0.0.1; which worker served a
connection is read from the parent's log, where every line of a worker says
its index and pid.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from twisted.internet import reactor, tcp
from twisted.internet.error import ProcessTerminated
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import Logger, capturedLogs, formatEvent
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpsc import MessageProtocol, _compat
from tcpsc._accept import _GuardedPort
from tcpsc._errors import ListenError
from tcpsc._events import EventSummary
from tcpsc._registry import LocalRegistry
from tcpsc._supervisor import (
    FIRST_RESTART_DELAY,
    LONGEST_RESTART_DELAY,
    AdoptedEndpoint,
    WorkerRole,
    WorkerSupervisor,
    _WorkerProcess,
    bindPort,
    tcpDescription,
)
from tcpsc.tap import Options, TcpscService, TcpscSupervisor, makeService

from ._helpers import certificates
from ._redis import RedisServer, requireRedis
from ._redis import freePort as freeRedisPort
from .test_daemon import LOCAL, ROOT, TIMEOUT, Daemon, Peer, _until
from .test_systemd import fields, notifySocket


class Talker(MessageProtocol):
    """
    A user's protocol that declares it reaches other clients.
    """

    reachesOtherClients = True


def alive(pid: int) -> bool:
    """
    Whether process C{pid} runs (a zombie, ended but not yet reaped by
    whoever adopted it, does not).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def state(pid: int) -> str:
    """
    The state letter of process C{pid} (C{T} stopped), or C{""}.
    """
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def parse(*arguments: str) -> Options:
    options = Options()
    options.parseOptions(list(arguments))
    return options


class WorkersDaemon(Daemon):
    """
    A twistd with C{--workers}, and what its log says of its workers.
    """

    def port(self) -> int:
        return int(self.waitFor(r"All \d+ workers are listening on 127\.0\.0\.1:(\d+)").group(1))

    def workerPids(self) -> dict[int, int]:
        """
        The pid of each worker, the latest started.
        """
        return {
            int(index): int(pid)
            for index, pid in re.findall(r"Started worker (\d+) of \d+: pid (\d+)", self.output)
        }

    def served(self, peer: Peer) -> tuple[int, int, int]:
        """
        The worker index, worker pid and connection id that served C{peer}.
        """
        match = self.waitFor(
            r"\[worker (\d+), pid (\d+)\] Connection (\d+) from "
            rf"127\.0\.0\.1:{peer.localPort} established"
        )
        index, pid, connectionId = match.groups()
        return int(index), int(pid), int(connectionId)


def echo(test: SynchronousTestCase, port: int, message: bytes = b"hello") -> Peer:
    peer = Peer(test, port)
    peer.send(message + b"\n")
    test.assertEqual(peer.receive(), message)
    return peer


class WorkerProcessTests(SynchronousTestCase):
    """
    The daemon with C{--workers 2}, run for real.
    """

    def workers(self, *arguments: str) -> WorkersDaemon:
        daemon = WorkersDaemon(self, "--port", LOCAL, "--workers", "2", *arguments)
        self.addCleanup(self.killWorkers, daemon)
        return daemon

    def killWorkers(self, daemon: WorkersDaemon) -> None:
        # A failed test leaves no worker behind.
        for pid in daemon.workerPids().values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    @contextmanager
    def alone(self, daemon: WorkersDaemon, index: int) -> Iterator[None]:
        """
        While in this context, only worker C{index} can accept: the others
        are stopped (SIGSTOP; SIGCONT after).  Which of two idle workers
        takes a connection is up to the scheduler; this makes it sure.
        """
        others = [pid for i, pid in daemon.workerPids().items() if i != index]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            for pid in others:
                _until(lambda pid=pid: state(pid) == "T", what=f"worker {pid} stopped")
            yield
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)

    def reachBoth(self, daemon: WorkersDaemon, port: int) -> dict[int, list[int]]:
        """
        Connect to each worker in turn, twice, the other one stopped; the
        ids each worker gave.
        """
        ids: dict[int, list[int]] = {}
        for index in (0, 1, 0, 1):
            with self.alone(daemon, index):
                peer = echo(self, port, b"to worker %d" % index)
                served, pid, connectionId = daemon.served(peer)
            self.assertEqual((served, pid), (index, daemon.workerPids()[index]))
            ids.setdefault(index, []).append(connectionId)
            peer.socket.close()
        return ids

    def test_bothWorkersServeOnePort(self) -> None:
        """
        Two workers serve the one port (0: a free one) the parent bound;
        worker i of 2 numbers its connections i+1, i+3, ...: unique across
        the workers.
        """
        daemon = self.workers()
        port = daemon.port()
        self.assertRegex(daemon.output, rf"Bound 127\.0\.0\.1:{port} for 2 workers")
        self.assertEqual(len(re.findall(rf"Listening on 127\.0\.0\.1:{port}", daemon.output)), 2)
        ids = self.reachBoth(daemon, port)
        for index, issued in ids.items():
            for connectionId in issued:
                self.assertEqual((connectionId - 1) % 2, index, ids)
        self.assertEqual(len(set(daemon.workerPids().values())), 2)
        self.assertNotIn("Traceback", daemon.output)

    def test_killedWorkerRestarted(self) -> None:
        """
        A worker killed with SIGKILL is restarted after the first delay,
        logged with its index, pid and signal; the port serves throughout,
        and the new worker serves it too.
        """
        daemon = self.workers()
        port = daemon.port()
        killed = daemon.workerPids()[0]
        os.kill(killed, signal.SIGKILL)
        daemon.waitFor(
            rf"Worker 0 \(pid {killed}\) was killed by signal 9 \(SIGKILL\) after "
            rf"[\d.]+ s; restarting it in {FIRST_RESTART_DELAY:g} s"
        )
        # Served by the other worker meanwhile.
        echo(self, port, b"while restarting")
        _until(lambda: daemon.workerPids()[0] != killed, what="worker 0 started again")
        new = daemon.workerPids()[0]
        daemon.waitFor(rf"Worker 0 \(pid {new}\) is listening again")
        self.assertFalse(alive(killed))
        with self.alone(daemon, 0):
            peer = echo(self, port, b"after")
            self.assertEqual(daemon.served(peer)[:2], (0, new))

    def test_sigtermStopsAll(self) -> None:
        """
        SIGTERM to the parent stops every worker as one daemon stops: the
        output pending to a client that had not read it yet is delivered,
        then the connection closes; no worker is left, and the parent exits
        with the status of the signal, as one daemon does.
        """
        daemon = self.workers()
        port = daemon.port()
        pids = daemon.workerPids()
        peer = Peer(self, port)
        # A small receive window, so that most of the echo waits in the
        # server when it is told to stop.
        peer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        daemon.served(peer)
        message = os.urandom(4 << 20).replace(b"\n", b".")
        peer.send(message + b"\n")
        # The echo began: the whole message was received.
        first = peer.socket.recv(1)
        self.assertEqual(first, message[:1])
        os.kill(daemon.process.pid, signal.SIGTERM)
        rest = peer.receiveEnd()
        self.assertEqual(first + rest, message + b"\n")
        self.assertEqual(daemon.exitStatus(), -signal.SIGTERM)
        for pid in pids.values():
            self.assertFalse(alive(pid), f"worker {pid} still running")
        output = daemon.output
        self.assertNotIn("Traceback", output)
        self.assertIn("Stopping tcpsc: stopping 2 workers", output)
        self.assertEqual(len(re.findall(r"\] tcpsc stopped$", output, re.MULTILINE)), 2, output)
        self.assertIn("tcpsc stopped: every worker has ended", output)
        self.assertNotIn("restarting it", output)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)

    def test_sigint(self) -> None:
        """
        SIGINT (Ctrl-C) stops the parent and its workers as SIGTERM does;
        the exit status is that of the signal.
        """
        daemon = self.workers()
        peer = echo(self, daemon.port())
        pids = list(daemon.workerPids().values())
        os.kill(daemon.process.pid, signal.SIGINT)
        self.assertEqual(peer.receiveEnd(), b"")
        self.assertEqual(daemon.exitStatus(), -signal.SIGINT)
        self.assertFalse(any(alive(pid) for pid in pids))
        self.assertIn("tcpsc stopped: every worker has ended", daemon.output)

    def test_parentKilled(self) -> None:
        """
        A parent killed with SIGKILL leaves no worker behind: each sees its
        pipe from the parent close and stops.  The port is then closed.
        """
        daemon = self.workers()
        port = daemon.port()
        peer = echo(self, port)
        pids = list(daemon.workerPids().values())
        os.kill(daemon.process.pid, signal.SIGKILL)
        daemon.exitStatus()
        _until(lambda: not any(alive(pid) for pid in pids), what="every worker gone")
        self.assertEqual(peer.receiveEnd(), b"")
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)

    def test_tlsAndHangup(self) -> None:
        """
        With C{--tls}, each worker serves TLS 1.3 with client certificates
        (Python's C{ssl} as the client); SIGHUP to the parent reaches every
        worker, which reloads its certificates.
        """
        files = certificates()
        daemon = self.workers(
            "--tls", "--ca", files.ca, "--cert", files.server, "--key", files.serverKey
        )
        port = daemon.port()
        context = ssl.create_default_context(cafile=files.ca)
        context.load_cert_chain(files.client, files.clientKey)
        for index in (0, 1):
            with self.alone(daemon, index):
                with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
                    with context.wrap_socket(raw, server_hostname="localhost") as tls:
                        self.assertEqual(tls.version(), "TLSv1.3")
                        tls.sendall(b"secret %d\n" % index)
                        self.assertEqual(tls.recv(100), b"secret %d\n" % index)
                        local = tls.getsockname()[1]
            daemon.waitFor(
                rf"\[worker {index}, pid \d+\] Connection \d+ from 127\.0\.0\.1:{local} "
                "established"
            )
        os.kill(daemon.process.pid, signal.SIGHUP)
        daemon.waitFor("Received SIGHUP: passing it on to 2 workers")
        for index in (0, 1):
            daemon.waitFor(rf"\[worker {index}, pid \d+\] Reloaded the TLS certificates")

    def test_systemdReady(self) -> None:
        """
        Under systemd (C{NOTIFY_SOCKET}), the parent alone says C{READY=1},
        once both workers listen (each serves at once), and C{STOPPING=1}
        on SIGTERM; the workers say nothing.
        """
        receiver, address = notifySocket(self)
        os.environ["NOTIFY_SOCKET"] = address
        try:
            daemon = self.workers()
        finally:
            del os.environ["NOTIFY_SOCKET"]
        ready = fields(receiver.recv(4096))
        self.assertEqual(ready["READY"], "1")
        self.assertRegex(ready["STATUS"], r"Listening on 127\.0\.0\.1:\d+ with 2 workers")
        self.assertIn("All 2 workers are listening", daemon.output)
        for index in (0, 1):
            self.assertRegex(daemon.output, rf"\[worker {index}, pid \d+\] Listening on")
        self.reachBoth(daemon, daemon.port())
        os.kill(daemon.process.pid, signal.SIGTERM)
        self.assertEqual(
            fields(receiver.recv(4096)),
            {"STOPPING": "1", "STATUS": "Stopping: stopping the workers"},
        )
        self.assertEqual(daemon.exitStatus(), -signal.SIGTERM)
        receiver.settimeout(0)
        with self.assertRaises(BlockingIOError):
            receiver.recv(4096)

    def test_haproxy(self) -> None:
        """
        A C{haproxy:tcp:} port is bound by the parent too; its workers read
        the PROXY header first, as a single daemon does: the client's
        address it gives is the connection's from its first log line, and a
        connection without a header is refused and logged.
        """
        daemon = WorkersDaemon(
            self, "--port", "haproxy:tcp:0:interface=127.0.0.1", "--workers", "2"
        )
        self.addCleanup(self.killWorkers, daemon)
        port = daemon.port()
        self.assertIn("(PROXY protocol)", daemon.output)
        peer = Peer(self, port)
        peer.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 8081\r\nbehind a balancer\n")
        self.assertEqual(peer.receive(), b"behind a balancer")
        daemon.waitFor(
            r"\[worker \d, pid \d+\] Connection \d+ from 203\.0\.113\.7:40000 established"
        )
        peer.socket.close()
        daemon.waitFor(r"\[worker \d, pid \d+\] Connection \d+ from 203\.0\.113\.7:40000 closed")
        direct = Peer(self, port)
        direct.send(b"no header\n")
        daemon.waitFor(
            r"\[worker \d, pid \d+\] Refused the connection from 127\.0\.0\.1:\d+ on a "
            r"PROXY-protocol port: its first bytes are not a PROXY protocol header"
        )

    def test_failingWorkerBacksOff(self) -> None:
        """
        A worker that fails at every start is restarted ever more slowly
        (0.5 s, 1 s, 2 s, ...), never in a loop; SIGTERM during a delay
        stops the parent at once, with no worker left.
        """
        daemon = self.workers("--app", "tests._failingworker:Failing")
        for delay in ("0.5", "1", "2"):
            daemon.waitFor(
                rf"Worker 0 \(pid \d+\) exited with status 1 after [\d.]+ s; "
                rf"restarting it in {delay} s"
            )
        self.assertNotIn("All 2 workers are listening", daemon.output)
        pids = daemon.workerPids().values()
        os.kill(daemon.process.pid, signal.SIGTERM)
        self.assertEqual(daemon.exitStatus(), -signal.SIGTERM)
        _until(lambda: not any(alive(pid) for pid in pids), what="every worker gone")

    def test_refusedChat(self) -> None:
        """
        C{--app chat} with C{--workers 2} and no C{--cluster}: twistd exits
        1 with the reason on its last line, before starting anything.
        """
        daemon = Daemon(self, "--port", LOCAL, "--workers", "2", "--app", "chat")
        self.assertEqual(daemon.exitStatus(), 1)
        last = daemon.output.strip().splitlines()[-1]
        self.assertIn("--app chat reaches clients of other connections", last)
        self.assertIn("--cluster", last)
        self.assertNotIn("Started worker", daemon.output)

    def test_portInUse(self) -> None:
        """
        A port the parent cannot bind: one line with the cause and code 42,
        exit status 1, and no worker started.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        daemon = Daemon(self, "--port", f"tcp:{busy}:interface=127.0.0.1", "--workers", "2")
        self.assertEqual(daemon.exitStatus(), 1)
        self.assertRegex(
            daemon.output,
            rf"tcpsc cannot start: cannot listen on tcp:{busy}:interface=127\.0\.0\.1: "
            rf"127\.0\.0\.1:{busy}: Address already in use \(code 42\)",
        )
        self.assertNotIn("Traceback", daemon.output)
        self.assertNotIn("Started worker", daemon.output)


class WorkersOptionTests(SynchronousTestCase):
    """
    C{--workers}: its values and what it refuses, before anything starts.
    """

    def assertRefused(self, message: str, *arguments: str) -> None:
        with self.assertRaises(usage.UsageError) as caught:
            parse(*arguments)
        self.assertIn(message, str(caught.exception))

    def test_badCounts(self) -> None:
        for value, shown in (("0", "0"), ("-1", "-1"), ("two", "'two'"), ("", "''")):
            self.assertRefused(
                f"--workers {shown}: not a number of worker processes (1 or more)",
                "--workers",
                value,
            )
        self.assertRefused("--workers 'none'", "--workers", "none")

    def test_oneWorkerIsTodaysDaemon(self) -> None:
        """
        Without C{--workers}, or with 1, the daemon is the one process it
        always was.
        """
        for arguments in ((), ("--workers", "1")):
            service = makeService(parse("--port", LOCAL, *arguments))
            self.assertIsInstance(service, TcpscService)
            self.assertIsNone(service.worker)

    def test_supervisor(self) -> None:
        """
        With 2 or more, the service is the parent, which runs
        C{python -m twisted tcpsc} with the same options.
        """
        options = parse("--port", LOCAL, "--workers", "3", "--app", "broadcast")
        service = makeService(options)
        self.assertIsInstance(service, TcpscSupervisor)
        assert isinstance(service, TcpscSupervisor)
        self.assertEqual(service.count, 3)
        self.assertEqual(service.arguments[1:3], ["-m", "twisted"])
        self.assertEqual(
            service.arguments[-7:],
            ["tcpsc", "--port", LOCAL, "--workers", "3", "--app", "broadcast"],
        )

    def test_reachesOtherClients(self) -> None:
        """
        An application that reaches other clients is refused with workers
        but no cluster: chat, and a user's class that says so.
        """
        self.assertRefused(
            "--app chat reaches clients of other connections, and each of --workers 2 "
            "would reach only its own: give --cluster",
            "--app",
            "chat",
            "--workers",
            "2",
        )
        self.assertRefused(
            "--app tests.test_workers:Talker reaches clients",
            "--app",
            "tests.test_workers:Talker",
            "--workers",
            "2",
        )
        parse("--app", "chat", "--workers", "1")
        parse("--app", "tests.test_workers:Talker")

    def test_withCluster(self) -> None:
        """
        With C{--cluster} (read as C{options.get("cluster")}), chat may run
        in workers.
        """
        options = Options()
        options["cluster"] = "redis://127.0.0.1:6379/0"
        options.parseOptions(["--app", "chat", "--workers", "2"])
        self.assertEqual(options["workers"], 2)

    def test_notWithUDPOrMetrics(self) -> None:
        self.assertRefused("--udp cannot be shared by workers", "--udp", "9000", "--workers", "2")
        self.assertRefused(
            "--metrics with --workers 2: each worker counts only its own connections",
            "--metrics",
            "tcp:9100:interface=127.0.0.1",
            "--workers",
            "2",
        )

    def test_tcpPortsOnly(self) -> None:
        """
        The parent binds the ports: TCP ones, plain or behind C{haproxy:}.
        """
        for port in ("unix:/tmp/tcpsc.sock", "ssl:8443", "systemd:domain=INET:index=0"):
            self.assertRefused(
                f"--port {port!r}: with --workers the ports must be TCP",
                "--port",
                port,
                "--workers",
                "2",
            )
        for port in ("8081", "tcp6:8081:interface=\\:\\:1", "haproxy:tcp:8081"):
            self.assertEqual(parse("--port", port, "--workers", "2")["workers"], 2)


class HandOverTests(SynchronousTestCase):
    """
    The pieces of the hand-over, in one process.
    """

    def test_descriptions(self) -> None:
        self.assertEqual(tcpDescription("tcp:8081"), (8081, "", None, False))
        self.assertEqual(
            tcpDescription("tcp6:0:interface=\\:\\:1:backlog=10"), (0, "::1", 10, False)
        )
        self.assertEqual(tcpDescription("tcp6:port=80"), (80, "::", None, False))
        self.assertEqual(
            tcpDescription("haproxy:tcp:8081:interface=127.0.0.1"),
            (8081, "127.0.0.1", None, True),
        )
        self.assertIsNone(tcpDescription("unix:/tmp/x"))
        for bad in ("tcp:70000", "tcp:x", "tcp:1:2", "tcp:1:ssl=1", "tcp:1:backlog=x"):
            with self.assertRaises(ValueError, msg=bad):
                tcpDescription(bad)

    def test_bindPort(self) -> None:
        """
        The parent's socket listens (without accepting) on the port and
        address described; a port in use is a L{ListenError} naming it.
        """
        bound = bindPort("tcp:0:interface=127.0.0.1", 50)
        self.addCleanup(bound.socket.close)
        host, port = bound.socket.getsockname()
        self.assertEqual(host, "127.0.0.1")
        client = socket.create_connection((host, port), timeout=TIMEOUT)
        client.close()
        with self.assertRaises(ListenError) as caught:
            bindPort(f"tcp:{port}:interface=127.0.0.1", 50)
        self.assertEqual(caught.exception.code, 42)
        self.assertIn(f"127.0.0.1:{port}: Address already in use", str(caught.exception))

    def test_role(self) -> None:
        environ = {"TCPSC_WORKER": "1/3:4,5", "OTHER": "x"}
        role = WorkerRole.fromEnvironment(environ)
        self.assertEqual(role, WorkerRole(1, 3, [4, 5]))
        self.assertEqual(environ, {"OTHER": "x"})
        self.assertIsNone(WorkerRole.fromEnvironment({}))
        for bad in ("3/3:4", "x", "1/2"):
            with self.assertRaises(ValueError):
                WorkerRole.fromEnvironment({"TCPSC_WORKER": bad})

    def test_registryStride(self) -> None:
        """
        Worker i of N numbers its connections i+1, i+1+N, ...; C{registered}
        still counts them.
        """
        clock = Clock()
        log = Logger()
        registry = LocalRegistry(clock, EventSummary(log, clock), log, firstId=2, idStep=3)
        ids = [registry.register(MessageProtocol()) for _ in range(3)]
        self.assertEqual(ids, [2, 5, 8])
        self.assertEqual(registry.registered, 3)
        with self.assertRaises(ValueError):
            LocalRegistry(clock, EventSummary(log, clock), log, idStep=0)


class _Counting(Factory):
    def __init__(self) -> None:
        self.built = 0

    def buildProtocol(self, addr: object) -> Protocol:
        self.built += 1
        return Protocol()


class AdoptedEndpointTests(TestCase):
    """
    A worker's port: the socket its parent bound, adopted.
    """

    def adopt(self) -> tuple[IListeningPort, _Counting, list[socket.socket]]:
        bound = bindPort("tcp:0:interface=127.0.0.1", 50)
        self.addCleanup(bound.socket.close)
        factory = _Counting()
        endpoint = AdoptedEndpoint(reactor, os.dup(bound.socket.fileno()), "tcp:0")
        ports: list[IListeningPort] = []
        endpoint.listen(factory).addCallback(ports.append)
        [port] = ports
        self.addCleanup(port.stopListening)
        clients = []
        for _ in range(3):
            client = socket.create_connection(bound.socket.getsockname(), timeout=TIMEOUT)
            self.addCleanup(client.close)
            clients.append(client)
        return port, factory, clients

    def test_oneAcceptPerWakeup(self) -> None:
        """
        With the private path, tcpsc's accept loop takes one connection
        each time the socket is readable, leaving the others queued for
        the other workers.
        """
        port, factory, _ = self.adopt()
        self.assertIsInstance(port, _GuardedPort)
        self.assertEqual(port.getHost().host, "127.0.0.1")  # type: ignore[attr-defined]
        port.doRead()  # type: ignore[attr-defined]
        self.assertEqual(factory.built, 1)
        port.doRead()  # type: ignore[attr-defined]
        self.assertEqual(factory.built, 2)

    def test_publicFallback(self) -> None:
        """
        Without it, the reactor's own C{adoptStreamPort}.
        """
        self.patch(_compat, "PRIVATE", False)
        port, factory, _ = self.adopt()
        self.assertIs(type(port), tcp.Port)
        port.doRead()  # type: ignore[attr-defined]
        self.assertEqual(factory.built, 3)


class _Ended:
    """
    What the supervisor keeps of a worker that ended.
    """

    def __init__(self, index: int, pid: int, started: float) -> None:
        self.index = index
        self.pid = pid
        self.started = started
        self.ended = True


class BackOffTests(SynchronousTestCase):
    """
    The delays between restarts, on a clock.
    """

    def test_delays(self) -> None:
        """
        0.5 s, then twice as long each time up to 30 s; a worker that ran
        30 s or more is restarted after 0.5 s again.
        """
        clock = Clock()
        supervisor = WorkerSupervisor(1, [], ["python"], clock, "", 15.0, 50)
        started: list[int] = []
        supervisor._spawn = started.append  # type: ignore[method-assign]
        killed = Failure(ProcessTerminated(signal=signal.SIGKILL))
        delays = []
        with capturedLogs() as events:
            for _ in range(9):
                supervisor._workerEnded(_Ended(0, 10, clock.seconds()), killed)  # type: ignore[arg-type]
                delay = supervisor._restarts[0].getTime() - clock.seconds()
                delays.append(delay)
                clock.advance(delay)
            clock.advance(40)
            supervisor._workerEnded(_Ended(0, 10, 0.0), killed)  # type: ignore[arg-type]
        self.assertEqual(delays, [0.5, 1, 2, 4, 8, 16, LONGEST_RESTART_DELAY, 30, 30])
        self.assertEqual(supervisor._restarts[0].getTime() - clock.seconds(), 0.5)
        self.assertEqual(started, [0] * 9)
        self.assertEqual(events[0]["signal"], signal.SIGKILL)
        self.assertEqual(events[0]["index"], 0)


class _Signals:
    """
    What the supervisor signals a worker's process with.
    """

    def __init__(self) -> None:
        self.sent: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.sent.append(name)


class StopBoundTests(SynchronousTestCase):
    """
    Stopping, on a clock: SIGTERM to every worker, SIGKILL to those still
    running after the bound.
    """

    def test_killAfterBound(self) -> None:
        clock = Clock()
        supervisor = WorkerSupervisor(2, [], ["python"], clock, "", 15.0, 50)
        workers = []
        for index in range(2):
            worker = _WorkerProcess(supervisor, index)
            worker.pid = 100 + index
            worker.transport = _Signals()  # type: ignore[assignment]
            supervisor.workers[index] = worker
            workers.append(worker)
        stopped: list[object] = []
        with capturedLogs() as events:
            supervisor.stopService().addBoth(stopped.append)
            self.assertEqual([w.transport.sent for w in workers], [["TERM"], ["TERM"]])  # type: ignore[attr-defined]
            workers[0].processEnded(Failure(ProcessTerminated(signal=signal.SIGTERM)))
            clock.advance(14.9)
            self.assertEqual(workers[1].transport.sent, ["TERM"])  # type: ignore[attr-defined]
            self.assertEqual(stopped, [])
            clock.advance(0.1)
            self.assertEqual(workers[1].transport.sent, ["TERM", "KILL"])  # type: ignore[attr-defined]
            self.assertEqual(stopped, [])
            workers[1].processEnded(Failure(ProcessTerminated(signal=signal.SIGKILL)))
        self.assertEqual(stopped, [None])
        self.assertEqual(clock.getDelayedCalls(), [])
        texts = [formatEvent(e) for e in events]
        self.assertIn("Worker 1 (pid 101) did not stop within 15 s: killing it (SIGKILL)", texts)
        self.assertIn("Worker 1 (pid 101) was killed by signal 9 (SIGKILL)", texts)
        self.assertNotIn("restarting", " ".join(texts))


class BenchmarkSmokeTests(SynchronousTestCase):
    def test_tinyRun(self) -> None:
        """
        C{benchmarks/workers.py} starts both daemons, drives them, stops
        them and writes its section; here with C{tcpsc bench echo} (no load
        generator given) and a tiny load.  No figure is asserted on.
        """
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        output = directory / "RESULTS.md"
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [environment.get("PYTHONPATH")])]
        )
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "workers.py"),
                "--repeat",
                "1",
                "--clients",
                "4",
                "--in-flight",
                "2",
                "--messages",
                "2000",
                "--loadgen",
                str(directory / "none"),
                "--output",
                str(output),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=environment,
            cwd=str(directory),
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("using tcpsc bench echo", result.stderr)
        report = output.read_text()
        self.assertIn("## Scale-out: workers", report)
        self.assertRegex(report, r"\| --workers 2 \| [\d,]+ \|")
        self.assertRegex(report, r"median \*\*[\d.]+x\*\*")


class WorkersInClusterTests(SynchronousTestCase):
    """
    C{--workers 2} with C{--cluster}: each worker is a node of the cluster,
    with a real Redis of the test's own.
    """

    workers = WorkerProcessTests.workers
    killWorkers = WorkerProcessTests.killWorkers
    alone = WorkerProcessTests.alone

    def test_chatAcrossWorkers(self) -> None:
        """
        C{--app chat}, which is refused with workers but no cluster, spans
        both workers with one: a client of one worker sees the message of a
        client of the other, prefixed with its sender's cluster-wide id,
        and the ids come from the cluster (no stride), unique across the
        workers.
        """
        redis = RedisServer(self)
        daemon = self.workers("--app", "chat", "--cluster", redis.url)
        port = daemon.port()
        peers = {}
        for index in (0, 1):
            with self.alone(daemon, index):
                peer = Peer(self, port)
                served, _, connectionId = daemon.served(peer)
            self.assertEqual(served, index)
            peers[index] = (peer, connectionId)
        (first, firstId), (second, secondId) = peers[0], peers[1]
        self.assertNotEqual(firstId, secondId)
        # Each worker has read the other's announcement once Redis's
        # directory holds both ids; a message then reaches across.
        _until(
            lambda: (
                sorted(int(i) for i in redis.command("HKEYS", "tcpsc:dir"))  # type: ignore[union-attr]
                == sorted([firstId, secondId])
            ),
            what="both clients in the cluster's directory",
        )
        first.send(b"from worker 0\n")
        self.assertEqual(second.receive(), b"%d: from worker 0" % firstId)
        second.send(b"from worker 1\n")
        self.assertEqual(first.receive(), b"%d: from worker 1" % secondId)
        self.assertNotIn("Traceback", daemon.output)

    def test_unreachableRedis(self) -> None:
        """
        A Redis that does not answer stops the parent at start with one
        line and status 1, before any worker is started (rather than
        workers that fail and are restarted for ever).
        """
        requireRedis()
        url = f"redis://127.0.0.1:{freeRedisPort()}/0"
        daemon = WorkersDaemon(
            self, "--port", LOCAL, "--workers", "2", "--app", "chat", "--cluster", url
        )
        self.assertEqual(daemon.exitStatus(), 1)
        self.assertIn(f"tcpsc: cannot join the cluster at {url}: Connection refused", daemon.output)
        self.assertNotIn("Started worker", daemon.output)
