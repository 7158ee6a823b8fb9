"""
Certificate rotation: L{tcpsc.Server.reloadCertificates}, a L{tcpsc.Client}
taking up rotated files at its next connection, the blocking
L{tcpsc.blocking.TlsServer.reloadCertificates}, and the daemon's SIGHUP.

Every test replaces real files on disk (as a rotation tool does: new files
written beside the old ones, then renamed over them) and makes real
handshakes on 127.0.0.1 before and after, with tcpsc's L{Client}, Python's
C{ssl} module and the real C{twistd} process.  Which certificate a
handshake got is told by its serial number, which is random per
certificate.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import time
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from twisted.internet import reactor
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpsc import CertificateLoadError, Client, MessageProtocol, Server, TLSConfig
from tcpsc import _certgen as certgen
from tcpsc.blocking import TlsServer
from tcpsc.tap import Options, makeService

from ._helpers import asyncTest, waitFor, within
from .test_daemon import LOCAL, TIMEOUT, Daemon, Peer, _until

HOSTS = ("localhost", "127.0.0.1")


@cache
def authority() -> certgen.Issued:
    """
    The CA of every certificate here (made once per test process).
    """
    return certgen.makeCA("O=tcpsc reload tests,CN=reload test CA")


def issue(
    commonName: str = "localhost",
    *,
    server: bool = True,
    notBefore: datetime | None = None,
    notAfter: datetime | None = None,
) -> certgen.Issued:
    """
    A new server (or client) certificate of L{authority}, with a new key.
    """
    if server:
        return certgen.issueCertificate(
            authority(),
            f"CN={commonName}",
            server=True,
            hosts=HOSTS,
            notBefore=notBefore,
            notAfter=notAfter,
        )
    return certgen.issueCertificate(
        authority(), f"CN={commonName}", client=True, notBefore=notBefore, notAfter=notAfter
    )


def expired() -> certgen.Issued:
    now = datetime.now(UTC)
    return issue(notBefore=now - timedelta(days=10), notAfter=now - timedelta(days=1))


def notYetValid() -> certgen.Issued:
    now = datetime.now(UTC)
    return issue(notBefore=now + timedelta(days=1), notAfter=now + timedelta(days=10))


class Files:
    """
    A directory holding C{ca.pem}, C{server.pem}/C{server.key},
    C{client.pem}/C{client.key} and the clients' copy of the CA
    (C{client-ca.pem}), whose certificates can be replaced.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True)
        self.directory = directory
        self.ca = str(directory / "ca.pem")
        Path(self.ca).write_bytes(authority().certificatePEM())
        # The clients' copy of the CA: the server's may be broken on purpose.
        self.clientCA = str(directory / "client-ca.pem")
        Path(self.clientCA).write_bytes(authority().certificatePEM())
        self.cert = str(directory / "server.pem")
        self.key = str(directory / "server.key")
        self.clientCert = str(directory / "client.pem")
        self.clientKey = str(directory / "client.key")
        self.serverSerial = self.install(issue())
        self.clientSerial = self.install(issue("client", server=False), client=True)

    def install(self, issued: certgen.Issued, client: bool = False, keyToo: bool = True) -> int:
        """
        Replace the certificate (and, with C{keyToo}, the key) with
        C{issued}'s: written beside them, then renamed over them.

        @return: the serial number of the certificate installed.
        """
        cert, key = (self.clientCert, self.clientKey) if client else (self.cert, self.key)
        staging = self.directory / "staging"
        staging.mkdir(exist_ok=True)
        issued.writeTo(staging / "new.pem", staging / "new.key", overwrite=True)
        if keyToo:
            os.replace(staging / "new.key", key)
        os.replace(staging / "new.pem", cert)
        return issued.certificate.serial_number

    def serverTLS(self) -> TLSConfig:
        return TLSConfig(ca=self.ca, cert=self.cert, key=self.key)

    def clientTLS(self) -> TLSConfig:
        return TLSConfig(ca=self.clientCA, cert=self.clientCert, key=self.clientKey)

    def sslContext(self) -> ssl.SSLContext:
        """
        A Python C{ssl} client context: TLS 1.3, this CA, the client
        certificate.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_verify_locations(self.clientCA)
        context.load_cert_chain(self.clientCert, self.clientKey)
        return context


class Echo(MessageProtocol):
    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(message)


def messages(events: list[dict[str, Any]], level: LogLevel) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_level") == level]


class ServerReloadTests(TestCase):
    """
    L{Server.reloadCertificates} with tcpsc clients.
    """

    def setUp(self) -> None:
        self.files = Files(Path(self.mktemp()))

    async def listen(self, server: Server, tls: TLSConfig) -> int:
        port = await within(server.listen(0, "127.0.0.1", tls=tls))
        return port.getHost().port

    async def startServer(self) -> tuple[Server, int]:
        server = Server(Echo)
        self.addCleanup(server.stop)
        return server, await self.listen(server, self.files.serverTLS())

    async def connect(self, port: int, **kwargs: Any) -> tuple[Client, list[bytes]]:
        received: list[bytes] = []
        client = Client(onMessage=received.append, **kwargs)
        self.addCleanup(client.disconnect)
        await within(client.connect("127.0.0.1", port, tls=self.files.clientTLS()))
        return client, received

    async def roundTrip(self, client: Client, received: list[bytes], message: bytes) -> None:
        self.assertTrue(client.send(message))
        await waitFor(lambda: message in received)

    async def serialOfNewHandshake(self, port: int) -> int:
        """
        Connect a new client and return the serial of the server
        certificate its handshake got; the connection is closed again.
        """
        client, received = await self.connect(port)
        await self.roundTrip(client, received, b"new")
        certificate = client.serverCertificate()
        assert certificate is not None
        await within(client.disconnect())
        return certificate.serial_number

    @asyncTest
    async def test_reload(self) -> None:
        """
        After the certificate and key are replaced on disk and
        C{reloadCertificates()} is called, a new handshake gets the new
        certificate, while a connection established before goes on, with
        the certificate it started with; the reload is logged with the file.
        """
        files = self.files
        server, port = await self.startServer()
        before, received = await self.connect(port)
        await self.roundTrip(before, received, b"before")
        first = files.serverSerial
        self.assertEqual(before.serverCertificate().serial_number, first)  # type: ignore[union-attr]

        second = files.install(issue())
        self.assertNotEqual(first, second)
        # Without a reload, the files on disk are not looked at.
        self.assertEqual(await self.serialOfNewHandshake(port), first)
        with capturedLogs() as events:
            self.assertEqual(server.reloadCertificates(), 1)
        [line] = messages(events, LogLevel.info)
        self.assertIn(f"127.0.0.1:{port} from {files.cert}", line)
        self.assertIn(f"serial {second:x}", line)

        self.assertEqual(await self.serialOfNewHandshake(port), second)
        self.assertTrue(before.isConnected)
        await self.roundTrip(before, received, b"after")
        self.assertEqual(before.serverCertificate().serial_number, first)  # type: ignore[union-attr]
        self.assertEqual(len(server.clientIds()), 1)

    @asyncTest
    async def test_reloadTwice(self) -> None:
        """
        A context that has served handshakes is never changed (pyOpenSSL
        refuses): each reload builds a new one, so reloading again, after
        handshakes with the reloaded certificate, works as well.
        """
        files = self.files
        server, port = await self.startServer()
        for _ in range(2):
            await self.serialOfNewHandshake(port)
            serial = files.install(issue())
            self.assertEqual(server.reloadCertificates(), 1)
            self.assertEqual(await self.serialOfNewHandshake(port), serial)

    @asyncTest
    async def test_failedReloadKeepsCertificates(self) -> None:
        """
        A reload that cannot use the files (certificate missing, a key that
        does not match it, an expired certificate, one not valid yet, a CA
        file that is not PEM) raises L{CertificateLoadError} with the
        original's code and the file, logs an error naming the file, and
        keeps the certificates in use: the next handshake still gets them,
        and an established connection goes on.
        """
        files = self.files
        server, port = await self.startServer()
        before, received = await self.connect(port)
        first = files.serverSerial
        caPEM = Path(files.ca).read_bytes()

        def missing() -> None:
            os.remove(files.cert)

        def mismatched() -> None:
            files.install(issue(), keyToo=False)

        def junkCA() -> None:
            Path(files.ca).write_text("not a certificate\n")

        cases = [
            ("missing certificate", missing, 31, files.cert, "cannot read"),
            ("key not matching", mismatched, 35, files.key, "does not match"),
            ("expired", lambda: files.install(expired()), 34, files.cert, "expired on"),
            (
                "not yet valid",
                lambda: files.install(notYetValid()),
                34,
                files.cert,
                "not valid before",
            ),
            ("CA not PEM", junkCA, 33, files.ca, "no valid PEM"),
        ]
        for name, breakFiles, code, path, words in cases:
            breakFiles()
            with capturedLogs() as events:
                error = self.assertRaises(CertificateLoadError, server.reloadCertificates)
            self.assertEqual((error.code, error.path), (code, path), name)
            self.assertIn(words, str(error), name)
            [line] = messages(events, LogLevel.error)
            self.assertIn("the certificates in use are kept", line, name)
            self.assertIn(path, line, name)
            self.assertEqual(await self.serialOfNewHandshake(port), first, name)
            await self.roundTrip(before, received, name.encode())
            # Back to working files for the next case.
            Path(files.ca).write_bytes(caPEM)
            files.install(issue())
        self.assertEqual(server.reloadCertificates(), 1)

    @asyncTest
    async def test_allOrNothing(self) -> None:
        """
        A server with two TLS ports, each with its own files: if one port's
        files are broken, neither port takes up new files.
        """
        files, other = self.files, Files(Path(self.mktemp()))
        server, port = await self.startServer()
        otherPort = await self.listen(server, other.serverTLS())
        first = files.serverSerial
        files.install(issue())
        other.install(expired())
        self.assertRaises(CertificateLoadError, server.reloadCertificates)
        self.assertEqual(await self.serialOfNewHandshake(port), first)
        second = other.install(issue())
        self.assertEqual(server.reloadCertificates(), 2)
        # The clients of this test trust either: one CA.
        self.assertEqual(await self.serialOfNewHandshake(otherPort), second)

    @asyncTest
    async def test_plainServer(self) -> None:
        """
        A server without TLS ports has nothing to reload: 0.
        """
        server = Server(Echo)
        self.addCleanup(server.stop)
        await within(server.listen(0, "127.0.0.1"))
        self.assertEqual(server.reloadCertificates(), 0)

    @asyncTest
    async def test_stoppedServer(self) -> None:
        """
        Once stopped, a server has no TLS ports left to reload.
        """
        server, _ = await self.startServer()
        await within(server.stop())
        self.assertEqual(server.reloadCertificates(), 0)


class ClientRotationTests(TestCase):
    """
    A L{Client} reads its TLS files at each connection: a reconnection
    uses rotated files, and falls back on the last ones if they cannot be
    used.
    """

    @asyncTest
    async def test_reconnectUsesNewFiles(self) -> None:
        files = Files(Path(self.mktemp()))
        established: list[int] = []
        server = Server(Echo, onEstablished=established.append)
        self.addCleanup(server.stop)
        port = await within(server.listen(0, "127.0.0.1", tls=files.serverTLS()))
        client = Client(reconnect=True, initialDelay=0.01, jitter=0.0)
        self.addCleanup(client.disconnect)
        await within(client.connect("127.0.0.1", port.getHost().port, tls=files.clientTLS()))

        def serialOf(clientId: int) -> int:
            certificate = server.clientCertificate(clientId)
            assert certificate is not None
            return certificate.serial_number

        async def reconnected() -> int:
            count = len(established)
            self.assertTrue(server.disconnect(established[-1]))
            await waitFor(lambda: len(established) > count and client.isConnected)
            return serialOf(established[-1])

        await waitFor(lambda: established, what="the server's onEstablished")
        self.assertEqual(serialOf(established[-1]), files.clientSerial)

        second = files.install(issue("client", server=False), client=True)
        self.assertEqual(await reconnected(), second)

        # A certificate whose key is not there: the last ones are used.
        files.install(issue("client", server=False), client=True, keyToo=False)
        with capturedLogs() as events:
            self.assertEqual(await reconnected(), second)
        [line] = messages(events, LogLevel.warn)
        self.assertIn("with the certificates used so far", line)
        self.assertIn(files.clientKey, line)


class ServiceSignalTests(TestCase):
    """
    The daemon's service run in this process: it handles SIGHUP while it
    runs, and gives SIGHUP its previous handler back when it stops.
    """

    @asyncTest
    async def test_handlerWhileRunning(self) -> None:
        files = Files(Path(self.mktemp()))
        previous = signal.getsignal(signal.SIGHUP)
        options = Options()
        options.parseOptions(
            ["--port", LOCAL, "--tls", "--ca", files.ca, "--cert", files.cert, "--key", files.key]
        )
        service = makeService(options, reactor=reactor)
        service.startService()
        self.addCleanup(lambda: service.stopService() if service.running else None)
        self.assertIsNot(signal.getsignal(signal.SIGHUP), previous)
        await within(service.whenListening())
        serial = files.install(issue())
        with capturedLogs() as events:
            os.kill(os.getpid(), signal.SIGHUP)
            await waitFor(lambda: any(f"serial {serial:x}" in formatEvent(e) for e in events))
        await within(service.stopService())
        self.assertIs(signal.getsignal(signal.SIGHUP), previous)


class BlockingReloadTests(SynchronousTestCase):
    """
    L{TlsServer.reloadCertificates}, with Python's C{ssl} as the peer.
    """

    def setUp(self) -> None:
        self.files = Files(Path(self.mktemp()))
        server = self.server = TlsServer(b"\n")
        server.setWorkOnMessage(lambda clientId, message: server.sendMsg(clientId, message))
        self.port = server.start(
            0, self.files.ca, self.files.cert, self.files.key, interface="127.0.0.1"
        )
        self.addCleanup(server.stop)

    def connect(self) -> tuple[ssl.SSLSocket, int]:
        return sslConnect(self, self.files, self.port)

    def test_reload(self) -> None:
        """
        A connection made before the reload keeps working after it; a new
        one gets the new certificate.
        """
        before, first = self.connect()
        self.assertEqual(echo(before, b"before"), b"before")
        second = self.files.install(issue())
        self.assertEqual(self.server.reloadCertificates(), 1)
        after, serial = self.connect()
        self.assertEqual((first, serial), (self.files.serverSerial, second))
        self.assertEqual(echo(after, b"after"), b"after")
        self.assertEqual(echo(before, b"still there"), b"still there")

    def test_failedReload(self) -> None:
        """
        An expired certificate is refused with code 34 and the old one kept.
        """
        self.files.install(expired())
        error = self.assertRaises(CertificateLoadError, self.server.reloadCertificates)
        self.assertEqual((error.code, error.path), (34, self.files.cert))
        after, serial = self.connect()
        self.assertEqual(serial, self.files.serverSerial)
        self.assertEqual(echo(after, b"old"), b"old")

    def test_notRunning(self) -> None:
        self.server.stop()
        self.assertEqual(self.server.reloadCertificates(), 0)


def sslConnect(test: SynchronousTestCase, files: Files, port: int) -> tuple[ssl.SSLSocket, int]:
    """
    A TLS 1.3 connection made with Python's C{ssl}, and the serial of the
    server certificate its handshake got.
    """
    raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    connection = files.sslContext().wrap_socket(raw, server_hostname="localhost")
    test.addCleanup(connection.close)
    der = connection.getpeercert(binary_form=True)
    assert der is not None
    return connection, x509.load_der_x509_certificate(der).serial_number


def echo(connection: ssl.SSLSocket, message: bytes) -> bytes:
    """
    Send one message and read the echo (a socket timeout fails the test).
    """
    connection.sendall(message + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed; got {data!r}")
        data += chunk
    return data[:-1]


def catchesSIGHUP(pid: int) -> bool:
    """
    Whether process C{pid} has a handler for SIGHUP (Linux: the SigCgt mask
    of C{/proc/PID/status}).
    """
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M).group(1), 16)  # type: ignore[union-attr]
    return bool(mask & (1 << (signal.SIGHUP - 1)))


class DaemonReloadTests(SynchronousTestCase):
    """
    The real C{twistd tcpsc} process and SIGHUP.
    """

    def setUp(self) -> None:
        if not Path("/proc/self/status").exists():
            raise self.skipTest("needs /proc to see the daemon's signal handlers")

    def waitForHandler(self, daemon: Daemon) -> None:
        pid = daemon.process.pid
        _until(
            lambda: daemon.process.poll() is None and catchesSIGHUP(pid),
            what="the daemon handling SIGHUP",
        )

    def test_sighupReloads(self) -> None:
        """
        SIGHUP makes a TLS daemon read C{--cert} and C{--key} again: a new
        connection gets the new certificate, one made before goes on.  A
        SIGHUP with an expired certificate on disk keeps the certificate in
        use and logs why, naming the file.  SIGTERM still stops it cleanly.
        """
        files = Files(Path(self.mktemp()).resolve())
        daemon = Daemon(
            self,
            "--port",
            LOCAL,
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            files.cert,
            "--key",
            files.key,
        )
        port = daemon.port()
        self.waitForHandler(daemon)
        before, first = sslConnect(self, files, port)
        self.assertEqual(first, files.serverSerial)
        self.assertEqual(echo(before, b"before"), b"before")

        second = files.install(issue())
        os.kill(daemon.process.pid, signal.SIGHUP)
        daemon.waitFor(
            rf"Reloaded the TLS certificates of 127\.0\.0\.1:{port} from "
            + re.escape(files.cert)
            + rf".*serial {second:x}"
        )
        after, serial = sslConnect(self, files, port)
        self.assertEqual(serial, second)
        self.assertEqual(echo(after, b"after"), b"after")
        self.assertEqual(echo(before, b"still there"), b"still there")

        files.install(expired())
        os.kill(daemon.process.pid, signal.SIGHUP)
        daemon.waitFor(
            r"Certificate reload failed; the certificates in use are kept: "
            r"the certificate file "
            + re.escape(repr(files.cert))
            + r" holds a certificate that expired on .*\(code 34\)"
        )
        again, serial = sslConnect(self, files, port)
        self.assertEqual(serial, second)
        self.assertEqual(echo(again, b"kept"), b"kept")

        os.kill(daemon.process.pid, signal.SIGTERM)
        self.assertIn(daemon.exitStatus(), (0, -signal.SIGTERM))
        self.assertNotIn("Traceback", daemon.output)
        self.assertIn("tcpsc stopped", daemon.output)

    def test_plainDaemonSurvivesSighup(self) -> None:
        """
        A daemon without C{--tls} logs that there is nothing to reload, and
        goes on serving its connections.
        """
        daemon = Daemon(self, "--port", LOCAL)
        port = daemon.port()
        self.waitForHandler(daemon)
        peer = Peer(self, port)
        peer.send(b"one\n")
        self.assertEqual(peer.receive(), b"one")
        os.kill(daemon.process.pid, signal.SIGHUP)
        daemon.waitFor(r"Nothing to reload: this daemon serves plain TCP \(no --tls\)")
        peer.send(b"two\n")
        self.assertEqual(peer.receive(), b"two")
        self.assertIsNone(daemon.process.poll())
        started = time.monotonic()
        os.kill(daemon.process.pid, signal.SIGTERM)
        self.assertEqual(peer.receiveEnd(), b"")
        self.assertIn(daemon.exitStatus(), (0, -signal.SIGTERM))
        self.assertLess(time.monotonic() - started, TIMEOUT)
        self.assertIn("tcpsc stopped", daemon.output)
