"""
A TLS peer that is not tcpsc and never answers a close: written with
Python's C{ssl} module, it completes the handshake (and, as a client, sends
one message), prints C{ready} (and, as a server, its port first), and then
never touches the socket again: it does not read what it is sent, does not
answer close_notify, does not close.  It exits when its standard input ends
(the test's cleanup closes it, or kills it by PID).

  python -m tests._silentpeer server CERT KEY
  python -m tests._silentpeer client PORT CA CERT KEY
"""

from __future__ import annotations

import socket
import ssl
import sys


def _wait() -> None:
    print("ready", flush=True)
    sys.stdin.read()


def server(cert: str, key: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        print(listener.getsockname()[1], flush=True)
        raw, _ = listener.accept()
        with context.wrap_socket(raw, server_side=True) as connection:
            # A TLS 1.3 server sends its session tickets with its first write
            # (or read): write one line, so that the client sees it accepted.
            try:
                connection.sendall(b"hello\n")
            except OSError:
                pass  # the client may have closed already; stay silent anyway
            _wait()


def client(port: str, ca: str, cert: str, key: str) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(ca)
    context.load_cert_chain(cert, key)
    with (
        socket.create_connection(("127.0.0.1", int(port))) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as connection,
    ):
        connection.sendall(b"hello\n")
        _wait()


if __name__ == "__main__":
    role, *arguments = sys.argv[1:]
    {"server": server, "client": client}[role](*arguments)
