"""
A short run of C{benchmarks/churn.py}: parallel connect/send/check/close
loops against the real daemon, which must answer every one of them and end
the run with as many file descriptors as it started with and the same
memory (within a bound).  The C++ original crashes within seconds of such a
run (its bug B3: ids are file descriptors, and a recycled one crashes it).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


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

    def assertFlat(self, result: object, minimum: int) -> None:
        """
        No errors, at least C{minimum} connections, the descriptors back to
        their count at the start, resident memory within 4 MiB of it at the
        end and within 16 MiB at any sample during the run.
        """
        report = result.report()  # type: ignore[attr-defined]
        self.assertEqual(result.errors, {}, report)  # type: ignore[attr-defined]
        self.assertGreaterEqual(result.connections, minimum, report)  # type: ignore[attr-defined]
        self.assertTrue(result.settled, report)  # type: ignore[attr-defined]
        start, end, highest = result.start, result.end, result.highest  # type: ignore[attr-defined]
        self.assertLessEqual(end.descriptors, start.descriptors, report)
        self.assertLessEqual(end.resident - start.resident, 4 * MiB, report)
        self.assertLessEqual(highest.resident - start.resident, 16 * MiB, report)

    def test_plain(self) -> None:
        """
        8 loops for 10 s over plain TCP (thousands of connections on an
        idle machine; at least 500 asked for): every echo right, no error,
        no descriptor or memory growth.
        """
        churn = loadBenchmark("churn")
        result = churn.run(seconds=10, parallel=8, tls=False, warmup=1.0,
                           directory=Path(self.mktemp()))
        self.assertFlat(result, 500)

    def test_tls(self) -> None:
        """
        4 loops for 4 s over TLS 1.3 with client certificates (each
        connection a full handshake; at least 40 asked for): the same.
        """
        churn = loadBenchmark("churn")
        result = churn.run(seconds=4, parallel=4, tls=True, warmup=0.5,
                           directory=Path(self.mktemp()))
        self.assertFlat(result, 40)
