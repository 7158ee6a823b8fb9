"""
Smoke test of C{tcpsc bench}: short runs against servers in this process
(tcpsc's over TCP, a plain Twisted echo over UDP), through the real command
in a child process.  Benchmarks themselves are not tests; this only proves
the tool counts right and catches a server that gets the bytes wrong.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol, ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tcpsc import MessageProtocol, Server, TLSConfig

from ._helpers import asyncTest, certificates, waitFor

ROOT = Path(__file__).resolve().parents[1]


class _Echo(MessageProtocol):
    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(message)


class _Corrupting(MessageProtocol):
    """
    Echoes, but changes one byte of the 100th message of each connection.
    """

    seen = 0

    def messageReceived(self, message: bytes) -> None:
        self.seen += 1
        if self.seen == 100:
            message = (b"!" if message[:1] != b"!" else b"#") + message[1:]
        self.sendMessage(message)


class _Reordering(MessageProtocol):
    """
    Echoes, but swaps the 10th and 11th messages of each connection.
    """

    seen = 0
    held: bytes | None = None

    def messageReceived(self, message: bytes) -> None:
        self.seen += 1
        if self.seen == 10:
            self.held = message
            return
        self.sendMessage(message)
        if self.held is not None:
            self.sendMessage(self.held)
            self.held = None


class _Dropping(MessageProtocol):
    """
    Echoes all but the 50th message of each connection.
    """

    seen = 0

    def messageReceived(self, message: bytes) -> None:
        self.seen += 1
        if self.seen != 50:
            self.sendMessage(message)


def _result(output: str) -> dict[str, str]:
    """
    The fields of the last line, which must be the RESULT line.
    """
    last = output.strip().splitlines()[-1]
    words = last.split()
    assert words[0] == "RESULT", last
    return dict(word.split("=", 1) for word in words[1:])


class _BenchTestCase(TestCase):
    """
    Helpers: servers in this process, the real command in a child process.
    """

    timeout = 60

    async def _serve(self, protocol: type[MessageProtocol], tls: TLSConfig | None = None) -> int:
        server = Server(protocol)
        port = await server.listen(0, "127.0.0.1", tls=tls)
        self.addCleanup(server.stop)
        address: Any = cast(Any, port).getHost()
        return int(address.port)

    async def _bench(self, *arguments: str) -> tuple[str, str, int]:
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [environment.get("PYTHONPATH")])]
        )
        result: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
            sys.executable,
            ["-m", "tcpsc", "bench", *arguments],
            env=environment,
            path=str(ROOT),
            reactor=reactor,
        )
        out, err, code = await result
        return out.decode(), err.decode(), code

    async def _echo(
        self, protocol: type[MessageProtocol], *extra: str, tls: bool = False
    ) -> tuple[str, int]:
        files = certificates()
        config = TLSConfig(ca=files.ca, cert=files.server, key=files.serverKey) if tls else None
        port = await self._serve(protocol, config)
        tlsArguments = (
            ("--tls", "--ca", files.ca, "--cert", files.client, "--key", files.clientKey)
            if tls
            else ()
        )
        out, err, code = await self._bench(
            "echo",
            "localhost" if tls else "127.0.0.1",
            str(port),
            "-c",
            "3",
            "-m",
            "600",
            "-s",
            "32",
            "-q",
            "20",
            "-T",
            "20",
            *tlsArguments,
            *extra,
        )
        return out + err, code


class BenchEchoTests(_BenchTestCase):
    """
    C{tcpsc bench echo} counts right and catches a server that gets the
    bytes wrong.
    """

    @asyncTest
    async def test_echo(self) -> None:
        """
        Against a correct echo server every message comes back: the report
        and the RESULT line say so and the exit status is 0.
        """
        output, code = await self._echo(_Echo)
        self.assertEqual(code, 0, output)
        self.assertIn("Errors: 0 ", output)
        self.assertIn("Total messages: 600\n", output)
        self.assertIn("Message throughput:", output)
        fields = _result(output)
        self.assertEqual(fields["mode"], "echo")
        self.assertEqual(fields["messages"], "600")
        self.assertEqual(fields["errors"], "0")
        self.assertEqual((fields["clients"], fields["q"], fields["size"]), ("3", "20", "32"))
        self.assertGreater(float(fields["msgs_per_s"]), 0)
        self.assertGreater(float(fields["p99_us"]), 0)
        self.assertGreaterEqual(float(fields["p99_us"]), float(fields["p50_us"]))

    @asyncTest
    async def test_processes(self) -> None:
        """
        With C{--procs 2} the clients run in two processes and their counts
        add up.
        """
        output, code = await self._echo(_Echo, "--procs", "2")
        self.assertEqual(code, 0, output)
        fields = _result(output)
        self.assertEqual((fields["messages"], fields["errors"], fields["procs"]), ("600", "0", "2"))

    @asyncTest
    async def test_tls(self) -> None:
        """
        Over TLS 1.3 with a client certificate, every message comes back.
        """
        files = certificates()
        port = await self._serve(
            _Echo, TLSConfig(ca=files.ca, cert=files.server, key=files.serverKey)
        )
        out, err, code = await self._bench(
            "echo",
            "localhost",
            str(port),
            "-c",
            "2",
            "-m",
            "400",
            "-q",
            "50",
            "-T",
            "20",
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            files.client,
            "--key",
            files.clientKey,
        )
        output = out + err
        self.assertEqual(code, 0, output)
        fields = _result(output)
        self.assertEqual((fields["messages"], fields["errors"], fields["tls"]), ("400", "0", "1"))

    @asyncTest
    async def test_corruption(self) -> None:
        """
        A server that alters one byte of one message per connection is
        caught: one corrupt message per client, exit status 1.
        """
        output, code = await self._echo(_Corrupting)
        self.assertEqual(code, 1, output)
        self.assertIn("corrupt messages 3 [3 bytes]", output)
        self.assertIn("First error: client ", output)
        self.assertEqual(_result(output)["errors"], "3")

    @asyncTest
    async def test_corruptionOverTLS(self) -> None:
        """
        Over TLS too (the load's fast path reads TLS as well).
        """
        output, code = await self._echo(_Corrupting, tls=True)
        self.assertEqual(code, 1, output)
        self.assertIn("corrupt messages 3 [3 bytes]", output)
        self.assertEqual(_result(output)["tls"], "1")

    @asyncTest
    async def test_reorderingOverTLS(self) -> None:
        """
        Two messages swapped over TLS: two corrupt messages per client.
        """
        output, code = await self._echo(_Reordering, tls=True)
        self.assertEqual(code, 1, output)
        self.assertIn("corrupt messages 6 ", output)

    @asyncTest
    async def test_reordering(self) -> None:
        """
        Two messages swapped are two corrupt messages per client.
        """
        output, code = await self._echo(_Reordering)
        self.assertEqual(code, 1, output)
        self.assertIn("corrupt messages 6 ", output)
        self.assertEqual(_result(output)["errors"], "6")

    @asyncTest
    async def test_loss(self) -> None:
        """
        A message that never comes back is a missing echo once the time
        limit is reached (and the bytes after it no longer match).
        """
        port = await self._serve(_Dropping)
        out, err, code = await self._bench(
            "echo", "127.0.0.1", str(port), "-c", "1", "-m", "100", "-q", "5", "-T", "1.5"
        )
        output = out + err
        self.assertEqual(code, 1, output)
        self.assertIn("missing echoes 1,", output)
        self.assertNotEqual(_result(output)["errors"], "0")

    @asyncTest
    async def test_refused(self) -> None:
        """
        Nothing listening: connection errors, not a hang or a traceback.
        """
        server = Server(_Echo)
        listening = await server.listen(0, "127.0.0.1")
        address: Any = cast(Any, listening).getHost()
        closedPort = address.port
        await server.stop()
        out, err, code = await self._bench(
            "echo", "127.0.0.1", str(closedPort), "-c", "2", "-m", "10", "-T", "5"
        )
        output = out + err
        self.assertEqual(code, 1, output)
        self.assertNotIn("Traceback", output)
        self.assertIn("Errors: 12 (connection 2,", output)


class BenchOpenFileTests(_BenchTestCase):
    """
    C{tcpsc bench} makes room for its connections where it starts.
    """

    @asyncTest
    async def test_raisesLimit(self) -> None:
        """
        Started with a soft limit of open files below the number of its
        clients, C{bench echo} raises it (toward the hard limit), and every
        client connects.
        """
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and hard < 1000:
            raise SkipTest(f"the hard limit of open files is {hard}")
        port = await self._serve(_Echo)
        script = (
            "import resource, runpy\n"
            "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))\n"
            "runpy.run_module('tcpsc', run_name='__main__', alter_sys=True)\n"
        )
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [environment.get("PYTHONPATH")])]
        )
        result: Deferred[tuple[bytes, bytes, int]] = getProcessOutputAndValue(
            sys.executable,
            [
                "-c",
                script,
                "bench",
                "echo",
                "127.0.0.1",
                str(port),
                "-c",
                "100",
                "-m",
                "100",
                "-q",
                "1",
                "-T",
                "20",
            ],
            env=environment,
            path=str(ROOT),
            reactor=reactor,
        )
        out, err, code = await result
        output = out.decode() + err.decode()
        self.assertEqual(code, 0, output)
        fields = _result(output)
        self.assertEqual(
            (fields["clients"], fields["messages"], fields["errors"]), ("100", "100", "0")
        )


class BenchOptionTests(_BenchTestCase):
    """
    The options and exit statuses every mode shares, and C{multicast}'s.
    """

    @asyncTest
    async def test_delimiterDigitsAreText(self) -> None:
        """
        C{-d 10} is the two bytes C{10}, as for C{tcpsc connect} and the
        daemon: a server framing on them echoes every message.
        """
        server = Server(_Echo, delimiter=b"10")
        port = cast(Any, await server.listen(0, "127.0.0.1")).getHost().port
        self.addCleanup(server.stop)
        out, err, code = await self._bench(
            "echo",
            "127.0.0.1",
            str(port),
            "-d",
            "10",
            "-c",
            "2",
            "-m",
            "100",
            "-q",
            "5",
            "-T",
            "20",
        )
        self.assertEqual(code, 0, out + err)
        self.assertIn("(including delimiter 10)", out)
        self.assertEqual(_result(out)["messages"], "100")

    @asyncTest
    async def test_unreadableCertificate(self) -> None:
        """
        A certificate file that cannot be read: exit 1 with one line naming
        the problem, before any connection.
        """
        port = await self._serve(_Echo)
        out, err, code = await self._bench(
            "echo", "localhost", str(port), "--tls", "--ca", "/nonexistent/ca.pem"
        )
        self.assertEqual(code, 1, out + err)
        self.assertIn("tcpsc bench: cannot load the TLS files:", err)
        self.assertNotIn("Traceback", err)

    @asyncTest
    async def test_multicastNothingReceived(self) -> None:
        """
        Against a server that broadcasts nothing (an echo server): exit 1,
        one line on standard error saying so.
        """
        port = await self._serve(_Echo)
        out, err, code = await self._bench(
            "multicast", "127.0.0.1", str(port), "-c", "2", "-T", "0.3"
        )
        self.assertEqual(code, 1, out + err)
        self.assertEqual(_result(out)["messages"], "0")
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("tcpsc bench multicast: no messages received", lines[0])

    @asyncTest
    async def test_multicastReceives(self) -> None:
        """
        Against a server that broadcasts on its own, messages of the
        expected size: exit 0.
        """
        server = Server(_Echo)
        port = cast(Any, await server.listen(0, "127.0.0.1")).getHost().port
        self.addCleanup(server.stop)
        ticker = LoopingCall(server.broadcast, b"x" * 31)
        ticker.clock = reactor
        ticker.start(0.01)
        self.addCleanup(ticker.stop)
        out, err, code = await self._bench(
            "multicast", "127.0.0.1", str(port), "-c", "2", "-T", "0.5", "-s", "32"
        )
        self.assertEqual(code, 0, out + err)
        fields = _result(out)
        self.assertEqual(fields["errors"], "0")
        self.assertNotEqual(fields["messages"], "0")

    @asyncTest
    async def test_help(self) -> None:
        """
        Every option of every mode has a help text that states its default.
        """
        for mode, options in (
            ("echo", ("-c", "-m", "-s", "-q", "-T", "-d", "--procs")),
            ("multicast", ("-c", "-T", "-s")),
            ("connect", ("-n", "-c", "-s", "-T")),
            ("idle", ("-n", "-c", "--hold", "-T")),
            ("udp-echo", ("-q", "-T", "-s", "-d", "--batch", "--loss-timeout")),
            ("udp-multicast", ("-c", "-r", "-T", "-s", "--receive-buffer")),
        ):
            out, err, code = await self._bench(mode, "--help")
            self.assertEqual(code, 0, err)
            text = " ".join(out.split())
            for option in options:
                start = text.index(f" {option} ")
                following = text[start : start + 300]
                self.assertIn("(default: ", following, (mode, option, following))

    async def interrupt(self, name: str) -> tuple[int | None, int | None, bytes]:
        """
        Start C{tcpsc bench idle}, send it the signal C{name} while it holds
        its connections; its exit status, the signal it died of, and its
        output.
        """
        port = await self._serve(_Echo)
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [environment.get("PYTHONPATH")])]
        )
        ended: Deferred[tuple[int | None, int | None]] = Deferred()
        output = bytearray()

        class Bench(ProcessProtocol):
            def outReceived(self, data: bytes) -> None:
                output.extend(data)

            errReceived = outReceived

            def processEnded(self, reason: Any) -> None:
                ended.callback((reason.value.exitCode, reason.value.signal))

        process = reactor.spawnProcess(
            Bench(),
            sys.executable,
            [
                sys.executable,
                "-m",
                "tcpsc",
                "bench",
                "idle",
                "127.0.0.1",
                str(port),
                "-n",
                "2",
                "--hold",
                "60",
            ],
            env=environment,
        )
        await waitFor(lambda: b"HOLDING connections=2" in output, timeout=30)
        process.signalProcess(name)
        code, number = await ended.addTimeout(30, reactor)
        self.assertNotIn(b"Traceback", bytes(output))
        return code, number, bytes(output)

    @asyncTest
    async def test_interrupted(self) -> None:
        """
        Ctrl-C (SIGINT) stops a run: exit status 130, no traceback.
        """
        code, _, output = await self.interrupt("INT")
        self.assertEqual(code, 130, output)

    @asyncTest
    async def test_terminated(self) -> None:
        """
        SIGTERM stops a run: it dies of the signal, no traceback.
        """
        code, number, output = await self.interrupt("TERM")
        self.assertEqual((code, number), (None, signal.SIGTERM), output)


class _UdpEcho(DatagramProtocol):
    """
    A plain Twisted UDP echo (not tcpsc), with faults to order: it can drop
    every C{dropEvery}-th datagram, change one byte of the C{corruptAt}-th,
    send the C{duplicateAt}-th twice, or send each delimited message of a
    datagram back in a datagram of its own (C{splitOn}).
    """

    def __init__(
        self,
        dropEvery: int = 0,
        corruptAt: int = 0,
        duplicateAt: int = 0,
        splitOn: bytes | None = None,
    ) -> None:
        self.dropEvery = dropEvery
        self.corruptAt = corruptAt
        self.duplicateAt = duplicateAt
        self.splitOn = splitOn
        self.seen = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.seen += 1
        if self.dropEvery and self.seen % self.dropEvery == 0:
            return
        if self.seen == self.corruptAt:
            datagram = datagram[:-2] + (b"!" if datagram[-2:-1] != b"!" else b"#") + datagram[-1:]
        if self.seen == self.duplicateAt:
            self.transport.write(datagram, addr)
        if self.splitOn is None:
            self.transport.write(datagram, addr)
            return
        for message in datagram.split(self.splitOn)[:-1]:
            self.transport.write(message + self.splitOn, addr)


class BenchUdpTests(_BenchTestCase):
    """
    C{tcpsc bench udp-echo} keeps messages in flight, checks every echo and
    counts what is lost; C{udp-multicast}'s options are checked before
    anything is sent.
    """

    def _udpServe(self, protocol: DatagramProtocol) -> int:
        port = reactor.listenUDP(0, protocol, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def _udpEcho(self, protocol: DatagramProtocol, *extra: str) -> tuple[str, str, int]:
        port = self._udpServe(protocol)
        return await self._bench("udp-echo", "127.0.0.1", str(port), *extra)

    @asyncTest
    async def test_echo(self) -> None:
        """
        Against a correct echo every message sent is echoed: nothing lost,
        no error, exit status 0, the RESULT line in the TCP modes' form.
        """
        out, err, code = await self._udpEcho(
            _UdpEcho(), "-q", "20", "-T", "0.5", "--loss-timeout", "20"
        )
        self.assertEqual(code, 0, out + err)
        fields = _result(out)
        self.assertEqual(fields["mode"], "udp-echo")
        self.assertEqual(
            (fields["errors"], fields["lost"], fields["loss_percent"]), ("0", "0", "0.000")
        )
        self.assertEqual(fields["messages"], fields["sent"])
        self.assertGreater(int(fields["messages"]), 0)
        self.assertGreater(float(fields["msgs_per_s"]), 0)
        self.assertEqual((fields["q"], fields["size"], fields["batch"]), ("20", "32", "1"))
        self.assertIn("Message size: 32 (one message per datagram)", out)

    @asyncTest
    async def test_ipv6(self) -> None:
        """
        Over IPv6 (a server on ::1) every message is echoed too.
        """
        port = reactor.listenUDP(0, _UdpEcho(), interface="::1")
        self.addCleanup(port.stopListening)
        out, err, code = await self._bench(
            "udp-echo", "::1", str(port.getHost().port), "-T", "0.2", "--loss-timeout", "20"
        )
        self.assertEqual(code, 0, out + err)
        fields = _result(out)
        self.assertEqual((fields["errors"], fields["lost"]), ("0", "0"))
        self.assertGreater(int(fields["messages"]), 0)

    @asyncTest
    async def test_batches(self) -> None:
        """
        With C{-d} and C{--batch}, a datagram holds several messages; echoes
        are split on the delimiter, so a server that sends each message back
        in a datagram of its own is counted right too.
        """
        for server in (_UdpEcho(), _UdpEcho(splitOn=b"|")):
            out, err, code = await self._udpEcho(
                server, "-d", "|", "--batch", "5", "-q", "20", "-T", "0.3", "--loss-timeout", "20"
            )
            self.assertEqual(code, 0, out + err)
            fields = _result(out)
            self.assertEqual((fields["errors"], fields["lost"], fields["batch"]), ("0", "0", "5"))
            self.assertEqual(fields["messages"], fields["sent"])
            self.assertEqual(int(fields["sent"]) % 5, 0)

    @asyncTest
    async def test_loss(self) -> None:
        """
        A server that drops every tenth datagram: the run does not hang on
        the lost ones, they are counted (sent = echoed + lost), and loss
        alone is not an error.
        """
        out, err, code = await self._udpEcho(
            _UdpEcho(dropEvery=10), "-q", "10", "-T", "0.5", "--loss-timeout", "0.2"
        )
        self.assertEqual(code, 0, out + err)
        fields = _result(out)
        self.assertGreater(int(fields["lost"]), 0)
        self.assertEqual(int(fields["sent"]), int(fields["messages"]) + int(fields["lost"]))
        self.assertGreater(float(fields["loss_percent"]), 0)
        self.assertEqual(fields["errors"], "0")

    @asyncTest
    async def test_corruptAndDuplicated(self) -> None:
        """
        An echo with one byte changed, and an echo sent twice, are errors:
        exit status 1, each named.
        """
        out, err, code = await self._udpEcho(
            _UdpEcho(corruptAt=7), "-q", "5", "-T", "0.3", "--loss-timeout", "20"
        )
        self.assertEqual(code, 1, out + err)
        self.assertIn("Errors: 1 (corrupt echoes 1, duplicated echoes 0)", out)
        self.assertIn("First error: an echo matches no message sent", out)
        out, err, code = await self._udpEcho(
            _UdpEcho(duplicateAt=7), "-q", "5", "-T", "0.3", "--loss-timeout", "20"
        )
        self.assertEqual(code, 1, out + err)
        self.assertIn("Errors: 1 (corrupt echoes 0, duplicated echoes 1)", out)
        self.assertIn("First error: message 6 was echoed twice", out)

    @asyncTest
    async def test_closedPort(self) -> None:
        """
        Nothing listening: every message lost, the port named closed, exit
        status 1 with one line on standard error; no hang, no traceback.
        """
        port = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        closed = port.getHost().port
        await port.stopListening()
        out, err, code = await self._bench(
            "udp-echo", "127.0.0.1", str(closed), "-q", "3", "-T", "0.2", "--loss-timeout", "0.2"
        )
        self.assertEqual(code, 1, out + err)
        self.assertNotIn("Traceback", err)
        self.assertEqual(_result(out)["messages"], "0")
        self.assertEqual(_result(out)["loss_percent"], "100.000")
        self.assertEqual(
            err.strip().splitlines(),
            ["tcpsc bench udp-echo: no echo in 0.2 s: the port is closed (ICMP port unreachable)"],
        )

    @asyncTest
    async def test_usageErrors(self) -> None:
        """
        Options that do not fit: exit status 2, the option named, nothing
        sent.
        """
        for arguments, expected in (
            (("udp-echo", "127.0.0.1", "9", "--batch", "3"), "--batch needs -d"),
            (
                ("udp-echo", "127.0.0.1", "9", "-d", "|", "--batch", "30", "-q", "20"),
                "--batch must be at most -q",
            ),
            (("udp-echo", "127.0.0.1", "9", "-s", "8"), "-s must be at least 10"),
            (("udp-echo", "127.0.0.1", "70000"), "argument PORT: port outside 1-65535"),
            (
                ("udp-multicast", "10.0.0.1:9000"),
                "argument GROUP:PORT: 10.0.0.1 is not a multicast group",
            ),
            (
                ("udp-multicast", "ff15::1:9000"),
                "argument GROUP:PORT: an IPv6 group goes in brackets",
            ),
            (
                ("udp-multicast", "239.255.0.1:9000", "-r", "0"),
                "argument -r/--rate: must be more than 0",
            ),
            (("udp-multicast", "239.255.0.1:9000", "-s", "4"), "-s must be at least 8"),
        ):
            out, err, code = await self._bench(*arguments)
            self.assertEqual(code, 2, (arguments, out, err))
            self.assertIn(expected, err)
            self.assertEqual(out, "")

    def _needNamespace(self) -> None:
        """
        Skip, saying why, where the private network namespace cannot be
        made; fail instead where it must (C{TCPSC_REQUIRE_NETNS=1}, as CI
        sets).
        """
        from . import _netns

        why = _netns.namespaceUnavailable()
        if why is None:
            return
        if _netns.required():
            self.fail(f"{why} ({_netns.REQUIRE} is set: these tests must run)")
        raise SkipTest(why)

    def test_multicast(self) -> None:
        """
        In a private network namespace, one sender to an IPv4 group and to
        an IPv6 group, three receivers: at a low rate every receiver gets
        every datagram, and the report says so.
        """
        from ._netns import runInNamespace

        self._needNamespace()
        for target in ("239.255.0.1:9000", "[ff15::1]:9000"):
            result = runInNamespace(
                [
                    "-m",
                    "tcpsc",
                    "bench",
                    "udp-multicast",
                    target,
                    "-c",
                    "3",
                    "-r",
                    "200",
                    "-T",
                    "0.5",
                ]
            )
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            fields = _result(result.stdout)
            self.assertEqual((fields["mode"], fields["receivers"]), ("udp-multicast", "3"))
            self.assertGreater(int(fields["sent"]), 0)
            self.assertEqual(int(fields["delivered"]), 3 * int(fields["sent"]))
            self.assertEqual(fields["min_receiver"], fields["sent"])
            self.assertEqual((fields["lost"], fields["errors"]), ("0", "0"))

    def test_multicastSenderEndsWithTheCommand(self) -> None:
        """
        The sending process of C{bench udp-multicast} does not outlive the
        command: killed by SIGTERM in the middle of a 30 s run, the command
        leaves no sender behind (the child notices its parent is gone).
        """
        from ._netns import runInNamespace

        self._needNamespace()
        scenario = textwrap.dedent(
            """
            import os, signal, subprocess, sys, time

            def alive(pid):
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        return f.read().rsplit(")", 1)[1].split()[0] != "Z"
                except FileNotFoundError:
                    return False

            def children(pid):
                try:
                    with open(f"/proc/{pid}/task/{pid}/children") as f:
                        return [int(c) for c in f.read().split()]
                except FileNotFoundError:
                    return []

            bench = subprocess.Popen(
                [sys.executable, "-m", "tcpsc", "bench", "udp-multicast",
                 "239.255.0.1:9000", "-c", "2", "-r", "100", "-T", "30"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 20
            senders = []
            while not senders and time.monotonic() < deadline:
                senders = children(bench.pid)
                time.sleep(0.02)
            print("sender", bool(senders))
            bench.send_signal(signal.SIGTERM)
            bench.wait(20)
            deadline = time.monotonic() + 20
            while any(alive(pid) for pid in senders) and time.monotonic() < deadline:
                time.sleep(0.02)
            print("left", [pid for pid in senders if alive(pid)])
            """
        )
        result = runInNamespace(["-c", scenario])
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stdout.split("\n")[:2], ["sender True", "left []"])

    def test_multicastUnrouted(self) -> None:
        """
        In a namespace where multicast is not routed (its loopback down, no
        route), the receivers cannot join: exit status 1, one line saying
        so, no traceback.
        """
        self._needNamespace()
        import shutil
        import subprocess

        unshare = shutil.which("unshare")
        assert unshare is not None
        result = subprocess.run(
            [
                unshare,
                "-n",
                sys.executable,
                "-m",
                "tcpsc",
                "bench",
                "udp-multicast",
                "239.255.0.1:9000",
                "-c",
                "2",
                "-T",
                "0.2",
            ],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("tcpsc bench: multicast to 239.255.0.1:9000: No such device", lines[0])
