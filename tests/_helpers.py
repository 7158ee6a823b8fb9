"""
Shared test helpers: certificate sets made with C{cryptography} (distinct CA
names, so that "unknown CA" is really that), waiting on conditions with a
timeout, and an in-memory TLS pair over L{twisted.test.iosim} with one shared
L{Clock}.
"""

from __future__ import annotations

import ast
import atexit
import linecache
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, wraps
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import TestCase

from tcpsc import _certgen as certgen
from tcpsc._tlstransport import TLSTransportFactory

# pyOpenSSL deprecates the X509/PKey objects that Twisted itself still passes
# around; the warnings come from inside Twisted, not from tcpsc.
warnings.filterwarnings("ignore", category=DeprecationWarning, module="OpenSSL")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="twisted.internet._sslverify")

#: Subject of the main set, as in the original's test certificates.
SUBJECT = "C=DE,ST=my state,L=my city,O=test"


@dataclass(frozen=True)
class CertFiles:
    """
    Paths of one certificate set.
    """

    directory: Path
    ca: str
    server: str
    serverKey: str
    client: str
    clientKey: str

    def path(self, name: str) -> str:
        return str(self.directory / name)


def _write(issued: certgen.Issued, directory: Path, name: str) -> tuple[str, str]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    issued.writeTo(cert, key, overwrite=True)
    return str(cert), str(key)


@cache
def certificates() -> CertFiles:
    """
    The main certificate set, made once per test process: a CA, a server
    certificate for localhost/127.0.0.1/::1 and a client certificate
    (CN=client), plus negative material in the same directory:

      - C{other-ca.pem}, and C{other-client.pem/.key} issued by it;
      - C{other-server.pem/.key}: a server certificate from the other CA;
      - C{wronghost.pem/.key}: server certificate of the main CA for
        C{wrong.example} only;
      - C{nosan-wronghost.pem/.key}, C{nosan-localhost.pem/.key}: server
        certificates of the main CA without any subjectAltName, with
        CN=wrong.example and CN=localhost (as the C++ original's script
        makes them);
      - C{iponly.pem/.key}: server certificate of the main CA whose only
        subjectAltName is the IP address 127.0.0.1;
      - C{expired-client.pem/.key}, C{expired-server.pem/.key}: issued by the
        main CA, expired yesterday;
      - C{notyet-client.pem/.key}: valid from tomorrow;
      - C{selfsigned.pem/.key}: a self-signed leaf;
      - C{fake.pem}: a text file that is not PEM.
    """
    directory = Path(tempfile.mkdtemp(prefix="tcpsc-test-certs-"))
    atexit.register(shutil.rmtree, directory, True)
    ca = certgen.makeCA(certgen.parseSubject(SUBJECT + ",OU=CA,CN=tcpsc test CA"))
    (directory / "ca.pem").write_bytes(ca.certificatePEM())
    hosts = ("localhost", "127.0.0.1", "::1")
    server = certgen.issueCertificate(
        ca, certgen.parseSubject(SUBJECT + ",OU=server,CN=localhost"), server=True, hosts=hosts
    )
    client = certgen.issueCertificate(
        ca, certgen.parseSubject(SUBJECT + ",OU=Client,CN=client"), client=True
    )
    serverPaths = _write(server, directory, "server")
    clientPaths = _write(client, directory, "client")

    other = certgen.makeCA("O=other,CN=other test CA")
    (directory / "other-ca.pem").write_bytes(other.certificatePEM())
    _write(
        certgen.issueCertificate(other, "CN=other-client", client=True), directory, "other-client"
    )
    _write(
        certgen.issueCertificate(other, "CN=localhost", server=True, hosts=hosts),
        directory,
        "other-server",
    )
    _write(
        certgen.issueCertificate(ca, "CN=wrong.example", server=True, hosts=("wrong.example",)),
        directory,
        "wronghost",
    )
    _write(
        certgen.issueCertificate(ca, "CN=wrong.example", server=True), directory, "nosan-wronghost"
    )
    _write(certgen.issueCertificate(ca, "CN=localhost", server=True), directory, "nosan-localhost")
    _write(
        certgen.issueCertificate(ca, "CN=127.0.0.1", server=True, hosts=("127.0.0.1",)),
        directory,
        "iponly",
    )
    now = datetime.now(UTC)
    _write(
        certgen.issueCertificate(
            ca,
            "CN=expired-client",
            client=True,
            notBefore=now - timedelta(days=10),
            notAfter=now - timedelta(days=1),
        ),
        directory,
        "expired-client",
    )
    _write(
        certgen.issueCertificate(
            ca,
            "CN=localhost",
            server=True,
            hosts=hosts,
            notBefore=now - timedelta(days=10),
            notAfter=now - timedelta(days=1),
        ),
        directory,
        "expired-server",
    )
    _write(
        certgen.issueCertificate(
            ca,
            "CN=notyet-client",
            client=True,
            notBefore=now + timedelta(days=1),
            notAfter=now + timedelta(days=10),
        ),
        directory,
        "notyet-client",
    )
    _write(certgen.makeSelfSigned("CN=localhost", hosts=hosts), directory, "selfsigned")
    (directory / "fake.pem").write_text("this is not a certificate\n")
    return CertFiles(directory, str(directory / "ca.pem"), *serverPaths, *clientPaths)


