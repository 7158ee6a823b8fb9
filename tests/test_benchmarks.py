"""
A smoke run of the benchmark suite (C{benchmarks/run.py}): benchmarks are not
tests, but a suite that no longer runs is a broken tool.  The run is the
smallest there is (one short echo scenario and the connection rate, plain
and TLS); no figure it prints is asserted on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[1]


class SuiteSmokeTests(SynchronousTestCase):
    def test_quickRun(self) -> None:
        """
        C{run.py --quick} starts its servers, drives them, stops them and
        writes a report with the echo table, the connection rates and the
        targets it could judge.
        """
        directory = Path(tempfile.mkdtemp(prefix="tcpsc-suite-smoke-"))
        output = directory / "RESULTS.md"
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [environment.get("PYTHONPATH")])]
        )
        result = subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "run.py"),
                "--quick",
                "--only",
                "bg",
                "--servers",
                "tcpsc,tcpsc-tls,tcpsc-metrics",
                "--repeat",
                "1",
                "--seconds",
                "0.2",
                "--output",
                str(output),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=environment,
            cwd=str(directory),
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        report = output.read_text()
        for expected in (
            "## Echo (a-d)",
            "| tcpsc MessageProtocol |",
            "| tcpsc, TLS 1.3 mTLS |",
            "| Twisted LineOnlyReceiver |",
            "## Connection rate (g)",
            "(b) tcpsc >= 1.5x LineOnlyReceiver",
            "(b) tcpsc TLS >= 0.8x plain tcpsc",
            "| tcpsc, Prometheus metrics on |",
            "(b) tcpsc with metrics on >= 0.97x metrics off",
        ):
            self.assertIn(expected, report)
        self.assertNotIn("ERRORS", result.stdout)
