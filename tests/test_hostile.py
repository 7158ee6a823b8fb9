"""
Hostile peers: what a server must survive without stalling, leaking or
growing.

Most cases run against the daemon, the real C{twistd -n --pidfile= tcpsc}
process (started as L{tests.test_daemon} does), and measure it from outside
through C{/proc/PID}: its resident memory (C{VmRSS}) and its peak
(C{VmHWM}, reset before each hostile act through C{clear_refs}, so that a
buffer that grew and was freed again still counts), and its open file
descriptors.  The rest run against L{tcpsc.Server} in this process, where the
connection's own buffer is what is measured.

Every case asserts, after the hostile act:

  - a well-behaved client (a plain socket, or Python's C{ssl} module with
    the client certificate) is still served: its message comes back;
  - memory stayed within the bound the test names, and the file descriptors
    went back to their count before the act.

Every daemon and peer is stopped in a cleanup, every wait is bounded.  The
pacing of a slow peer (a byte every 0.1 s) is the hostile behaviour itself,
never a way to wait for the server.
"""

from __future__ import annotations

import os
import random
import re
import select
import socket
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpsc import Client, MessageProtocol, Server

from ._helpers import asyncTest, certificates, waitFor
from .test_daemon import LOCAL, OPENSSL, TIMEOUT, Daemon, Peer, _until

#: One KiB, the unit of C{/proc/PID/status}.
KiB = 1024
MiB = 1024 * 1024

#: Bound of the growth of the daemon's memory (resident now, and peak during
#: the act) for acts that should cost it nothing lasting: a few connections'
#: state, log buffers, allocator slack.  An unbounded buffer fed by the
#: hostile peers of this module would exceed it many times over.
SMALL_GROWTH = 8 * MiB


# -- measuring a process ----------------------------------------------------


def memoryOf(pid: int) -> tuple[int, int]:
    """
    @return: C{(resident, peak resident)} of process C{pid}, in bytes.
    """
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * KiB
    return fields["VmRSS"], fields["VmHWM"]


def resetPeak(pid: int) -> None:
    """
    Make C{VmHWM} of process C{pid} start again from its current resident
    size (C{clear_refs} 5, Linux).
    """
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def descriptorsOf(pid: int) -> int:
    """
    @return: how many file descriptors process C{pid} has open.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Baseline:
    """
    The daemon's file descriptors and resident memory before a hostile act.
    """

    descriptors: int
    resident: int


# -- well-behaved and hostile TLS peers -------------------------------------


def tlsContext(cert: str | None = "client") -> ssl.SSLContext:
    """
    A client context of Python's C{ssl} module: TLS 1.3, the server verified
    against the test CA and its host name checked, presenting
    C{<cert>.pem/.key} of the test certificate set (none if C{cert} is
    C{None}).
    """
    files = certificates()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(files.ca)
    if cert is not None:
        context.load_cert_chain(files.path(f"{cert}.pem"), files.path(f"{cert}.key"))
    return context


class TLSPeer(Peer):
    """
    A TLS client over a real socket, with L{Peer}'s line helpers.
    """

    def __init__(
        self,
        test: SynchronousTestCase,
        port: int,
        cert: str | None = "client",
        serverHostname: str = "localhost",
    ) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        test.addCleanup(raw.close)
        self.localPort = raw.getsockname()[1]  # type: ignore[misc]
        self.socket = tlsContext(cert).wrap_socket(raw, server_hostname=serverHostname)
        test.addCleanup(self.socket.close)
        self.buffer = b""

    localPort = 0  # type: ignore[assignment]


def clientHello() -> bytes:
    """
    The first flight of a real TLS 1.3 client: one record holding a
    ClientHello, made by Python's C{ssl} module in memory.
    """
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connection = tlsContext().wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        connection.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    assert hello[:1] == b"\x16", hello[:16]
    return hello


def rawConnection(test: SynchronousTestCase, port: int) -> socket.socket:
    """
    A plain socket to the daemon, closed in a cleanup.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    test.addCleanup(sock.close)
    return sock


def reset(sock: socket.socket) -> None:
    """
    Close C{sock} with a TCP RST instead of a FIN (C{SO_LINGER} 0).
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def closedByServer(sock: socket.socket, timeout: float = TIMEOUT) -> bool:
    """
    Read C{sock} (discarding what arrives) until the server closes it: an
    end of file, a reset, or a TLS alert.

    @return: C{True} if it was closed within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not readable:
            break
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            return True
    return False


class HexEcho(MessageProtocol):
    """
    Answers each message with its length and its bytes in hex, so that the
    peer sees exactly how the server split the stream, whatever the bytes.
    Used as C{--app tests.test_hostile:HexEcho}.
    """

    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(b"%d:%s" % (len(message), message.hex().encode()))


def hexReplies(peer: Peer, count: int, delimiter: bytes = b"\n") -> list[bytes]:
    """
    Read C{count} replies of L{HexEcho}.

    @return: the messages the server delivered, decoded.
    """
    messages = []
    for _ in range(count):
        reply = peer.receive(delimiter)
        length, _, data = reply.partition(b":")
        message = bytes.fromhex(data.decode())
        assert len(message) == int(length), reply
        messages.append(message)
    return messages


# -- the daemon -------------------------------------------------------------


