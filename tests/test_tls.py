"""
Tests for tcpsc's TLS layer (L{tcpsc._tls}) and for TLS as the client and
the server see it.

Three kinds of test:

  - L{TLSConfig} loading: every unreadable, invalid or inconsistent file is a
    L{tcpsc.CertificateLoadError} with the C++ original's code (30-35) and a
    message naming the file and the reason;
  - deterministic in-memory handshakes (L{tests._helpers.tlsPair}: iosim and
    one L{Clock}) for the policy itself: TLS 1.3 only, client certificate
    required, readiness after the handshake, the client's acceptance gate;
  - real sockets on 127.0.0.1 with real peers: the C{openssl} binary as a
    client (C{s_client}) and as a server (C{s_server}), and L{tcpsc.Client}.
    Every refused peer is refused for a reason the test can see: in the
    server's log, in C{s_client}'s output, or in the exception a
    L{tcpsc.Client} gets.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone, ConnectionLost, ProcessExitedAlready
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.ssl import CertificateOptions, TLSVersion, trustRootFromCertificates
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

import tcpsc
from tcpsc import (
    AbortedLocally,
    CertificateLoadError,
    Client,
    ClientCertificateRejected,
    ClientError,
    ClosedLocally,
    MessageProtocol,
    Server,
    ServerCertificateRejected,
    TLSConfig,
    TLSHandshakeError,
)
from tcpsc._tls import (
    acceptanceGate,
    classifyTLSFailure,
    describeClose,
    diagnoseCertificate,
    verificationFailure,
)
from tests._helpers import SHORT, CertFiles, asyncTest, certificates, tlsPair, waitFor, within


def certs() -> CertFiles:
    return certificates()


def serverTLS(cert: str = "server", **kwargs: Any) -> TLSConfig:
    c = certs()
    kwargs.setdefault("ca", c.ca)
    return TLSConfig(cert=c.path(f"{cert}.pem"), key=c.path(f"{cert}.key"), **kwargs)


def clientTLS(cert: str | None = "client", **kwargs: Any) -> TLSConfig:
    c = certs()
    kwargs.setdefault("ca", c.ca)
    if cert is None:
        return TLSConfig(**kwargs)
    return TLSConfig(cert=c.path(f"{cert}.pem"), key=c.path(f"{cert}.key"), **kwargs)


def loadCertificate(name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(certs().path(name)).read_bytes())


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Echo(MessageProtocol):
    """
    Sends every message back.
    """

    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(message)


class OpenSSLProcess(ProcessProtocol):
    """
    An C{openssl} command run by the reactor: its output is collected, and
    a test can wait for a piece of output or for the end of the process.

    @ivar ended: fires with the exit code.
    """

    def __init__(self, stdin: bytes = b"") -> None:
        self.stdin = stdin
        self.output = bytearray()
        self.ended: Deferred[int | None] = Deferred()
        self.exitCode: int | None = None
        self._waiters: list[tuple[bytes, Deferred[None]]] = []

    def connectionMade(self) -> None:
        if self.stdin:
            self.transport.write(self.stdin)

    def outReceived(self, data: bytes) -> None:
        self.output += data
        self._check()

    errReceived = outReceived

    def _check(self) -> None:
        waiting = []
        for text, d in self._waiters:
            if text in self.output:
                d.callback(None)
            else:
                waiting.append((text, d))
        self._waiters = waiting

    def waitForOutput(self, text: bytes) -> Deferred[None]:
        """
        Fire once C{text} appeared in the process's stdout or stderr; fail if
        the process ends first.
        """
        d: Deferred[None] = Deferred()
        if text in self.output:
            d.callback(None)
        elif self.ended.called:
            d.errback(AssertionError(f"{text!r} not in the output: {self.text()}"))
        else:
            self._waiters.append((text, d))
        return within(d)

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def processEnded(self, reason: Failure) -> None:  # type: ignore[override]
        self.exitCode = reason.value.exitCode
        waiters, self._waiters = self._waiters, []
        for text, d in waiters:
            d.errback(AssertionError(f"{text!r} not in the output: {self.text()}"))
        self.ended.callback(self.exitCode)


class RawPeer(Protocol):
    """
    A plain TCP peer: records what it receives and when it is disconnected.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost.callback(None)


