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


def _until(
    condition: Callable[[], object], timeout: float = TIMEOUT, what: str = "condition"
) -> object:
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

    def __init__(
        self, test: SynchronousTestCase, *args: str, command: list[str] | None = None
    ) -> None:
        self.directory = Path(test.mktemp())
        self.directory.mkdir()
        self.logPath = self.directory / "twistd.out"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                [*(command or [*_twistd(), "-n", "--pidfile="]), "tcpsc", *args],
                cwd=self.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
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
            raise AssertionError(
                f"twistd still running after {TIMEOUT} s:\n{self.output}"
            ) from None


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
        match = daemon.waitFor(rf"Connection (\d+) from 127\.0\.0\.1:{peer.localPort} established")
        return int(match.group(1))

    def test_echoAndSigterm(self) -> None:
        """
        The default daemon echoes messages however they are split; on
        SIGTERM it closes its connections and exits promptly with no
        traceback, with the status of the signal, as twistd re-raises it
        (the README's promise).
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
        self.assertEqual(daemon.exitStatus(), -signal.SIGTERM)
        self.assertLess(time.monotonic() - started, 10)
        output = daemon.output
        self.assertNotIn("Traceback", output)
        self.assertRegex(output, r"Connection \d+ from 127\.0\.0\.1:\d+ closed")
        self.assertIn("tcpsc stopped", output)

    def test_sigint(self) -> None:
        """
        Ctrl-C (SIGINT) stops the daemon as SIGTERM does; the exit status is
        that of the signal.
        """
        daemon = Daemon(self, "--port", LOCAL)
        peer = Peer(self, daemon.port())
        self.connectionId(daemon, peer)
        os.kill(daemon.process.pid, signal.SIGINT)
        self.assertEqual(peer.receiveEnd(), b"")
        self.assertEqual(daemon.exitStatus(), -signal.SIGINT)
        self.assertNotIn("Traceback", daemon.output)
        self.assertIn("tcpsc stopped", daemon.output)

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
        daemon.waitFor(
            rf"Refused a connection from 127\.0\.0\.1:{second.localPort}: "
            r"the connection limit is reached \(1 open, maxConnections 1\)"
        )
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
        [run] = records.iterdir()
        self.assertIn(f"recording into {run}", daemon.output)
        expected = {}
        for data in (b"first\n\0\xff binary", b"second" * 10000):
            peer = Peer(self, port)
            peer.send(data)
            expected[self.connectionId(daemon, peer)] = data
            peer.socket.close()
        for connectionId, data in expected.items():
            path = run / f"client-{connectionId}.bin"
            _until(
                lambda path=path, data=data: path.exists() and path.read_bytes() == data,
                what=f"{path} holding {len(data)} bytes",
            )

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
        daemon = Daemon(
            self,
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            command=[sys.executable, "-m", "twisted"],
        )
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
        daemon = Daemon(
            self,
            "--port",
            LOCAL,
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            "/nonexistent/server.pem",
            "--key",
            files.serverKey,
        )
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
            [
                OPENSSL,
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-servername",
                "localhost",
                "-CAfile",
                files.ca,
                "-verify_return_error",
                "-quiet",
                *args,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

        def kill() -> None:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.communicate(timeout=TIMEOUT)

        self.addCleanup(kill)
        assert process.stdin is not None
        try:
            process.stdin.write(data)
            process.stdin.flush()
        except BrokenPipeError:
            # A client the server refused may have ended already: what it
            # printed is what the test reads.
            pass
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
        daemon = Daemon(
            self,
            "--port",
            LOCAL,
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            files.server,
            "--key",
            files.serverKey,
        )
        port = daemon.port()
        self.assertIn("TLS 1.3, client certificate required", daemon.output)

        good = self.sClient(
            port, "-cert", files.client, "-key", files.clientKey, data=b"secure hello\n"
        )
        self.assertEqual(self.readLine(good), b"secure hello\n")
        daemon.waitFor(r"established \(client certificate CN='client'\)")

        anonymous = self.sClient(port, data=b"anonymous\n")
        self.assertEqual(self.readLine(anonymous), b"")
        self.assertNotEqual(anonymous.wait(TIMEOUT), 0)
        daemon.waitFor(r"Refused the connection from 127\.0\.0\.1:\d+: TLS handshake failed")

        old = self.sClient(
            port, "-tls1_2", "-cert", files.client, "-key", files.clientKey, data=b"old\n"
        )
        self.assertEqual(self.readLine(old), b"")
        self.assertNotEqual(old.wait(TIMEOUT), 0)
        self.assertNotIn("Traceback", daemon.output)


class StartFailureTests(SynchronousTestCase):
    """
    The README's start-failure codes, each from the real twistd: one line
    with the cause and the code, no traceback, a non-zero exit status.
    """

    def assertFailsWith(self, code: int, *args: str, names: str = "") -> str:
        daemon = Daemon(self, *args)
        self.assertNotEqual(daemon.exitStatus(), 0)
        output = daemon.output
        self.assertNotIn("Traceback", output)
        self.assertNotIn("Listening", output)
        lines = [line for line in output.splitlines() if f"(code {code})" in line]
        self.assertEqual(len(lines), 1, output)
        self.assertIn(names, lines[0])
        return lines[0]

    def test_badEndpoint(self) -> None:
        """
        Code 10: an endpoint description Twisted cannot use.
        """
        self.assertFailsWith(10, "--port", "tcp:notaport:interface=127.0.0.1", names="tcp:notaport")

    def test_certificateFiles(self) -> None:
        """
        Codes 30-32: the CA, certificate or key file cannot be read; 33-35:
        it is not a valid CA, certificate or key; 35 also for a key that
        does not match the certificate.
        """
        files = certificates()
        missing = str(Path(self.mktemp()).resolve())
        fake = files.path("fake.pem")
        cases = [
            (30, missing, files.server, files.serverKey, missing),
            (31, files.ca, missing, files.serverKey, missing),
            (32, files.ca, files.server, missing, missing),
            (33, fake, files.server, files.serverKey, fake),
            (34, files.ca, fake, files.serverKey, fake),
            (35, files.ca, files.server, fake, fake),
            (35, files.ca, files.server, files.clientKey, ""),
        ]
        for code, ca, cert, key, names in cases:
            self.assertFailsWith(
                code,
                "--port",
                LOCAL,
                "--tls",
                "--ca",
                ca,
                "--cert",
                cert,
                "--key",
                key,
                names=names,
            )

    def test_portInUseDaemonized(self) -> None:
        """
        Code 42, daemonized (no C{-n}): the terminal that started twistd
        gets the whole sentence as text (not a cut C{bytes} repr), the exit
        status is 1, the log file has the line too, and no daemon is left.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        pidfile, logfile = directory / "tcpsc.pid", directory / "tcpsc.log"

        def killDaemon() -> None:
            # Only if one started after all: by the PID it wrote.
            try:
                pid = int(pidfile.read_text())
            except (OSError, ValueError):
                return
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        self.addCleanup(killDaemon)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        result = subprocess.run(
            [
                *_twistd(),
                f"--pidfile={pidfile}",
                f"--logfile={logfile}",
                "tcpsc",
                "--port",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT,
        )
        sentence = (
            f"tcpsc cannot start: cannot listen on tcp:{port}:interface=127.0.0.1: "
            "[Errno 98] Address already in use (code 42)"
        )
        stderr = result.stderr.decode()
        self.assertEqual(result.returncode, 1, stderr)
        self.assertEqual(stderr.splitlines()[0], sentence)
        self.assertNotIn("b'", stderr)
        self.assertNotIn("Traceback", stderr)
        self.assertIn(sentence, logfile.read_text())
        self.assertFalse(pidfile.exists())

    def test_usageError(self) -> None:
        """
        An option error prints the usage, then the error on the last line,
        and exits with twistd's status for it, 1.
        """
        daemon = Daemon(self, "--max-connections", "0")
        self.assertEqual(daemon.exitStatus(), 1)
        lines = daemon.output.strip().splitlines()
        self.assertIn("--max-connections 0: not a number of 1 or more", lines[-1])
        self.assertTrue(any("--port" in line for line in lines[:-1]))

    def test_unescapedColons(self) -> None:
        """
        The README's IPv6 example as a shell leaves it without quotes
        (C{tcp6:8081:interface=::}) is refused with the way to escape the
        colons, not Twisted's "got multiple values for argument".
        """
        daemon = Daemon(self, "--port", "tcp6:8081:interface=::")
        self.assertEqual(daemon.exitStatus(), 1)
        last = daemon.output.strip().splitlines()[-1]
        self.assertIn("a colon inside a value must be escaped with a backslash", last)
        self.assertIn("--port 'tcp6:8081:interface=\\:\\:'", last)
        self.assertNotIn("multiple values", daemon.output)


class AppTests(SynchronousTestCase):
    """
    The daemon's applications and their options, with the real twistd.
    """

    def test_recordDirWithoutRecord(self) -> None:
        """
        C{--record-dir} without C{--app record} is a usage error naming it,
        as C{--rate} and C{--message-size} are without C{--app broadcast}.
        """
        for option, app in (
            ("--record-dir", "record"),
            ("--rate", "broadcast"),
            ("--message-size", "broadcast"),
        ):
            daemon = Daemon(self, option, "5")
            self.assertEqual(daemon.exitStatus(), 1)
            self.assertIn(
                f"{option} only applies with --app {app}", daemon.output.strip().splitlines()[-1]
            )

    def test_recordRunsKeptApart(self) -> None:
        """
        Two runs of C{--app record} on one directory (ids start at 1 each
        time) write into two directories; neither appends to the other's
        files.
        """
        records = Path(self.mktemp()).resolve()
        runs: list[Path] = []
        for data in (b"first run", b"second run"):
            daemon = Daemon(self, "--port", LOCAL, "--app", "record", "--record-dir", str(records))
            port = daemon.port()
            run = Path(daemon.waitFor(r"recording into (\S+)").group(1))
            self.assertEqual(run.parent, records)
            peer = Peer(self, port)
            peer.send(data)
            peer.socket.close()
            path = run / "client-1.bin"
            _until(
                lambda path=path, data=data: path.exists() and path.read_bytes() == data,
                what=f"{path} holding {data!r}",
            )
            os.kill(daemon.process.pid, signal.SIGTERM)
            daemon.exitStatus()
            runs.append(run)
        self.assertNotEqual(runs[0], runs[1])
        self.assertEqual(sorted(records.iterdir()), sorted(runs))
        self.assertEqual((runs[0] / "client-1.bin").read_bytes(), b"first run")
        self.assertEqual((runs[1] / "client-1.bin").read_bytes(), b"second run")

    def test_broadcast(self) -> None:
        """
        C{--app broadcast} sends every client the same numbered messages of
        C{--message-size} bytes (delimiter included).
        """
        daemon = Daemon(
            self, "--port", LOCAL, "--app", "broadcast", "--rate", "200", "--message-size", "12"
        )
        port = daemon.port()
        self.assertIn("200 messages/s of 12 bytes", daemon.output)
        first = Peer(self, port)
        self.connectionId(daemon, first)
        second = Peer(self, port)
        self.connectionId(daemon, second)
        # The second client sees messages the first one sees too.
        latest = second.receive()
        seen = first.receive()
        while seen != latest:
            self.assertLess(int(seen), int(latest))
            seen = first.receive()
        for _ in range(20):
            following = second.receive()
            self.assertEqual(len(following), 11)
            self.assertEqual(int(following), int(latest) + 1)
            self.assertEqual(first.receive(), following)
            latest = following

    connectionId = DaemonTests.connectionId


class UnixSocketTests(SynchronousTestCase):
    def test_unixAddressesInWords(self) -> None:
        """
        A daemon on a UNIX socket logs its path, and its clients as a UNIX
        socket, not Twisted's C{UNIXAddress(...)} reprs.
        """
        import tempfile

        directory = Path(tempfile.mkdtemp(prefix="tcpsc-unix-"))
        self.addCleanup(shutil.rmtree, directory, True)
        path = directory / "s.sock"
        daemon = Daemon(self, "--port", f"unix:{path}")
        daemon.waitFor(rf"Listening on unix:{re.escape(str(path))} \(fragmented\)")
        client = socket.socket(socket.AF_UNIX)
        self.addCleanup(client.close)
        client.settimeout(TIMEOUT)
        client.connect(str(path))
        client.sendall(b"over unix\n")
        self.assertEqual(client.recv(100), b"over unix\n")
        daemon.waitFor(r"Connection 1 from unix socket established")
        self.assertNotIn("UNIXAddress", daemon.output)
