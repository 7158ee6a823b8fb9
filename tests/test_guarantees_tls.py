"""
TLS policy beyond the chain: the server's allow-list of client names
(L{TLSConfig.allowedClients}, the daemon's C{--allow-client}), checked once
the handshake is complete, and the warning about a private key file that
others may read.  (TLS 1.3 only and the required client certificate are
covered by L{tests.test_tls}.)
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tcpsc import Client, MessageProtocol, TLSConfig, TLSHandshakeError
from tcpsc import _certgen as certgen
from tcpsc.tap import Options, makeService
from tests.test_guarantees_support import (
    SHORT,
    GuaranteeTestCase,
    RawPeer,
    asyncTest,
    waitFor,
    within,
)


@cache
def pems() -> dict[str, tuple[bytes, bytes]]:
    """
    A CA and certificates issued by it, as PEM (certificate, key): the
    server (localhost), and clients C{alice} (CN only), C{service-7} (CN,
    and the DNS name C{svc.example}) and C{mallory}.
    """
    ca = certgen.makeCA("O=allow-list test,CN=allow-list test CA")
    issued = {
        "server": certgen.issueCertificate(
            ca, "CN=localhost", server=True, hosts=("localhost", "127.0.0.1")
        ),
        "alice": certgen.issueCertificate(ca, "O=test,CN=alice", client=True),
        "service": certgen.issueCertificate(
            ca, "O=test,CN=service-7", client=True, hosts=("svc.example",)
        ),
        "mallory": certgen.issueCertificate(ca, "O=test,CN=mallory", client=True),
    }
    result = {name: (i.certificatePEM(), i.keyPEM()) for name, i in issued.items()}
    result["ca"] = (ca.certificatePEM(), ca.keyPEM())
    return result


def serverConfig(allowed: Any) -> TLSConfig:
    p = pems()
    return TLSConfig(ca=p["ca"][0], cert=p["server"][0], key=p["server"][1], allowedClients=allowed)


def clientConfig(name: str) -> TLSConfig:
    p = pems()
    return TLSConfig(ca=p["ca"][0], cert=p[name][0], key=p[name][1])


class Watched(MessageProtocol):
    """
    Records which of its hooks ran, in a list shared by its class.
    """

    calls: list[str] = []

    def connectionReady(self) -> None:
        self.calls.append("connectionReady")

    def messageReceived(self, message: bytes) -> None:
        self.calls.append(f"message {message!r}")
        self.sendMessage(message)


class AllowListTests(GuaranteeTestCase):
    """
    A client is served if its certificate's CN, or one of its DNS names, is
    on the server's allow-list; otherwise it is disconnected right after
    the handshake and never established.
    """

    def setUp(self) -> None:
        self.calls: list[str] = []
        self.protocol = type("WatchedHere", (Watched,), {"calls": self.calls})

    async def serve(self, allowed: Any) -> tuple[Any, int, list[int]]:
        established: list[int] = []
        server, port = await self.startServer(
            self.protocol, tls=serverConfig(allowed), onEstablished=established.append
        )
        return server, port, established

    async def assertServed(self, port: int, name: str) -> None:
        received: list[bytes] = []
        client = await self.connectClient(port, tls=clientConfig(name), onMessage=received.append)
        self.assertTrue(client.send(b"hello"))
        await waitFor(lambda: received, SHORT, what="the echo to the client")
        self.assertEqual(received, [b"hello"])

    @asyncTest
    async def test_byCommonName(self) -> None:
        server, port, established = await self.serve(frozenset({"alice", "bob"}))
        await self.assertServed(port, "alice")
        self.assertEqual(len(established), 1)
        self.assertEqual(server.clientSubjectPart(established[0], "CN"), "alice")

    @asyncTest
    async def test_byDNSName(self) -> None:
        """
        A DNS subject alternative name counts, compared without regard to
        case; the list may be given as any collection.
        """
        _, port, established = await self.serve(["SVC.Example"])
        await self.assertServed(port, "service")
        self.assertEqual(len(established), 1)

    @asyncTest
    async def test_refused(self) -> None:
        """
        A client not on the list: its connect fails (the server closed the
        connection after the handshake), the server logs one warning with
        its CN, and neither C{onEstablished} nor the protocol's hooks run.
        """
        events = self.captureLogs()
        server, port, established = await self.serve(frozenset({"alice"}))
        client = Client()
        self.addCleanup(lambda: within(client.disconnect()))
        error = await within(
            self.assertFailure(
                client.connect("localhost", port, tls=clientConfig("mallory")), TLSHandshakeError
            )
        )
        self.assertEqual(error.code, 60)
        self.assertIn("after the TLS handshake", str(error))
        await waitFor(lambda: server.openConnections() == 0, SHORT)
        self.assertEqual(established, [])
        self.assertEqual(self.calls, [])
        refusals = self.warnings(events, "allow-list")
        self.assertEqual(len(refusals), 1, refusals)
        self.assertEqual(refusals[0]["clientCommonName"], "mallory")
        self.assertEqual(refusals[0]["reason"], "allowedClients")
        self.assertTrue(refusals[0]["peer"].startswith("127.0.0.1:"))
        # Nothing else is logged about it as a warning (once per event).
        self.assertEqual(len(self.warnings(events)), 1, self.warnings(events))
        # Others on the list are still served.
        await self.assertServed(port, "alice")

    @asyncTest
    async def test_refusedClientDataNeverDelivered(self) -> None:
        """
        A client that is not on the list and sends a message in the same
        flight as its handshake: the message is never delivered.
        """
        server, port, established = await self.serve(frozenset({"alice"}))
        p = pems()
        creator = optionsForClientTLS(
            "localhost",
            trustRoot=Certificate.loadPEM(p["ca"][0]),
            clientCertificate=PrivateCertificate.loadPEM(p["mallory"][0] + p["mallory"][1]),
        )

        class Sneaky(RawPeer):
            def connectionMade(self) -> None:
                super().connectionMade()
                self.transport.write(b"sneak\n")

        peer = Sneaky()
        endpoint = wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        with capturedLogs():
            await within(connectProtocol(endpoint, peer))
            await within(peer.lost)
        await waitFor(lambda: server.openConnections() == 0, SHORT)
        self.assertEqual(self.calls, [])
        self.assertEqual(established, [])
        self.assertEqual(bytes(peer.received), b"")


class TLSConfigTests(SynchronousTestCase):
    """
    C{allowedClients} is checked when the configuration is made.
    """

    def test_normalised(self) -> None:
        self.assertIsNone(TLSConfig().allowedClients)
        config = TLSConfig(ca=b"", allowedClients=["a", "b", "a"])
        self.assertEqual(config.allowedClients, frozenset({"a", "b"}))
        self.assertIsInstance(config.allowedClients, frozenset)

    def test_errors(self) -> None:
        with self.assertRaises(TypeError) as raised:
            TLSConfig(allowedClients="alice")
        self.assertIn("frozenset({'alice'})", str(raised.exception))
        self.assertRaises(TypeError, TLSConfig, allowedClients=["alice", ""])
        self.assertRaises(TypeError, TLSConfig, allowedClients=[b"alice"])
        with self.assertRaises(ValueError) as raised:
            TLSConfig(allowedClients={"alice"}, requireClientCertificate=False)
        self.assertIn("requireClientCertificate=False", str(raised.exception))


def writePEMs(directory: Path, keyMode: int = 0o600) -> dict[str, str]:
    """
    Write the CA, the server certificate and its key (with C{keyMode}).
    """
    directory.mkdir(parents=True, exist_ok=True)
    p = pems()
    paths = {
        "ca": directory / "ca.pem",
        "cert": directory / "server.pem",
        "key": directory / "server.key",
    }
    paths["ca"].write_bytes(p["ca"][0])
    paths["cert"].write_bytes(p["server"][0])
    paths["key"].write_bytes(p["server"][1])
    os.chmod(paths["key"], keyMode)
    return {name: str(path) for name, path in paths.items()}


class DaemonAllowListTests(GuaranteeTestCase):
    """
    C{twistd tcpsc --allow-client NAME} (repeatable).
    """

    @asyncTest
    async def test_allowClient(self) -> None:
        files = writePEMs(Path(self.mktemp()))
        options = Options()
        options.parseOptions(
            [
                "--port",
                "tcp:0:interface=127.0.0.1",
                "--tls",
                "--ca",
                files["ca"],
                "--cert",
                files["cert"],
                "--key",
                files["key"],
                "--allow-client",
                "alice",
                "--allow-client",
                "svc.example",
            ]
        )
        service = makeService(options, reactor=reactor)
        self.assertEqual(service.tls.allowedClients, frozenset({"alice", "svc.example"}))
        self.assertIn("clients allowed: alice, svc.example", service.description)
        with capturedLogs() as events:
            service.privilegedStartService()
            service.startService()
        self.addCleanup(service.stopService)
        port = service.server.ports[0].getHost().port
        for name in ("alice", "service"):
            received: list[bytes] = []
            client = await self.connectClient(
                port, tls=clientConfig(name), onMessage=received.append
            )
            client.send(name.encode())
            await waitFor(lambda received=received: received, SHORT, what="the echo to the client")
            self.assertEqual(received, [name.encode()])
        with capturedLogs() as events:
            client = Client()
            self.addCleanup(lambda: within(client.disconnect()))
            await within(
                self.assertFailure(
                    client.connect("localhost", port, tls=clientConfig("mallory")),
                    TLSHandshakeError,
                )
            )
            await waitFor(
                lambda: any("allow-list" in e.get("log_format", "") for e in events), SHORT
            )


class KeyPermissionTests(GuaranteeTestCase):
    """
    A private key file that group or others may read is reported at start,
    naming the file and its mode, once per file and mode.
    """

    def keyWarnings(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            e
            for e in events
            if e.get("log_level") == LogLevel.warn and "is readable by" in e.get("log_format", "")
        ]

    @asyncTest
    async def test_serverListen(self) -> None:
        files = writePEMs(Path(self.mktemp()), keyMode=0o644)
        config = TLSConfig(ca=files["ca"], cert=files["cert"], key=files["key"])
        events = self.captureLogs()
        server, _ = await self.startServer(tls=config)
        [warning] = self.keyWarnings(events)
        self.assertEqual(warning["path"], files["key"])
        self.assertEqual(warning["mode"], "0644")
        self.assertEqual(warning["readers"], "group and others")
        self.assertEqual(warning["owner"], "this server")
        # Once per file and mode: not again for a second port...
        await within(server.listen(0, "127.0.0.1", tls=config))
        self.assertEqual(len(self.keyWarnings(events)), 1)
        # ...but again once the mode changed, still readable by its group.
        os.chmod(files["key"], 0o640)
        await within(server.listen(0, "127.0.0.1", tls=config))
        self.assertEqual([w["mode"] for w in self.keyWarnings(events)], ["0644", "0640"])
        self.assertEqual(self.keyWarnings(events)[1]["readers"], "group")

    @asyncTest
    async def test_privateKeyNotReported(self) -> None:
        files = writePEMs(Path(self.mktemp()), keyMode=0o600)
        events = self.captureLogs()
        await self.startServer(tls=TLSConfig(ca=files["ca"], cert=files["cert"], key=files["key"]))
        self.assertEqual(self.keyWarnings(events), [])

    def test_daemon(self) -> None:
        """
        The daemon reports it when it starts (when it loads the
        certificates, before it listens).
        """
        files = writePEMs(Path(self.mktemp()), keyMode=0o604)
        options = Options()
        options.parseOptions(
            ["--tls", "--ca", files["ca"], "--cert", files["cert"], "--key", files["key"]]
        )
        with capturedLogs() as events:
            makeService(options, reactor=reactor)
        [warning] = self.keyWarnings(events)
        self.assertEqual(warning["path"], files["key"])
        self.assertEqual(warning["mode"], "0604")
        self.assertEqual(warning["readers"], "others")

    def test_clientKey(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir()
        p = pems()
        key = directory / "alice.key"
        key.write_bytes(p["alice"][1])
        os.chmod(key, 0o644)
        config = TLSConfig(ca=p["ca"][0], cert=p["alice"][0], key=str(key))
        with capturedLogs() as events:
            config.clientCreator("localhost")
        [warning] = self.keyWarnings(events)
        self.assertEqual(warning["owner"], "this client")