class DaemonTestCase(SynchronousTestCase):
    """
    Start a daemon, serve a well-behaved client, measure the daemon.
    """

    daemon: Daemon
    port: int
    tls = False

    def setUp(self) -> None:
        self.opened: list[socket.socket] = []

    def startDaemon(self, *args: str, tls: bool = False, port: str = LOCAL) -> Daemon:
        if tls:
            files = certificates()
            args = (
                "--tls",
                "--ca",
                files.ca,
                "--cert",
                files.server,
                "--key",
                files.serverKey,
                *args,
            )
        self.daemon = Daemon(self, "--port", port, *args)
        self.port = self.daemon.port()
        self.tls = tls
        return self.daemon

    @property
    def pid(self) -> int:
        return self.daemon.process.pid

    def newPeer(self) -> Peer:
        """
        A plain client with line helpers, closed by L{closeAll}.
        """
        peer = Peer(self, self.port)
        self.opened.append(peer.socket)
        return peer

    def newRaw(self) -> socket.socket:
        """
        A plain socket, closed by L{closeAll}.
        """
        sock = rawConnection(self, self.port)
        self.opened.append(sock)
        return sock

    def closeAll(self) -> None:
        """
        Close every connection the test opened with L{newPeer} or L{newRaw}.
        """
        for sock in self.opened:
            sock.close()
        self.opened.clear()

    def closeLogged(self, localPort: int) -> None:
        """
        Wait until the daemon logged the end of the connection from
        C{localPort}, however it ended.
        """
        self.daemon.waitFor(
            rf"(Connection \d+ from 127\.0\.0\.1:{localPort} closed"
            rf"|(Refused|Closed) the connection from 127\.0\.0\.1:{localPort}"
            rf"|Connection from 127\.0\.0\.1:{localPort} closed)"
        )

    def leave(self, peer: Peer) -> None:
        """
        Close C{peer}'s connection and wait until the daemon logged its end.
        """
        localPort = peer.localPort
        peer.socket.close()
        self.closeLogged(localPort)

    def serve(self, message: bytes = b"well-behaved") -> None:
        """
        A well-behaved client connects, is echoed C{message}, and leaves; the
        daemon logged the end of its connection.
        """
        peer = TLSPeer(self, self.port) if self.tls else Peer(self, self.port)
        peer.send(message + b"\n")
        self.assertEqual(peer.receive(), message)
        self.leave(peer)

    def baseline(self) -> Baseline:
        """
        Serve two well-behaved clients (so that what serving costs once is
        paid), then measure, and restart the peak measurement.
        """
        self.serve(b"warm-up 1")
        self.serve(b"warm-up 2")
        resident, _ = memoryOf(self.pid)
        resetPeak(self.pid)
        return Baseline(descriptorsOf(self.pid), resident)

    def assertRecovered(self, baseline: Baseline, bound: int = SMALL_GROWTH) -> None:
        """
        The daemon serves a well-behaved client, its file descriptors went
        back to the baseline, and neither its resident memory nor its peak
        since the baseline grew by more than C{bound} bytes.
        """
        self.closeAll()
        self.assertIsNone(self.daemon.process.poll(), "the daemon exited")
        self.serve(b"still served")
        _until(
            lambda: descriptorsOf(self.pid) <= baseline.descriptors,
            10,
            what=f"descriptors back to {baseline.descriptors}",
        )
        resident, peak = memoryOf(self.pid)
        self.assertLessEqual(
            peak - baseline.resident,
            bound,
            f"peak memory grew by {(peak - baseline.resident) / MiB:.1f} MiB, "
            f"more than {bound / MiB:.1f} MiB",
        )
        self.assertLessEqual(
            resident - baseline.resident,
            bound,
            f"resident memory grew by {(resident - baseline.resident) / MiB:.1f} MiB",
        )
        self.assertNotIn("Traceback", self.daemon.output)


