"""
A short run of C{benchmarks/churn.py}: parallel connect/send/check/close
loops against the real daemon, which must answer every one of them and end
the run with as many file descriptors as it started with and the same
memory (within a bound).

Each run is a count of connections, not a time, so that nothing asserted
depends on the machine's speed.  In CI the counts are small (a few seconds
each); with C{TCPSC_LONG_TESTS=1} in the environment they are ten times
larger.  Longer runs, and runs for a time, are C{benchmarks/churn.py}'s
(C{--seconds}, C{--connections}).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024

#: Set (to 1) in the environment for the long form of the churn tests.
LONG = os.environ.get("TCPSC_LONG_TESTS", "") not in ("", "0")

#: How many times larger the long form's counts are.
SCALE = 10 if LONG else 1

#: Bound of a whole run, which only a stuck daemon reaches: the run then
#: stops short of its count, and the test fails saying so.
BOUND = 300.0


def loadBenchmark(name: str) -> ModuleType:
    """
    Import C{benchmarks/<name>.py} (a script, not a package module).
    """
    qualified = f"tcpsc_benchmarks_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


class ChurnTests(SynchronousTestCase):
    """
    Connection churn against the daemon, plain and TLS.
    """

    def assertFlat(self, result: object, count: int) -> None:
        """
        No errors, all C{count} connections made, the descriptors back to
        their count at the start, resident memory within 4 MiB of it at the
        end and within 16 MiB at any sample during the run.
        """
        report = result.report()  # type: ignore[attr-defined]
        self.assertEqual(result.errors, {}, report)  # type: ignore[attr-defined]
        self.assertEqual(result.connections, count, report)  # type: ignore[attr-defined]
        self.assertTrue(result.settled, report)  # type: ignore[attr-defined]
        start, end, highest = result.start, result.end, result.highest  # type: ignore[attr-defined]
        self.assertLessEqual(end.descriptors, start.descriptors, report)
        self.assertLessEqual(end.resident - start.resident, 4 * MiB, report)
        self.assertLessEqual(highest.resident - start.resident, 16 * MiB, report)

    def test_plain(self) -> None:
        """
        8 loops make 3,000 connections over plain TCP (30,000 in the long
        form), after 100 to warm up: every echo right, no error, no
        descriptor or memory growth.
        """
        churn = loadBenchmark("churn")
        count = 3000 * SCALE
        result = churn.run(
            seconds=BOUND,
            connections=count,
            parallel=8,
            tls=False,
            warmup=100,
            directory=Path(self.mktemp()),
        )
        self.assertFlat(result, count)

    def test_tls(self) -> None:
        """
        4 loops make 300 connections over TLS 1.3 with client certificates,
        each a full handshake (3,000 in the long form), after 20 to warm up:
        the same.
        """
        churn = loadBenchmark("churn")
        count = 300 * SCALE
        result = churn.run(
            seconds=BOUND,
            connections=count,
            parallel=4,
            tls=True,
            warmup=20,
            directory=Path(self.mktemp()),
        )
        self.assertFlat(result, count)
