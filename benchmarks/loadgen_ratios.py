#!/usr/bin/env python
"""
Echo ratios with the independent C load generator (C{loadgen}, from the
shared tools; build it with C{make}): scenarios b, c and d of the suite on
the servers of C{benchmarks/servers}, the server pinned to one core and the
load to the other, the servers interleaved in every repetition, medians
printed with each server's ratio to a baseline measured in the same run.

Beside the rate, it reads the server's CPU time (user + system, from
C{/proc}) over each run and prints the server CPU per message: on a
machine shared with other work that figure moves much less than the rate.

    python benchmarks/loadgen_ratios.py --loadgen /path/to/loadgen \\
        --servers tcpsc,line,raw --only bcd --repeat 5

C{--before TREE} runs the tcpsc echo of another tcpsc tree (say C{git
archive} of the commit before a change, unpacked) as C{tcpsc-before} (and
the servers C{--before-servers} names, each as C{KEY-before}), so a change
is measured against its parent in the same run.  Every load is
bounded in messages and time; servers listen on 127.0.0.1 and are stopped
by their process ids.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: key: (script, arguments)
SERVERS = {
    "tcpsc": ("tcpsc_echo.py", ()),
    "tcpsc-batch": ("tcpsc_echo.py", ("--batch",)),
    "blocking": ("tcpsc_blocking_echo.py", ()),
    "line": ("twisted_line_echo.py", ()),
    "raw": ("twisted_raw_echo.py", ()),
}

#: key: (clients, in flight per client, message size with its delimiter,
#: messages per second of run expected at most, fewest messages)
SCENARIOS = {
    "b": (1, 1000, 32, 3_000_000, 200_000),
    "c": (100, 100, 32, 3_000_000, 200_000),
    "d": (1, 10, 65536, 40_000, 4_000),
}


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU time of process C{pid} so far.
    """
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(root: Path, key: str, core: int) -> tuple[subprocess.Popen[bytes], int]:
    script, args = SERVERS[key.removesuffix("-before")]
    process = subprocess.Popen(
        [sys.executable, str(root / "benchmarks" / "servers" / script), "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(root)},
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),
    )
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    line = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        if selector.select(max(0.0, deadline - time.monotonic())):
            byte = process.stdout.read1(1)  # type: ignore[attr-defined]
            if not byte:
                break
            line += byte
    selector.close()
    if not line.startswith(b"READY "):
        stop(process)
        raise RuntimeError(f"{key} did not start: {line!r}")
    return process, int(line.split()[1])


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def load(loadgen: str, port: int, scenario: str, messages: int, core: int) -> dict[str, str]:
    clients, inflight, size, _, _ = SCENARIOS[scenario]
    command = [
        loadgen, "echo", "-H", "127.0.0.1", "-p", str(port), "-c", str(clients),
        "-q", str(inflight), "-s", str(size), "-m", str(messages), "-T", "60",
    ]  # fmt: skip
    completed = subprocess.run(
        command,
        capture_output=True,
        timeout=90,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),
    )
    for line in reversed(completed.stdout.decode(errors="replace").splitlines()):
        if line.startswith("RESULT "):
            return dict(w.split("=", 1) for w in line.split()[1:] if "=" in w)
    return {"errors": "1"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loadgen", required=True)
    parser.add_argument("--servers", default="tcpsc,line,raw")
    parser.add_argument("--only", default="bcd")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--baseline", default="line", help="server the ratios are to")
    parser.add_argument("--before", type=Path, help="another tcpsc tree, run as tcpsc-before")
    parser.add_argument(
        "--before-servers", default="tcpsc", help="servers of that tree, comma-separated"
    )
    options = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    serverCore, loadCore = (cores[-1], cores[0]) if len(cores) > 1 else (cores[0], cores[0])
    keys = options.servers.split(",")
    if options.before:
        keys += [f"{key}-before" for key in options.before_servers.split(",")]
    rates: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    counts: dict[str, int] = {}
    for repetition in range(options.repeat):
        for key in keys:
            root = options.before if key.endswith("-before") else ROOT
            process, port = start(root, key, serverCore)
            try:
                for scenario in options.only:
                    _, _, _, fastest, fewest = SCENARIOS[scenario]
                    if scenario not in counts:
                        pilot = load(options.loadgen, port, scenario, fewest, loadCore)
                        rate = float(pilot.get("xfer_msgs_per_s", "0"))
                        counts[scenario] = int(
                            max(fewest, min(fastest * options.seconds, rate * options.seconds))
                        )
                    before = cpuSeconds(process.pid)
                    fields = load(options.loadgen, port, scenario, counts[scenario], loadCore)
                    used = cpuSeconds(process.pid) - before
                    if fields.get("errors") != "0":
                        print(f"  {key} {scenario}: ERRORS {fields}", flush=True)
                        continue
                    rate = float(fields["xfer_msgs_per_s"])
                    perMessage = used / int(fields["messages"]) * 1e6
                    rates.setdefault((key, scenario), []).append(rate)
                    cpu.setdefault((key, scenario), []).append(perMessage)
                    print(
                        f"  [{repetition + 1}/{options.repeat}] {key:14} {scenario}: "
                        f"{rate:12,.0f} msgs/s  {perMessage:7.3f} us CPU/msg",
                        flush=True,
                    )
            finally:
                stop(process)
    print()
    print(f"medians of {options.repeat} interleaved runs; ratios to {options.baseline}")
    for scenario in options.only:
        base = rates.get((options.baseline, scenario))
        for key in keys:
            values = rates.get((key, scenario))
            if not values:
                continue
            rate = statistics.median(values)
            ratio = rate / statistics.median(base) if base else float("nan")
            perRun = (
                " ".join(f"{v / b:.2f}" for v, b in zip(values, base, strict=False)) if base else ""
            )
            print(
                f"{scenario} {key:14} {rate:12,.0f} msgs/s  x{ratio:5.2f}  "
                f"CPU {statistics.median(cpu[(key, scenario)]):7.3f} us/msg  "
                f"(per-run ratios {perRun})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
