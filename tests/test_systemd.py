"""
systemd: readiness notification (C{Type=notify}, L{tcpsc._systemd.notify})
received on real unix datagram sockets, from the real twistd daemon, and
socket activation (C{--port systemd:domain=INET:index=0}) with a listening
socket handed to twistd as systemd hands it: descriptor 3, C{LISTEN_FDS=1},
C{LISTEN_PID} its process id, C{LISTEN_FDNAMES} the socket unit's name.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import uuid
from pathlib import Path

from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tcpsc._systemd import notify
from tests.test_daemon import LOCAL, TIMEOUT, Peer, _twistd
from tests.test_tac import Process

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "systemd"


def notifySocket(test: SynchronousTestCase, abstract: bool = False) -> tuple[socket.socket, str]:
    """
    A unix datagram socket to receive notifications on, and its
    C{NOTIFY_SOCKET} value: a path, or C{@name} in the abstract namespace.
    """
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    test.addCleanup(receiver.close)
    receiver.settimeout(TIMEOUT)
    if abstract:
        name = f"tcpsc-test-{uuid.uuid4().hex}"
        receiver.bind("\0" + name)
        return receiver, "@" + name
    # Short and absolute: a socket's path has a limit of 107 bytes.
    directory = tempfile.mkdtemp(prefix="tcpsc-notify-")
    test.addCleanup(shutil.rmtree, directory, True)
    path = os.path.join(directory, "notify")
    receiver.bind(path)
    return receiver, path


def fields(datagram: bytes) -> dict[str, str]:
    """
    The C{NAME=value} lines of one notification.
    """
    return dict(line.split("=", 1) for line in datagram.decode().splitlines())


class NotifyTests(SynchronousTestCase):
    """
    L{notify} on its own.
    """

    def test_path(self) -> None:
        """
        A path in C{NOTIFY_SOCKET}: the state arrives as one datagram.
        """
        receiver, address = notifySocket(self)
        self.assertTrue(notify("READY=1\nSTATUS=ok", {"NOTIFY_SOCKET": address}))
        self.assertEqual(receiver.recv(4096), b"READY=1\nSTATUS=ok")

    def test_abstract(self) -> None:
        """
        C{@name}: a socket of the abstract namespace.
        """
        receiver, address = notifySocket(self, abstract=True)
        self.assertTrue(notify("STOPPING=1", {"NOTIFY_SOCKET": address}))
        self.assertEqual(receiver.recv(4096), b"STOPPING=1")

    def test_notSet(self) -> None:
        """
        Without C{NOTIFY_SOCKET} (not run by systemd): nothing is sent, and
        nothing logged.
        """
        with capturedLogs() as events:
            self.assertFalse(notify("READY=1", {}))
            self.assertFalse(notify("READY=1", {"NOTIFY_SOCKET": ""}))
        self.assertEqual(events, [])

    def test_failures(self) -> None:
        """
        An address that is not usable is a warning naming it, never an
        exception: nobody listening, or a kind of address not supported.
        """
        missing = str(Path(self.mktemp()).resolve() / "absent")
        with capturedLogs() as events:
            self.assertFalse(notify("READY=1", {"NOTIFY_SOCKET": missing}))
            self.assertFalse(notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}))
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn] * 2)
        self.assertEqual([e["address"] for e in events], [missing, "vsock:2:1234"])


class DaemonNotifyTests(SynchronousTestCase):
    """
    The real daemon under C{NOTIFY_SOCKET}.
    """

    def test_readyAndStopping(self) -> None:
        """
        The daemon sends C{READY=1} once it listens on every port (a
        client is served at once), and C{STOPPING=1} when SIGTERM stops it;
        it still exits cleanly.
        """
        receiver, address = notifySocket(self)
        daemon = Process(
            self,
            [*_twistd(), "-n", "--pidfile=", "tcpsc", "--port", LOCAL, "--port", LOCAL],
            env={"NOTIFY_SOCKET": address},
        )
        ready = fields(receiver.recv(4096))
        self.assertEqual(ready["READY"], "1")
        ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", ready["STATUS"])]
        self.assertEqual(len(ports), 2)
        for port in ports:
            peer = Peer(self, port)
            peer.send(b"ready?\n")
            self.assertEqual(peer.receive(), b"ready?")
        os.kill(daemon.process.pid, signal.SIGTERM)
        self.assertEqual(fields(receiver.recv(4096))["STOPPING"], "1")
        self.assertIn(daemon.exitStatus(), (0, -signal.SIGTERM))
        self.assertNotIn("Traceback", daemon.output)

    def test_noReadyWhenStartFails(self) -> None:
        """
        A daemon that cannot listen never says it is ready: it exits
        non-zero and nothing was sent.
        """
        receiver, address = notifySocket(self)
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        daemon = Process(
            self,
            [
                *_twistd(),
                "-n",
                "--pidfile=",
                "tcpsc",
                "--port",
                f"tcp:{holder.getsockname()[1]}:interface=127.0.0.1",
            ],
            env={"NOTIFY_SOCKET": address},
        )
        self.assertNotEqual(daemon.exitStatus(), 0)
        receiver.settimeout(0)
        with self.assertRaises(BlockingIOError):
            receiver.recv(4096)


class SocketActivationTests(SynchronousTestCase):
    """
    C{--port systemd:domain=INET:index=0}, the example unit's, with a
    socket handed over as systemd does.
    """

    def test_servesTheInheritedSocket(self) -> None:
        """
        The daemon serves on the inherited listening socket, and tells
        systemd it is ready with that socket's address.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        receiver, address = notifySocket(self)
        # As systemd (227 or later) does: the socket as descriptor 3,
        # LISTEN_PID the process id of the program that is exec'd, and
        # LISTEN_FDNAMES (Twisted ignores descriptors without their names).
        launcher = (
            "import os, sys; "
            f"os.dup2({listener.fileno()}, 3); "
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', "
            "LISTEN_FDNAMES='tcpsc.socket'); "
            "os.execv(sys.argv[1], sys.argv[1:])"
        )
        daemon = Process(
            self,
            [
                sys.executable,
                "-c",
                launcher,
                *_twistd(),
                "-n",
                "--pidfile=",
                "tcpsc",
                "--port",
                "systemd:domain=INET:index=0",
            ],
            env={"NOTIFY_SOCKET": address},
            passFds=(listener.fileno(),),
        )
        ready = fields(receiver.recv(4096))
        self.assertEqual(ready["STATUS"], f"Listening on 127.0.0.1:{port}")
        listener.close()
        peer = Peer(self, port)
        peer.send(b"activated\n")
        self.assertEqual(peer.receive(), b"activated")
        os.kill(daemon.process.pid, signal.SIGTERM)
        self.assertIn(daemon.exitStatus(), (0, -signal.SIGTERM))

    def test_exampleUnitsUseIt(self) -> None:
        """
        The example units run the daemon in the foreground with
        C{Type=notify} on the socket of C{tcpsc.socket}.
        """
        service = (EXAMPLES / "tcpsc.service").read_text()
        socketUnit = (EXAMPLES / "tcpsc.socket").read_text()
        self.assertIn("Type=notify", service)
        self.assertRegex(
            service,
            r"ExecStart=.*twistd --nodaemon --pidfile= tcpsc "
            r"--port systemd:domain=INET:index=0",
        )
        self.assertIn("ListenStream=", socketUnit)
