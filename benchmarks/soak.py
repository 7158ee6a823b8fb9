#!/usr/bin/env python
"""
Soak: many concurrent connections to the tcpsc daemon, each exchanging
messages for a while, with the daemon's memory and CPU sampled every second.

The script starts a C{twistd tcpsc} echo daemon (allowing the connections
asked for), opens C{--connections} connections to it (C{--batch} at a
time), then lets every connection send a message and wait for its echo once
every C{--interval} seconds (each with its own phase, so that the load is
spread evenly) for C{--seconds}, checks every echo, and closes everything.
Once a second it samples the daemon's resident memory, CPU use and open
file descriptors from C{/proc}.  The result is a Markdown section: the
parameters, the totals (connections, messages, errors, round-trip times),
and the curve as a table, one row a second.

    python benchmarks/soak.py                                   # 10,000 for 60 s
    python benchmarks/soak.py --connections 2000 --seconds 20 --output soak.md
    python benchmarks/soak.py --tls --connections 1000

Where the machine has two or more CPUs, the daemon is pinned to one and this
load to another.  The load uses uvloop when it is installed (C{--no-uvloop}
to use asyncio's own loop).  Everything runs on 127.0.0.1; the daemon is
stopped by its process id at the end.  The exit status is 1 when a
connection failed or an echo was wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from churn import (
    ROOT,
    DaemonProcess,
    MiB,
    Sample,
    certificateSet,
    clientContext,
    daemonTLSArguments,
    sampleProcess,
)


@dataclass
class Row:
    """
    One second of the run.
    """

    sample: Sample
    phase: str
    connections: int
    messages: int
    cpuPercent: float


@dataclass
class SoakState:
    """
    Counters shared by the connections and the sampler.
    """

    phase: str = "starting"
    open: int = 0
    messages: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


@dataclass
class SoakResult:
    connections: int
    seconds: float
    interval: float
    size: int
    tls: bool
    loop: str
    established: int
    rampSeconds: float
    exchangeSeconds: float
    messages: int
    errors: dict[str, int]
    latencies: list[float]
    idle: Sample
    afterRamp: Sample
    end: Sample
    rows: list[Row]
    settled: bool


def _fileLimit(needed: int) -> None:
    """
    Raise this process's open-file limit toward C{needed}.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _sampler(pid: int, state: SoakState, started: float, stop: asyncio.Event) -> None:
    previous = sampleProcess(pid, started)
    previousMessages = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
        try:
            current = sampleProcess(pid, started)
        except FileNotFoundError:
            return
        elapsed = current.at - previous.at
        if elapsed < 0.5:
            continue
        state.rows.append(
            Row(
                current,
                state.phase,
                state.open,
                round((state.messages - previousMessages) / elapsed),
                100 * (current.cpu - previous.cpu) / elapsed,
            )
        )
        previous, previousMessages = current, state.messages


class Connection(asyncio.Protocol):
    """
    One connection of the soak, driven by callbacks (no task or future per
    message, so that the load costs little next to the daemon): once
    started it sends a message, waits for its echo, checks it, and sends
    the next one C{interval} seconds after the one before, until the
    deadline.
    """

    def __init__(self, index: int, state: SoakState, size: int) -> None:
        self.index = index
        self.state = state
        self.size = size
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sequence = 0
        self.message = b""
        self.sentAt = 0.0
        self.clock = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self.interval = 1.0
        self.deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.open += 1

    def start(self, interval: float, deadline: float) -> None:
        self.interval = interval
        self.deadline = deadline
        self.loop.call_later(random.random() * interval, self.send)

    def send(self) -> None:
        if self.finished.done():
            return
        if self.loop.time() >= self.deadline or self.transport is None:
            self.finished.set_result(None)
            return
        self.message = (b"%d:%d:" % (self.index, self.sequence)).ljust(self.size, b"s")
        self.sentAt = self.loop.time()
        self.clock = time.perf_counter()
        self.transport.write(self.message + b"\n")
        self.timer = self.loop.call_later(30, self.fail, "no echo within 30 s")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" not in self.buffer:
            return
        reply, _, self.buffer = self.buffer.partition(b"\n")
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if reply != self.message or self.buffer:
            self.fail("an echo differs from what was sent")
            return
        self.state.latencies.append(time.perf_counter() - self.clock)
        self.state.messages += 1
        self.sequence += 1
        self.loop.call_at(self.sentAt + self.interval, self.send)

    def fail(self, why: str) -> None:
        self.state.error(why)
        if not self.finished.done():
            self.finished.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.open -= 1
        self.transport = None
        if not self.finished.done() and self.deadline:
            self.fail(f"closed by the daemon: {exc}")
        if not self.lost.done():
            self.lost.set_result(None)

    def close(self) -> asyncio.Future[None]:
        if self.transport is not None:
            self.transport.close()
        return self.lost


