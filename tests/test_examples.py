"""
The programs in C{examples/} run as their docstrings say: the blocking
example server and client talk to each other over TCP and TLS (the
certificates made by the examples themselves, with the public
L{tcpsc.writeCertificateSet}), each in its own process, on 127.0.0.1 with a
port the system picks.  (C{examples/upper.py} is served by the real daemon
in L{tests.test_daemon}.)
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
#: Bound of every wait.
TIMEOUT = 30.0


class ExampleTests(SynchronousTestCase):
    def startServer(self, directory: Path, *args: str) -> tuple[subprocess.Popen[bytes], int, Path]:
        """
        Start C{examples/server.py} on a free port; return it, its port
        and its output file.
        """
        output = directory / "server.out"
        with open(output, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, str(EXAMPLES / "server.py"), "--port", "0", *args],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def kill() -> None:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait(TIMEOUT)

        self.addCleanup(kill)
        deadline = time.monotonic() + TIMEOUT
        while (match := re.search(r"Listening on 127\.0\.0\.1:(\d+)", output.read_text())) is None:
            if process.poll() is not None or time.monotonic() > deadline:
                self.fail(f"the example server is not listening:\n{output.read_text()}")
            time.sleep(0.02)
        return process, int(match.group(1)), output

    def client(self, directory: Path, port: int, *args: str) -> str:
        result = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "client.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *args,
            ],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT,
        )
        self.assertEqual(result.returncode, 0, result.stderr.decode())
        return result.stdout.decode()

    def stop(self, server: subprocess.Popen[bytes], output: Path) -> str:
        server.send_signal(signal.SIGTERM)
        self.assertEqual(server.wait(TIMEOUT), 0)
        return output.read_text()

    def test_tcp(self) -> None:
        """
        The client's messages come back from the server.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        server, port, output = self.startServer(directory)
        said = self.client(directory, port, "hello", "world")
        self.assertIn("Reply: hello\nReply: world\n", said)
        log = self.stop(server, output)
        self.assertIn("Message from client 1: hello", log)
        self.assertIn("Stopped", log)

    def test_tls(self) -> None:
        """
        With C{--tls}, the server makes a certificate set in
        C{example-certs} and the client uses it: the server names the
        client's certificate, the client the server's.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        server, port, output = self.startServer(directory, "--tls")
        self.assertTrue((directory / "example-certs" / "client.key").exists())
        said = self.client(directory, port, "--tls", "secret")
        self.assertIn("Server certificate CN: localhost", said)
        self.assertIn("Reply: secret", said)
        log = self.stop(server, output)
        self.assertIn("certificate CN: client", log)

    def test_publicImportsOnly(self) -> None:
        """
        The examples import nothing private of tcpsc.
        """
        for path in EXAMPLES.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tcpsc"):
                    names = [node.module or "", *(alias.name for alias in node.names)]
                    private = [
                        n for n in names if any(part.startswith("_") for part in n.split("."))
                    ]
                    self.assertEqual(private, [], f"{path.name} imports {private}")
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        self.assertFalse(alias.name.startswith("tcpsc._"), path.name)
