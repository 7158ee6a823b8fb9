# -*- test-case-name: tests.test_tap -*-
"""
What the C{twistd tcpsc} daemon serves: the built-in applications C{echo},
C{chat} and C{record}, and the loading of a user's own protocol class named
as C{module:Class}.

The built-in applications are ordinary L{MessageProtocol}/L{StreamProtocol}
subclasses, so they double as examples of the Twisted-native API: each is a
few lines, and each keeps tcpsc's guarantees (validated, bounded messages)
because it sends through L{MessageProtocol.sendMessage} or
L{Server.broadcast}.

The echo applications pass back-pressure on: while a client does not read
its echoes, they stop reading what it sends (L{_PausesWithOutput}), so a
client that only writes is slowed down by TCP instead of filling the
server's memory or losing echoes.  Chat relays through L{Server.broadcast},
which skips a client that does not read (see its policy).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from twisted.logger import Logger

from ._events import plural
from ._framing import MessageProtocol, StreamProtocol

if TYPE_CHECKING:
    from ._server import Server

__all__ = ["BUILTIN_APPS", "Chat", "Echo", "Record", "StreamEcho", "loadAppClass", "recordSink"]


class _PausesWithOutput:
    """
    Mixin of a protocol that answers what it reads: it stops reading while
    its output is congested, and reads again once the output is written.
    """

    def outputPaused(self) -> None:
        self.pauseReading()  # type: ignore[attr-defined]

    def outputResumed(self) -> None:
        self.resumeReading()  # type: ignore[attr-defined]


class Echo(_PausesWithOutput, MessageProtocol):
    """
    Each message back to its sender.  Reading pauses while the sender does
    not read its echoes, so none is dropped.
    """

    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(message)


class StreamEcho(_PausesWithOutput, StreamProtocol):
    """
    Continuous mode: each chunk of bytes back to its sender.  Reading pauses
    while the sender does not read its echoes, so none is dropped.
    """

    def dataReceived(self, data: bytes) -> None:
        self.sendData(data)


class Chat(MessageProtocol):
    """
    Each message to every other client of the server, prefixed with the
    sender's connection id (C{b"3: hello"}), as CppServer's chat server
    relays a client's message to the others.
    """

    log = Logger()

    def messageReceived(self, message: bytes) -> None:
        server: Server = self.factory
        sender: int = self.connectionId  # type: ignore[assignment]
        relayed = b"%d: %s" % (sender, message)
        # The prefix makes the message longer: check it here, so that a
        # message dropped for that reason is reported rather than lost
        # silently inside broadcast().
        if self.frame(relayed) is None:
            server._events.record(
                "messageTooLong",
                "Dropped a chat message of {size} from connection {connectionId}: "
                "too long to relay with its sender's prefix",
                length=len(message),
                size=plural(len(message), "byte"),
                connectionId=sender,
            )
            return
        server.broadcast(relayed, exclude=sender)


class Record(StreamProtocol):
    """
    Continuous mode: each connection's bytes go to the sink the server's
    C{createSink} made for it (see L{recordSink}).
    """


def recordSink(directory: str | os.PathLike[str], server: Callable[[], Server]
               ) -> Callable[[int], IO[bytes] | None]:
    """
    Make the C{createSink} callback of the C{record} application.

    Each connection's bytes are appended to C{DIRECTORY/client-<id>.bin},
    unbuffered, so that the file is complete as far as the connection got
    even if the daemon is killed, and can be followed while it grows.
    Appending rather than truncating means that restarting the daemon, which
    counts ids from 1 again, never destroys an earlier recording.

    @param directory: where the files go; it must exist.
    @param server: returns the server, to close a connection whose file
        cannot be opened.
    """
    log = Logger(namespace="tcpsc.record")
    base = Path(directory)

    def createSink(connectionId: int) -> IO[bytes] | None:
        path = base / f"client-{connectionId}.bin"
        try:
            # Closed by StreamProtocol.connectionLost.
            sink = open(path, "ab", buffering=0)
        except OSError as e:
            log.error(
                "Closing connection {connectionId}: cannot open {path} to "
                "record it: {error}",
                connectionId=connectionId,
                path=str(path),
                error=e.strerror or str(e),
            )
            server().disconnect(connectionId)
            return None
        log.info("Recording connection {connectionId} to {path}",
                 connectionId=connectionId, path=str(path))
        return sink

    return createSink


#: The applications C{--app} knows by name: protocol class for fragmented
#: mode, protocol class for continuous mode (C{None}: not available), and a
#: one-line description.
BUILTIN_APPS: dict[str, tuple[type[MessageProtocol] | None, type[StreamProtocol] | None, str]] = {
    "echo": (Echo, StreamEcho, "each message (or chunk, with --stream) back to its sender"),
    "chat": (Chat, None, "each message to every other client, prefixed with the sender's id"),
    "record": (None, Record, "each connection's bytes into --record-dir/client-<id>.bin"),
}


def loadAppClass(spec: str) -> type[MessageProtocol] | type[StreamProtocol]:
    """
    Import the protocol class named by C{spec}, C{"package.module:Class"}.

    The current directory is put first on C{sys.path} if it is not there,
    as C{python -m} does, so that a module next to where the daemon is
    started can be served without installing it.

    @raise ValueError: C{spec} is not C{module:Class}, the module cannot be
        imported, it has no such class, or the class is not a
        L{MessageProtocol} or L{StreamProtocol} subclass; the message says
        which.
    """
    moduleName, sep, className = spec.partition(":")
    if not sep or not moduleName or not className:
        raise ValueError(
            f"--app {spec!r}: expected echo, chat, record or module:Class "
            "(for example examples.upper:Upper)"
        )
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(moduleName)
    except ImportError as e:
        raise ValueError(f"--app {spec!r}: cannot import module {moduleName!r}: {e}") from e
    except Exception as e:
        raise ValueError(
            f"--app {spec!r}: importing module {moduleName!r} failed: "
            f"{e.__class__.__name__}: {e}"
        ) from e
    cls: Any = module
    for part in className.split("."):
        try:
            cls = getattr(cls, part)
        except AttributeError:
            raise ValueError(
                f"--app {spec!r}: module {moduleName!r} has no attribute {className!r}"
            ) from None
    if not isinstance(cls, type) or not issubclass(cls, (MessageProtocol, StreamProtocol)):
        raise ValueError(
            f"--app {spec!r}: {className} is not a subclass of tcpsc.MessageProtocol "
            f"or tcpsc.StreamProtocol (it is {cls!r})"
        )
    return cls