async def _open(
    index: int, port: int, context: ssl.SSLContext | None, state: SoakState, size: int
) -> Connection | None:
    loop = asyncio.get_running_loop()
    try:
        _, connection = await asyncio.wait_for(
            loop.create_connection(
                lambda: Connection(index, state, size),
                "127.0.0.1",
                port,
                ssl=context,
                server_hostname="localhost" if context else None,
            ),
            30,
        )
    except (OSError, TimeoutError, ssl.SSLError) as e:
        state.error(f"connect: {type(e).__name__}: {e}"[:100])
        return None
    return connection


async def _soak(
    daemon: DaemonProcess,
    connections: int,
    seconds: float,
    interval: float,
    size: int,
    batch: int,
    context: ssl.SSLContext | None,
    loopName: str,
    log: bool,
) -> SoakResult:
    state = SoakState()
    started = time.monotonic()
    idle = daemon.sample(started)
    stopSampling = asyncio.Event()
    sampler = asyncio.create_task(_sampler(daemon.pid, state, started, stopSampling))

    state.phase = "opening"
    opened: list[Connection] = []
    for first in range(0, connections, batch):
        group = await asyncio.gather(
            *(
                _open(i, daemon.port, context, state, size)
                for i in range(first, min(first + batch, connections))
            )
        )
        opened.extend(connection for connection in group if connection is not None)
        if log:
            print(f"\ropen: {len(opened)}/{connections}", end="", file=sys.stderr, flush=True)
    if log:
        print(file=sys.stderr)
    rampSeconds = time.monotonic() - started
    # The daemon may still be accepting the last of them.
    acceptUntil = time.monotonic() + 10
    while (
        daemon.sample().descriptors < idle.descriptors + len(opened)
        and time.monotonic() < acceptUntil
    ):
        await asyncio.sleep(0.05)
    afterRamp = daemon.sample(started)

    state.phase = "exchanging"
    loop = asyncio.get_running_loop()
    exchangeStarted = time.monotonic()
    deadline = loop.time() + seconds
    for connection in opened:
        connection.start(interval, deadline)
    await asyncio.wait_for(asyncio.gather(*(c.finished for c in opened)), seconds + 60)
    exchangeSeconds = time.monotonic() - exchangeStarted

    state.phase = "closing"
    for first in range(0, len(opened), batch):
        group = opened[first : first + batch]
        await asyncio.wait_for(asyncio.gather(*(c.close() for c in group)), 30)
    settleUntil = time.monotonic() + 30
    settled = False
    while time.monotonic() < settleUntil:
        if daemon.sample().descriptors <= idle.descriptors:
            settled = True
            break
        await asyncio.sleep(0.1)
    state.phase = "closed"
    await asyncio.sleep(1.0)
    stopSampling.set()
    await sampler
    end = daemon.sample(started)
    return SoakResult(
        connections,
        seconds,
        interval,
        size,
        context is not None,
        loopName,
        len(opened),
        rampSeconds,
        exchangeSeconds,
        state.messages,
        dict(state.errors),
        state.latencies,
        idle,
        afterRamp,
        end,
        state.rows,
        settled,
    )


