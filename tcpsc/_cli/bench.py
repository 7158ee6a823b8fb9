# -*- test-case-name: tests.test_bench -*-
"""
Load a delimiter-framed TCP or TLS server, a UDP echo server or a
multicast group, and measure it, in the manner of CppServer's performance
clients.  Modes:

  echo       clients send messages, the server echoes them; every echoed
             byte is compared with what was sent (corruption, loss,
             reordering and duplication are errors)
  multicast  clients only read what the server broadcasts; totals and the
             smallest and largest count per client (fairness)
  connect    connections per second (with --tls: full handshakes per second)
  idle       hold many idle connections open, for measuring a server's memory
  udp-echo   UDP datagrams to an echo server, IN_FLIGHT messages in flight,
             every echo checked; a message without an echo within
             --loss-timeout is lost (counted and replaced, not waited for)
  udp-multicast
             one sender to a multicast group and RECEIVERS sockets joined
             to it in this process: what each received, loss, the rate

Each mode prints a report and, last, one line for programs:
  RESULT mode=echo msgs_per_s=... mib_per_s=... errors=... messages=... ...
The exit status is 0 without errors; 1 with errors, when multicast (or a
UDP mode) received no message at all, or on a problem such as an unreadable
certificate file; 2 for a usage error; 130 on Ctrl-C.  UDP loss is counted
and reported, not an error.  The TCP modes' server is HOST PORT, or an
endpoint description: tcp:HOST:PORT, or unix:PATH for a UNIX socket.  A
live progress line goes to standard error when it is a terminal and the run
lasts more than two seconds.
Example, pinned to another core than the server:

  taskset -c 0 tcpsc bench echo 127.0.0.1 8081 -c 100 -q 100 -m 2000000
"""

from __future__ import annotations

import argparse
import ipaddress
import multiprocessing
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from tcpsc import DEFAULT_MAX_DATAGRAM
from tcpsc.tap import (
    DELIMITER_HELP,
    FILE_MARGIN,
    formatDelimiter,
    parseDelimiter,
    parsePortNumber,
    raiseOpenFileLimit,
)

from . import loadgen as lg
from .common import (
    CommandError,
    Target,
    UsageError,
    addDelimiterOption,
    addTargetArguments,
    countArgument,
    parseTarget,
    secondsArgument,
)

__all__ = ["SUMMARY", "configure", "run"]

SUMMARY = (
    "load a message server (echo, multicast, connect, idle, udp-echo, udp-multicast) and measure it"
)

_PROGRESS_AFTER = 2.0


