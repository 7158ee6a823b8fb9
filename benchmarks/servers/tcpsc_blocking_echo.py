"""
tcpsc blocking API echo server: L{tcpsc.blocking.TcpServer} with a message
worker that sends every message back with C{sendMsg}, as a program written
against the original's API would.  Exits with status 3 (and a SKIP line)
where C{tcpsc.blocking} is not available.
"""

from __future__ import annotations

import signal
import threading

from _common import SKIP, arguments, ready


def main() -> None:
    options = arguments(__doc__, tls=False, reactor=False)
    try:
        from tcpsc.blocking import TcpServer
    except ImportError as e:
        print(f"SKIP tcpsc.blocking is not available: {e}", flush=True)
        raise SystemExit(SKIP) from None
    # Up to 10,000 connections from one address, some idle: no per-peer
    # limit, no first-byte timeout (older tcpsc releases: as far as they go).
    try:
        server = TcpServer(
            b"\n", maxConnections=20_000, maxConnectionsPerPeer=None, firstByteTimeout=None
        )
    except TypeError:
        try:
            server = TcpServer(b"\n", maxConnections=20_000)
        except TypeError:
            server = TcpServer(b"\n")
    server.setWorkOnMessage(lambda clientId, message: server.sendMsg(clientId, message))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        port = server.start(options.port, interface="127.0.0.1")
    except TypeError:
        port = server.start(options.port, "127.0.0.1")
    ready(port if isinstance(port, int) and port else options.port)
    while not stopping.wait(1.0):
        pass
    server.stop(5.0)


if __name__ == "__main__":
    main()
