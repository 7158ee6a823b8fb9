"""
The C++ original's example client, with tcpsc's blocking API.

Sends each message given on the command line (or each line of standard
input, if none is given) to the server started by C{examples/server.py},
prints what comes back, and stops.  In continuous mode the server's bytes
go to standard output.

From the root of the tcpsc checkout, with the server running:

    python examples/client.py hello world
    python examples/client.py --continuous "some bytes"
    python examples/client.py --tls hello          # certificates from ./example-certs
    python examples/client.py --tls --ca ca.pem --cert client.pem --key client.key hello
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tcpsc import StartError, writeCertificateSet
from tcpsc.blocking import TcpClient, TlsClient


def certificatePaths(options: argparse.Namespace) -> tuple[str, str, str]:
    """
    The CA, certificate and key to use: those given, or the set in
    C{--certs} (made there if missing, but then the server must use it too).
    """
    if options.ca or options.cert:
        return options.ca or "", options.cert or "", options.key or ""
    directory = Path(options.certs)
    if not (directory / "ca.pem").exists():
        writeCertificateSet(directory)
        print(f"Made a CA, a server and a client certificate in {directory}/")
    return (str(directory / "ca.pem"), str(directory / "client.pem"), str(directory / "client.key"))


def main() -> int:
    parser = argparse.ArgumentParser(description="tcpsc example client (blocking API)")
    parser.add_argument("messages", nargs="*", help="messages to send (default: stdin lines)")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--continuous", action="store_true", help="continuous mode")
    parser.add_argument("--tls", action="store_true", help="TLS 1.3")
    parser.add_argument(
        "--certs",
        default="example-certs",
        help="where to find (or make) certificates (default ./example-certs)",
    )
    parser.add_argument("--ca", help="CA certificate (PEM)")
    parser.add_argument("--cert", help="client certificate (PEM)")
    parser.add_argument("--key", help="client key (PEM)")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the replies"
    )
    options = parser.parse_args()

    messages = options.messages or [line.rstrip("\n") for line in sys.stdin]
    replies = threading.Semaphore(0)
    if options.continuous:
        client = (TlsClient if options.tls else TcpClient)(output=sys.stdout.buffer)
    else:
        client = (TlsClient if options.tls else TcpClient)(b"\n")

        def reply(message: bytes) -> None:
            print(f"Reply: {message.decode('utf-8', 'replace')}")
            replies.release()

        client.setWorkOnMessage(reply)
    client.setWorkOnClosed(lambda reason: print(f"Connection closed: {reason}"))

    try:
        if isinstance(client, TlsClient):
            client.setCertificates(*certificatePaths(options))
        client.start(options.host, options.port)
    except StartError as e:
        print(f"Cannot start: {e}", file=sys.stderr)
        return e.code if e.code > 0 else 1
    print(f"Connected to {options.host}:{options.port}")
    if isinstance(client, TlsClient):
        print(f"Server certificate CN: {client.getSubjPartFromServerCert('CN')}")
    try:
        for message in messages:
            data = message + "\n" if options.continuous else message
            if not client.sendMsg(data):
                print(f"Not sent: {message!r}", file=sys.stderr)
                continue
            if not options.continuous and not replies.acquire(timeout=options.timeout):
                print("No reply in time", file=sys.stderr)
    finally:
        client.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
