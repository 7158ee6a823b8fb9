"""
Integration tests of the daemon: the real C{twistd -n --pidfile= tcpsc ...}
process, found through the plugin with the repository on C{PYTHONPATH}, and
driven by real peers: plain sockets and C{openssl s_client}.

Each daemon listens on C{tcp:0:interface=127.0.0.1}; its port is read from
its "Listening on" log line.  Its output goes to a file (a pipe could fill
up and block it), which the tests poll with a bound.  Every process started
here is killed in a cleanup, by its PID.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ._helpers import certificates

ROOT = Path(__file__).resolve().parent.parent
OPENSSL = shutil.which("openssl")
#: Bound of every wait for a daemon or a peer.
TIMEOUT = 30.0
LOCAL = "tcp:0:interface=127.0.0.1"


def _twistd() -> list[str]:
    """
    The twistd command of this Python: the console script next to the
    interpreter, as a user runs it (it does not put the current directory on
    C{sys.path}, unlike C{python -c}).
    """
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def _until(condition: Callable[[], object], timeout: float = TIMEOUT,
           what: str = "condition") -> object:
    """
    Poll C{condition} until it returns something true, at most C{timeout}
    seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.02)


class Daemon:
    """
    One twistd process and its output.
    """

    def __init__(self, test: SynchronousTestCase, *args: str,
                 command: list[str] | None = None) -> None:
        self.directory = Path(test.mktemp())
        self.directory.mkdir()
        self.logPath = self.directory / "twistd.out"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                [*(command or [*_twistd(), "-n", "--pidfile="]), "tcpsc", *args],
                cwd=self.directory, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
            )
        test.addCleanup(self.kill)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(TIMEOUT)

    @property
    def output(self) -> str:
        return self.logPath.read_text(errors="replace")

    def waitFor(self, pattern: str) -> re.Match[str]:
        """
        Wait until the output matches C{pattern}, or the process ended.
        """

        def found() -> re.Match[str] | None:
            match = re.search(pattern, self.output)
            if match is None and self.process.poll() is not None:
                raise AssertionError(
                    f"twistd exited ({self.process.returncode}) before logging "
                    f"{pattern!r}:\n{self.output}"
                )
            return match

        return _until(found, what=f"log line {pattern!r}")  # type: ignore[return-value]

    def port(self) -> int:
        return int(self.waitFor(r"Listening on 127\.0\.0\.1:(\d+)").group(1))

    def exitStatus(self) -> int:
        try:
            return self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"twistd still running after {TIMEOUT} s:\n"
                                 f"{self.output}") from None