class PlainDaemonTests(DaemonTestCase):
    """
    Hostile peers of the plain TCP daemon.
    """

    def test_slowloris(self) -> None:
        """
        A peer sending one message a byte every 0.1 s (3 s in all) is no
        obstacle to others: meanwhile a well-behaved client is answered
        within a second, again and again; the slow message itself is
        delivered whole when its delimiter comes.  Memory bound:
        L{SMALL_GROWTH}.
        """
        self.startDaemon()
        baseline = self.baseline()
        slow = self.newPeer()
        other = self.newPeer()
        message = b"s" * 29
        latencies = []
        for index, byte in enumerate(message + b"\n"):
            slow.send(bytes([byte]))
            if index % 5 == 0:
                started = time.monotonic()
                other.send(b"quick %d\n" % index)
                self.assertEqual(other.receive(), b"quick %d" % index)
                latencies.append(time.monotonic() - started)
            time.sleep(0.1)
        self.assertEqual(slow.receive(), message)
        self.assertLess(max(latencies), 1.0, latencies)
        self.assertRecovered(baseline)

    def test_endlessMessage(self) -> None:
        """
        50 MB without a delimiter, streamed as fast as the daemon reads, to a
        daemon with C{--max-length 1048576}: its memory never grows by more
        than 4 MiB (the message is dropped as it arrives, not buffered), the
        drop is logged once, the connection is kept, and the message after
        the delimiter is echoed on it.  Memory bound: 4 MiB (the 1 MiB bound
        of the partial message, and reads).
        """
        self.startDaemon("--max-length", "1048576")
        baseline = self.baseline()
        peer = self.newPeer()
        chunk = b"x" * (1024 * 1024)
        for _ in range(50):
            peer.send(chunk)
        peer.send(b"\nafter the flood\n")
        self.assertEqual(peer.receive(), b"after the flood")
        self.assertEqual(
            len(
                re.findall(
                    r"Dropping a message from 127\.0\.0\.1:\d+ "
                    r"\(connection \d+\): \d+ bytes received without a "
                    r"delimiter",
                    self.daemon.output,
                )
            ),
            1,
        )
        self.assertRecovered(baseline, 4 * MiB)

    def test_exactMaximumAndOneOver(self) -> None:
        """
        With C{--max-length 1000}: a message of exactly 1000 bytes is
        echoed, one of 1001 is dropped (logged with the peer, the
        connection kept), and the next message is echoed, whether they come
        in one write or in writes cut at the length boundaries.  Memory
        bound: L{SMALL_GROWTH}.
        """
        self.startDaemon("--max-length", "1000")
        baseline = self.baseline()
        peer = self.newPeer()
        exact, over = b"e" * 1000, b"o" * 1001
        peer.send(exact + b"\n" + over + b"\nnext\n")
        self.assertEqual(peer.receive(), exact)
        self.assertEqual(peer.receive(), b"next")
        peer.send(exact)
        peer.send(b"\n" + over[:1000])
        peer.send(over[1000:] + b"\n")
        peer.send(b"next again\n")
        self.assertEqual(peer.receive(), exact)
        self.assertEqual(peer.receive(), b"next again")
        self.assertRegex(
            self.daemon.output,
            rf"Dropped a message of 1001 bytes from "
            rf"127\.0\.0\.1:{peer.localPort}",
        )
        self.assertRecovered(baseline)

    def test_delimiterSplitOverReads(self) -> None:
        """
        A 7-byte delimiter sent a byte at a time, and split at each of its
        inner positions across two sends (paced apart, so that they arrive
        in separate reads), ends each message exactly where it is (the
        daemon, answering with the hex of each message, shows the split).
        Memory bound: L{SMALL_GROWTH}.
        """
        self.startDaemon("--app", "tests.test_hostile:HexEcho", "--delimiter", "--END--")
        baseline = self.hexBaseline()
        peer = self.newPeer()
        delimiter = b"--END--"
        expected = []
        for at in range(1, len(delimiter)):
            message = b"m-%d--EN" % at
            peer.send(message + delimiter[:at])
            time.sleep(0.02)
            peer.send(delimiter[at:])
            expected.append(message)
        for byte in b"bytewise" + delimiter:
            peer.send(bytes([byte]))
            time.sleep(0.005)
        expected.append(b"bytewise")
        self.assertEqual(hexReplies(peer, len(expected), delimiter), expected)
        self.assertRecoveredHex(baseline)

    def hexBaseline(self) -> Baseline:
        """
        L{baseline} for a L{HexEcho} daemon with the delimiter C{--END--}.
        """
        for _ in range(2):
            peer = Peer(self, self.port)
            peer.send(b"warm--END--")
            self.assertEqual(hexReplies(peer, 1, b"--END--"), [b"warm"])
            self.leave(peer)
        resident, _ = memoryOf(self.pid)
        resetPeak(self.pid)
        return Baseline(descriptorsOf(self.pid), resident)

    def assertRecoveredHex(self, baseline: Baseline, bound: int = SMALL_GROWTH) -> None:
        self.closeAll()
        peer = self.newPeer()
        peer.send(b"still served--END--")
        self.assertEqual(hexReplies(peer, 1, b"--END--"), [b"still served"])
        self.leave(peer)
        _until(
            lambda: descriptorsOf(self.pid) <= baseline.descriptors,
            10,
            what=f"descriptors back to {baseline.descriptors}",
        )
        resident, peak = memoryOf(self.pid)
        self.assertLessEqual(peak - baseline.resident, bound)
        self.assertLessEqual(resident - baseline.resident, bound)
        self.assertNotIn("Traceback", self.daemon.output)

    def test_messagesOfTheDelimiterLength(self) -> None:
        """
        With the self-overlapping delimiter C{--END--}, every message of
        exactly its length made of its own bytes and shifted copies of it
        (C{-END---}, C{--END-x}, ...) is split as the reference model
        splits the stream (C{bytes.split}), and a message that is the
        delimiter alone is an empty message.  Memory bound:
        L{SMALL_GROWTH}.
        """
        self.startDaemon("--app", "tests.test_hostile:HexEcho", "--delimiter", "--END--")
        baseline = self.hexBaseline()
        delimiter = b"--END--"
        candidates = {delimiter[i:] + delimiter[:i] for i in range(len(delimiter))}
        candidates |= {delimiter[:i] + b"x" * (len(delimiter) - i) for i in range(len(delimiter))}
        candidates |= {b"x" * i + delimiter[: len(delimiter) - i] for i in range(1, len(delimiter))}
        stream = b"".join(c + delimiter for c in sorted(candidates)) + delimiter
        model = stream.split(delimiter)[:-1]
        peer = self.newPeer()
        peer.send(stream)
        self.assertEqual(hexReplies(peer, len(model), delimiter), model)
        self.assertIn(b"", model)
        self.assertRecoveredHex(baseline)

    def test_binaryGarbage(self) -> None:
        """
        1 MiB of random bytes (NULs, delimiters, invalid UTF-8, anything) in
        random pieces: the daemon delivers exactly the messages of splitting
        the stream on the delimiter (it answers with each one in hex), keeps
        the bytes after the last delimiter as a partial message, and stays
        healthy.  Memory bound: L{SMALL_GROWTH}.
        """
        self.startDaemon("--app", "tests.test_hostile:HexEcho", "--delimiter", "--END--")
        baseline = self.hexBaseline()
        generator = random.Random(6)
        delimiter = b"--END--"
        # Random bytes alone would hold the 7-byte delimiter almost never:
        # sprinkle it, and parts of it, in.
        parts = []
        for _ in range(4000):
            parts.append(generator.randbytes(generator.randrange(0, 500)))
            parts.append(generator.choice([delimiter, delimiter[:3], b"\0", b"\n", delimiter]))
        stream = b"".join(parts)[: 1024 * 1024]
        model = stream.split(delimiter)[:-1]
        peer = self.newPeer()
        offset = 0
        while offset < len(stream):
            size = generator.randrange(1, 65536)
            peer.send(stream[offset : offset + size])
            offset += size
        self.assertGreater(len(model), 1000)
        self.assertEqual(hexReplies(peer, len(model), delimiter), model)
        self.assertRecoveredHex(baseline)

    def test_floodOfTinyMessages(self) -> None:
        """
        10,000 tiny messages in one write are all echoed, in order, each
        once, and the echoes leave in few writes (the peer reads them in far
        fewer than 10,000 pieces).  Memory bound: L{SMALL_GROWTH}.
        """
        self.startDaemon()
        baseline = self.baseline()
        peer = self.newPeer()
        count = 10_000
        peer.send(b"".join(b"%d\n" % i for i in range(count)))
        expected = b"".join(b"%d\n" % i for i in range(count))
        received = b""
        reads = 0
        while len(received) < len(expected):
            data = peer.socket.recv(1 << 20)
            self.assertTrue(data, "the daemon closed the connection")
            received += data
            reads += 1
        self.assertEqual(received, expected)
        self.assertLess(reads, count // 10)
        self.assertRecovered(baseline)

    def test_resetMidMessage(self) -> None:
        """
        (Chat app.)  A peer that sends a message and half of another, then
        resets the connection (RST): the whole message reaches the others,
        the half never does; the connection is closed and logged, and its
        descriptor freed.  Memory bound: L{SMALL_GROWTH}.
        """
        self.startDaemon("--app", "chat")
        baseline = self.chatBaseline()
        listener = self.newPeer()
        listenerId = self.connectionId(listener)
        hostile = self.newRaw()
        hostileId = self.connectionId(hostile)
        hostile.sendall(b"whole\nhalf of a mess")
        self.assertEqual(listener.receive(), b"%d: whole" % hostileId)
        reset(hostile)
        self.daemon.waitFor(rf"Connection {hostileId} from 127\.0\.0\.1:\d+ closed")
        marker = self.newPeer()
        markerId = self.connectionId(marker)
        marker.send(b"marker\n")
        # The next message the listener gets is the marker: the half message
        # was never relayed.
        self.assertEqual(listener.receive(), b"%d: marker" % markerId)
        self.assertNotEqual(listenerId, hostileId)
        marker.socket.close()
        listener.socket.close()
        self.assertRecoveredChat(baseline)

    def test_halfClosedPeer(self) -> None:
        """
        (Chat app.)  A peer that sends two messages and the start of a third
        and then shuts down its sending side (C{shutdown(SHUT_WR)}, as
        C{printf ... | nc -N} does): both messages reach the other peers,
        the partial one does not, and the daemon closes the connection
        promptly (the peer reads an end of file) and frees its descriptor.
        Memory bound: L{SMALL_GROWTH}.
        """
        self.startDaemon("--app", "chat")
        baseline = self.chatBaseline()
        listener = self.newPeer()
        self.connectionId(listener)
        hostile = self.newRaw()
        hostileId = self.connectionId(hostile)
        hostile.sendall(b"first\nsecond\nthird without end")
        hostile.shutdown(socket.SHUT_WR)
        self.assertEqual(listener.receive(), b"%d: first" % hostileId)
        self.assertEqual(listener.receive(), b"%d: second" % hostileId)
        self.assertTrue(closedByServer(hostile, 10), "the half-closed peer was not closed")
        hostile.close()
        marker = self.newPeer()
        markerId = self.connectionId(marker)
        marker.send(b"marker\n")
        self.assertEqual(listener.receive(), b"%d: marker" % markerId)
        marker.socket.close()
        listener.socket.close()
        self.assertRecoveredChat(baseline)

    def connectionId(self, peer: Peer | socket.socket) -> int:
        sock = peer.socket if isinstance(peer, Peer) else peer
        localPort = sock.getsockname()[1]
        return int(
            self.daemon.waitFor(
                rf"Connection (\d+) from 127\.0\.0\.1:{localPort} established"
            ).group(1)
        )

    def chatBaseline(self) -> Baseline:
        """
        L{baseline} for the chat app, which echoes nothing: two peers
        exchange a message.
        """
        for _ in range(2):
            a, b = Peer(self, self.port), Peer(self, self.port)
            aId = self.connectionId(a)
            self.connectionId(b)
            a.send(b"warm\n")
            self.assertEqual(b.receive(), b"%d: warm" % aId)
            for peer in (a, b):
                self.leave(peer)
        resident, _ = memoryOf(self.pid)
        resetPeak(self.pid)
        return Baseline(descriptorsOf(self.pid), resident)

    def assertRecoveredChat(self, baseline: Baseline) -> None:
        self.closeAll()
        a, b = self.newPeer(), self.newPeer()
        aId = self.connectionId(a)
        self.connectionId(b)
        a.send(b"still relayed\n")
        self.assertEqual(b.receive(), b"%d: still relayed" % aId)
        for peer in (a, b):
            self.leave(peer)
        _until(
            lambda: descriptorsOf(self.pid) <= baseline.descriptors,
            10,
            what=f"descriptors back to {baseline.descriptors}",
        )
        resident, peak = memoryOf(self.pid)
        self.assertLessEqual(peak - baseline.resident, SMALL_GROWTH)
        self.assertLessEqual(resident - baseline.resident, SMALL_GROWTH)
        self.assertNotIn("Traceback", self.daemon.output)

    def test_thousandAbandonedConnections(self) -> None:
        """
        1,000 connections opened at once, each sending the start of a
        message, then all abandoned together (half closed with a FIN, half
        reset): the daemon's descriptors return to their count before, its
        memory stays within L{SMALL_GROWTH} (peak included) while it held
        them all, and it serves the next client.
        """
        # A listen queue for the burst: with the 50 that Twisted gives an
        # endpoint description, connections beyond what the daemon accepted
        # so far wait for the retransmission of their SYN (a second each
        # time), which makes the test slow, not the daemon wrong.  All from
        # one address: no per-peer limit.
        self.startDaemon("--max-connections-per-peer", "none", port=LOCAL + ":backlog=1024")
        baseline = self.baseline()
        sockets = []
        for index in range(1000):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
            self.addCleanup(sock.close)
            sock.sendall(b"abandoned %d, no end" % index)
            sockets.append(sock)
        _until(
            lambda: descriptorsOf(self.pid) >= baseline.descriptors + 1000,
            what="the daemon holding the 1,000 connections",
        )
        for index, sock in enumerate(sockets):
            if index % 2:
                reset(sock)
            else:
                sock.close()
        self.assertRecovered(baseline)
        self.assertEqual(
            len(re.findall(r"Connection \d+ from 127\.0\.0\.1:\d+ closed", self.daemon.output)),
            1000 + 3,
        )

    def test_silentClient(self) -> None:
        """
        A client that connects and sends nothing changes nothing for the
        others (TCP has no handshake to wait for): well-behaved clients are
        served at once, and the silent connection is still open afterwards
        (no idle timeout by default).  Memory bound: L{SMALL_GROWTH}.
        """
        self.startDaemon()
        baseline = self.baseline()
        silent = self.newRaw()
        silentPort = silent.getsockname()[1]
        self.connectionId(silent)
        for index in range(5):
            started = time.monotonic()
            self.serve(b"served %d" % index)
            self.assertLess(time.monotonic() - started, 1.0)
        silent.setblocking(False)
        with self.assertRaises(BlockingIOError):
            silent.recv(1)
        silent.close()
        self.closeLogged(silentPort)
        self.assertRecovered(baseline)

    def test_clientThatNeverReads(self) -> None:
        """
        A client that sends 1 KiB messages as fast as it can (up to 50 MiB,
        at most 10 s) and never reads their echoes: the daemon's memory
        stays within 12 MiB (its bound of pending output per connection,
        4 MiB by default, and slack) whether it stops reading that client
        (back-pressure: the client's sends stall) or drops echoes, and a
        well-behaved client is served meanwhile.  Without a bound the
        daemon would buffer every echo.
        """
        self.startDaemon()
        baseline = self.baseline()
        hog = self.newRaw()
        hog.settimeout(1.0)
        chunk = memoryview((b"h" * 1023 + b"\n") * 1024)
        sent = 0
        deadline = time.monotonic() + 10
        while sent < 50 * MiB and time.monotonic() < deadline:
            try:
                sent += hog.send(chunk[sent % len(chunk) :])
            except TimeoutError:
                break  # the daemon stopped reading: back-pressure
        self.serve(b"served while one client does not read")
        _, peak = memoryOf(self.pid)
        self.assertLessEqual(
            peak - baseline.resident, 12 * MiB, f"{sent / MiB:.0f} MiB sent by the hog"
        )
        self.assertRecovered(baseline, 12 * MiB)

    def test_chatListenerThatNeverReads(self) -> None:
        """
        (Chat app.)  One listener never reads while another reads and a
        third client sends 40 MiB of 1 KiB messages: the daemon's memory
        stays within 12 MiB (the output bound of the stuck listener, 4 MiB,
        and slack; relaying all of it to the stuck listener would take
        40 MiB), the reading listener keeps receiving (at least half of the
        messages, all of them when it keeps up), whole and in order, and the
        daemon relays normally once the stuck listener is gone.
        """
        self.startDaemon("--app", "chat")
        baseline = self.chatBaseline()
        stuck = self.newRaw()
        self.connectionId(stuck)
        reader = self.newPeer()
        self.connectionId(reader)
        sender = self.newPeer()
        senderId = self.connectionId(sender)
        total = 40 * 1024
        got: list[int] = []
        lastGrowth = [time.monotonic()]
        errors: list[BaseException] = []

        def read() -> None:
            try:
                while len(got) < total:
                    message = reader.receive()
                    prefix, _, body = message.partition(b": ")
                    assert prefix == b"%d" % senderId and len(body) == 1023, message[:40]
                    got.append(int(body[:8]))
                    lastGrowth[0] = time.monotonic()
            except BaseException as e:  # reported by the test thread
                errors.append(e)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        self.addCleanup(thread.join, TIMEOUT)
        for first in range(0, total, 256):
            sender.send(
                b"".join(b"%08d" % i + b"m" * 1015 + b"\n" for i in range(first, first + 256))
            )
        # All of it, or as much as the reader gets before the flow stops.
        _until(
            lambda: len(got) >= total or errors or time.monotonic() - lastGrowth[0] > 1.0,
            what="the reader receiving",
        )
        _, peak = memoryOf(self.pid)
        self.assertLessEqual(peak - baseline.resident, 12 * MiB)
        self.assertEqual(errors, [])
        self.assertGreaterEqual(len(got), total // 2)
        self.assertTrue(all(a < b for a, b in pairwise(got)), "messages out of order or repeated")
        senderPort = sender.localPort
        self.closeAll()
        thread.join(TIMEOUT)
        # The daemon relays what the sender sent before it closed, then logs
        # the close: only then can new clients be sure to see none of it.
        self.closeLogged(senderPort)
        self.assertRecoveredChat(baseline)

    def test_connectionsFromOnePeer(self) -> None:
        """
        With C{--max-connections-per-peer 5}, one address opening 20
        connections gets 5 (the others are closed at once, each refusal
        logged with the reason), while a client from another address
        (127.0.0.2) is served.  Memory bound: L{SMALL_GROWTH}.
        """
        self.startDaemon("--max-connections-per-peer", "5", "--log-every-event")
        baseline = self.baseline()
        hogs = [self.newRaw() for _ in range(20)]
        # Accepted in order: the first five stay, the others are closed.
        for sock in hogs[5:]:
            self.assertTrue(closedByServer(sock), "a connection beyond the limit stayed")
        # The first in full, the others at debug level (--log-every-event).
        self.assertEqual(
            len(
                re.findall(
                    r"Refused a connection from 127\.0\.0\.1:\d+: the "
                    r"limit per peer address is reached \(5 open from "
                    r"127\.0\.0\.1",
                    self.daemon.output,
                )
            ),
            15,
        )
        for sock in hogs[:5]:
            sock.setblocking(False)
            with self.assertRaises(BlockingIOError):
                sock.recv(1)
        other = socket.create_connection(
            ("127.0.0.1", self.port), timeout=TIMEOUT, source_address=("127.0.0.2", 0)
        )
        self.opened.append(other)
        other.sendall(b"from elsewhere\n")
        self.assertEqual(other.recv(100), b"from elsewhere\n")
        # The five accepted ones count against the limit until the daemon
        # has seen them close: wait for that before a new client comes.
        accepted = [sock.getsockname()[1] for sock in hogs[:5]]
        self.closeAll()
        for localPort in accepted:
            self.closeLogged(localPort)
        self.assertRecovered(baseline)


class TLSDaemonTests(DaemonTestCase):
    """
    Hostile peers of the TLS 1.3 daemon (client certificates required).
    """

    def setUp(self) -> None:
        super().setUp()
        # A listen queue for the bursts of test_abandonedHandshakes (see
        # test_thousandAbandonedConnections), which opens 300 connections
        # from one address: no per-peer limit.
        # Every refusal logged (at debug level after the first of a kind),
        # for the tests that look for the line of each.
        self.startDaemon(
            "--handshake-timeout",
            "2",
            "--max-connections-per-peer",
            "none",
            "--log-every-event",
            tls=True,
            port=LOCAL + ":backlog=1024",
        )

    def assertRefused(self, localPort: int) -> str:
        """
        The daemon logged the refusal of the connection from C{localPort}.

        @return: the log line.
        """
        match = self.daemon.waitFor(
            rf"(Refused|Closed) the connection from 127\.0\.0\.1:{localPort}: [^\n]*"
        )
        return match.group(0)

    def assertNotServed(self, sock: socket.socket) -> None:
        """
        The daemon closes C{sock} without echoing anything.
        """
        try:
            sock.sendall(b"let me in\n")
        except (OSError, ssl.SSLError):
            return
        self.assertTrue(closedByServer(sock), "the rejected peer was not closed")

    def test_slowlorisClientHello(self) -> None:
        """
        A real ClientHello trickled a byte every 0.1 s is cut off by the
        handshake timeout (2 s here), not kept open by its trickle; while it
        trickles, a well-behaved TLS client is served.  Memory bound:
        L{SMALL_GROWTH}.
        """
        baseline = self.baseline()
        hello = clientHello()
        slow = self.newRaw()
        started = time.monotonic()
        closedAt = None
        served = False
        for index, byte in enumerate(hello):
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                closedAt = time.monotonic()
                break
            if index == 5:
                self.serve(b"served during the trickle")
                served = True
            readable, _, _ = select.select([slow], [], [], 0.1)
            if readable:
                try:
                    slow.recv(65536)
                except OSError:
                    pass
                closedAt = time.monotonic()
                break
        self.assertTrue(served)
        self.assertIsNotNone(closedAt, "the trickling peer was never cut off")
        elapsed = closedAt - started  # type: ignore[operator]
        self.assertGreaterEqual(elapsed, 2 * 0.9)
        self.assertLess(elapsed, 2 + 3)
        self.assertIn("handshake timeout (2 s)", self.assertRefused(slow.getsockname()[1]))
        self.assertRecovered(baseline)

    def test_tls12Only(self) -> None:
        """
        C{openssl s_client -tls1_2} (a ClientHello offering TLS 1.2 at most)
        is refused and the refusal logged; the next TLS 1.3 client is
        served.  Memory bound: L{SMALL_GROWTH}.
        """
        if OPENSSL is None:
            raise self.skipTest("openssl is not installed")
        baseline = self.baseline()
        files = certificates()
        process = subprocess.Popen(
            [
                OPENSSL,
                "s_client",
                "-connect",
                f"127.0.0.1:{self.port}",
                "-tls1_2",
                "-CAfile",
                files.ca,
                "-cert",
                files.client,
                "-key",
                files.clientKey,
                "-quiet",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(lambda: process.poll() is None and os.kill(process.pid, 9))
        out, _ = process.communicate(b"old\n", timeout=TIMEOUT)
        self.assertNotEqual(process.returncode, 0)
        self.assertNotIn(b"old", out)
        self.daemon.waitFor(
            r"Refused the connection from 127\.0\.0\.1:\d+: TLS handshake "
            r"failed[^\n]*(version|protocol)"
        )
        self.assertRecovered(baseline)

    def test_plaintextOnTLSPort(self) -> None:
        """
        An HTTP request on the TLS port: the connection is closed and the
        refusal logged, nothing is echoed.  Memory bound: L{SMALL_GROWTH}.
        """
        baseline = self.baseline()
        sock = self.newRaw()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\nhello\n")
        received = b""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
        self.assertNotIn(b"hello", received)
        self.assertRefused(sock.getsockname()[1])
        self.assertRecovered(baseline)

    def test_truncatedHandshake(self) -> None:
        """
        The first half of a real ClientHello, then the connection closed:
        the daemon drops the handshake at once (not after the handshake
        timeout) and logs it.  Memory bound: L{SMALL_GROWTH}.
        """
        baseline = self.baseline()
        hello = clientHello()
        sock = self.newRaw()
        localPort = sock.getsockname()[1]
        sock.sendall(hello[: len(hello) // 2])
        started = time.monotonic()
        sock.close()
        self.assertRefused(localPort)
        self.assertLess(time.monotonic() - started, 1.5)
        self.assertRecovered(baseline)

    def test_garbageHandshakeRecord(self) -> None:
        """
        A record header announcing a 16 KiB handshake message, followed by
        16 KiB of random bytes: the handshake fails at once, the refusal is
        logged, nothing else happens.  Memory bound: L{SMALL_GROWTH}.
        """
        baseline = self.baseline()
        sock = self.newRaw()
        localPort = sock.getsockname()[1]
        sock.sendall(b"\x16\x03\x01\x40\x00" + random.Random(8).randbytes(16384))
        self.assertTrue(closedByServer(sock), "the daemon kept the connection")
        self.assertRefused(localPort)
        self.assertRecovered(baseline)

    def test_abandonedHandshakes(self) -> None:
        """
        300 connections each send a real ClientHello (the daemon answers
        each with its part of the handshake, keeping TLS state for it) and
        are then all abandoned at once, half of them reset: every one is
        logged as refused (or, for those the handshake timeout of 2 s cut
        off first, as closed), the daemon's descriptors return to their count
        before, its memory stays within 16 MiB (peak included; about 17 KiB
        of TLS state per connection), and it serves the next TLS client.
        """
        baseline = self.baseline()
        hello = clientHello()
        sockets = []
        for _ in range(300):
            sock = self.newRaw()
            sock.sendall(hello)
            sockets.append(sock)
        for sock in sockets:
            # The daemon's answer (ServerHello and the rest of its flight).
            self.assertEqual(sock.recv(1), b"\x16")
        for index, sock in enumerate(sockets):
            if index % 2:
                reset(sock)
            else:
                sock.close()
        self.opened.clear()
        _until(
            lambda: (
                len(re.findall(r"(Refused|Closed) the connection from", self.daemon.output)) >= 300
            ),
            60,
            what="300 refusals logged",
        )
        self.serve(b"still served")
        _until(lambda: descriptorsOf(self.pid) <= baseline.descriptors, 10)
        resident, peak = memoryOf(self.pid)
        self.assertLessEqual(peak - baseline.resident, 16 * MiB)
        self.assertLessEqual(resident - baseline.resident, 16 * MiB)
        self.assertNotIn("Traceback", self.daemon.output)

    def test_clientCertificateFromAnotherCA(self) -> None:
        """
        A client certificate issued by another CA: refused after the
        handshake (TLS 1.3 verifies the client last), the reason logged,
        nothing echoed.  Memory bound: L{SMALL_GROWTH}.
        """
        self.assertClientCertificateRefused("other-client", "unable to get local issuer")

    def test_expiredClientCertificate(self) -> None:
        """
        A client certificate of the right CA that expired yesterday:
        refused, "expired" logged.  Memory bound: L{SMALL_GROWTH}.
        """
        self.assertClientCertificateRefused("expired-client", "expired")

    def test_notYetValidClientCertificate(self) -> None:
        """
        A client certificate of the right CA valid from tomorrow: refused,
        "not yet valid" logged.  Memory bound: L{SMALL_GROWTH}.
        """
        self.assertClientCertificateRefused("notyet-client", "not yet valid")

    def test_noClientCertificate(self) -> None:
        """
        No client certificate at all: refused, "peer did not return a
        certificate" logged.  Memory bound: L{SMALL_GROWTH}.
        """
        self.assertClientCertificateRefused(None, "peer did not return a certificate")

    def assertClientCertificateRefused(self, cert: str | None, reason: str) -> None:
        baseline = self.baseline()
        raw = rawConnection(self, self.port)
        localPort = raw.getsockname()[1]
        try:
            sock = tlsContext(cert).wrap_socket(raw, server_hostname="localhost")
        except (ssl.SSLError, OSError):
            pass  # refused during the handshake: as good
        else:
            self.addCleanup(sock.close)
            self.assertNotServed(sock)
        self.assertIn(reason, self.assertRefused(localPort))
        self.assertRecovered(baseline)

    def test_corruptedRecord(self) -> None:
        """
        A client that completes the handshake, then sends a record with one
        byte changed (its authentication fails): the connection is closed
        and logged, the message in it never echoed.  Memory bound:
        L{SMALL_GROWTH}.
        """
        baseline = self.baseline()
        sock = self.newRaw()
        localPort = sock.getsockname()[1]
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        connection = tlsContext().wrap_bio(incoming, outgoing, server_hostname="localhost")
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                connection.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                self.assertTrue(data, "closed during the handshake")
                incoming.write(data)
            self.assertLess(time.monotonic(), deadline)
        sock.sendall(outgoing.read())
        self.daemon.waitFor(rf"Connection \d+ from 127\.0\.0\.1:{localPort} established")
        connection.write(b"tampered with\n")
        record = bytearray(outgoing.read())
        record[-1] ^= 0x01
        sock.sendall(bytes(record))
        received = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
        incoming.write(received)
        with self.assertRaises(ssl.SSLError):
            while connection.read(65536):
                pass
        self.daemon.waitFor(rf"Connection \d+ from 127\.0\.0\.1:{localPort} closed")
        self.assertRecovered(baseline)


class WrongHostnameTests(DaemonTestCase):
    """
    A daemon whose certificate names another host.
    """

    def test_wrongHostname(self) -> None:
        """
        The daemon presents a certificate for C{wrong.example} only: a client
        verifying C{localhost} refuses it (and the daemon logs the failed
        handshake, and stays up); a client that expects C{wrong.example}
        is served.  Memory bound: L{SMALL_GROWTH}.
        """
        files = certificates()
        self.daemon = Daemon(
            self,
            "--port",
            LOCAL,
            "--tls",
            "--ca",
            files.ca,
            "--cert",
            files.path("wronghost.pem"),
            "--key",
            files.path("wronghost.key"),
        )
        self.port = self.daemon.port()
        self.tls = True
        good = TLSPeer(self, self.port, serverHostname="wrong.example")
        good.send(b"warm\n")
        self.assertEqual(good.receive(), b"warm")
        self.leave(good)
        resident, _ = memoryOf(self.pid)
        resetPeak(self.pid)
        baseline = Baseline(descriptorsOf(self.pid), resident)

        raw = self.newRaw()
        localPort = raw.getsockname()[1]
        with self.assertRaises(ssl.SSLCertVerificationError) as caught:
            tlsContext().wrap_socket(raw, server_hostname="localhost")
        self.assertIn("localhost", str(caught.exception))
        raw.close()
        self.daemon.waitFor(
            rf"Refused the connection from 127\.0\.0\.1:{localPort}: "
            r"TLS handshake failed"
        )

        good = TLSPeer(self, self.port, serverHostname="wrong.example")
        good.send(b"right name\n")
        self.assertEqual(good.receive(), b"right name")
        self.leave(good)
        _until(lambda: descriptorsOf(self.pid) <= baseline.descriptors)
        resident, peak = memoryOf(self.pid)
        self.assertLessEqual(peak - baseline.resident, SMALL_GROWTH)
        self.assertNotIn("Traceback", self.daemon.output)


class AllowListTests(DaemonTestCase):
    """
    A daemon that serves only some of the clients its CA certified.
    """

    def test_clientOutsideAllowList(self) -> None:
        """
        With C{--allow-client alice}, a client whose certificate (CN
        C{mallory}) is valid and from the right CA completes the handshake
        but is never served: the daemon closes it, echoes nothing, and logs
        the refusal naming the CN; C{alice} is served before and after.
        Memory bound: L{SMALL_GROWTH}.
        """
        from tcpsc._certgen import writeCertificateSet

        directory = Path(self.mktemp()).resolve()
        paths = writeCertificateSet(directory, clients=("alice", "mallory"))
        self.daemon = Daemon(
            self,
            "--port",
            LOCAL,
            "--tls",
            "--ca",
            str(paths["ca.pem"]),
            "--cert",
            str(paths["server.pem"]),
            "--key",
            str(paths["server.key"]),
            "--allow-client",
            "alice",
        )
        self.port = self.daemon.port()

        def connect(name: str) -> tuple[ssl.SSLSocket, int]:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            context.load_verify_locations(paths["ca.pem"])
            context.load_cert_chain(paths[f"{name}.pem"], paths[f"{name}.key"])
            raw = self.newRaw()
            localPort = raw.getsockname()[1]
            sock = context.wrap_socket(raw, server_hostname="localhost")
            self.opened.append(sock)
            return sock, localPort

        def alice(message: bytes) -> None:
            sock, localPort = connect("alice")
            sock.sendall(message + b"\n")
            received = b""
            while not received.endswith(b"\n"):
                data = sock.recv(100)
                self.assertTrue(data, "alice was not served")
                received += data
            self.assertEqual(received, message + b"\n")
            sock.close()
            self.closeLogged(localPort)

        alice(b"warm-up")
        resident, _ = memoryOf(self.pid)
        resetPeak(self.pid)
        baseline = Baseline(descriptorsOf(self.pid), resident)

        try:
            mallory, localPort = connect("mallory")
        except (ssl.SSLError, OSError):
            pass  # refused during the handshake: as good
        else:
            try:
                mallory.sendall(b"let me in\n")
            except (ssl.SSLError, OSError):
                pass
            self.assertTrue(closedByServer(mallory), "mallory was not closed")
            line = self.daemon.waitFor(
                rf"Refused the connection from 127\.0\.0\.1:{localPort}[^\n]*"
            ).group(0)
            self.assertIn("mallory", line)

        alice(b"still served")
        self.closeAll()
        _until(lambda: descriptorsOf(self.pid) <= baseline.descriptors, 10)
        resident, peak = memoryOf(self.pid)
        self.assertLessEqual(peak - baseline.resident, SMALL_GROWTH)
        self.assertNotIn("Traceback", self.daemon.output)


# -- the library, in this process ------------------------------------------


class RawPeer(Protocol):
    """
    A plain TCP peer in this reactor: records what it receives.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.lost.callback(None)


class BufferWatch(MessageProtocol):
    """
    Records its messages and the largest its partial-message buffer ever
    was after a read.
    """

    largest = 0
    seen = 0

    def dataReceived(self, data: bytes) -> None:
        self.seen += len(data)
        super().dataReceived(data)
        self.largest = max(self.largest, len(self._buffer))

    def messageReceived(self, message: bytes) -> None:
        self.factory.received.append(message)  # type: ignore[attr-defined]


class LibraryTests(TestCase):
    """
    Hostile peers of L{tcpsc.Server} in this process, where the bound of
    memory is the connection's own buffer.
    """

    async def startServer(self, **kwargs: Any) -> tuple[Server, int]:
        server = Server(**kwargs)
        server.received = []  # type: ignore[attr-defined]
        self.addCleanup(lambda: server.stop().addTimeout(TIMEOUT, reactor))
        port = await server.listen(0, "127.0.0.1").addTimeout(TIMEOUT, reactor)
        return server, port.getHost().port

    async def rawPeer(self, port: int) -> RawPeer:
        peer = RawPeer()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer)

        def cleanup() -> Deferred[None] | None:
            if peer.lost.called:
                return None
            peer.transport.abortConnection()
            return peer.lost

        self.addCleanup(cleanup)
        return peer

    async def client(self, port: int, **kwargs: Any) -> Client:
        client = Client(**kwargs)
        self.addCleanup(client.disconnect)
        await client.connect("127.0.0.1", port).addTimeout(TIMEOUT, reactor)
        return client

    async def assertServed(self, server: Server, port: int, delimiter: bytes | str) -> None:
        """
        A well-behaved L{Client} with the server's delimiter connects and
        sends a message; the server receives it.
        """
        client = await self.client(port, delimiter=delimiter)
        self.assertTrue(client.send("well-behaved"))
        await waitFor(lambda: server.received[-1:] == [b"well-behaved"], TIMEOUT)
        await client.disconnect()

    @asyncTest
    async def test_endlessMessageBufferBound(self) -> None:
        """
        20 MiB without a delimiter to a server with C{maxMessageLength}
        64 KiB and a 4-byte delimiter: the connection's buffer never holds
        more than 64 KiB + 3 bytes, the message is dropped and reported
        once, the connection stays, and the next message is delivered; a
        well-behaved client is served afterwards.
        """

        tooLong: list[int] = []

        class Watch(BufferWatch):
            def messageTooLong(self, length: int) -> None:
                tooLong.append(length)

        server, port = await self.startServer(
            protocol=Watch, delimiter=b"\r\n\r\n", maxMessageLength=64 * KiB
        )
        peer = await self.rawPeer(port)
        for _ in range(20):
            peer.transport.write(b"y" * MiB)
        peer.transport.write(b"\r\n\r\nnext\r\n\r\n")
        await waitFor(lambda: server.received == [b"next"], TIMEOUT)
        [connectionId] = server.clientIds()
        protocol = server.connection(connectionId)
        self.assertLessEqual(protocol.largest, 64 * KiB + 3)
        self.assertEqual(len(tooLong), 1)
        self.assertGreater(tooLong[0], 64 * KiB)
        self.assertFalse(peer.lost.called)
        await self.assertServed(server, port, b"\r\n\r\n")
        self.assertLessEqual(protocol.largest, 64 * KiB + 3)

    @asyncTest
    async def test_exactMaximumWithMultiByteDelimiter(self) -> None:
        """
        C{maxMessageLength} 100 and the delimiter C{\\r\\n}: a message of
        exactly 100 bytes is delivered, in one read and with its delimiter
        split across two reads; one of 101 bytes is dropped in both cases,
        the connection kept; the buffer never holds more than 101 bytes
        (the maximum and the first byte of the delimiter), and a
        well-behaved client is served afterwards.
        """

        server, port = await self.startServer(
            protocol=BufferWatch, delimiter=b"\r\n", maxMessageLength=100
        )
        peer = await self.rawPeer(port)
        exact, over = b"e" * 100, b"o" * 101
        first = exact + b"\r\n" + over + b"\r\nend1\r\n"
        peer.transport.write(first)
        await waitFor(lambda: len(server.received) == 2, TIMEOUT)
        [connectionId] = server.clientIds()
        protocol = server.connection(connectionId)
        written = len(first)
        # Each piece in a read of its own: the next is written only once
        # the server has read the one before.
        for piece in (exact + b"\r", b"\n" + over + b"\r", b"\nend2\r\n"):
            peer.transport.write(piece)
            written += len(piece)
            await waitFor(lambda written=written: protocol.seen == written, TIMEOUT)
        self.assertEqual(server.received, [exact, b"end1", exact, b"end2"])
        self.assertLessEqual(protocol.largest, 101)
        self.assertFalse(peer.lost.called)
        await self.assertServed(server, port, b"\r\n")

    @asyncTest
    async def test_textEdgeCases(self) -> None:
        """
        Text through a server and client whose delimiter is the 3-byte UTF-8
        character C{€}: the empty string, NULs, combining characters, a
        character beyond the BMP repeated 1,000 times, and a message ending
        in the first two bytes of C{€} arrive intact; text containing C{€}
        is refused (C{False}), and a lone surrogate (not encodable) is
        refused or raises C{UnicodeEncodeError}; in both cases nothing is
        written and the connection goes on.
        """

        server, port = await self.startServer(
            delimiter="€", onMessage=lambda i, m: server.received.append(m)
        )
        client = await self.client(port, delimiter="€")
        good = [
            "",
            "a\0b\0",
            "e\u0301\u0308",
            "😀" * 1000,
            "ß" * 10,
            b"ends in half a euro \xe2\x82",
        ]
        for message in good:
            self.assertTrue(client.send(message), message)
        self.assertFalse(client.send("costs 5€"))
        try:
            refused = client.send("\ud800") is False
        except UnicodeEncodeError:
            refused = True
        self.assertTrue(refused)
        self.assertTrue(client.send("last"))
        expected = [m.encode() if isinstance(m, str) else m for m in [*good, "last"]]
        await waitFor(lambda: len(server.received) >= len(expected), TIMEOUT)
        self.assertEqual(server.received, expected)
        [connectionId] = server.clientIds()
        self.assertTrue(server.send(connectionId, "reply ✓"))
        self.assertEqual(len(server.connection(connectionId)._buffer), 0)
        await self.assertServed(server, port, "€")

    @asyncTest
    async def test_sendMessagesOfTheDelimiterLength(self) -> None:
        """
        With the 3-byte delimiter C{<|>}: every message of exactly three
        bytes over C{<|>x} is sent if and only if the peer reads it back
        unchanged (the reference: the first delimiter of C{message +
        delimiter} is its last), and the server receives exactly the sent
        ones, in order.  Memory: the connection's buffer is empty at the end;
        a well-behaved client is served afterwards.
        """

        server, port = await self.startServer(
            delimiter=b"<|>", onMessage=lambda i, m: server.received.append(m)
        )
        client = await self.client(port, delimiter=b"<|>")
        sent = []
        alphabet = b"<|>x"
        for a in alphabet:
            for b in alphabet:
                for c in alphabet:
                    message = bytes([a, b, c])
                    framed = message + b"<|>"
                    readable = framed.find(b"<|>") == len(message)
                    self.assertEqual(client.send(message), readable, message)
                    if readable:
                        sent.append(message)
        self.assertTrue(client.send(b"end"))
        await waitFor(lambda: server.received[-1:] == [b"end"], TIMEOUT)
        self.assertEqual(server.received, [*sent, b"end"])
        self.assertGreater(len(sent), 30)
        [connectionId] = server.clientIds()
        self.assertEqual(len(server.connection(connectionId)._buffer), 0)
        await self.assertServed(server, port, b"<|>")
