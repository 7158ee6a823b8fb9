"""
Tests of L{tcpsc.blocking}: starting servers and clients, reading client and
server data, TLS certificates and authentication modes.

Ports the C++ original's C{General_*} test fixtures; the
table in C{tests/README.md} maps each upstream case to its test here.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.x509.oid import NameOID
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import SkipTest

from tcpsc import (
    ClientCertificateRejected,
    ClientError,
    ServerCertificateRejected,
    ServerError,
    Settings,
    StartError,
)
from tcpsc import _certgen as certgen
from tcpsc.blocking import ReactorThreadError, TcpClient, TcpServer, TlsClient, TlsServer
from tests._helpers import certificates
from tests.test_blocking_support import (
    DELIMITER,
    TIMEOUT,
    BlockingTestCase,
    ClientSide,
    Recorder,
    ServerSide,
    StreamRecorder,
    waitUntil,
)
from tests.test_cli import _environment


@cache
def chainDepth2() -> dict[str, str]:
    """
    Certificates whose chain is two deep, as in the original's
    C{certChainDepth2Keys}: leaves signed by a server certificate (which is
    not a CA), each file holding the leaf followed by its issuer.  Plus a
    plain server certificate and client certificate of the same CA.
    """
    directory = Path(certificates().directory) / "depth2"
    directory.mkdir(exist_ok=True)
    hosts = ("localhost", "127.0.0.1")
    ca = certgen.makeCA("O=depth2,CN=depth2 test CA")
    server = certgen.issueCertificate(ca, "CN=localhost", server=True, hosts=hosts)
    client = certgen.issueCertificate(ca, "CN=client", client=True)
    deepServer = certgen.issueCertificate(server, "CN=localhost", server=True, hosts=hosts)
    deepClient = certgen.issueCertificate(server, "CN=deep client", client=True)
    paths = {"ca": str(directory / "ca.pem")}
    (directory / "ca.pem").write_bytes(ca.certificatePEM())
    for name, issued, chain in (
        ("server", server, b""),
        ("client", client, b""),
        ("deepServer", deepServer, server.certificatePEM()),
        ("deepClient", deepClient, server.certificatePEM()),
    ):
        (directory / f"{name}.pem").write_bytes(issued.certificatePEM() + chain)
        (directory / f"{name}.key").write_bytes(issued.keyPEM())
        paths[name] = str(directory / f"{name}.pem")
        paths[name + "Key"] = str(directory / f"{name}.key")
    return paths


class _ClientStartTests:
    """
    C{General_TcpClient_Test_Start} / C{General_TlsClient_Test_Start}: the
    cases both share.
    """

    def setUp(self) -> None:
        self.serverSide = self.server(DELIMITER)

    def test_posTest(self) -> None:
        """
        A client started with correct parameters connects (the original:
        C{CLIENT_START_OK}) and the server has exactly one client.
        """
        side = self.makeClient(DELIMITER)
        self.startClient(side, self.serverSide.port)
        self.assertTrue(side.client.isRunning())
        self.serverSide.established.waitFor(1)
        self.assertEqual(len(self.serverSide.server.getAllClientIds()), 1)

    def assertStartFails(self, code: int, port: int | None = None, **certificates: str) -> None:
        side = self.makeClient(DELIMITER)
        with self.assertRaises(StartError) as raised:
            self.startClient(side, self.serverSide.port if port is None else port, **certificates)
        self.assertEqual(raised.exception.code, code, str(raised.exception))
        self.assertFalse(side.client.isRunning())
        self.assertEqual(self.serverSide.server.getAllClientIds(), [])

    def test_negTestWrongPortNegative(self) -> None:
        """
        Port -1: code 10 (C{CLIENT_ERROR_START_WRONG_PORT}).
        """
        self.assertStartFails(10, port=-1)

    def test_negTestWrongPortTooBig(self) -> None:
        """
        Port 65536: code 10.
        """
        self.assertStartFails(10, port=65536)

    def test_negTestServerNotRunning(self) -> None:
        """
        Connecting to a port whose server was stopped: code 50
        (C{CLIENT_ERROR_START_CONNECT}).
        """
        self.serverSide.server.stop()
        self.assertStartFails(50)

    def test_negTestAlreadyRunning(self) -> None:
        """
        Starting a running client again: code -1, and the server still has
        exactly one client.
        """
        side = self.makeClient(DELIMITER)
        self.startClient(side, self.serverSide.port)
        self.serverSide.established.waitFor(1)
        with self.assertRaises(StartError) as raised:
            side.client.start("127.0.0.1", self.serverSide.port)
        self.assertEqual(raised.exception.code, -1)
        self.assertTrue(side.client.isRunning())
        self.assertEqual(len(self.serverSide.server.getAllClientIds()), 1)


class TcpClientStartTests(_ClientStartTests, BlockingTestCase):
    """
    C{General_TcpClient_Test_Start}.
    """


class TlsClientStartTests(_ClientStartTests, BlockingTestCase):
    """
    C{General_TlsClient_Test_Start}: the shared cases over TLS, plus the
    certificate files.
    """

    tls = True

    def test_negTestWrongCaPath(self) -> None:
        """
        A CA file that does not exist: code 30, and nothing connects.
        """
        self.assertStartFails(30, ca=self.certs.path("missing-ca.pem"))

    def test_negTestWrongCertPath(self) -> None:
        """
        A client certificate file that does not exist: code 31.
        """
        self.assertStartFails(31, cert=self.certs.path("missing.pem"))

    def test_negTestWrongKeyPath(self) -> None:
        """
        A client key file that does not exist: code 32.
        """
        self.assertStartFails(32, key=self.certs.path("missing.key"))

    def test_negTestFakeCa(self) -> None:
        """
        A CA file that is not a certificate: code 33.
        """
        self.assertStartFails(33, ca=self.certs.path("fake.pem"))

    def test_negTestFakeCert(self) -> None:
        """
        A client certificate file that is not a certificate: code 34.
        """
        self.assertStartFails(34, cert=self.certs.path("fake.pem"))

    def test_negTestFakeKey(self) -> None:
        """
        A client key file that is not a key: code 35; so is another
        certificate's key.
        """
        self.assertStartFails(35, key=self.certs.path("fake.pem"))
        self.assertStartFails(35, key=self.certs.serverKey)

    def test_certificateWithoutKeyIsIgnored(self) -> None:
        """
        As in the original, a client certificate is presented only when both
        certificate and key are set: with the key missing the client offers
        no certificate, and a server that requires one rejects it (60).
        """
        self.assertStartFails(60, key="")


class _ServerStartTests:
    """
    C{General_TcpServer_Test_Start} / C{General_TlsServer_Test_Start}: the
    cases both share.
    """

    def test_posTest(self) -> None:
        """
        A server started with correct parameters listens (the original:
        C{SERVER_START_OK}) and a client can connect.
        """
        side = self.server(DELIMITER)
        self.assertTrue(side.server.isRunning())
        self.assertEqual(side.server.port, side.port)
        self.connect(side, DELIMITER)

    def assertStartFails(self, code: int, port: int = 0, **certificates: str) -> TcpServer:
        side = self.makeServer(DELIMITER)
        server = side.server
        with self.assertRaises(StartError) as raised:
            if certificates:
                self.startServer(side, **certificates)
            elif isinstance(server, TlsServer):
                server.start(
                    port,
                    self.certs.ca,
                    self.certs.server,
                    self.certs.serverKey,
                    interface="127.0.0.1",
                )
            else:
                server.start(port, interface="127.0.0.1")
        self.assertEqual(raised.exception.code, code, str(raised.exception))
        self.assertFalse(side.server.isRunning())
        return side.server

    def test_negTestWrongPortNegative(self) -> None:
        """
        Port -1: code 10 (C{SERVER_ERROR_START_WRONG_PORT}).
        """
        self.assertStartFails(10, port=-1)

    def test_negTestWrongPortTooBig(self) -> None:
        """
        Port 65536: code 10.
        """
        self.assertStartFails(10, port=65536)

    def assertAlreadyRunning(self, side) -> None:
        with self.assertRaises(StartError) as raised:
            side.server.start(0, interface="127.0.0.1")
        self.assertEqual(raised.exception.code, -1)
        self.assertTrue(side.server.isRunning())
        self.assertEqual(side.server.port, side.port)

    def test_negTestAlreadyRunningNoConnections(self) -> None:
        """
        Starting a running server again, on another free port: code -1; it
        still listens on its port.
        """
        side = self.server(DELIMITER)
        self.assertAlreadyRunning(side)
        self.connect(side, DELIMITER)

    def test_negTestAlreadyRunningOneConnection(self) -> None:
        """
        The same with a client connected: code -1, the client stays.
        """
        side = self.server(DELIMITER)
        _, clientId = self.connect(side, DELIMITER)
        self.assertAlreadyRunning(side)
        self.assertEqual(side.server.getAllClientIds(), [clientId])

    def test_negTestPortInUse(self) -> None:
        """
        A second server on the port of a running one: code 42
        (C{SERVER_ERROR_START_BIND_PORT}).
        """
        side = self.server(DELIMITER)
        self.assertStartFails(42, port=side.port)


class TcpServerStartTests(_ServerStartTests, BlockingTestCase):
    """
    C{General_TcpServer_Test_Start}.
    """


class TlsServerStartTests(_ServerStartTests, BlockingTestCase):
    """
    C{General_TlsServer_Test_Start}: the shared cases over TLS, plus the
    certificate files.
    """

    tls = True

    def test_negTestWrongCaPath(self) -> None:
        """
        A CA file that does not exist: code 30.
        """
        self.assertStartFails(30, ca=self.certs.path("missing-ca.pem"))

    def test_negTestWrongCertPath(self) -> None:
        """
        A certificate file that does not exist: code 31; no certificate at
        all is the same (a TLS server cannot start without one).
        """
        self.assertStartFails(31, cert=self.certs.path("missing.pem"))
        self.assertStartFails(31, cert="")

    def test_negTestWrongKeyPath(self) -> None:
        """
        A key file that does not exist: code 32.
        """
        self.assertStartFails(32, key=self.certs.path("missing.key"))

    def test_negTestFakeCa(self) -> None:
        """
        A CA file that is not a certificate: code 33.
        """
        self.assertStartFails(33, ca=self.certs.path("fake.pem"))

    def test_negTestFakeCert(self) -> None:
        """
        A certificate file that is not a certificate: code 34.
        """
        self.assertStartFails(34, cert=self.certs.path("fake.pem"))

    def test_negTestFakeKey(self) -> None:
        """
        A key file that is not a key: code 35.
        """
        self.assertStartFails(35, key=self.certs.path("fake.pem"))

    def test_negTestNotMatchingCertAndKey(self) -> None:
        """
        A valid key of another certificate: code 35.
        """
        self.assertStartFails(35, key=self.certs.clientKey)

    def test_badCaIsReportedWithoutClientAuthentication(self) -> None:
        """
        As in the original, the CA file is read even when client
        authentication is off, so a missing one is still code 30.
        """
        side = self.makeServer(DELIMITER)
        side.server.requireClientAuthentication(False)
        side.server.setCertificates(
            self.certs.path("missing.pem"), self.certs.server, self.certs.serverKey
        )
        with self.assertRaises(StartError) as raised:
            side.server.start(0, interface="127.0.0.1")
        self.assertEqual(raised.exception.code, 30)

    def test_startArgumentsReplaceCertificates(self) -> None:
        """
        C{start(port, ca, cert, key)} (the seed README's spelling) replaces
        what C{setCertificates} set, and C{clearCertificates} forgets them.
        """
        server = TlsServer(DELIMITER)
        self.addCleanup(server.stop)
        server.setCertificates(
            self.certs.path("fake.pem"), self.certs.path("fake.pem"), self.certs.path("fake.pem")
        )
        server.start(
            0, self.certs.ca, self.certs.server, self.certs.serverKey, interface="127.0.0.1"
        )
        server.stop()
        server.clearCertificates()
        with self.assertRaises(StartError) as raised:
            server.start(0, interface="127.0.0.1")
        self.assertEqual(raised.exception.code, 31)


class _ReadClientDataTests:
    """
    C{General_TcpServer_Test_ReadClientData} and the address part of
    C{General_TlsServer_Test_ReadClientData}.
    """

    def setUp(self) -> None:
        self.serverSide = self.server(DELIMITER)
        self.clientSide, self.clientId = self.connect(self.serverSide, DELIMITER)

    def test_posTestReadClientIp(self) -> None:
        """
        The IP address of a connected client is read.
        """
        self.assertEqual(self.serverSide.server.getClientIp(self.clientId), "127.0.0.1")

    def test_negTestReadClientIpNotConnected(self) -> None:
        """
        Reading the IP address of an id that is not connected raises
        L{ServerError}; so does that of a client that left.
        """
        server = self.serverSide.server
        self.assertRaises(ServerError, server.getClientIp, 0)
        self.assertRaises(ServerError, server.getClientIp, self.clientId + 1)
        self.clientSide.client.stop()
        self.serverSide.closed.waitFor(1)
        self.assertRaises(ServerError, server.getClientIp, self.clientId)


class TcpReadClientDataTests(_ReadClientDataTests, BlockingTestCase):
    """
    C{General_TcpServer_Test_ReadClientData}.
    """


class TlsReadClientDataTests(_ReadClientDataTests, BlockingTestCase):
    """
    C{General_TlsServer_Test_ReadClientData}.
    """

    tls = True

    def test_posTestReadClientSubjectPart(self) -> None:
        """
        A part of the client certificate's subject is read, named by the
        original's NID (15, C{NID_localityName}), a short name or a
        L{NameOID}.
        """
        server = self.serverSide.server
        self.assertEqual(server.getSubjPartFromClientCert(self.clientId, 15), "my city")
        self.assertEqual(server.getSubjPartFromClientCert(self.clientId, "L"), "my city")
        self.assertEqual(
            server.getSubjPartFromClientCert(self.clientId, NameOID.LOCALITY_NAME), "my city"
        )
        parts = {13: "client", 14: "DE", 16: "my state", 17: "test", 18: "Client"}
        for nid, value in parts.items():
            self.assertEqual(server.getSubjPartFromClientCert(self.clientId, nid), value)

    def test_negTestReadClientSubjectPartNotConnected(self) -> None:
        """
        An id that is not connected: L{ServerError}.
        """
        self.assertRaises(ServerError, self.serverSide.server.getSubjPartFromClientCert, 0, 15)

    def test_negTestReadClientSubjectPartInvalidNid(self) -> None:
        """
        C{NID_undef} (0), an unknown name, or a part the subject lacks
        (emailAddress, 48): L{ServerError}.
        """
        server = self.serverSide.server
        for part in (0, -1, 999, "XX", 48, "emailAddress", None):
            self.assertRaises(ServerError, server.getSubjPartFromClientCert, self.clientId, part)


class SubjectWithoutClientCertificateTests(BlockingTestCase):
    """
    The original crashes reading the subject of a client that presented no
    certificate (B12); here it is a L{ServerError}.
    """

    tls = True

    def test_noCertificate(self) -> None:
        side = self.makeServer(DELIMITER)
        self.startServer(side, clientAuth=False)
        client = self.makeClient(DELIMITER)
        self.startClient(client, side.port, cert="", key="")
        clientId = side.established.waitFor(1)[0]
        with self.assertRaises(ServerError) as raised:
            side.server.getSubjPartFromClientCert(clientId, 13)
        self.assertIn("no certificate", str(raised.exception))

    def test_tcpServerHasNoSubjectGetter(self) -> None:
        """
        Subject parts exist only on TLS servers.
        """
        self.assertFalse(hasattr(TcpServer(), "getSubjPartFromClientCert"))


class TlsReadServerDataTests(BlockingTestCase):
    """
    C{General_TlsClient_Test_ReadServerData}.
    """

    tls = True

    def setUp(self) -> None:
        self.serverSide = self.server(DELIMITER)
        self.clientSide, _ = self.connect(self.serverSide, DELIMITER)

    def test_posTestReadServerSubjectPart(self) -> None:
        """
        A part of the server certificate's subject is read.
        """
        client = self.clientSide.client
        self.assertEqual(client.getSubjPartFromServerCert(15), "my city")
        self.assertEqual(client.getSubjPartFromServerCert("OU"), "server")
        self.assertEqual(client.getSubjPartFromServerCert(NameOID.COMMON_NAME), "localhost")

    def test_negTestReadServerSubjectPart(self) -> None:
        """
        After the client stopped: L{ClientError}.
        """
        client = self.clientSide.client
        client.stop()
        self.assertRaises(ClientError, client.getSubjPartFromServerCert, 15)

    def test_negTestReadServerSubjectPartInvalidNid(self) -> None:
        """
        C{NID_undef}, an unknown name or an absent part: L{ClientError}.
        """
        client = self.clientSide.client
        for part in (0, 999, "XX", 48):
            self.assertRaises(ClientError, client.getSubjPartFromServerCert, part)


class TlsConnectTests(BlockingTestCase):
    """
    C{General_TlsConnection_Test_Connect}.
    """

    tls = True

    def assertConnects(
        self, serverCerts: tuple[str, str, str], clientCerts: tuple[str, str, str]
    ) -> None:
        side = self.makeServer(DELIMITER)
        self.startServer(side, *serverCerts)
        client = self.makeClient(DELIMITER)
        self.startClient(client, side.port, *clientCerts)
        self.assertTrue(client.client.isRunning())
        side.established.waitFor(1)
        self.assertEqual(len(side.server.getAllClientIds()), 1)

    def assertRejected(
        self,
        serverCerts: tuple[str, str, str],
        clientCerts: tuple[str, str, str],
        error: type[Exception],
    ) -> None:
        side = self.makeServer(DELIMITER)
        self.startServer(side, *serverCerts)
        client = self.makeClient(DELIMITER)
        with self.assertRaises(StartError) as raised:
            self.startClient(client, side.port, *clientCerts)
        self.assertEqual(raised.exception.code, 60, str(raised.exception))
        self.assertIsInstance(raised.exception, error)
        self.assertFalse(client.client.isRunning())
        self.assertFalse(client.client.sendMsg(b"x"))
        self.assertEqual(side.server.getAllClientIds(), [])
        self.assertEqual(len(side.established), 0)

    def main(self) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
        certs = self.certs
        return (certs.ca, certs.server, certs.serverKey), (certs.ca, certs.client, certs.clientKey)

    def test_posTestMainCerts(self) -> None:
        """
        Good certificates on both sides: both start, one client.
        """
        self.assertConnects(*self.main())

    def test_posTestSecondCerts(self) -> None:
        """
        Good certificates of a second CA on both sides: both start.
        """
        path = self.certs.path
        self.assertConnects(
            (path("other-ca.pem"), path("other-server.pem"), path("other-server.key")),
            (path("other-ca.pem"), path("other-client.pem"), path("other-client.key")),
        )

    def test_negTestClientWithSelfSignedCert(self) -> None:
        """
        A client with a self-signed certificate is rejected by the server.
        The original's client starts (0) and dies a moment later (TLS 1.3
        verifies the client after the client's handshake); here C{start()}
        raises code 60 and the server never registers the client.
        """
        server, _ = self.main()
        path = self.certs.path
        self.assertRejected(
            server,
            (self.certs.ca, path("selfsigned.pem"), path("selfsigned.key")),
            ClientCertificateRejected,
        )

    def test_negTestClientWithUnknownCa(self) -> None:
        """
        A client certificate of another CA: rejected, code 60.
        """
        server, _ = self.main()
        path = self.certs.path
        self.assertRejected(
            server,
            (self.certs.ca, path("other-client.pem"), path("other-client.key")),
            ClientCertificateRejected,
        )

    def test_negTestClientWithCertChainDepth2(self) -> None:
        """
        A client certificate signed by a server certificate (chain depth 2):
        rejected, code 60.
        """
        deep = chainDepth2()
        self.assertRejected(
            (deep["ca"], deep["server"], deep["serverKey"]),
            (deep["ca"], deep["deepClient"], deep["deepClientKey"]),
            ClientCertificateRejected,
        )

    def test_negTestServerWithSelfSignedCert(self) -> None:
        """
        A server with a self-signed certificate: the client rejects it,
        code 60 (C{CLIENT_ERROR_START_CONNECT_INIT}).
        """
        _, client = self.main()
        path = self.certs.path
        self.assertRejected(
            (self.certs.ca, path("selfsigned.pem"), path("selfsigned.key")),
            client,
            ServerCertificateRejected,
        )

    def test_negTestServerWithUnknownCa(self) -> None:
        """
        A server certificate of another CA: code 60.
        """
        _, client = self.main()
        path = self.certs.path
        self.assertRejected(
            (self.certs.ca, path("other-server.pem"), path("other-server.key")),
            client,
            ServerCertificateRejected,
        )

    def test_negTestServerWithCertChainDepth2(self) -> None:
        """
        A server certificate signed by a server certificate: code 60.
        """
        deep = chainDepth2()
        self.assertRejected(
            (deep["ca"], deep["deepServer"], deep["deepServerKey"]),
            (deep["ca"], deep["client"], deep["clientKey"]),
            ServerCertificateRejected,
        )

    def test_wrongHostname(self) -> None:
        """
        Unlike the original, a verifying client checks the host name: a
        server certificate for another name is rejected (60), unless the
        client is made with C{verifyHostname=False}.
        """
        _, client = self.main()
        path = self.certs.path
        self.assertRejected(
            (self.certs.ca, path("wronghost.pem"), path("wronghost.key")),
            client,
            ServerCertificateRejected,
        )
        side = self.makeServer(DELIMITER)
        self.startServer(side, self.certs.ca, path("wronghost.pem"), path("wronghost.key"))
        lenient = self.makeClient(DELIMITER, verifyHostname=False)
        self.startClient(lenient, side.port)
        self.assertTrue(lenient.client.isRunning())

    def test_noSubjectAltName(self) -> None:
        """
        A server certificate of the right CA without any subjectAltName (as
        the original's certificate script makes them) is refused (60), with
        CN = another host or CN = the host connected to; accepted with
        C{verifyHostname=False}.
        """
        _, client = self.main()
        path = self.certs.path
        for name in ("nosan-wronghost", "nosan-localhost"):
            self.assertRejected(
                (self.certs.ca, path(f"{name}.pem"), path(f"{name}.key")),
                client,
                ServerCertificateRejected,
            )
        side = self.makeServer(DELIMITER)
        self.startServer(
            side, self.certs.ca, path("nosan-wronghost.pem"), path("nosan-wronghost.key")
        )
        lenient = self.makeClient(DELIMITER, verifyHostname=False)
        self.startClient(lenient, side.port, *client)
        self.assertTrue(lenient.client.isRunning())

    def test_localhost(self) -> None:
        """
        The upstream tests connect to C{"localhost"}: the name is resolved
        and checked against the server certificate.
        """
        server, clientCerts = self.main()
        side = self.makeServer(DELIMITER)
        self.startServer(side, *server)
        client = self.makeClient(DELIMITER)
        self.startClient(client, side.port, *clientCerts, host="localhost")
        self.assertEqual(client.client.getSubjPartFromServerCert("CN"), "localhost")


class TlsIncompleteCertTests(BlockingTestCase):
    """
    C{General_TlsConnection_Test_IncompleteCert}: authentication flags are
    ignored without a CA; a client without a certificate is fine when the
    server does not require one; a client that does not verify accepts a
    self-signed server.  Each case: both start, the server has one client,
    and a message goes through.
    """

    tls = True

    def assertConnects(
        self, server: tuple[str, str, str, bool], client: tuple[str, str, str, bool]
    ) -> None:
        side = self.makeServer(DELIMITER)
        ca, cert, key, clientAuth = server
        self.startServer(side, ca, cert, key, clientAuth=clientAuth)
        clientSide = self.makeClient(DELIMITER)
        ca, cert, key, serverAuth = client
        self.startClient(clientSide, side.port, ca, cert, key, serverAuth=serverAuth)
        self.assertTrue(clientSide.client.isRunning())
        clientId = side.established.waitFor(1)[0]
        self.assertEqual(side.server.getAllClientIds(), [clientId])
        self.assertTrue(clientSide.client.sendMsg(b"hello"))
        self.assertEqual(side.messages.waitFor(1), [(clientId, b"hello")])

    def serverAll(self, clientAuth: bool) -> tuple[str, str, str, bool]:
        return (self.certs.ca, self.certs.server, self.certs.serverKey, clientAuth)

    def serverSelfSigned(self, ca: str, clientAuth: bool) -> tuple[str, str, str, bool]:
        path = self.certs.path
        return (ca, path("selfsigned.pem"), path("selfsigned.key"), clientAuth)

    def clientAll(self, serverAuth: bool) -> tuple[str, str, str, bool]:
        return (self.certs.ca, self.certs.client, self.certs.clientKey, serverAuth)

    def test_posTestServerAllClientNoneFF(self) -> None:
        self.assertConnects(self.serverAll(False), ("", "", "", False))

    def test_posTestServerAllClientNoneFT(self) -> None:
        self.assertConnects(self.serverAll(False), ("", "", "", True))

    def test_posTestServerAllClientCAFF(self) -> None:
        self.assertConnects(self.serverAll(False), (self.certs.ca, "", "", False))

    def test_posTestServerAllClientCAFT(self) -> None:
        self.assertConnects(self.serverAll(False), (self.certs.ca, "", "", True))

    def test_posTestServerNoneClientAllFF(self) -> None:
        self.assertConnects(self.serverSelfSigned("", False), self.clientAll(False))

    def test_posTestServerNoneClientAllTF(self) -> None:
        self.assertConnects(self.serverSelfSigned("", True), self.clientAll(False))

    def test_posTestServerCAClientAllFF(self) -> None:
        self.assertConnects(self.serverSelfSigned(self.certs.ca, False), self.clientAll(False))

    def test_posTestServerCAClientAllTF(self) -> None:
        self.assertConnects(self.serverSelfSigned(self.certs.ca, True), self.clientAll(False))

    def test_posTestServerNoneClientNoneFF(self) -> None:
        self.assertConnects(self.serverSelfSigned("", False), ("", "", "", False))

    def test_posTestServerNoneClientNoneTT(self) -> None:
        self.assertConnects(self.serverSelfSigned("", True), ("", "", "", True))

    def test_noClientAuthenticationDoesNotAskForCertificates(self) -> None:
        """
        With client authentication off the server asks for no certificate
        (as the original), so a client certificate of another CA is no
        obstacle, and the server reads no subject from it.
        """
        side = self.makeServer(DELIMITER)
        self.startServer(side, clientAuth=False)
        client = self.makeClient(DELIMITER)
        path = self.certs.path
        self.startClient(
            client, side.port, self.certs.ca, path("other-client.pem"), path("other-client.key")
        )
        clientId = side.established.waitFor(1)[0]
        self.assertRaises(ServerError, side.server.getSubjPartFromClientCert, clientId, 13)

    def test_serverAuthenticationOnRejectsSelfSigned(self) -> None:
        """
        The counterpart of the cases above: with a CA and server
        authentication on, the self-signed server is rejected (60).
        """
        side = self.makeServer(DELIMITER)
        self.startServer(side, *self.serverSelfSigned("", False)[:3], clientAuth=False)
        client = self.makeClient(DELIMITER)
        with self.assertRaises(StartError) as raised:
            self.startClient(client, side.port, *self.clientAll(True)[:3], serverAuth=True)
        self.assertEqual(raised.exception.code, 60)


class ConstructionTests(BlockingTestCase):
    """
    The constructor spellings of the original and the seed README.
    """

    def test_seedSpelling(self) -> None:
        """
        C{TcpServer(b"|", 4096)}: the number is the maximum message length.
        """
        server = TcpServer(b"|", 4096)
        self.assertFalse(server.continuous)
        self.addCleanup(server.stop)
        side = self.server(b"|", 4096)
        client, clientId = self.connect(side, "|", maxMessageLength=4096)
        self.assertFalse(client.client.sendMsg(b"x" * 4097))
        self.assertTrue(client.client.sendMsg(b"x" * 4096))
        self.assertEqual(side.messages.waitFor(1), [(clientId, b"x" * 4096)])
        self.assertRaises(TypeError, TcpServer, b"|", 4096, 10)

    def test_delimiterSpellings(self) -> None:
        """
        The delimiter may be bytes, text or a byte value (the original's
        C{char}, e.g. C{'\\0'} as 0); C{None} selects continuous mode.
        """
        for delimiter in (b"\0", "\0", 0):
            side = self.server(delimiter)
            client, clientId = self.connect(side, delimiter)
            self.assertTrue(client.client.sendMsg("a"))
            self.assertEqual(side.messages.waitFor(1), [(clientId, b"a")])
        self.assertTrue(TcpServer().continuous)
        self.assertTrue(TcpClient(None).continuous)
        self.assertRaises(ValueError, TcpServer, b"")
        self.assertRaises(ValueError, TcpServer, 256)
        self.assertRaises(ValueError, TcpServer, None, b"append")
        self.assertRaises(ValueError, TcpServer, b"|", b"a|b")

    def test_oneHome(self) -> None:
        """
        The blocking classes are imported from C{tcpsc.blocking}, their one
        home; C{import tcpsc} neither exports them nor loads the blocking
        layer (a fresh interpreter shows what it loads).  Their old names
        (C{tcpsc.TcpServer}) still work, with a L{DeprecationWarning} that
        says where they went.
        """
        program = textwrap.dedent("""
            import sys
            import warnings
            import tcpsc
            names = ("TcpServer", "TlsServer", "TcpClient", "TlsClient", "ReactorThreadError")
            blockingModules = ("tcpsc.blocking", "tcpsc._output", "tcpsc._workers",
                               "tcpsc._reactorthread")
            print([name for name in names if name in tcpsc.__all__])
            print(sorted(m for m in sys.modules if m in blockingModules))
            import tcpsc.blocking
            for name in names:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    value = getattr(tcpsc, name)
                print(name, value is getattr(tcpsc.blocking, name),
                      [(w.category.__name__, str(w.message)) for w in caught])
            print(hasattr(tcpsc, "NoSuchName"))
        """)
        result = subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=_environment(),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[:2], ["[]", "[]"])
        self.assertEqual(
            lines[2],
            "TcpServer True [('DeprecationWarning', 'tcpsc.TcpServer is "
            "deprecated: import it from tcpsc.blocking (from "
            "tcpsc.blocking import TcpServer)')]",
        )
        self.assertEqual(len(lines), 8)
        for line in lines[3:7]:
            self.assertIn(" True [('DeprecationWarning', ", line)
        self.assertEqual(lines[7], "False")

    def test_clientOutputSpelling(self) -> None:
        """
        C{TcpClient(stream)}, as the original's C{TcpClient(std::ostream&)}:
        continuous mode writing to that stream.
        """
        stream = StreamRecorder()
        client = TcpClient(stream)
        self.assertTrue(client.continuous)
        self.assertIs(client.output, stream)

    def test_workersMustBeCallable(self) -> None:
        server = TlsServer(b"\n")
        self.assertRaises(TypeError, server.setWorkOnMessage, "nope")
        self.assertRaises(TypeError, TlsClient(b"\n").setWorkOnClosed, 42)


class LifecycleTests(BlockingTestCase):
    """
    Start and stop, as the original promises them.
    """

    def test_stopClosesEveryConnection(self) -> None:
        """
        C{stop()} closes every connection, runs the closed worker for each
        before it returns, and the clients see the end.
        """
        side = self.server(DELIMITER)
        clients = [self.connect(side, DELIMITER) for _ in range(4)]
        side.server.stop()
        self.assertEqual(sorted(side.closed.snapshot()), sorted(i for _, i in clients))
        self.assertEqual(side.server.getAllClientIds(), [])
        self.assertFalse(side.server.isRunning())
        self.assertIsNone(side.server.port)
        for client, _ in clients:
            reason = client.closed.waitFor(1)[0]
            self.assertIsInstance(reason, ConnectionDone)
            self.assertFalse(client.client.isRunning())
            self.assertFalse(client.client.sendMsg(b"x"))

    def test_startRaisesOpenFileLimit(self) -> None:
        """
        C{start()}, where a program starts serving, raises the process's
        soft limit of open files to what C{maxConnections} needs (and the
        constructor leaves it alone): a real process whose limit is lower.
        """
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 1000 + 64:
            raise SkipTest(f"the hard limit of open files ({hard}) is below 1064")
        program = textwrap.dedent("""
            import resource
            from tcpsc.blocking import TcpServer
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
            server = TcpServer(b"\\n", maxConnections=1000)
            made = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            server.start(0, interface="127.0.0.1")
            started = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            server.stop()
            print(made, started)
        """)
        result = subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=_environment(),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split(), ["256", "1064"])

    def test_stopTwice(self) -> None:
        """
        C{stop()} of a stopped server, or of one never started, does
        nothing.
        """
        TcpServer().stop()
        TlsClient().stop()
        side = self.server(DELIMITER)
        side.server.stop()
        side.server.stop()
        self.assertFalse(side.server.isRunning())

    def test_contextManager(self) -> None:
        """
        Leaving a C{with} block stops the server or client.
        """
        with TcpServer(DELIMITER) as server:
            port = server.start(0, interface="127.0.0.1")
            with TcpClient(DELIMITER) as client:
                client.start("127.0.0.1", port)
            self.assertFalse(client.isRunning())
        self.assertFalse(server.isRunning())

    def test_clientSeesServerClose(self) -> None:
        """
        When the server closes, the client's C{isRunning()} turns false and
        its closed worker fires (the original has only C{isRunning()}).
        """
        side = self.server(DELIMITER)
        client, _ = self.connect(side, DELIMITER)
        side.server.stop()
        client.closed.waitFor(1)
        self.assertFalse(client.client.isRunning())

    def test_workersRunOffTheReactorThread(self) -> None:
        """
        Workers run on worker threads: neither the caller's thread nor the
        reactor thread.
        """
        threads = Recorder()
        side = self.makeServer(DELIMITER)
        side.server.setWorkOnEstablished(lambda i: threads(threading.current_thread()))
        self.startServer(side)
        client = self.makeClient(DELIMITER)
        self.startClient(client, side.port)
        worker = threads.waitFor(1)[0]
        self.assertNotEqual(worker, threading.current_thread())
        self.assertNotEqual(worker.name, "tcpsc-reactor")
        self.assertTrue(worker.daemon)


class ReactorThreadTests(BlockingTestCase):
    """
    Calling the blocking API from the reactor thread is refused with a
    clear error instead of a deadlock.
    """

    def test_startInReactorThread(self) -> None:
        from tcpsc._reactorthread import sharedReactorThread

        errors = Recorder()
        server = TcpServer(DELIMITER)
        client = TcpClient(DELIMITER)

        def inReactor() -> None:
            for call in (lambda: server.start(0), lambda: client.start("127.0.0.1", 1)):
                try:
                    call()
                except ReactorThreadError as e:
                    errors(e)
                else:  # pragma: no cover - the failure this test looks for
                    errors(None)

        sharedReactorThread().callFromThread(inReactor)
        found = errors.waitFor(2)
        self.assertTrue(all(isinstance(e, ReactorThreadError) for e in found), found)
        self.assertIn("Twisted-native API", str(found[0]))
        self.assertFalse(server.isRunning())


class IPv6Tests(BlockingTestCase):
    """
    C{getClientIp} returns IPv6 addresses too (the original is IPv4 only).
    """

    def test_ipv6(self) -> None:
        try:
            probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            probe.bind(("::1", 0))
            probe.close()
        except OSError:
            raise self.skipTest("no IPv6 loopback") from None
        server = TcpServer(DELIMITER)
        self.addCleanup(server.stop)
        established = Recorder()
        server.setWorkOnEstablished(established)
        port = server.start(0, interface="::1")
        client = TcpClient(DELIMITER)
        self.addCleanup(client.stop)
        client.start("::1", port)
        clientId = established.waitFor(1)[0]
        self.assertEqual(server.getClientIp(clientId), "::1")


class ServerSettingsTests(BlockingTestCase):
    """
    The server settings of L{tcpsc.Server} that the blocking servers pass
    through: C{allowedClients} (TLS), C{maxConnectionsPerPeer} and
    C{idleTimeout}.
    """

    tls = True

    def startRejected(self, side: ServerSide) -> ClientSide:
        """
        Start a client the server will not serve; return it once it is
        closed (at C{start}, or soon after it).
        """
        client = self.makeClient(DELIMITER)
        try:
            self.startClient(client, side.port)
        except StartError:
            return client
        client.closed.waitFor(1)
        return client

    def test_allowedClients(self) -> None:
        """
        A client whose certificate names none of C{allowedClients} is never
        established; one that is named is served.
        """
        refusing = self.makeServer(DELIMITER, allowedClients={"someone else"})
        self.startServer(refusing)
        self.assertEqual(refusing.server.allowedClients, frozenset({"someone else"}))
        self.startRejected(refusing)
        self.assertEqual(len(refusing.established), 0)
        self.assertEqual(refusing.server.getAllClientIds(), [])

        serving = self.makeServer(DELIMITER, allowedClients=["client"])
        self.startServer(serving)
        _, clientId = self.connect(serving, DELIMITER)
        self.assertEqual(serving.server.getAllClientIds(), [clientId])

    def test_allowedClientsNeedClientAuthentication(self) -> None:
        """
        C{allowedClients} without client authentication cannot work: C{start}
        fails with code 30 and says why.
        """
        side = self.makeServer(DELIMITER, allowedClients={"client"})
        with self.assertRaises(StartError) as raised:
            self.startServer(side, clientAuth=False)
        self.assertEqual(raised.exception.code, 30)
        self.assertIn("allowedClients", str(raised.exception))

    def test_allowedClientsIsACollection(self) -> None:
        """
        One name given as a string is a mistake (it would allow its letters).
        """
        self.assertRaises(TypeError, TlsServer, DELIMITER, allowedClients="client")

    def test_maxConnectionsPerPeer(self) -> None:
        """
        With C{maxConnectionsPerPeer=1} a second connection from the same
        address is closed; the first stays.
        """
        side = self.makeServer(DELIMITER, tls=False, maxConnectionsPerPeer=1)
        self.startServer(side)
        first, clientId = self.connect(side, DELIMITER, tls=False)
        second = self.makeClient(DELIMITER, tls=False)
        try:
            self.startClient(second, side.port)
        except StartError:
            pass
        else:
            second.closed.waitFor(1)
        self.assertEqual(side.server.getAllClientIds(), [clientId])
        self.assertTrue(first.client.sendMsg(b"still here"))
        self.assertEqual(side.messages.waitFor(1), [(clientId, b"still here")])

    def test_logConnections(self) -> None:
        """
        C{logConnections} reaches the server (on by default).
        """
        self.assertTrue(TcpServer(DELIMITER).logConnections)
        side = self.makeServer(DELIMITER, tls=False, logConnections=False)
        self.startServer(side)
        self.assertIs(side.server._core.logConnections, False)  # type: ignore[union-attr]

    def test_oneSettingsValue(self) -> None:
        """
        The constructor's arguments make one checked L{tcpsc.Settings}
        value: the server's limits read it, setting one replaces it with a
        checked copy, a value out of range is refused where the object is
        made, and the core server is made with its fields.
        """
        server = TcpServer(b"|", 4096, maxConnections=7, idleTimeout=30.0)
        self.assertEqual(
            server.settings,
            Settings(
                delimiter=b"|",
                messageAppend=b"",
                maxMessageLength=4096,
                maxConnections=7,
                idleTimeout=30.0,
            ),
        )
        self.assertEqual((server.maxConnections, server.idleTimeout), (7, 30.0))
        server.closeTimeout = 2.0
        self.assertEqual(server.settings.closeTimeout, 2.0)
        with self.assertRaises(ValueError):
            server.idleTimeout = -1
        self.assertEqual(TcpServer().settings, Settings())
        self.assertEqual(TcpClient(b"|").settings, Settings(delimiter=b"|", messageAppend=b""))
        with self.assertRaises(ValueError) as raised:
            TcpServer(b"|", maxConnections=0)
        self.assertEqual(str(raised.exception), "maxConnections must be at least 1, not 0")
        side = self.makeServer(
            DELIMITER,
            100,
            tls=False,
            maxConnections=7,
            maxConnectionsPerPeer=3,
            idleTimeout=30.0,
            closeTimeout=2.0,
            firstByteTimeout=4.0,
            handshakeTimeout=6.0,
        )
        self.startServer(side)
        core: Any = side.server._core
        self.assertEqual(
            (
                core.maxConnections,
                core.maxConnectionsPerPeer,
                core.idleTimeout,
                core.closeTimeout,
                core.firstByteTimeout,
                core.handshakeTimeout,
            ),
            (7, 3, 30.0, 2.0, 4.0, 6.0),
        )
        _, clientId = self.connect(side, DELIMITER, tls=False)
        self.assertEqual(core.connection(clientId).maxMessageLength, 100)

    def test_idleTimeout(self) -> None:
        """
        A connection that sends nothing for C{idleTimeout} seconds is closed
        by the server.
        """
        side = self.makeServer(DELIMITER, tls=False, idleTimeout=0.3)
        self.startServer(side)
        client, clientId = self.connect(side, DELIMITER, tls=False)
        self.assertEqual(side.closed.waitFor(1), [clientId])
        client.closed.waitFor(1)


class SilentPeerTests(BlockingTestCase):
    """
    The blocking C{stop()}s end against a TLS peer that is not tcpsc and
    never answers close_notify (L{tests._silentpeer}): a close does not wait
    for the peer's answer.
    """

    tls = True

    def silentPeer(self, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests._silentpeer", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_environment(),
        )

        def end() -> None:
            if process.poll() is None:
                process.kill()
            process.wait(TIMEOUT)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()

        self.addCleanup(end)
        return process

    def assertReturns(self, stop: Callable[[], None]) -> None:
        """
        C{stop()} returns within L{TIMEOUT}, in a thread of its own so that
        a hang fails the test rather than blocking it.
        """
        thread = threading.Thread(target=stop)
        thread.start()
        thread.join(TIMEOUT)
        self.assertFalse(thread.is_alive(), "stop() did not return")

    def test_clientStop(self) -> None:
        peer = self.silentPeer("server", self.certs.server, self.certs.serverKey)
        assert peer.stdout is not None
        port = int(peer.stdout.readline())
        side = self.makeClient(DELIMITER)
        self.startClient(side, port, host="localhost")
        self.assertTrue(side.client.sendMsg(b"hello"))
        self.assertReturns(side.client.stop)
        self.assertFalse(side.client.isRunning())

    def test_serverStop(self) -> None:
        side = self.makeServer(DELIMITER)
        port = self.startServer(side)
        certs = self.certs
        peer = self.silentPeer("client", str(port), certs.ca, certs.client, certs.clientKey)
        assert peer.stdout is not None
        self.assertEqual(peer.stdout.readline(), "ready\n")
        waitUntil(lambda: side.server.getAllClientIds())
        self.assertReturns(side.server.stop)
        self.assertEqual(side.server.getAllClientIds(), [])
