"""
C{examples/echo.tac} run as the README shows it, C{twistd -ny
examples/echo.tac}: a real twistd process listening on its fixed port 8081.

So that port 8081 collides with nothing (the host, other tests running at the
same time), twistd runs in a network namespace of its own (C{unshare -n},
with only its loopback interface up), and the peer connects from inside it
(C{nsenter}).  Without the right to make one (not root, no
C{CAP_SYS_ADMIN}), the test is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.test_daemon import ROOT, TIMEOUT, Daemon, _twistd


class Process(Daemon):
    """
    A twistd process (see L{Daemon}) started with exactly C{command}.
    """

    def __init__(
        self,
        test: SynchronousTestCase,
        command: list[str],
        env: dict[str, str] | None = None,
        passFds: tuple[int, ...] = (),
    ) -> None:
        self.directory = Path(test.mktemp())
        self.directory.mkdir()
        self.logPath = self.directory / "twistd.out"
        environ = dict(os.environ)
        environ.pop("NOTIFY_SOCKET", None)
        environ.update(env or {})
        environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), environ.get("PYTHONPATH")) if p
        )
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.directory,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=passFds,
            )
        test.addCleanup(self.kill)


UNSHARE = shutil.which("unshare")
NSENTER = shutil.which("nsenter")
IP = shutil.which("ip")

#: The peer, run inside twistd's network namespace: sends one message,
#: prints the answer, then prints everything until the server closes.
PEER = """
import socket, sys
s = socket.create_connection(("127.0.0.1", 8081), timeout=%(timeout)s)
s.sendall(b"hello from a peer\\n")
answer = b""
while not answer.endswith(b"\\n"):
    chunk = s.recv(100)
    if not chunk:
        break
    answer += chunk
print(repr(answer), flush=True)
rest = b""
while chunk := s.recv(100):
    rest += chunk
print("closed", repr(rest), flush=True)
"""


def _namespacesWork() -> str | None:
    """
    Why a private network namespace cannot be made here, or C{None} if it
    can.
    """
    if not (UNSHARE and NSENTER and IP):
        return "unshare, nsenter or ip is not installed"
    try:
        probe = subprocess.run(
            [UNSHARE, "-n", IP, "link", "set", "lo", "up"], capture_output=True, timeout=TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare -n failed: {e}"
    if probe.returncode != 0:
        return (
            "cannot make a private network namespace (needs root or CAP_SYS_ADMIN): "
            + probe.stderr.decode(errors="replace").strip()
        )
    return None


class EchoTacTests(SynchronousTestCase):
    """
    The example C{.tac} under a real twistd.
    """

    def setUp(self) -> None:
        reason = _namespacesWork()
        if reason is not None:
            raise SkipTest(reason)

    def test_echoAndSigterm(self) -> None:
        """
        twistd serves echo on port 8081 from the C{.tac} file; on SIGTERM it
        closes the peer's connection and exits promptly and cleanly, with
        no traceback.
        """
        tac = str(ROOT / "examples" / "echo.tac")
        shell = 'ip link set lo up && exec "$@"'
        assert UNSHARE is not None and NSENTER is not None
        daemon = Process(self, [UNSHARE, "-n", "sh", "-c", shell, "sh", *_twistd(), "-ny", tac])
        daemon.waitFor(r"Listening on 0\.0\.0\.0:8081 \(fragmented\)")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        peer = subprocess.Popen(
            [
                NSENTER,
                f"--net=/proc/{daemon.process.pid}/ns/net",
                sys.executable,
                "-c",
                PEER % {"timeout": TIMEOUT},
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

        def kill() -> None:
            if peer.poll() is None:
                os.kill(peer.pid, signal.SIGKILL)
            peer.communicate(timeout=TIMEOUT)

        self.addCleanup(kill)
        assert peer.stdout is not None
        self.assertEqual(peer.stdout.readline(), b"b'hello from a peer\\n'\n")
        os.kill(daemon.process.pid, signal.SIGTERM)
        out, err = peer.communicate(timeout=TIMEOUT)
        self.assertEqual(out, b"closed b''\n", err)
        self.assertIn(daemon.exitStatus(), (0, -signal.SIGTERM))
        output = daemon.output
        self.assertNotIn("Traceback", output)
        self.assertIn("Stopped: 1 connection closed, no output dropped", output)
        self.assertIn("Main loop terminated", output)
