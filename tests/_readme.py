"""
The README's code blocks, run as written, in the order given.

C{python -m tests._readme DIRECTORY} runs the whole README in DIRECTORY (a
new, empty directory: C{tcpsc certs certs} writes there, and C{examples} is
linked there so that "from the root of the checkout" holds) and exits 0, or
prints what failed and exits 1.  The README's commands use fixed ports (8081,
8443, ...) and listen on every address, so L{tests.test_readme} runs this in
a private network namespace of its own, where nothing else listens.

Each block of the README is matched, by position, with a step of L{STEPS}
that says what kind of block it is (a server to start, a command to run, a
transcript of commands and their output, a program); the step runs the
block's own text.  A README with a block more or less than L{STEPS} fails,
so that a new snippet cannot go untested.

Every process started here is stopped by its PID before this exits; every
wait is bounded by L{TIMEOUT}.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: Bound of every wait for a server or a command.
TIMEOUT = 30.0

_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


@dataclass
class Block:
    language: str
    text: str
    line: int

    def __str__(self) -> str:
        return f"README.md line {self.line}: {self.text.splitlines()[0]!r}"


def blocks(text: str | None = None) -> list[Block]:
    """
    The fenced code blocks of the README, in order.
    """
    if text is None:
        text = README.read_text()
    return [
        Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1)
        for m in _BLOCK.finditer(text)
    ]


class Failed(Exception):
    pass


@dataclass
class Step:
    """
    What one README block is and how to check it.

    @ivar key: text the block must contain (so that steps and blocks cannot
        slip out of line unnoticed).
    @ivar kind: C{skip}, C{server}, C{run}, C{transcript}, C{log},
        C{module}, C{program}, C{python}, C{trial}.
    @ivar port: the port a server listens on.
    @ivar udp: a UDP port the server listens on too.
    @ivar typed: lines a person types into an interactive command.
    @ivar expect: lines the output must contain, in order.
    @ivar status: the exit status a command must end with (C{None}: any
        non-zero).
    @ivar redis: the block needs a Redis on 127.0.0.1:6379, which is
        started for it (once); where C{redis-server} is not installed the
        block is not run, unless C{TCPSC_REQUIRE_ENGINES=1} makes that a
        failure.
    @ivar setup: leading command lines that set up the environment the
        tests already run in (a virtual environment, an installation); they
        are not run.
    """

    key: str
    kind: str
    port: int | None = None
    udp: int | None = None
    typed: list[str] = field(default_factory=list)
    expect: list[str] = field(default_factory=list)
    status: int | None = 0
    setup: tuple[str, ...] = ()
    why: str = ""
    redis: bool = False


STEPS: list[Step] = [
    Step(
        'pip install ".[metrics]" && twistd',
        "server",
        port=8081,
        setup=("python3 -m venv .venv && . .venv/bin/activate", 'pip install ".[metrics]" && '),
    ),
    Step(
        "python -m twisted.trial tests",
        "skip",
        why="it runs this test suite (this test is part of it)",
    ),
    Step("twistd -n --pidfile= tcpsc --port 8081", "server", port=8081),
    Step("$ tcpsc connect localhost 8081", "transcript", typed=["hello"]),
    Step("printf 'hello\\nworld\\n'", "transcript"),
    Step("Connection 1 from", "log", port=8081),
    Step("tcpsc certs certs", "run"),
    Step("--port 8443 --tls", "server", port=8443),
    Step("tcpsc connect localhost 8443 --tls", "run", typed=["hello"], expect=["hello"]),
    Step("$ tcpsc connect localhost 8443 --tls --ca certs/ca.pem\n", "transcript", status=1),
    Step("class Upper(MessageProtocol)", "module"),
    Step("--app examples.upper:Upper", "server", port=8081),
    Step("HELLO", "transcript"),
    Step("while another one runs on 8081", "transcript", status=None),
    Step("tcpsc --port 8081 --udp 9000", "server", port=8081, udp=9000),
    Step("tcpsc udp localhost 9000", "transcript"),
    Step(
        "systemctl daemon-reload",
        "skip",
        why="it installs units into systemd, which does not run here; tests/test_systemd.py "
        "checks the daemon's readiness notifications and socket activation",
    ),
    Step("twist --log-format=json tcpsc --port 8081", "server", port=8081, setup=("$ ",)),
    Step(
        "tcpsc multicast listen 239.255.0.1:9000",
        "skip",
        why="its two commands run in two terminals at once, the listener first; "
        "tests/test_udp_cli.py runs them so, in a namespace of its own",
    ),
    Step("twistd -n --pidfile= tcpsc --port 8081", "server", port=8081),
    Step("tcpsc bench echo localhost 8081", "run", expect=["... errors=0 "]),
    Step("--app broadcast --rate", "server", port=8082),
    Step("tcpsc bench multicast localhost 8082", "run", expect=["... errors=0 "]),
    Step("class Echo(MessageProtocol)", "program", port=8081, expect=["hello", "ping"]),
    Step("server.broadcast", "python"),
    Step("Server(settings=limits)", "python", expect=["1000 None True"]),
    Step("Client(onMessage=replies.put", "python", expect=["b'hello'"]),
    Step("ServerService(Server(Echo)", "module"),
    Step("twistd -ny examples/echo.tac", "server", port=8081, setup=("$ ",)),
    Step("class EchoTests(SynchronousTestCase)", "trial", expect=["PASSED (successes=1)"]),
    Step("class Echo(DatagramPeer)", "python", expect=["b'hello' [1]"]),
    Step("MulticastReceiver(", "python", expect=["b'hello, group' from 127.0.0.1"]),
    Step("# Twisted-native", "program", port=8081, expect=["ping"]),
    Step("# Blocking", "program", port=8081, expect=["ping"], typed=[""]),
    Step("TlsClient(b", "python"),
    Step("tcpsc --port 8081 --workers 2", "server", port=8081),
    Step("All 2 workers are listening on 0.0.0.0:8081", "log", port=8081),
    Step("--workers 2 --app chat", "transcript", status=1),
    Step("--port 8081 --app chat --cluster", "server", port=8081, redis=True),
    Step("--port 8082 --app chat --cluster", "server", port=8082, redis=True),
    Step(
        "node.broadcast(",
        "python",
        expect=["clients in the cluster: 1", "the chat client got b'hello from another node'"],
        redis=True,
    ),
    Step(
        "send-proxy-v2",
        "skip",
        why="HAProxy on fixed ports; tests/test_proxy.py ReadmeConfigTests runs this "
        "configuration with a real haproxy, the next block's two daemons and a real Redis",
    ),
    Step(
        "--port haproxy:tcp:8091",
        "skip",
        why="tests/test_proxy.py ReadmeConfigTests runs these nodes, with a Redis of its own "
        "for --cluster, behind the configuration above, and a chat across them",
    ),
]


def _environment() -> dict[str, str]:
    """
    The environment of the README's commands: this Python's scripts
    (C{twistd}, C{tcpsc}) first on C{PATH}, and the checkout on
    C{PYTHONPATH}, which an editable installation needs for twistd to find
    the plugin (as the README says).
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    """
    Stop a process group started here: SIGTERM, then SIGKILL after a bound.
    Returns once no process of the group is left, so that a server the
    shell started is gone (its port closed) and not only the shell.
    """
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(TIMEOUT)
        except ProcessLookupError:
            pass
    # What the shell left behind in its group (a server it started): wait
    # for it to end after the SIGTERM, then SIGKILL it once the bound passed.
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline + TIMEOUT:
        late = time.monotonic() > deadline
        try:
            os.killpg(process.pid, signal.SIGKILL if late else 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _listening(port: int) -> bool:
    """
    Whether a socket listens on C{port}, read from C{/proc/net/tcp*}
    rather than by connecting, which would use up the server's connection
    id 1 that the README's log lines show.
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


def _listeningUDP(port: int) -> bool:
    """
    Whether a UDP socket is bound to C{port}, read from C{/proc/net/udp*}.
    """
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            if int(row.split()[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _lineMatches(expected: str, actual: str) -> bool:
    """
    Whether an output line the README shows matches a real one: C{...} at
    the start stands for the log's time stamp, numbers of four digits or
    more (ports) may differ.
    """
    pattern = re.escape(expected.strip())
    if expected.startswith("..."):
        pattern = ".*" + pattern[len(re.escape("...")) :]
    pattern = re.sub(r"\d{4,}", r"\\d+", pattern)
    return re.fullmatch(pattern, actual.strip()) is not None or (
        expected.startswith("...") and re.search(pattern[2:], actual) is not None
    )


def _inOrder(expected: list[str], output: str) -> str | None:
    """
    C{None} if every expected line is in C{output}, in order; else the
    first one missing.
    """
    lines = output.splitlines()
    position = 0
    for line in expected:
        for index in range(position, len(lines)):
            if _lineMatches(line, lines[index]):
                position = index + 1
                break
        else:
            return line
    return None


class Scenario:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.env = _environment()
        self.servers: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.count = 0
        self.redis: subprocess.Popen[bytes] | None = None

    # -- processes --------------------------------------------------------

    def start(
        self, command: str | list[str], output: Path, stdin: int | None = None
    ) -> subprocess.Popen[bytes]:
        with open(output, "wb") as out:
            process = subprocess.Popen(
                command,
                shell=isinstance(command, str),
                executable=None,
                cwd=self.directory,
                env=self.env,
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def output(self, name: str) -> Path:
        self.count += 1
        return self.directory / f".out-{self.count}-{name}"

    def run(self, command: str, typed: list[str]) -> tuple[int, str]:
        """
        Run a command to its end (at most L{TIMEOUT}); C{typed} lines are
        typed at a terminal (standard input is a pseudo-terminal) and then
        Ctrl-D.
        """
        output = self.output("run")
        if typed:
            master, slave = pty.openpty()
            try:
                process = self.start(command, output, stdin=slave)
            finally:
                os.close(slave)
            try:
                for line in typed:
                    os.write(master, line.encode() + b"\n")
                os.write(master, b"\x04")
                return self.finish(process, output)
            finally:
                os.close(master)
        process = self.start(command, output)
        return self.finish(process, output)

    def finish(self, process: subprocess.Popen[bytes], output: Path) -> tuple[int, str]:
        try:
            status = process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            _stop(process)
            raise Failed(f"still running after {TIMEOUT} s:\n{output.read_text()}") from None
        return status, output.read_text(errors="replace")

    def serve(
        self, port: int, command: str | list[str], stdin: int | None = None
    ) -> subprocess.Popen[bytes]:
        """
        Start a server in the background, after stopping the one the README
        started earlier on the same port (as a person presses Ctrl-C in
        "terminal 1" first), and wait until it accepts connections.
        """
        previous = self.servers.pop(port, None)
        if previous is not None:
            _stop(previous[0])
            deadline = time.monotonic() + TIMEOUT
            while _listening(port):
                if time.monotonic() > deadline:
                    raise Failed(
                        f"port {port} still listening {TIMEOUT} s after its server was stopped"
                    )
                time.sleep(0.05)
        output = self.output(f"server-{port}")
        process = self.start(command, output, stdin=stdin)
        self.servers[port] = (process, output)
        deadline = time.monotonic() + TIMEOUT
        while not _listening(port):
            if process.poll() is not None:
                raise Failed(
                    f"exited ({process.returncode}) instead of listening on "
                    f"{port}:\n{output.read_text()}"
                )
            if time.monotonic() > deadline:
                raise Failed(f"not listening on {port} after {TIMEOUT} s:\n{output.read_text()}")
            time.sleep(0.05)
        return process

    def stopAll(self) -> None:
        for process in self.processes:
            _stop(process)

    # -- steps --------------------------------------------------------------

    def commandLines(self, block: Block, step: Step) -> list[str]:
        lines = [line for line in block.text.splitlines() if line.strip()]
        result = []
        for line in lines:
            for prefix in step.setup:
                if line.startswith(prefix):
                    line = line[len(prefix) :]
            if line.strip():
                result.append(line)
        return result

    def step(self, block: Block, step: Step) -> str:
        if step.redis:
            missing = self.startRedis()
            if missing is not None:
                return f"not run: {missing}"
        handler: Callable[[Block, Step], str] = getattr(self, f"do_{step.kind}")
        return handler(block, step)

    def startRedis(self) -> str | None:
        """
        Start a Redis on 127.0.0.1:6379 for the blocks that need one (once),
        without persistence, in this scenario's directory.

        @return: why it cannot run here, or C{None}.
        """
        if self.redis is not None:
            return None
        if shutil.which("redis-server") is None:
            why = "redis-server is not installed"
            if os.environ.get("TCPSC_REQUIRE_ENGINES") == "1":
                raise Failed(f"TCPSC_REQUIRE_ENGINES=1 but {why}")
            return why
        self.redis = self.start(
            [
                "redis-server",
                "--port",
                "6379",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            self.output("redis"),
        )
        deadline = time.monotonic() + TIMEOUT
        while not _listening(6379):
            if self.redis.poll() is not None or time.monotonic() > deadline:
                raise Failed("redis-server did not listen on 6379")
            time.sleep(0.05)
        return None

    def do_skip(self, block: Block, step: Step) -> str:
        return f"not run: {step.why}"

    def do_server(self, block: Block, step: Step) -> str:
        lines = self.commandLines(block, step)
        if len(lines) != 1:
            raise Failed(f"a server block is one command, not {lines!r}")
        assert step.port is not None
        self.serve(step.port, lines[0])
        if step.udp is not None:
            deadline = time.monotonic() + TIMEOUT
            while not _listeningUDP(step.udp):
                if time.monotonic() > deadline:
                    raise Failed(f"not listening on UDP {step.udp} after {TIMEOUT} s")
                time.sleep(0.05)
            return f"listening on {step.port} and on UDP {step.udp}"
        return f"listening on {step.port}"

    def do_run(self, block: Block, step: Step) -> str:
        said = []
        for line in self.commandLines(block, step):
            try:
                status = self.runChecked(line, step)
            except Failed as e:
                raise Failed(f"{line!r}: {e}") from None
            said.append(f"{line!r}: exit status {status}")
        return "; ".join(said)

    def runChecked(self, command: str, step: Step) -> int:
        """
        Run C{command} as L{run} does; its exit status must be the step's,
        and its output must show the step's C{expect} lines, in order.

        @return: the exit status.
        """
        status, output = self.run(command, step.typed)
        self.checkStatus(step, status, output)
        missing = _inOrder(step.expect, output)
        if missing is not None:
            raise Failed(f"no line {missing!r} in its output:\n{output}")
        return status

    def checkStatus(self, step: Step, status: int, output: str) -> None:
        if step.status is None:
            if status == 0:
                raise Failed(f"exit status 0, expected a failure:\n{output}")
        elif status != step.status:
            raise Failed(f"exit status {status}, expected {step.status}:\n{output}")

    def do_transcript(self, block: Block, step: Step) -> str:
        """
        C{$ command} lines, each followed by the output the README shows
        for it.
        """
        commands: list[tuple[str, list[str]]] = []
        for line in block.text.splitlines():
            if line.startswith("$ "):
                command = re.sub(r"\s+#.*$", "", line[2:])
                commands.append((command, []))
            elif line.strip():
                if not commands:
                    raise Failed(f"output {line!r} before any '$ command' line")
                commands[-1][1].append(line)
        said = []
        for command, shown in commands:
            expected = list(shown)
            for typed in step.typed:
                # The terminal shows what was typed; the output does not.
                if typed in expected:
                    expected.remove(typed)
            status, output = self.run(command, step.typed)
            self.checkStatus(step, status, output)
            missing = _inOrder(expected, output)
            if missing is not None:
                raise Failed(f"{command!r}: no line {missing!r} in its output:\n{output}")
            said.append(f"{command!r}: exit status {status}, output as shown")
        return "; ".join(said)

    def do_log(self, block: Block, step: Step) -> str:
        """
        Lines the README shows in the log of the server on C{step.port}.
        """
        assert step.port is not None
        _, output = self.servers[step.port]
        expected = [line for line in block.text.splitlines() if line.strip()]
        deadline = time.monotonic() + TIMEOUT
        while (missing := _inOrder(expected, output.read_text(errors="replace"))) is not None:
            if time.monotonic() > deadline:
                raise Failed(
                    f"no line {missing!r} in the log of the server on "
                    f"{step.port}:\n{output.read_text()}"
                )
            time.sleep(0.05)
        return "in the server's log"

    def do_module(self, block: Block, step: Step) -> str:
        """
        A class shown as the content of a file of the checkout: every line
        of the block is in that file, and the block runs.
        """
        lines = README.read_text().splitlines()[: block.line - 1]
        before = "\n".join(lines).rstrip().rsplit("\n\n", 1)[-1]
        match = re.search(r"`(examples/\w+\.(?:py|tac))`", before)
        if match is None:
            raise Failed("the paragraph before the block names no examples/ file")
        source = (ROOT / match.group(1)).read_text().splitlines()
        for line in block.text.splitlines():
            if line.strip() and line not in source:
                raise Failed(f"{match.group(1)} has no line {line!r}")
        return self.do_python(block, step) + f"; its lines are in {match.group(1)}"

    def do_python(self, block: Block, step: Step) -> str:
        path = self.output("snippet.py")
        path.write_text(block.text)
        status = self.runChecked(f"{sys.executable} {path.name}", step)
        return f"ran, exit status {status}"

    def do_trial(self, block: Block, step: Step) -> str:
        """
        A trial test case: it runs with trial and passes.
        """
        self.count += 1
        module = f"test_readme_snippet_{self.count}"
        (self.directory / f"{module}.py").write_text(block.text)
        status = self.runChecked(f"{sys.executable} -m twisted.trial {module}", step)
        return f"ran with trial, exit status {status}"

    def do_program(self, block: Block, step: Step) -> str:
        """
        A server program: it must listen on C{step.port} and echo a message
        (after its greeting, if C{step.expect} shows one first); typed
        lines (Enter) then stop it, or else SIGTERM.
        """
        assert step.port is not None
        path = self.output("program.py")
        path.write_text(block.text)
        master = slave = None
        if step.typed:
            master, slave = pty.openpty()
        try:
            process = self.serve(step.port, [sys.executable, path.name], stdin=slave)
        finally:
            if slave is not None:
                os.close(slave)
        try:
            with socket.create_connection(("127.0.0.1", step.port), timeout=TIMEOUT) as peer:
                peer.sendall(b"ping\n")
                received = b""
                want = "\n".join(step.expect) + "\n"
                while received.decode(errors="replace") != want:
                    if len(received) > len(want):
                        raise Failed(f"received {received!r}, expected {want!r}")
                    chunk = peer.recv(4096)
                    if not chunk:
                        raise Failed(f"closed after {received!r}, expected {want!r}")
                    received += chunk
            if master is not None:
                for line in step.typed:
                    os.write(master, line.encode() + b"\n")
                status, output = self.finish(process, self.servers.pop(step.port)[1])
                if status != 0:
                    raise Failed(f"exit status {status} after Enter:\n{output}")
                return f"echoed, then stopped by Enter (exit status {status})"
            return "echoed"
        finally:
            if master is not None:
                os.close(master)


def run(directory: Path) -> list[str]:
    """
    Run every block of the README in C{directory}.

    @return: one line per block.
    @raise Failed: naming the block and what went wrong.
    """
    found = blocks()
    if len(found) != len(STEPS):
        raise Failed(
            f"the README has {len(found)} code blocks, tests/_readme.py knows "
            f"{len(STEPS)}: add (or remove) a step for each"
        )
    for block, step in zip(found, STEPS, strict=True):
        if step.key not in block.text:
            raise Failed(f"{block}: expected the block with {step.key!r} here")
    examples = directory / "examples"
    if not examples.exists():
        examples.symlink_to(ROOT / "examples")
    scenario = Scenario(directory)
    report = []
    try:
        for block, step in zip(found, STEPS, strict=True):
            try:
                report.append(f"{block}: {scenario.step(block, step)}")
            except Failed as e:
                raise Failed(f"{block}:\n{e}") from None
    finally:
        scenario.stopAll()
    return report


def main() -> int:
    directory = Path(sys.argv[1])
    directory.mkdir(parents=True, exist_ok=True)
    try:
        report = run(directory)
    except Failed as e:
        print(f"FAILED {e}", flush=True)
        return 1
    print("\n".join(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
