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

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = Path(__file__).resolve().parents[1]


def _runSuite(
    directory: Path, *arguments: str, environment: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """
    Run C{benchmarks/run.py} from C{directory} with the work tree on the
    path, bounded in time.
    """
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [environ.get("PYTHONPATH")])])
    environ.update(environment or {})
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
        cwd=str(directory),
    )


#: The smallest echo run there is: scenario (a), one repetition, tcpsc and
#: its LineOnlyReceiver baseline.
_TINY = ("--quick", "--only", "a", "--servers", "tcpsc", "--repeat", "1", "--seconds", "0.1")


class IndependentClientTests(SynchronousTestCase):
    """
    The suite runs the C load generator beside C{tcpsc bench} on a-d when
    it can build it, and says so when it cannot.
    """

    def test_fallbackWithoutLoadgen(self) -> None:
        """
        With the load generator's source missing (C{TCPSC_LOADGEN} pointing
        at a directory without it), the suite says why in its output and in
        the report, and still measures with C{tcpsc bench}.
        """
        directory = Path(tempfile.mkdtemp(prefix="tcpsc-suite-noloadgen-"))
        missing = directory / "no-loadgen-here"
        output = directory / "RESULTS.md"
        result = _runSuite(
            directory, *_TINY, "--output", str(output), environment={"TCPSC_LOADGEN": str(missing)}
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(
            f"C load generator unavailable: no C load generator source at {missing}",
            result.stdout,
        )
        self.assertIn("a-d run with tcpsc bench alone", result.stdout)
        self.assertNotIn("C loadgen", result.stdout)
        report = output.read_text()
        self.assertIn("| tcpsc MessageProtocol |", report)
        self.assertIn(
            f"The C load generator was not run: no C load generator source at {missing}", report
        )

    def test_sideBySide(self) -> None:
        """
        With the load generator built, every a-d run prints both clients'
        figures and their ratio, and the report has the cross-check table
        with both rates of each server.
        """
        sys.path.insert(0, str(ROOT / "benchmarks"))
        try:
            import run  # type: ignore[import-not-found]
        finally:
            sys.path.remove(str(ROOT / "benchmarks"))
        source = Path(os.environ.get("TCPSC_LOADGEN") or run.LOADGEN_SOURCE)
        built, why = run.buildLoadgen(source, lambda text: None)
        if built is None:
            raise SkipTest(f"the C load generator cannot be built here: {why}")
        directory = Path(tempfile.mkdtemp(prefix="tcpsc-suite-loadgen-"))
        output = directory / "RESULTS.md"
        result = _runSuite(directory, *_TINY, "--loadgen", str(source), "--output", str(output))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(f"C load generator: {built}", result.stdout)
        pairs = [line for line in result.stdout.splitlines() if " a: tcpsc bench " in line]
        # One line per server (tcpsc and the LineOnlyReceiver baseline).
        self.assertEqual(len(pairs), 2, result.stdout)
        for line in pairs:
            self.assertRegex(line, r"tcpsc bench .* msg/s.* \| C loadgen .* msg/s.* \| bench/C ")
        self.assertNotIn("ERRORS", result.stdout)
        report = output.read_text()
        self.assertIn("## Cross-check (a-d): tcpsc bench beside the C load generator", report)
        self.assertIn("Server CPU time per message", report)
        for label in ("tcpsc MessageProtocol", "Twisted LineOnlyReceiver"):
            row = next(
                line
                for line in report.split("## Cross-check")[1].splitlines()
                if line.startswith(f"| {label} |")
            )
            self.assertRegex(row, r"\| [0-9.]+( [kM])? \([0-9.]+x\) / [0-9.]+( [kM])? \([0-9.]+x\)")


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
