"""
Tests for the C{tcpsc} command: C{tcpsc certs} and C{tcpsc connect}, run as
real processes (C{python -m tcpsc}) where what matters is what a user sees:
exit status, standard output and one-line errors on standard error.
"""

from __future__ import annotations

import io
import os
import pty
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpsc import Server, TLSConfig
from tcpsc._cli.common import Target, UsageError, parseTarget
from tcpsc._cli.main import main

from ._helpers import asyncTest, certificates, waitFor

OPENSSL = shutil.which("openssl")
ROOT = Path(__file__).resolve().parent.parent
#: Bound of every wait for a spawned command.
TIMEOUT = 30.0


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def tcpsc(*args: str) -> subprocess.CompletedProcess[str]:
    """
    Run C{python -m tcpsc ARGS} to its end.
    """
    return subprocess.run(
        [sys.executable, "-m", "tcpsc", *args],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


class CommandTests(SynchronousTestCase):
    """
    The command as a whole: help, usage errors.
    """

    def test_help(self) -> None:
        """
        C{tcpsc} and each subcommand have C{--help}, which describes them and
        exits 0.
        """
        for command, words in (
            ((), ("certs", "connect")),
            (("certs",), ("--host", "--client", "--subject", "--rsa", "--days", "--force", "0600")),
            (
                ("connect",),
                (
                    "--tls",
                    "--ca",
                    "--cert",
                    "--key",
                    "--delimiter",
                    "--reconnect",
                    "--wait",
                    "--connect-timeout",
                    "unix:PATH",
                    "tcp:HOST:PORT",
                    "130",
                    "SIGTERM",
                ),
            ),
        ):
            result = tcpsc(*command, "--help")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("usage: tcpsc", result.stdout)
            for word in words:
                self.assertIn(word, result.stdout)

    def test_usageErrorIsOneLine(self) -> None:
        """
        A usage error is one line on standard error, exit status 2.
        """
        for args, expected in (
            (("bogus",), "invalid choice"),
            ((), "required: COMMAND"),
            (("connect", "localhost", "port"), "not a port number"),
            (("connect", "localhost", "70000"), "outside 1-65535"),
            (("certs", "d", "--days", "0"), "must be 1 or more"),
        ):
            out, err = io.StringIO(), io.StringIO()
            self.patch(sys, "stdout", out)
            self.patch(sys, "stderr", err)
            with self.assertRaises(SystemExit) as raised:
                main(list(args))
            self.assertEqual(raised.exception.code, 2)
            lines = err.getvalue().splitlines()
            self.assertEqual(len(lines), 1, lines)
            self.assertIn(expected, lines[0])
            self.assertIn("--help", lines[0])


class CertsTests(SynchronousTestCase):
    """
    C{tcpsc certs DIR}.
    """

    def certs(self, *args: str) -> tuple[int, str, str]:
        """
        Run C{tcpsc certs ARGS} in this process.
        """
        out, err = io.StringIO(), io.StringIO()
        patches = [self.patch(sys, "stdout", out), self.patch(sys, "stderr", err)]
        try:
            with self.assertRaises(SystemExit) as raised:
                main(["certs", *args])
        finally:
            for patch in patches:
                patch.restore()
        return raised.exception.code, out.getvalue(), err.getvalue()  # type: ignore[return-value]

    def load(self, path: Path) -> x509.Certificate:
        return x509.load_pem_x509_certificate(path.read_bytes())

    def test_defaultSet(self) -> None:
        """
        A CA, a server certificate for localhost, 127.0.0.1 and ::1, and one
        client certificate; EC P-256 keys of mode 0600; the paths printed.
        """
        directory = Path(self.mktemp()) / "certs"
        status, out, err = self.certs(str(directory))
        self.assertEqual((status, err), (0, ""))
        names = sorted(p.name for p in directory.iterdir())
        self.assertEqual(
            names, ["ca.key", "ca.pem", "client.key", "client.pem", "server.key", "server.pem"]
        )
        for name in names:
            self.assertIn(str(directory / name), out)
        for key in ("ca.key", "server.key", "client.key"):
            self.assertEqual(stat.S_IMODE((directory / key).stat().st_mode), 0o600, key)
        server = self.load(directory / "server.pem")
        sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual([str(n.value) for n in sans], ["localhost", "127.0.0.1", "::1"])
        self.assertIsInstance(server.public_key(), ec.EllipticCurvePublicKey)
        self.assertEqual(server.public_key().curve.name, "secp256r1")
        client = self.load(directory / "client.pem")
        self.assertEqual(
            client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, "client"
        )
        # The files work with tcpsc itself.
        TLSConfig(
            ca=str(directory / "ca.pem"),
            cert=str(directory / "server.pem"),
            key=str(directory / "server.key"),
        ).serverOptions()

    def test_opensslVerifies(self) -> None:
        """
        C{openssl verify} accepts the server certificate (for TLS servers)
        and the client certificates (for TLS clients).
        """
        if OPENSSL is None:
            raise self.skipTest("openssl is not installed")
        directory = Path(self.mktemp())
        status, _, _ = self.certs(str(directory), "--client", "alice", "--client", "bob")
        self.assertEqual(status, 0)
        for purpose, name in (
            ("sslserver", "server"),
            ("sslclient", "alice"),
            ("sslclient", "bob"),
        ):
            result = subprocess.run(
                [
                    OPENSSL,
                    "verify",
                    "-purpose",
                    purpose,
                    "-CAfile",
                    str(directory / "ca.pem"),
                    str(directory / f"{name}.pem"),
                ],
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn(": OK", result.stdout)
        # And it rejects a certificate from another CA, so the check is real.
        result = subprocess.run(
            [
                OPENSSL,
                "verify",
                "-CAfile",
                str(directory / "ca.pem"),
                certificates().path("other-client.pem"),
            ],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        self.assertNotEqual(result.returncode, 0)

    def test_options(self) -> None:
        """
        C{--host} adds names to the server certificate, C{--client} names the
        client certificates, C{--subject} sets the shared fields, C{--days}
        the validity.
        """
        directory = Path(self.mktemp())
        status, _, err = self.certs(
            str(directory),
            "--host",
            "example.org",
            "--host",
            "10.0.0.1",
            "--client",
            "alice",
            "--client",
            "bob",
            "--subject",
            "C=DE,ST=Bavaria,L=Munich,O=Example",
            "--days",
            "10",
        )
        self.assertEqual((status, err), (0, ""))
        server = self.load(directory / "server.pem")
        sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(
            [str(n.value) for n in sans],
            ["localhost", "127.0.0.1", "::1", "example.org", "10.0.0.1"],
        )
        self.assertFalse((directory / "client.pem").exists())
        for name in ("alice", "bob"):
            subject = self.load(directory / f"{name}.pem").subject
            self.assertEqual(subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, name)
            self.assertEqual(
                subject.get_attributes_for_oid(NameOID.LOCALITY_NAME)[0].value, "Munich"
            )
            self.assertEqual(subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value, "DE")
        lifetime = server.not_valid_after_utc - datetime.now(UTC)
        self.assertTrue(timedelta(days=9) < lifetime <= timedelta(days=10), lifetime)

    def test_rsa(self) -> None:
        """
        C{--rsa} makes RSA 3072 keys.
        """
        directory = Path(self.mktemp())
        status, _, _ = self.certs(str(directory), "--rsa")
        self.assertEqual(status, 0)
        key = self.load(directory / "server.pem").public_key()
        self.assertIsInstance(key, rsa.RSAPublicKey)
        self.assertEqual(key.key_size, 3072)

    def test_refusesToOverwrite(self) -> None:
        """
        Existing files are not overwritten: exit 1 with one line naming the
        file and C{--force}; C{--force} replaces them.
        """
        directory = Path(self.mktemp())
        self.assertEqual(self.certs(str(directory))[0], 0)
        before = (directory / "ca.key").read_bytes()
        result = tcpsc("certs", str(directory))
        self.assertEqual(result.returncode, 1)
        lines = result.stderr.splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn("ca.pem exists already", lines[0])
        self.assertIn("--force", lines[0])
        self.assertTrue(lines[0].startswith("tcpsc certs: "))
        self.assertEqual((directory / "ca.key").read_bytes(), before)
        self.assertEqual(self.certs(str(directory), "--force")[0], 0)
        self.assertNotEqual((directory / "ca.key").read_bytes(), before)
        self.assertEqual(stat.S_IMODE((directory / "ca.key").stat().st_mode), 0o600)

    def test_errorsAreOneLine(self) -> None:
        """
        Invalid subjects and client names are usage errors: one line, exit
        status 2, nothing written; an unwritable directory is one line, exit
        status 1.
        """
        blocker = Path(self.mktemp())
        blocker.write_text("a file")
        for args, expected in (
            (("--subject", "XX=1"), "argument --subject: unknown subject key 'XX'"),
            (("--client", "server"), "reserved"),
            (("--client", "a/b"), "path separator"),
        ):
            directory = Path(self.mktemp())
            status, _, err = self.certs(str(directory), *args)
            self.assertEqual(status, 2)
            lines = err.splitlines()
            self.assertEqual(len(lines), 1, err)
            self.assertIn(expected, lines[0])
            self.assertTrue(lines[0].startswith("tcpsc certs: error: "), lines[0])
            self.assertFalse(directory.exists())
        status, _, err = self.certs(str(blocker / "sub"))
        self.assertEqual(status, 1)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("cannot write", err)


class _Command(ProcessProtocol):
    """
    A spawned C{tcpsc} command: its output, and its exit status once it
    exited.
    """

    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.exited = False
        self.exitCode: int | None = None
        self.signal: int | None = None
        self._waiters: list[Deferred[int | None]] = []

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.exited = True
        self.exitCode = reason.value.exitCode
        self.signal = reason.value.signal
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(self.exitCode)

    def ended(self, timeout: float = TIMEOUT) -> Deferred[int | None]:
        """
        Fires with the exit status once the command exited; fails after
        C{timeout} seconds.
        """
        if self.exited:
            return succeed(self.exitCode)
        waiter: Deferred[int | None] = Deferred()
        self._waiters.append(waiter)
        return waiter.addTimeout(timeout, reactor)


class _CommandTestCase(TestCase):
    """
    Helpers for C{tcpsc} commands spawned against servers in this process.
    """

    async def echoServer(
        self, tls: TLSConfig | None = None, **kwargs
    ) -> tuple[Server, list[bytes], int]:
        received: list[bytes] = []
        server: Server

        def onMessage(clientId: int, message: bytes) -> None:
            received.append(message)
            server.send(clientId, message)

        server = Server(onMessage=onMessage, **kwargs)
        self.addCleanup(server.stop)
        port = await server.listen(0, "127.0.0.1", tls=tls)
        return server, received, port.getHost().port

    def spawn(self, *args: str, subcommand: str = "connect", stdin: int | None = None) -> _Command:
        """
        Start C{tcpsc SUBCOMMAND ARGS}; its standard input is a pipe, or the
        file descriptor C{stdin} (the slave side of a terminal).
        """
        command = _Command()
        fds: dict[int, int | str] | None = None
        if stdin is not None:
            fds = {0: stdin, 1: "r", 2: "r"}
        transport = reactor.spawnProcess(
            command,
            sys.executable,
            [sys.executable, "-m", "tcpsc", subcommand, *args],
            env=_environment(),
            childFDs=fds,
        )
        command.transport = transport

        async def reap() -> None:
            if not command.exited:
                transport.signalProcess("KILL")
                await command.ended()

        self.addCleanup(lambda: ensureDeferred(reap()))
        return command

    def assertOneLine(self, command: _Command, *expected: str) -> None:
        lines = command.err.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("tcpsc connect: "), lines[0])
        self.assertNotIn("Traceback", lines[0])
        for text in expected:
            self.assertIn(text, lines[0])


class ConnectTests(_CommandTestCase):
    """
    C{tcpsc connect} against a server in this process.
    """

    @asyncTest
    async def test_echoThroughPipes(self) -> None:
        """
        Each input line is one message, each message received one output
        line; a last line without a newline is sent too; at the end of the
        input the replies still arrive, then the command exits 0.
        """
        _, received, port = await self.echoServer()
        command = self.spawn("127.0.0.1", str(port))
        command.transport.write("hello\nwörld\r\n\nlast".encode())
        command.transport.closeStdin()
        status = await command.ended()
        self.assertEqual(status, 0, command.err)
        self.assertEqual(received, [b"hello", "wörld".encode(), b"", b"last"])
        self.assertEqual(bytes(command.out), "hello\nwörld\n\nlast\n".encode())
        self.assertEqual(bytes(command.err), b"")

    @asyncTest
    async def test_lateRepliesAfterEndOfInput(self) -> None:
        """
        At the end of the input the command waits until the server has been
        quiet for C{--wait} seconds, so replies that come a little later are
        still printed.
        """
        server: Server

        def onMessage(clientId: int, message: bytes) -> None:
            for delay in (0.2, 0.4):
                reactor.callLater(delay, server.send, clientId, b"%s %.1f" % (message, delay))

        server = Server(onMessage=onMessage)
        self.addCleanup(server.stop)
        port = (await server.listen(0, "127.0.0.1")).getHost().port
        # The default --wait, one second.
        command = self.spawn("127.0.0.1", str(port))
        command.transport.write(b"ping\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertEqual(bytes(command.out), b"ping 0.2\nping 0.4\n")

    @asyncTest
    async def test_waitZero(self) -> None:
        """
        With C{--wait 0} the command exits as soon as its input is sent, and
        everything sent reaches the server.
        """
        _, received, port = await self.echoServer()
        command = self.spawn("127.0.0.1", str(port), "--wait", "0")
        lines = [b"line %d" % i for i in range(200)]
        command.transport.write(b"\n".join(lines) + b"\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        await waitFor(lambda: len(received) == len(lines))
        self.assertEqual(received, lines)

    @asyncTest
    async def test_delimiter(self) -> None:
        """
        C{--delimiter} (with escapes) frames the messages sent; a line
        containing the delimiter is not sent and said so.
        """
        _, received, port = await self.echoServer(delimiter=b"\x1e")
        command = self.spawn("127.0.0.1", str(port), "--delimiter", "\\x1e")
        command.transport.write(b"a b\nc\x1ed\nlast\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertEqual(received, [b"a b", b"last"])
        self.assertEqual(bytes(command.out), b"a b\nlast\n")
        self.assertOneLine(command, "contains the delimiter")

    @asyncTest
    async def test_tls(self) -> None:
        """
        With C{--tls} and a client certificate, messages go over TLS 1.3 and
        the server sees the client's certificate.
        """
        files = certificates()
        server, received, port = await self.echoServer(
            tls=TLSConfig(ca=files.ca, cert=files.server, key=files.serverKey)
        )
        names: list[str | None] = []
        server.onEstablished = lambda i: names.append(server.clientSubjectPart(i, "CN"))
        command = self.spawn(
            "localhost",
            str(port),
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            files.client,
            "--key",
            files.clientKey,
        )
        command.transport.write(b"secret\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertEqual(bytes(command.out), b"secret\n")
        self.assertEqual(received, [b"secret"])
        self.assertEqual(names, ["client"])

    @asyncTest
    async def test_clientCertificateRejected(self) -> None:
        """
        Without a client certificate, against a server that requires one:
        exit 1 with one line, the original's code 60.
        """
        files = certificates()
        _, received, port = await self.echoServer(
            tls=TLSConfig(ca=files.ca, cert=files.server, key=files.serverKey)
        )
        command = self.spawn("localhost", str(port), "--tls", "--ca", files.ca)
        command.transport.write(b"secret\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 1)
        self.assertOneLine(command, "rejected this client's certificate", "(code 60)")
        self.assertEqual(bytes(command.out), b"")
        self.assertEqual(received, [])

    @asyncTest
    async def test_serverCertificateRejected(self) -> None:
        """
        A server certificate from another CA: exit 1 with one line, code 60.
        """
        files = certificates()
        _, _, port = await self.echoServer(
            tls=TLSConfig(ca=files.ca, cert=files.server, key=files.serverKey)
        )
        command = self.spawn(
            "localhost",
            str(port),
            "--tls",
            "--ca",
            files.path("other-ca.pem"),
            "--cert",
            files.client,
            "--key",
            files.clientKey,
        )
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 1)
        self.assertOneLine(command, "server's certificate", "(code 60)")

    @asyncTest
    async def test_serverCertificateWithoutSubjectAltName(self) -> None:
        """
        A server certificate of the right CA without any subjectAltName:
        nothing is sent, exit 1 with one line saying why and what to do.
        """
        files = certificates()
        _, received, port = await self.echoServer(
            tls=TLSConfig(
                ca=files.ca,
                cert=files.path("nosan-wronghost.pem"),
                key=files.path("nosan-wronghost.key"),
            )
        )
        command = self.spawn(
            "localhost",
            str(port),
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            files.client,
            "--key",
            files.clientKey,
        )
        command.transport.write(b"secret\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 1)
        self.assertOneLine(command, "no subjectAltName", "'localhost'", "(code 60)")
        self.assertEqual(bytes(command.out), b"")
        self.assertEqual(received, [])

    @asyncTest
    async def test_certificateFileProblem(self) -> None:
        """
        A missing certificate file: exit 1 with one line naming it and the
        code 31, before connecting anywhere.
        """
        files = certificates()
        command = self.spawn(
            "localhost",
            "1",
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            "/nonexistent/client.pem",
            "--key",
            files.clientKey,
        )
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 1)
        self.assertOneLine(command, "/nonexistent/client.pem", "(code 31)")

    @asyncTest
    async def test_refused(self) -> None:
        """
        Nobody listening: exit 1 with one line, the original's code 50.
        """
        # A bound socket that does not listen: connections are refused.
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        command = self.spawn("127.0.0.1", str(port))
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 1)
        self.assertOneLine(command, "refused", "(code 50)")

    @asyncTest
    async def test_serverCloses(self) -> None:
        """
        When the server closes the connection, the command exits 0 without
        waiting for its input to end.
        """
        server: Server

        def onMessage(clientId: int, message: bytes) -> None:
            server.send(clientId, b"bye")
            server.disconnect(clientId)

        server = Server(onMessage=onMessage)
        self.addCleanup(server.stop)
        port = (await server.listen(0, "127.0.0.1")).getHost().port
        command = self.spawn("127.0.0.1", str(port))
        command.transport.write(b"hi\n")
        # Standard input stays open.
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertEqual(bytes(command.out), b"bye\n")

    @asyncTest
    async def test_reconnect(self) -> None:
        """
        With C{--reconnect}, a lost connection is made again, says so on
        standard error, and input goes to the new connection.
        """
        server: Server
        received: list[bytes] = []
        connections: list[int] = []

        def onMessage(clientId: int, message: bytes) -> None:
            received.append(message)
            if message == b"drop":
                server.disconnect(clientId)
            else:
                server.send(clientId, message)

        server = Server(onMessage=onMessage, onEstablished=connections.append)
        self.addCleanup(server.stop)
        port = (await server.listen(0, "127.0.0.1")).getHost().port
        command = self.spawn("127.0.0.1", str(port), "--reconnect")
        command.transport.write(b"drop\n")
        # Lines read while it is not connected are dropped: wait until it
        # says it is connected again.
        await waitFor(lambda: b"reconnected" in command.err, timeout=TIMEOUT)
        self.assertEqual(len(connections), 2)
        command.transport.write(b"again\n")
        await waitFor(lambda: bytes(command.out) == b"again\n", timeout=TIMEOUT)
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertIn(b"reconnecting", bytes(command.err))
        self.assertEqual(received, [b"drop", b"again"])

    def test_tlsOptionsNeedTLS(self) -> None:
        """
        C{--ca}, C{--cert} and C{--key} without C{--tls} are a usage error,
        not silently plain TCP.
        """
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as raised:
            main(["connect", "localhost", "8081", "--cert", "c.pem", "--key", "c.key"])
        self.assertEqual(raised.exception.code, 2)
        self.assertEqual(
            err.getvalue(),
            "tcpsc connect: error: --ca, --cert and --key apply only with --tls "
            "(see tcpsc connect --help)\n",
        )


def _clientHelloStarted(listener: socket.socket, accepted: list[socket.socket]) -> bool:
    """
    Accept the pending connection on C{listener} (non-blocking) and tell
    whether the first bytes of a TLS ClientHello have arrived on it: the
    client is in its handshake, which this peer never answers.
    """
    if not accepted:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return False
        connection.setblocking(False)
        accepted.append(connection)
    try:
        return accepted[0].recv(5, socket.MSG_PEEK)[:2] == b"\x16\x03"
    except BlockingIOError:
        return False


class ConnectFailureTests(_CommandTestCase):
    """
    C{tcpsc connect} when the server refuses, does not answer, or the
    command is stopped: exit status 1 with one line saying why, or the
    signal's status, never a silent 0 or a traceback.
    """

    def silentListener(self) -> tuple[socket.socket, int, list[socket.socket]]:
        """
        A listening socket that is not tcpsc and never answers anything.
        """
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        self.addCleanup(listener.close)
        accepted: list[socket.socket] = []
        self.addCleanup(lambda: [c.close() for c in accepted])
        return listener, listener.getsockname()[1], accepted

    async def tlsServer(self) -> tuple[Server, list[bytes], int]:
        files = certificates()
        return await self.echoServer(
            tls=TLSConfig(ca=files.ca, cert=files.server, key=files.serverKey)
        )

    @asyncTest
    async def test_plainClientAgainstTLSPortInAPipe(self) -> None:
        """
        A plain client whose line the TLS server cannot read: exit 1 with a
        hint at --tls, where it used to print nothing and exit 0.
        """
        _, received, port = await self.tlsServer()
        command = self.spawn("localhost", str(port))
        command.transport.write(b"plain\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 1, command.err)
        self.assertOneLine(
            command, "the server closed the connection before answering; does it require --tls?"
        )
        self.assertEqual(bytes(command.out), b"")
        self.assertEqual(received, [])
        self.flushLoggedErrors()

    @asyncTest
    async def test_plainClientAgainstTLSPortAtATerminal(self) -> None:
        """
        The same typed at a terminal: exit 1 with the hint, after the
        greeting.
        """
        _, received, port = await self.tlsServer()
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)
        try:
            command = self.spawn("localhost", str(port), stdin=slave)
        finally:
            os.close(slave)
        await waitFor(lambda: b"type messages" in command.err, timeout=TIMEOUT)
        os.write(master, b"plain\n")
        self.assertEqual(await command.ended(), 1, command.err)
        lines = command.err.decode().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("connected to localhost:", lines[0])
        self.assertEqual(
            lines[1],
            "tcpsc connect: the server closed the connection "
            "before answering; does it require --tls?",
        )
        self.assertEqual(received, [])

    @asyncTest
    async def test_tlsClientAgainstPlainPort(self) -> None:
        """
        A TLS client against a plain tcpsc port: the server logs it and
        answers with bytes that are not TLS, so the command says at once
        that the server does not speak TLS (it does not wait for a
        handshake timeout: --connect-timeout is far longer than the test's
        bound), exit 1.
        """
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        _, received, port = await self.echoServer()
        files = certificates()
        command = self.spawn(
            "localhost",
            str(port),
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            files.client,
            "--key",
            files.clientKey,
            "--connect-timeout",
            "3600",
        )
        command.transport.write(b"secret\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 1, command.err)
        self.assertOneLine(command, "the server does not speak TLS", "(code 60)")
        self.assertEqual(received, [])
        refusals = [e for e in events if e.get("reason") == "tlsClientOnPlainPort"]
        self.assertEqual(len(refusals), 1, events)
        self.assertIn("a TLS client connected to a plain port", formatEvent(refusals[0]))

    @asyncTest
    async def test_refusedByConnectionLimit(self) -> None:
        """
        A client the server refuses for its --max-connections: the line is
        not delivered, and the command says so and exits 1.
        """
        _, received, port = await self.echoServer(maxConnections=1)
        holder = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(holder.close)
        holder.sendall(b"held\n")
        await waitFor(lambda: received == [b"held"])
        command = self.spawn("127.0.0.1", str(port))
        command.transport.write(b"lost\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 1, command.err)
        self.assertOneLine(command, "the server closed the connection before")
        self.assertEqual(received, [b"held"])

    @asyncTest
    async def test_refusedByConnectionLimitPerPeer(self) -> None:
        """
        The same for --max-connections-per-peer, with standard input still
        open: the command does not wait for it to end.
        """
        _, received, port = await self.echoServer(maxConnectionsPerPeer=1)
        holder = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(holder.close)
        holder.sendall(b"held\n")
        await waitFor(lambda: received == [b"held"])
        command = self.spawn("127.0.0.1", str(port))
        command.transport.write(b"lost\n")
        self.assertEqual(await command.ended(), 1, command.err)
        self.assertOneLine(command, "the server closed the connection before")
        self.assertEqual(received, [b"held"])

    @asyncTest
    async def test_connectTimeout(self) -> None:
        """
        C{--connect-timeout} bounds the TLS handshake with a server that
        never answers: exit 1, naming the bound.
        """
        _, port, _ = self.silentListener()
        files = certificates()
        command = self.spawn(
            "localhost", str(port), "--tls", "--ca", files.ca, "--connect-timeout", "0.5"
        )
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 1, command.err)
        self.assertOneLine(command, "TLS handshake", "timed out after 0.5 s", "(code 50)")

    async def signalDuringHandshake(self, name: str) -> _Command:
        listener, port, accepted = self.silentListener()
        files = certificates()
        command = self.spawn("localhost", str(port), "--tls", "--ca", files.ca)
        await waitFor(
            lambda: _clientHelloStarted(listener, accepted),
            timeout=TIMEOUT,
            what="the command's TLS ClientHello at the silent listener",
        )
        command.transport.signalProcess(name)
        await command.ended()
        self.assertNotIn(b"Traceback", bytes(command.err))
        self.assertNotIn(b"Unhandled", bytes(command.err))
        self.assertEqual(bytes(command.err), b"")
        return command

    @asyncTest
    async def test_sigtermDuringHandshake(self) -> None:
        """
        SIGTERM while the TLS handshake is under way: no cause, no
        traceback; the command dies of the signal, as twistd does.
        """
        command = await self.signalDuringHandshake("TERM")
        self.assertEqual((command.exitCode, command.signal), (None, signal.SIGTERM))

    @asyncTest
    async def test_sigintDuringHandshake(self) -> None:
        """
        Ctrl-C (SIGINT) while the TLS handshake is under way: exit 130,
        nothing on standard error.
        """
        command = await self.signalDuringHandshake("INT")
        self.assertEqual(command.exitCode, 130)

    @asyncTest
    async def test_reconnectInterrupted(self) -> None:
        """
        Ctrl-C with C{--reconnect}: exit 130 without a word of reconnecting.
        """
        _, _, port = await self.echoServer()
        command = self.spawn("127.0.0.1", str(port), "--reconnect", "--verbose")
        command.transport.write(b"ping\n")
        await waitFor(lambda: bytes(command.out) == b"ping\n", timeout=TIMEOUT)
        command.transport.signalProcess("INT")
        self.assertEqual(await command.ended(), 130, command.err)
        self.assertNotIn(b"econnect", bytes(command.err))
        self.assertNotIn(b"Traceback", bytes(command.err))


class ConnectEndpointTests(_CommandTestCase):
    """
    C{tcpsc connect} given a client endpoint description instead of HOST
    PORT, and the delimiter's grammar.
    """

    def unixPath(self) -> str:
        # A short directory: a UNIX socket's path has a small limit.
        directory = tempfile.mkdtemp(prefix="tcpsc-")
        self.addCleanup(shutil.rmtree, directory, True)
        return os.path.join(directory, "s")

    @asyncTest
    async def test_unixSocket(self) -> None:
        """
        C{unix:PATH} reaches a server listening on a UNIX socket.
        """
        received: list[bytes] = []
        server: Server

        def onMessage(clientId: int, message: bytes) -> None:
            received.append(message)
            server.send(clientId, message)

        path = self.unixPath()
        server = Server(onMessage=onMessage)
        self.addCleanup(server.stop)
        await server.listen(f"unix:{path}")
        command = self.spawn(f"unix:{path}")
        command.transport.write(b"over unix\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertEqual(bytes(command.out), b"over unix\n")
        self.assertEqual(received, [b"over unix"])

    @asyncTest
    async def test_unixSocketTLS(self) -> None:
        """
        Over TLS to a UNIX socket the server's certificate is checked for
        localhost.
        """
        files = certificates()
        path = self.unixPath()
        received: list[bytes] = []
        server = Server(onMessage=lambda i, m: received.append(m))
        self.addCleanup(server.stop)
        await server.listen(
            f"unix:{path}", tls=TLSConfig(ca=files.ca, cert=files.server, key=files.serverKey)
        )
        command = self.spawn(
            f"unix:{path}",
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            files.client,
            "--key",
            files.clientKey,
        )
        command.transport.write(b"sealed\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertEqual(received, [b"sealed"])
        # A certificate for another name is refused.
        other = self.unixPath()
        wrong = Server()
        self.addCleanup(wrong.stop)
        await wrong.listen(
            f"unix:{other}",
            tls=TLSConfig(
                ca=files.ca, cert=files.path("wronghost.pem"), key=files.path("wronghost.key")
            ),
        )
        command = self.spawn(
            f"unix:{other}",
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            files.client,
            "--key",
            files.clientKey,
        )
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 1, command.err)
        self.assertOneLine(command, "localhost", "(code 60)")
        self.flushLoggedErrors()

    @asyncTest
    async def test_unixSocketMissing(self) -> None:
        """
        No socket at the path: exit 1, one line naming it.
        """
        path = self.unixPath()
        command = self.spawn(f"unix:{path}")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 1, command.err)
        self.assertOneLine(command, f"unix:{path}", "No such file or directory")

    @asyncTest
    async def test_unixSocketNobodyListens(self) -> None:
        """
        A socket file that nothing listens on: exit 1, one line saying the
        connection was refused.
        """
        path = self.unixPath()
        bound = socket.socket(socket.AF_UNIX)
        self.addCleanup(bound.close)
        bound.bind(path)
        command = self.spawn(f"unix:{path}")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 1, command.err)
        self.assertEqual(
            command.err.decode(),
            f"tcpsc connect: connection to unix:{path} refused: no server is listening (code 50)\n",
        )

    @asyncTest
    async def test_tcpDescription(self) -> None:
        """
        C{tcp:HOST:PORT} is the same as C{HOST PORT}, with TLS too.
        """
        files = certificates()
        _, received, port = await self.echoServer(
            tls=TLSConfig(ca=files.ca, cert=files.server, key=files.serverKey)
        )
        command = self.spawn(
            f"tcp:localhost:{port}",
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            files.client,
            "--key",
            files.clientKey,
        )
        command.transport.write(b"described\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertEqual(received, [b"described"])

    @asyncTest
    async def test_digitsAreText(self) -> None:
        """
        C{-d 10} is the two bytes C{10}, as for the daemon and C{tcpsc
        bench}: not a newline.
        """
        _, received, port = await self.echoServer(delimiter=b"10")
        command = self.spawn("127.0.0.1", str(port), "-d", "10")
        command.transport.write(b"a\nb\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertEqual(received, [b"a", b"b"])


class DaemonTests(SynchronousTestCase):
    """
    C{tcpsc connect} against the real daemon, C{twistd -n tcpsc}.
    """

    def test_tlsClientAgainstPlainDaemon(self) -> None:
        """
        The daemon's plain port logs a TLS client and closes its
        connection; the command says the server does not speak TLS.
        """
        from .test_daemon import LOCAL, Daemon

        daemon = Daemon(self, "--port", LOCAL)
        port = daemon.port()
        files = certificates()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tcpsc",
                "connect",
                "localhost",
                str(port),
                "--tls",
                "--ca",
                files.ca,
                "--cert",
                files.client,
                "--key",
                files.clientKey,
                "--connect-timeout",
                "3600",
            ],
            capture_output=True,
            text=True,
            env=_environment(),
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("tcpsc connect: the server does not speak TLS", result.stderr)
        daemon.waitFor(
            r"Connection 1 from 127\.0\.0\.1:\d+: a TLS client connected to a "
            r"plain port; closing it"
        )

    def test_unixSocketDaemon(self) -> None:
        """
        C{tcpsc connect unix:PATH} and C{tcpsc bench echo unix:PATH} reach
        the daemon listening with C{--port unix:PATH}.
        """
        from .test_daemon import Daemon

        directory = tempfile.mkdtemp(prefix="tcpsc-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "s")
        daemon = Daemon(self, "--port", f"unix:{path}")
        daemon.waitFor("Listening on")
        result = subprocess.run(
            [sys.executable, "-m", "tcpsc", "connect", f"unix:{path}"],
            input="hello\n",
            capture_output=True,
            text=True,
            env=_environment(),
            timeout=TIMEOUT,
        )
        self.assertEqual((result.returncode, result.stdout), (0, "hello\n"), result.stderr)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tcpsc",
                "bench",
                "echo",
                f"unix:{path}",
                "-c",
                "2",
                "-m",
                "100",
                "-q",
                "10",
                "-T",
                "20",
            ],
            capture_output=True,
            text=True,
            env=_environment(),
            timeout=TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(f"Server socket: {path}", result.stdout)
        self.assertIn(" errors=0 messages=100 ", result.stdout)


class UsageErrorTests(SynchronousTestCase):
    """
    README: "Usage errors are one line and exit status 2", for every
    subcommand, the real command in a process.
    """

    def test_usageErrors(self) -> None:
        """
        Each usage error is one line on standard error naming the option or
        argument, exit status 2, and nothing on standard output.
        """
        cases = [
            (
                ("connect", "localhost", "8081", "-d", "\\q"),
                "tcpsc connect: error: argument -d/--delimiter: unknown escape \\q in \\q ",
            ),
            (("connect", "localhost", "8081", "-d", ""), "one or more bytes"),
            (
                ("connect", "localhost", "8081", "--cert", "c.pem", "--tls"),
                "--cert and --key go together",
            ),
            (
                ("connect", "localhost", "8081", "--cert", "c.pem", "--key", "c.key"),
                "--ca, --cert and --key apply only with --tls",
            ),
            (("connect", "localhost"), "PORT is missing"),
            (("connect", "tcp:localhost:8081", "8081"), "give it without a PORT"),
            (
                ("connect", "localhost", "8081", "--connect-timeout", "0"),
                "argument --connect-timeout: must be more than 0",
            ),
            (("connect", "localhost", "8081", "--wait", "x"), "argument --wait"),
            (
                ("bench", "echo", "localhost", "8081", "-d", "\\q"),
                "tcpsc bench echo: error: argument -d/--delimiter: unknown escape \\q",
            ),
            (
                ("bench", "echo", "localhost", "8081", "--cert", "c.pem", "--key", "k"),
                "--ca, --cert and --key apply only with --tls",
            ),
            (
                ("bench", "multicast", "localhost", "8081", "--tls", "--key", "k"),
                "--cert and --key go together",
            ),
            (
                ("bench", "echo", "localhost", "8081", "-c", "5", "-m", "2"),
                "-m must be at least -c",
            ),
            (
                ("bench", "connect", "localhost", "8081", "-n", "0"),
                "argument -n/--connections: must be at least 1",
            ),
            (("bench", "idle", "localhost", "8081", "--hold", "x"), "argument --hold"),
            (("bench", "echo", "unix:"), "names no socket path"),
            (
                ("bench", "echo", "localhost", "8081", "-d", "\\r\\n", "-s", "1"),
                "-s includes the delimiter",
            ),
            (
                ("certs", "d", "--subject", "O=x,CN=y"),
                "tcpsc certs: error: argument --subject: each certificate gets its own OU and CN",
            ),
            (("certs", "d", "--client", "ca"), "reserved"),
            (("certs", "d", "--days", "0"), "argument --days"),
            (("bogus",), "invalid choice"),
        ]
        for args, expected in cases:
            result = tcpsc(*args)
            self.assertEqual(result.returncode, 2, (args, result.stderr))
            lines = result.stderr.splitlines()
            self.assertEqual(len(lines), 1, (args, lines))
            self.assertIn(expected, lines[0])
            self.assertIn("--help", lines[0])
            self.assertEqual(result.stdout, "")
        self.assertFalse(os.path.exists("d"))


class PublicNamesTests(SynchronousTestCase):
    """
    The command uses the library as any program may: through C{tcpsc} and
    its public modules, never a private module of the library.
    """

    #: The library's modules the command may import from.
    PUBLIC = ("tcpsc", "tcpsc.tap", "tcpsc.blocking", "tcpsc.testing")

    def test_onlyPublicImports(self) -> None:
        """
        Every import of C{tcpsc/_cli/} from tcpsc names a public module and,
        from it, only names in its C{__all__}; relative imports stay inside
        the package.
        """
        import ast
        import importlib

        import tcpsc._cli

        package = Path(tcpsc._cli.__file__).parent
        problems = []
        checked = 0
        for path in sorted(package.glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                where = f"{path.name}:{getattr(node, 'lineno', '?')}"
                if isinstance(node, ast.ImportFrom):
                    if node.level:
                        if node.level > 1:
                            problems.append(f"{where}: relative import out of tcpsc._cli")
                        continue
                    module = node.module or ""
                    if module.split(".")[0] != "tcpsc":
                        continue
                    checked += 1
                    if module not in self.PUBLIC:
                        problems.append(f"{where}: from {module}")
                        continue
                    exported = importlib.import_module(module).__all__
                    problems += [
                        f"{where}: {alias.name} is not in {module}.__all__"
                        for alias in node.names
                        if alias.name not in exported
                    ]
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.split(".")[0] == "tcpsc":
                            checked += 1
                            if alias.name not in self.PUBLIC:
                                problems.append(f"{where}: import {alias.name}")
        self.assertGreater(checked, 4)
        self.assertEqual(problems, [])


class TargetTests(SynchronousTestCase):
    """
    L{parseTarget}: C{HOST PORT}, or one client endpoint description.
    """

    def test_forms(self) -> None:
        """
        Host and port, C{tcp:HOST:PORT} with IPv6 in brackets or with
        escaped colons, and C{unix:PATH}.
        """
        cases = {
            ("localhost", "8081"): Target("localhost", 8081),
            ("::1", "8081"): Target("::1", 8081),
            ("tcp:localhost:8081", None): Target("localhost", 8081),
            ("tcp:[::1]:8081", None): Target("::1", 8081),
            ("tcp:\\:\\:1:8081", None): Target("::1", 8081),
            ("unix:/run/s", None): Target("localhost", None, "/run/s"),
            ("unix:path=/run/s", None): Target("localhost", None, "/run/s"),
        }
        for (host, port), expected in cases.items():
            self.assertEqual(parseTarget(host, port), expected, (host, port))
        self.assertEqual(str(Target("::1", 8081)), "[::1]:8081")
        self.assertEqual(str(Target("localhost", None, "/run/s")), "unix:/run/s")

    def test_errors(self) -> None:
        """
        Neither form, or both, is a usage error saying which.
        """
        for host, port, expected in (
            ("localhost", None, "PORT is missing"),
            ("tcp:localhost:8081", "8081", "without a PORT"),
            ("tcp:localhost", None, "is not tcp:HOST:PORT"),
            ("tcp:localhost:x", None, "not a port number"),
            ("localhost", "0", "outside 1-65535"),
            ("unix:", None, "no socket path"),
        ):
            with self.assertRaises(UsageError) as raised:
                parseTarget(host, port)
            self.assertIn(expected, str(raised.exception))
