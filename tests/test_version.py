"""
The version, licence and changelog: C{tcpsc.__version__} and C{tcpsc
--version} say the installed version, the licence of the metadata is the
LICENSE file's, and every news fragment is one towncrier gathers.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import metadata, version
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import tcpsc

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


class VersionTests(SynchronousTestCase):
    """
    The version, from the installed metadata.
    """

    def test_attribute(self) -> None:
        """
        C{tcpsc.__version__} is the installed distribution's version, which
        is pyproject.toml's.
        """
        self.assertEqual(tcpsc.__version__, version("tcpsc"))
        self.assertEqual(tcpsc.__version__, _pyproject()["project"]["version"])

    def test_command(self) -> None:
        """
        C{tcpsc --version} prints it and exits 0.
        """
        result = subprocess.run(
            [sys.executable, "-m", "tcpsc", "--version"], capture_output=True, text=True, timeout=60
        )
        self.assertEqual((result.returncode, result.stdout), (0, f"tcpsc {tcpsc.__version__}\n"))


class LicenceTests(SynchronousTestCase):
    """
    The licence: an SPDX expression and its file.
    """

    def test_metadata(self) -> None:
        """
        The metadata says MIT as an SPDX expression, with the LICENSE file,
        whose text is the MIT licence; no licence classifier contradicts it.
        """
        project = _pyproject()["project"]
        self.assertEqual(project["license"], "MIT")
        self.assertEqual(project["license-files"], ["LICENSE"])
        self.assertTrue((ROOT / "LICENSE").read_text().startswith("MIT License\n"))
        self.assertFalse([c for c in project["classifiers"] if c.startswith("License ::")])
        self.assertEqual(metadata("tcpsc")["License-Expression"], "MIT")

    def test_setuptoolsFloor(self) -> None:
        """
        The build requires a setuptools that knows C{license-files} and SPDX
        expressions (77 and later).
        """
        (requirement,) = _pyproject()["build-system"]["requires"]
        match = re.fullmatch(r"setuptools>=(\d+)(\.[\d.]+)?", requirement)
        assert match is not None, requirement
        self.assertGreaterEqual(int(match.group(1)), 77)


class ChangelogTests(SynchronousTestCase):
    """
    The changelog kept with towncrier.
    """

    def test_fragments(self) -> None:
        """
        Every file in newsfragments/ is named C{<issue>.<type>[.<n>].md}
        (or C{+<name>.<type>.md}, towncrier's fragment of no issue) with a
        type towncrier knows, and is not empty; CHANGELOG.md has the line
        towncrier inserts releases after.
        """
        config = _pyproject()["tool"]["towncrier"]
        self.assertEqual(config["directory"], "newsfragments")
        self.assertIn(
            "<!-- towncrier release notes start -->\n", (ROOT / config["filename"]).read_text()
        )
        pattern = re.compile(r"(\d+|\+[\w-]+)\.(feature|bugfix|doc|removal|misc)(\.\d+)?\.md")
        directory = ROOT / "newsfragments"
        fragments = sorted(directory.iterdir()) if directory.exists() else []
        for fragment in fragments:
            self.assertRegex(fragment.name, pattern)
            self.assertTrue(fragment.read_text().strip(), fragment.name)
