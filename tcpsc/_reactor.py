"""
The reactor a server or client uses when none is given: the global one,
imported only then, so that a program that passes its own reactor (the
blocking API's private reactor, a test's clock) never installs the default.
"""

from __future__ import annotations

from typing import Any

__all__ = ["defaultReactor"]


def defaultReactor() -> Any:
    """
    Twisted's global reactor, installing the default one if none is yet.
    """
    from twisted.internet import reactor

    return reactor
