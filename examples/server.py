"""
The C++ original's example server, with tcpsc's blocking API: no reactor to
run, callbacks ("workers") on worker threads.

Fragmented mode (the default) prints every message and sends it back;
continuous mode writes each connection's bytes to standard output, prefixed
by the connection id.  Runs until Ctrl-C (or SIGTERM).

From the root of the tcpsc checkout:

    python examples/server.py                     # TCP, fragmented, port 8081
    python examples/server.py --continuous
    python examples/server.py --tls               # certificates made in ./example-certs
    python examples/server.py --tls --ca ca.pem --cert server.pem --key server.key

and in another terminal, C{python examples/client.py} with the same options.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tcpsc import StartError, writeCertificateSet
from tcpsc.blocking import TcpServer, TlsServer


def certificatePaths(options: argparse.Namespace) -> tuple[str, str, str]:
    """
    The CA, certificate and key to use: those given, or a set made (once)
    in C{--certs}.
    """
    if options.cert:
        return options.ca or "", options.cert, options.key or ""
    directory = Path(options.certs)
    if not (directory / "ca.pem").exists():
        writeCertificateSet(directory)
        print(f"Made a CA, a server and a client certificate in {directory}/")
    return (str(directory / "ca.pem"), str(directory / "server.pem"), str(directory / "server.key"))


class _Prefixed:
    """
    A forward stream: one connection's bytes to standard output.
    """

    lock = threading.Lock()

    def __init__(self, clientId: int) -> None:
        self.clientId = clientId

    def write(self, data: bytes) -> None:
        with self.lock:
            sys.stdout.write(f"[{self.clientId}] {data.decode('utf-8', 'replace')}")
            sys.stdout.flush()

    def close(self) -> None:
        with self.lock:
            print(f"\n[{self.clientId}] stream closed")


def main() -> int:
    parser = argparse.ArgumentParser(description="tcpsc example server (blocking API)")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--interface",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; '' for all IPv4)",
    )
    parser.add_argument("--continuous", action="store_true", help="continuous mode")
    parser.add_argument("--tls", action="store_true", help="TLS 1.3")
    parser.add_argument(
        "--certs",
        default="example-certs",
        help="where to make (or find) certificates (default ./example-certs)",
    )
    parser.add_argument("--ca", help="CA certificate (PEM)")
    parser.add_argument("--cert", help="server certificate (PEM)")
    parser.add_argument("--key", help="server key (PEM)")
    parser.add_argument(
        "--no-client-auth", action="store_true", help="TLS: do not require client certificates"
    )
    options = parser.parse_args()

    delimiter = None if options.continuous else b"\n"
    server = (TlsServer if options.tls else TcpServer)(delimiter)

    def established(clientId: int) -> None:
        print(f"Client {clientId} connected from {server.getClientIp(clientId)}")
        if isinstance(server, TlsServer) and not options.no_client_auth:
            print(f"  certificate CN: {server.getSubjPartFromClientCert(clientId, 'CN')}")

    def message(clientId: int, message: bytes) -> None:
        print(f"Message from client {clientId}: {message.decode('utf-8', 'replace')}")
        server.sendMsg(clientId, message)

    server.setWorkOnEstablished(established)
    server.setWorkOnClosed(lambda clientId: print(f"Client {clientId} disconnected"))
    if options.continuous:
        server.setCreateForwardStream(_Prefixed)
    else:
        server.setWorkOnMessage(message)

    try:
        if isinstance(server, TlsServer):
            server.requireClientAuthentication(not options.no_client_auth)
            port = server.start(
                options.port, *certificatePaths(options), interface=options.interface
            )
        else:
            port = server.start(options.port, interface=options.interface)
    except StartError as e:
        print(f"Cannot start: {e}", file=sys.stderr)
        return e.code if e.code > 0 else 1
    mode = "continuous" if options.continuous else "fragmented"
    print(
        f"Listening on {options.interface or '*'}:{port} "
        f"({'TLS 1.3' if options.tls else 'TCP'}, {mode}); Ctrl-C stops",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(0))
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print("Stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
