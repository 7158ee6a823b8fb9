#!/usr/bin/env python
"""
Connection churn against the tcpsc daemon: N parallel loops, each
connecting, sending messages, reading their echoes back, checking them and
closing, again and again for T seconds (or until N connections are made),
against a C{twistd tcpsc} echo daemon this script starts (plain TCP, or TLS
1.3 with client certificates).

It reports connections per second, errors (any exception, and any echo
that differs from what was sent), and the daemon's open file descriptors and
resident memory at the start (after a short warm-up, once the warm-up's
connections are closed) and at the end (once the run's connections are
closed), with the highest values sampled every second in between.  A server
that leaks shows growth between start and end; the C++ original crashes
within seconds of such a run (its bug B3).

    python benchmarks/churn.py                          # 8 loops, 60 s, plain TCP
    python benchmarks/churn.py --tls --seconds 30       # TLS handshakes
    python benchmarks/churn.py --parallel 16 --messages 10 --json
    python benchmarks/churn.py --connections 5000        # a count, not a time

The exit status is 1 when there were errors or the daemon's descriptors
grew.  Everything runs on 127.0.0.1; the daemon is stopped (SIGTERM, then
SIGKILL if needed) by its process id at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024
#: Bound of every single wait (the daemon starting, a reply, a close).
TIMEOUT = 30.0


def twistdCommand() -> list[str]:
    """
    The twistd of this Python, as a user runs it.
    """
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


@dataclass
class Sample:
    """
    One reading of a process: seconds since the start of the run, open file
    descriptors, resident memory in bytes, CPU seconds used so far.
    """

    at: float
    descriptors: int
    resident: int
    cpu: float


def sampleProcess(pid: int, started: float = 0.0) -> Sample:
    """
    Read C{/proc/PID} (Linux).
    """
    resident = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            resident = int(line.split()[1]) * 1024
    # Fields 14 and 15 of /proc/PID/stat (after the command in parentheses):
    # user and system time in clock ticks.
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return Sample(
        round(time.monotonic() - started, 2), len(os.listdir(f"/proc/{pid}/fd")), resident, cpu
    )


class DaemonProcess:
    """
    A C{twistd -n --pidfile= tcpsc} process listening on a free port of
    127.0.0.1, its output in a file of C{directory}.  A context manager:
    leaving it stops the process.
    """

    def __init__(
        self,
        directory: Path,
        *args: str,
        port: str = "tcp:0:interface=127.0.0.1",
        pythonPath: Path = ROOT,
    ) -> None:
        self.logPath = directory / "twistd.out"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(pythonPath), env.get("PYTHONPATH")) if p
        )
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                [*twistdCommand(), "-n", "--pidfile=", "tcpsc", "--port", port, *args],
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self.port = int(self.waitFor(r"Listening on 127\.0\.0\.1:(\d+)").group(1))
        except BaseException:
            self.kill()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        return self.logPath.read_text(errors="replace")

    def waitFor(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """
        Wait until the output matches C{pattern}.

        @raise RuntimeError: the process ended first, or the time ran out.
        """
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.output)
            if match is not None:
                return match
            if self.process.poll() is not None:
                raise RuntimeError(f"twistd exited ({self.process.returncode}):\n{self.output}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"twistd did not log {pattern!r} within {timeout} s")
            time.sleep(0.02)

    def sample(self, started: float = 0.0) -> Sample:
        return sampleProcess(self.pid, started)

    def stop(self, timeout: float = 15.0) -> int | None:
        """
        SIGTERM, then SIGKILL if it has not exited within C{timeout}.

        @return: the exit status.
        """
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(TIMEOUT)

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def certificateSet(directory: Path) -> dict[str, str]:
    """
    Write a CA, a server certificate (localhost, 127.0.0.1) and a client
    certificate into C{directory}.

    @return: their paths: C{ca}, C{server}, C{serverKey}, C{client},
        C{clientKey}.
    """
    from tcpsc._certgen import writeCertificateSet

    paths = writeCertificateSet(directory, clients=("client",))
    return {
        "ca": str(paths["ca.pem"]),
        "server": str(paths["server.pem"]),
        "serverKey": str(paths["server.key"]),
        "client": str(paths["client.pem"]),
        "clientKey": str(paths["client.key"]),
    }


def daemonTLSArguments(certificates: dict[str, str]) -> list[str]:
    return [
        "--tls",
        "--ca",
        certificates["ca"],
        "--cert",
        certificates["server"],
        "--key",
        certificates["serverKey"],
    ]


def clientContext(certificates: dict[str, str]) -> ssl.SSLContext:
    """
    TLS 1.3 with the client certificate, the server verified and its name
    checked.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(certificates["ca"])
    context.load_cert_chain(certificates["client"], certificates["clientKey"])
    return context


