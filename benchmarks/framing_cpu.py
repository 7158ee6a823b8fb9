#!/usr/bin/env python
"""
The CPU time the framing takes per message, in this process, with no
sockets: an echo L{tcpsc.MessageProtocol} fed reads the way Twisted
delivers them (at most 64 KiB each), its writes taken by a transport that
only counts them.  What it measures is tcpsc's own work per message,
receiving and answering, without the kernel's and the reactor's, so it
moves little when other work shares the machine.

    python benchmarks/framing_cpu.py                       # this tree
    python benchmarks/framing_cpu.py --before /tmp/main    # and another, interleaved
    python benchmarks/framing_cpu.py --instructions        # counted by valgrind

Shapes:

  small       32-byte messages, 64 KiB reads ending on a message boundary
  small-cut   32-byte messages, reads of 65,000 bytes (messages cut by reads)
  large       65,536-byte messages (delimiter included) in 64 KiB reads
  large-cut   65,536-byte messages in reads of 65,000 bytes
  large-half  32 KiB messages in 64 KiB reads

Each figure is the median of the interleaved repetitions, in nanoseconds of
process CPU time per message; the echo is the suite's (one C{sendMessage}
per message) or, with C{batch}, the daemon's echo application.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SHAPES = {
    # name: (message size with its delimiter, read size, total bytes)
    "small": (32, 65536, 64 * 1024 * 1024),
    "small-cut": (32, 65000, 64 * 1024 * 1024),
    "large": (65536, 65536, 256 * 1024 * 1024),
    "large-cut": (65536, 65000, 256 * 1024 * 1024),
    "large-half": (32768, 65536, 256 * 1024 * 1024),
}

CHILD = r"""
import json, sys, time
from twisted.internet.address import IPv4Address

shape, echoKind, size, readSize, total = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
from tcpsc import MessageProtocol
if echoKind == "batch":
    from tcpsc._apps import Echo as Base
    class Echo(Base):
        maxMessageLength = 64 * 1024 * 1024
else:
    class Echo(MessageProtocol):
        maxMessageLength = 64 * 1024 * 1024
        def messageReceived(self, message):
            self.sendMessage(message)

class Counting:
    disconnecting = False
    connected = True
    written = 0
    def write(self, data):
        self.written += len(data)
    def writeSequence(self, data):
        for part in data:
            self.written += len(part)
    def getPeer(self):
        return IPv4Address("TCP", "127.0.0.1", 1)
    getHost = getPeer
    def pauseProducing(self): pass
    def resumeProducing(self): pass
    def stopProducing(self): pass
    def loseConnection(self): pass
    def abortConnection(self): pass

pattern = bytes(range(33, 33 + 90)) * (size // 90 + 1)
message = pattern[: size - 1] + b"\n"
period = message * max(1, (4 * 1024 * 1024) // size)
reads = [period[i : i + readSize] for i in range(0, len(period) - readSize + 1, readSize)]
protocol = Echo()
transport = Counting()
protocol.makeConnection(transport)
fed = 0
start = time.process_time()
while fed < total:
    for data in reads:
        protocol.dataReceived(data)
    fed += len(reads) * readSize
spent = time.process_time() - start
messages = fed // size
assert transport.written >= fed - 2 * size, (transport.written, fed)
print(json.dumps({"ns": spent / messages * 1e9}))
"""


def once(tree: Path, shape: str, echo: str) -> float:
    size, readSize, total = SHAPES[shape]
    completed = subprocess.run(
        [sys.executable, "-c", CHILD, shape, echo, str(size), str(readSize), str(total)],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=tree,
        timeout=300,
        check=True,
    )
    return float(json.loads(completed.stdout)["ns"])


def instructions(tree: Path, shape: str, echo: str) -> float:
    """
    Instructions per message, counted by valgrind's cachegrind: the count
    of a run of twice as many messages less that of a run of as many,
    divided by that many, so that the start of the process cancels out.
    A count, not a time: it does not move with the machine's load.
    """
    size, readSize, _ = SHAPES[shape]
    counts = []
    # Enough messages for their count to dwarf how much the start varies.
    messages = max(1024, (8 * 1024 * 1024) // size)
    for total in (messages * size, 2 * messages * size):
        valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no"]
        valgrind.append("--cachegrind-out-file=/dev/null")
        child = [sys.executable, "-c", CHILD, shape, echo, str(size), str(readSize), str(total)]
        completed = subprocess.run(
            valgrind + child,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"},
            cwd=tree,
            timeout=900,
            check=True,
        )
        for line in completed.stderr.decode().splitlines():
            if "I   refs:" in line or "I refs:" in line:
                counts.append(int(line.split(":")[1].replace(",", "")))
    return (counts[1] - counts[0]) / messages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="another tcpsc tree, measured interleaved")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--echo", default="message", choices=("message", "batch"))
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per message with valgrind instead of timing (slow, exact)",
    )
    options = parser.parse_args()
    trees = [("this", ROOT)] + ([("before", options.before)] if options.before else [])
    measure, unit = (instructions, "instr") if options.instructions else (once, "ns")
    repeat = 1 if options.instructions else options.repeat
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeat):
        for shape in options.shapes.split(","):
            for name, tree in trees:
                results.setdefault((name, shape), []).append(measure(tree, shape, options.echo))
    for shape in options.shapes.split(","):
        line = f"{shape:11}"
        for name, _ in trees:
            line += f"  {name}: {statistics.median(results[(name, shape)]):10.1f} {unit}/msg"
        if options.before:
            ratio = statistics.median(results[("before", shape)]) / statistics.median(
                results[("this", shape)]
            )
            line += f"  (before / this: {ratio:.2f})"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
