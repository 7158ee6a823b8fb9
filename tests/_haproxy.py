"""
A real HAProxy in front of tcpsc, for the tests of the PROXY protocol.

L{HAProxy} writes a configuration (TCP mode, one frontend on a free
loopback port, the given tcpsc ports as its servers with C{send-proxy} or
C{send-proxy-v2}), or takes one as it is, starts C{haproxy -f CFG -db} (in
the foreground, a child of the test) and waits, with a bound, until its
frontend listens; it is stopped by its PID in the test's cleanup (SIGTERM,
then SIGKILL after a bound).  The frontend is found listening in
C{/proc/net/tcp}, not by connecting: a connection would reach a tcpsc
server and take one of its ids.

Where C{haproxy} is not installed, L{requireHAProxy} skips the test, saying
why; with C{TCPSC_REQUIRE_ENGINES=1} in the environment (CI installs it) it
fails instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

#: Where Debian installs it; else the one on C{PATH}.
HAPROXY = (
    "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else shutil.which("haproxy")
)

#: Bound of starting and of stopping HAProxy, in seconds.
TIMEOUT = 30.0


def requireHAProxy() -> str:
    """
    The path of C{haproxy}.

    @raise SkipTest: it is not installed (unless C{TCPSC_REQUIRE_ENGINES=1}).
    @raise AssertionError: it is not installed and C{TCPSC_REQUIRE_ENGINES=1}.
    """
    if HAPROXY is not None:
        return HAPROXY
    why = "haproxy is not installed (Debian package haproxy; /usr/sbin/haproxy)"
    if os.environ.get("TCPSC_REQUIRE_ENGINES") == "1":
        raise AssertionError(f"{why}, and TCPSC_REQUIRE_ENGINES=1 requires it")
    raise SkipTest(why)


def freePort(host: str = "127.0.0.1") -> int:
    """
    A TCP port free on C{host} now (the system's pick).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    """
    Whether a socket listens on C{port}, read from C{/proc/net/tcp*}.
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def configuration(frontend: int, backends: list[int], sendProxy: str = "send-proxy-v2") -> str:
    """
    A configuration of TCP mode on loopback: a frontend on 127.0.0.1:C{frontend}
    and each of C{backends} (ports on 127.0.0.1) as a server that is sent
    the PROXY header (C{send-proxy} for version 1, C{send-proxy-v2}).  No
    health checks: a test's server would see their connections.
    """
    servers = "\n".join(
        f"    server node{i} 127.0.0.1:{port} {sendProxy}" for i, port in enumerate(backends, 1)
    )
    return f"""\
global
    maxconn 1000

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend tcpsc
    bind 127.0.0.1:{frontend}
    default_backend nodes

backend nodes
    balance roundrobin
{servers}
"""


class HAProxy:
    """
    One C{haproxy} process of a test.

    @ivar port: the port of its frontend on 127.0.0.1.
    @ivar output: what it wrote (standard output and error).
    """

    def __init__(
        self,
        test: SynchronousTestCase,
        backends: list[int] | None = None,
        sendProxy: str = "send-proxy-v2",
        *,
        config: str | None = None,
        port: int | None = None,
    ) -> None:
        """
        @param backends: the tcpsc ports to forward to, if C{config} is not
            given.
        @param config: a whole configuration whose frontend listens on
            127.0.0.1:C{port}.
        """
        self._haproxy = requireHAProxy()
        self._test = test
        self.directory = Path(test.mktemp()).resolve()
        self.directory.mkdir(parents=True)
        if config is None:
            assert backends is not None
            self.port = freePort()
            config = configuration(self.port, backends, sendProxy)
        else:
            assert port is not None
            self.port = port
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def output(self) -> str:
        path = self.directory / "haproxy.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> HAProxy:
        """
        Start it and wait until its frontend listens.

        @raise AssertionError: it exited, or did not listen within
            L{TIMEOUT}.
        """
        path = self.directory / "haproxy.cfg"
        path.write_text(self.config)
        with open(self.directory / "haproxy.out", "wb") as out:
            self.process = subprocess.Popen(
                [self._haproxy, "-f", str(path), "-db"],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._test.addCleanup(self.stop)
        deadline = time.monotonic() + TIMEOUT
        while not listening(self.port):
            if self.process.poll() is not None:
                raise AssertionError(
                    f"haproxy exited ({self.process.returncode}) instead of listening on "
                    f"{self.port}:\n{self.output}\nconfiguration:\n{self.config}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"haproxy not listening on {self.port} after {TIMEOUT} s:\n{self.output}"
                )
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """
        SIGTERM, then SIGKILL after L{TIMEOUT}; by its PID.
        """
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(TIMEOUT)
