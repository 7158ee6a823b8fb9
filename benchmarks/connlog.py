#!/usr/bin/env python
"""
Connection rate of the tcpsc daemon with its connection logs on, against
Twisted's LineOnlyReceiver: server CPU per connection and connections per
second, with C{tcpsc bench connect} as the load.

Servers (each in its own process, pinned to one core; the load pinned to
the other):

  - C{daemon}: C{twistd -n tcpsc} with its default options (a log line for
    each connection established and one for each closed), its log written
    to a file, as twistd writes it;
  - C{daemon-q}: the same with C{--quiet-connections};
  - C{line}: a Twisted C{LineOnlyReceiver} echo that logs nothing;
  - C{line-log}: the same, logging one line per connection with
    C{twisted.logger} to a file, through the observers C{twistd -n} sets
    up (for a fair comparison with the daemon's logs).

Rounds go over every server in turn (interleaved), and each figure is the
median of the rounds.  Server CPU per connection comes from
C{/proc/PID/stat} (user + system time, after a warm-up), which the noise
of a shared machine moves much less than the rate.

    python benchmarks/connlog.py                      # 5 rounds, 20000 connections each
    python benchmarks/connlog.py --rounds 3 -n 10000 --servers daemon,line
    python benchmarks/connlog.py --json

Everything listens on 127.0.0.1; every server is stopped by its process id.
"""

from __future__ import annotations

import argparse
import json
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 30.0

#: A LineOnlyReceiver echo as a twistd application, optionally logging one
#: line per connection: run by C{twistd -n -y}, with the log observers
#: twistd installs, as the daemon's are.
LINE_TAC = """
from twisted.application import internet, service
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

LOG = {log!r}

class Echo(LineOnlyReceiver):
    delimiter = b"\\n"
    MAX_LENGTH = 64 * 1024
    log = Logger()

    def connectionMade(self):
        if LOG:
            self.log.info("Connection from {{peer}} established", peer=self.transport.getPeer().host)

    def lineReceived(self, line):
        self.sendLine(line)

application = service.Application("line")
internet.TCPServer(0, Factory.forProtocol(Echo), interface="127.0.0.1", backlog=4096
    ).setServiceParent(application)

from twisted.internet import reactor
def ready():
    for port in reactor.getReaders():
        host = getattr(port, "getHost", None)
        if host is not None and hasattr(port, "factory"):
            print("Listening on 127.0.0.1:%d" % host().port, flush=True)
reactor.callWhenRunning(ready)
"""

SERVERS = {
    "daemon": "tcpsc daemon, default (2 log lines per connection)",
    "daemon-q": "tcpsc daemon, --quiet-connections",
    "line": "Twisted LineOnlyReceiver (logs nothing)",
    "line-log": "Twisted LineOnlyReceiver, 1 log line per connection",
}


def twistdCommand() -> list[str]:
    """
    The twistd of this Python, as a user runs it.
    """
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def switches(pid: int) -> tuple[int, int]:
    """
    The voluntary context switches of process C{pid} (each a sleep in
    epoll_wait that a wakeup ended, for a reactor) and the involuntary ones
    (preempted by another process).
    """
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.endswith("ctxt_switches") or "ctxt_switches:" in line:
            name, _, value = line.partition(":")
            values[name] = int(value)
    return values["voluntary_ctxt_switches"], values["nonvoluntary_ctxt_switches"]


def cpuSeconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def serving(spec: str, directory: Path, serverCPU: str) -> Iterator[tuple[int, int]]:
    """
    Start server C{spec} pinned to C{serverCPU}; yield its pid and port.
    C{spec} is a name of L{SERVERS}, or C{NAME@TREE}: the daemon of another
    tree of tcpsc (a checkout of an earlier commit, say).
    """
    name, _, tree = spec.partition("@")
    out = directory / f"{name}.out"
    env = dict(os.environ, PYTHONPATH=tree or str(ROOT))
    if name.startswith("daemon"):
        extra = ["--quiet-connections"] if name == "daemon-q" else []
        command = [
            *twistdCommand(),
            "-n",
            "--pidfile=",
            "tcpsc",
            "--port",
            "tcp:0:interface=127.0.0.1",
            *extra,
        ]
    else:
        tac = directory / f"{name}.tac"
        tac.write_text(LINE_TAC.format(log=name == "line-log"))
        command = [*twistdCommand(), "-n", "--pidfile=", "-y", str(tac)]
    if serverCPU and shutil.which("taskset"):
        command = ["taskset", "-c", serverCPU, *command]
    with open(out, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            match = re.search(r"Listening on 127\.0\.0\.1:(\d+)", out.read_text(errors="replace"))
            if match:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{out.read_text(errors='replace')}")
            time.sleep(0.05)
        yield process.pid, int(match.group(1))
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(TIMEOUT)


def bench(port: int, count: int, concurrency: int, loadCPU: str) -> dict[str, str]:
    command = [
        sys.executable,
        "-m",
        "tcpsc",
        "bench",
        "connect",
        "127.0.0.1",
        str(port),
        "-n",
        str(count),
        "-c",
        str(concurrency),
        "-T",
        "120",
    ]
    if loadCPU and shutil.which("taskset"):
        command = ["taskset", "-c", loadCPU, *command]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            fields = dict(part.split("=", 1) for part in line.split()[1:])
            fields["client_cpu"] = str(
                after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            )
            return fields
    raise RuntimeError(f"tcpsc bench connect failed:\n{done.stdout}\n{done.stderr}")


def measure(
    name: str, directory: Path, count: int, concurrency: int, serverCPU: str, loadCPU: str
) -> dict[str, float]:
    with serving(name, directory, serverCPU) as (pid, port):
        bench(port, min(2000, count), concurrency, loadCPU)  # warm-up
        before = cpuSeconds(pid)
        voluntary, preempted = switches(pid)
        fields = bench(port, count, concurrency, loadCPU)
        # The last closes may still be on their way to the server.
        time.sleep(0.3)
        used = cpuSeconds(pid) - before
        voluntaryAfter, preemptedAfter = switches(pid)
    connections = int(fields["connections"])
    return {
        "rate": float(fields["connects_per_s"]),
        "errors": int(fields["errors"]),
        "cpuPerConnection": used / connections * 1e6 if connections else 0.0,
        "cpuShare": used / float(fields["seconds"]),
        # The load's CPU time over its run (its start-up included).
        "clientShare": float(fields["client_cpu"]) / float(fields["seconds"]),
        "p50": float(fields["p50_us"]),
        "wakeups": (voluntaryAfter - voluntary) / connections if connections else 0.0,
        "preempted": (preemptedAfter - preempted) / connections if connections else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-n", "--connections", type=int, default=20000)
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--server-cpu", default="1")
    parser.add_argument("--load-cpu", default="0")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    names = args.servers.split(",")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="tcpsc-connlog-") as temporary:
        for round in range(args.rounds):
            for name in names:
                r = measure(
                    name,
                    Path(temporary),
                    args.connections,
                    args.concurrency,
                    args.server_cpu,
                    args.load_cpu,
                )
                results[name].append(r)
                print(
                    f"[{round + 1}/{args.rounds}] {name:12} {r['rate']:8.0f} conn/s  "
                    f"{r['cpuPerConnection']:6.1f} us CPU/conn  server busy "
                    f"{100 * r['cpuShare']:3.0f} %  client busy {100 * r['clientShare']:3.0f} %  "
                    f"p50 {r['p50'] / 1000:.1f} ms  server wakeups/conn {r['wakeups']:.3f}  "
                    f"preempted/conn {r['preempted']:.3f}  errors {r['errors']}",
                    file=sys.stderr,
                    flush=True,
                )
    summary: dict[str, Any] = {}
    for name in names:
        runs = results[name]
        summary[name] = {
            "rate": statistics.median(r["rate"] for r in runs),
            "cpuPerConnection": statistics.median(r["cpuPerConnection"] for r in runs),
            "cpuShare": statistics.median(r["cpuShare"] for r in runs),
            "errors": sum(r["errors"] for r in runs),
            "runs": runs,
        }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    base = summary.get("line")
    print(
        f"median of {args.rounds} interleaved rounds, {args.connections} connections, "
        f"{args.concurrency} at a time"
    )
    print(
        "| server | connections/s | server CPU per connection | server busy | vs LineOnlyReceiver (rate / CPU) |"
    )
    print("|---|---|---|---|---|")
    for name in names:
        s = summary[name]
        ratio = ""
        if base:
            ratio = (
                f"{s['rate'] / base['rate']:.2f}x / "
                f"{base['cpuPerConnection'] / s['cpuPerConnection']:.2f}x"
            )
        label = SERVERS[name.partition("@")[0]]
        if "@" in name:
            label += f" ({name.partition('@')[2]})"
        print(
            f"| {label} | {s['rate']:,.0f} | {s['cpuPerConnection']:.1f} us | "
            f"{100 * s['cpuShare']:.0f} % | {ratio} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
