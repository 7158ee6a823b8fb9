# -*- test-case-name: tests.test_bench -*-
"""
The load engine of C{tcpsc bench}: plain non-blocking sockets on one
C{epoll}, no Twisted and none of tcpsc's framing code, so that what is
measured is the server and not a copy of its own parser.

It must not be the bottleneck, so it never touches a message on its own:
whole batches of frames are slices of a precomputed stream, echoed bytes are
compared with that stream a received chunk at a time (C{memcmp} speed), and
completed messages follow from stream positions while the bytes match
(delimiters are counted with C{bytes.count} only when they do not).  Python
runs once per socket event, not once per message.

Every client's stream is a slice of one template about 1 MiB long (a whole
number of messages), starting at a different message for every client.
Message bodies are printable bytes that never contain a byte of the
delimiter, so the only delimiters in the stream are the real ones.

Round trips are measured per batch: every message written in one C{send}
shares that write's time, and when a read completes messages, the time since
their batch's write is recorded once, weighted by how many of them completed.
The histogram is log-linear with about 1.6 % resolution.
"""

from __future__ import annotations

import errno
import math
import os
import random
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ConnectStats",
    "EchoStats",
    "IdleStats",
    "MulticastStats",
    "UdpEchoStats",
    "UdpMessages",
    "UdpMulticastStats",
    "clientContext",
    "makeTemplate",
    "multicastReceiver",
    "multicastSender",
    "runConnect",
    "runEcho",
    "runIdle",
    "runMulticast",
    "runUdpEcho",
    "runUdpMulticast",
    "splitMessages",
]

#: Histogram buckets per e-fold: log(1.016) ~ 1 / 63, about 1.6 % resolution.
_BUCKETS_PER_E = 63.0
#: Enough buckets for round trips up to 10^15 ns.
_BUCKETS = int(math.log(1e15) * _BUCKETS_PER_E) + 1
#: Aim of the template's length: about 1 MiB.
_TEMPLATE_TARGET = 1 << 20
#: Largest single read.
_READ_SIZE = 256 * 1024
_monotonic = time.monotonic_ns
#: How often the engine reports progress, in nanoseconds.
_PROGRESS_NS = 250_000_000

_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_EPOLLERR = select.EPOLLERR | select.EPOLLHUP

# Connection states.
_CONNECTING, _HANDSHAKING, _RUNNING, _DONE, _FAILED = range(5)

Progress = Callable[[int], None]


