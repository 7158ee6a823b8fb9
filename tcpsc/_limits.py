"""
The process's limit of open files, which a server's connection limit needs.

A library constructor does not change process-wide limits: the programs that
start a server (the daemon, the blocking API's C{start()}, the C{tcpsc}
commands) call L{raiseOpenFileLimit} where they start.
"""

from __future__ import annotations

import resource

from twisted.logger import Logger

_log = Logger()

#: Open files a process needs besides its connections (listening ports, logs,
#: certificates, the interpreter's own): a program that starts a server
#: raises the limit to its connection limit plus this.
FILE_MARGIN = 64


def openFileLimit() -> int | None:
    """
    The soft limit of open files, or C{None} when there is none (or it
    cannot be read).
    """
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def raiseOpenFileLimit(needed: int) -> tuple[int | None, int | None]:
    """
    Raise the soft limit of open files toward C{needed}, up to the hard
    limit, so that C{needed} descriptors can actually be opened.  When the
    hard limit is lower, or the change is refused, a warning says so.

    @param needed: the descriptors the program needs at once (a
        connection limit plus what the process opens besides).
    @return: the soft and hard limits after the attempt (C{None}: no
        limit).
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover
        return None, None
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target <= soft:
            _log.warn(
                "{needed} file descriptors are needed but the hard limit of open files is {hard}",
                needed=needed,
                hard=hard,
            )
        else:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (OSError, ValueError) as e:  # pragma: no cover
                _log.warn(
                    "Could not raise the open-file limit to {target}: {error}",
                    target=target,
                    error=e,
                )
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (
        None if soft == resource.RLIM_INFINITY else soft,
        None if hard == resource.RLIM_INFINITY else hard,
    )
