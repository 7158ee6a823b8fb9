"""
Tests for L{tcpsc.tap} (the twistd plugin's options and service) and
L{tcpsc._apps} (what the daemon serves), in this process: options parsing,
the wiring of L{makeService}, and the service listening on a real port with
real clients.  L{tests.test_daemon} runs the real twistd.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tcpsc import (
    FROM_PROTOCOL,
    Client,
    ClientCertificateRejected,
    MessageProtocol,
    Settings,
    StreamProtocol,
    TLSConfig,
)
from tcpsc._apps import (
    Broadcast,
    Chat,
    Echo,
    Record,
    StreamEcho,
    _broadcasters,
    loadAppClass,
    recordRunDirectory,
    recordSink,
)
from tcpsc.tap import (
    DaemonStartError,
    Options,
    OutOfRange,
    TcpscService,
    _quietExceptHook,
    _settingsOf,
    makeService,
    parseCount,
    parseDelimiter,
    parsePortNumber,
    parseSeconds,
)

from ._helpers import asyncTest, certificates, waitFor

LOCAL = "tcp:0:interface=127.0.0.1"


class Shout(MessageProtocol):
    """
    A user's protocol for C{--app tests.test_tap:Shout}.
    """

    delimiter = b";"
    maxMessageLength = 50

    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(message.upper() + b"!")


class Tee(StreamProtocol):
    """
    A user's continuous-mode protocol.
    """


class NotAProtocol:
    """
    Not a tcpsc protocol.
    """


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class ParseDelimiterTests(SynchronousTestCase):
    """
    L{parseDelimiter} turns what users type into bytes.
    """

    def test_escapes(self) -> None:
        """
        The documented escapes and plain characters.
        """
        cases = {
            "\\n": b"\n",
            "\\r\\n": b"\r\n",
            "\\0": b"\0",
            "\\t": b"\t",
            "|": b"|",
            "\\x1e": b"\x1e",
            "\\x1E\\x1f": b"\x1e\x1f",
            "\\\\": b"\\",
            "<END>": b"<END>",
            "§": "§".encode(),
        }
        for text, expected in cases.items():
            self.assertEqual(parseDelimiter(text), expected, text)

    def test_errors(self) -> None:
        """
        Empty delimiters and unknown or incomplete escapes are refused with a
        message naming the problem.
        """
        cases = {
            "": "one or more bytes",
            "\\q": "unknown escape \\q",
            "\\x1": "two hex digits",
            "\\xzz": "two hex digits",
            "a\\": "lone backslash",
        }
        for text, expected in cases.items():
            with self.assertRaises(ValueError, msg=text) as raised:
                parseDelimiter(text)
            self.assertIn(expected, str(raised.exception))


class ParseNumberTests(SynchronousTestCase):
    """
    L{parseSeconds}, L{parseCount} and L{parsePortNumber}: the numbers the
    daemon's options and the C{tcpsc} command's read alike.
    """

    def test_seconds(self) -> None:
        """
        A finite number of seconds above 0 (or 0 too, if allowed), or
        C{None} for a word that turns it off.
        """
        self.assertEqual(parseSeconds("2.5"), 2.5)
        self.assertEqual(parseSeconds("0", allowZero=True), 0.0)
        self.assertIsNone(parseSeconds("Never", noneWords=("never",)))
        cases = [
            (("x",), {}, ValueError, "not a number of seconds"),
            (("none",), {}, ValueError, "not a number of seconds"),
            (("0",), {}, OutOfRange, "must be more than 0 seconds"),
            (("inf",), {}, OutOfRange, "must be more than 0 seconds"),
            (("nan",), {}, OutOfRange, "must be more than 0 seconds"),
            (("-1",), {"allowZero": True}, OutOfRange, "must be 0 or more seconds"),
        ]
        for args, kwargs, kind, message in cases:
            with self.assertRaises(kind, msg=args) as raised:
                parseSeconds(*args, **kwargs)
            self.assertEqual(str(raised.exception), message)

    def test_count(self) -> None:
        """
        A whole number of at least the minimum, or C{None} for a word that
        turns the limit off.
        """
        self.assertEqual(parseCount("7"), 7)
        self.assertEqual(parseCount("0", minimum=0), 0)
        self.assertIsNone(parseCount("NONE", noneWords=("none",)))
        error = self.assertRaises(ValueError, parseCount, "1.5")
        self.assertNotIsInstance(error, OutOfRange)
        self.assertEqual(str(error), "not a whole number")
        error = self.assertRaises(OutOfRange, parseCount, "0")
        self.assertEqual(str(error), "must be at least 1")
        error = self.assertRaises(OutOfRange, parseCount, "-1", minimum=0)
        self.assertEqual(str(error), "must be at least 0")

    def test_portNumber(self) -> None:
        """
        A port number up to 65535, from 0 for a server and 1 for a client.
        """
        self.assertEqual(parsePortNumber("8081"), 8081)
        self.assertEqual(parsePortNumber("0", minimum=0), 0)
        self.assertEqual(
            str(self.assertRaises(ValueError, parsePortNumber, "http")), "not a port number"
        )
        self.assertEqual(
            str(self.assertRaises(OutOfRange, parsePortNumber, "0")), "outside 1-65535"
        )
        self.assertEqual(
            str(self.assertRaises(OutOfRange, parsePortNumber, "65536", minimum=0)),
            "outside 0-65535",
        )


class OptionsTests(SynchronousTestCase):
    """
    L{Options}: every option, its default and its errors.
    """

    def assertUsageError(self, *args: str, match: str) -> None:
        with self.assertRaises(usage.UsageError) as raised:
            parse(*args)
        self.assertIn(match, str(raised.exception))

    def test_defaults(self) -> None:
        """
        Without options: an echo server in fragmented mode on tcp:8081,
        the protocol's own delimiter and length limit, 4096 connections,
        10 s handshake timeout, no idle timeout, no TLS.
        """
        options = parse()
        self.assertEqual(options["ports"], ["tcp:8081"])
        self.assertIs(options["protocol"], Echo)
        self.assertFalse(options["stream"])
        self.assertIsNone(options["delimiter"])
        self.assertNotIn("max-length", options)
        self.assertEqual(options["max-connections"], 4096)
        self.assertEqual(options["handshake-timeout"], 10.0)
        self.assertIsNone(options["idle-timeout"])
        self.assertEqual(options["close-timeout"], 5.0)
        self.assertFalse(options["tls"])

    def test_helpShowsEveryOptionAndDefault(self) -> None:
        """
        C{--help} lists every option, with its default.
        """
        text = str(Options())
        for option in (
            "--port",
            "--udp",
            "--tls",
            "--ca",
            "--cert",
            "--key",
            "--no-client-auth",
            "--delimiter",
            "--stream",
            "--max-length",
            "--max-connections",
            "--idle-timeout",
            "--handshake-timeout",
            "--close-timeout",
            "--app",
            "--record-dir",
            "--rate",
            "--message-size",
            "--quiet-connections",
        ):
            self.assertIn(option, text)
        for default in (
            "[default: tcp:8081, or none when --udp is given]",
            "[default: 4096]",
            "[default: 10]",
            "[default: echo]",
            "[default: none]",
            "[default: \\n,",
            "[default: 16777216,",
            "[default: the current directory]",
            "[default: 1000]",
            "[default: 32]",
        ):
            self.assertIn(default, " ".join(text.split()))

    def test_ports(self) -> None:
        """
        A bare port number becomes C{tcp:PORT}; endpoint descriptions are
        kept; C{--port} repeats, C{-p} is its short form.
        """
        options = parse("--port", "8081", "-p", "tcp6:9000:interface=\\:\\:", "--port", " 0 ")
        self.assertEqual(options["ports"], ["tcp:8081", "tcp6:9000:interface=\\:\\:", "tcp:0"])

    def test_portErrors(self) -> None:
        """
        Port numbers above 65535 and words that are neither a number nor an
        endpoint description are refused.
        """
        self.assertUsageError("--port", "65536", match="outside 0-65535")
        self.assertUsageError("--port", "http", match="not a port number")
        self.assertUsageError("--port", "", match="not a port number")

    def test_delimiter(self) -> None:
        """
        C{--delimiter} (C{-d}) understands escapes.
        """
        self.assertEqual(parse("--delimiter", "\\r\\n")["delimiter"], b"\r\n")
        self.assertEqual(parse("-d", "|")["delimiter"], b"|")
        self.assertUsageError("--delimiter", "\\q", match="--delimiter")
        self.assertUsageError("--delimiter", "", match="one or more bytes")
        # Digits are text, as for every tcpsc command.
        self.assertEqual(parse("-d", "10")["delimiter"], b"10")
        # The error quotes the delimiter as it was typed, not as a repr.
        self.assertUsageError("--delimiter", "\\q", match="unknown escape \\q in \\q (")

    def test_delimiterDescribed(self) -> None:
        """
        The start-up line shows the delimiter as it is typed.
        """
        service = makeService(parse("-d", "\\r\\n"), reactor=Clock())
        self.assertIn("delimiter \\r\\n,", service.description)
        service = makeService(parse(), reactor=Clock())
        self.assertIn("delimiter \\n,", service.description)

    def test_maxLength(self) -> None:
        """
        C{--max-length} (C{-m}) takes a number of bytes or C{none}.
        """
        self.assertEqual(parse("--max-length", "100")["max-length"], 100)
        self.assertEqual(parse("-m", "0")["max-length"], 0)
        self.assertIsNone(parse("--max-length", "none")["max-length"])
        self.assertUsageError("--max-length", "-1", match="--max-length")
        self.assertUsageError("--max-length", "lots", match="--max-length")

    def test_maxConnections(self) -> None:
        """
        C{--max-connections} takes a number of 1 or more.
        """
        self.assertEqual(parse("--max-connections", "10")["max-connections"], 10)
        self.assertUsageError("--max-connections", "0", match="--max-connections")
        self.assertUsageError("--max-connections", "many", match="--max-connections")

    def test_timeouts(self) -> None:
        """
        The handshake timeout is a positive number of seconds; the idle
        timeout too, or C{none}.
        """
        self.assertEqual(parse("--handshake-timeout", "2.5")["handshake-timeout"], 2.5)
        self.assertEqual(parse("--idle-timeout", "30")["idle-timeout"], 30.0)
        self.assertIsNone(parse("--idle-timeout", "none")["idle-timeout"])
        self.assertUsageError("--handshake-timeout", "0", match="more than 0")
        self.assertUsageError("--handshake-timeout", "none", match="not a number")
        self.assertUsageError("--idle-timeout", "-1", match="more than 0")
        self.assertUsageError("--idle-timeout", "soon", match="not a number")
        self.assertUsageError("--idle-timeout", "inf", match="more than 0")
        self.assertEqual(parse("--close-timeout", "0.5")["close-timeout"], 0.5)
        self.assertUsageError("--close-timeout", "0", match="more than 0")
        self.assertUsageError("--close-timeout", "none", match="not a number")

    def test_tls(self) -> None:
        """
        C{--tls} with a certificate, its key and the CA of the clients.
        """
        options = parse("--tls", "--ca", "ca.pem", "--cert", "s.pem", "--key", "s.key")
        self.assertTrue(options["tls"])
        self.assertEqual(
            (options["ca"], options["cert"], options["key"]), ("ca.pem", "s.pem", "s.key")
        )
        self.assertFalse(options["no-client-auth"])
        options = parse("--tls", "--no-client-auth", "--cert", "s.pem", "--key", "s.key")
        self.assertTrue(options["no-client-auth"])

    def test_tlsErrors(self) -> None:
        """
        C{--tls} needs C{--cert}, C{--key}, and C{--ca} unless client
        certificates are not required; the certificate options need C{--tls}.
        """
        self.assertUsageError("--tls", "--ca", "c", match="--tls needs --cert and --key")
        self.assertUsageError("--tls", "--ca", "c", "--cert", "s", match="--tls needs --key")
        self.assertUsageError("--tls", "--cert", "s", "--key", "k", match="needs --ca")
        self.assertUsageError(
            "--ca",
            "c",
            "--cert",
            "s",
            "--key",
            "k",
            match="--ca, --cert and --key only apply with --tls",
        )
        self.assertUsageError("--no-client-auth", match="--no-client-auth only applies with --tls")
        self.assertUsageError("--cert", "c.pem", match="--cert only applies with --tls")
        self.assertUsageError(
            "--cert", "c.pem", "--key", "k.pem", match="--cert and --key only apply with --tls"
        )

    def test_appOptions(self) -> None:
        """
        C{--record-dir}, C{--rate} and C{--message-size} are usage errors
        naming themselves without their application; C{--app broadcast}
        checks its rate and size.
        """
        self.assertUsageError(
            "--record-dir", "rec", match="--record-dir only applies with --app record"
        )
        self.assertUsageError(
            "--app", "chat", "--rate", "5", match="--rate only applies with --app broadcast"
        )
        self.assertUsageError(
            "--message-size", "5", match="--message-size only applies with --app broadcast"
        )
        self.assertUsageError("--app", "broadcast", "--rate", "0", match="--rate '0'")
        self.assertUsageError("--app", "broadcast", "--rate", "fast", match="--rate 'fast'")
        self.assertUsageError(
            "--app",
            "broadcast",
            "--message-size",
            "1",
            match="--message-size 1: must be at least 2 bytes",
        )
        self.assertUsageError(
            "--app",
            "broadcast",
            "-d",
            "\\r\\n",
            "--message-size",
            "2",
            match="--message-size 2: must be at least 3 bytes",
        )
        self.assertUsageError("--app", "broadcast", "--stream", match="no continuous mode")
        options = parse("--app", "broadcast", "--rate", "50", "--message-size", "20")
        protocol = options["protocol"]
        self.assertTrue(issubclass(protocol, Broadcast))
        self.assertEqual(
            (protocol.rate, protocol.messageSize, protocol.delimiter), (50.0, 20, b"\n")
        )
        default = parse("--app", "broadcast")["protocol"]
        self.assertEqual((default.rate, default.messageSize), (1000.0, 32))

    def test_unescapedColon(self) -> None:
        """
        A colon left unescaped in a value of an endpoint description (what
        a shell makes of C{tcp6:8081:interface=\\:\\:} without quotes) is
        a usage error saying how to escape it; escaped ones are accepted.
        """
        self.assertUsageError(
            "--port",
            "tcp6:8081:interface=::",
            match="a colon inside a value must be escaped with a backslash",
        )
        self.assertUsageError(
            "--port", "tcp:8081:interface=::1", match="--port 'tcp6:8081:interface=\\:\\:'"
        )
        self.assertEqual(
            parse("--port", "tcp6:8081:interface=\\:\\:")["ports"], ["tcp6:8081:interface=\\:\\:"]
        )
        self.assertEqual(
            parse("--port", "unix:/tmp/x.sock:mode=660")["ports"], ["unix:/tmp/x.sock:mode=660"]
        )

    def test_builtinApps(self) -> None:
        """
        C{--app} (C{-a}) picks the protocol: echo (messages, or bytes with
        C{--stream}), chat, record (always continuous).
        """
        self.assertIs(parse("--app", "echo")["protocol"], Echo)
        options = parse("--app", "echo", "--stream")
        self.assertIs(options["protocol"], StreamEcho)
        self.assertTrue(options["stream"])
        self.assertIs(parse("-a", "chat")["protocol"], Chat)
        options = parse("--app", "record")
        self.assertIs(options["protocol"], Record)
        self.assertTrue(options["stream"])

    def test_appModeErrors(self) -> None:
        """
        Chat has no continuous mode; message options make no sense in
        continuous mode.
        """
        self.assertUsageError("--app", "chat", "--stream", match="no continuous mode")
        self.assertUsageError(
            "--app", "record", "--delimiter", "|", match="no message boundaries: drop --delimiter"
        )
        self.assertUsageError(
            "--stream", "--max-length", "10", match="no message boundaries: drop --max-length"
        )

    def test_userApp(self) -> None:
        """
        C{--app module:Class} serves a user's L{MessageProtocol} subclass;
        a L{StreamProtocol} subclass selects continuous mode.
        """
        options = parse("--app", "tests.test_tap:Shout")
        self.assertIs(options["protocol"], Shout)
        self.assertFalse(options["stream"])
        options = parse("--app", "tests.test_tap:Tee")
        self.assertIs(options["protocol"], Tee)
        self.assertTrue(options["stream"])

    def test_userAppErrors(self) -> None:
        """
        Each way of naming a wrong class gets its own message.
        """
        self.assertUsageError(
            "--app", "nonsense", match="expected echo, chat, broadcast, record or module:Class"
        )
        self.assertUsageError(
            "--app", "tcpsc_no_such_module:X", match="cannot import module 'tcpsc_no_such_module'"
        )
        self.assertUsageError("--app", "tests.test_tap:Missing", match="has no attribute 'Missing'")
        self.assertUsageError(
            "--app", "tests.test_tap:NotAProtocol", match="not a subclass of tcpsc.MessageProtocol"
        )
        self.assertUsageError(
            "--app", "tests.test_tap:parse", match="not a subclass of tcpsc.MessageProtocol"
        )
        self.assertUsageError(
            "--app",
            "tests.test_tap:Shout",
            "--stream",
            match="--stream needs a tcpsc.StreamProtocol subclass",
        )

    def test_userAppFromCurrentDirectory(self) -> None:
        """
        A module in the current directory can be served, as with
        C{python -m}, although twistd's console script does not put the
        current directory on C{sys.path}.
        """
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        (directory / "tcpsc_cwd_app.py").write_text(
            "from tcpsc import MessageProtocol\nclass App(MessageProtocol):\n    pass\n"
        )
        self.patch(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])
        self.addCleanup(sys.modules.pop, "tcpsc_cwd_app", None)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(directory)
        cls = loadAppClass("tcpsc_cwd_app:App")
        self.assertEqual(cls.__name__, "App")
        self.assertEqual(sys.path[0], str(directory))

    def test_importFailure(self) -> None:
        """
        A module that fails while being imported is reported with the error.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "tcpsc_broken_app.py").write_text("1 / 0\n")
        self.patch(sys, "path", [str(directory), *sys.path])
        self.addCleanup(sys.modules.pop, "tcpsc_broken_app", None)
        with self.assertRaises(ValueError) as raised:
            loadAppClass("tcpsc_broken_app:App")
        self.assertIn("ZeroDivisionError", str(raised.exception))


