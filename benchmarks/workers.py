#!/usr/bin/env python
"""
Scale-out on one host: the daemon with C{--workers 2} against the daemon in
one process, on scenario (c) of C{benchmarks/run.py} (100 clients, 100
messages in flight each, 32 B, echo), in the same run, the two servers'
loads interleaved.

    python benchmarks/workers.py                    # 5 pairs of runs
    python benchmarks/workers.py --append           # and add the figures
                                                    # to benchmarks/RESULTS.md

The load comes from the C load generator (C{/work/shared/tools/loadgen},
or C{--loadgen DIR}), built with its Makefile into a temporary directory: it
takes far less of a core than a Python client would, and the workers need
both cores of a two-core machine.  Without it (or without a C compiler),
the script says so and uses C{tcpsc bench echo} instead, whose own CPU then
weighs on the result.  The processes are not pinned: two workers and the
load share the machine's cores.  For each run the script reports the
messages per second, the CPU the server's processes used (in cores: user
and system time over the run's wall time, from C{/proc}), and the CPU the
load generator used.

Every server listens on 127.0.0.1 on a free port and is stopped by its
process id; every load is bounded in messages and in time.  Absolute
figures drift on a shared machine: read the ratio, measured in one run.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
LOADGEN = Path("/work/shared/tools/loadgen")
HEADING = "## Scale-out: workers"
#: Bound of every wait for a server to start or stop.
TIMEOUT = 60.0


def twistd() -> list[str]:
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def buildLoadgen(source: Path, into: Path) -> Path | None:
    """
    The load generator built from C{source} in C{into}, or C{None} (and
    why, on standard error) when it cannot be.
    """
    if not (source / "Makefile").exists():
        print(f"no load generator at {source}: using tcpsc bench echo", file=sys.stderr)
        return None
    copy = into / "loadgen"
    shutil.copytree(source, copy)
    for target in ("loadgen", "loadgen-notls"):
        result = subprocess.run(
            ["make", target], cwd=copy, capture_output=True, text=True, timeout=300
        )
        if result.returncode == 0 and (copy / target).exists():
            return copy / target
    print(
        f"the load generator does not build ({result.stderr.strip()[-300:]}): using "
        "tcpsc bench echo",
        file=sys.stderr,
    )
    return None


@dataclass
class Server:
    """
    One daemon: its process, its log, its port.
    """

    name: str
    workers: int
    directory: Path
    process: subprocess.Popen[bytes] = field(init=False)
    port: int = 0

    def start(self) -> None:
        log = self.directory / f"{self.name}.log"
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [environment.get("PYTHONPATH")])]
        )
        arguments = [
            *twistd(),
            "-n",
            "--pidfile=",
            "tcpsc",
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--quiet-connections",
        ]
        if self.workers > 1:
            arguments += ["--workers", str(self.workers)]
        with open(log, "wb") as output:
            self.process = subprocess.Popen(
                arguments,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                env=environment,
            )
        pattern = (
            r"All \d+ workers are listening on 127\.0\.0\.1:(\d+)"
            if self.workers > 1
            else r"Listening on 127\.0\.0\.1:(\d+)"
        )
        deadline = time.monotonic() + TIMEOUT
        while True:
            match = re.search(pattern, log.read_text(errors="replace"))
            if match:
                self.port = int(match.group(1))
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{self.name} did not start:\n{log.read_text()}")
            time.sleep(0.05)

    def pids(self) -> list[int]:
        """
        The daemon's process and its workers.
        """
        pids = [self.process.pid]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == self.process.pid:
                pids.append(int(entry.name))
        return pids

    def cpuSeconds(self) -> float:
        """
        User and system time of the daemon's processes so far.
        """
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT)


@dataclass
class Run:
    server: str
    rate: float
    serverCores: float
    loadCores: float
    errors: int


def load(
    loadgen: Path | None, port: int, clients: int, inFlight: int, messages: int, limit: float
) -> tuple[float, int, float, float]:
    """
    One bounded load of scenario (c)'s shape against C{port}.

    @return: messages per second, errors, wall seconds, and the load
        generator's CPU seconds.
    """
    if loadgen is not None:
        command = [
            str(loadgen),
            "echo",
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
            "-c",
            str(clients),
            "-q",
            str(inFlight),
            "-s",
            "32",
            "-m",
            str(messages),
            "-T",
            str(int(limit)),
        ]
    else:
        command = [
            sys.executable,
            "-m",
            "tcpsc",
            "bench",
            "echo",
            "127.0.0.1",
            str(port),
            "-c",
            str(clients),
            "-q",
            str(inFlight),
            "-s",
            "32",
            "-m",
            str(messages),
            "-T",
            str(int(limit)),
        ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=limit + 30)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    output = result.stdout + result.stderr
    rate = re.search(r"msgs_per_s=([\d.]+)", output)
    errors = re.search(r"errors=(\d+)", output)
    if rate is None or errors is None:
        raise SystemExit(f"no result from {command[0]} (status {result.returncode}):\n{output}")
    return float(rate.group(1)), int(errors.group(1)), wall, cpu


def measure(server: Server, loadgen: Path | None, arguments: argparse.Namespace) -> Run:
    cpuBefore = server.cpuSeconds()
    rate, errors, wall, loadCpu = load(
        loadgen,
        server.port,
        arguments.clients,
        arguments.in_flight,
        arguments.messages,
        arguments.limit,
    )
    serverCpu = server.cpuSeconds() - cpuBefore
    return Run(server.name, rate, serverCpu / wall, loadCpu / wall, errors)


def report(runs: list[Run], loadgenName: str, arguments: argparse.Namespace, command: str) -> str:
    single = [r for r in runs if r.server == "one process"]
    workers = [r for r in runs if r.server != "one process"]
    ratios = [w.rate / s.rate for s, w in zip(single, workers, strict=True)]
    lines = [
        HEADING,
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f} at the end; `{command}`.",
        "",
        f"Scenario (c): {arguments.clients} clients, {arguments.in_flight} messages in flight "
        f"each, 32 B, {arguments.messages:,} messages per run; load from {loadgenName}, "
        "not pinned; the two servers' runs interleaved, one warm-up run each first.",
        "",
        "| server | msgs/s (median) | runs | server CPU (cores) | msgs per server CPU-second "
        "| load generator CPU (cores) | errors |",
        "|---|---|---|---|---|---|---|",
    ]

    def perCpuSecond(group: list[Run]) -> str:
        # A run too short for the server's CPU time to reach one clock
        # tick has none to divide by.
        rates = [r.rate / r.serverCores for r in group if r.serverCores]
        return f"{statistics.median(rates):,.0f}" if rates else "-"

    for name, group in (("one process", single), (f"--workers {arguments.workers}", workers)):
        lines.append(
            f"| {name} | {statistics.median(r.rate for r in group):,.0f} "
            f"| {', '.join(f'{r.rate:,.0f}' for r in group)} "
            f"| {statistics.median(r.serverCores for r in group):.2f} "
            f"| {perCpuSecond(group)} "
            f"| {statistics.median(r.loadCores for r in group):.2f} "
            f"| {sum(r.errors for r in group)} |"
        )
    lines += [
        "",
        f"Ratio `--workers {arguments.workers}` / one process, per pair of runs: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}; median **{statistics.median(ratios):.2f}x** "
        "(target >= 1.5x).",
        "",
        "The ratio is only as good as the cores the servers got: the server CPU column says "
        "how many they used (at most 1 for one process, at most 2 less the load generator's "
        "share for the workers); on a machine that other processes keep busy both are less, "
        "and the messages per server CPU-second say whether the workers lose anything to "
        "being several.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5, help="pairs of runs (default: 5)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument(
        "--messages", type=int, default=2_000_000, help="messages per run (default: 2,000,000)"
    )
    parser.add_argument("--limit", type=float, default=120.0, help="seconds a run may take")
    parser.add_argument("--loadgen", type=Path, default=LOADGEN, help="the load generator's source")
    parser.add_argument("--append", action="store_true", help=f"append to {RESULTS}")
    parser.add_argument("--output", type=Path, help="append to this file instead")
    arguments = parser.parse_args()
    if arguments.workers < 2 or arguments.repeat < 1:
        parser.error("--workers 2 or more, --repeat 1 or more")
    if (os.cpu_count() or 1) < 2:
        print("one core: workers cannot be faster than one process here", file=sys.stderr)
    directory = Path(tempfile.mkdtemp(prefix="tcpsc-workers-bench-"))
    servers: list[Server] = []
    try:
        loadgen = buildLoadgen(arguments.loadgen, directory)
        single = Server("one process", 1, directory)
        workers = Server(f"--workers {arguments.workers}", arguments.workers, directory)
        servers = [single, workers]
        for server in servers:
            server.start()
        warmUp = max(arguments.messages // 10, 1000)
        for server in servers:
            load(loadgen, server.port, arguments.clients, arguments.in_flight, warmUp, 60)
        runs: list[Run] = []
        for repeat in range(arguments.repeat):
            # Alternate which goes first, so that a drift of the machine's
            # load weighs on both.
            for server in servers if repeat % 2 == 0 else servers[::-1]:
                run = measure(server, loadgen, arguments)
                runs.append(run)
                print(
                    f"{run.server}: {run.rate:,.0f} msgs/s, server {run.serverCores:.2f} cores, "
                    f"load {run.loadCores:.2f} cores, errors {run.errors}",
                    flush=True,
                )
    finally:
        for server in servers:
            if hasattr(server, "process"):
                server.stop()
    runs.sort(key=lambda r: r.server != "one process")
    single_ = [r for r in runs if r.server == "one process"]
    workers_ = [r for r in runs if r.server != "one process"]
    ordered = [r for pair in zip(single_, workers_, strict=True) for r in pair]
    command = "python benchmarks/workers.py " + " ".join(sys.argv[1:])
    text = report(ordered, "loadgen (C)" if loadgen else "tcpsc bench echo", arguments, command)
    print(text)
    target = arguments.output or (RESULTS if arguments.append else None)
    if target is not None:
        with open(target, "a") as f:
            f.write("\n" + text)
    shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
