"""
The dependency floors of C{pyproject.toml} and the pins of C{.ci/floors.txt},
with which C{.ci/run} runs the tests at those floors, are the same versions.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
FLOORS = ROOT / ".ci" / "floors.txt"

#: The packages whose floors are pinned, by normalised name.
PINNED = (
    "twisted",
    "pyopenssl",
    "service-identity",
    "cryptography",
    "prometheus-client",
    "txredisapi",
)

_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;]*?)\s*(?:;.*)?$"
)


def normalisedName(name: str) -> str:
    """
    A distribution name as pip compares it: lower case, runs of C{-_.} as
    one C{-}.
    """
    return re.sub(r"[-_.]+", "-", name).lower()


def sameVersion(a: str, b: str) -> bool:
    """
    Whether two release numbers are equal as versions: C{26.4} is
    C{26.4.0}.
    """
    if re.fullmatch(r"\d+(\.\d+)*", a) and re.fullmatch(r"\d+(\.\d+)*", b):
        left = [int(part) for part in a.split(".")]
        right = [int(part) for part in b.split(".")]
        width = max(len(left), len(right))
        return left + [0] * (width - len(left)) == right + [0] * (width - len(right))
    return a == b


def pyprojectFloors() -> dict[str, str]:
    """
    The C{>=} floor of each dependency of C{pyproject.toml}'s C{[project]},
    and of its C{metrics} and C{cluster} extras.
    """
    with PYPROJECT.open("rb") as f:
        project = tomllib.load(f)["project"]
    extras = project["optional-dependencies"]
    dependencies = [*project["dependencies"], *extras["metrics"], *extras["cluster"]]
    floors = {}
    for requirement in dependencies:
        match = _REQUIREMENT.match(requirement)
        assert match is not None, requirement
        specifiers = [s.strip() for s in match["spec"].split(",") if s.strip()]
        for specifier in specifiers:
            if specifier.startswith(">="):
                floors[normalisedName(match["name"])] = specifier[2:].strip()
    return floors


def floorPins() -> dict[str, str]:
    """
    The C{==} pins of C{.ci/floors.txt}.
    """
    pins = {}
    for line in FLOORS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, separator, version = line.partition("==")
        assert separator, f"not an exact pin in {FLOORS.name}: {line!r}"
        pins[normalisedName(name.strip())] = version.strip()
    return pins


class FloorsTests(TestCase):
    """
    C{pyproject.toml}'s floors and C{.ci/floors.txt}'s pins cannot drift
    apart.
    """

    def test_everyPackageHasAFloorAndAPin(self) -> None:
        """
        Each of the pinned packages has a C{>=} floor in C{pyproject.toml}
        and a pin in C{.ci/floors.txt}, which pins nothing else.
        """
        floors = pyprojectFloors()
        for name in PINNED:
            self.assertIn(name, floors, f"no >= floor for {name} in pyproject.toml")
        self.assertEqual(sorted(floorPins()), sorted(PINNED))

    def test_floorsEqualPins(self) -> None:
        """
        Each floor of C{pyproject.toml} is the version C{.ci/floors.txt}
        pins.
        """
        floors = pyprojectFloors()
        pins = floorPins()
        for name in PINNED:
            self.assertTrue(
                sameVersion(floors[name], pins[name]),
                f"{name}: pyproject.toml says >={floors[name]}, .ci/floors.txt pins =={pins[name]}",
            )

    def test_sameVersion(self) -> None:
        """
        Trailing zeros do not make another version; any other digit does.
        """
        self.assertTrue(sameVersion("26.4", "26.4.0"))
        self.assertTrue(sameVersion("45.0.7", "45.0.7"))
        self.assertFalse(sameVersion("45.0.7", "45.0"))
        self.assertFalse(sameVersion("24.7", "26.4.0"))
        self.assertFalse(sameVersion("25.2.0rc1", "25.2.0"))