def describeCondition(condition: Callable[[], object]) -> str:
    """
    Say in words what C{condition} waits for, for a timeout's message: the
    source text of a lambda's expression (C{len(server.clientIds()) == 2}),
    or a function's name and the first line of its docstring, with the file
    and line where it was written; the C{repr} only when there is no source.
    """
    code = getattr(condition, "__code__", None)
    if code is None:
        return repr(condition)
    where = f"{_relative(code.co_filename)}:{code.co_firstlineno}"
    if code.co_name != "<lambda>":
        doc = (getattr(condition, "__doc__", None) or "").strip().splitlines()
        summary = f": {doc[0].strip()}" if doc else ""
        return f"{code.co_qualname}(){summary} ({where})"
    source = "".join(linecache.getlines(code.co_filename))
    try:
        tree = _parsed(source)
    except SyntaxError:
        return f"a lambda ({where})"
    candidates = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Lambda) and node.lineno == code.co_firstlineno
    ]
    if not candidates:
        return f"a lambda ({where})"
    # Several lambdas may start on one line: the one whose body holds the
    # code's instructions is this one.
    positions = [
        (line, column)
        for line, _, column, _ in code.co_positions()
        if line is not None and column is not None
    ]

    def contains(node: ast.Lambda) -> int:
        body = node.body
        start = (body.lineno, body.col_offset)
        end = (body.end_lineno or body.lineno, body.end_col_offset or 0)
        return sum(start <= position < end for position in positions)

    best = max(candidates, key=contains)
    text = ast.get_source_segment(source, best.body) or ast.unparse(best.body)
    return f"{' '.join(text.split())} ({where})"


@cache
def _parsed(source: str) -> ast.Module:
    return ast.parse(source)