class Peer:
    """
    A plain socket client with line-oriented helpers.
    """

    def __init__(self, test: SynchronousTestCase, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buffer = b""
        test.addCleanup(self.socket.close)

    @property
    def localPort(self) -> int:
        return self.socket.getsockname()[1]

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def receive(self, delimiter: bytes = b"\n") -> bytes:
        """
        The next message (a socket timeout fails the test).
        """
        while delimiter not in self.buffer:
            data = self.socket.recv(65536)
            if not data:
                raise AssertionError(f"connection closed; got {self.buffer!r}")
            self.buffer += data
        message, self.buffer = self.buffer.split(delimiter, 1)
        return message

    def receiveEnd(self) -> bytes:
        """
        Everything until the server closes the connection.
        """
        chunks = [self.buffer]
        while data := self.socket.recv(65536):
            chunks.append(data)
        return b"".join(chunks)


class DaemonTests(SynchronousTestCase):
    """
    The daemon serving plain TCP.
    """

    def connectionId(self, daemon: Daemon, peer: Peer) -> int:
        """
        The id the daemon gave C{peer}, from its log.
        """
        match = daemon.waitFor(
            rf"Connection (\d+) from 127\.0\.0\.1:{peer.localPort} established"
        )
        return int(match.group(1))

    def test_echoAndSigterm(self) -> None:
        """
        The default daemon echoes messages however they are split; on
        SIGTERM it closes its connections and exits promptly with no
        traceback (status 0, or -15 as twistd re-raises the signal).
        """
        daemon = Daemon(self, "--port", LOCAL)
        port = daemon.port()
        self.assertIn("app echo (fragmented mode", daemon.output)
        first, second = Peer(self, port), Peer(self, port)
        first.send("hello\nwörld\n".encode())
        self.assertEqual(first.receive(), b"hello")
        self.assertEqual(first.receive(), "wörld".encode())
        second.send(b"spl")
        second.send(b"it\n\n")
        self.assertEqual(second.receive(), b"split")
        self.assertEqual(second.receive(), b"")
        self.connectionId(daemon, first)
        started = time.monotonic()
        os.kill(daemon.process.pid, signal.SIGTERM)
        self.assertEqual(first.receiveEnd(), b"")
        self.assertIn(daemon.exitStatus(), (0, -signal.SIGTERM))
        self.assertLess(time.monotonic() - started, 10)
        output = daemon.output
        self.assertNotIn("Traceback", output)
        self.assertRegex(output, r"Connection \d+ from 127\.0\.0\.1:\d+ closed")
        self.assertIn("tcpsc stopped", output)

    def test_chat(self) -> None:
        """
        Three clients: a message goes to the two others, prefixed with the
        sender's id, and never back to its sender.
        """
        daemon = Daemon(self, "--port", LOCAL, "--app", "chat")
        port = daemon.port()
        peers = [Peer(self, port) for _ in range(3)]
        ids = [self.connectionId(daemon, peer) for peer in peers]
        a, b, c = peers
        a.send(b"hello\n")
        self.assertEqual(b.receive(), b"%d: hello" % ids[0])
        self.assertEqual(c.receive(), b"%d: hello" % ids[0])
        b.send(b"hi a\n")
        # The first thing a receives is b's message: its own never came back.
        self.assertEqual(a.receive(), b"%d: hi a" % ids[1])
        self.assertEqual(c.receive(), b"%d: hi a" % ids[1])

    def test_connectionLimit(self) -> None:
        """
        Beyond C{--max-connections} a connection is closed at once and the
        refusal logged; the connection already open keeps working.
        """
        daemon = Daemon(self, "--port", LOCAL, "--max-connections", "1")
        port = daemon.port()
        first = Peer(self, port)
        self.connectionId(daemon, first)
        second = Peer(self, port)
        self.assertEqual(second.receiveEnd(), b"")
        daemon.waitFor(rf"Refused a connection from 127\.0\.0\.1:{second.localPort}: "
                       r"the connection limit is reached \(1 open, maxConnections 1\)")
        first.send(b"still here\n")
        self.assertEqual(first.receive(), b"still here")

    def test_record(self) -> None:
        """
        C{--app record} writes each connection's bytes, exactly, to
        C{client-<id>.bin}.
        """
        records = Path(self.mktemp()).resolve()
        daemon = Daemon(self, "--port", LOCAL, "--app", "record", "--record-dir", str(records))
        port = daemon.port()
        self.assertIn("app record (continuous mode)", daemon.output)
        expected = {}
        for data in (b"first\n\0\xff binary", b"second" * 10000):
            peer = Peer(self, port)
            peer.send(data)
            expected[self.connectionId(daemon, peer)] = data
            peer.socket.close()
        for connectionId, data in expected.items():
            path = records / f"client-{connectionId}.bin"
            _until(lambda path=path, data=data: path.exists() and path.read_bytes() == data,
                   what=f"{path} holding {len(data)} bytes")

    def test_userApp(self) -> None:
        """
        The README's example: C{--app examples.upper:Upper}.
        """
        daemon = Daemon(self, "--port", LOCAL, "--app", "examples.upper:Upper")
        peer = Peer(self, daemon.port())
        peer.send(b"shout\n")
        self.assertEqual(peer.receive(), b"SHOUT")

    def test_portInUse(self) -> None:
        """
        A port in use: twistd exits non-zero with one line naming the cause
        and the original's code 42, and no traceback.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        daemon = Daemon(self, "--port", f"tcp:{port}:interface=127.0.0.1")
        self.assertNotEqual(daemon.exitStatus(), 0)
        output = daemon.output
        self.assertNotIn("Traceback", output)
        lines = [line for line in output.splitlines() if "code 42" in line]
        self.assertEqual(len(lines), 1, output)
        self.assertIn(f"cannot listen on tcp:{port}:interface=127.0.0.1", lines[0])
        self.assertIn("in use", lines[0])

    def test_portInUseWithTwist(self) -> None:
        """
        C{twist}, which starts services differently, fails the same way.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        daemon = Daemon(self, "--port", f"tcp:{port}:interface=127.0.0.1",
                        command=[sys.executable, "-m", "twisted"])
        self.assertEqual(daemon.exitStatus(), 1)
        output = daemon.output
        self.assertNotIn("Traceback", output)
        lines = [line for line in output.splitlines() if "code 42" in line]
        self.assertEqual(len(lines), 1, output)

    def test_certificateProblem(self) -> None:
        """
        A missing certificate file: twistd exits non-zero at once with one
        line naming the file and the original's code 31, and no traceback.
        """
        files = certificates()
        daemon = Daemon(self, "--port", LOCAL, "--tls", "--ca", files.ca,
                        "--cert", "/nonexistent/server.pem", "--key", files.serverKey)
        self.assertNotEqual(daemon.exitStatus(), 0)
        output = daemon.output
        self.assertNotIn("Traceback", output)
        self.assertNotIn("Listening", output)
        lines = [line for line in output.splitlines() if "code 31" in line]
        self.assertEqual(len(lines), 1, output)
        self.assertIn("/nonexistent/server.pem", lines[0])


class TLSDaemonTests(SynchronousTestCase):
    """
    The daemon serving TLS 1.3 with client certificates, against
    C{openssl s_client}.
    """

    def setUp(self) -> None:
        if OPENSSL is None:
            raise self.skipTest("openssl is not installed")

    def sClient(self, port: int, *args: str, data: bytes) -> subprocess.Popen[bytes]:
        files = certificates()
        process = subprocess.Popen(
            [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
             "localhost", "-CAfile", files.ca, "-verify_return_error", "-quiet", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )

        def kill() -> None:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.communicate(timeout=TIMEOUT)

        self.addCleanup(kill)
        assert process.stdin is not None
        process.stdin.write(data)
        process.stdin.flush()
        return process

    def readLine(self, process: subprocess.Popen[bytes]) -> bytes:
        """
        One line of C{process}'s output, or C{b""} if it ended without one.
        """
        assert process.stdout is not None
        deadline = time.monotonic() + TIMEOUT
        line = b""
        os.set_blocking(process.stdout.fileno(), False)
        while not line.endswith(b"\n"):
            chunk = process.stdout.read(1)
            if chunk == b"":
                return line
            if chunk is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"no line within {TIMEOUT} s; got {line!r}")
                time.sleep(0.01)
                continue
            line += chunk
        return line

    def test_tls(self) -> None:
        """
        A client with a certificate from the CA gets its echo, and the log
        names its certificate's CN; a client without one, or limited to TLS
        1.2, is refused and the refusal logged.
        """
        files = certificates()
        daemon = Daemon(self, "--port", LOCAL, "--tls", "--ca", files.ca,
                        "--cert", files.server, "--key", files.serverKey)
        port = daemon.port()
        self.assertIn("TLS 1.3, client certificate required", daemon.output)

        good = self.sClient(port, "-cert", files.client, "-key", files.clientKey,
                            data=b"secure hello\n")
        self.assertEqual(self.readLine(good), b"secure hello\n")
        daemon.waitFor(r"established \(client certificate CN='client'\)")

        anonymous = self.sClient(port, data=b"anonymous\n")
        self.assertEqual(self.readLine(anonymous), b"")
        self.assertNotEqual(anonymous.wait(TIMEOUT), 0)
        daemon.waitFor(r"Refused the connection from 127\.0\.0\.1:\d+: TLS handshake failed")

        old = self.sClient(port, "-tls1_2", "-cert", files.client, "-key", files.clientKey,
                           data=b"old\n")
        self.assertEqual(self.readLine(old), b"")
        self.assertNotEqual(old.wait(TIMEOUT), 0)
        self.assertNotIn("Traceback", daemon.output)
