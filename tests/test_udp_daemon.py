"""
The daemon over UDP: C{twistd tcpsc --udp ADDRESS}, its options
(L{tcpsc.tap.Options}) and the real C{twistd -n --pidfile= tcpsc} process,
driven by plain Python UDP sockets on loopback.

Each daemon listens on port 0 of 127.0.0.1 (or ::1); its port is read from
its "tcpsc UDP listening on" log line.  Every wait is bounded; every
process started here is killed in a cleanup, by its PID.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time

from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tcpsc import DatagramPeer
from tcpsc._apps import DatagramEcho, Echo
from tcpsc.tap import DEFAULT_PORT, MAX_UDP_LENGTH, Options

from .test_daemon import LOCAL, TIMEOUT, Daemon, Peer, _twistd
from .test_systemd import Process, fields, notifySocket


class Reverse(DatagramPeer):
    """
    A user's datagram protocol for C{--app tests.test_udp_daemon:Reverse}:
    each message back reversed, with its peer's id.
    """

    maxMessageLength = 100

    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(b"%d %s" % (self.peerId, message[::-1]))


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


class OptionsTests(SynchronousTestCase):
    """
    C{--udp} and what goes with it.
    """

    def assertUsageError(self, *args: str, match: str | tuple[str, ...]) -> None:
        with self.assertRaises(usage.UsageError) as raised:
            parse(*args)
        for text in (match,) if isinstance(match, str) else match:
            self.assertIn(text, str(raised.exception))

    def test_addresses(self) -> None:
        """
        A port alone (every IPv4 address), an IPv4 address and port, an
        IPv6 address in brackets; repeatable; without C{--port}, no TCP
        port at all.
        """
        options = parse("--udp", "9000", "--udp", "127.0.0.1:9001", "--udp", " [::1]:0 ")
        self.assertEqual(options["udp"], [("", 9000), ("127.0.0.1", 9001), ("::1", 0)])
        self.assertEqual(options["ports"], [])
        self.assertIs(options["datagram-protocol"], DatagramEcho)
        self.assertIs(options["protocol"], Echo)

    def test_withPort(self) -> None:
        """
        C{--port} and C{--udp} together: both, in one daemon.
        """
        options = parse("--port", "8081", "--udp", "9000")
        self.assertEqual(options["ports"], ["tcp:8081"])
        self.assertEqual(options["udp"], [("", 9000)])

    def test_defaultPortWithoutUDP(self) -> None:
        """
        Without C{--udp} the default TCP port is as before, and nothing
        serves UDP.
        """
        options = parse()
        self.assertEqual(options["ports"], [DEFAULT_PORT])
        self.assertEqual(options["udp"], [])
        self.assertIsNone(options["datagram-protocol"])

    def test_addressErrors(self) -> None:
        """
        A value that is not a port, an address and port, or an IPv6 address
        in brackets is a usage error naming the option and the value.
        """
        for value, words in (
            ("abc", "not ADDRESS:PORT"),
            ("70000", "outside 0-65535"),
            ("127.0.0.1:70000", "outside 0-65535"),
            ("::1:9000", "an IPv6 address goes in brackets"),
            ("localhost:9000", "'localhost' is not an IP address"),
            ("[nope]:9000", "not an IPv6 address"),
            ("127.0.0.1:", "not a port number"),
        ):
            self.assertUsageError("--udp", value, match=(f"--udp {value!r}", words))

    def test_appErrors(self) -> None:
        """
        What cannot be served over UDP is a usage error saying why: an app
        served over TCP only, a user's TCP class (naming both), continuous
        mode, TLS.
        """
        self.assertUsageError(
            "--udp", "9000", "--app", "chat", match="--app chat is served over TCP only"
        )
        self.assertUsageError(
            "--udp", "9000", "--app", "record", match="--app record is served over TCP only"
        )
        self.assertUsageError(
            "--udp",
            "9000",
            "--app",
            "tests.test_tap:Shout",
            match=("--udp serves a tcpsc.DatagramPeer", "tests.test_tap:Shout", "MessageProtocol"),
        )
        self.assertUsageError(
            "--udp", "9000", "--app", "tests.test_tap:Tee", match="is a tcpsc.StreamProtocol"
        )
        self.assertUsageError("--udp", "9000", "--stream", match="no continuous mode")
        self.assertUsageError(
            "--udp", "9000", "--tls", "--cert", "c", "--key", "k", "--ca", "a", match="--tls"
        )

    def test_datagramClass(self) -> None:
        """
        A user's L{DatagramPeer} subclass is served over UDP only: it needs
        C{--udp}, and does not go with C{--port}.
        """
        options = parse("--udp", "0", "--app", "tests.test_udp_daemon:Reverse")
        self.assertIs(options["datagram-protocol"], Reverse)
        self.assertIsNone(options["protocol"])
        self.assertUsageError(
            "--app",
            "tests.test_udp_daemon:Reverse",
            match="is a tcpsc.DatagramPeer subclass, which is served over UDP: give --udp",
        )
        self.assertUsageError(
            "--port",
            "8081",
            "--udp",
            "0",
            "--app",
            "tests.test_udp_daemon:Reverse",
            match="served over UDP only: drop --port",
        )

    def test_maxLength(self) -> None:
        """
        C{-m} bounds datagrams too: up to the largest UDP datagram, and not
        C{none}.
        """
        self.assertEqual(parse("--udp", "0", "-m", str(MAX_UDP_LENGTH))["max-length"], 65507)
        self.assertUsageError(
            "--udp", "0", "-m", "65508", match=("--max-length 65508", "from 1 to 65507 bytes")
        )
        self.assertUsageError("--udp", "0", "-m", "0", match="--max-length 0: --udp needs")
        self.assertUsageError("--udp", "0", "-m", "none", match="--max-length none")
        # Without --udp, as before.
        self.assertEqual(parse("-m", "65508")["max-length"], 65508)

    def test_peerLimits(self) -> None:
        """
        C{--udp-peer-timeout} and C{--udp-max-peers} set the datagram
        server's fields of the one settings value, whose defaults they show;
        they apply to C{--udp} only, and a value out of range is a usage
        error naming the option.
        """
        from tcpsc import Settings
        from tcpsc.tap import _settingsOf

        defaults = parse("--udp", "0")
        self.assertEqual(
            (defaults["udp-peer-timeout"], defaults["udp-max-peers"]),
            (Settings().peerIdleTimeout, Settings().maxPeers),
        )
        options = parse("--udp", "0", "--udp-peer-timeout", "none", "--udp-max-peers", "2")
        settings = _settingsOf(options)
        self.assertEqual((settings.peerIdleTimeout, settings.maxPeers), (None, 2))
        self.assertUsageError("--udp-max-peers", "2", match="--udp-max-peers applies to --udp only")
        self.assertUsageError(
            "--udp-peer-timeout", "5", match="--udp-peer-timeout applies to --udp only"
        )
        self.assertUsageError(
            "--udp", "0", "--udp-max-peers", "0", match="--udp-max-peers 0: not a number of 1"
        )
        self.assertUsageError(
            "--udp", "0", "--udp-peer-timeout", "0", match="--udp-peer-timeout '0': must be more"
        )

    def test_help(self) -> None:
        """
        C{--help} shows C{--udp} and the default port's rule.
        """
        text = " ".join(str(Options()).split())
        self.assertIn("--udp=", text)
        self.assertIn("[default: tcp:8081, or none when --udp is given]", text)
        self.assertIn("[default: 16777216, or 1472 over UDP, or the --app class's]", text)


class _UDPPeer:
    """
    A plain Python UDP socket that talks to a daemon.
    """

    def __init__(
        self, test: SynchronousTestCase, port: int, host: str = "127.0.0.1", family: int = 0
    ) -> None:
        family = family or (socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.socket = socket.socket(family, socket.SOCK_DGRAM)
        test.addCleanup(self.socket.close)
        self.socket.settimeout(TIMEOUT)
        self.socket.connect((host, port))

    def send(self, data: bytes) -> None:
        self.socket.send(data)

    def receive(self) -> bytes:
        """
        The next datagram (a socket timeout fails the test).
        """
        return self.socket.recv(70000)


def _udpPort(daemon: Daemon, host: str = r"127\.0\.0\.1") -> int:
    return int(daemon.waitFor(rf"tcpsc UDP listening on {host}:(\d+)").group(1))


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


class DaemonTests(SynchronousTestCase):
    """
    The real twistd serving UDP.
    """

    def assertStopsOnSigterm(self, daemon: Daemon) -> None:
        started = time.monotonic()
        os.kill(daemon.process.pid, signal.SIGTERM)
        self.assertEqual(daemon.exitStatus(), -signal.SIGTERM)
        self.assertLess(time.monotonic() - started, TIMEOUT)
        self.assertIn("tcpsc stopped", daemon.output)
        self.assertNotIn("Traceback", daemon.output)

    def test_echoUDPOnly(self) -> None:
        """
        C{--udp} without C{--port}: echo over UDP, one message per datagram,
        and no TCP port (not even the default one); SIGTERM stops it cleanly.
        """
        daemon = Daemon(self, "--udp", "127.0.0.1:0")
        port = _udpPort(daemon)
        self.assertIn("app echo over UDP (one message per datagram", daemon.output)
        self.assertNotIn("Listening on", daemon.output)
        first, second = _UDPPeer(self, port), _UDPPeer(self, port)
        first.send("hello\nwörld".encode())
        self.assertEqual(first.receive(), "hello\nwörld".encode())
        second.send(b"")
        self.assertEqual(second.receive(), b"")
        first.send(b"again")
        self.assertEqual(first.receive(), b"again")
        self.assertStopsOnSigterm(daemon)
        self.assertIn("forgetting 2 UDP peers", daemon.output)

    def test_maxPeers(self) -> None:
        """
        C{--udp-max-peers 2}: of three peers, the daemon keeps the two heard
        from last (each is echoed), and says so when it stops.
        """
        daemon = Daemon(self, "--udp", "127.0.0.1:0", "--udp-max-peers", "2")
        port = _udpPort(daemon)
        for index in range(3):
            peer = _UDPPeer(self, port)
            peer.send(b"peer %d" % index)
            self.assertEqual(peer.receive(), b"peer %d" % index)
        self.assertStopsOnSigterm(daemon)
        self.assertIn("forgetting 2 UDP peers", daemon.output)

    def test_maxLength(self) -> None:
        """
        C{-m} bounds datagrams: a longer one is dropped whole (never echoed
        cut), and the next one is echoed.
        """
        daemon = Daemon(self, "--udp", "127.0.0.1:0", "-m", "10")
        peer = _UDPPeer(self, _udpPort(daemon))
        peer.send(b"x" * 11)
        peer.send(b"y" * 10)
        self.assertEqual(peer.receive(), b"y" * 10)

    def test_defaultBound(self) -> None:
        """
        Without C{-m}, the bound of one Ethernet frame, 1472 bytes.
        """
        daemon = Daemon(self, "--udp", "127.0.0.1:0")
        peer = _UDPPeer(self, _udpPort(daemon))
        peer.send(b"x" * 1473)
        peer.send(b"y" * 1472)
        self.assertEqual(peer.receive(), b"y" * 1472)

    def test_delimiter(self) -> None:
        """
        With C{-d}, a datagram holds several messages, each echoed with
        its delimiter, in order (the server may put several replies in one
        datagram).
        """
        daemon = Daemon(self, "--udp", "127.0.0.1:0", "-d", "\\n")
        peer = _UDPPeer(self, _udpPort(daemon))
        self.assertIn("messages delimited by \\n", daemon.output)
        peer.send(b"one\ntwo\n")
        echoed = peer.receive()
        while echoed.count(b"\n") < 2:
            echoed += peer.receive()
        self.assertEqual(echoed, b"one\ntwo\n")

    def test_ipv6(self) -> None:
        """
        C{--udp [::1]:0} serves IPv6.
        """
        if not _ipv6():
            raise SkipTest("no IPv6 loopback (::1) on this host")
        daemon = Daemon(self, "--udp", "[::1]:0")
        port = _udpPort(daemon, host=r"\[::1\]")
        peer = _UDPPeer(self, port, "::1")
        peer.send(b"over six")
        self.assertEqual(peer.receive(), b"over six")
        self.assertStopsOnSigterm(daemon)

    def test_tcpAndUDP(self) -> None:
        """
        C{--port} and C{--udp} together: one process echoes over both.
        """
        daemon = Daemon(self, "--port", LOCAL, "--udp", "127.0.0.1:0")
        tcp = Peer(self, daemon.port())
        udp = _UDPPeer(self, _udpPort(daemon))
        self.assertIn("plain TCP", daemon.output)
        self.assertIn("and over UDP (one message per datagram", daemon.output)
        tcp.send(b"by tcp\n")
        udp.send(b"by udp")
        self.assertEqual(tcp.receive(), b"by tcp")
        self.assertEqual(udp.receive(), b"by udp")
        self.assertStopsOnSigterm(daemon)
        self.assertEqual(tcp.receiveEnd(), b"")

    def test_userDatagramClass(self) -> None:
        """
        A user's L{DatagramPeer} subclass, with its own bound; each address
        is a peer with its own id.
        """
        daemon = Daemon(self, "--udp", "127.0.0.1:0", "--app", "tests.test_udp_daemon:Reverse")
        port = _udpPort(daemon)
        self.assertIn("datagrams up to 100 bytes", daemon.output)
        first, second = _UDPPeer(self, port), _UDPPeer(self, port)
        first.send(b"abc")
        self.assertEqual(first.receive(), b"1 cba")
        second.send(b"xyz")
        self.assertEqual(second.receive(), b"2 zyx")
        first.send(b"again")
        self.assertEqual(first.receive(), b"1 niaga")
        first.send(b"x" * 101)
        first.send(b"fits")
        self.assertEqual(first.receive(), b"1 stif")

    def test_addressInUse(self) -> None:
        """
        A UDP address that cannot be bound stops the start with one line
        naming it and the cause (code 42), and a non-zero exit status; the
        TCP port opened first is closed again.
        """
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        daemon = Daemon(self, "--port", LOCAL, "--udp", f"127.0.0.1:{port}")
        self.assertNotEqual(daemon.exitStatus(), 0)
        self.assertIn(
            f"tcpsc cannot start: --udp 127.0.0.1:{port}: cannot listen on port {port} on "
            "127.0.0.1: [Errno 98] Address already in use (code 42)",
            daemon.output,
        )
        self.assertNotIn("Traceback", daemon.output)

    def test_usageErrors(self) -> None:
        """
        Option errors of C{--udp} print the usage, then the error on the
        last line naming the option, exit status 1 (as the daemon's other
        option errors).
        """
        for args, words in (
            (("--udp", "nope"), "--udp 'nope': not ADDRESS:PORT"),
            (("--udp", "0", "--app", "chat"), "--app chat is served over TCP only"),
            (
                ("--udp", "0", "--app", "examples.upper:Upper"),
                "--udp serves a tcpsc.DatagramPeer subclass, and --app examples.upper:Upper "
                "is a tcpsc.MessageProtocol",
            ),
            (("--udp", "0", "-m", "70000"), "--max-length 70000: --udp needs a bound"),
        ):
            daemon = Daemon(self, *args)
            self.assertEqual(daemon.exitStatus(), 1, daemon.output)
            lines = daemon.output.strip().splitlines()
            self.assertIn(words, lines[-1])
            self.assertTrue(any("--udp" in line for line in lines[:-1]))


class NotifyTests(SynchronousTestCase):
    """
    A daemon that serves UDP only under systemd's C{NOTIFY_SOCKET}.
    """

    def test_readyWithUDPOnly(self) -> None:
        """
        It says C{READY=1} once its UDP address listens, naming it (a
        peer is echoed at once), and C{STOPPING=1} on SIGTERM.
        """
        receiver, address = notifySocket(self)
        daemon = Process(
            self,
            [*_twistd(), "-n", "--pidfile=", "tcpsc", "--udp", "127.0.0.1:0"],
            env={"NOTIFY_SOCKET": address},
        )
        ready = fields(receiver.recv(4096))
        self.assertEqual(ready["READY"], "1")
        ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", ready["STATUS"])]
        self.assertEqual(len(ports), 1, ready)
        peer = _UDPPeer(self, ports[0])
        peer.send(b"ready?")
        self.assertEqual(peer.receive(), b"ready?")
        os.kill(daemon.process.pid, signal.SIGTERM)
        self.assertEqual(fields(receiver.recv(4096))["STOPPING"], "1")
        self.assertIn(daemon.exitStatus(), (0, -signal.SIGTERM))
        self.assertNotIn("Traceback", daemon.output)
