# -*- test-case-name: tests.test_tap -*-
"""
What the C{twistd tcpsc} daemon serves: the built-in applications C{echo},
C{chat} and C{record}, the echo over UDP (L{DatagramEcho}), and the loading
of a user's own protocol class named as C{module:Class}.

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
import itertools
import os
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._datagram import DatagramPeer
from ._events import plural
from ._framing import MessageProtocol, StreamProtocol

if TYPE_CHECKING:
    from ._server import Server

__all__ = [
    "BUILTIN_APPS",
    "DATAGRAM_APPS",
    "Broadcast",
    "Chat",
    "DatagramEcho",
    "Echo",
    "Record",
    "StreamEcho",
    "broadcastApp",
    "loadAppClass",
    "recordRunDirectory",
    "recordSink",
]


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
    not read its echoes, so none is dropped.  The echoes of one read's
    messages leave in one write, taken as a batch (L{messagesReceived}).
    """

    def messagesReceived(self, messages: list[bytes]) -> None:
        self._sendReceived(messages)

    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(message)


class StreamEcho(_PausesWithOutput, StreamProtocol):
    """
    Continuous mode: each chunk of bytes back to its sender.  Reading pauses
    while the sender does not read its echoes, so none is dropped.
    """

    def dataReceived(self, data: bytes) -> None:
        self.sendData(data)


class DatagramEcho(DatagramPeer):
    """
    Over UDP: each message back to the address it came from, in a datagram
    of its own.  A reply that cannot be sent (the socket's buffer is full)
    is dropped and counted by the server, as UDP loses datagrams.
    """

    def messageReceived(self, message: bytes) -> None:
        self.sendMessage(message)


class Chat(MessageProtocol):
    """
    Each message to every other client of the server, prefixed with the
    sender's connection id (C{b"3: hello"}), as CppServer's chat server
    relays a client's message to the others.
    """

    log = Logger()
    #: Its messages go to the other clients: with C{--workers}, it needs
    #: C{--cluster} (see the daemon's C{--workers}).
    reachesOtherClients = True

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


class Broadcast(MessageProtocol):
    """
    Sends every client the same messages at a set rate, the counterpart of
    CppServer's multicast server (and the server C{tcpsc bench multicast}
    measures).  Each message is C{messageSize} bytes, delimiter included:
    its sequence number in decimal, padded with zeros.  What clients send
    is ignored.

    The messages go out through L{Server.broadcast}, so a client that does
    not read misses messages rather than filling the server's memory.  One
    timer per server runs while at least one client is connected; every
    tick it sends the messages due since the first client connected, at
    most one second's worth (a stalled process does not burst).

    The daemon serves a subclass made by L{broadcastApp} with the rate and
    size of its options.
    """

    #: Messages per second.
    rate: float = 1000.0
    #: Bytes per message, delimiter included.
    messageSize: int = 32
    #: Seconds between two ticks of the timer.
    tick: float = 0.01

    def connectionReady(self) -> None:
        _Broadcaster.of(self.factory, type(self)).start()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        server = self.factory
        if server is not None:
            _Broadcaster.of(server, type(self)).stopIfIdle()

    def messageReceived(self, message: bytes) -> None:
        pass


class _Broadcaster:
    """
    The timer of one server's L{Broadcast} application.
    """

    def __init__(self, server: Server, app: type[Broadcast]) -> None:
        self.server = server
        self.app = app
        self.reactor = server._reactor
        self.sequence = 0
        self.call: Any = None
        self.started = 0.0
        self.sent = 0

    @classmethod
    def of(cls, server: Server, app: type[Broadcast]) -> _Broadcaster:
        """
        The timer of C{server}, made at its first client.
        """
        broadcaster = _broadcasters.get(server)
        if broadcaster is None:
            broadcaster = _broadcasters[server] = cls(server, app)
        return broadcaster

    def start(self) -> None:
        """
        Start the timer, unless it runs.
        """
        if self.call is None:
            self.started = self.reactor.seconds()
            self.sent = 0
            self.call = self.reactor.callLater(self.app.tick, self.send)

    def stopIfIdle(self) -> None:
        """
        Stop the timer once no client is left.
        """
        if not self.server.clientIds() and self.call is not None:
            if self.call.active():
                self.call.cancel()
            self.call = None

    def send(self) -> None:
        self.call = None
        due = int(self.app.rate * (self.reactor.seconds() - self.started)) - self.sent
        if due > self.app.rate:
            # Behind by more than a second: skip ahead rather than burst.
            self.sent += due - int(self.app.rate)
            due = int(self.app.rate)
        width = self.app.messageSize - len(self.app.delimiter)
        for _ in range(max(due, 0)):
            self.sequence = (self.sequence + 1) % (10**width)
            self.server.broadcast(b"%0*d" % (width, self.sequence))
        self.sent += max(due, 0)
        if self.server.clientIds():
            self.call = self.reactor.callLater(self.app.tick, self.send)


#: The timer of each server serving L{Broadcast}.
_broadcasters: weakref.WeakKeyDictionary[Server, _Broadcaster] = weakref.WeakKeyDictionary()


