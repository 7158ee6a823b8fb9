"""
Tests for C{tcpsc udp} and C{tcpsc multicast}, run as real processes
(C{python -m tcpsc}) where what matters is what a user sees: exit status,
standard output and one-line notes on standard error.

C{tcpsc udp} talks to a plain Twisted C{DatagramProtocol} echo in this
process (not tcpsc) on 127.0.0.1 or ::1, and to the real twistd daemon.
The multicast commands run only inside a private network namespace
(L{tests._netns}): they skip, saying why, where one cannot be made.
"""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tcpsc._cli.main import main

from ._helpers import asyncTest, waitFor
from .test_cli import TIMEOUT, _Command, _CommandTestCase, _environment
from .test_daemon import Daemon
from .test_udp_daemon import _ipv6, _udpPort


class _Echo(DatagramProtocol):
    """
    A UDP echo that is not tcpsc; what it received, datagram by datagram;
    C{replies} maps a datagram to what is sent back instead of it.
    """

    def __init__(self, replies: dict[bytes, list[bytes]] | None = None) -> None:
        self.received: list[bytes] = []
        self.replies = replies or {}

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.received.append(datagram)
        for reply in self.replies.get(datagram, [datagram]):
            self.transport.write(reply, addr)


class UdpCommandTests(_CommandTestCase):
    """
    C{tcpsc udp HOST PORT} against a plain UDP echo.
    """

    def echo(self, host: str = "127.0.0.1", **replies: list[bytes]) -> tuple[_Echo, int]:
        protocol = _Echo({k.encode(): v for k, v in replies.items()})
        port = reactor.listenUDP(0, protocol, interface=host)
        self.addCleanup(port.stopListening)
        return protocol, port.getHost().port

    def udp(self, *args: str) -> _Command:
        return self.spawn(*args, subcommand="udp")

    def assertNotes(self, command: _Command, *expected: str) -> None:
        lines = command.err.decode().splitlines()
        self.assertEqual(len(lines), len(expected), lines)
        for line, text in zip(lines, expected, strict=True):
            self.assertTrue(line.startswith("tcpsc udp: "), line)
            self.assertIn(text, line)

    @asyncTest
    async def test_echoThroughPipes(self) -> None:
        """
        Each input line is one datagram (a trailing CR dropped, a last line
        without a newline sent too, an empty line an empty datagram); each
        datagram received is one output line; at the end of the input the
        replies still arrive, then the command exits 0, silent on standard
        error.
        """
        server, port = self.echo()
        command = self.udp("127.0.0.1", str(port))
        command.transport.write("hello\nwörld\r\n\nlast".encode())
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertEqual(server.received, [b"hello", "wörld".encode(), b"", b"last"])
        self.assertEqual(bytes(command.out), "hello\nwörld\n\nlast\n".encode())
        self.assertEqual(bytes(command.err), b"")

    @asyncTest
    async def test_hostName(self) -> None:
        """
        A host name is resolved (C{localhost}, from the hosts file).
        """
        _server, port = self.echo()
        command = self.udp("localhost", str(port))
        command.transport.write(b"by name\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertEqual(bytes(command.out), b"by name\n")

    @asyncTest
    async def test_ipv6(self) -> None:
        """
        An IPv6 address, bare or in brackets.
        """
        if not _ipv6():
            raise SkipTest("no IPv6 loopback (::1) on this host")
        _server, port = self.echo("::1")
        for host in ("::1", "[::1]"):
            command = self.udp(host, str(port))
            command.transport.write(b"six\n")
            command.transport.closeStdin()
            self.assertEqual(await command.ended(), 0, command.err)
            self.assertEqual(bytes(command.out), b"six\n")

    @asyncTest
    async def test_delimiter(self) -> None:
        """
        With C{-d}, each line is sent with the delimiter; a line containing
        it is not sent (said so); a datagram received holding several
        messages is printed a message a line.
        """
        server, port = self.echo(**{"two|": [b"a|b|c"]})
        command = self.udp("127.0.0.1", str(port), "-d", "|")
        command.transport.write(b"x|y\ntwo\none\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertEqual(server.received, [b"two|", b"one|"])
        self.assertEqual(bytes(command.out), b"a\nb\nc\none\n")
        self.assertNotes(command, "not sent: the line contains the delimiter")

    @asyncTest
    async def test_maxLength(self) -> None:
        """
        C{-m} bounds what is sent (a longer line is not sent, said so) and
        what is received (a longer datagram is dropped whole, said so,
        never printed cut); the lines after each go on.
        """
        server, port = self.echo(big=[b"x" * 11], small=[b"y" * 10])
        command = self.udp("127.0.0.1", str(port), "-m", "10")
        command.transport.write(b"z" * 11 + b"\nbig\nsmall\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertEqual(server.received, [b"big", b"small"])
        self.assertEqual(bytes(command.out), b"y" * 10 + b"\n")
        self.assertNotes(
            command,
            "not sent: the line is longer than --max-length (10 bytes)",
            "a datagram longer than --max-length (10 bytes) was dropped",
        )

    @asyncTest
    async def test_defaultBound(self) -> None:
        """
        Without C{-m}, datagrams of up to 1472 bytes.
        """
        server, port = self.echo()
        command = self.udp("127.0.0.1", str(port))
        command.transport.write(b"x" * 1473 + b"\n" + b"y" * 1472 + b"\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertEqual(server.received, [b"y" * 1472])
        self.assertNotes(command, "longer than --max-length (1472 bytes)")

    @asyncTest
    async def test_refused(self) -> None:
        """
        Nothing listens on the port: the host's ICMP port unreachable ends
        the command with status 1 and one line.
        """
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        holder.close()
        command = self.udp("127.0.0.1", str(port))
        command.transport.write(b"anyone?\n")
        self.assertEqual(await command.ended(), 1, command.err)
        self.assertNotes(command, f"nothing listens on UDP 127.0.0.1:{port}")

    @asyncTest
    async def test_sigterm(self) -> None:
        """
        SIGTERM: the command dies of the signal, as twistd does, with
        nothing on standard error.
        """
        _server, port = self.echo()
        command = self.udp("127.0.0.1", str(port))
        command.transport.write(b"ping\n")
        await waitFor(lambda: bytes(command.out) == b"ping\n", timeout=TIMEOUT)
        command.transport.signalProcess("TERM")
        await command.ended()
        self.assertEqual((command.exitCode, command.signal), (None, signal.SIGTERM))
        self.assertEqual(bytes(command.err), b"")

    @asyncTest
    async def test_sigint(self) -> None:
        """
        Ctrl-C (SIGINT): exit 130, nothing on standard error.
        """
        _server, port = self.echo()
        command = self.udp("127.0.0.1", str(port))
        command.transport.write(b"ping\n")
        await waitFor(lambda: bytes(command.out) == b"ping\n", timeout=TIMEOUT)
        command.transport.signalProcess("INT")
        self.assertEqual(await command.ended(), 130, command.err)
        self.assertEqual(bytes(command.err), b"")

    @asyncTest
    async def test_lateReplies(self) -> None:
        """
        At the end of the input, replies that come within C{--wait} are
        still printed.
        """
        protocol = _Echo({b"later": []})
        port = reactor.listenUDP(0, protocol, interface="127.0.0.1")
        self.addCleanup(port.stopListening)

        def datagramReceived(datagram: bytes, addr: tuple[str, int]) -> None:
            protocol.received.append(datagram)
            reactor.callLater(0.3, protocol.transport.write, b"late " + datagram, addr)

        protocol.datagramReceived = datagramReceived  # type: ignore[method-assign]
        command = self.udp("127.0.0.1", str(port.getHost().port), "--wait", "2")
        command.transport.write(b"one\n")
        command.transport.closeStdin()
        self.assertEqual(await command.ended(), 0, command.err)
        self.assertEqual(bytes(command.out), b"late one\n")


class UdpDaemonTests(SynchronousTestCase):
    """
    C{tcpsc udp} against the real daemon's C{--udp}.
    """

    def test_againstDaemon(self) -> None:
        daemon = Daemon(self, "--udp", "127.0.0.1:0")
        port = _udpPort(daemon)
        result = subprocess.run(
            [sys.executable, "-m", "tcpsc", "udp", "127.0.0.1", str(port)],
            input=b"hello\ndaemon\n",
            capture_output=True,
            env=_environment(),
            timeout=TIMEOUT,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, b"hello\ndaemon\n")
        self.assertEqual(result.stderr, b"")

    def test_delimitedAgainstDaemon(self) -> None:
        """
        With the same C{-d} on both sides, each line is a message.
        """
        daemon = Daemon(self, "--udp", "127.0.0.1:0", "-d", "\\n")
        port = _udpPort(daemon)
        result = subprocess.run(
            [sys.executable, "-m", "tcpsc", "udp", "127.0.0.1", str(port), "-d", "\\n"],
            input=b"one\ntwo\n",
            capture_output=True,
            env=_environment(),
            timeout=TIMEOUT,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, b"one\ntwo\n")


class UsageTests(SynchronousTestCase):
    """
    Usage errors of C{tcpsc udp} and C{tcpsc multicast}: one line naming
    the option, exit status 2.
    """

    def test_usageErrors(self) -> None:
        for args, expected in (
            (("udp", "localhost", "port"), "not a port number"),
            (("udp", "localhost", "0"), "outside 1-65535"),
            (("udp", "localhost", "9000", "-m", "0"), "argument -m/--max-length"),
            (("udp", "localhost", "9000", "-m", "65528"), "above 65527"),
            (("udp", "localhost", "9000", "-d", "\\q"), "argument -d/--delimiter"),
            (("multicast",), "required: ACTION"),
            (("multicast", "send", "10.0.0.1:9000"), "not a multicast group"),
            (("multicast", "send", "239.255.0.1"), "not ADDRESS:PORT"),
            (("multicast", "send", "239.255.0.1:0"), "outside 1-65535"),
            (("multicast", "send", "ff15::1:9000"), "an IPv6 address goes in brackets"),
            (("multicast", "send", "239.255.0.1:9000", "--ttl", "256"), "255 or less"),
            (("multicast", "listen", "239.255.0.1:9000", "-n", "0"), "argument -n/--count"),
            (
                ("multicast", "send", "239.255.0.1:9000", "--interface", "::1"),
                "multicast send: error:",
            ),
        ):
            out, err = io.StringIO(), io.StringIO()
            self.patch(sys, "stdout", out)
            self.patch(sys, "stderr", err)
            with self.assertRaises(SystemExit) as raised:
                main(list(args))
            self.assertEqual(raised.exception.code, 2, (args, err.getvalue()))
            lines = err.getvalue().splitlines()
            self.assertEqual(len(lines), 1, lines)
            self.assertIn(expected, lines[0])
            self.assertIn("--help", lines[0])

    def test_help(self) -> None:
        """
        C{--help} of each tells the options and the exit statuses.
        """
        for command, words in (
            (("udp",), ("--delimiter", "--max-length", "--wait", "1472", "130", "SIGTERM")),
            (("multicast",), ("send", "listen", "GROUP:PORT", "[ff15::1]:9000", "130")),
            (("multicast", "send"), ("--interface", "--ttl", "--no-loopback", "--max-length")),
            (("multicast", "listen"), ("--interface", "--count", "--show-sender")),
        ):
            result = subprocess.run(
                [sys.executable, "-m", "tcpsc", *command, "--help"],
                capture_output=True,
                text=True,
                env=_environment(),
                timeout=TIMEOUT,
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            for word in words:
                self.assertIn(word, result.stdout)
