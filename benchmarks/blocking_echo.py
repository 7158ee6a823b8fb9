"""
Echo throughput of the blocking API (tcpsc.blocking), as the C++ original
was measured: one client sends N messages of 32 bytes (delimiter included),
pipelined, to an echo server whose message worker answers with sendMsg; the
client's message worker counts the echoes and checks their order.

By default the server runs in a child process (as a separate program would);
--same-process runs both in one process (sharing one reactor thread and the
GIL).  Prints messages/s and the number of echoes that arrived out of order,
for each run and the median.  Not a test: run it by hand.

    PYTHONPATH=. python benchmarks/blocking_echo.py [--messages 100000] [--runs 3]
                 [--tls] [--same-process]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tcpsc import _certgen
from tcpsc.blocking import TcpClient, TcpServer, TlsClient, TlsServer

DELIMITER = b"\n"
SIZE = 32  # bytes per message, delimiter included


def serve(tls: Path | None, announce: bool = True) -> TcpServer:
    server: TcpServer
    if tls is None:
        server = TcpServer(DELIMITER)
    else:
        server = TlsServer(DELIMITER)
        server.setCertificates(tls / "ca.pem", tls / "server.pem", tls / "server.key")
    send = server.sendMsg
    server.setWorkOnMessage(lambda clientId, message: send(clientId, message))
    port = server.start(0, interface="127.0.0.1")
    if announce:
        print(port, flush=True)
    return server


def run(port: int, messages: int, tls: Path | None) -> tuple[float, int]:
    """
    One round: returns (messages per second, echoes out of order).
    """
    client: TcpClient
    if tls is None:
        client = TcpClient(DELIMITER)
    else:
        client = TlsClient(DELIMITER)
        client.setCertificates(tls / "ca.pem", tls / "client.pem", tls / "client.key")
    done = threading.Event()
    state = {"expected": 0, "reordered": 0, "count": 0}

    def echoed(message: bytes) -> None:
        number = int(message[:10])
        if number != state["expected"]:
            state["reordered"] += 1
        state["expected"] = number + 1
        state["count"] += 1
        if state["count"] == messages:
            done.set()

    client.setWorkOnMessage(echoed)
    client.start("127.0.0.1", port)
    payload = [b"%010d" % i + b"x" * (SIZE - 11) for i in range(messages)]
    send = client.sendMsg
    started = time.perf_counter()
    for message in payload:
        if not send(message):
            raise RuntimeError("sendMsg refused a message")
    if not done.wait(120):
        raise RuntimeError(f"only {state['count']} of {messages} echoes arrived")
    elapsed = time.perf_counter() - started
    client.stop()
    return messages / elapsed, state["reordered"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--same-process", action="store_true")
    parser.add_argument(
        "--serve", metavar="CERTDIR", nargs="?", const="", default=None, help=argparse.SUPPRESS
    )
    options = parser.parse_args()

    if options.serve is not None:
        serve(Path(options.serve) if options.serve else None)
        sys.stdin.read()
        return

    certificates: Path | None = None
    if options.tls:
        certificates = Path(tempfile.mkdtemp(prefix="tcpsc-bench-"))
        _certgen.writeCertificateSet(certificates)

    child = None
    if options.same_process:
        port = serve(certificates, announce=False).port
    else:
        command = [sys.executable, __file__, "--serve", str(certificates or "")]
        child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        port = int(child.stdout.readline())  # type: ignore[union-attr]
    assert port is not None
    try:
        rates = []
        for number in range(options.runs):
            rate, reordered = run(port, options.messages, certificates)
            rates.append(rate)
            print(f"run {number + 1}: {rate:,.0f} msgs/s, {reordered} out of order", flush=True)
        print(
            f"median: {statistics.median(rates):,.0f} msgs/s "
            f"({options.messages} x {SIZE} B, {'TLS 1.3' if options.tls else 'TCP'}, "
            f"{'one process' if options.same_process else 'server in a child process'})"
        )
    finally:
        if child is not None:
            child.stdin.close()  # type: ignore[union-attr]
            child.wait(10)


if __name__ == "__main__":
    main()
