# -*- test-case-name: tests.test_logtext -*-
"""
The daemon's log file, written as twistd writes it, for less CPU.

twistd writes each event with C{textFileLogObserver}: the time, the system
and the event's text, formatted from scratch for every event (the time zone
worked out again, the format string parsed again, each field looked up
through wrappers), then the file flushed.  For a daemon that logs each
connection established and closed, that is most of what a connection
costs.  L{classicLogText} returns exactly the text of Twisted's
C{twisted.logger.formatEventAsClassicLogText} with its RFC 3339 time, character for
character, but keeps what does not change from one event to the next: the
time text of the current second, the system text of each namespace and
level, and each format string parsed.  Any event it does not know how to
format as Twisted would (a traceback, flattened fields, a field name that
is not a plain name, a field that fails to format) is formatted by
Twisted's own function.

L{daemonLogObserver} makes the observer twistd would make for its options
(its log file, rotated on SIGUSR1, or standard output with C{-n}) with this
formatter; the daemon gives it to twistd as its application's log
observer.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from string import Formatter
from typing import Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.logger import (
    timeFormatRFC3339 as _TIME_FORMAT,
)
from twisted.python.logfile import LogFile
from twisted.python.runtime import platformType

__all__ = ["classicLogText", "daemonLogObserver"]

#: Format strings kept parsed at most; beyond them, events are formatted by
#: Twisted's function (format strings made at run time cannot fill memory).
_MAX_FORMATS = 1024

_parse = Formatter().parse

#: format string -> its parts (literal text, field name, conversion,
#: format spec), or None: Twisted's function formats it.
_formats: dict[str, tuple[tuple[str, str | None, str | None, str], ...] | None] = {}

#: (namespace, level) -> "[namespace#level] "
_systems: dict[tuple[str, object], str] = {}

#: The second whose time text is kept, and that text (one value, so that a
#: thread reading it never sees one second's number with another's text).
_lastSecond: tuple[int, str] = (-1, "")


def _parsed(template: str) -> tuple[tuple[str, str | None, str | None, str], ...] | None:
    try:
        parts = tuple(_parse(template))
    except ValueError:
        return None
    result = []
    for literal, name, spec, conversion in parts:
        if name is not None:
            # A plain name only: no attribute, index or call ("()"), no
            # positional field, no nested field in the spec.
            if not name.isidentifier() or (spec and "{" in spec):
                return None
            if conversion not in (None, "s", "r", "a"):
                return None
        result.append((literal, name, conversion, spec or ""))
    return tuple(result)


def _eventText(template: str, event: LogEvent) -> str | None:
    """
    The text of C{event}, as Twisted's C{formatWithCall} makes it, or
    C{None} if it cannot tell.
    """
    parts = _formats.get(template, ())
    if parts == ():
        parts = _parsed(template)
        if len(_formats) < _MAX_FORMATS:
            _formats[template] = parts
    if parts is None:
        return None
    pieces = []
    for literal, name, conversion, spec in parts:
        if literal:
            pieces.append(literal)
        if name is not None:
            value = event[name]
            if conversion is not None:
                value = _CONVERSIONS[conversion](value)
            pieces.append(format(value, spec))
    return "".join(pieces)


_CONVERSIONS: dict[str, Callable[[object], str]] = {"s": str, "r": repr, "a": ascii}


def _timeText(when: Any) -> str:
    global _lastSecond
    # Far from the ends of what datetime takes: Twisted's function says
    # what it says about the rest (infinity, NaN, year 10000).
    if type(when) is float and 0 <= when < 1e11:
        second = int(when)
        # Away from the end of a second, where the datetime's rounding to
        # microseconds could give the next second's text.
        if when - second < 0.999:
            last = _lastSecond
            if last[0] == second:
                return last[1]
            text = formatTime(when, _TIME_FORMAT)
            _lastSecond = (second, text)
            return text
    return formatTime(when, _TIME_FORMAT)


def _systemText(event: LogEvent) -> str | None:
    if "log_system" in event:
        return None
    namespace = event.get("log_namespace", "-")
    level = event.get("log_level")
    if type(namespace) is not str or level is None:
        return None
    key = (namespace, level)
    try:
        return _systems[key]
    except KeyError:
        pass
    except TypeError:
        return None
    name = getattr(level, "name", None)
    if type(name) is not str:
        return None
    text = f"[{namespace}#{name}] "
    if len(_systems) < _MAX_FORMATS:
        _systems[key] = text
    return text


def classicLogText(event: LogEvent) -> str | None:
    """
    The line of C{event} in a twistd log file: what
    C{textFileLogObserver}'s formatter returns for it (Twisted's
    C{twisted.logger.formatEventAsClassicLogText} with RFC 3339 times), as fast as the
    event allows.
    """
    template = event.get("log_format")
    if type(template) is str and "log_failure" not in event and "log_flattened" not in event:
        system = _systemText(event)
        if system is not None:
            try:
                text = _eventText(template, event)
            except Exception:
                # Twisted's function says what failed, in its own words.
                text = None
            if text is not None:
                if not text:
                    return None
                if "\n" in text:
                    text = text.replace("\n", "\n\t")
                return f"{_timeText(event.get('log_time'))} {system}{text}\n"
    return formatEventAsClassicLogText(
        event, formatTime=lambda when: formatTime(when, _TIME_FORMAT)
    )


def daemonLogObserver(config: Any) -> ILogObserver | None:
    """
    The log observer twistd makes for its options C{config} (twistd's
    C{ServerOptions}), writing with L{classicLogText}: standard output with
    C{-n} and no log file (or C{--logfile -}), otherwise the log file
    (C{twistd.log} by default, rotated on SIGUSR1 unless the signal has a
    handler already), as twistd's own C{UnixAppLogger} does.

    @return: the observer; or C{None} where twistd's choice is left to
        twistd: syslog (C{--syslog}), an observer of the user's
        (C{--logger}), a daemon asked to log to standard output (which
        twistd refuses, in its words), a platform other than POSIX.
    """
    if platformType != "posix" or "nodaemon" not in config or "logfile" not in config:
        # Not twistd's options (twist has its own, and its own logging).
        return None
    if config.get("logger") or config.get("syslog"):
        return None
    name = config.get("logfile", "")
    nodaemon = config.get("nodaemon", False)
    out: Any
    if name == "-" or (nodaemon and not name):
        if not nodaemon:
            return None
        out = sys.stdout
    else:
        out = LogFile.fromFullPath(name or "twistd.log")
        if not signal.getsignal(signal.SIGUSR1):

            def rotate(number: int, frame: object) -> None:
                from twisted.internet import reactor

                reactor.callFromThread(out.rotate)  # type: ignore[attr-defined]

            signal.signal(signal.SIGUSR1, rotate)
    return FileLogObserver(out, classicLogText)
