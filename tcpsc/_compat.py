# -*- test-case-name: tests.test_compat -*-
"""
Layer 0: the one place that knows which private names of Twisted and
pyOpenSSL tcpsc relies on, and whether it may rely on them.

A few of tcpsc's fast paths reach into other libraries' private attributes
(a socket transport's buffer, a port's accept loop, pyOpenSSL's cffi
binding).  Private names can change in any release, so they are trusted only
in the releases they were checked against: L{PRIVATE} is decided once, here,
from the installed versions, and every fast path asks it, at the time it
runs, before it touches a private name.  Outside the checked releases each
falls back to the public path (Twisted's own transport, port and TLS
protocol), which is slower and behaves the same.

L{PRIVATE_NAMES} lists every private attribute used, by its owner, so that a
test fails on a release that renamed one instead of a user finding out.
Tests set L{PRIVATE} to C{False} to run the public fallbacks.
"""

from __future__ import annotations

from typing import Any

import OpenSSL
from twisted import version as _twistedVersion

__all__ = ["PRIVATE", "PRIVATE_NAMES", "PYOPENSSL_CHECKED", "TWISTED_CHECKED", "checkedRelease"]

#: The Twisted releases (major versions, inclusive) whose private names
#: tcpsc was checked against.
TWISTED_CHECKED = (24, 26)
#: The same for pyOpenSSL.
PYOPENSSL_CHECKED = (24, 26)


def _major(version: object) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def checkedRelease(twisted: object = None, pyopenssl: object = None) -> bool:
    """
    Whether the installed (or the given) Twisted and pyOpenSSL releases are
    ones whose private names tcpsc was checked against.

    @param twisted: a Twisted major version, or C{None} for the installed one.
    @param pyopenssl: a pyOpenSSL version string, or C{None} for the
        installed one.
    """
    twistedMajor = _major(_twistedVersion.major if twisted is None else twisted)
    pyopensslMajor = _major(OpenSSL.__version__ if pyopenssl is None else pyopenssl)
    if twistedMajor is None or pyopensslMajor is None:
        return False
    low, high = TWISTED_CHECKED
    if not low <= twistedMajor <= high:
        return False
    low, high = PYOPENSSL_CHECKED
    return low <= pyopensslMajor <= high


#: Whether the fast paths may use private names.  Read each time a fast path
#: is chosen, never copied at import, so that tests can turn it off.
PRIVATE: bool = checkedRelease()

#: Every private attribute tcpsc uses: C{(description, owner, names)}, where
#: C{owner} is the class or module object the names are looked up on.
#: C{tests.test_compat} asserts that each exists in the installed releases.
PRIVATE_NAMES: list[tuple[str, Any, tuple[str, ...]]] = []