class PluginTests(SynchronousTestCase):
    """
    twistd finds the plugin.
    """

    def test_discovered(self) -> None:
        """
        A service maker named tcpsc is among twistd's plugins, and its
        options and makeService are those of L{tcpsc.tap}.
        """
        makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "tcpsc"]
        self.assertEqual(len(makers), 1)
        self.assertIs(makers[0].options, Options)
        self.assertIs(makers[0].makeService, makeService)


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService} turns options into a configured server, and stops twistd
    with one line for a certificate problem.
    """

    def test_settings(self) -> None:
        """
        The options make one L{Settings} value: with none given it is
        L{Settings}' own defaults (so a default is written in one place),
        and each option sets its field.
        """
        self.assertEqual(_settingsOf(parse()), Settings())
        settings = _settingsOf(
            parse(
                "--max-connections",
                "7",
                "--max-connections-per-peer",
                "none",
                "--memory-budget",
                "1000",
                "--handshake-timeout",
                "2",
                "--first-byte-timeout",
                "none",
                "--idle-timeout",
                "30",
                "--close-timeout",
                "0.5",
                "-d",
                "|",
                "--max-length",
                "100",
                "--max-pending-output",
                "64",
                "-q",
                "--log-every-event",
            )
        )
        self.assertEqual(
            settings,
            Settings(
                maxConnections=7,
                maxConnectionsPerPeer=None,
                memoryBudget=1000,
                handshakeTimeout=2.0,
                firstByteTimeout=None,
                idleTimeout=30.0,
                closeTimeout=0.5,
                delimiter=b"|",
                maxMessageLength=100,
                maxPendingOutput=64,
                logConnections=False,
                logEveryEvent=True,
            ),
        )
        self.assertIsNone(_settingsOf(parse("--app", "broadcast")).firstByteTimeout)
        stream = _settingsOf(parse("--stream"))
        self.assertIs(stream.delimiter, FROM_PROTOCOL)
        self.assertIs(stream.maxMessageLength, FROM_PROTOCOL)

    def test_openFileLimit(self) -> None:
        """
        The daemon makes room for C{--max-connections} where it starts: in
        a process whose soft limit of open files is lower, L{makeService}
        raises it to the connection limit plus L{tcpsc.tap.FILE_MARGIN}.
        """
        import resource
        import subprocess

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and hard < 1000:
            raise SkipTest(f"the hard limit of open files is {hard}")
        script = (
            "import resource\n"
            "from twisted.internet.task import Clock\n"
            "from tcpsc.tap import FILE_MARGIN, Options, makeService\n"
            "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (100, hard))\n"
            "options = Options()\n"
            "options.parseOptions(['--max-connections', '500'])\n"
            "makeService(options, reactor=Clock())\n"
            "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], FILE_MARGIN)\n"
        )
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        soft, margin = map(int, result.stdout.split())
        self.assertGreater(margin, 0)
        self.assertEqual(soft, 500 + margin)

    def test_wiring(self) -> None:
        """
        The options reach the server and the service.
        """
        service = makeService(
            parse(
                "--port",
                "8081",
                "--port",
                "tcp:9000",
                "--max-connections",
                "7",
                "--handshake-timeout",
                "2",
                "--idle-timeout",
                "30",
                "--close-timeout",
                "3",
            ),
            reactor=reactor,
        )
        self.assertIsInstance(service, TcpscService)
        self.assertEqual(service.ports, ["tcp:8081", "tcp:9000"])
        self.assertIsNone(service.tls)
        server = service.server
        self.assertIs(server.protocol, Echo)
        self.assertEqual(server.maxConnections, 7)
        self.assertEqual(server.handshakeTimeout, 2.0)
        self.assertEqual(server.idleTimeout, 30.0)
        self.assertEqual(server.closeTimeout, 3.0)
        self.assertIsNone(server.createSink)
        self.assertTrue(server.logConnections)

    def test_quietConnections(self) -> None:
        """
        C{--quiet-connections} (C{-q}) turns off the server's log line per
        connection established and closed.
        """
        for flag in ("--quiet-connections", "-q"):
            service = makeService(parse(flag), reactor=reactor)
            self.assertFalse(service.server.logConnections)

    def test_tls(self) -> None:
        """
        With C{--tls} the service listens with the certificates given;
        C{--no-client-auth} turns the client certificate requirement off.
        """
        files = certificates()
        service = makeService(
            parse("--tls", "--ca", files.ca, "--cert", files.server, "--key", files.serverKey),
            reactor=reactor,
        )
        self.assertEqual(
            (service.tls.ca, service.tls.cert, service.tls.key),
            (files.ca, files.server, files.serverKey),
        )
        self.assertTrue(service.tls.requireClientCertificate)
        service = makeService(
            parse("--tls", "--no-client-auth", "--cert", files.server, "--key", files.serverKey),
            reactor=reactor,
        )
        self.assertFalse(service.tls.requireClientCertificate)

    def assertStops(self, *args: str, match: str) -> None:
        with self.assertRaises(SystemExit) as raised:
            makeService(parse(*args), reactor=reactor)
        message = str(raised.exception.code)
        self.assertTrue(message.startswith("tcpsc: "), message)
        self.assertNotIn("\n", message)
        self.assertIn(match, message)

    def test_certificateProblems(self) -> None:
        """
        A missing or invalid certificate file stops twistd at once with one
        line naming the file and the original's code.
        """
        files = certificates()
        self.assertStops(
            "--tls",
            "--ca",
            "/nonexistent/ca.pem",
            "--cert",
            files.server,
            "--key",
            files.serverKey,
            match="(code 30)",
        )
        self.assertStops(
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            "/nonexistent/s.pem",
            "--key",
            files.serverKey,
            match="'/nonexistent/s.pem'",
        )
        self.assertStops(
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            "/nonexistent/s.pem",
            "--key",
            files.serverKey,
            match="(code 31)",
        )
        self.assertStops(
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            files.server,
            "--key",
            "/nonexistent/s.key",
            match="(code 32)",
        )
        self.assertStops(
            "--tls",
            "--ca",
            files.path("fake.pem"),
            "--cert",
            files.server,
            "--key",
            files.serverKey,
            match="(code 33)",
        )
        self.assertStops(
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            files.path("fake.pem"),
            "--key",
            files.serverKey,
            match="(code 34)",
        )
        self.assertStops(
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            files.server,
            "--key",
            files.clientKey,
            match="(code 35)",
        )

    def test_recordDirectory(self) -> None:
        """
        C{--app record} creates its directory; one that cannot be created
        stops twistd with one line.
        """
        directory = Path(self.mktemp()) / "a" / "b"
        service = makeService(
            parse("--app", "record", "--record-dir", str(directory)), reactor=reactor
        )
        self.assertTrue(directory.is_dir())
        self.assertEqual(len(list(directory.iterdir())), 1)
        self.assertIs(service.server.protocol, Record)
        self.assertIsNotNone(service.server.createSink)
        blocker = Path(self.mktemp())
        blocker.write_text("a file, not a directory")
        self.assertStops(
            "--app",
            "record",
            "--record-dir",
            str(blocker / "sub"),
            match="cannot create the --record-dir",
        )


class RecordFilesTests(SynchronousTestCase):
    """
    Where C{--app record} writes: a new directory per run, and files that
    are never appended to.
    """

    def test_runDirectories(self) -> None:
        """
        Runs started in the same second get different directories.
        """
        base = Path(self.mktemp())
        first = recordRunDirectory(base, now=0)
        second = recordRunDirectory(base, now=0)
        self.assertEqual(first.name, "19700101-000000")
        self.assertEqual(second.name, "19700101-000000-2")
        self.assertEqual(sorted(base.iterdir()), [first, second])

    def test_existingFileNotAppended(self) -> None:
        """
        A file C{client-<id>.bin} that exists already is left as it is: the
        connection is closed and the cause logged.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        (directory / "client-1.bin").write_bytes(b"earlier run")
        disconnected = []

        class FakeServer:
            def disconnect(self, connectionId: int) -> None:
                disconnected.append(connectionId)

        createSink = recordSink(directory, lambda: FakeServer())  # type: ignore[arg-type,return-value]
        with capturedLogs() as events:
            self.assertIsNone(createSink(1))
        self.assertEqual(disconnected, [1])
        self.assertEqual((directory / "client-1.bin").read_bytes(), b"earlier run")
        [error] = [e for e in events if e.get("log_level") == LogLevel.error]
        self.assertIn("cannot open", formatEvent(error))
        sink = createSink(2)
        assert sink is not None
        sink.write(b"new")
        sink.close()
        self.assertEqual((directory / "client-2.bin").read_bytes(), b"new")