def makeTemplate(size: int, delimiter: bytes) -> tuple[bytes, int]:
    """
    Build the message stream every client sends a slice of.

    @param size: bytes per message, delimiter included.
    @param delimiter: the message delimiter.
    @return: C{(template, period)}: C{template} is the stream of one period
        written twice, so that any slice up to C{period} bytes long starting
        inside the first period is contiguous.
    """
    if size < len(delimiter):
        raise ValueError(f"message size {size} is shorter than the delimiter")
    count = max(1, _TEMPLATE_TARGET // size)
    period = count * size
    alphabet = bytes(b for b in range(0x21, 0x7F) if b not in delimiter)
    table = bytes(alphabet[i % len(alphabet)] for i in range(256))
    body = size - len(delimiter)
    raw = random.Random(size).randbytes(count * body).translate(table)
    template = delimiter.join(raw[i * body : (i + 1) * body] for i in range(count)) + delimiter
    assert len(template) == period
    return template * 2, period


def splitMessages(total: int, clients: int) -> list[int]:
    """
    Split C{total} messages over C{clients}: the first clients get one more
    where it does not divide evenly, so that exactly C{total} are sent.
    """
    share, extra = divmod(total, clients)
    return [share + (1 if i < extra else 0) for i in range(clients)]


def clientContext(
    ca: str | None, cert: str | None, key: str | None, verifyHostname: bool = True
) -> ssl.SSLContext:
    """
    A TLS 1.3-only client context; without C{ca} the server is not verified.
    Session resumption is never used (every connection does a full
    handshake), because each connection uses a fresh session.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    if ca is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(ca)
        context.check_hostname = verifyHostname
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


class Histogram:
    """
    Log-linear histogram of durations in nanoseconds, mergeable across
    processes as a plain list of counts.
    """

    def __init__(self, counts: list[int] | None = None) -> None:
        self.counts = counts if counts is not None else [0] * _BUCKETS
        self.maximum = 0

    def add(self, ns: int, weight: int = 1) -> None:
        if ns < 1:
            ns = 1
        self.counts[min(int(math.log(ns) * _BUCKETS_PER_E), _BUCKETS - 1)] += weight
        if ns > self.maximum:
            self.maximum = ns

    def merge(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.maximum = max(self.maximum, other.maximum)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def percentile(self, fraction: float) -> float:
        """
        The duration in nanoseconds below which C{fraction} of the samples
        are (the middle of their bucket); 0 without samples.
        """
        total = self.total
        if not total:
            return 0.0
        rank = fraction * total
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if count and seen >= rank:
                return min(math.exp((index + 0.5) / _BUCKETS_PER_E), float(self.maximum))
        return float(self.maximum)


@dataclass
class EchoStats:
    """
    What one echo run (or the merge of several processes' runs) measured.
    Times are C{time.monotonic_ns()} values, which are comparable between
    processes on one machine.
    """

    clients: int = 0
    messages: int = 0
    sentMessages: int = 0
    expectedMessages: int = 0
    receivedBytes: int = 0
    connectionErrors: int = 0
    corruptMessages: int = 0
    corruptBytes: int = 0
    missingEchoes: int = 0
    unexpectedBytes: int = 0
    firstError: str | None = None
    start: int = 0
    ready: int = 0
    end: int = 0
    histogram: Histogram = field(default_factory=Histogram)

    @property
    def errors(self) -> int:
        return (
            self.connectionErrors
            + self.corruptMessages
            + self.missingEchoes
            + (1 if self.unexpectedBytes else 0)
        )

    def merge(self, other: EchoStats) -> None:
        for name in (
            "clients",
            "messages",
            "sentMessages",
            "expectedMessages",
            "receivedBytes",
            "connectionErrors",
            "corruptMessages",
            "corruptBytes",
            "missingEchoes",
            "unexpectedBytes",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.firstError = self.firstError or other.firstError
        self.start = min(self.start, other.start) if self.start else other.start
        self.ready = max(self.ready, other.ready)
        self.end = max(self.end, other.end)
        self.histogram.merge(other.histogram)


class _Connection:
    """
    One client connection of the engine.
    """

    __slots__ = (
        "base",
        "batches",
        "corruptSlot",
        "done",
        "index",
        "out",
        "outOffset",
        "received",
        "retryLength",
        "sent",
        "sock",
        "state",
        "tail",
        "total",
        "wantWrite",
    )

    def __init__(self, index: int, total: int, base: int) -> None:
        self.index = index
        self.total = total
        self.base = base
        self.sock: Any = None
        self.state = _CONNECTING
        self.sent = 0
        self.done = 0
        self.received = 0
        self.out: bytes | memoryview = b""
        self.outOffset = 0
        self.wantWrite = False
        self.retryLength = 0
        self.tail = b""
        self.corruptSlot = -1
        self.batches: deque[list[int]] = deque()


class _Engine:
    """
    Connection handling shared by the modes: non-blocking connects, TLS
    handshakes, an epoll loop with a deadline.
    """

    def __init__(
        self,
        host: str,
        port: int | None,
        context: ssl.SSLContext | None,
        serverHostname: str | None,
    ) -> None:
        """
        @param port: the server's port; C{None} when C{host} is the path of
            a UNIX socket.
        """
        self.host = host
        self.port = port
        self.context = context
        self.serverHostname = serverHostname or (host if port is not None else "localhost")
        self.poller = select.epoll()
        self.byFd: dict[int, _Connection] = {}
        # One receive buffer for all connections: reading into it and
        # comparing in place never allocates (a fresh 256 KiB bytes object
        # per read would be an mmap and page faults each time).
        self.buffer = bytearray(_READ_SIZE)
        self.view = memoryview(self.buffer)
        self.firstError: str | None = None
        self.connectionErrors = 0
        self.address: Any
        if port is None:
            self.family = socket.AF_UNIX
            self.address = host
            return
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0][4]
        self.family = family

    def error(self, message: str) -> None:
        if self.firstError is None:
            self.firstError = message

    def open(self, connection: _Connection) -> None:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        if self.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(self.address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.fail(connection, f"connect: {os.strerror(code)}")
            return
        connection.sock = sock
        connection.state = _CONNECTING
        self.byFd[sock.fileno()] = connection
        self.poller.register(sock.fileno(), _EPOLLOUT)

    def fail(self, connection: _Connection, message: str) -> None:
        self.connectionErrors += 1
        self.error(f"client {connection.index}: {message}")
        self.close(connection, _FAILED)

    def close(self, connection: _Connection, state: int, reset: bool = False) -> None:
        connection.state = state
        sock = connection.sock
        if sock is None:
            return
        connection.sock = None
        fd = sock.fileno()
        if fd >= 0:
            self.byFd.pop(fd, None)
            try:
                self.poller.unregister(fd)
            except (OSError, ValueError):
                pass
        if reset:
            # An abortive close leaves no TIME_WAIT behind, so that a
            # connection-rate run does not use up the ephemeral ports.
            try:
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            except OSError:
                pass
        sock.close()

    def advanceSetup(self, connection: _Connection, events: int) -> bool:
        """
        Drive a connection through connect and TLS handshake.

        @return: C{True} once it is ready for data.
        """
        sock = connection.sock
        if connection.state == _CONNECTING:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.fail(connection, f"connect: {os.strerror(code)}")
                return False
            if self.context is None:
                connection.state = _RUNNING
                return True
            fd = sock.fileno()
            try:
                wrapped = self.context.wrap_socket(
                    sock, server_hostname=self.serverHostname, do_handshake_on_connect=False
                )
            except (OSError, ssl.SSLError) as e:
                self.fail(connection, f"TLS: {e}")
                return False
            connection.sock = wrapped
            self.byFd[fd] = connection
            connection.state = _HANDSHAKING
        try:
            connection.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.poller.modify(connection.sock.fileno(), _EPOLLIN)
            return False
        except ssl.SSLWantWriteError:
            self.poller.modify(connection.sock.fileno(), _EPOLLOUT)
            return False
        except (OSError, ssl.SSLError) as e:
            self.fail(connection, f"TLS handshake: {e}")
            return False
        connection.state = _RUNNING
        return True


@dataclass
class _EchoSetup:
    size: int
    inflight: int
    delimiter: bytes
    template: bytes
    period: int


class _EchoEngine(_Engine):
    def __init__(
        self,
        host: str,
        port: int | None,
        context: ssl.SSLContext | None,
        serverHostname: str | None,
        setup: _EchoSetup,
    ) -> None:
        super().__init__(host, port, context, serverHostname)
        self.setup = setup
        self.stats = EchoStats()
        self.histogram = self.stats.histogram
        self.templateView = memoryview(setup.template)
        self.running = 0

    def start(self, connection: _Connection, now: int) -> None:
        self.poller.modify(connection.sock.fileno(), _EPOLLIN)
        self.running += 1
        self.refill(connection, now)

    def refill(self, connection: _Connection, now: int) -> None:
        """
        Send as many messages as the window allows, as one batch.
        """
        setup = self.setup
        count = min(
            setup.inflight - (connection.sent - connection.done), connection.total - connection.sent
        )
        if count <= 0:
            return
        size = setup.size
        period = setup.period
        template = setup.template
        offset = (connection.base + connection.sent * size) % period
        length = count * size
        data: bytes | memoryview
        if length <= period:
            data = self.templateView[offset : offset + length]
        else:
            pieces = []
            remaining = length
            while remaining:
                piece = min(remaining, period)
                pieces.append(template[offset : offset + piece])
                offset = (offset + piece) % period
                remaining -= piece
            data = b"".join(pieces)
        connection.sent += count
        connection.batches.append([connection.sent, _monotonic()])
        if connection.out:
            connection.out = bytes(connection.out[connection.outOffset :]) + bytes(data)
            connection.outOffset = 0
        else:
            connection.out = data
            connection.outOffset = 0
            self.flush(connection)

    def flush(self, connection: _Connection) -> None:
        sock = connection.sock
        out = connection.out
        offset = connection.outOffset
        try:
            if self.context is None:
                view = memoryview(out)
                while offset < len(out):
                    written = sock.send(view[offset:])
                    if not written:
                        break
                    offset += written
            else:
                # After a want-write, SSL_write must be called again with the
                # same bytes: the same length, whatever was appended since.
                while offset < len(out):
                    length = connection.retryLength or min(len(out) - offset, 256 * 1024)
                    connection.retryLength = length
                    offset += sock.send(out[offset : offset + length])
                    connection.retryLength = 0
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            pass
        except (OSError, ssl.SSLError) as e:
            self.lost(connection, f"send: {e}")
            return
        if offset >= len(out):
            connection.out = b""
            connection.outOffset = 0
            if connection.wantWrite:
                connection.wantWrite = False
                self.poller.modify(sock.fileno(), _EPOLLIN)
        else:
            connection.outOffset = offset
            if not connection.wantWrite:
                connection.wantWrite = True
                self.poller.modify(sock.fileno(), _EPOLLIN | _EPOLLOUT)

    def lost(self, connection: _Connection, message: str) -> None:
        self.running -= 1
        self.fail(connection, message)

    def readFast(self, connection: _Connection, now: int) -> None:
        """
        The hot path, in one function: read, verify in place,
        record round trips, send the next batch.  Anything unusual (bytes
        that differ, a multi-byte delimiter, a send that does not complete,
        the last echo) goes to the general methods.
        """
        setup = self.setup
        size = setup.size
        sock = connection.sock
        view = self.view
        try:
            length = sock.recv_into(view)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError as e:
            self.lost(connection, f"recv: {e}")
            return
        if not length:
            self.lost(connection, "connection closed by the server before all echoes arrived")
            return
        # Round trips run from just before the send to just after the read
        # that completed them, as the C load generator times them: not from
        # when the poller woke, which would count this client's own work
        # between waking and sending in every round trip.
        now = _monotonic()
        position = connection.received
        offset = (connection.base + position) % setup.period
        if (
            position + length > connection.sent * size
            or not setup.template.startswith(view[:length], offset)
            or len(setup.delimiter) > 1
        ):
            self.received(connection, view[:length], now)
            return
        connection.received = position + length
        count = (position + length) // size - position // size
        if not count:
            return
        before = connection.done
        done = before + count
        connection.done = done
        batches = connection.batches
        histogram = self.histogram
        counts = histogram.counts
        while batches and before < done:
            batch = batches[0]
            end = batch[0]
            elapsed = now - batch[1]
            if elapsed < 1:
                elapsed = 1
            if end <= done:
                weight = end - before
                before = end
                batches.popleft()
            else:
                weight = done - before
                before = done
            counts[min(int(math.log(elapsed) * _BUCKETS_PER_E), _BUCKETS - 1)] += weight
            if elapsed > histogram.maximum:
                histogram.maximum = elapsed
        total = connection.total
        if done >= total or connection.out:
            self.received(connection, view[:0], now)
            return
        sent = connection.sent
        number = setup.inflight - (sent - done)
        if number > total - sent:
            number = total - sent
        if number <= 0:
            return
        length = number * size
        if length > setup.period:
            self.refill(connection, now)
            return
        offset = (connection.base + sent * size) % setup.period
        connection.sent = sent + number
        data = self.templateView[offset : offset + length]
        batches.append([sent + number, _monotonic()])
        try:
            written = sock.send(data)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            written = 0
            if self.context is not None:
                # The retry must hand SSL_write the same bytes.
                connection.retryLength = length
        except OSError as e:
            self.lost(connection, f"send: {e}")
            return
        if written < length:
            connection.out = data
            connection.outOffset = written
            self.flush(connection)

    def readFastTLS(self, connection: _Connection, now: int) -> None:
        """
        L{readFast} over TLS: again while OpenSSL holds decrypted bytes that
        no socket event will announce.
        """
        sock = connection.sock
        readFast = self.readFast
        while True:
            readFast(connection, now)
            if connection.state != _RUNNING or not sock.pending():
                return

    def read(self, connection: _Connection, now: int) -> None:
        sock = connection.sock
        tls = self.context is not None
        view = self.view
        while True:
            try:
                length = sock.recv_into(view)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (OSError, ssl.SSLError) as e:
                self.lost(connection, f"recv: {e}")
                return
            if not length:
                self.lost(connection, "connection closed by the server before all echoes arrived")
                return
            self.received(connection, view[:length], now)
            if connection.state != _RUNNING or not tls or not sock.pending():
                return

    def received(self, connection: _Connection, data: memoryview, now: int) -> None:
        setup = self.setup
        size = setup.size
        length = len(data)
        if not length:
            # From readFast, which already counted what it read.
            self.completed(connection, now)
            return
        position = connection.received
        sentBytes = connection.sent * size
        if position + length > sentBytes:
            # Bytes this client never sent (or not yet).
            excess = position + length - sentBytes
            self.stats.unexpectedBytes += excess
            self.error(f"client {connection.index}: {excess} bytes it never sent came back")
        offset = (connection.base + position) % setup.period
        delimiter = setup.delimiter
        overlap = len(delimiter) - 1
        if setup.template.startswith(data, offset):
            # Exactly what was sent (compared in place, at memcmp speed): the
            # messages completed follow from the stream positions, no need
            # to look for delimiters.
            count = (position + length) // size - position // size
        else:
            chunk = bytes(data)
            self.corrupt(connection, chunk, position, offset)
            count = chunk.count(delimiter)
            if overlap:
                count += (connection.tail + chunk[:overlap]).count(delimiter)
        if overlap:
            connection.tail = (
                bytes(data[-overlap:])
                if length >= overlap
                else (connection.tail + bytes(data))[-overlap:]
            )
        connection.received = position + length
        if not count:
            return
        connection.done += count
        self.recordRoundTrips(connection, connection.done - count, now)
        self.completed(connection, now)

    def recordRoundTrips(self, connection: _Connection, before: int, now: int) -> None:
        """
        Record the round trips of the messages C{before} to C{done}, one
        record per batch involved.
        """
        done = connection.done
        batches = connection.batches
        histogram = self.histogram
        while batches and before < done:
            batch = batches[0]
            end = batch[0]
            if end <= done:
                histogram.add(now - batch[1], end - before)
                before = end
                batches.popleft()
            else:
                histogram.add(now - batch[1], done - before)
                before = done

    def completed(self, connection: _Connection, now: int) -> None:
        """
        After echoes completed: finish the connection, or send more.
        """
        size = self.setup.size
        if connection.done >= connection.total:
            if connection.received > connection.total * size:
                excess = connection.received - connection.total * size
                self.stats.unexpectedBytes += excess
                self.error(f"client {connection.index}: {excess} bytes more than sent came back")
            self.running -= 1
            self.close(connection, _DONE)
            return
        self.refill(connection, now)

    def corrupt(self, connection: _Connection, data: bytes, position: int, offset: int) -> None:
        """
        The slow path, only for bytes that differ from what was sent: count
        the messages (slots of C{size} bytes in the stream) that differ.
        """
        setup = self.setup
        size = setup.size
        template = setup.template
        length = len(data)
        start = 0
        while start < length:
            slot = (position + start) // size
            end = min(length, (slot + 1) * size - position)
            expected = (
                template[offset + start : offset + end]
                if offset + end <= len(template)
                else template[(offset + start) % setup.period :][: end - start]
            )
            got = data[start:end]
            if got != expected:
                wrong = sum(1 for a, b in zip(got, expected, strict=False) if a != b)
                wrong += abs(len(got) - len(expected))
                self.stats.corruptBytes += wrong
                if slot != connection.corruptSlot:
                    connection.corruptSlot = slot
                    self.stats.corruptMessages += 1
                    if self.firstError is None:
                        at = next(
                            (
                                i
                                for i, (a, b) in enumerate(zip(got, expected, strict=False))
                                if a != b
                            ),
                            0,
                        )
                        self.error(
                            f"client {connection.index}: message {slot} differs from what was "
                            f"sent at byte {at}: got {got[max(0, at - 8) : at + 8]!r}, "
                            f"expected {expected[max(0, at - 8) : at + 8]!r}"
                        )
            start = end


def runEcho(
    host: str,
    port: int | None,
    counts: Sequence[int],
    size: int,
    inflight: int,
    delimiter: bytes = b"\n",
    context: ssl.SSLContext | None = None,
    serverHostname: str | None = None,
    timeout: float = 300.0,
    firstClient: int = 0,
    progress: Progress | None = None,
) -> EchoStats:
    """
    Run echo clients to completion or until C{timeout}.

    @param counts: how many messages each client sends.
    @param firstClient: the global index of the first client (sets the
        phase of each client's stream, so that processes differ too).
    @param progress: called now and then with the number of messages
        echoed so far.
    """
    template, period = makeTemplate(size, delimiter)
    setup = _EchoSetup(size, max(1, inflight), delimiter, template, period)
    engine = _EchoEngine(host, port, context, serverHostname, setup)
    stats = engine.stats
    perPeriod = period // size
    connections: list[_Connection] = []
    for i, total in enumerate(counts):
        index = firstClient + i
        base = ((index * 7919) % perPeriod) * size
        connections.append(_Connection(index, total, base))
    stats.clients = len(connections)
    stats.expectedMessages = sum(counts)
    now = time.monotonic_ns()
    stats.start = now
    deadline = now + int(timeout * 1e9)
    pending = 0
    for connection in connections:
        engine.open(connection)
        if connection.state == _CONNECTING:
            pending += 1
    nextProgress = now + _PROGRESS_NS
    poll = engine.poller.poll
    byFd = engine.byFd
    monotonic = time.monotonic_ns
    read = engine.readFastTLS if context is not None else engine.readFast
    while (pending or engine.running) and now < deadline:
        events = poll(min(0.25, (deadline - now) / 1e9))
        now = monotonic()
        for fd, mask in events:
            found = byFd.get(fd)
            if found is None:
                continue
            connection = found
            state = connection.state
            if state == _RUNNING:
                if mask & (_EPOLLIN | _EPOLLERR):
                    read(connection, now)
                if mask & _EPOLLOUT and connection.state == _RUNNING and connection.out:
                    engine.flush(connection)
            elif state in (_CONNECTING, _HANDSHAKING):
                if engine.advanceSetup(connection, mask):
                    pending -= 1
                    if connection.total:
                        engine.start(connection, now)
                    else:
                        engine.close(connection, _DONE)
                    if not pending:
                        stats.ready = now
                elif connection.state == _FAILED:
                    pending -= 1
                    if not pending:
                        stats.ready = now
        if progress is not None and now >= nextProgress:
            nextProgress = now + _PROGRESS_NS
            progress(sum(c.done for c in connections))
    stats.end = now
    for connection in connections:
        stats.messages += min(connection.done, connection.total)
        stats.sentMessages += connection.sent
        stats.receivedBytes += connection.received
        missing = connection.total - connection.done
        if missing > 0:
            stats.missingEchoes += missing
        if connection.state in (_CONNECTING, _HANDSHAKING, _RUNNING):
            engine.close(connection, _DONE)
    if stats.missingEchoes and engine.firstError is None:
        engine.error(f"{stats.missingEchoes} echoes still missing after {timeout:g} s")
    if not stats.ready:
        stats.ready = stats.end
    stats.connectionErrors = engine.connectionErrors
    stats.firstError = engine.firstError
    engine.poller.close()
    if progress is not None:
        progress(stats.messages)
    return stats


@dataclass
class MulticastStats:
    """
    What a multicast (read-only) run measured.
    """

    clients: int = 0
    connected: int = 0
    messages: int = 0
    receivedBytes: int = 0
    connectionErrors: int = 0
    malformed: int = 0
    firstError: str | None = None
    perClient: list[int] = field(default_factory=list)
    windowStart: int = 0
    windowEnd: int = 0

    @property
    def errors(self) -> int:
        return self.connectionErrors + self.malformed

    def merge(self, other: MulticastStats) -> None:
        for name in (
            "clients",
            "connected",
            "messages",
            "receivedBytes",
            "connectionErrors",
            "malformed",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.firstError = self.firstError or other.firstError
        self.perClient += other.perClient
        self.windowStart = max(self.windowStart, other.windowStart)
        self.windowEnd = max(self.windowEnd, other.windowEnd)


def runMulticast(
    host: str,
    port: int | None,
    clients: int,
    seconds: float,
    size: int | None = None,
    delimiter: bytes = b"\n",
    context: ssl.SSLContext | None = None,
    serverHostname: str | None = None,
    connectTimeout: float = 60.0,
    firstClient: int = 0,
    progress: Progress | None = None,
) -> MulticastStats:
    """
    Connect C{clients} that only read, and count what they receive during
    C{seconds} after all of them are connected.

    @param size: if given, every message must be exactly this long
        (delimiter included); others count as malformed.
    """
    engine = _Engine(host, port, context, serverHostname)
    stats = MulticastStats(clients=clients)
    connections = [_Connection(firstClient + i, 0, 0) for i in range(clients)]
    counts = [0] * clients
    partial = [0] * clients  # bytes since the last delimiter (size check)
    tails = [b""] * clients
    overlap = len(delimiter) - 1
    now = time.monotonic_ns()
    setupDeadline = now + int(connectTimeout * 1e9)
    pending = 0
    for connection in connections:
        engine.open(connection)
        if connection.state == _CONNECTING:
            pending += 1
    windowStart = 0
    windowEnd = setupDeadline
    counting = False
    nextProgress = now + _PROGRESS_NS
    poll = engine.poller.poll
    byFd = engine.byFd
    buffer = engine.buffer
    view = engine.view
    last = delimiter[-1:]
    running = 0

    def check(i: int, length: int, number: int) -> int:
        """
        Count the malformed messages among the C{length} bytes just read,
        which hold C{number} delimiters: fast when every message is C{size}
        bytes (the delimiters end at fixed strides), slow otherwise.
        """
        assert size is not None
        first = (size - 1 - partial[i]) % size
        strided = buffer[first:length:size]
        if len(strided) == number and strided.count(last) == number:
            partial[i] = (partial[i] + length) % size
            return 0
        bad = 0
        pieces = bytes(view[:length]).split(delimiter)
        lengths = [partial[i] + len(pieces[0]) + len(delimiter)]
        lengths += [len(p) + len(delimiter) for p in pieces[1:-1]]
        if len(pieces) > 1:
            bad = sum(1 for n in lengths if n != size)
            partial[i] = len(pieces[-1])
        else:
            partial[i] += length
        return bad

    while now < windowEnd and (pending or running):
        events = poll(min(0.25, max(0.0, (windowEnd - now) / 1e9)))
        now = time.monotonic_ns()
        for fd, mask in events:
            found = byFd.get(fd)
            if found is None:
                continue
            connection = found
            if connection.state == _RUNNING:
                i = connection.index - firstClient
                sock = connection.sock
                while True:
                    try:
                        length = sock.recv_into(view)
                    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        break
                    except (OSError, ssl.SSLError) as e:
                        running -= 1
                        engine.fail(connection, f"recv: {e}")
                        break
                    if not length:
                        running -= 1
                        engine.fail(connection, "connection closed by the server")
                        break
                    number = buffer.count(delimiter, 0, length)
                    if overlap:
                        number += (tails[i] + bytes(view[: min(overlap, length)])).count(delimiter)
                        tails[i] = (tails[i] + bytes(view[max(0, length - overlap) : length]))[
                            -overlap:
                        ]
                    if size is not None:
                        bad = check(i, length, number)
                        if bad:
                            if counting:
                                stats.malformed += bad
                            engine.error(
                                f"client {connection.index}: a message is not {size} bytes long"
                            )
                    if counting:
                        counts[i] += number
                        stats.receivedBytes += length
                    if context is None or not sock.pending():
                        break
            elif connection.state in (_CONNECTING, _HANDSHAKING):
                if engine.advanceSetup(connection, mask):
                    engine.poller.modify(connection.sock.fileno(), _EPOLLIN)
                    running += 1
                    pending -= 1
                elif connection.state == _FAILED:
                    pending -= 1
                if not pending and not counting:
                    counting = True
                    windowStart = now
                    windowEnd = now + int(seconds * 1e9)
        if progress is not None and now >= nextProgress:
            nextProgress = now + _PROGRESS_NS
            progress(sum(counts))
    if not counting:
        windowStart = windowEnd = now
        engine.error(f"{pending} clients still not connected after {connectTimeout:g} s")
        stats.connectionErrors += pending
    stats.windowStart = windowStart
    stats.windowEnd = min(now, windowEnd) if counting else now
    stats.messages = sum(counts)
    stats.perClient = [counts[i] for i, c in enumerate(connections) if c.state != _FAILED]
    stats.connected = len(stats.perClient)
    for connection in connections:
        engine.close(connection, _DONE)
    stats.connectionErrors += engine.connectionErrors
    stats.firstError = engine.firstError
    engine.poller.close()
    return stats


@dataclass
class ConnectStats:
    """
    What a connection-rate run measured.
    """

    connections: int = 0
    errors: int = 0
    firstError: str | None = None
    start: int = 0
    end: int = 0
    histogram: Histogram = field(default_factory=Histogram)

    def merge(self, other: ConnectStats) -> None:
        self.connections += other.connections
        self.errors += other.errors
        self.firstError = self.firstError or other.firstError
        self.start = min(self.start, other.start) if self.start else other.start
        self.end = max(self.end, other.end)
        self.histogram.merge(other.histogram)


class _ProbeEngine(_Engine):
    """
    Connections that each send one message and wait for its echo: proof that
    the server accepted them (a TLS 1.3 client finishes its handshake before
    the server has checked its certificate).
    """

    def __init__(
        self,
        host: str,
        port: int | None,
        context: ssl.SSLContext | None,
        serverHostname: str | None,
        probe: bytes,
        delimiter: bytes,
    ) -> None:
        super().__init__(host, port, context, serverHostname)
        self.probe = probe
        self.delimiter = delimiter
        self.started: dict[int, int] = {}

    def step(self, connection: _Connection, mask: int) -> bool | None:
        """
        Advance a connection; C{True} once its probe was echoed, C{False} if
        it failed, C{None} while under way.
        """
        state = connection.state
        if state in (_CONNECTING, _HANDSHAKING):
            if not self.advanceSetup(connection, mask):
                return False if connection.state == _FAILED else None
            self.poller.modify(connection.sock.fileno(), _EPOLLIN)
            try:
                connection.sock.sendall(self.probe)
            except (OSError, ssl.SSLError) as e:
                self.fail(connection, f"send: {e}")
                return False
            return None
        sock = connection.sock
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return None
            except (OSError, ssl.SSLError) as e:
                self.fail(connection, f"recv: {e}")
                return False
            if not data:
                self.fail(connection, "closed by the server before echoing")
                return False
            connection.out += data
            if len(connection.out) >= len(self.probe):
                if connection.out[: len(self.probe)] != self.probe:
                    self.fail(connection, f"wrong echo {connection.out[:40]!r}")
                    return False
                return True
            if self.context is None or not sock.pending():
                return None


def runConnect(
    host: str,
    port: int | None,
    connections: int,
    concurrency: int,
    size: int = 32,
    delimiter: bytes = b"\n",
    context: ssl.SSLContext | None = None,
    serverHostname: str | None = None,
    timeout: float = 300.0,
    firstClient: int = 0,
    progress: Progress | None = None,
) -> ConnectStats:
    """
    Open C{connections} connections, C{concurrency} at a time; each connects
    (and does its TLS handshake), has one message echoed, and is closed.
    """
    template, _ = makeTemplate(size, delimiter)
    engine = _ProbeEngine(host, port, context, serverHostname, template[:size], delimiter)
    stats = ConnectStats()
    now = time.monotonic_ns()
    stats.start = now
    deadline = now + int(timeout * 1e9)
    opened = 0
    active: dict[int, int] = {}
    histogram = stats.histogram
    nextProgress = now + _PROGRESS_NS
    nextIndex = firstClient

    def launch(now: int) -> None:
        nonlocal opened, nextIndex
        while opened < connections and len(active) < concurrency:
            connection = _Connection(nextIndex, 1, 0)
            nextIndex += 1
            opened += 1
            engine.open(connection)
            if connection.state == _FAILED:
                stats.errors += 1
                continue
            active[id(connection)] = now

    launch(now)
    while active and now < deadline:
        events = engine.poller.poll(min(0.25, (deadline - now) / 1e9))
        now = time.monotonic_ns()
        for fd, mask in events:
            connection = engine.byFd.get(fd)
            if connection is None:
                continue
            result = engine.step(connection, mask)
            if result is None:
                continue
            began = active.pop(id(connection))
            if result:
                stats.connections += 1
                histogram.add(now - began)
                engine.close(connection, _DONE, reset=True)
            else:
                stats.errors += 1
        launch(now)
        if progress is not None and now >= nextProgress:
            nextProgress = now + _PROGRESS_NS
            progress(stats.connections)
    stats.end = now
    for connection in list(engine.byFd.values()):
        engine.close(connection, _DONE, reset=True)
    if active:
        stats.errors += len(active)
        engine.error(f"{len(active)} connections still under way after {timeout:g} s")
    stats.errors += connections - opened
    stats.firstError = engine.firstError
    engine.poller.close()
    return stats


@dataclass
class IdleStats:
    """
    What an idle-connections run measured.
    """

    connections: int = 0
    errors: int = 0
    firstError: str | None = None
    start: int = 0
    ready: int = 0


def runIdle(
    host: str,
    port: int | None,
    connections: int,
    concurrency: int,
    hold: Callable[[IdleStats], None],
    size: int = 32,
    delimiter: bytes = b"\n",
    context: ssl.SSLContext | None = None,
    serverHostname: str | None = None,
    timeout: float = 300.0,
) -> IdleStats:
    """
    Open C{connections} connections (each proven accepted by one echoed
    message), call C{hold(stats)} while all of them are open and idle, then
    close them.
    """
    template, _ = makeTemplate(size, delimiter)
    engine = _ProbeEngine(host, port, context, serverHostname, template[:size], delimiter)
    stats = IdleStats()
    now = time.monotonic_ns()
    stats.start = now
    deadline = now + int(timeout * 1e9)
    opened = 0
    active: set[int] = set()
    idle: list[_Connection] = []

    while (opened < connections or active) and now < deadline:
        while opened < connections and len(active) < concurrency:
            connection = _Connection(opened, 1, 0)
            opened += 1
            engine.open(connection)
            if connection.state == _FAILED:
                stats.errors += 1
            else:
                active.add(id(connection))
        events = engine.poller.poll(min(0.25, (deadline - now) / 1e9))
        now = time.monotonic_ns()
        for fd, mask in events:
            found = engine.byFd.get(fd)
            if found is None or id(found) not in active:
                continue
            connection = found
            result = engine.step(connection, mask)
            if result is None:
                continue
            active.discard(id(connection))
            if result:
                stats.connections += 1
                idle.append(connection)
                engine.poller.modify(connection.sock.fileno(), 0)
            else:
                stats.errors += 1
    stats.ready = now
    stats.errors += len(active) + (connections - opened)
    stats.firstError = engine.firstError
    try:
        hold(stats)
    finally:
        for connection in list(engine.byFd.values()):
            engine.close(connection, _DONE)
        engine.poller.close()
    return stats


# -- UDP ------------------------------------------------------------------------

#: The largest UDP payload of one datagram over IPv4 and over IPv6.
MAX_UDP_PAYLOAD = {socket.AF_INET: 65_507, socket.AF_INET6: 65_527}
#: Digits of the sequence number every UDP echo message starts with.
SEQUENCE_DIGITS = 10
#: Late replies remembered (to tell one from a corrupt or duplicated reply).
_LOST_REMEMBERED = 1 << 20


class UdpMessages:
    """
    The messages of a UDP echo run: message C{n} is its sequence number in
    C{SEQUENCE_DIGITS} digits followed by filler bytes, C{size} bytes in all
    with the delimiter.  Digits and filler are printable bytes that are none
    of the delimiter's bytes, so that the only delimiters are the real ones;
    every message differs, so a reply is matched to what was sent by its
    bytes alone.
    """

    def __init__(self, size: int, delimiter: bytes | None) -> None:
        self.delimiter = delimiter or b""
        body = size - len(self.delimiter)
        if body < SEQUENCE_DIGITS:
            raise ValueError(
                f"a message of {size} bytes has no room for its {SEQUENCE_DIGITS}-digit "
                "sequence number"
            )
        alphabet = bytes(b for b in range(0x21, 0x7F) if b not in self.delimiter)
        self.digits = alphabet[:10]
        self.table = bytes.maketrans(b"0123456789", self.digits)
        self.untable = bytes.maketrans(self.digits, b"0123456789")
        filler = random.Random(size).randbytes(body - SEQUENCE_DIGITS)
        self.filler = filler.translate(bytes(alphabet[i % len(alphabet)] for i in range(256)))
        self.format = b"%0" + str(SEQUENCE_DIGITS).encode() + b"d"
        self.plain = self.digits == b"0123456789"

    def message(self, sequence: int) -> bytes:
        """
        Message C{sequence} without its delimiter.
        """
        digits = self.format % sequence
        if not self.plain:
            digits = digits.translate(self.table)
        return digits + self.filler

    def batch(self, first: int, count: int) -> list[bytes]:
        """
        Messages C{first} to C{first + count - 1}, without their delimiters.
        """
        format, filler = self.format, self.filler
        if self.plain:
            return [format % sequence + filler for sequence in range(first, first + count)]
        table = self.table
        return [
            (format % sequence).translate(table) + filler
            for sequence in range(first, first + count)
        ]

    def sequence(self, message: bytes) -> int | None:
        """
        The sequence number of a message exactly as sent; C{None} for any
        other bytes.
        """
        digits = message[:SEQUENCE_DIGITS].translate(self.untable)
        if not digits.isdigit() or len(digits) != SEQUENCE_DIGITS:
            return None
        sequence = int(digits)
        return sequence if self.message(sequence) == message else None


@dataclass
class UdpEchoStats:
    """
    What a UDP echo run measured.  Every message sent is, at the end,
    echoed or lost (no echo within the loss timeout); a late echo of a lost
    message stays lost and is counted as late.
    """

    sentMessages: int = 0
    sentDatagrams: int = 0
    messages: int = 0
    windowMessages: int = 0
    receivedDatagrams: int = 0
    lost: int = 0
    late: int = 0
    corrupt: int = 0
    duplicates: int = 0
    refused: int = 0
    sendBufferFull: int = 0
    firstError: str | None = None
    start: int = 0
    windowEnd: int = 0
    end: int = 0
    histogram: Histogram = field(default_factory=Histogram)

    @property
    def errors(self) -> int:
        return self.corrupt + self.duplicates

    @property
    def lossPercent(self) -> float:
        return 100.0 * self.lost / self.sentMessages if self.sentMessages else 0.0


def _udpSocket(host: str, port: int) -> socket.socket:
    """
    A non-blocking UDP socket connected to C{host} and C{port}: only the
    server's replies reach it.  Of a name's addresses the first IPv4 one is
    taken, else the first IPv6 one (UDP cannot try one after another as TCP
    does, and servers listen on IPv4 unless told otherwise).
    """
    found = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM)
    found.sort(key=lambda entry: entry[0] != socket.AF_INET)
    family, kind, protocol, _, address = found[0]
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setblocking(False)
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def runUdpEcho(
    host: str,
    port: int,
    seconds: float,
    size: int = 32,
    inflight: int = 100,
    delimiter: bytes | None = None,
    batch: int = 1,
    lossTimeout: float = 1.0,
    progress: Progress | None = None,
) -> UdpEchoStats:
    """
    Keep C{inflight} messages in flight to a UDP echo server for
    C{seconds}, then wait for the last echoes (at most C{lossTimeout}).

    A message not echoed within C{lossTimeout} of being sent is lost: it is
    counted and replaced at once, never waited for beyond that.  Every echo
    is compared with what was sent; one that matches no message in flight
    is late (its message was already counted lost), a duplicate, or corrupt.

    @param delimiter: C{None}: one message per datagram, C{size} bytes;
        otherwise every message ends with it (C{size} includes it) and a
        datagram holds C{batch} of them.  Echoes are split on it, whatever
        the server's grouping of them into datagrams.
    """
    messages = UdpMessages(size, delimiter)
    if delimiter is None and batch != 1:
        raise ValueError("more than one message per datagram needs a delimiter")
    batch = max(1, batch)
    inflight = max(inflight, batch)
    sock = _udpSocket(host, port)
    payloadLimit = MAX_UDP_PAYLOAD[sock.family]
    if size * batch > payloadLimit:
        sock.close()
        raise ValueError(f"{batch} messages of {size} bytes exceed one datagram ({payloadLimit})")
    stats = UdpEchoStats()
    histogram = stats.histogram
    counts = histogram.counts
    log = math.log
    outstanding: dict[bytes, int] = {}
    lost: dict[bytes, None] = {}
    # Datagrams in the order sent, with their deadlines: answered ones are
    # dropped from the front lazily, so this stays about IN_FLIGHT long.
    timeouts: deque[tuple[int, list[bytes]]] = deque()
    lossNs = int(lossTimeout * 1e9)
    poller = select.epoll()
    poller.register(sock.fileno(), _EPOLLIN)
    wantWrite = False
    nextSequence = 0
    join = (delimiter or b"").join
    batchOf = messages.batch
    pop = outstanding.pop
    tail = delimiter or b""
    splitOn = delimiter
    monotonic = time.monotonic_ns
    now = monotonic()
    stats.start = now
    windowEnd = now + int(seconds * 1e9)
    stats.windowEnd = windowEnd
    nextProgress = now + _PROGRESS_NS
    sending = True

    def error(message: str) -> None:
        if stats.firstError is None:
            stats.firstError = message

    def unmatched(message: bytes) -> None:
        if message in lost:
            del lost[message]
            stats.late += 1
            return
        sequence = messages.sequence(message)
        if sequence is not None and sequence < nextSequence:
            stats.duplicates += 1
            error(f"message {sequence} was echoed twice")
        else:
            stats.corrupt += 1
            error(f"an echo matches no message sent: {message[:40]!r}")

    try:
        while True:
            if sending and now >= windowEnd:
                sending = False
            # Losses: the oldest datagrams whose deadline passed.
            while timeouts:
                deadline, keys = timeouts[0]
                if deadline > now:
                    if len(keys) == 1 and keys[0] not in outstanding:
                        timeouts.popleft()
                        continue
                    break
                timeouts.popleft()
                for key in keys:
                    if outstanding.pop(key, None) is not None:
                        stats.lost += 1
                        lost[key] = None
                        if len(lost) > _LOST_REMEMBERED:
                            del lost[next(iter(lost))]
            if not sending and not outstanding:
                break
            # Refill the window, one datagram of BATCH messages at a time.
            if sending and not wantWrite:
                while len(outstanding) + batch <= inflight:
                    keys = batchOf(nextSequence, batch)
                    datagram = keys[0] + tail if batch == 1 else join(keys) + tail
                    try:
                        sock.send(datagram)
                    except BlockingIOError:
                        stats.sendBufferFull += 1
                        wantWrite = True
                        poller.modify(sock.fileno(), _EPOLLIN | _EPOLLOUT)
                        break
                    except ConnectionRefusedError:
                        # ICMP port unreachable from an earlier datagram.
                        stats.refused += 1
                        error("the server's port is closed (ICMP port unreachable)")
                        continue
                    except OSError as e:
                        if e.errno == errno.ENOBUFS:
                            stats.sendBufferFull += 1
                            break
                        raise
                    nextSequence += batch
                    stats.sentMessages += batch
                    stats.sentDatagrams += 1
                    for key in keys:
                        outstanding[key] = now
                    timeouts.append((now + lossNs, keys))
            # Wait for echoes, at most until the next deadline.
            wake = timeouts[0][0] if timeouts else now + lossNs
            if sending:
                wake = min(wake, windowEnd)
            events = poller.poll(max(0.0, (wake - now) / 1e9))
            now = monotonic()
            for _, mask in events:
                if mask & _EPOLLOUT and wantWrite:
                    wantWrite = False
                    poller.modify(sock.fileno(), _EPOLLIN)
            inWindow = now < windowEnd
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    stats.refused += 1
                    error("the server's port is closed (ICMP port unreachable)")
                    continue
                stats.receivedDatagrams += 1
                if splitOn is None:
                    pieces = [data]
                else:
                    pieces = data.split(splitOn)
                    if not pieces[-1]:
                        pieces.pop()
                # One round trip recorded per echoed datagram, weighted by
                # the messages it completed (those sent together share a
                # send time).
                matched = 0
                sent = 0
                for piece in pieces:
                    at = pop(piece, None)
                    if at is None:
                        unmatched(piece)
                        continue
                    matched += 1
                    sent = at
                if not matched:
                    continue
                stats.messages += matched
                if inWindow:
                    stats.windowMessages += matched
                elapsed = now - sent
                if elapsed < 1:
                    elapsed = 1
                counts[min(int(log(elapsed) * _BUCKETS_PER_E), _BUCKETS - 1)] += matched
                if elapsed > histogram.maximum:
                    histogram.maximum = elapsed
            if progress is not None and now >= nextProgress:
                nextProgress = now + _PROGRESS_NS
                progress(stats.messages)
    finally:
        poller.close()
        sock.close()
    stats.end = now
    if progress is not None:
        progress(stats.messages)
    return stats


@dataclass
class UdpMulticastStats:
    """
    What a UDP multicast run measured: datagrams sent to the group, and
    what each receiving socket got of them.
    """

    receivers: int = 0
    receiveBuffer: int = 0
    sent: int = 0
    sendBufferFull: int = 0
    delivered: int = 0
    malformed: int = 0
    perReceiver: list[int] = field(default_factory=list)
    firstError: str | None = None
    start: int = 0
    sendEnd: int = 0
    end: int = 0

    @property
    def errors(self) -> int:
        return self.malformed

    @property
    def expected(self) -> int:
        return self.sent * self.receivers

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.delivered)

    @property
    def lossPercent(self) -> float:
        return 100.0 * self.lost / self.expected if self.expected else 0.0


def multicastReceiver(group: str, port: int, receiveBuffer: int | None = None) -> socket.socket:
    """
    A non-blocking UDP socket bound to C{group} and C{port} beside others
    (C{SO_REUSEADDR}, C{SO_REUSEPORT}: every one of them gets a copy of
    every datagram sent to the group), joined to the group on the
    interface the routing table picks.

    @param receiveBuffer: its C{SO_RCVBUF}, in bytes (the system caps it);
        C{None} for the system's default.
    """
    family = socket.AF_INET6 if ":" in group else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if receiveBuffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receiveBuffer)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        packed = socket.inet_pton(family, group)
        if family == socket.AF_INET:
            sock.bind((group, port))
            sock.setsockopt(
                socket.IPPROTO_IP,
                socket.IP_ADD_MEMBERSHIP,
                packed + socket.inet_aton("0.0.0.0"),
            )
        else:
            sock.bind((group, port, 0, 0))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, packed + b"\0" * 4)
    except OSError:
        sock.close()
        raise
    return sock


def multicastSender(group: str) -> socket.socket:
    """
    A non-blocking UDP socket that sends to C{group} with a TTL (hop limit)
    of 1, looped back to this host's receivers.
    """
    family = socket.AF_INET6 if ":" in group else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
    return sock


def _multicastSend(
    sender: socket.socket,
    destination: Any,
    seconds: float,
    rate: float | None,
    size: int,
    filler: bytes,
    connection: Any,
) -> None:
    """
    The sending process of L{runUdpMulticast}: send for C{seconds}, at
    C{rate} a second or as fast as the socket takes them, then report
    C{(sent, sendBufferFull, start, end)} through C{connection}.  It stops
    as soon as the process that started it is gone (killed by a signal), so
    that no sender outlives the command.
    """
    parent = os.getppid()
    monotonic = time.monotonic_ns
    sendto = sender.sendto
    pack = int.to_bytes
    sent = full = 0
    start = now = monotonic()
    end = start + int(seconds * 1e9)
    interval = 1e9 / rate if rate else 0.0
    try:
        while now < end:
            if os.getppid() != parent:
                return
            due = int((now - start) / interval) + 1 - sent if rate else 64
            for _ in range(min(due, 64)):
                try:
                    sendto(pack(sent, 8, "big") + filler, destination)
                except BlockingIOError:
                    full += 1
                    select.select([], [sender], [], 0.001)
                    break
                except OSError as e:
                    if e.errno != errno.ENOBUFS:
                        raise
                    full += 1
                    time.sleep(0.0001)
                    break
                sent += 1
            now = monotonic()
            if rate:
                wait = (start + sent * interval - now) / 1e9
                if wait > 0.0002:
                    time.sleep(wait)
                    now = monotonic()
        connection.send(("ok", (sent, full, start, now)))
    except BaseException as e:  # reported by the receiving process
        connection.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        connection.close()


def runUdpMulticast(
    group: str,
    port: int,
    receivers: int,
    seconds: float,
    rate: float | None = None,
    size: int = 32,
    drain: float = 0.5,
    receiveBuffer: int | None = None,
    progress: Progress | None = None,
) -> UdpMulticastStats:
    """
    Send C{size}-byte datagrams to C{group}:C{port} for C{seconds}, at
    C{rate} a second (C{None}: as fast as the socket takes them), from one
    socket in a process of its own, and count what each of C{receivers}
    sockets of this process, joined to the group, receives; after sending,
    wait until nothing has arrived for C{drain} seconds (at most C{drain}
    twice over).  The sender does not wait for the receivers, as a real
    multicast sender does not: what they cannot keep up with is lost.

    Each datagram holds its 8-byte sequence number and filler; one of
    another length or with other filler is malformed.

    @param receiveBuffer: each receiving socket's C{SO_RCVBUF} (see
        L{multicastReceiver}); what the system made of it is in the stats.
    @raise OSError: a socket cannot be bound or joined to the group.
    @raise RuntimeError: the sending process failed.
    """
    import multiprocessing

    if size < 8:
        raise ValueError("a datagram needs 8 bytes for its sequence number")
    filler = makeTemplate(size, b"")[0][: size - 8] if size > 8 else b""
    sockets: list[socket.socket] = []
    poller = select.epoll()
    stats = UdpMulticastStats(receivers=receivers)
    process = None
    try:
        for _ in range(receivers):
            sockets.append(multicastReceiver(group, port, receiveBuffer))
        stats.receiveBuffer = sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        byFd: dict[int, int] = {}
        for number, sock in enumerate(sockets):
            poller.register(sock.fileno(), _EPOLLIN)
            byFd[sock.fileno()] = number
        counts = [0] * receivers
        sender = multicastSender(group)
        destination = (group, port) if sender.family == socket.AF_INET else (group, port, 0, 0)
        context = multiprocessing.get_context("fork")
        receiving, sending = context.Pipe(duplex=False)
        process = context.Process(
            target=_multicastSend,
            args=(sender, destination, seconds, rate, size, filler, sending),
        )
        process.start()
        sending.close()
        sender.close()
        poller.register(receiving.fileno(), _EPOLLIN)
        monotonic = time.monotonic_ns
        now = monotonic()
        stats.start = now
        limit = now + int((seconds + 30) * 1e9)
        nextProgress = now + _PROGRESS_NS
        drainNs = int(drain * 1e9)
        lastArrival = now
        report: Any = None
        while now < limit:
            if report is not None and (
                now - lastArrival >= drainNs or now - stats.sendEnd >= 2 * drainNs
            ):
                break
            events = poller.poll(0.05)
            now = monotonic()
            for fd, _ in events:
                index = byFd.get(fd)
                if index is None:
                    if report is None:
                        try:
                            report = receiving.recv()
                        except EOFError:
                            report = ("error", "the sending process ended without a word")
                        poller.unregister(receiving.fileno())
                        if report[0] != "ok":
                            raise RuntimeError(f"the multicast sender failed: {report[1]}")
                        stats.sent, stats.sendBufferFull, stats.start, stats.sendEnd = report[1]
                        lastArrival = max(lastArrival, now)
                    continue
                sock = sockets[index]
                got = 0
                while True:
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        break
                    if len(data) != size or data[8:] != filler:
                        stats.malformed += 1
                        if stats.firstError is None:
                            stats.firstError = (
                                f"receiver {index}: a datagram of {len(data)} bytes is not one "
                                "this run sent"
                            )
                        continue
                    got += 1
                counts[index] += got
                if got:
                    lastArrival = now
            if progress is not None and now >= nextProgress:
                nextProgress = now + _PROGRESS_NS
                progress(sum(counts))
        if report is None:
            raise RuntimeError(f"the multicast sender did not finish in {seconds + 30:g} s")
        stats.end = now
        stats.perReceiver = counts
        stats.delivered = sum(counts)
        receiving.close()
    finally:
        poller.close()
        for sock in sockets:
            sock.close()
        if process is not None:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
    return stats
