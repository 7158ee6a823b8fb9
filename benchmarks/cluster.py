#!/usr/bin/env python
"""
A cluster of two tcpsc daemons over one Redis against one daemon alone, in
one run, so that the ratios are of the same machine at the same moment.

It starts a C{redis-server} (a free loopback port, no persistence, a
temporary directory) and C{twistd tcpsc} daemons with C{--app
cluster:Relay} (the L{Relay} protocol below: a client's C{b...} message is
broadcast, C{s<id> ...} sent to that id, C{i} answered with the client's
own id), and drives them from this process with plain non-blocking
sockets:

  - B{Broadcast}: 100 receiving clients, all on one daemon (no cluster) or
    50 on each of two nodes; one more client, on the first node, asks for
    C{--broadcasts} broadcasts as fast as the server takes them.  Reported:
    the messages delivered per second (all receivers, from the first request
    to the last delivery) and the ratio two nodes / one node (target at
    least 0.5); then, one broadcast at a time, the p50 delay from the
    request to its delivery to a client of the other node (target at most
    2 ms).
    The delay is measured by this process, which reads the 100 sockets in
    turn: the one-node figure is that part, and the difference is what the
    second node and Redis add.
  - B{Send}: a client on the first node sends to a client of the other
    node, whose answer is sent back to it (two sends through Redis), and
    the same to a client of its own node; reported: the p50 round trips and
    their difference (target at most 1 ms).

    python benchmarks/cluster.py                    # the defaults
    python benchmarks/cluster.py --broadcasts 200 --pings 100
    python benchmarks/cluster.py --json

Needs C{redis-server} and txredisapi; every process it starts listens on
127.0.0.1 and is stopped by its PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tcpsc import MessageProtocol  # noqa: E402

#: Bound of every wait (a daemon starting, a phase of the run).
TIMEOUT = 60.0


class Relay(MessageProtocol):
    """
    The daemons' application: C{b<payload>} broadcasts C{<payload>} to every
    client (the sender too), C{s<id> <payload>} sends C{<payload>} to id
    C{<id>}, C{i} answers C{i<own id>}, C{k<id>} answers C{k1} if the node
    knows the id (its directory has it), C{k0} if not yet.
    """

    maxMessageLength = 4096

    def messageReceived(self, message: bytes) -> None:
        kind = message[:1]
        if kind == b"b":
            self.factory.broadcast(message[1:])
        elif kind == b"s":
            target, _, payload = message[1:].partition(b" ")
            self.factory.send(int(target), payload)
        elif kind == b"i":
            self.sendMessage(b"i%d" % self.connectionId)
        elif kind == b"k":
            known = int(message[1:]) in self.factory.clientIds()
            self.sendMessage(b"k1" if known else b"k0")


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def twistdCommand() -> list[str]:
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class Processes:
    """
    The processes of a run, stopped by PID at the end.
    """

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="tcpsc-cluster-bench-"))
        self.children: list[subprocess.Popen[bytes]] = []

    def redis(self) -> str:
        port = freePort()
        process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.children.append(process)
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return f"redis://127.0.0.1:{port}/0"
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("redis-server did not start")
            time.sleep(0.05)

    def daemon(self, cluster: str | None) -> int:
        port = freePort()
        log = self.directory / f"node-{port}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), str(ROOT / "benchmarks"), env.get("PYTHONPATH")) if p
        )
        command = [
            *twistdCommand(),
            "-n",
            "--pidfile=",
            "tcpsc",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            "--app",
            "cluster:Relay",
            "--first-byte-timeout=none",
        ]
        if cluster is not None:
            command += ["--cluster", cluster]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                command, cwd=self.directory, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.children.append(process)
        deadline = time.monotonic() + TIMEOUT
        while b"Listening on" not in log.read_bytes():
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"the daemon did not start:\n{log.read_text()}")
            time.sleep(0.05)
        return port

    def stop(self) -> None:
        for process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.children:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if not os.environ.get("TCPSC_BENCH_KEEP"):
            shutil.rmtree(self.directory, ignore_errors=True)


class Peer:
    """
    A non-blocking client socket with the messages it received.
    """

    def __init__(self, port: int, selector: selectors.BaseSelector) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket.setblocking(False)
        self.buffer = b""
        self.received: list[tuple[float, bytes]] = []
        selector.register(self.socket, selectors.EVENT_READ, self)

    def send(self, data: bytes) -> None:
        self.socket.setblocking(True)
        self.socket.sendall(data)
        self.socket.setblocking(False)

    def read(self) -> None:
        now = time.monotonic()
        try:
            data = self.socket.recv(1 << 20)
        except BlockingIOError:
            return
        if not data:
            raise SystemExit("a node closed a client's connection")
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        self.received.extend((now, line) for line in lines)


def pump(selector: selectors.BaseSelector, done: Any, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        for key, _ in selector.select(0.5):
            key.data.read()


def identify(peer: Peer, selector: selectors.BaseSelector) -> int:
    peer.send(b"i\n")
    pump(selector, lambda: any(m.startswith(b"i") for _, m in peer.received), "an id")
    (line,) = [m for _, m in peer.received if m.startswith(b"i")]
    peer.received.clear()
    return int(line[1:])


def broadcastRun(ports: list[int], broadcasts: int, delays: int) -> dict[str, float]:
    """
    100 receivers split over C{ports}; one sender on the first.
    """
    selector = selectors.DefaultSelector()
    receivers = [Peer(ports[i % len(ports)], selector) for i in range(100)]
    ids = [identify(peer, selector) for peer in receivers]
    sender = Peer(ports[0], selector)
    identify(sender, selector)
    # Every receiver is in the sender's node's directory (a broadcast
    # reaches the clients of the other node whatever it knows of them, but
    # the count starts with every client established).
    deadline = time.monotonic() + TIMEOUT
    while True:
        sender.send(b"k%d\n" % max(ids))
        pump(selector, lambda: bool(sender.received), "an answer")
        if sender.received.pop()[1] == b"k1":
            break
        if time.monotonic() > deadline:
            raise SystemExit("the first node never learnt of the other's clients")
    expected = broadcasts
    started = time.monotonic()
    sender.send(b"".join(b"bm%d\n" % i for i in range(broadcasts)))
    pump(
        selector,
        lambda: all(len(p.received) >= expected for p in receivers),
        "the broadcasts",
    )
    last = max(p.received[expected - 1][0] for p in receivers)
    rate = 100 * broadcasts / (last - started)
    for peer in receivers:
        assert [m for _, m in peer.received[:expected]] == [b"m%d" % i for i in range(expected)]
        peer.received.clear()
    sender.received.clear()
    # One at a time: the delay to a client of the other node (or, on one
    # node, to any client).
    other = [p for i, p in enumerate(receivers) if i % len(ports) == len(ports) - 1]
    measured: list[float] = []
    for i in range(delays):
        sent = time.monotonic()
        sender.send(b"bd%d\n" % i)
        pump(selector, lambda: all(p.received for p in receivers), "a broadcast")
        measured.extend(p.received[0][0] - sent for p in other)
        for peer in receivers:
            peer.received.clear()
        sender.received.clear()
    for peer in [*receivers, sender]:
        selector.unregister(peer.socket)
        peer.socket.close()
    return {"rate": rate, "p50": statistics.median(measured)}


def sendRun(ports: list[int], pings: int) -> dict[str, float]:
    """
    Round trips from a client of the first node to a client of C{ports[-1]}
    and back, both ways by C{send}.
    """
    selector = selectors.DefaultSelector()
    origin = Peer(ports[0], selector)
    target = Peer(ports[-1], selector)
    originId = identify(origin, selector)
    targetId = identify(target, selector)
    # An id is reachable from another node once that node has read its
    # announcement from Redis.
    for asker, other in ((origin, targetId), (target, originId)):
        deadline = time.monotonic() + TIMEOUT
        while True:
            asker.send(b"k%d\n" % other)
            pump(selector, lambda asker=asker: bool(asker.received), "an answer")
            answer = asker.received.pop()[1]
            if answer == b"k1":
                break
            if time.monotonic() > deadline:
                raise SystemExit("a node never learnt of the other's client")
    trips: list[float] = []
    for i in range(pings):
        sent = time.monotonic()
        origin.send(b"s%d p%d\n" % (targetId, i))
        pump(selector, lambda: bool(target.received), "a send")
        target.received.clear()
        target.send(b"s%d q%d\n" % (originId, i))
        pump(selector, lambda: bool(origin.received), "the answer")
        trips.append(origin.received[0][0] - sent)
        origin.received.clear()
    for peer in (origin, target):
        selector.unregister(peer.socket)
        peer.socket.close()
    return {"p50": statistics.median(trips)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--broadcasts",
        type=int,
        default=1000,
        help="broadcasts of the rate phase (each to 100 clients) [1000]",
    )
    parser.add_argument(
        "--delays", type=int, default=100, help="broadcasts of the delay phase, one at a time [100]"
    )
    parser.add_argument("--pings", type=int, default=200, help="round trips of each kind [200]")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    arguments = parser.parse_args()
    if shutil.which("redis-server") is None:
        print(
            "benchmarks/cluster.py needs redis-server (apt-get install redis-server)",
            file=sys.stderr,
        )
        return 1
    processes = Processes()
    try:
        single = processes.daemon(None)
        url = processes.redis()
        first = processes.daemon(url)
        second = processes.daemon(url)
        one = broadcastRun([single], arguments.broadcasts, arguments.delays)
        two = broadcastRun([first, second], arguments.broadcasts, arguments.delays)
        local = sendRun([first, first], arguments.pings)
        remote = sendRun([first, second], arguments.pings)
    except SystemExit:
        for log in sorted(processes.directory.glob("*.log")):
            print(f"== {log.name}:\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        processes.stop()
    figures = {
        "broadcast_one_node_msgs_per_s": round(one["rate"]),
        "broadcast_two_nodes_msgs_per_s": round(two["rate"]),
        "broadcast_ratio": round(two["rate"] / one["rate"], 3),
        "broadcast_p50_delay_one_node_ms": round(one["p50"] * 1000, 3),
        "broadcast_p50_delay_other_node_ms": round(two["p50"] * 1000, 3),
        "broadcast_p50_delay_extra_ms": round((two["p50"] - one["p50"]) * 1000, 3),
        "send_p50_round_trip_local_ms": round(local["p50"] * 1000, 3),
        "send_p50_round_trip_remote_ms": round(remote["p50"] * 1000, 3),
        "send_p50_extra_ms": round((remote["p50"] - local["p50"]) * 1000, 3),
    }
    if arguments.json:
        print(json.dumps(figures, indent=2))
    else:
        print(
            f"broadcast to 100 clients, one node:  {figures['broadcast_one_node_msgs_per_s']:>9,} msgs/s"
        )
        print(
            f"broadcast to 100 clients, two nodes: {figures['broadcast_two_nodes_msgs_per_s']:>9,} msgs/s"
            f"  (ratio {figures['broadcast_ratio']:.2f}, target >= 0.5)"
        )
        print(
            f"p50 delay, one node: {figures['broadcast_p50_delay_one_node_ms']:.3f} ms;"
            f" to a client of the other node: {figures['broadcast_p50_delay_other_node_ms']:.3f} ms"
            f" (+{figures['broadcast_p50_delay_extra_ms']:.3f} ms; target <= 2 ms)"
        )
        print(
            f"send p50 round trip, local: {figures['send_p50_round_trip_local_ms']:.3f} ms;"
            f" remote: {figures['send_p50_round_trip_remote_ms']:.3f} ms"
            f" (+{figures['send_p50_extra_ms']:.3f} ms, target <= +1 ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
