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
    "clientContext",
    "makeTemplate",
    "runConnect",
    "runEcho",
    "runIdle",
    "runMulticast",
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
        connection.batches.append([connection.sent, now])
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
        batches.append([sent + number, now])
        data = self.templateView[offset : offset + length]
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