def _pin(daemonPid: int) -> str:
    """
    Pin the daemon to the last CPU and this process to the others.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover
        return "no pinning (not supported)"
    if len(cpus) < 2:
        return "no pinning (one CPU)"
    os.sched_setaffinity(daemonPid, {cpus[-1]})
    os.sched_setaffinity(0, set(cpus[:-1]))
    return f"daemon on CPU {cpus[-1]}, load on CPU {','.join(map(str, cpus[:-1]))}"


def run(
    connections: int = 10_000,
    seconds: float = 60.0,
    interval: float = 1.0,
    size: int = 32,
    batch: int = 250,
    tls: bool = False,
    useUvloop: bool = True,
    pin: bool = True,
    log: bool = True,
    backlog: int = 4096,
) -> tuple[SoakResult, str]:
    """
    Start a daemon, soak it, stop it.

    @param backlog: the listen queue of the daemon's port, or 0 for the
        daemon's default.
    @return: the result, and a description of the pinning.
    """
    _fileLimit(connections + 256)
    loopName = "asyncio"
    if useUvloop:
        try:
            import uvloop  # type: ignore[import-not-found]
        except ImportError:
            useUvloop = False
        else:
            loopName = "uvloop"
    with tempfile.TemporaryDirectory(prefix="tcpsc-soak-") as temporary:
        where = Path(temporary)
        # All from one address: no per-peer limit.
        args = [
            "--max-connections",
            str(connections + 100),
            "--max-connections-per-peer",
            "none",
            "--first-byte-timeout",
            "none",
        ]
        context = None
        if tls:
            certificates = certificateSet(where / "certs")
            args += daemonTLSArguments(certificates)
            context = clientContext(certificates)
        port = "tcp:0:interface=127.0.0.1" + (f":backlog={backlog}" if backlog else "")
        with DaemonProcess(where, *args, port=port) as daemon:
            pinning = _pin(daemon.pid) if pin else "no pinning"
            coroutine = _soak(
                daemon, connections, seconds, interval, size, batch, context, loopName, log
            )
            if useUvloop:
                result = uvloop.run(coroutine)
            else:
                result = asyncio.run(coroutine)
    return result, pinning


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _commit() -> str:
    """
    The commit of the checkout, marked when the library has changes not
    committed yet.
    """
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "tcpsc"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (commit or "?") + (" with uncommitted changes to tcpsc/" if changed.strip() else "")


def markdown(result: SoakResult, pinning: str, command: str, every: int = 1) -> str:
    """
    The result as a Markdown section.

    @param every: show every C{every}th second in the table (and each
        second where the phase changes).
    """
    exchanging = [row for row in result.rows if row.phase == "exchanging"]
    perConnection = (result.afterRamp.resident - result.idle.resident) / max(result.established, 1)
    cpu = statistics.mean(row.cpuPercent for row in exchanging) if exchanging else float("nan")
    # Every connection starts within one interval and sends its last message
    # before the deadline: the exchange proper lasts C{seconds}.
    rate = result.messages / result.seconds
    highest = max((row.sample.resident for row in result.rows), default=0)
    # The drift is measured after the first tenth of the exchange (at least
    # its first second), when every connection has sent its first message
    # and its buffers exist.
    settledExchange = exchanging[max(1, len(exchanging) // 10) :] or exchanging
    firstExchange = settledExchange[0].sample.resident if settledExchange else 0
    lastExchange = settledExchange[-1].sample.resident if settledExchange else 0
    driftFrom = settledExchange[0].sample.at if settledExchange else 0.0
    kind = "TLS 1.3 with client certificates" if result.tls else "plain TCP"
    lines = [
        f"## Soak: {result.connections:,} concurrent connections for {result.seconds:g} s",
        "",
        f"Written by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
        f"(commit {_commit()}); Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{pinning}.  The daemon (`twistd tcpsc`, echo, {kind}) is sampled once a second "
        f"from `/proc`; the load is one {result.loop} process: every connection sends a "
        f"{result.size}-byte message and waits for its echo every {result.interval:g} s, "
        "with its own phase.",
        "",
        "| | |",
        "|---|---|",
        f"| connections established | {result.established:,} of {result.connections:,} "
        f"in {result.rampSeconds:.1f} s |",
        f"| messages echoed | {result.messages:,} ({rate:,.0f}/s over {result.seconds:g} s; "
        f"every connection done {result.exchangeSeconds:.1f} s after the start) |",
        f"| errors | {sum(result.errors.values())} |",
        f"| round trip p50 / p99 / max | {_percentile(result.latencies, 0.5) * 1e3:.2f} / "
        f"{_percentile(result.latencies, 0.99) * 1e3:.2f} / "
        f"{max(result.latencies, default=float('nan')) * 1e3:.1f} ms |",
        f"| daemon RSS idle / all open / highest / after closing | "
        f"{result.idle.resident / MiB:.1f} / {result.afterRamp.resident / MiB:.1f} / "
        f"{highest / MiB:.1f} / {result.end.resident / MiB:.1f} MiB |",
        f"| daemon memory per open connection | {perConnection / 1024:.1f} KiB |",
        f"| daemon RSS drift while exchanging (t = {driftFrom:.0f} s to its end) | "
        f"{(lastExchange - firstExchange) / MiB:+.1f} MiB |",
        f"| daemon CPU while exchanging (mean) | {cpu:.0f} % of a core |",
        f"| daemon descriptors idle / all open / after closing | {result.idle.descriptors} / "
        f"{result.afterRamp.descriptors} / {result.end.descriptors}"
        f"{'' if result.settled else ' (not back to idle within 30 s)'} |",
        "",
    ]
    for error, count in sorted(result.errors.items()):
        lines.append(f"- {count} x {error}")
    if result.errors:
        lines.append("")
    if every > 1:
        lines += [
            f"Samples are 1 s apart; the table shows every {every}th second and each "
            "change of phase.",
            "",
        ]
    lines += [
        "| t (s) | phase | open connections | echoes/s | daemon RSS (MiB) | daemon CPU (%) "
        "| daemon fds |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    previous = None
    for index, row in enumerate(result.rows):
        if index % every and row.phase == previous and index != len(result.rows) - 1:
            continue
        previous = row.phase
        lines.append(
            f"| {row.sample.at:.0f} | {row.phase} | {row.connections:,} | "
            f"{row.messages:,} | {row.sample.resident / MiB:.1f} | "
            f"{row.cpuPercent:.0f} | {row.sample.descriptors:,} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="how long the connections exchange messages"
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between the messages of one connection"
    )
    parser.add_argument("--size", type=int, default=32, help="bytes per message")
    parser.add_argument("--batch", type=int, default=250, help="connections opened at once")
    parser.add_argument("--tls", action="store_true", help="TLS 1.3 with client certificates")
    parser.add_argument(
        "--backlog",
        type=int,
        default=4096,
        help="listen queue of the daemon's port (0: the daemon's default, "
        "which an endpoint description leaves at Twisted's 50)",
    )
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--output", type=Path, help="also write the Markdown section here")
    parser.add_argument(
        "--table-every",
        type=int,
        default=1,
        metavar="N",
        help="show every Nth second in the table (the samples stay 1 s apart)",
    )
    args = parser.parse_args(argv)
    if args.connections < 1 or args.seconds <= 0 or args.interval <= 0 or args.size < 1:
        parser.error("--connections, --seconds, --interval and --size must be positive")
    result, pinning = run(
        args.connections,
        args.seconds,
        args.interval,
        args.size,
        args.batch,
        args.tls,
        not args.no_uvloop,
        not args.no_pin,
        backlog=args.backlog,
    )
    command = "python benchmarks/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(result, pinning, command.strip(), max(1, args.table_every))
    print(text)
    if args.output is not None:
        args.output.write_text(text)
    return 1 if result.errors or result.established < result.connections else 0


if __name__ == "__main__":
    sys.exit(main())
