"""
The README runs as written: every code block, in the order given (see
L{tests._readme}), with the real C{twistd}, C{tcpsc} and Python.

The README's commands use fixed ports (8081, 8082, 8443) on every address,
which would collide with other tests running at the same time and with
whatever the host runs; so the scenario runs in a network namespace of its
own (C{unshare -n}, its loopback brought up with C{ip link set lo up}),
where nothing else listens.  Without one (not root, no user namespaces, no
C{unshare} or C{ip}) the scenario is skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from . import _readme

#: Bound of the whole scenario.
SCENARIO_TIMEOUT = 300.0


def _namespaceCommand() -> list[str] | str:
    """
    The command prefix that runs a program in a new network namespace with
    its loopback up, or why there is none.
    """
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        return "unshare or ip is not installed"
    try:
        probe = subprocess.run(
            [unshare, "-n", ip, "link", "set", "lo", "up"], capture_output=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "unshare -n did not answer within 30 s"
    if probe.returncode != 0:
        return (
            "no private network namespace (unshare -n needs root or user namespaces): "
            + probe.stderr.decode(errors="replace").strip()
        )
    return [unshare, "-n", "sh", "-c", f'"{ip}" link set lo up && exec "$0" "$@"']


class ReadmeTests(SynchronousTestCase):
    def test_everyBlockHasAStep(self) -> None:
        """
        Each code block of the README is known to the scenario, in order:
        a new or moved snippet fails here until it is given a step.
        """
        found = _readme.blocks()
        self.assertEqual(
            len(found),
            len(_readme.STEPS),
            "the README's code blocks and tests/_readme.py's STEPS differ",
        )
        for block, step in zip(found, _readme.STEPS, strict=True):
            self.assertIn(step.key, block.text, str(block))

    def test_blocks(self) -> None:
        """
        The parser finds fenced blocks with their language and line.
        """
        text = "intro\n\n```python\nprint(1)\n```\n\ntext\n\n```\n$ true\n```\n"
        self.assertEqual(
            [(b.language, b.text, b.line) for b in _readme.blocks(text)],
            [("python", "print(1)\n", 3), ("", "$ true\n", 9)],
        )

    def test_readmeRunsAsWritten(self) -> None:
        """
        Every block runs as written, against the servers the README starts
        before it, and shows what the README says it shows.
        """
        prefix = _namespaceCommand()
        if isinstance(prefix, str):
            raise self.skipTest(prefix)
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        try:
            result = subprocess.run(
                [*prefix, sys.executable, "-m", "tests._readme", str(directory)],
                cwd=_readme.ROOT,
                env=dict(os.environ),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=SCENARIO_TIMEOUT,
            )
        except subprocess.TimeoutExpired as e:
            self.fail(
                f"the README scenario took more than {SCENARIO_TIMEOUT} s:\n"
                f"{(e.stdout or b'').decode(errors='replace')}"
            )
        output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
        self.assertEqual(result.returncode, 0, output)
