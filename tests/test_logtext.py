"""
The daemon's log lines are the lines twistd writes, character for
character: L{tcpsc._logtext.classicLogText} against Twisted's own
formatter, on any event; and the daemon gives twistd the observer twistd
would make for its options (standard output, the log file, or nothing of
its own for syslog and a user's observer).
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.application.service import Application
from twisted.logger import FileLogObserver, ILogObserver, Logger, LogLevel, textFileLogObserver
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from twisted.trial.unittest import SynchronousTestCase

from tcpsc._logtext import classicLogText, daemonLogObserver

#: Twisted's own formatter of twistd's log lines.
_twisted = textFileLogObserver(io.StringIO()).formatEvent


def _outcome(formatter: Any, event: dict[str, Any]) -> tuple[str, object]:
    """
    What C{formatter} makes of C{event}: its text, or the type of what it
    raised (Twisted's own formatter raises for a time datetime refuses).
    """
    try:
        return ("text", formatter(event))
    except Exception as e:
        return ("raised", type(e))


class _Odd:
    """
    A value whose text, repr and format differ, or fail.
    """

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def __str__(self) -> str:
        return "odd-str"

    def __repr__(self) -> str:
        return "Odd(é)"

    def __format__(self, spec: str) -> str:
        if self.fail:
            raise ValueError("cannot format this")
        return f"odd-format[{spec}]"


_values = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.binary(max_size=6),
    st.none(),
    st.booleans(),
    st.builds(_Odd, st.booleans()),
    st.lists(st.integers(), max_size=3),
)
_names = st.sampled_from(["peer", "connectionId", "why", "cn", "missing", "log_level"])
_fields = st.one_of(
    _names.map(lambda n: "{" + n + "}"),
    st.tuples(_names, st.sampled_from(["r", "s", "a"])).map(lambda t: f"{{{t[0]}!{t[1]}}}"),
    st.tuples(_names, st.sampled_from([">8", "^5", "x", "08.3f", ",", "{peer}", ""])).map(
        lambda t: f"{{{t[0]}:{t[1]}}}"
    ),
    st.sampled_from(
        ["{peer.host}", "{peer[0]}", "{peer()}", "{}", "{0}", "{{", "}}", "{", "}", "{peer!z}"]
    ),
    st.text(max_size=8),
    st.just("\n"),
)
_formats = st.lists(_fields, max_size=6).map("".join)
_times = st.one_of(
    st.floats(min_value=0, max_value=4e9),
    st.sampled_from([-1.5, 2e11, float("nan"), float("inf")]),
    st.integers(min_value=0, max_value=2**31).map(lambda s: s + 0.9995),
    st.integers(min_value=0, max_value=2**31).map(lambda s: s + 0.9999999),
    st.integers(min_value=0, max_value=2**31).map(float),
    st.integers(min_value=0, max_value=2**31),
    st.none(),
)


@st.composite
def events(draw: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        name: draw(_values) for name in draw(st.sets(_names.filter(lambda n: n != "missing")))
    }
    event["log_format"] = draw(st.one_of(_formats, st.none(), _formats.map(str.encode)))
    event["log_level"] = draw(st.sampled_from([*LogLevel.iterconstants(), None]))
    if draw(st.booleans()):
        event["log_namespace"] = draw(st.sampled_from(["tcpsc._server.Server", "a#b", ""]))
    if draw(st.integers(0, 5)) == 0:
        event["log_system"] = draw(st.sampled_from(["-", "sys", "x\ny"]))
    if draw(st.integers(0, 5)) == 0:
        event["log_failure"] = Failure(ValueError("boom"))
    if draw(st.integers(0, 5)) == 0:
        event["log_flattened"] = {}
    event["log_time"] = draw(_times)
    return event


class ClassicLogTextTests(SynchronousTestCase):
    """
    L{classicLogText} returns what twistd's formatter returns.
    """

    @settings(max_examples=600, deadline=None)
    @given(st.lists(events(), min_size=1, max_size=4))
    def test_sameAsTwisted(self, batch: list[dict[str, Any]]) -> None:
        """
        Any event, one after the other (the kept time text of one second
        and the kept parsed formats included): the same text, or C{None}
        where Twisted's formatter gives C{None}.
        """
        for event in batch:
            self.assertEqual(_outcome(classicLogText, event), _outcome(_twisted, event))

    def test_connectionLines(self) -> None:
        """
        The daemon's own lines, logged by a L{Logger}, over a run of
        seconds, including the last microseconds of a second.
        """
        events: list[dict[str, Any]] = []
        log = Logger(namespace="tcpsc._server.Server", observer=events.append)
        start = float(int(time.time()))
        for index, offset in enumerate([0.1, 0.5, 0.9994, 0.9999996, 1.0, 1.2, 0.3, 3.7]):
            log.info(
                "Connection {connectionId} from {peer} established{cn}",
                connectionId=index,
                peer="127.0.0.1:4567",
                cn=" (client certificate CN='x')" if index % 2 else "",
                clientCommonName=None,
            )
            events[-1]["log_time"] = start + offset
            log.info(
                "Connection {connectionId} from {peer} closed: {why}",
                connectionId=index,
                peer="[::1]:80",
                why="closed by the peer\nsecond line",
            )
            events[-1]["log_time"] = start + offset
        for event in events:
            text = classicLogText(event)
            self.assertEqual(text, _twisted(event))
        self.assertIn(
            "[tcpsc._server.Server#info] Connection 0 from 127.0.0.1:4567 established\n",
            classicLogText(events[0]) or "",
        )


class DaemonLogObserverTests(SynchronousTestCase):
    """
    L{daemonLogObserver} makes twistd's observer for twistd's options.
    """

    def setUp(self) -> None:
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    def options(self, **given: Any) -> dict[str, Any]:
        options = {"nodaemon": False, "logfile": None, "syslog": False, "logger": None}
        options.update(given)
        return options

    def test_standardOutput(self) -> None:
        """
        C{-n} with no log file, or C{--logfile -}: standard output.
        """
        for options in (self.options(nodaemon=True), self.options(nodaemon=True, logfile="-")):
            out = io.StringIO()
            self.patch(sys, "stdout", out)
            observer = daemonLogObserver(options)
            assert isinstance(observer, FileLogObserver)
            event = {
                "log_format": "hello {x}",
                "x": 1,
                "log_time": 12.5,
                "log_namespace": "n",
                "log_level": LogLevel.info,
            }
            observer(event)
            self.assertEqual(out.getvalue(), _twisted(event))

    def test_logFile(self) -> None:
        """
        A daemon, or C{--logfile}: the log file (C{twistd.log} by default),
        rotated on SIGUSR1.
        """
        path = Path(self.mktemp())
        path.mkdir()
        name = str(path / "tcpsc.log")
        observer = daemonLogObserver(self.options(logfile=name))
        assert isinstance(observer, FileLogObserver)
        self.assertEqual(type(observer._outFile), LogFile)
        self.addCleanup(observer._outFile.close)
        event = {"log_format": "hello", "log_time": 12.5, "log_level": LogLevel.warn}
        observer(event)
        self.assertEqual(Path(name).read_text(), _twisted(event))
        self.assertTrue(callable(signal.getsignal(signal.SIGUSR1)))

    def test_twistdDefault(self) -> None:
        """
        A daemon without C{--logfile} logs to C{twistd.log}, as twistd's.
        """
        path = Path(self.mktemp()).resolve()
        path.mkdir()
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(path)
        observer = daemonLogObserver(self.options())
        assert isinstance(observer, FileLogObserver)
        self.addCleanup(observer._outFile.close)
        self.assertTrue((path / "twistd.log").exists())

    def test_leftToTwistd(self) -> None:
        """
        Syslog, a user's observer, a daemon asked to log to standard output
        (twistd refuses it in its words), options that are not twistd's:
        twistd's own choice.
        """
        self.assertIsNone(daemonLogObserver(self.options(syslog=True)))
        self.assertIsNone(daemonLogObserver(self.options(logger="my.observer")))
        self.assertIsNone(daemonLogObserver(self.options(logfile="-")))
        self.assertIsNone(daemonLogObserver({"logFile": "-", "reactor": None}))

    def test_daemonApplication(self) -> None:
        """
        twistd's options parsed as twistd parses them: the service the
        plugin makes gives its application the observer, which twistd then
        uses instead of making its own; options of a user's observer leave
        it to twistd.
        """
        from twisted.scripts.twistd import ServerOptions

        from tcpsc.tap import makeService

        out = io.StringIO()
        self.patch(sys, "stdout", out)
        config = ServerOptions()
        config.parseOptions(["-n", "--pidfile=", "tcpsc", "--port", "tcp:0:interface=127.0.0.1"])
        service = makeService(config.subOptions)
        application = Application("tcpsc")
        service.setServiceParent(application)
        observer = application.getComponent(ILogObserver)
        assert isinstance(observer, FileLogObserver)
        self.assertIs(observer.formatEvent, classicLogText)

        config = ServerOptions()
        config.parseOptions(
            [
                "-n",
                "--pidfile=",
                "--logger",
                "io.StringIO",
                "tcpsc",
                "--port",
                "tcp:0:interface=127.0.0.1",
            ]
        )
        service = makeService(config.subOptions)
        application = Application("tcpsc")
        service.setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver))
