#!/usr/bin/env python
"""
What counting for metrics costs the framing, measured without the network:
an echo C{MessageProtocol} fed reads of 1,000 messages of 32 B (the shape of
scenario b) in memory, its replies written to a transport that drops them,
by this tree's tcpsc and by another tree's (say main, before the counting),
each in a process of its own, alternately, in one run; CPU time of the
process only, so that other load on the machine weighs less than in the
socket scenarios.

    git archive main | tar -x -C /tmp/main
    python benchmarks/counting.py --before /tmp/main

Prints the messages per CPU second of each tree per round, then the medians
and the best of each (the least disturbed by other load), and their ratios.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_MEASURE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from twisted.internet.testing import StringTransport
from tcpsc import MessageProtocol
import tcpsc
assert tcpsc.__file__.startswith(sys.argv[1]), tcpsc.__file__

class Drop(StringTransport):
    def write(self, data):
        pass

class Echo(MessageProtocol):
    def messageReceived(self, message):
        self.sendMessage(message)

protocol = Echo()
protocol.makeConnection(Drop())
read = (b"x" * 31 + b"\\n") * 1000
reads = int(sys.argv[2])
started = time.process_time()
for _ in range(reads):
    protocol.dataReceived(read)
print(reads * 1000 / (time.process_time() - started))
"""


def measure(tree: Path, reads: int) -> float:
    output = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tree), str(reads)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return float(output.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--before",
        type=Path,
        required=True,
        metavar="TREE",
        help="the other tree (without counting)",
    )
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument(
        "--reads", type=int, default=500, help="reads of 1,000 messages per measurement"
    )
    options = parser.parse_args()
    trees = {"before": options.before.resolve(), "this": ROOT}
    rates: dict[str, list[float]] = {name: [] for name in trees}
    for round in range(options.rounds):
        for name, tree in trees.items():
            rate = measure(tree, options.reads)
            rates[name].append(rate)
            print(
                f"[{round + 1}/{options.rounds}] {name:6} {rate / 1e6:.3f} M msgs per CPU s",
                flush=True,
            )
    for label, pick in (("median", statistics.median), ("best", max)):
        before, this = pick(rates["before"]), pick(rates["this"])
        print(
            f"{label}: before {before / 1e6:.3f} M, this {this / 1e6:.3f} M, "
            f"ratio {this / before:.3f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
