"""
Baseline: asyncio streams, C{readuntil} and one C{write} per message, on
the default event loop or uvloop.
"""

from __future__ import annotations

import asyncio

from _common import BACKLOG, SKIP, arguments, ready


async def serve(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readuntil(b"\n")
                writer.write(line)
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(
        handle, "127.0.0.1", port, limit=64 * 1024 * 1024, backlog=BACKLOG
    )
    ready(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def main() -> None:
    options = arguments(
        __doc__,
        tls=False,
        reactor=False,
        extra=lambda p: p.add_argument("--uvloop", action="store_true"),
    )
    if options.uvloop:
        try:
            import uvloop
        except ImportError:
            print("SKIP uvloop is not installed", flush=True)
            raise SystemExit(SKIP) from None
        uvloop.run(serve(options.port))
    else:
        asyncio.run(serve(options.port))


if __name__ == "__main__":
    main()