class ServiceTests(TestCase):
    """
    The service listening on a real port, driven by real clients.
    """

    def start(self, *args: str) -> TcpscService:
        service = makeService(parse(*args), reactor=reactor)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def port(self, service: TcpscService) -> int:
        return service.server.ports[0].getHost().port

    async def connect(self, service: TcpscService, **kwargs) -> tuple[Client, list[bytes]]:
        received: list[bytes] = []
        client = Client(onMessage=received.append, **kwargs)
        await client.connect("127.0.0.1", self.port(service))
        self.addCleanup(client.disconnect)
        return client, received

    @asyncTest
    async def test_echo(self) -> None:
        """
        The default application sends each message back to its sender, with
        the delimiter and length limit of the options.
        """
        service = self.start("--port", LOCAL, "--delimiter", "|", "--max-length", "5")
        client, received = await self.connect(service, delimiter=b"|", maxMessageLength=None)
        client.send(b"hello")
        client.send(b"toolong")
        client.send(b"bye")
        await waitFor(lambda: len(received) >= 2)
        self.assertEqual(received, [b"hello", b"bye"])

    @asyncTest
    async def test_streamEcho(self) -> None:
        """
        With C{--stream}, bytes come back as they are, delimiters included.
        """
        service = self.start("--port", LOCAL, "--stream")
        received: list[bytes] = []
        client = Client(stream=True, onMessage=received.append)
        await client.connect("127.0.0.1", self.port(service))
        self.addCleanup(client.disconnect)
        client.send(b"a\nb\0c")
        await waitFor(lambda: b"".join(received) == b"a\nb\0c")

    @asyncTest
    async def test_chat(self) -> None:
        """
        A chat message goes to every other client, prefixed with the sender's
        id, and not back to the sender.
        """
        service = self.start("--port", LOCAL, "--app", "chat")
        clients = [await self.connect(service) for _ in range(3)]
        await waitFor(lambda: len(service.server.clientIds()) == 3)
        (a, fromA), (_, fromB), (c, fromC) = clients
        idA, _, idC = service.server.clientIds()
        a.send(b"hello")
        await waitFor(lambda: fromB and fromC)
        self.assertEqual(fromB, [b"%d: hello" % idA])
        self.assertEqual(fromC, [b"%d: hello" % idA])
        c.send(b"hi")
        await waitFor(lambda: fromA and len(fromB) == 2)
        # A's first message is C's: its own never came back.
        self.assertEqual(fromA, [b"%d: hi" % idC])
        self.assertEqual(fromB[1], b"%d: hi" % idC)

    @asyncTest
    async def test_chatTooLongWithPrefix(self) -> None:
        """
        A message that fits the limit but not with the sender's prefix is
        dropped and logged, not relayed cut or silently lost.
        """
        service = self.start("--port", LOCAL, "--app", "chat", "--max-length", "6")
        (a, _), (_, fromB) = [await self.connect(service) for _ in range(2)]
        await waitFor(lambda: len(service.server.clientIds()) == 2)
        with capturedLogs() as events:
            a.send(b"123456")
            a.send(b"x")
            await waitFor(lambda: fromB, what="the chat message at the other client")
        self.assertEqual(fromB, [b"%d: x" % service.server.clientIds()[0]])
        warnings = [
            e
            for e in events
            if e.get("log_level") == LogLevel.warn
            and "too long to relay" in e.get("log_format", "")
        ]
        self.assertEqual(len(warnings), 1)

    @asyncTest
    async def test_record(self) -> None:
        """
        C{--app record} writes each connection's bytes to
        C{client-<id>.bin} in the record directory.
        """
        directory = Path(self.mktemp())
        service = self.start("--port", LOCAL, "--app", "record", "--record-dir", str(directory))
        [run] = directory.iterdir()
        first = Client(stream=True)
        await first.connect("127.0.0.1", self.port(service))
        second = Client(stream=True)
        await second.connect("127.0.0.1", self.port(service))
        first.send(b"one\n\0")
        second.send(b"two")
        first.send(b"more")
        await first.disconnect()
        await second.disconnect()
        files = {1: b"one\n\0more", 2: b"two"}

        def recorded() -> bool:
            return all(
                (run / f"client-{i}.bin").exists()
                and (run / f"client-{i}.bin").read_bytes() == data
                for i, data in files.items()
            )

        await waitFor(recorded, what="each connection's bytes in its record file")

    @asyncTest
    async def test_userApp(self) -> None:
        """
        A user's class is served with its own delimiter and limit.
        """
        service = self.start("--port", LOCAL, "--app", "tests.test_tap:Shout")
        client, received = await self.connect(service, delimiter=b";")
        client.send(b"hey")
        await waitFor(lambda: received, what="the reply to the client")
        self.assertEqual(received, [b"HEY!"])

    @asyncTest
    async def test_idleTimeout(self) -> None:
        """
        C{--idle-timeout} closes a connection without traffic.
        """
        service = self.start("--port", LOCAL, "--idle-timeout", "0.2")
        closed: Deferred[object] = Deferred()
        client = Client(onClosed=lambda reason: closed.callback(reason.value))
        await client.connect("127.0.0.1", self.port(service))
        self.addCleanup(client.disconnect)
        started = reactor.seconds()
        await closed.addTimeout(10, reactor)
        self.assertGreaterEqual(reactor.seconds() - started, 0.15)

    @asyncTest
    async def test_tlsWithoutClientAuth(self) -> None:
        """
        C{--tls --no-client-auth} serves TLS to a client without a
        certificate; without C{--no-client-auth} that client is refused.
        """
        files = certificates()
        service = self.start(
            "--port",
            LOCAL,
            "--tls",
            "--no-client-auth",
            "--cert",
            files.server,
            "--key",
            files.serverKey,
        )
        received: list[bytes] = []
        client = Client(onMessage=received.append)
        await client.connect("localhost", self.port(service), tls=TLSConfig(ca=files.ca))
        self.addCleanup(client.disconnect)
        client.send(b"anonymous")
        await waitFor(lambda: received, what="the echo to the client")
        self.assertEqual(received, [b"anonymous"])

        strict = self.start(
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
        with capturedLogs():
            with self.assertRaises(ClientCertificateRejected):
                await Client().connect("localhost", self.port(strict), tls=TLSConfig(ca=files.ca))

    @asyncTest
    async def test_stopClosesConnections(self) -> None:
        """
        Stopping the service closes every connection and the port.
        """
        service = self.start("--port", LOCAL)
        closed: Deferred[object] = Deferred()
        client = Client(onClosed=lambda reason: closed.callback(reason.value))
        await client.connect("127.0.0.1", self.port(service))
        await service.stopService()
        await closed
        self.assertEqual(service.server.ports, [])
        self.assertEqual(service.server.openConnections(), 0)

    @asyncTest
    async def test_wordingOfOne(self) -> None:
        """
        The daemon's lines about one connection say "connection", not
        "connections".
        """
        with capturedLogs() as events:
            service = self.start("--port", LOCAL, "--max-connections", "1")
            closed: Deferred[object] = Deferred()
            client = Client(onClosed=lambda reason: closed.callback(None))
            await client.connect("127.0.0.1", self.port(service))
            await waitFor(
                lambda: service.server.clientIds(), what="the daemon to register the connection"
            )
            await service.stopService()
            await closed
        text = "\n".join(formatEvent(e) for e in events)
        self.assertIn("at most 1 connection,", text)
        self.assertIn("Stopping tcpsc: closing 1 connection\n", text + "\n")
        self.assertIn("Stopped: 1 connection closed, no output dropped", text)
        self.assertNotIn("1 connections", text)

    @asyncTest
    async def test_broadcast(self) -> None:
        """
        C{--app broadcast} sends numbered messages of the set size to every
        client while there is one, and stops its timer once none is left.
        """
        service = self.start(
            "--port", LOCAL, "--app", "broadcast", "--rate", "500", "--message-size", "8"
        )
        (first, fromFirst), (second, fromSecond) = [await self.connect(service) for _ in range(2)]
        await waitFor(lambda: len(fromFirst) >= 5 and len(fromSecond) >= 5)
        for received in (fromFirst, fromSecond):
            numbers = [int(m) for m in received]
            self.assertEqual([len(m) for m in received], [7] * len(received))
            self.assertEqual(numbers, list(range(numbers[0], numbers[0] + len(numbers))))
        self.assertTrue(set(fromSecond) & set(fromFirst))
        broadcaster = _broadcasters[service.server]
        await first.disconnect()
        await second.disconnect()
        await waitFor(lambda: not service.server.clientIds())
        self.assertIsNone(broadcaster.call)

    @asyncTest
    async def test_portInUse(self) -> None:
        """
        A port that cannot be listened on makes privilegedStartService raise
        (which stops twistd), after logging one critical line with code 42;
        no traceback is printed for it.
        """
        first = self.start("--port", LOCAL)
        port = self.port(first)
        second = makeService(
            parse("--port", f"tcp:{port}:interface=127.0.0.1", "--port", LOCAL), reactor=reactor
        )
        original = sys.excepthook
        self.patch(sys, "excepthook", original)
        with capturedLogs() as events:
            with self.assertRaises(DaemonStartError) as raised:
                second.privilegedStartService()
        self.assertEqual(raised.exception.code, 42)
        self.assertIn(f"cannot listen on tcp:{port}:interface=127.0.0.1", str(raised.exception))
        critical = [e for e in events if e.get("log_level") == LogLevel.critical]
        self.assertEqual(len(critical), 1)
        self.assertEqual(critical[0]["code"], 42)
        self.assertIn("(code 42)", critical[0]["error"])
        # Nothing is left listening by the failed service.
        self.assertEqual(second.server.ports, [])
        # twistd lets the exception end the process: the hook installed
        # for it prints nothing for this error (it is logged), and still
        # prints every other.
        self.assertIsNot(sys.excepthook, original)
        printed: list[object] = []
        quiet = _quietExceptHook(lambda kind, value, tb: printed.append(value))
        quiet(DaemonStartError, raised.exception, None)
        quiet(ValueError, ValueError("x"), None)
        self.assertEqual([type(p) for p in printed], [ValueError])

    @asyncTest
    async def test_startServiceAlone(self) -> None:
        """
        Runners that call only startService (C{twist}) get a listening
        service too.
        """
        service = makeService(parse("--port", LOCAL), reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        client, received = await self.connect(service)
        client.send(b"twist")
        await waitFor(lambda: received, what="the echo to the client")
        self.assertEqual(received, [b"twist"])

    @asyncTest
    async def test_startServiceAloneFailure(self) -> None:
        """
        Then a port in use is a critical log line (printed by Twisted on
        standard error before logging begins) and C{SystemExit(1)}.
        """
        first = self.start("--port", LOCAL)
        second = makeService(
            parse("--port", f"tcp:{self.port(first)}:interface=127.0.0.1"), reactor=reactor
        )
        with capturedLogs() as events:
            with self.assertRaises(SystemExit) as raised:
                second.startService()
        self.assertEqual(raised.exception.code, 1)
        critical = [e for e in events if e.get("log_level") == LogLevel.critical]
        self.assertEqual([e["code"] for e in critical], [42])
        second.running = False

    def test_badEndpoint(self) -> None:
        """
        An endpoint description Twisted does not know fails with code 10.
        """
        service = makeService(parse("--port", "tcp:notaport"), reactor=reactor)
        self.patch(sys, "excepthook", sys.excepthook)
        with capturedLogs():
            with self.assertRaises(DaemonStartError) as raised:
                service.privilegedStartService()
        self.assertEqual(raised.exception.code, 10)
