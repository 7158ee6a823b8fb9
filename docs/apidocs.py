"""
Build tcpsc's API reference with pydoctor, from the epytext docstrings:

    pip install pydoctor
    python docs/apidocs.py            # writes apidocs/index.html

Any warning (a docstring pydoctor cannot parse, a link it cannot resolve)
fails the build, exit status 1.  Links to Twisted, Python, cryptography and
pyOpenSSL resolve through docs/external-api.txt, with no network.  The
C{tcpsc} command's package (C{tcpsc._cli}) is left out: their docstrings
are the command's C{--help} text, written for a terminal.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import tomllib
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def writeInventories(directory: Path) -> list[str]:
    """
    Write docs/external-api.txt as Sphinx inventories (version 2), one per
    site, in C{directory}.

    @return: pydoctor's C{--intersphinx-file} arguments, C{PATH::BASE_URL}.
    """
    sites: dict[str, list[str]] = {}
    for line in (HERE / "external-api.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, url = line.split()
            scheme, _, rest = url.partition("://")
            host, _, location = rest.partition("/")
            sites.setdefault(f"{scheme}://{host}", []).append(f"{name} py:obj 1 {location} -\n")
    arguments = []
    for number, (base, entries) in enumerate(sorted(sites.items())):
        header = (
            "# Sphinx inventory version 2\n"
            f"# Project: {base}\n"
            "# Version: 0\n"
            "# The remainder of this file is compressed using zlib.\n"
        )
        path = directory / f"objects-{number}.inv"
        path.write_bytes(header.encode() + zlib.compress("".join(entries).encode()))
        arguments += ["--intersphinx-file", f"{path}::{base}"]
    return arguments


def main(output: str = "apidocs") -> int:
    with open(ROOT / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    with tempfile.TemporaryDirectory() as temporary:
        inventories = writeInventories(Path(temporary))
        # The package without the command's modules (see above).
        package = Path(temporary) / "tcpsc"
        shutil.copytree(
            ROOT / "tcpsc", package, ignore=shutil.ignore_patterns("_cli", "__pycache__")
        )
        status = subprocess.call(
            [
                sys.executable,
                "-m",
                "pydoctor",
                "--project-name",
                "tcpsc",
                "--project-version",
                version,
                "--docformat",
                "epytext",
                "--html-output",
                output,
                *inventories,
                "--project-base-dir",
                temporary,
                "--warnings-as-errors",
                "--quiet",
                str(package),
            ]
        )
    if status != 0:
        print(
            f"apidocs: pydoctor failed (status {status}); see its warnings above", file=sys.stderr
        )
        return 1
    print(f"apidocs: {Path(output).resolve() / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