def _relative(filename: str) -> str:
    try:
        return str(Path(filename).resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return filename


def waitFor(
    condition: Callable[[], object],
    timeout: float = 10.0,
    interval: float = 0.005,
    clock: IReactorTime = reactor,
    *,
    what: str | None = None,
) -> Deferred[None]:
    """
    Poll C{condition()} on the reactor until it is true; fail with
    C{AssertionError} after C{timeout} seconds.  This waits on an event (with
    a bound), it does not sleep a fixed time.

    @param what: what is awaited, in words, for the message of a timeout
        ("two connections registered"); the condition's own source text
        (L{describeCondition}) follows it, and stands alone without it.
    """

    async def poll() -> None:
        deadline = clock.seconds() + timeout
        while not (value := condition()):
            if clock.seconds() > deadline:
                raise AssertionError(_timedOut(condition, timeout, what, value))
            await deferLater(clock, interval, lambda: None)

    return Deferred.fromCoroutine(poll())


def _timedOut(
    condition: Callable[[], object], timeout: float, what: str | None, value: object
) -> str:
    described = describeCondition(condition)
    message = f"waited {timeout:g} s in vain for {what or described}"
    if what:
        message += f"; condition: {described}"
    if not isinstance(value, bool) and value is not None:
        shown = repr(value)
        message += f"; it was {shown[:200]}{'...' if len(shown) > 200 else ''}"
    return message


#: Bound of any single wait that should take milliseconds.
SHORT = 10.0

T = TypeVar("T")


def asyncTest(
    f: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., Deferred[None]]:
    """
    Let a test method be written as a coroutine: trial waits on the Deferred.
    This is the one style of the suite's asynchronous tests (see
    tests/README.md).

    @raise TypeError: the test case is a L{SynchronousTestCase}, which would
        drop the L{Deferred} and pass without running the coroutine.
    """

    @wraps(f)
    def wrapper(self: Any) -> Deferred[None]:
        if not isinstance(self, TestCase):
            raise TypeError(
                f"{f.__qualname__} is a coroutine: its test case must be a "
                f"twisted.trial.unittest.TestCase, not a SynchronousTestCase, "
                f"which would not wait for it"
            )
        return Deferred.fromCoroutine(f(self))

    return wrapper


def within(d: Deferred[T], seconds: float = SHORT) -> Deferred[T]:
    """
    Bound a wait: C{d} fails with L{twisted.internet.defer.TimeoutError}
    (and trial reports it) instead of hanging the test.
    """
    return d.addTimeout(seconds, reactor)


class RawPeer(Protocol):
    """
    A plain TCP peer: keeps what it receives, and when it was connected and
    disconnected.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Deferred[None] = Deferred()
        self.reason: Failure | None = None
        self.connectedAt: float | None = None
        self.lostAt: float | None = None
        self.address = ""

    def connectionMade(self) -> None:
        self.connectedAt = reactor.seconds()
        host = self.transport.getHost()
        self.address = f"{host.host}:{host.port}"

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lostAt = reactor.seconds()
        self.reason = reason
        self.lost.callback(None)

    def localAddress(self) -> str:
        """
        This peer's C{host:port}, as the server logs it.
        """
        return self.address

    def messages(self, delimiter: bytes = b"\n") -> list[bytes]:
        """
        The complete messages received so far.
        """
        return bytes(self.received).split(delimiter)[:-1]


def tlsPair(
    serverCreator, clientCreator, serverFactory, clientFactory, tlsFactory=TLSTransportFactory
):
    """
    Connect a server and a client factory in memory over TLS, with one
    L{Clock} shared by both TLS factories and the pump: without it, the
    TLS write aggregator of Twisted's TLS factories schedules its flushes on
    the real reactor, which the pump never runs.

    @param tlsFactory: the TLS wrapping factory of both sides: tcpsc's, as
        L{tcpsc.Server} and L{tcpsc.Client} use, unless a test asks for
        Twisted's L{TLSMemoryBIOFactory}.

    @return: C{(serverTLSProtocol, clientTLSProtocol, pump, clock)}.
    """
    clock = Clock()
    serverTLS = tlsFactory(serverCreator, isClient=False, wrappedFactory=serverFactory, clock=clock)
    clientTLS = tlsFactory(clientCreator, isClient=True, wrappedFactory=clientFactory, clock=clock)
    client, server, pump = iosim.connectedServerAndClient(
        lambda: serverTLS.buildProtocol(None),
        lambda: clientTLS.buildProtocol(None),
        greet=False,
        clock=clock,
    )
    pump.flush()
    return server, client, pump, clock


def openFileDescriptors() -> int:
    """
    How many file descriptors this process has open (Linux).
    """
    return len(os.listdir("/proc/self/fd"))