class RealTLSTestCase(TestCase):
    """
    Servers, clients, processes and log capture whose cleanup is registered
    as soon as they exist.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def logged(self, *words: str) -> list[str]:
        """
        The log messages containing all of C{words}.
        """
        messages = [formatEvent(e) for e in self.events]
        return [m for m in messages if all(w in m for w in words)]

    async def startServer(
        self, tls: TLSConfig, protocol: type | None = Echo, port: int = 0, **kwargs: Any
    ) -> tuple[Server, int]:
        server = Server(protocol, **kwargs)
        self.addCleanup(lambda: within(server.stop(), 30))
        listening = await within(server.listen(port, "127.0.0.1", tls=tls))
        return server, listening.getHost().port

    def client(self, **kwargs: Any) -> Client:
        client = Client(**kwargs)
        self.addCleanup(lambda: within(client.disconnect()))
        return client

    def openssl(self, *args: str, stdin: bytes = b"") -> OpenSSLProcess:
        """
        Run C{openssl args...}; it is killed at the end of the test if it is
        still running.
        """
        executable = shutil.which("openssl")
        if executable is None:
            raise SkipTest("no openssl binary on PATH")
        process = OpenSSLProcess(stdin)
        transport = reactor.spawnProcess(
            process, executable, [executable, *args], env=dict(os.environ)
        )

        def cleanup() -> Deferred[int | None] | None:
            if process.ended.called:
                return None
            try:
                transport.signalProcess("KILL")
            except ProcessExitedAlready:
                pass
            return within(process.ended)

        self.addCleanup(cleanup)
        return process

    def sClient(
        self, port: int, *args: str, cert: str | None = "client", stdin: bytes = b""
    ) -> OpenSSLProcess:
        """
        C{openssl s_client} to C{127.0.0.1:port}, verifying the server
        against the test CA and presenting the certificate C{cert}.
        """
        c = certs()
        identity = ["-cert", c.path(f"{cert}.pem"), "-key", c.path(f"{cert}.key")] if cert else []
        return self.openssl(
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            "localhost",
            "-CAfile",
            c.ca,
            "-verify_return_error",
            "-no_ign_eof",
            "-brief",
            *identity,
            *args,
            stdin=stdin,
        )

    async def sServer(self, *args: str) -> int:
        """
        Start C{openssl s_server} with the test server certificate on a free
        port of 127.0.0.1, TLS 1.3 only; return the port once it accepts.
        """
        c = certs()
        port = freePort()
        process = self.openssl(
            "s_server",
            "-accept",
            f"127.0.0.1:{port}",
            "-cert",
            c.server,
            "-key",
            c.serverKey,
            "-tls1_3",
            *args,
        )
        await process.waitForOutput(b"ACCEPT")
        return port


# -- loading ---------------------------------------------------------------


class TLSConfigLoadTests(SynchronousTestCase):
    """
    Certificates and keys are read and checked before any socket is used;
    each problem has the original's code and names the file and the reason.
    """

    def assertLoadError(
        self, build: Callable[[], object], code: int, *words: str
    ) -> CertificateLoadError:
        error = self.assertRaises(CertificateLoadError, build)
        self.assertEqual(error.code, code, str(error))
        self.assertIsInstance(error, tcpsc.StartError)
        for word in words:
            self.assertIn(word, str(error))
        return error

    def test_missingCAFile(self) -> None:
        missing = certs().path("no-such-ca.pem")
        config = serverTLS(ca=missing)
        error = self.assertLoadError(config.serverOptions, 30, missing, "No such file")
        self.assertEqual(error.path, missing)
        self.assertLoadError(lambda: clientTLS(ca=missing).clientCreator("localhost"), 30, missing)

    def test_missingCertificateFile(self) -> None:
        c = certs()
        missing = c.path("no-such-cert.pem")
        self.assertLoadError(
            TLSConfig(ca=c.ca, cert=missing, key=c.serverKey).serverOptions,
            31,
            missing,
            "No such file",
        )
        self.assertLoadError(
            lambda: TLSConfig(ca=c.ca, cert=missing, key=c.clientKey).clientCreator("localhost"),
            31,
            missing,
        )

    def test_missingKeyFile(self) -> None:
        c = certs()
        missing = c.path("no-such-key.pem")
        self.assertLoadError(
            TLSConfig(ca=c.ca, cert=c.server, key=missing).serverOptions,
            32,
            missing,
            "No such file",
        )
        self.assertLoadError(
            lambda: TLSConfig(ca=c.ca, cert=c.client, key=missing).clientCreator("localhost"),
            32,
            missing,
        )

    def test_caFileNotPEM(self) -> None:
        fake = certs().path("fake.pem")
        self.assertLoadError(serverTLS(ca=fake).serverOptions, 33, fake, "no valid PEM")
        self.assertLoadError(lambda: clientTLS(ca=fake).clientCreator("localhost"), 33, fake)

    def test_certificateNotPEM(self) -> None:
        c = certs()
        fake = c.path("fake.pem")
        self.assertLoadError(
            TLSConfig(ca=c.ca, cert=fake, key=c.serverKey).serverOptions, 34, fake, "no valid PEM"
        )

    def test_keyNotPEM(self) -> None:
        c = certs()
        fake = c.path("fake.pem")
        self.assertLoadError(
            TLSConfig(ca=c.ca, cert=c.server, key=fake).serverOptions, 35, fake, "private key"
        )

    def test_keyOfAnotherCertificate(self) -> None:
        c = certs()
        self.assertLoadError(
            TLSConfig(ca=c.ca, cert=c.server, key=c.clientKey).serverOptions,
            35,
            c.clientKey,
            "does not match",
        )
        self.assertLoadError(
            lambda: TLSConfig(ca=c.ca, cert=c.client, key=c.serverKey).clientCreator("x"),
            35,
            c.serverKey,
            "does not match",
        )

    def test_serverWithoutCertificate(self) -> None:
        self.assertLoadError(TLSConfig(ca=certs().ca).serverOptions, 31, "certificate")

    def test_requireClientCertificateWithoutCA(self) -> None:
        c = certs()
        config = TLSConfig(cert=c.server, key=c.serverKey)
        self.assertLoadError(config.serverOptions, 30, "requireClientCertificate", "ca=")
        # Waiving the requirement explicitly makes the same files valid.
        TLSConfig(cert=c.server, key=c.serverKey, requireClientCertificate=False).serverOptions()

    def test_clientCertificateWithoutKey(self) -> None:
        c = certs()
        self.assertLoadError(
            lambda: TLSConfig(ca=c.ca, cert=c.client).clientCreator("localhost"), 32, "key="
        )
        self.assertLoadError(
            lambda: TLSConfig(ca=c.ca, key=c.clientKey).clientCreator("localhost"), 31, "cert="
        )

    def test_pemBytesInsteadOfPaths(self) -> None:
        """
        PEM data works wherever a path does, for both sides, and a handshake
        with such configurations succeeds.
        """
        c = certs()

        def read(path: str) -> bytes:
            return Path(path).read_bytes()

        server = TLSConfig(ca=read(c.ca), cert=read(c.server), key=read(c.serverKey))
        client = TLSConfig(ca=read(c.ca), cert=read(c.client), key=read(c.clientKey))
        pair = InMemoryPair(server.serverOptions(), client.clientCreator("localhost"))
        self.assertTrue(pair.serverProtocol.ready)
        self.assertTrue(pair.clientProtocol.ready)

    def test_pemBytesErrors(self) -> None:
        """
        Invalid PEM data is reported like an invalid file.
        """
        c = certs()
        error = self.assertLoadError(
            TLSConfig(ca=b"junk", cert=c.server, key=c.serverKey).serverOptions, 33
        )
        self.assertEqual(error.path, "<PEM bytes>")

    def test_errorSurvivesCopying(self) -> None:
        """
        A CertificateLoadError keeps its code and path when copied or
        pickled (as a Failure or a process boundary may do).
        """
        import copy
        import pickle

        error = CertificateLoadError("cannot read", 31, "/x.pem")
        for clone in (copy.copy(error), pickle.loads(pickle.dumps(error))):
            self.assertEqual(
                (clone.code, clone.path, str(clone)), (31, "/x.pem", "cannot read (code 31)")
            )


# -- in memory ---------------------------------------------------------------


class Recorder(MessageProtocol):
    """
    Records what a test needs to know about readiness and the peer.
    """

    def __init__(self) -> None:
        self.events: list[str] = []
        self.peerAtReady: x509.Certificate | None = None
        self.lostReason: Failure | None = None

    def connectionMade(self) -> None:
        self.events.append("made")
        if self.transport.getPeerCertificate() is not None:
            self.events.append("peer certificate before the handshake")

    def connectionReady(self) -> None:
        self.events.append("ready")
        self.peerAtReady = tcpsc._tls.peerCertificate(self.transport)

    def messageReceived(self, message: bytes) -> None:
        self.events.append(f"message {message.decode()}")

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        self.lostReason = reason
        self.events.append("lost")
        super().connectionLost(reason)


class InMemoryPair:
    """
    A TLS server and client over iosim with one shared Clock; the client's
    readiness goes through tcpsc's acceptance gate, as a L{tcpsc.Client}'s
    does.
    """

    def __init__(self, serverCreator: Any, clientCreator: Any, grace: float = 1.0) -> None:
        self.serverProtocol = Recorder()
        self.clientProtocol = Recorder()
        self.gate: Any = None

        def buildClient() -> Recorder:
            return self.clientProtocol

        clientFactory = Factory.forProtocol(Recorder)
        clientFactory.buildProtocol = lambda addr: buildClient()  # type: ignore[method-assign]
        serverFactory = Factory.forProtocol(Recorder)
        serverFactory.buildProtocol = (  # type: ignore[method-assign]
            lambda addr: self.serverProtocol
        )

        # The gate needs the pair's clock, which tlsPair makes and gives to
        # both TLS factories: build the real gate on first use, with it.
        def gate(protocol: Any, proceed: Callable[[], None]) -> None:
            self.gate = acceptanceGate(protocol.transport.factory._clock, grace)
            self.gate(protocol, proceed)

        self.clientProtocol._readinessGate = gate
        first, second, self.pump, self.clock = tlsPair(
            serverCreator, clientCreator, serverFactory, clientFactory
        )
        # tlsPair's documentation says (server, client), iosim returns
        # (client, server): tell them apart by their factories.
        if first.factory.wrappedFactory is serverFactory:
            self.server, self.client = first, second
        else:
            self.server, self.client = second, first
        assert self.server.factory.wrappedFactory is serverFactory
        self.pump.flush()


class InMemoryTLSTests(SynchronousTestCase):
    """
    The TLS policy of L{TLSConfig}, deterministic: iosim and one Clock.
    """

    def test_tls13Negotiated(self) -> None:
        pair = InMemoryPair(serverTLS().serverOptions(), clientTLS().clientCreator("localhost"))
        self.assertEqual(pair.server.getHandle().get_protocol_version_name(), "TLSv1.3")
        self.assertEqual(pair.client.getHandle().get_protocol_version_name(), "TLSv1.3")

    def test_serverRefusesTLS12Client(self) -> None:
        """
        The server's options have a TLS 1.3 floor: a client that offers at
        most TLS 1.2 never gets a connection.
        """
        c = certs()
        tls12 = CertificateOptions(
            trustRoot=trustRootFromCertificates(
                [tcpsc._tls._twistedCertificate(loadCertificate("ca.pem"))]
            ),
            lowerMaximumSecurityTo=TLSVersion.TLSv1_2,
        )
        self.assertTrue(c.ca)
        pair = InMemoryPair(serverTLS(requireClientCertificate=False).serverOptions(), tls12)
        self.assertNotIn("ready", pair.serverProtocol.events)
        self.assertNotIn("ready", pair.clientProtocol.events)
        self.assertIsInstance(pair.serverProtocol.lostReason.value, SSL.Error)
        # OpenSSL's words vary with its release: 3.2 (cryptography 42) says
        # "unexpected message" here.
        reason = str(pair.serverProtocol.lostReason.value)
        self.assertTrue("unsupported protocol" in reason or "unexpected message" in reason, reason)

    def test_clientRefusesTLS12Server(self) -> None:
        """
        The client's options have the same floor.
        """
        c = certs()
        tls12 = CertificateOptions(
            privateKey=tcpsc._tls.crypto.PKey.from_cryptography_key(
                tcpsc._tls.loadPrivateKey(c.serverKey)
            ),
            certificate=tcpsc._tls.crypto.X509.from_cryptography(loadCertificate("server.pem")),
            lowerMaximumSecurityTo=TLSVersion.TLSv1_2,
        )
        pair = InMemoryPair(tls12, clientTLS().clientCreator("localhost"))
        self.assertNotIn("ready", pair.clientProtocol.events)
        self.assertIn("protocol version", str(pair.clientProtocol.lostReason.value))

    def test_clientCertificateRequired(self) -> None:
        """
        A client without a certificate completes its side of the TLS 1.3
        handshake, but the server refuses it and the client never becomes
        ready, not even when the acceptance grace period passes.
        """
        pair = InMemoryPair(
            serverTLS().serverOptions(), clientTLS(cert=None).clientCreator("localhost"), grace=1.0
        )
        self.assertNotIn("ready", pair.serverProtocol.events)
        self.assertIn(
            "peer did not return a certificate", str(pair.serverProtocol.lostReason.value)
        )
        self.assertIn("certificate required", str(pair.clientProtocol.lostReason.value))
        self.assertIsInstance(
            classifyTLSFailure(pair.clientProtocol.lostReason), ClientCertificateRejected
        )
        pair.clock.advance(5)
        self.assertNotIn("ready", pair.clientProtocol.events)

    def test_readyAfterHandshake(self) -> None:
        """
        The server's connection is made before the handshake (no peer
        certificate yet) and ready only after it, with the client's verified
        certificate available.
        """
        pair = InMemoryPair(serverTLS().serverOptions(), clientTLS().clientCreator("localhost"))
        self.assertEqual(pair.serverProtocol.events, ["made", "ready"])
        subject = pair.serverProtocol.peerAtReady.subject
        self.assertEqual(subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, "client")
        self.assertEqual(pair.clientProtocol.events, ["made", "ready"])

    def test_clientReadyOnSessionTicket(self) -> None:
        """
        The server asked for a certificate, so the client waits for a sign
        of acceptance: the session ticket arrives with the handshake's last
        flight and the client is ready without any time passing, and no
        timer of the gate is left behind.
        """
        pair = InMemoryPair(
            serverTLS().serverOptions(), clientTLS().clientCreator("localhost"), grace=30.0
        )
        self.assertEqual(pair.clock.seconds(), 0)
        self.assertIn("ready", pair.clientProtocol.events)
        self.assertEqual(pair.clock.getDelayedCalls(), [])

    def test_clientReadyAtOnceWhenNoCertificateRequested(self) -> None:
        """
        A server that does not ask for a client certificate cannot reject
        one: the client is ready right after the handshake.
        """
        config = serverTLS(ca=None, requireClientCertificate=False)
        pair = InMemoryPair(
            config.serverOptions(), clientTLS().clientCreator("localhost"), grace=30.0
        )
        self.assertIn("ready", pair.clientProtocol.events)
        self.assertIsNone(pair.serverProtocol.peerAtReady)
        self.assertEqual(pair.clock.getDelayedCalls(), [])

    def test_optionalClientCertificate(self) -> None:
        """
        With C{requireClientCertificate=False} and a CA, a client without a
        certificate is served, and one that presents a certificate still has
        it verified.
        """
        config = serverTLS(requireClientCertificate=False)
        pair = InMemoryPair(config.serverOptions(), clientTLS(cert=None).clientCreator("localhost"))
        self.assertIn("ready", pair.serverProtocol.events)
        self.assertIn("ready", pair.clientProtocol.events)
        self.assertIsNone(pair.serverProtocol.peerAtReady)

        pair = InMemoryPair(
            config.serverOptions(), clientTLS("other-client").clientCreator("localhost")
        )
        self.assertNotIn("ready", pair.serverProtocol.events)
        self.assertNotIn("ready", pair.clientProtocol.events)

    def test_gateStop(self) -> None:
        """
        Stopping the gate while it waits (the connection ended, or the
        connect attempt was given up) leaves no timer and never makes the
        connection ready.
        """
        proceeded: list[bool] = []

        class Transport:
            pass

        from twisted.internet.task import Clock

        from tcpsc._tls import _Acceptance, _acceptances

        clock = Clock()
        protocol = Recorder()
        protocol.transport = Transport()
        acceptance = _Acceptance()
        acceptance.certificateRequested = True
        _acceptances[protocol.transport] = acceptance
        gate = acceptanceGate(clock, 2.0)
        gate(protocol, lambda: proceeded.append(True))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        gate.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        acceptance.accept()
        clock.advance(5)
        self.assertEqual(proceeded, [])

    def test_gateProceedsOutsideOpenSSL(self) -> None:
        """
        Acceptance is noticed inside OpenSSL's info callback; readiness runs
        only on a later turn of the clock, never inside that callback.
        """
        from twisted.internet.task import Clock

        from tcpsc._tls import _Acceptance, _acceptances

        class Transport:
            pass

        proceeded: list[float] = []
        clock = Clock()
        protocol = Recorder()
        protocol.transport = Transport()
        acceptance = _Acceptance()
        acceptance.certificateRequested = True
        _acceptances[protocol.transport] = acceptance
        gate = acceptanceGate(clock, 2.0)
        gate(protocol, lambda: proceeded.append(clock.seconds()))
        acceptance.accept()
        self.assertEqual(proceeded, [])
        clock.advance(0)
        self.assertEqual(proceeded, [0])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_gracePeriodWhenNoTicket(self) -> None:
        """
        Without any sign from the server, the gate lets the connection
        become ready after the grace period, and not before.
        """
        from twisted.internet.task import Clock

        from tcpsc._tls import _Acceptance, _acceptances

        class Transport:
            pass

        proceeded: list[float] = []
        clock = Clock()
        protocol = Recorder()
        protocol.transport = Transport()
        acceptance = _Acceptance()
        acceptance.certificateRequested = True
        _acceptances[protocol.transport] = acceptance
        gate = acceptanceGate(clock, 2.0)
        gate(protocol, lambda: proceeded.append(clock.seconds()))
        clock.advance(1.9)
        self.assertEqual(proceeded, [])
        clock.advance(0.1)
        clock.advance(0)
        self.assertEqual(proceeded, [2.0])

    def test_verificationFailureReason(self) -> None:
        """
        The server can tell why it rejected a client certificate, beyond
        OpenSSL's "certificate verify failed".
        """
        cases = {
            "expired-client": "certificate has expired",
            "notyet-client": "certificate is not yet valid",
            "other-client": "unable to get local issuer certificate",
        }
        for name, reason in cases.items():
            pair = InMemoryPair(
                serverTLS().serverOptions(), clientTLS(name).clientCreator("localhost")
            )
            self.assertIn("certificate verify failed", str(pair.serverProtocol.lostReason.value))
            failure = verificationFailure(pair.server)
            self.assertIsNotNone(failure, name)
            self.assertIn(reason, failure)  # type: ignore[arg-type]
            self.assertIn(name.replace("-client", ""), failure)  # type: ignore[arg-type]
        pair = InMemoryPair(serverTLS().serverOptions(), clientTLS().clientCreator("localhost"))
        self.assertIsNone(verificationFailure(pair.server))
        self.assertIsNone(verificationFailure(object()))


class ClassifyTests(SynchronousTestCase):
    """
    L{classifyTLSFailure} turns what ended a TLS client connection before it
    was ready into the most specific error, each with code 60.
    """

    def classify(self, error: BaseException, **kwargs: Any) -> TLSHandshakeError:
        result = classifyTLSFailure(Failure(error), **kwargs)
        self.assertEqual(result.code, 60)
        self.assertIs(result.reason, error)
        return result

    @staticmethod
    def sslError(text: str) -> SSL.Error:
        return SSL.Error([("SSL routines", "", text)])

    def test_identityRefused(self) -> None:
        """
        A refusal of tcpsc's identity check is a L{ServerCertificateRejected}
        with the check's words, whatever OpenSSL made of it.
        """
        why = "the server's certificate is not valid for the host name 'localhost'"
        result = self.classify(self.sslError("certificate verify failed"), identity=why)
        self.assertIsInstance(result, ServerCertificateRejected)
        self.assertTrue(str(result).startswith(why), str(result))

    def test_serverCertificateNotVerified(self) -> None:
        ca = loadCertificate("ca.pem")
        result = self.classify(self.sslError("certificate verify failed"))
        self.assertIsInstance(result, ServerCertificateRejected)
        result = self.classify(
            self.sslError("certificate verify failed"),
            certificate=loadCertificate("expired-server.pem"),
            authorities=[ca],
        )
        self.assertIn("expired", str(result))
        result = self.classify(
            self.sslError("certificate verify failed"),
            certificate=loadCertificate("other-server.pem"),
            authorities=[ca],
        )
        self.assertIn("other test CA", str(result))

    def test_clientCertificateRejected(self) -> None:
        for text in (
            "tlsv13 alert certificate required",
            "tlsv1 alert unknown ca",
            "sslv3 alert certificate expired",
            "tls alert certificate expired",
            "sslv3 alert bad certificate",
            "tls alert bad certificate",
            "tlsv1 alert decrypt error",
            "tlsv1 alert access denied",
        ):
            result = self.classify(self.sslError(text))
            self.assertIsInstance(result, ClientCertificateRejected, text)
            self.assertIn(text, str(result))

    def test_otherFailures(self) -> None:
        for error in (
            self.sslError("tlsv1 alert protocol version"),
            self.sslError("wrong version number"),
            ConnectionLost("gone"),
        ):
            result = self.classify(error)
            self.assertIs(type(result), TLSHandshakeError, str(error))

    def test_diagnoseCertificate(self) -> None:
        ca = [loadCertificate("ca.pem")]
        self.assertIsNone(diagnoseCertificate(loadCertificate("server.pem"), ca))
        self.assertIn("expired", diagnoseCertificate(loadCertificate("expired-client.pem"), ca))
        self.assertIn(
            "not valid before", diagnoseCertificate(loadCertificate("notyet-client.pem"), ca)
        )
        self.assertIn(
            "not by the configured CA", diagnoseCertificate(loadCertificate("other-client.pem"), ca)
        )
        # Checked at a given time: the expired one was valid ten days ago.
        then = datetime.now(UTC).replace(microsecond=0)
        expired = loadCertificate("expired-client.pem")
        self.assertIsNone(diagnoseCertificate(expired, ca, now=expired.not_valid_before_utc))
        self.assertIsNotNone(diagnoseCertificate(expired, ca, now=then))


# -- real sockets: openssl as the client --------------------------------------


class OpenSSLClientTests(RealTLSTestCase):
    """
    C{openssl s_client} against a tcpsc TLS server: the right peer gets an
    echo, every wrong one is refused with its reason visible.
    """

    async def refused(self, *args: str, cert: str | None, clientSees: str, serverLogs: str) -> None:
        established: list[int] = []
        server, port = await self.startServer(serverTLS(), onEstablished=established.append)
        process = self.sClient(port, "-tls1_3", *args, cert=cert)
        await process.waitForOutput(clientSees.encode())
        exitCode = await within(process.ended)
        self.assertNotEqual(exitCode, 0)
        await waitFor(
            lambda: self.logged("Refused the connection", serverLogs),
            SHORT,
            what="the server's log line refusing the connection",
        )
        self.assertEqual(established, [])
        self.assertEqual(server.clientIds(), [])

    @asyncTest
    async def test_tls13WithCertificateEchoes(self) -> None:
        established: list[int] = []
        server, port = await self.startServer(serverTLS(), onEstablished=established.append)
        process = self.sClient(port, "-tls1_3", stdin=b"hello\n")
        await process.waitForOutput(b"Protocol version: TLSv1.3")
        await waitFor(lambda: b"hello\n" in process.output, SHORT)
        self.assertEqual(len(established), 1)
        self.assertEqual(server.clientSubjectPart(established[0], "CN"), "client")
        process.transport.closeStdin()
        self.assertEqual(await within(process.ended), 0)

    @asyncTest
    async def test_withoutCertificate(self) -> None:
        await self.refused(
            cert=None,
            clientSees="alert certificate required",
            serverLogs="the client sent no certificate",
        )

    @asyncTest
    async def test_certificateFromAnotherCA(self) -> None:
        await self.refused(
            cert="other-client",
            clientSees="alert unknown ca",
            serverLogs="the client's certificate is not issued by the CA",
        )

    @asyncTest
    async def test_expiredCertificate(self) -> None:
        await self.refused(
            cert="expired-client",
            clientSees="alert certificate expired",
            serverLogs="the client's certificate was rejected: certificate has expired",
        )

    @asyncTest
    async def test_notYetValidCertificate(self) -> None:
        await self.refused(
            cert="notyet-client",
            clientSees="alert bad certificate",
            serverLogs="the client's certificate was rejected: certificate is not yet valid",
        )

    @asyncTest
    async def test_tls12Refused(self) -> None:
        established: list[int] = []
        _, port = await self.startServer(serverTLS(), onEstablished=established.append)
        process = self.sClient(port, "-tls1_2")
        await process.waitForOutput(b"alert protocol version")
        self.assertNotEqual(await within(process.ended), 0)
        await waitFor(
            lambda: self.logged("Refused the connection", "the peer speaks TLS 1.2 or older"),
            SHORT,
            what="the server's log line refusing TLS 1.2",
        )
        self.assertEqual(established, [])

    @asyncTest
    async def test_plaintextDroppedOthersServed(self) -> None:
        """
        Plaintext bytes sent to the TLS port are never delivered as a
        message; the peer is disconnected, and TLS clients are still served.
        """
        received: list[bytes] = []
        server = Server(onMessage=lambda i, m: (received.append(m), server.send(i, m)))
        self.addCleanup(lambda: within(server.stop(), 30))
        port = (await within(server.listen(0, "127.0.0.1", tls=serverTLS()))).getHost().port
        raw = RawPeer()
        await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw))
        self.addCleanup(lambda: None if raw.lost.called else raw.transport.abortConnection())
        raw.transport.write(b"hello in plaintext\nGET / HTTP/1.0\r\n\r\n")
        await within(raw.lost)
        self.assertNotIn(b"hello in plaintext", bytes(raw.received))
        self.assertTrue(self.logged("Refused the connection"))

        echoes: list[bytes] = []
        client = self.client(onMessage=echoes.append)
        await within(client.connect("localhost", port, tls=clientTLS()))
        client.send(b"over TLS")
        await waitFor(lambda: echoes == [b"over TLS"], SHORT)
        self.assertEqual(received, [b"over TLS"])


# -- real sockets: tcpsc client -------------------------------------------------


class ServerCertificateTests(RealTLSTestCase):
    """
    A tcpsc client refuses a server whose certificate it cannot trust, with
    a L{ServerCertificateRejected} that says why.
    """

    async def rejected(
        self, cert: str, *words: str, host: str = "localhost"
    ) -> ServerCertificateRejected:
        established: list[int] = []
        _, port = await self.startServer(serverTLS(cert), onEstablished=established.append)
        client = self.client()
        error = await within(
            self.assertFailure(
                client.connect(host, port, tls=clientTLS()), ServerCertificateRejected
            )
        )
        for word in words:
            self.assertIn(word, str(error))
        self.assertEqual(error.code, 60)
        self.assertFalse(client.isConnected)
        self.assertEqual(established, [])
        return error

    @asyncTest
    async def test_anotherHostName(self) -> None:
        await self.rejected("wronghost", "host name", "'localhost'", "wrong.example")

    @asyncTest
    async def test_hostNameOption(self) -> None:
        """
        The same certificate is accepted when the client checks the name it
        is issued for: the failure above is about the name, nothing else.
        """
        _, port = await self.startServer(serverTLS("wronghost"))
        client = self.client()
        await within(client.connect("127.0.0.1", port, tls=clientTLS(hostname="wrong.example")))
        self.assertEqual(client.serverSubjectPart("CN"), "wrong.example")

    @asyncTest
    async def test_anotherIPAddress(self) -> None:
        await self.rejected(
            "wronghost", "IP address '127.0.0.1'", "wrong.example", host="127.0.0.1"
        )

    @asyncTest
    async def test_noSubjectAltNameForAnotherHost(self) -> None:
        """
        A certificate of the right CA without any subjectAltName (CN =
        another host) is refused: the host name cannot be verified.
        """
        await self.rejected(
            "nosan-wronghost",
            "has no subjectAltName",
            "'localhost'",
            "CN=wrong.example",
            "tcpsc certs",
            "verifyHostname=False",
        )

    @asyncTest
    async def test_noSubjectAltNameForThisHost(self) -> None:
        """
        The same with CN = the host connected to: the CN is never a fallback
        (as in Python's ssl, Go and browsers).
        """
        await self.rejected("nosan-localhost", "has no subjectAltName", "'localhost'")
        await self.rejected(
            "nosan-localhost", "has no subjectAltName", "'127.0.0.1'", host="127.0.0.1"
        )

    @asyncTest
    async def test_noSubjectAltNameWithoutHostNameCheck(self) -> None:
        """
        With host name checks off, the chain alone is verified: the same
        certificate is accepted.
        """
        _, port = await self.startServer(serverTLS("nosan-wronghost"))
        client = self.client()
        await within(client.connect("localhost", port, tls=clientTLS(verifyHostname=False)))
        self.assertEqual(client.serverSubjectPart("CN"), "wrong.example")

    @asyncTest
    async def test_addressSubjectAltNameByAddress(self) -> None:
        """
        A certificate whose only subjectAltName is an IP address is valid
        when the client connects to that address.
        """
        _, port = await self.startServer(serverTLS("iponly"))
        client = self.client()
        await within(client.connect("127.0.0.1", port, tls=clientTLS()))
        self.assertTrue(client.isConnected)

    @asyncTest
    async def test_addressSubjectAltNameByName(self) -> None:
        """
        ... and not when it connects by a name, even one that resolves to it.
        """
        await self.rejected("iponly", "host name 'localhost'", "127.0.0.1")

    @asyncTest
    async def test_nameAndAddressSubjectAltNames(self) -> None:
        """
        The usual server certificate (localhost, 127.0.0.1, ::1) is valid by
        name and by address.
        """
        _, port = await self.startServer(serverTLS())
        for host in ("localhost", "127.0.0.1"):
            client = Client()
            await within(client.connect(host, port, tls=clientTLS()))
            self.assertTrue(client.isConnected, host)
            await within(client.disconnect())

    @asyncTest
    async def test_checkThatRaisesRefuses(self) -> None:
        """
        Fail closed: an identity check that raises refuses the connection.
        """

        def broken(certificate: object, name: str) -> None:
            raise RuntimeError("the check broke")

        self.patch(tcpsc._tls, "verify_certificate_hostname", broken)
        await self.rejected("server", "could not be checked", "the check broke")

    @asyncTest
    async def test_nothingSentBeforeRefusal(self) -> None:
        """
        The refusal happens inside the handshake: the server never sees the
        connection established, nor any byte of application data.
        """
        received: list[bytes] = []
        _, port = await self.startServer(
            serverTLS("nosan-wronghost"), protocol=None, onMessage=lambda i, m: received.append(m)
        )
        client = self.client()
        connecting = client.connect("localhost", port, tls=clientTLS())
        self.assertFalse(client.send(b"secret"))
        await within(self.assertFailure(connecting, ServerCertificateRejected))
        self.assertFalse(client.send(b"secret"))
        self.assertEqual(received, [])

    @asyncTest
    async def test_expired(self) -> None:
        await self.rejected("expired-server", "certificate verify failed", "expired")

    @asyncTest
    async def test_anotherCA(self) -> None:
        await self.rejected("other-server", "not by the configured CA")


class LateRejectionTests(RealTLSTestCase):
    """
    TLS 1.3 verifies the client's certificate after the client's side of the
    handshake is complete.  A tcpsc client is nonetheless never "connected"
    with a certificate the server rejects, and is connected promptly when
    the server accepts it.
    """

    async def rejectedClient(self, cert: str | None, alert: str) -> None:
        established: list[int] = []
        server, port = await self.startServer(serverTLS(), onEstablished=established.append)
        clientEstablished: list[object] = []
        client = self.client(acceptanceGrace=30.0, onEstablished=clientEstablished.append)
        # The rejection is the alert itself, not the end of a wait: within()
        # gives up long before the 30 s grace would end.
        connecting = client.connect("localhost", port, tls=clientTLS(cert))
        succeeded: list[object] = []
        connecting.addCallback(succeeded.append)
        error = await within(self.assertFailure(connecting, ClientCertificateRejected))
        self.assertIn(alert, str(error))
        self.assertEqual(succeeded, [])
        self.assertEqual(clientEstablished, [])
        self.assertFalse(client.isConnected)
        self.assertFalse(client.send(b"anything"))
        self.assertEqual(server.clientIds(), [])
        self.assertEqual(established, [])

    @asyncTest
    async def test_certificateFromAnotherCA(self) -> None:
        await self.rejectedClient("other-client", "unknown ca")

    @asyncTest
    async def test_noCertificate(self) -> None:
        await self.rejectedClient(None, "certificate required")

    @asyncTest
    async def test_expiredCertificate(self) -> None:
        await self.rejectedClient("expired-client", "certificate expired")

    @asyncTest
    async def test_acceptedPromptly(self) -> None:
        """
        Against a server that requires and accepts the certificate, the
        client is ready long before its 30 s acceptance grace period: the
        server's session ticket made it ready, and by then the server had
        registered the connection.
        """
        server, port = await self.startServer(serverTLS())
        client = self.client(acceptanceGrace=30.0)
        seenByServer: list[list[int]] = []
        connecting = client.connect("localhost", port, tls=clientTLS())
        connecting.addCallback(lambda p: seenByServer.append(server.clientIds()) or p)
        # within() gives up long before the 30 s grace would end.
        await within(connecting)
        self.assertEqual(len(seenByServer[0]), 1)
        self.assertTrue(client.isConnected)

    @asyncTest
    async def test_noCertificateRequested(self) -> None:
        """
        A server with C{requireClientCertificate=False} and no CA does not
        ask for a certificate: the client is ready right after the handshake.
        """
        server, port = await self.startServer(serverTLS(ca=None, requireClientCertificate=False))
        client = self.client(acceptanceGrace=30.0)
        # within() gives up long before the 30 s grace would end.
        await within(client.connect("localhost", port, tls=clientTLS()))
        self.assertTrue(client.isConnected)
        await waitFor(
            lambda: server.clientIds(), SHORT, what="the server to register the connection"
        )
        self.assertIsNone(server.clientSubjectPart(server.clientIds()[0], "CN"))


class AcceptanceWithOpenSSLServerTests(RealTLSTestCase):
    """
    The acceptance gate against C{openssl s_server}, a server tcpsc did not
    write, whose number of session tickets can be set: it is the ticket that
    makes a tcpsc client ready early, and only when a certificate was asked
    for.
    """

    @asyncTest
    async def test_readyOnTicket(self) -> None:
        port = await self.sServer("-Verify", "1", "-CAfile", certs().ca)
        client = self.client(acceptanceGrace=30.0)
        # within() gives up long before the 30 s grace would end.
        await within(client.connect("localhost", port, tls=clientTLS()))

    @asyncTest
    async def test_noTicketWaitsForGrace(self) -> None:
        port = await self.sServer("-Verify", "1", "-CAfile", certs().ca, "-num_tickets", "0")
        client = self.client(acceptanceGrace=0.5)
        started = reactor.seconds()
        await within(client.connect("localhost", port, tls=clientTLS()))
        self.assertGreaterEqual(reactor.seconds() - started, 0.5)
        self.assertTrue(client.isConnected)

    @asyncTest
    async def test_noCertificateRequestNoWait(self) -> None:
        port = await self.sServer("-num_tickets", "0")
        client = self.client(acceptanceGrace=30.0)
        # within() gives up long before the 30 s grace would end.
        await within(client.connect("localhost", port, tls=clientTLS()))


class SubjectTests(RealTLSTestCase):
    """
    Parts of the peer's certificate subject, on both sides.
    """

    @asyncTest
    async def test_subjectParts(self) -> None:
        established: list[int] = []
        server, port = await self.startServer(serverTLS(), onEstablished=established.append)
        client = self.client()
        self.assertRaises(ClientError, client.serverSubjectPart, "L")
        await within(client.connect("localhost", port, tls=clientTLS()))
        await waitFor(lambda: established, SHORT, what="the server's onEstablished")
        clientId = established[0]
        self.assertEqual(server.clientSubjectPart(clientId, "CN"), "client")
        self.assertEqual(server.clientSubjectPart(clientId, NameOID.LOCALITY_NAME), "my city")
        self.assertEqual(server.clientSubjectPart(clientId, "OU"), "Client")
        self.assertIsNone(server.clientSubjectPart(clientId, "emailAddress"))
        self.assertRaises(ValueError, server.clientSubjectPart, clientId, "XX")
        self.assertEqual(client.serverSubjectPart("L"), "my city")
        self.assertEqual(client.serverSubjectPart(NameOID.COMMON_NAME), "localhost")
        self.assertEqual(client.serverSubjectPart("ST"), "my state")
        await within(client.disconnect())
        self.assertRaises(ClientError, client.serverSubjectPart, "L")


class _TwistedTLSTransport:
    """
    Mixin: run the tests on Twisted's own TLS transport, the public fallback
    used where tcpsc's private names are not trusted.
    """

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        self.patch(tcpsc._compat, "PRIVATE", False)  # type: ignore[attr-defined]


class ServerCertificateFallbackTests(_TwistedTLSTransport, ServerCertificateTests):
    """
    L{ServerCertificateTests} on Twisted's own TLS transport.
    """


class LateRejectionFallbackTests(_TwistedTLSTransport, LateRejectionTests):
    """
    L{LateRejectionTests} on Twisted's own TLS transport.
    """


class OpenSSLClientFallbackTests(_TwistedTLSTransport, OpenSSLClientTests):
    """
    L{OpenSSLClientTests} on Twisted's own TLS transport.
    """


class DescribeCloseTests(SynchronousTestCase):
    """
    L{describeClose}: why a connection ended, in words, never OpenSSL's
    tuple lists.
    """

    @staticmethod
    def sslError(text: str) -> SSL.Error:
        return SSL.Error([("SSL routines", "", text)])

    def test_tlsFailures(self) -> None:
        for text, words in (
            ("peer did not return a certificate", "the client sent no certificate"),
            ("unsupported protocol", "the peer speaks TLS 1.2 or older"),
            ("wrong version number", "the peer does not speak TLS"),
            ("something new", "something new"),
        ):
            why = describeClose(Failure(self.sslError(text)), tls=True)
            self.assertIn(words, why)
            self.assertNotIn("[(", why)

    def test_clientCertificateVerification(self) -> None:
        failed = self.sslError("certificate verify failed")
        self.assertEqual(
            describeClose(
                Failure(failed),
                True,
                "unable to get local issuer certificate (certificate 'CN=x', depth 0)",
            ),
            "the client's certificate is not issued by the CA (unable to get local issuer "
            "certificate (certificate 'CN=x', depth 0))",
        )
        self.assertEqual(
            describeClose(Failure(failed), True, "certificate has expired"),
            "the client's certificate was rejected: certificate has expired",
        )

    def test_closes(self) -> None:
        self.assertEqual(
            describeClose(Failure(ClosedLocally("idle timeout (60 s)")), True),
            "idle timeout (60 s)",
        )
        self.assertEqual(
            describeClose(
                Failure(
                    AbortedLocally(
                        "server stopping; the peer did not answer close_notify within 5 s"
                    )
                ),
                True,
            ),
            "server stopping; the peer did not answer close_notify within 5 s",
        )
        self.assertEqual(
            describeClose(Failure(ConnectionDone()), False), "the peer closed the connection"
        )
        self.assertEqual(
            describeClose(Failure(ConnectionLost()), True),
            "the peer closed the connection without close_notify",
        )
        self.assertEqual(
            describeClose(Failure(ConnectionLost()), False),
            "the connection was lost (reset by the peer)",
        )
