"""
Hostile loads against the daemon (C{twistd -n --pidfile= tcpsc}) with its
default options, and what they cost everyone else.  Two scenarios, each
bounded in count and time:

  - C{slow-readers}: C{--app chat}; N clients (200) each send M messages
    (1,000) of 100 bytes as fast as they can and never read.  Meanwhile a
    probe client sends a timestamped message every 10 ms, and a healthy
    client reads everything.  Measured: the probes and flood messages the
    healthy client did not get, the probes' delay (median, p99, max), and
    the daemon's peak resident memory.
  - C{memory-budget}: C{--app echo}; C connections (30) each send S bytes
    (16 MiB) of one message without its delimiter, and hold it.  Measured:
    the daemon's peak resident memory against its memory budget, and that
    a client that behaves is still echoed.
  - C{tls-burst}: C{--tls} with client certificates required; H clients
    (4,000), in waves of 200, each send a ClientHello, read the server's
    answer and abort the connection.  Measured: the daemon's resident
    memory idle, at its peak, at once after the burst, and 7 s after it
    (once freed memory could be given back).

The result is a Markdown section for C{benchmarks/RESULTS.md}, or JSON.

    python benchmarks/hostile.py [--only slow-readers|memory-budget|tls-burst] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from churn import DaemonProcess

MiB = 1024 * 1024

#: Bound of one whole scenario, seconds.
CAP = 120.0


def peakMemory(pid: int) -> tuple[int, int]:
    """
    C{(resident, peak resident)} of C{pid}, bytes.
    """
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def resetPeak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- slow readers -----------------------------------------------------------


def slowReaders(clients: int, messages: int, size: int, extra: list[str]) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="tcpsc-hostile-") as temporary,
        DaemonProcess(Path(temporary), "--app", "chat", *extra) as daemon,
    ):
        port = daemon.port
        healthy = connect(port)
        probe = connect(port)
        flooders = [connect(port) for _ in range(clients)]
        # Every client is established (the chat relays to established
        # clients only) once the healthy one gets a message of each.
        for sock in (healthy, probe, *flooders):
            sock.sendall(b"hello\n")
        expectedFlood = clients * messages
        arrivals: dict[int, float] = {}
        counts = {"flood": 0, "hello": 0}
        done = threading.Event()

        def read() -> None:
            buffer = b""
            healthy.settimeout(1.0)
            deadline = time.monotonic() + CAP
            while not done.is_set() and time.monotonic() < deadline:
                try:
                    data = healthy.recv(1 << 20)
                except TimeoutError:
                    continue
                if not data:
                    return
                now = time.monotonic()
                buffer += data
                lines = buffer.split(b"\n")
                buffer = lines.pop()
                for line in lines:
                    _, _, body = line.partition(b": ")
                    if body.startswith(b"probe "):
                        arrivals[int(body.split()[1])] = now
                    elif body == b"hello":
                        counts["hello"] += 1
                    else:
                        counts["flood"] += 1

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while counts["hello"] < clients + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        resetPeak(daemon.pid)
        sent: dict[int, float] = {}
        stopProbes = threading.Event()

        def probeLoop() -> None:
            index = 0
            while not stopProbes.is_set():
                sent[index] = time.monotonic()
                probe.sendall(b"probe %d %s\n" % (index, b"p" * (size - 16)))
                index += 1
                stopProbes.wait(0.01)

        prober = threading.Thread(target=probeLoop, daemon=True)
        prober.start()
        started = time.monotonic()
        body = b"f" * (size - 1) + b"\n"
        payload = body * messages

        def flood(sock: socket.socket) -> None:
            try:
                sock.sendall(payload)
            except OSError:
                pass

        floods = [threading.Thread(target=flood, args=(s,), daemon=True) for s in flooders]
        for thread in floods:
            thread.start()
        for thread in floods:
            thread.join(CAP)
        floodSent = time.monotonic() - started
        # Until the healthy client has every flood message, or nothing more
        # comes for 30 s.
        last, lastCount = time.monotonic(), -1
        while time.monotonic() - started < CAP:
            if counts["flood"] >= expectedFlood:
                break
            if counts["flood"] != lastCount:
                last, lastCount = time.monotonic(), counts["flood"]
            elif time.monotonic() - last > 30:
                break
            time.sleep(0.05)
        drained = time.monotonic() - started
        # A last second of probes after the flood.
        time.sleep(1.0)
        stopProbes.set()
        prober.join(5)
        time.sleep(0.5)
        done.set()
        reader.join(5)
        resident, peak = peakMemory(daemon.pid)
        delays = [(arrivals[i] - sent[i]) * 1000 for i in sent if i in arrivals]
        for sock in (healthy, probe, *flooders):
            sock.close()
        return {
            "clients": clients,
            "messages": messages,
            "size": size,
            "options": " ".join(extra) or "defaults",
            "probesSent": len(sent),
            "probesLost": len(sent) - len(delays),
            "floodExpected": expectedFlood,
            "floodLost": expectedFlood - counts["flood"],
            "delayMedianMs": round(statistics.median(delays), 1) if delays else None,
            "delayP99Ms": round(percentile(delays, 0.99), 1) if delays else None,
            "delayMaxMs": round(max(delays), 1) if delays else None,
            "floodSentSeconds": round(floodSent, 2),
            "healthyDoneSeconds": round(drained, 2),
            "peakMiB": round(peak / MiB, 1),
            "residentMiB": round(resident / MiB, 1),
        }


# -- memory budget ------------------------------------------------------------


def memoryBudget(connections: int, size: int, extra: list[str]) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="tcpsc-hostile-") as temporary,
        DaemonProcess(Path(temporary), *extra) as daemon,
    ):
        port = daemon.port
        check = connect(port)
        check.sendall(b"before\n")
        assert check.recv(100) == b"before\n"
        idle, _ = peakMemory(daemon.pid)
        resetPeak(daemon.pid)
        chunk = b"x" * MiB
        holders = [connect(port) for _ in range(connections)]
        started = time.monotonic()

        def send(sock: socket.socket) -> None:
            try:
                for _ in range(size // MiB):
                    sock.sendall(chunk)
            except OSError:
                pass

        threads = [threading.Thread(target=send, args=(s,), daemon=True) for s in holders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(CAP)
        sentSeconds = time.monotonic() - started
        # Let the daemon read what is queued for it.
        time.sleep(2.0)
        check.sendall(b"after\n")
        check.settimeout(10)
        served = check.recv(100) == b"after\n"
        resident, peak = peakMemory(daemon.pid)
        closedByServer = 0
        for sock in holders:
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    closedByServer += 1
            except BlockingIOError:
                pass
            except OSError:
                closedByServer += 1
            sock.close()
        check.close()
        logged = [line for line in daemon.output.splitlines() if "memory budget" in line]
        return {
            "connections": connections,
            "sizeMiB": size // MiB,
            "options": " ".join(extra) or "defaults",
            "idleMiB": round(idle / MiB, 1),
            "peakMiB": round(peak / MiB, 1),
            "residentMiB": round(resident / MiB, 1),
            "sentSeconds": round(sentSeconds, 2),
            "served": served,
            "closedByServer": closedByServer,
            "budgetLines": len(logged),
            "firstBudgetLine": logged[0].split("] ", 1)[-1] if logged else "",
        }


# -- TLS burst -----------------------------------------------------------------


def clientHello() -> bytes:
    """
    The first flight of a TLS client, made once and sent by every client.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connection = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        connection.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def tlsBurst(handshakes: int, wave: int, extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tcpsc-hostile-") as temporary:
        directory = Path(temporary)
        subprocess.run(
            [sys.executable, "-m", "tcpsc", "certs", str(directory / "certs")],
            check=True,
            capture_output=True,
            timeout=60,
        )
        certs = directory / "certs"
        with DaemonProcess(
            directory,
            "--tls",
            "--cert",
            str(certs / "server.pem"),
            "--key",
            str(certs / "server.key"),
            "--ca",
            str(certs / "ca.pem"),
            *extra,
        ) as daemon:
            port = daemon.port
            hello = clientHello()
            time.sleep(1.0)
            idle, _ = peakMemory(daemon.pid)
            resetPeak(daemon.pid)
            started = time.monotonic()
            answered = 0
            for _ in range(handshakes // wave):
                if time.monotonic() - started > CAP:
                    break
                socks = [connect(port) for _ in range(wave)]
                for sock in socks:
                    sock.sendall(hello)
                for sock in socks:
                    sock.settimeout(10)
                    try:
                        if sock.recv(4096):
                            answered += 1
                    except OSError:
                        pass
                for sock in socks:
                    # An abort: RST, not a close.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
            burstSeconds = time.monotonic() - started
            time.sleep(0.5)
            after, peak = peakMemory(daemon.pid)
            time.sleep(7.0)
            later, _ = peakMemory(daemon.pid)
            return {
                "handshakes": handshakes,
                "answered": answered,
                "options": " ".join(extra) or "defaults",
                "burstSeconds": round(burstSeconds, 2),
                "idleMiB": round(idle / MiB, 1),
                "peakMiB": round(peak / MiB, 1),
                "afterMiB": round(after / MiB, 1),
                "laterMiB": round(later / MiB, 1),
            }


def report(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        f"## Hostile loads ({time.strftime('%Y-%m-%d')}, Python "
        f"{platform.python_version()}, {os.cpu_count()} cores)",
        "",
    ]
    if results.get("slow-readers"):
        lines += [
            "Chat with N clients that each send M messages of 100 bytes and never read, a probe "
            "every 10 ms, a healthy client that reads everything:",
            "",
            "| options | N x M | flood lost | probes lost | probe delay median / p99 / max "
            "| daemon peak RSS |",
            "|---|---|---|---|---|---|",
        ]
        for r in results["slow-readers"]:
            lines.append(
                f"| {r['options']} | {r['clients']} x {r['messages']} | {r['floodLost']} of "
                f"{r['floodExpected']} | {r['probesLost']} of {r['probesSent']} | "
                f"{r['delayMedianMs']} / {r['delayP99Ms']} / {r['delayMaxMs']} ms | "
                f"{r['peakMiB']} MiB |"
            )
        lines.append("")
    if results.get("memory-budget"):
        lines += [
            "C connections each sending S MiB of one message without its delimiter:",
            "",
            "| options | C x S | daemon RSS idle / peak / after | well-behaved client served "
            "| closed by the daemon |",
            "|---|---|---|---|---|",
        ]
        for r in results["memory-budget"]:
            lines.append(
                f"| {r['options']} | {r['connections']} x {r['sizeMiB']} MiB | {r['idleMiB']} / "
                f"{r['peakMiB']} / {r['residentMiB']} MiB | {'yes' if r['served'] else 'NO'} | "
                f"{r['closedByServer']} |"
            )
        lines.append("")
    if results.get("tls-burst"):
        lines += [
            "H TLS clients, in waves, each send a ClientHello, read the answer and abort:",
            "",
            "| options | H | answered | daemon RSS idle / peak / at once after / 7 s after |",
            "|---|---|---|---|",
        ]
        for r in results["tls-burst"]:
            lines.append(
                f"| {r['options']} | {r['handshakes']} | {r['answered']} | {r['idleMiB']} / "
                f"{r['peakMiB']} / {r['afterMiB']} / {r['laterMiB']} MiB |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["slow-readers", "memory-budget", "tls-burst"])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=30)
    parser.add_argument("--size-mib", type=int, default=16)
    parser.add_argument("--handshakes", type=int, default=4000)
    parser.add_argument(
        "--daemon-option",
        action="append",
        default=[],
        help="an option for the daemon (repeatable, e.g. "
        "--daemon-option=--max-pending-output=65536)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    # All the clients come from one address: lift the per-peer limit.
    extra = ["--max-connections-per-peer", "none", *args.daemon_option]
    results: dict[str, list[dict[str, Any]]] = {}
    if args.only in (None, "slow-readers"):
        results["slow-readers"] = [slowReaders(args.clients, args.messages, 100, extra)]
    if args.only in (None, "memory-budget"):
        results["memory-budget"] = [memoryBudget(args.connections, args.size_mib * MiB, extra)]
    if args.only in (None, "tls-burst"):
        results["tls-burst"] = [tlsBurst(args.handshakes, 200, extra)]
    print(json.dumps(results, indent=2) if args.json else report(results))


if __name__ == "__main__":
    main()