def _addConnectionOptions(parser: argparse.ArgumentParser) -> None:
    addTargetArguments(parser)
    parser.add_argument("--tls", action="store_true", help="TLS 1.3 (default: plain TCP)")
    parser.add_argument(
        "--ca",
        metavar="PEM",
        help="with --tls: CA certificate to verify the server with "
        "(default: none, the server is not verified)",
    )
    parser.add_argument(
        "--cert", metavar="PEM", help="with --tls: client certificate (default: none)"
    )
    parser.add_argument("--key", metavar="PEM", help="with --tls: the key of --cert")
    parser.add_argument(
        "--sni",
        metavar="NAME",
        help="with --tls: server name to send and check (default: HOST; localhost for unix:PATH)",
    )
    addDelimiterOption(parser)
    parser.add_argument(
        "--procs",
        type=countArgument,
        default=1,
        metavar="N",
        help="spread the clients over this many processes (default: 1)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    """
    Add the modes and their arguments to the C{bench} subcommand's parser.
    """
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    _fill(modes)


def run(args: argparse.Namespace) -> int:
    """
    Run the mode parsed into C{args}; the exit status.
    """
    if args.mode in _UDP_MODES:
        return int(args.func(args))
    target = parseTarget(args.host, args.port)
    # The load generator takes a UNIX socket as its path and no port.
    args.host, args.port = (
        (target.path, None) if target.path is not None else (target.host, target.port)
    )
    args.target = target
    if args.sni is None and target.path is not None:
        args.sni = target.host
    return int(args.func(args))


def _fill(modes: Any) -> None:
    echo = modes.add_parser(
        "echo",
        help="clients send messages and check the echoes",
        description="Messages are split over the clients; each client keeps IN_FLIGHT "
        "messages in flight. Every echoed byte is compared with what was sent: "
        "corruption, loss, reordering and duplication are errors.",
    )
    _addConnectionOptions(echo)
    echo.add_argument(
        "-c",
        "--clients",
        type=countArgument,
        default=100,
        metavar="CLIENTS",
        help="connections sending at once (default: 100)",
    )
    echo.add_argument(
        "-m",
        "--messages",
        type=countArgument,
        default=1_000_000,
        metavar="MESSAGES",
        help="total messages, split over the clients (default: 1000000)",
    )
    echo.add_argument(
        "-s",
        "--size",
        type=countArgument,
        default=32,
        metavar="SIZE",
        help="bytes per message, delimiter included (default: 32)",
    )
    echo.add_argument(
        "-q",
        "--in-flight",
        dest="inflight",
        type=countArgument,
        default=1000,
        metavar="IN_FLIGHT",
        help="messages each client keeps in flight (default: 1000)",
    )
    echo.add_argument(
        "-T",
        "--timeout",
        type=secondsArgument,
        default=300.0,
        metavar="SECONDS",
        help="give up after this many seconds; missing echoes are errors (default: 300)",
    )
    echo.set_defaults(func=_echo)

    multicast = modes.add_parser(
        "multicast",
        help="clients only read what the server broadcasts",
        description="Counts the messages all clients receive during SECONDS after every "
        "client is connected, from a server that broadcasts on its own (such as "
        "the daemon's --app broadcast). Receiving nothing is an error.",
    )
    _addConnectionOptions(multicast)
    multicast.add_argument(
        "-c",
        "--clients",
        type=countArgument,
        default=100,
        metavar="CLIENTS",
        help="connections reading at once (default: 100)",
    )
    multicast.add_argument(
        "-T",
        "--seconds",
        type=secondsArgument,
        default=5.0,
        metavar="SECONDS",
        help="how long to count, once every client is connected (default: 5)",
    )
    multicast.add_argument(
        "-s",
        "--size",
        type=countArgument,
        default=None,
        metavar="SIZE",
        help="expected bytes per message, delimiter included (as the "
        "daemon's --message-size); others are errors (default: any)",
    )
    multicast.set_defaults(func=_multicast)

    connect = modes.add_parser(
        "connect",
        help="connections per second (TLS: handshakes per second)",
        description="Each connection connects, does its TLS handshake, has one message "
        "echoed (proof the server accepted it) and is closed.",
    )
    _addConnectionOptions(connect)
    connect.add_argument(
        "-n",
        "--connections",
        type=countArgument,
        default=2000,
        metavar="N",
        help="connections to make in all (default: 2000)",
    )
    connect.add_argument(
        "-c",
        "--concurrency",
        type=countArgument,
        default=10,
        metavar="N",
        help="connections under way at once (default: 10)",
    )
    connect.add_argument(
        "-s",
        "--size",
        type=countArgument,
        default=32,
        metavar="SIZE",
        help="bytes of the one echoed message, delimiter included (default: 32)",
    )
    connect.add_argument(
        "-T",
        "--timeout",
        type=secondsArgument,
        default=300.0,
        metavar="SECONDS",
        help="give up after this many seconds; connections not done are errors (default: 300)",
    )
    connect.set_defaults(func=_connect)

    idle = modes.add_parser(
        "idle",
        help="hold many idle connections open",
        description="Opens CONNECTIONS connections (each proven accepted by one echoed "
        "message), prints a HOLDING line, and keeps them open until standard "
        "input ends or HOLD seconds pass.",
    )
    _addConnectionOptions(idle)
    idle.add_argument(
        "-n",
        "--connections",
        type=countArgument,
        default=10_000,
        metavar="N",
        help="connections to open and hold (default: 10000)",
    )
    idle.add_argument(
        "-c",
        "--concurrency",
        type=countArgument,
        default=100,
        metavar="N",
        help="connections being opened at once (default: 100)",
    )
    idle.add_argument(
        "--hold",
        type=secondsArgument,
        default=60.0,
        metavar="SECONDS",
        help="hold them this long at most, or until standard input ends (default: 60)",
    )
    idle.add_argument(
        "-T",
        "--timeout",
        type=secondsArgument,
        default=300.0,
        metavar="SECONDS",
        help="give up opening after this many seconds; connections not open "
        "are errors (default: 300)",
    )
    idle.set_defaults(func=_idle)
    _fillUdp(modes)


# -- helpers ----------------------------------------------------------------


def _context(options: argparse.Namespace) -> Any:
    if not options.tls:
        if options.ca or options.cert or options.key:
            raise UsageError("--ca, --cert and --key apply only with --tls")
        return None
    if (options.cert is None) != (options.key is None):
        raise UsageError("--cert and --key go together")
    if options.ca is None:
        print(
            "tcpsc bench: warning: --tls without --ca, server certificate NOT verified",
            file=sys.stderr,
        )
    try:
        return lg.clientContext(options.ca, options.cert, options.key)
    except (OSError, ValueError) as e:
        raise CommandError(f"cannot load the TLS files: {e}") from None


def _duration(ns: float) -> str:
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.3f} us"
    if ns < 1e9:
        return f"{ns / 1e6:.3f} ms"
    return f"{ns / 1e9:.3f} s"


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3f} {unit}"
    return f"{n:.0f} bytes"


class _ProgressLine:
    """
    A live line on standard error, only on a terminal and only once the run
    has lasted a couple of seconds.
    """

    def __init__(self, total: int | None, what: str, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = total
        self.what = what
        self.started = time.monotonic()
        self.shown = False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        if elapsed < _PROGRESS_AFTER:
            return
        rate = done / elapsed if elapsed else 0.0
        if self.total:
            share = min(1.0, done / self.total)
            bar = "#" * int(share * 30)
            text = f"[{bar:<30}] {done:,}/{self.total:,} {self.what} {rate:,.0f}/s"
        else:
            text = f"{done:,} {self.what} {rate:,.0f}/s {elapsed:.0f} s"
        self.stream.write("\r" + text + "\x1b[K")
        self.stream.flush()
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _worker(
    function: Callable[..., Any],
    kwargs: dict[str, Any],
    slot: int,
    counters: Any,
    start: Any,
    connection: Any,
) -> None:
    """
    One process of a C{--procs} run: wait for the common start, run, send
    the statistics back.
    """

    def progress(done: int) -> None:
        counters[slot] = done

    try:
        start.wait()
        stats = function(progress=progress, **kwargs)
        connection.send(("ok", stats))
    except BaseException as e:  # reported by the parent
        connection.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        connection.close()


def _measure(
    function: Callable[..., Any],
    shares: list[dict[str, Any]],
    stats: Any,
    total: int | None,
    what: str,
) -> Any:
    """
    Run C{function} over C{shares} (see L{_runSpread}) with a progress line
    counting C{what} up to C{total}, and merge the results into C{stats}.
    """
    progress = _ProgressLine(total, what)
    try:
        results = _runSpread(function, shares, progress)
    finally:
        progress.finish()
    for result in results:
        stats.merge(result)
    return stats


def _runSpread(
    function: Callable[..., Any], shares: list[dict[str, Any]], progress: _ProgressLine
) -> list[Any]:
    """
    Run C{function} once per share: in this process for one share, in as
    many forked processes otherwise, all started at once.
    """
    if len(shares) == 1:
        try:
            return [function(progress=progress.update, **shares[0])]
        except OSError as e:  # an unknown host, no file descriptors left
            raise CommandError(f"{shares[0].get('host')}: {e.strerror or e}") from None
    context = multiprocessing.get_context("fork")
    counters = context.Array("q", len(shares), lock=False)
    start = context.Event()
    workers = []
    for slot, kwargs in enumerate(shares):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_worker, args=(function, kwargs, slot, counters, start, sender)
        )
        process.start()
        sender.close()
        workers.append((process, receiver))
    start.set()
    results: list[Any] = []
    try:
        for process, receiver in workers:
            while not receiver.poll(0.25):
                progress.update(sum(counters))
                if not process.is_alive() and not receiver.poll(0):
                    raise CommandError(
                        f"load process {process.pid} died (exit status {process.exitcode})"
                    )
            status, value = receiver.recv()
            if status != "ok":
                raise CommandError(f"load process {process.pid} failed: {value}")
            results.append(value)
    finally:
        for process, _ in workers:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
    return results


def _spread(count: int, procs: int) -> list[tuple[int, int]]:
    """
    C{(first, number)} of clients for each process.
    """
    procs = max(1, min(procs, count))
    shares = lg.splitMessages(count, procs)
    result = []
    first = 0
    for number in shares:
        result.append((first, number))
        first += number
    return result


def _header(options: argparse.Namespace, extra: list[str]) -> None:
    target: Target = options.target
    if target.path is not None:
        print(f"Server socket: {target.path}")
    else:
        print(f"Server address: {target.host}")
        print(f"Server port: {target.port}")
    print(f"Working processes: {options.procs}")
    for line in extra:
        print(line)
    print(f"TLS: {'TLS 1.3' if options.tls else 'no'}")
    print()


# -- modes --------------------------------------------------------------------


def _echo(options: argparse.Namespace) -> int:
    if options.messages < options.clients:
        raise UsageError("-m must be at least -c (every client sends a message)")
    if options.size < len(options.delimiter):
        raise UsageError("-s includes the delimiter and must be at least its length")
    context = _context(options)
    raiseOpenFileLimit(options.clients + FILE_MARGIN)
    counts = lg.splitMessages(options.messages, options.clients)
    shares = []
    for first, number in _spread(options.clients, options.procs):
        shares.append(
            dict(
                host=options.host,
                port=options.port,
                counts=counts[first : first + number],
                size=options.size,
                inflight=options.inflight,
                delimiter=options.delimiter,
                context=context,
                serverHostname=options.sni,
                timeout=options.timeout,
                firstClient=first,
            )
        )
    _header(
        options,
        [
            f"Working clients: {options.clients}",
            f"Messages in flight per client: {options.inflight}",
            f"Messages to send: {options.messages}",
            f"Message size: {options.size} (including delimiter {formatDelimiter(options.delimiter)})",
        ],
    )
    sys.stdout.flush()
    stats = _measure(lg.runEcho, shares, lg.EchoStats(), options.messages, "echoed")
    return _reportEcho(options, stats)


def _reportEcho(options: argparse.Namespace, stats: lg.EchoStats) -> int:
    errors = stats.errors
    print(
        f"Errors: {errors} (connection {stats.connectionErrors}, corrupt messages "
        f"{stats.corruptMessages} [{stats.corruptBytes} bytes], missing echoes "
        f"{stats.missingEchoes}, unexpected bytes {stats.unexpectedBytes})"
    )
    if stats.firstError:
        print(f"First error: {stats.firstError}")
    print()
    rtt = max(1, stats.end - stats.start)
    transfer = max(1, stats.end - stats.ready)
    connect = max(0, stats.ready - stats.start)
    rate = stats.messages * 1e9 / rtt
    mib = stats.receivedBytes * 1e9 / rtt / (1 << 20)
    transferRate = stats.messages * 1e9 / transfer
    print(f"Round-trip time: {_duration(rtt)}")
    print(f"Total data: {_bytes(stats.receivedBytes)}")
    print(f"Total messages: {stats.messages}")
    print(f"Data throughput: {mib:.3f} MiB/s")
    if stats.messages:
        print(
            f"Message latency: {_duration(rtt / stats.messages)} "
            "(round-trip time / messages, CppServer definition)"
        )
    print(f"Message throughput: {rate:.0f} msg/s")
    print(
        f"Connect{'+handshake' if options.tls else ''} phase: {_duration(connect)}; "
        f"transfer phase: {_duration(transfer)} -> {transferRate:.0f} msg/s"
    )
    histogram = stats.histogram
    if histogram.total:
        p50, p90, p99, p999 = (histogram.percentile(p) for p in (0.5, 0.9, 0.99, 0.999))
        queued = " [includes queueing, q>1]" if options.inflight > 1 else ""
        print(f"Per-message round trip (write of the batch -> echo of last byte){queued}:")
        print(
            f"  p50 {_duration(p50)}  p90 {_duration(p90)}  p99 {_duration(p99)}  "
            f"p99.9 {_duration(p999)}  max {_duration(histogram.maximum)}  "
            f"(n={histogram.total})"
        )
    else:
        p50 = p99 = 0.0
    print(
        f"RESULT mode=echo msgs_per_s={rate:.0f} mib_per_s={mib:.3f} errors={errors} "
        f"messages={stats.messages} rtt_s={rtt / 1e9:.6f} xfer_msgs_per_s={transferRate:.0f} "
        f"connect_s={connect / 1e9:.6f} p50_us={p50 / 1e3:.2f} p99_us={p99 / 1e3:.2f} "
        f"clients={options.clients} q={options.inflight} size={options.size} "
        f"tls={int(options.tls)} procs={options.procs}"
    )
    sys.stdout.flush()
    return 1 if errors else 0


def _multicast(options: argparse.Namespace) -> int:
    context = _context(options)
    raiseOpenFileLimit(options.clients + FILE_MARGIN)
    shares = [
        dict(
            host=options.host,
            port=options.port,
            clients=number,
            seconds=options.seconds,
            size=options.size,
            delimiter=options.delimiter,
            context=context,
            serverHostname=options.sni,
            firstClient=first,
        )
        for first, number in _spread(options.clients, options.procs)
    ]
    _header(
        options,
        [
            f"Working clients: {options.clients}",
            f"Seconds: {options.seconds:g}",
            f"Expected message size: {options.size or 'any'}",
        ],
    )
    sys.stdout.flush()
    stats = _measure(lg.runMulticast, shares, lg.MulticastStats(), None, "messages")
    seconds = max(1, stats.windowEnd - stats.windowStart) / 1e9
    rate = stats.messages / seconds
    mib = stats.receivedBytes / seconds / (1 << 20)
    low = min(stats.perClient) if stats.perClient else 0
    high = max(stats.perClient) if stats.perClient else 0
    print(
        f"Errors: {stats.errors} (connection {stats.connectionErrors}, malformed-length "
        f"messages {stats.malformed})"
    )
    if stats.firstError:
        print(f"First error: {stats.firstError}")
    print()
    print(f"Total time: {_duration(seconds * 1e9)}")
    print(f"Total data: {_bytes(stats.receivedBytes)}")
    print(f"Total messages: {stats.messages} (all clients together)")
    print(f"Data throughput: {mib:.3f} MiB/s")
    if stats.messages:
        print(
            f"Message latency: {_duration(seconds * 1e9 / stats.messages)} "
            "(time / messages, CppServer definition)"
        )
    print(f"Message throughput: {rate:.0f} msg/s")
    print(f"Per-client messages: min {low} max {high} ({stats.connected} connected)")
    print(
        f"RESULT mode=multicast msgs_per_s={rate:.0f} mib_per_s={mib:.3f} errors={stats.errors} "
        f"messages={stats.messages} seconds={seconds:.3f} clients={options.clients} "
        f"connected={stats.connected} min_client_msgs={low} max_client_msgs={high}"
    )
    sys.stdout.flush()
    if stats.connected and not stats.messages:
        print(
            f"tcpsc bench multicast: no messages received in {options.seconds:g} s: "
            "the server broadcast nothing (a server that broadcasts on its own is "
            "needed, such as twistd tcpsc --app broadcast)",
            file=sys.stderr,
        )
        return 1
    return 1 if stats.errors else 0


def _connect(options: argparse.Namespace) -> int:
    context = _context(options)
    raiseOpenFileLimit(options.concurrency + FILE_MARGIN)
    total = options.connections
    procs = max(1, min(options.procs, options.concurrency))
    shares = []
    connections = lg.splitMessages(total, procs)
    concurrency = lg.splitMessages(options.concurrency, procs)
    first = 0
    for number, parallel in zip(connections, concurrency, strict=True):
        shares.append(
            dict(
                host=options.host,
                port=options.port,
                connections=number,
                concurrency=parallel,
                size=options.size,
                delimiter=options.delimiter,
                context=context,
                serverHostname=options.sni,
                timeout=options.timeout,
                firstClient=first,
            )
        )
        first += number
    _header(options, [f"Connections: {total}", f"Concurrency: {options.concurrency}"])
    sys.stdout.flush()
    stats = _measure(lg.runConnect, shares, lg.ConnectStats(), total, "connections")
    seconds = max(1, stats.end - stats.start) / 1e9
    rate = stats.connections / seconds
    histogram = stats.histogram
    p50, p99 = histogram.percentile(0.5), histogram.percentile(0.99)
    print(f"Errors: {stats.errors}")
    if stats.firstError:
        print(f"First error: {stats.firstError}")
    print()
    print(f"Total time: {_duration(seconds * 1e9)}")
    print(f"Connections: {stats.connections}")
    print(f"Connection throughput: {rate:.0f} connections/s")
    print(
        f"Connect{'+handshake' if options.tls else ''} + one echo: p50 {_duration(p50)}  "
        f"p99 {_duration(p99)}"
    )
    print(
        f"RESULT mode=connect connects_per_s={rate:.0f} errors={stats.errors} "
        f"connections={stats.connections} seconds={seconds:.3f} p50_us={p50 / 1e3:.2f} "
        f"p99_us={p99 / 1e3:.2f} concurrency={options.concurrency} tls={int(options.tls)}"
    )
    sys.stdout.flush()
    return 1 if stats.errors else 0


def _idle(options: argparse.Namespace) -> int:
    context = _context(options)
    soft, hard = raiseOpenFileLimit(options.connections + FILE_MARGIN)
    if soft is not None and soft < options.connections + 16:
        raise CommandError(
            f"{options.connections} connections need more open files than "
            f"the limit allows (soft {soft}, hard {hard})"
        )

    def hold(stats: lg.IdleStats) -> None:
        print(f"HOLDING connections={stats.connections} errors={stats.errors}", flush=True)
        _waitForEndOfInput(options.hold)

    stats = lg.runIdle(
        options.host,
        options.port,
        options.connections,
        options.concurrency,
        hold,
        delimiter=options.delimiter,
        context=context,
        serverHostname=options.sni,
        timeout=options.timeout,
    )
    seconds = max(1, stats.ready - stats.start) / 1e9
    print(f"Errors: {stats.errors}")
    if stats.firstError:
        print(f"First error: {stats.firstError}")
    print(f"Connections held: {stats.connections} (opened in {seconds:.3f} s)")
    print(
        f"RESULT mode=idle connections={stats.connections} errors={stats.errors} "
        f"connect_s={seconds:.3f} tls={int(options.tls)}"
    )
    sys.stdout.flush()
    return 1 if stats.errors else 0


def _waitForEndOfInput(limit: float) -> None:
    """
    Block until standard input ends (or a line is read) or C{limit} seconds
    pass.
    """
    import select

    deadline = time.monotonic() + limit
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        time.sleep(max(0.0, limit))
        return
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
        if ready:
            os.read(fd, 4096)
            return


# -- UDP modes ------------------------------------------------------------------------

_UDP_MODES = ("udp-echo", "udp-multicast")


def _udpDelimiter(text: str) -> bytes:
    try:
        return parseDelimiter(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _udpPort(text: str) -> int:
    try:
        return parsePortNumber(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"port {e}: {text!r}") from None


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of messages a second: {text!r}") from None
    if not 0 < rate < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 messages a second: {text!r}")
    return rate


def _groupAndPort(text: str) -> tuple[str, int]:
    """
    C{239.255.0.1:9000} or C{[ff15::1]:9000}: a multicast group and a port.
    """
    address, colon, number = text.rpartition(":")
    if not colon or not address:
        raise argparse.ArgumentTypeError(
            f"not GROUP:PORT (such as 239.255.0.1:9000 or [ff15::1]:9000): {text!r}"
        )
    bracketed = address.startswith("[") and address.endswith("]")
    if ":" in address and not bracketed:
        raise argparse.ArgumentTypeError(
            f"an IPv6 group goes in brackets, as in [ff15::1]:9000: {text!r}"
        )
    group = address[1:-1] if bracketed else address
    try:
        parsed = ipaddress.ip_address(group)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {group!r}") from None
    if not parsed.is_multicast:
        raise argparse.ArgumentTypeError(
            f"{group} is not a multicast group (IPv4 224.0.0.0/4, IPv6 ff00::/8)"
        )
    return str(parsed), _udpPort(number)


def _fillUdp(modes: Any) -> None:
    echo = modes.add_parser(
        "udp-echo",
        help="UDP datagrams to an echo server; loss counted",
        description="Keeps IN_FLIGHT messages in flight to a UDP echo server for SECONDS, "
        "from one connected socket. Every echo is compared with what was sent (a corrupt "
        "or duplicated echo is an error). A message not echoed within the loss timeout "
        "(--loss-timeout) is lost: counted and replaced at once, never waited for. With a "
        "delimiter (-d), each message ends with it and a datagram holds N of them "
        "(--batch); echoes are split on it.",
    )
    echo.add_argument(
        "host",
        metavar="HOST",
        help="the server's host name or address (of a name's addresses, the first IPv4 one)",
    )
    echo.add_argument("port", metavar="PORT", type=_udpPort, help="the server's UDP port")
    echo.add_argument(
        "-q",
        "--in-flight",
        dest="inflight",
        type=countArgument,
        default=100,
        metavar="IN_FLIGHT",
        help="messages kept in flight (default: 100)",
    )
    echo.add_argument(
        "-T",
        "--seconds",
        type=secondsArgument,
        default=5.0,
        metavar="SECONDS",
        help="how long to send; the last echoes are then awaited up to --loss-timeout (default: 5)",
    )
    echo.add_argument(
        "-s",
        "--size",
        type=countArgument,
        default=32,
        metavar="SIZE",
        help="bytes per message, delimiter included; at least "
        f"{lg.SEQUENCE_DIGITS} more than the delimiter (default: 32)",
    )
    echo.add_argument(
        "-d",
        "--delimiter",
        type=_udpDelimiter,
        default=None,
        metavar="D",
        help=f"{DELIMITER_HELP}; ends every message, so that a datagram can hold several "
        "(default: none, one message per datagram)",
    )
    echo.add_argument(
        "--batch",
        type=countArgument,
        default=1,
        metavar="N",
        help="with -d: messages per datagram, at most IN_FLIGHT (default: 1)",
    )
    echo.add_argument(
        "--loss-timeout",
        type=secondsArgument,
        default=1.0,
        metavar="SECONDS",
        help="a message not echoed within this long is lost (default: 1)",
    )
    echo.set_defaults(func=_udpEcho)

    multicast = modes.add_parser(
        "udp-multicast",
        help="one sender to a multicast group, receivers in this process",
        description="One socket, in a process of its own, sends SIZE-byte datagrams to "
        "GROUP:PORT for SECONDS, at RATE a second or as fast as it can, not waiting for the "
        "receivers; RECEIVERS sockets of this process, all bound to "
        "PORT (SO_REUSEADDR, SO_REUSEPORT) and joined to GROUP, count what arrives. The "
        "TTL (hop limit) is 1 and loopback is on. Reports the rate sent, what was delivered "
        "in all, the loss, and the smallest and largest count of one receiver. Run it where "
        "multicast stays on the machine (a private network namespace: see README).",
    )
    multicast.add_argument(
        "target",
        metavar="GROUP:PORT",
        type=_groupAndPort,
        help="the group and port: 239.255.0.1:9000, [ff15::1]:9000",
    )
    multicast.add_argument(
        "-c",
        "--receivers",
        type=countArgument,
        default=10,
        metavar="RECEIVERS",
        help="receiving sockets (default: 10)",
    )
    multicast.add_argument(
        "-r",
        "--rate",
        type=_rate,
        default=None,
        metavar="RATE",
        help="datagrams a second to send (default: as fast as possible)",
    )
    multicast.add_argument(
        "-T",
        "--seconds",
        type=secondsArgument,
        default=5.0,
        metavar="SECONDS",
        help="how long to send; receivers then drain for up to 1 s (default: 5)",
    )
    multicast.add_argument(
        "-s",
        "--size",
        type=countArgument,
        default=32,
        metavar="SIZE",
        help="bytes per datagram, at least 8 (default: 32)",
    )
    multicast.add_argument(
        "--receive-buffer",
        type=countArgument,
        default=4 << 20,
        metavar="BYTES",
        help="SO_RCVBUF of each receiving socket, which the system caps at "
        "net.core.rmem_max (default: 4194304)",
    )
    multicast.set_defaults(func=_udpMulticast)


def _udpEcho(options: argparse.Namespace) -> int:
    delimiter = options.delimiter
    if options.batch > 1 and delimiter is None:
        raise UsageError("--batch needs -d: several messages in one datagram need a delimiter")
    if options.batch > options.inflight:
        raise UsageError("--batch must be at most -q (a datagram's messages are all in flight)")
    minimum = lg.SEQUENCE_DIGITS + len(delimiter or b"")
    if options.size < minimum:
        raise UsageError(
            f"-s must be at least {minimum}: a message holds its {lg.SEQUENCE_DIGITS}-digit "
            "sequence number" + (" and the delimiter" if delimiter else "")
        )
    if options.size * options.batch > lg.MAX_UDP_PAYLOAD[socket.AF_INET6]:
        raise UsageError("-s times --batch exceeds the largest UDP datagram (65,527 bytes)")
    print(f"Server address: {options.host}")
    print(f"Server UDP port: {options.port}")
    print(f"Messages in flight: {options.inflight}")
    if delimiter is None:
        print(f"Message size: {options.size} (one message per datagram)")
    else:
        print(
            f"Message size: {options.size} (including delimiter {formatDelimiter(delimiter)}), "
            f"{options.batch} per datagram"
        )
    print(f"Seconds: {options.seconds:g} (loss timeout {options.loss_timeout:g} s)")
    print()
    sys.stdout.flush()
    progress = _ProgressLine(None, "echoed")
    try:
        stats = lg.runUdpEcho(
            options.host,
            options.port,
            options.seconds,
            size=options.size,
            inflight=options.inflight,
            delimiter=delimiter,
            batch=options.batch,
            lossTimeout=options.loss_timeout,
            progress=progress.update,
        )
    except OSError as e:
        raise CommandError(f"{options.host} port {options.port}: {e.strerror or e}") from None
    except ValueError as e:  # a batch beyond an IPv4 datagram
        raise UsageError(str(e)) from None
    finally:
        progress.finish()
    window = max(1, stats.windowEnd - stats.start) / 1e9
    rate = stats.windowMessages / window
    print(
        f"Errors: {stats.errors} (corrupt echoes {stats.corrupt}, duplicated echoes "
        f"{stats.duplicates})"
    )
    if stats.firstError:
        print(f"First error: {stats.firstError}")
    print()
    print(f"Messages sent: {stats.sentMessages} in {stats.sentDatagrams} datagrams")
    print(f"Messages echoed: {stats.messages} in {stats.receivedDatagrams} datagrams")
    print(
        f"Messages lost: {stats.lost} ({stats.lossPercent:.3f} %; echoes that came after "
        f"the loss timeout: {stats.late})"
    )
    if stats.sendBufferFull or stats.refused:
        print(
            f"Send buffer full: {stats.sendBufferFull} times; port unreachable: "
            f"{stats.refused} times"
        )
    print(f"Message throughput: {rate:.0f} msg/s (echoes within the {window:.3f} s of sending)")
    histogram = stats.histogram
    p50 = histogram.percentile(0.5)
    p99 = histogram.percentile(0.99)
    if histogram.total:
        queued = " [includes queueing, q>1]" if options.inflight > 1 else ""
        print(f"Per-message round trip{queued}:")
        print(
            f"  p50 {_duration(p50)}  p90 {_duration(histogram.percentile(0.9))}  "
            f"p99 {_duration(p99)}  max {_duration(histogram.maximum)}  (n={histogram.total})"
        )
    print(
        f"RESULT mode=udp-echo msgs_per_s={rate:.0f} lost={stats.lost} "
        f"loss_percent={stats.lossPercent:.3f} errors={stats.errors} messages={stats.messages} "
        f"sent={stats.sentMessages} late={stats.late} seconds={window:.3f} "
        f"p50_us={p50 / 1e3:.2f} p99_us={p99 / 1e3:.2f} q={options.inflight} "
        f"size={options.size} batch={options.batch} refused={stats.refused} "
        f"send_buffer_full={stats.sendBufferFull}"
    )
    sys.stdout.flush()
    if not stats.messages:
        datagram = options.size * options.batch
        why = (
            "the port is closed (ICMP port unreachable)"
            if stats.refused
            else "is a UDP echo server listening there?"
            + (
                f" (datagrams of {datagram} bytes: a server with tcpsc's default bound of "
                f"{DEFAULT_MAX_DATAGRAM} drops them)"
                if datagram > DEFAULT_MAX_DATAGRAM
                else ""
            )
        )
        print(
            f"tcpsc bench udp-echo: no echo in {options.seconds:g} s: {why}",
            file=sys.stderr,
        )
        return 1
    return 1 if stats.errors else 0


def _udpMulticast(options: argparse.Namespace) -> int:
    group, port = options.target
    if options.size > lg.MAX_UDP_PAYLOAD[socket.AF_INET6 if ":" in group else socket.AF_INET]:
        raise UsageError("-s exceeds the largest UDP datagram")
    if options.size < 8:
        raise UsageError("-s must be at least 8: a datagram holds its sequence number")
    raiseOpenFileLimit(options.receivers + FILE_MARGIN)
    shown = f"[{group}]" if ":" in group else group
    print(f"Group: {shown}:{port}")
    print(f"Receivers: {options.receivers}")
    print(f"Rate: {f'{options.rate:g} msg/s' if options.rate else 'as fast as possible'}")
    print(f"Datagram size: {options.size}")
    print(f"Seconds: {options.seconds:g}")
    print()
    sys.stdout.flush()
    progress = _ProgressLine(None, "delivered")
    try:
        stats = lg.runUdpMulticast(
            group,
            port,
            options.receivers,
            options.seconds,
            rate=options.rate,
            size=options.size,
            receiveBuffer=options.receive_buffer,
            progress=progress.update,
        )
    except OSError as e:
        raise CommandError(
            f"multicast to {shown}:{port}: {e.strerror or e} (is there a multicast route, "
            "such as ip route add 224.0.0.0/4 dev lo in a private network namespace?)"
        ) from None
    except RuntimeError as e:
        raise CommandError(str(e)) from None
    finally:
        progress.finish()
    sending = max(1, stats.sendEnd - stats.start) / 1e9
    sendRate = stats.sent / sending
    delivered = stats.delivered / sending
    low = min(stats.perReceiver) if stats.perReceiver else 0
    high = max(stats.perReceiver) if stats.perReceiver else 0
    print(f"Errors: {stats.errors} (malformed datagrams {stats.malformed})")
    if stats.firstError:
        print(f"First error: {stats.firstError}")
    print()
    print(
        f"Sent: {stats.sent} datagrams in {sending:.3f} s -> {sendRate:.0f} msg/s "
        f"(send buffer full: {stats.sendBufferFull} times)"
    )
    print(
        f"Delivered: {stats.delivered} of {stats.expected} ({stats.receivers} receivers) -> "
        f"{delivered:.0f} msg/s in all"
    )
    print(f"Lost: {stats.lost} ({stats.lossPercent:.3f} %)")
    print(f"Per-receiver datagrams: min {low} max {high}")
    print(f"Receive buffer: {stats.receiveBuffer} bytes per socket, as the system reports it")
    print(
        f"RESULT mode=udp-multicast send_rate={sendRate:.0f} sent={stats.sent} "
        f"delivered={stats.delivered} delivered_per_s={delivered:.0f} lost={stats.lost} "
        f"loss_percent={stats.lossPercent:.3f} errors={stats.errors} "
        f"receivers={stats.receivers} min_receiver={low} max_receiver={high} "
        f"rate={options.rate or 0:g} size={options.size} seconds={sending:.3f} "
        f"send_buffer_full={stats.sendBufferFull} receive_buffer={stats.receiveBuffer}"
    )
    sys.stdout.flush()
    if not stats.delivered:
        print(
            f"tcpsc bench udp-multicast: nothing delivered in {options.seconds:g} s: is "
            "multicast routed to this host (loopback on)?",
            file=sys.stderr,
        )
        return 1
    return 1 if stats.errors else 0
