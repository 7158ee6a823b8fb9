"""
Giving memory back to the system after a burst.

CPython frees the buffers of closed connections to the C allocator, and
glibc's allocator keeps most of what was freed in the middle of its heap,
so a process stays at its high-water mark after a burst of connections
(thousands of aborted TLS handshakes, a flood of large messages).
C{malloc_trim} returns the free pages to the system, cheaply enough to call
after every burst.  Where there is no glibc (musl, macOS, Windows), nothing
is done.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any

__all__ = ["canReleaseMemory", "releaseFreeMemory"]


@functools.cache
def _mallocTrim() -> Any:
    """
    glibc's C{malloc_trim}, or C{None} where there is none.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def canReleaseMemory() -> bool:
    """
    Whether L{releaseFreeMemory} can do anything here.
    """
    return _mallocTrim() is not None


def releaseFreeMemory() -> bool:
    """
    Return the allocator's free pages to the system.

    @return: whether it could be tried (glibc); the pages it returned are
        not reported.
    """
    trim = _mallocTrim()
    if trim is None:
        return False
    trim(0)
    return True
