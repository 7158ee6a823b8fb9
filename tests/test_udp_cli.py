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
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tcpsc._cli.main import main

from . import _netns
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
            ((), ("udp", "multicast", "UDP")),
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


#: The port of the multicast scenarios: each runs in a namespace of its
#: own, where nothing else listens.
PORT = 9000
GROUPS = {"4": "239.255.0.1", "6": "[ff15::1]"}


class _Process:
    """
    A C{tcpsc} command of a scenario, its output read as it comes.
    """

    def __init__(self, *args: str, stdin: bytes | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tcpsc", *args],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.input = stdin
        self.err = b""

    def waitForError(self, text: bytes) -> None:
        """
        Read standard error until it holds C{text}, at most L{TIMEOUT}.
        """
        assert self.process.stderr is not None
        deadline = time.monotonic() + TIMEOUT
        while text not in self.err:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.process.stderr], [], [], max(left, 0))
            if not ready:
                self.process.kill()
                raise AssertionError(f"no {text!r} within {TIMEOUT} s: {self.err!r}")
            chunk = os.read(self.process.stderr.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"ended before {text!r}: {self.err!r}")
            self.err += chunk

    def finish(self) -> dict[str, Any]:
        """
        Wait for the end (at most L{TIMEOUT}): its status and output.
        """
        try:
            out, err = self.process.communicate(self.input, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
            return {"status": "timeout", "out": out.decode(), "err": (self.err + err).decode()}
        return {
            "status": self.process.returncode,
            "out": out.decode(),
            "err": (self.err + err).decode(),
        }


def _listener(group: str, *options: str) -> _Process:
    listener = _Process("multicast", "listen", f"{group}:{PORT}", "-v", *options)
    listener.waitForError(b"listening to")
    return listener


def _fanout(family: str) -> dict[str, Any]:
    """
    Two listeners (one showing senders) and a sender, on one host and
    port; a line too long for the sender is not sent.
    """
    group = GROUPS[family]
    listeners = [_listener(group, "-n", "3"), _listener(group, "-n", "3", "--show-sender")]
    lines = b"one\n" + b"x" * 1473 + b"\ntwo\nthree\n"
    sender = _Process("multicast", "send", f"{group}:{PORT}", stdin=lines)
    return {"sender": sender.finish(), "listeners": [each.finish() for each in listeners]}


def _delimited(family: str) -> dict[str, Any]:
    """
    With the same C{-d} on both sides; the listener drops a datagram
    longer than its C{-m}.
    """
    group = GROUPS[family]
    listener = _listener(group, "-n", "2", "-d", "|", "-m", "10")
    sender = _Process(
        "multicast",
        "send",
        f"{group}:{PORT}",
        "-d",
        "|",
        stdin=b"a|b\n" + b"z" * 10 + b"\nab\ncd\n",
    )
    return {"sender": sender.finish(), "listener": listener.finish()}


def _sigterm(family: str) -> dict[str, Any]:
    """
    A listener stopped by SIGTERM.
    """
    listener = _listener(GROUPS[family])
    listener.process.send_signal(signal.SIGTERM)
    return {"listener": listener.finish()}


def _noInterface(family: str) -> dict[str, Any]:
    """
    An --interface this host does not have.
    """
    group = GROUPS[family]
    address = "10.99.99.99" if family == "4" else "fd99::99"
    return {
        "listener": _Process(
            "multicast", "listen", f"{group}:{PORT}", "--interface", address
        ).finish(),
        "sender": _Process(
            "multicast", "send", f"{group}:{PORT}", "--interface", address, stdin=b"x\n"
        ).finish(),
    }


def _noRoute(family: str) -> dict[str, Any]:
    """
    A sender with no route to the group: the namespace's routes are
    taken away first.
    """
    subprocess.run(["ip", "route", "flush", "table", "all"], check=True, timeout=TIMEOUT)
    group = GROUPS[family]
    return {"sender": _Process("multicast", "send", f"{group}:{PORT}", stdin=b"x\ny\n").finish()}


def _loopback(family: str, mode: str) -> dict[str, Any]:
    """
    Over C{mc0}, a real (virtual Ethernet) interface: a sender with
    C{--no-loopback} or without sends to a group a listener on this host
    joined on C{mc0}; then a sender with loopback sends a marker to
    another group, which a second listener joined on C{mc0}.
    """
    group = GROUPS[family]
    other = "239.255.0.2" if family == "4" else "[ff15::2]"
    address = _netns.VETH_ADDRESSES["mc0"][0 if family == "4" else 1]
    here = _listener(group, "--interface", address, "-n", "1")
    marker = _listener(other, "--interface", address, "-n", "1")
    off = ["--no-loopback"] if mode == "off" else []
    sent = _Process(
        "multicast", "send", f"{group}:{PORT}", "--interface", address, *off, stdin=b"datagram\n"
    ).finish()
    markerSent = _Process(
        "multicast", "send", f"{other}:{PORT}", "--interface", address, stdin=b"marker\n"
    ).finish()
    result = {"sent": sent, "markerSent": markerSent, "marker": marker.finish()}
    if mode == "off":
        here.process.send_signal(signal.SIGTERM)
    result["here"] = here.finish()
    return result


SCENARIOS = {
    "loopback": _loopback,
    "noRoute": _noRoute,
    "fanout": _fanout,
    "delimited": _delimited,
    "sigterm": _sigterm,
    "noInterface": _noInterface,
}


class MulticastIPv4Tests(SynchronousTestCase):
    """
    C{tcpsc multicast send} and C{listen} on an IPv4 group, in a private
    network namespace.
    """

    family = "4"

    def setUp(self) -> None:
        reason = _netns.namespaceUnavailable()
        if reason is not None:
            raise SkipTest(reason)

    def scenario(self, name: str) -> Any:
        result = _netns.runInNamespace(["-m", "tests.test_udp_cli", name, self.family])
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        return json.loads(result.stdout.strip().splitlines()[-1])

    def test_fanout(self) -> None:
        """
        Every listener prints every message sent, in order, a line each
        (with C{--show-sender}, after the sender's address), and exits 0
        after C{--count}; the sender exits 0 at the end of its input, with
        one line for the line too long to send.
        """
        result = self.scenario("fanout")
        sender = result["sender"]
        self.assertEqual(sender["status"], 0, sender)
        self.assertEqual(sender["out"], "")
        self.assertEqual(
            sender["err"].splitlines(),
            ["tcpsc multicast send: not sent: the line is longer than --max-length (1472 bytes)"],
        )
        plain, shown = result["listeners"]
        self.assertEqual(plain["status"], 0, plain)
        self.assertEqual(plain["out"], "one\ntwo\nthree\n")
        self.assertEqual(shown["status"], 0, shown)
        loopback = "127.0.0.1:" if self.family == "4" else "[::1]:"
        lines = shown["out"].splitlines()
        self.assertEqual([line.split(" ", 1)[1] for line in lines], ["one", "two", "three"])
        for line in lines:
            self.assertTrue(line.startswith(loopback), line)
        # With -v: that it listens, and nothing dropped.
        self.assertIn("listening to", plain["err"])
        self.assertNotIn("dropped", plain["err"])

    def test_delimited(self) -> None:
        """
        With C{-d} on both sides each line is a message; a line with the
        delimiter is not sent (said so); a datagram over the listener's
        C{-m} is dropped whole (said so), never printed cut.
        """
        result = self.scenario("delimited")
        self.assertEqual(result["sender"]["status"], 0, result)
        self.assertIn("not sent: the line contains the delimiter", result["sender"]["err"])
        listener = result["listener"]
        self.assertEqual(listener["status"], 0, listener)
        self.assertEqual(listener["out"], "ab\ncd\n")
        self.assertIn("longer than --max-length (10 bytes) was dropped", listener["err"])

    def test_sigterm(self) -> None:
        """
        SIGTERM ends a listener with the signal's own status, quietly.
        """
        listener = self.scenario("sigterm")["listener"]
        self.assertEqual(listener["status"], -signal.SIGTERM, listener)
        self.assertNotIn("Traceback", listener["err"])

    def test_noInterface(self) -> None:
        """
        An interface the host does not have: exit 1, one line each.
        """
        result = self.scenario("noInterface")
        for side in ("listener", "sender"):
            self.assertEqual(result[side]["status"], 1, result[side])
            lines = result[side]["err"].splitlines()
            self.assertEqual(len(lines), 1, lines)
            self.assertTrue(lines[0].startswith("tcpsc multicast: "), lines[0])

    def test_noRoute(self) -> None:
        """
        A datagram the system refuses (no route to the group): a line for
        each, and exit status 1.
        """
        sender = self.scenario("noRoute")["sender"]
        self.assertEqual(sender["status"], 1, sender)
        self.assertEqual(
            sender["err"].splitlines(),
            ["tcpsc multicast send: not sent: the system refused the datagram (no route to it?)"]
            * 2,
        )


class MulticastIPv6Tests(MulticastIPv4Tests):
    """
    The same on an IPv6 group.
    """

    family = "6"


class LoopbackTests(SynchronousTestCase):
    """
    C{tcpsc multicast send --no-loopback}, over a pair of virtual Ethernet
    interfaces in a private network namespace.
    """

    def setUp(self) -> None:
        reason = _netns.namespaceUnavailable(veth=True)
        if reason is not None:
            raise SkipTest(reason)

    def check(self, family: str) -> None:
        for mode, expected in (("off", ""), ("on", "datagram\n")):
            result = _netns.runInNamespace(
                ["-m", "tests.test_udp_cli", "loopback", family, mode], veth=True
            )
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            outcome = json.loads(result.stdout.strip().splitlines()[-1])
            self.assertEqual(outcome["sent"]["status"], 0, outcome)
            self.assertEqual(outcome["marker"]["out"], "marker\n", outcome)
            self.assertEqual(outcome["here"]["out"], expected, (mode, outcome))

    def test_ipv4(self) -> None:
        """
        With C{--no-loopback} a listener on this host gets nothing sent
        through a real interface; without it, it does.
        """
        self.check("4")

    def test_ipv6(self) -> None:
        """
        The same for an IPv6 group.
        """
        self.check("6")


if __name__ == "__main__":
    name, *arguments = sys.argv[1:]
    print(json.dumps(SCENARIOS[name](*arguments)), flush=True)