def exchange(port: int, payload: bytes, context: ssl.SSLContext | None) -> None:
    """
    One connection: connect, send C{payload}, read it back, close.

    @raise ValueError: the echo differs.
    @raise OSError: anything the network said.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        sock: socket.socket = raw
        if context is not None:
            sock = context.wrap_socket(raw, server_hostname="localhost")
        try:
            sock.sendall(payload)
            received = bytearray()
            while len(received) < len(payload):
                data = sock.recv(65536)
                if not data:
                    raise ValueError(
                        f"closed by the server after {len(received)} of {len(payload)} bytes"
                    )
                received += data
            if received != payload:
                raise ValueError("the echo differs from what was sent")
        finally:
            sock.close()


@dataclass
class Loops:
    """
    C{parallel} threads running L{exchange} until C{stop} is set, or until
    C{limit} exchanges (successful or not) are made between them.
    """

    port: int
    parallel: int
    payload: bytes
    context: ssl.SSLContext | None
    limit: int | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    counts: list[int] = field(default_factory=list)
    errors: list[Counter[str]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    budget: Iterator[int] = field(default_factory=itertools.count)

    def start(self) -> None:
        self.counts = [0] * self.parallel
        self.errors = [Counter() for _ in range(self.parallel)]
        for index in range(self.parallel):
            thread = threading.Thread(
                target=self._loop, args=(index,), daemon=True, name=f"churn-{index}"
            )
            self.threads.append(thread)
            thread.start()

    def _loop(self, index: int) -> None:
        while not self.stop.is_set():
            # next() of an itertools.count is atomic: each exchange takes one.
            if self.limit is not None and next(self.budget) >= self.limit:
                return
            try:
                exchange(self.port, self.payload, self.context)
            except (OSError, ValueError) as e:
                self.errors[index][f"{type(e).__name__}: {e}"[:120]] += 1
            else:
                self.counts[index] += 1

    def finish(self) -> tuple[int, Counter[str]]:
        self.stop.set()
        for thread in self.threads:
            thread.join(TIMEOUT)
        errors: Counter[str] = Counter()
        for counter in self.errors:
            errors.update(counter)
        return sum(self.counts), errors


@dataclass
class ChurnResult:
    """
    What one run measured.  Memory in bytes.
    """

    tls: bool
    parallel: int
    seconds: float
    connections: int
    errors: dict[str, int]
    idleDescriptors: int
    start: Sample
    end: Sample
    highest: Sample
    settled: bool

    @property
    def rate(self) -> float:
        return self.connections / self.seconds if self.seconds else 0.0

    @property
    def errorCount(self) -> int:
        return sum(self.errors.values())

    @property
    def cpuPercent(self) -> float:
        return 100 * (self.end.cpu - self.start.cpu) / max(self.end.at - self.start.at, 1e-9)

    def report(self) -> str:
        kind = "TLS 1.3" if self.tls else "plain TCP"
        lines = [
            f"churn: {kind}, {self.parallel} parallel loops, {self.seconds:.1f} s",
            f"connections: {self.connections} ({self.rate:.0f}/s), errors: {self.errorCount}",
        ]
        lines += [f"  {count} x {error}" for error, count in sorted(self.errors.items())]
        lines += [
            f"server descriptors: {self.start.descriptors} at start, {self.end.descriptors} "
            f"at end (at most {self.highest.descriptors} during; {self.idleDescriptors} idle)",
            f"server RSS: {self.start.resident / MiB:.1f} MiB at start, "
            f"{self.end.resident / MiB:.1f} MiB at end (at most "
            f"{self.highest.resident / MiB:.1f} MiB during)",
            f"server CPU: {self.cpuPercent:.0f} % of a core over the run and its settling",
        ]
        if not self.settled:
            lines.append("the server's descriptors did not return to their idle count")
        return "\n".join(lines)

    def toJSON(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(rate=self.rate, errorCount=self.errorCount, cpuPercent=self.cpuPercent)
        return data


def waitDescriptors(daemon: DaemonProcess, atMost: int, timeout: float) -> bool:
    """
    Wait until the daemon has at most C{atMost} descriptors open.
    """
    deadline = time.monotonic() + timeout
    while daemon.sample().descriptors > atMost:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def churnAgainst(
    daemon: DaemonProcess,
    *,
    seconds: float,
    parallel: int,
    context: ssl.SSLContext | None,
    messages: int = 1,
    size: int = 32,
    warmup: float = 1.0,
    settle: float = 15.0,
    connections: int | None = None,
) -> ChurnResult:
    """
    Run the loops against a running daemon and measure it.

    @param seconds: the length of the run; with C{connections}, its bound.
    @param warmup: seconds of churn before the start is measured; with
        C{connections}, a count of connections instead.
    @param connections: stop after this many connections (successful or
        not) rather than after a time.
    """
    payload = b"".join((b"%d:" % i).ljust(size, b"c") + b"\n" for i in range(messages))
    idle = daemon.sample().descriptors
    if warmup > 0:
        if connections is None:
            loops = Loops(daemon.port, parallel, payload, context)
            loops.start()
            time.sleep(warmup)
        else:
            loops = Loops(daemon.port, parallel, payload, context, limit=int(warmup))
            loops.start()
            for thread in loops.threads:
                thread.join(TIMEOUT)
        loops.finish()
        waitDescriptors(daemon, idle, settle)
    started = time.monotonic()
    start = daemon.sample(started)
    highest = Sample(0, start.descriptors, start.resident, start.cpu)
    loops = Loops(daemon.port, parallel, payload, context, limit=connections)
    loops.start()
    deadline = started + seconds
    while (now := time.monotonic()) < deadline:
        step = min(1.0, deadline - now)
        if connections is None:
            time.sleep(step)
        else:
            alive = [thread for thread in loops.threads if thread.is_alive()]
            if not alive:
                break
            alive[0].join(step)
        current = daemon.sample(started)
        highest.descriptors = max(highest.descriptors, current.descriptors)
        highest.resident = max(highest.resident, current.resident)
    made, errors = loops.finish()
    elapsed = time.monotonic() - started
    settled = waitDescriptors(daemon, start.descriptors, settle)
    end = daemon.sample(started)
    return ChurnResult(
        context is not None,
        parallel,
        elapsed,
        made,
        dict(errors),
        idle,
        start,
        end,
        highest,
        settled,
    )


def run(
    seconds: float = 60.0,
    parallel: int = 8,
    tls: bool = False,
    messages: int = 1,
    size: int = 32,
    warmup: float = 1.0,
    directory: Path | None = None,
    connections: int | None = None,
) -> ChurnResult:
    """
    Start a daemon (in C{directory}, or a temporary one), churn against it,
    stop it.  See L{churnAgainst} for C{seconds}, C{warmup} and
    C{connections}.
    """
    with tempfile.TemporaryDirectory(prefix="tcpsc-churn-") as temporary:
        where = Path(directory or temporary).resolve()
        where.mkdir(parents=True, exist_ok=True)
        args: list[str] = []
        context = None
        if tls:
            certificates = certificateSet(where / "certs")
            args = daemonTLSArguments(certificates)
            context = clientContext(certificates)
        with DaemonProcess(where, *args) as daemon:
            return churnAgainst(
                daemon,
                seconds=seconds,
                parallel=parallel,
                context=context,
                messages=messages,
                size=size,
                warmup=warmup,
                connections=connections,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="length of the run (with --connections, its bound)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=None,
        help="stop after this many connections instead of after --seconds",
    )
    parser.add_argument("--parallel", type=int, default=8, help="connect/send/close loops")
    parser.add_argument("--tls", action="store_true", help="TLS 1.3 with client certificates")
    parser.add_argument("--messages", type=int, default=1, help="messages per connection")
    parser.add_argument("--size", type=int, default=32, help="bytes per message")
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of churn before the start is measured (with "
        "--connections, a count of connections)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = run(
        args.seconds,
        args.parallel,
        args.tls,
        args.messages,
        args.size,
        args.warmup,
        connections=args.connections,
    )
    print(json.dumps(result.toJSON(), indent=2) if args.json else result.report())
    grew = result.end.descriptors > result.start.descriptors
    return 1 if result.errorCount or grew else 0


if __name__ == "__main__":
    sys.exit(main())
