"""
Testing your own tcpsc protocol in memory with L{tcpsc.testing}: no socket,
no real reactor, no waiting; TLS included.  Run it with

    python -m twisted.trial examples.test_inmemory

from the root of the checkout (tcpsc's own test suite runs it too).
"""

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tcpsc import (
    Client,
    ClientCertificateRejected,
    MessageProtocol,
    Server,
    TLSConfig,
)
from tcpsc.testing import MemoryNetwork


@functools.cache
def certificates():
    """
    Certificates made once with the C{tcpsc certs} command: a CA, the
    server's for localhost, and a client "ada" in C{ours/}; a stranger
    "mallory", issued by a CA of its own, in C{theirs/}.
    """
    directory = Path(tempfile.mkdtemp(prefix="greeter-certs-"))
    atexit.register(shutil.rmtree, directory, True)
    for subdirectory, client in (("ours", "ada"), ("theirs", "mallory")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tcpsc",
                "certs",
                "--client",
                client,
                str(directory / subdirectory),
            ],
            check=True,
            capture_output=True,
        )
    return directory


class Greeter(MessageProtocol):
    """
    The protocol under test: greets each client by the name it sends, and
    closes idle connections itself.
    """

    def connectionReady(self):
        self.sendMessage(b"who are you?")

    def messageReceived(self, message):
        self.sendMessage(b"hello, " + message)


class GreeterTests(SynchronousTestCase):
    def setUp(self):
        self.network = MemoryNetwork()
        self.server = Server(Greeter, idleTimeout=60, reactor=self.network.reactor)
        self.server.listen(8081)
        self.received = []
        self.client = Client(onMessage=self.received.append, reactor=self.network.reactor)

    def test_greeting(self):
        """
        The server asks first, then greets by name.
        """
        connected = self.client.connect("127.0.0.1", 8081)
        self.network.flush()
        self.successResultOf(connected)
        self.client.send(b"Ada")
        self.network.flush()
        self.assertEqual(self.received, [b"who are you?", b"hello, Ada"])

    def test_idleTimeout(self):
        """
        A minute without traffic closes the connection: no test waits a
        minute for it.  (A client that never sends anything is closed
        sooner, by the server's C{firstByteTimeout}.)
        """
        connected = self.client.connect("127.0.0.1", 8081)
        self.network.flush()
        self.successResultOf(connected)
        self.client.send(b"Ada")
        self.network.flush()
        self.network.advance(59)
        self.assertTrue(self.client.isConnected)
        self.network.advance(1)
        self.assertFalse(self.client.isConnected)


class GreeterTLSTests(SynchronousTestCase):
    """
    The same protocol over TLS 1.3 with client certificates, made for the
    test.
    """

    def setUp(self):
        self.directory = certificates()
        ours = self.directory / "ours"
        self.network = MemoryNetwork()
        self.server = Server(Greeter, reactor=self.network.reactor)
        self.server.listen(
            8443,
            tls=TLSConfig(
                ca=str(ours / "ca.pem"), cert=str(ours / "server.pem"), key=str(ours / "server.key")
            ),
        )

    def clientTLS(self, name):
        issuer = self.directory / ("ours" if name == "ada" else "theirs")
        return TLSConfig(
            ca=str(self.directory / "ours" / "ca.pem"),
            cert=str(issuer / f"{name}.pem"),
            key=str(issuer / f"{name}.key"),
        )

    def test_knownClient(self):
        """
        A client certificate from the CA: greeted, and known by its CN.
        """
        received = []
        client = Client(onMessage=received.append, reactor=self.network.reactor)
        connected = client.connect("localhost", 8443, tls=self.clientTLS("ada"))
        self.network.flush()
        self.successResultOf(connected)
        (clientId,) = self.server.clientIds()
        self.assertEqual(self.server.clientSubjectPart(clientId, "CN"), "ada")
        self.assertEqual(received, [b"who are you?"])

    def test_strangerRejected(self):
        """
        A certificate from another CA: the handshake fails, and the client
        knows it was its certificate.
        """
        client = Client(reactor=self.network.reactor)
        connected = client.connect("localhost", 8443, tls=self.clientTLS("mallory"))
        self.network.flush()
        self.failureResultOf(connected, ClientCertificateRejected)
        self.assertEqual(self.server.clientIds(), [])
