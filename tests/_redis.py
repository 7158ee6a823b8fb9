"""
A real C{redis-server} for the cluster tests: L{RedisServer} starts one as a
child process on a free loopback port, with no persistence (C{--save ''},
C{--appendonly no}) and a temporary directory of its own, waits until it
answers C{PING} (bounded), and stops it by its PID.

Where C{redis-server} or txredisapi is missing, L{redisUnavailable} says
why and the tests skip with it; with C{TCPSC_REQUIRE_ENGINES=1} in the
environment (CI, which installs both) they fail with it instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, TestCase

#: Bound of the start (until PING answers) and of the stop, in seconds.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def redisUnavailable() -> str | None:
    """
    Why the cluster tests cannot run here, or C{None}.
    """
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    try:
        import txredisapi  # noqa: F401
    except ImportError:
        return 'txredisapi is not installed (pip install "tcpsc[cluster]")'
    return None


def requireRedis() -> None:
    """
    Skip the calling test if Redis cannot run here; fail instead with
    C{TCPSC_REQUIRE_ENGINES=1}.
    """
    why = redisUnavailable()
    if why is None:
        return
    if os.environ.get("TCPSC_REQUIRE_ENGINES") == "1":
        raise AssertionError(f"TCPSC_REQUIRE_ENGINES=1 but {why}")
    raise SkipTest(why)


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """
    One C{redis-server} on 127.0.0.1.

    @ivar port: its port.
    @ivar url: C{redis://127.0.0.1:PORT/0}.
    """

    def __init__(self, testCase: TestCase, *extra: str) -> None:
        requireRedis()
        self.directory = Path(tempfile.mkdtemp(prefix="tcpsc-redis-"))
        testCase.addCleanup(shutil.rmtree, self.directory, True)
        self.port = freePort()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = self.directory / "redis.log"
        self.extra = extra
        testCase.addCleanup(self.stop)
        self.start()

    def start(self) -> None:
        """
        Start it (again, after L{stop}: on the same port, empty), and wait
        until it answers C{PING}.
        """
        extra = self.extra
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.log),
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if self.command("PING") == "PONG":
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise AssertionError(f"redis-server did not answer PING: {log[-2000:]}")
            time.sleep(0.02)

    def command(self, *args: str | int | bytes, timeout: float = 5.0) -> object:
        """
        Run one command on a connection of its own (blocking, bounded) and
        return its reply: str, int, None, list, or an exception for an
        error reply.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            out = b"*%d\r\n" % len(args)
            for arg in args:
                raw = arg if isinstance(arg, bytes) else str(arg).encode()
                out += b"$%d\r\n%s\r\n" % (len(raw), raw)
            s.sendall(out)
            reader = s.makefile("rb")
            return _readReply(reader)

    def stop(self) -> None:
        """
        Stop it by its PID: SIGTERM, then SIGKILL after a bound.
        """
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)


def _readReply(reader: object) -> object:
    line = reader.readline()  # type: ignore[attr-defined]
    if not line:
        raise OSError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        length = int(rest)
        if length < 0:
            return None
        data = reader.read(length + 2)  # type: ignore[attr-defined]
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        count = int(rest)
        if count < 0:
            return None
        return [_readReply(reader) for _ in range(count)]
    raise OSError(f"unexpected reply {line!r}")