def broadcastApp(rate: float, messageSize: int, delimiter: bytes = b"\n") -> type[Broadcast]:
    """
    The L{Broadcast} application with its rate, message size and
    delimiter.

    @param rate: messages per second.
    @param messageSize: bytes per message, the delimiter included.
    @raise ValueError: a rate of 0 or less, or a size that leaves no byte
        beside the delimiter.
    """
    if not 0 < rate < float("inf"):
        raise ValueError(f"--rate {rate:g}: must be more than 0 messages per second")
    if messageSize < len(delimiter) + 1:
        raise ValueError(
            f"--message-size {messageSize}: must be at least "
            f"{len(delimiter) + 1} bytes (the delimiter included)"
        )
    return type(
        "Broadcast",
        (Broadcast,),
        {"rate": rate, "messageSize": messageSize, "delimiter": delimiter, "__module__": __name__},
    )


class Record(StreamProtocol):
    """
    Continuous mode: each connection's bytes go to the sink the server's
    C{createSink} made for it (see L{recordSink}).
    """


def recordSink(
    directory: str | os.PathLike[str], server: Callable[[], Server]
) -> Callable[[int], IO[bytes] | None]:
    """
    Make the C{createSink} callback of the C{record} application.

    Each connection's bytes are written to a new file
    C{DIRECTORY/client-<id>.bin}, unbuffered, so that the file is complete
    as far as the connection got even if the daemon is killed, and can be
    followed while it grows.  The file is created exclusively: a file that
    exists already is never appended to nor truncated (the connection is
    closed and the cause logged instead), so give each run of a server its
    own directory (L{recordRunDirectory}), as ids count from 1 again.

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
            sink = open(path, "xb", buffering=0)
        except OSError as e:
            log.error(
                "Closing connection {connectionId}: cannot open {path} to record it: {error}",
                connectionId=connectionId,
                path=str(path),
                error=e.strerror or str(e),
            )
            server().disconnect(connectionId)
            return None
        log.info(
            "Recording connection {connectionId} to {path}",
            connectionId=connectionId,
            path=str(path),
        )
        return sink

    return createSink


def recordRunDirectory(base: str | os.PathLike[str], now: float | None = None) -> Path:
    """
    Create the directory of one run of the C{record} application inside
    C{base} (created if missing): named after the UTC time of the start,
    C{YYYYMMDD-HHMMSS}, with C{-2}, C{-3}, ... added if that exists, so that
    no two runs ever share a directory.

    @param now: the time of the start (seconds since the epoch); now by
        default.
    @raise OSError: a directory cannot be created.
    """
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    for attempt in itertools.count(1):
        candidate = base / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable")


#: The applications C{--app} knows by name: protocol class for fragmented
#: mode, protocol class for continuous mode (C{None}: not available), and a
#: one-line description.
BUILTIN_APPS: dict[str, tuple[type[MessageProtocol] | None, type[StreamProtocol] | None, str]] = {
    "echo": (Echo, StreamEcho, "each message (or chunk, with --stream) back to its sender"),
    "chat": (Chat, None, "each message to every other client, prefixed with the sender's id"),
    "broadcast": (
        Broadcast,
        None,
        "the same messages to every client at --rate, --message-size bytes each",
    ),
    "record": (
        None,
        Record,
        "each connection's bytes into a new directory of --record-dir "
        "per run, one file client-<id>.bin per connection",
    ),
}


#: The applications C{--app} serves over C{--udp}, by name.
DATAGRAM_APPS: dict[str, type[DatagramPeer]] = {"echo": DatagramEcho}


def loadAppClass(spec: str) -> type[MessageProtocol] | type[StreamProtocol] | type[DatagramPeer]:
    """
    Import the protocol class named by C{spec}, C{"package.module:Class"}.

    The current directory is put first on C{sys.path} if it is not there,
    as C{python -m} does, so that a module next to where the daemon is
    started can be served without installing it.

    @raise ValueError: C{spec} is not C{module:Class}, the module cannot be
        imported, it has no such class, or the class is not a
        L{MessageProtocol}, L{StreamProtocol} or L{DatagramPeer} subclass;
        the message says which.
    """
    moduleName, sep, className = spec.partition(":")
    if not sep or not moduleName or not className:
        raise ValueError(
            f"--app {spec!r}: expected echo, chat, broadcast, record or module:Class "
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
            f"--app {spec!r}: importing module {moduleName!r} failed: {e.__class__.__name__}: {e}"
        ) from e
    cls: Any = module
    for part in className.split("."):
        try:
            cls = getattr(cls, part)
        except AttributeError:
            raise ValueError(
                f"--app {spec!r}: module {moduleName!r} has no attribute {className!r}"
            ) from None
    if not isinstance(cls, type) or not issubclass(
        cls, (MessageProtocol, StreamProtocol, DatagramPeer)
    ):
        raise ValueError(
            f"--app {spec!r}: {className} is not a subclass of tcpsc.MessageProtocol, "
            f"tcpsc.StreamProtocol or tcpsc.DatagramPeer (it is {cls!r})"
        )
    return cls
