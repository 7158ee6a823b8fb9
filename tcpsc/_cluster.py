# -*- test-case-name: tests.test_cluster -*-
"""
A registry of connections that spans processes and hosts through one Redis:
L{ClusterRegistry}, what C{Server(cluster="redis://...")} uses.

Every node holds its own connections in a L{LocalRegistry} and a mirror of
the directory of the others' (id to node, peer address, certificate), so
that C{ids()}, C{address()}, C{certificate()} and whether C{send()} can
reach an id are answered at once, with no round trip.  In Redis, under a
prefix (C{tcpsc:} by default):

  - C{{prefix}next}: the counter ids are reserved from, in blocks
    (C{INCRBY}); a node issues the ids of its block without asking Redis,
    and reserves the next block when half of the current one is used.
  - C{{prefix}dir}: the directory, a hash of id to
    C{node NUL host NUL port NUL certificate-PEM}; C{{prefix}ids:NODE}, the
    ids of each node; C{{prefix}nodes}, the nodes.
  - C{{prefix}hb:NODE}: each node's heartbeat, a key with a time to live
    that the node sets again well within it.  Every node checks the others'
    periodically; the first to find one expired removes that node's ids
    from the directory and announces it (a Lua script: atomic, so once).
  - C{{prefix}stream}: one stream for the traffic of the whole cluster, in
    the order Redis received it: broadcasts (with the ids they exclude),
    sends (with the id they are for), directory changes.  Each entry holds
    everything one node wrote in one reactor turn (one C{XADD}, trimmed
    with C{MAXLEN ~}).  Each node reads it with C{XREAD BLOCK} on a
    connection of its own, from the last entry it read: after that
    connection drops it resumes there, so what was written meanwhile is
    delivered, in order, once.

One stream rather than one per node for the sends: the messages from one
node to one client (a send and a broadcast among them) then arrive in the
order they were sent, which two streams read together would not keep.  The
price is that every node reads every send, which is right for a handful of
nodes.

What a node writes is kept until Redis acknowledged it, and written again
after its connection is made again; each entry carries the node's own
sequence number, so that readers skip one they have already seen (an entry
written twice because the acknowledgement was lost with the connection).
While the connection is down, what the node writes is queued up to
C{maxQueuedBytes}; past that, messages for other nodes are refused (C{send}
to a remote id returns C{False}, a broadcast reaches the local clients only)
and counted in a logged event, while directory changes (small) are still
queued.

txredisapi is imported here, when a registry is made, and nowhere else: a
server without a cluster does not need it.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from ._errors import ServerError, StartError
from ._registry import IConnectionRegistry, LocalRegistry

if TYPE_CHECKING:
    from cryptography import x509
    from twisted.internet.interfaces import IReactorTime
    from twisted.logger import Logger

    from ._broadcast import Broadcaster
    from ._events import EventSummary
    from ._framing import MessageProtocol, StreamProtocol, _ConnectionBase

__all__ = [
    "INSTALL_HINT",
    "ClusterConfig",
    "ClusterError",
    "ClusterRegistry",
    "parseClusterURL",
    "probeCluster",
]

INSTALL_HINT = 'pip install "tcpsc[cluster]"'

_KNOWN_QUERY = {"prefix", "ttl"}


class ClusterError(StartError):
    """
    The cluster could not be joined: Redis unreachable, refused the
    credentials or the database (code 45).
    """

    defaultCode = 45


class IdsExhausted(ServerError):
    """
    No cluster-wide id is left in this node's reserved blocks: the next
    block has not come back from Redis yet.
    """


@dataclass(frozen=True)
class ClusterConfig:
    """
    Where the cluster's Redis is and how the cluster uses it, from a
    C{redis://} URL.

    @ivar url: the URL as given (with any password), for messages use
        L{describe}.
    @ivar prefix: the prefix of every key (C{?prefix=}; C{tcpsc:} by
        default): clusters with other prefixes share a Redis unseen.
    @ivar ttl: seconds a node's heartbeat lives (C{?ttl=}; 15 by
        default): a node silent for that long is taken for dead and its
        clients leave the directory.  It must exceed the longest outage of
        a node's Redis connection that is to lose nothing.
    """

    url: str
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    prefix: str = "tcpsc:"
    ttl: float = 15.0

    def describe(self) -> str:
        """
        The URL without its password, for messages and logs.
        """
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{user}{host}:{self.port}/{self.db}"


def parseClusterURL(url: str) -> ClusterConfig:
    """
    Parse a C{redis://[USER[:PASSWORD]@]HOST[:PORT][/DB][?prefix=P&ttl=S]}
    URL.

    @raise ValueError: not such a URL, naming it and what is wrong.
    """

    def bad(why: str) -> ValueError:
        return ValueError(f"cluster URL {url!r}: {why}")

    if not isinstance(url, str):
        raise ValueError(f"cluster URL {url!r}: expected a string such as redis://127.0.0.1:6379/0")
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise bad("expected redis://HOST[:PORT][/DB]")
    try:
        port = parts.port if parts.port is not None else 6379
    except ValueError:
        raise bad("the port is not a number from 1 to 65535") from None
    host = parts.hostname
    if not host:
        raise bad("no host")
    if port == 0:
        raise bad("the port is not a number from 1 to 65535")
    path = parts.path.lstrip("/")
    if path and (not path.isdigit() or len(path) > 5):
        raise bad(f"the database {path!r} is not a number")
    prefix = "tcpsc:"
    ttl = 15.0
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if name not in _KNOWN_QUERY:
            raise bad(f"unknown parameter {name!r} (known: {', '.join(sorted(_KNOWN_QUERY))})")
        if name == "prefix":
            if not value:
                raise bad("the prefix is empty")
            prefix = value
        else:
            try:
                ttl = float(value)
            except ValueError:
                raise bad(f"ttl {value!r} is not a number of seconds") from None
            if not 1 <= ttl <= 3600:
                raise bad(f"ttl {value!r} is not from 1 to 3600 seconds")
    if parts.fragment:
        raise bad("a fragment (#...) means nothing here")
    return ClusterConfig(
        url=url,
        host=host,
        port=port,
        db=int(path or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        prefix=prefix,
        ttl=ttl,
    )


def probeCluster(url: str | ClusterConfig, timeout: float = 5.0) -> None:
    """
    Ask the cluster's Redis, blocking, whether it answers: connect, AUTH
    and SELECT as a node would, then PING; for a program that must fail at
    once, before its reactor runs, if the cluster cannot be joined (the
    daemon).

    @raise ClusterError: no answer within C{timeout} seconds, or an error
        reply, in words naming the URL.
    """
    import socket

    config = url if isinstance(url, ClusterConfig) else parseClusterURL(url)
    commands: list[list[bytes]] = []
    if config.password is not None:
        auth = [b"AUTH", config.password.encode()]
        if config.username:
            auth.insert(1, config.username.encode())
        commands.append(auth)
    commands.append([b"SELECT", b"%d" % config.db])
    commands.append([b"PING"])
    request = b"".join(
        b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in c) for c in commands
    )
    try:
        with socket.create_connection((config.host, config.port), timeout=timeout) as s:
            s.sendall(request)
            reader = s.makefile("rb")
            for _ in commands:
                line = reader.readline(4096)
                if not line:
                    raise OSError("Redis closed the connection")
                if line.startswith(b"-"):
                    raise OSError(line[1:].strip().decode(errors="replace"))
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        if isinstance(e, TimeoutError) or isinstance(e, socket.timeout):
            why = f"no answer within {timeout:g} s"
        raise ClusterError(f"cannot join the cluster at {config.describe()}: {why}") from None


def _txredisapi() -> Any:
    try:
        import txredisapi
    except ImportError:
        raise ImportError(
            f"a cluster needs txredisapi, which is not installed: {INSTALL_HINT}"
        ) from None
    return txredisapi


# Removes a node that is gone: its ids out of the directory, announced on
# the stream, once (the SREM decides who does it).  ARGV: prefix, node,
# MAXLEN, "1" to remove it even if its heartbeat lives (a node leaving).
_REAP = """
local p, node = ARGV[1], ARGV[2]
if ARGV[4] ~= '1' and redis.call('EXISTS', p .. 'hb:' .. node) == 1 then return -1 end
if redis.call('SREM', p .. 'nodes', node) == 0 then return -1 end
local ids = redis.call('SMEMBERS', p .. 'ids:' .. node)
for i = 1, #ids, 1000 do
  redis.call('HDEL', p .. 'dir', unpack(ids, i, math.min(i + 999, #ids)))
end
redis.call('DEL', p .. 'ids:' .. node, p .. 'hb:' .. node)
redis.call('XADD', p .. 'stream', 'MAXLEN', '~', ARGV[3], '*', 'n', '', 'q', '0', 'D', node)
return #ids
"""


# Reserves a block of ids: the counter first raised to at least ARGV[1]
# (the highest id the node knows of: after Redis restarted without
# persistence the counter starts again from 0), then INCRBY ARGV[2].
_RESERVE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return redis.call('INCRBY', KEYS[1], ARGV[2])
"""


@dataclass
class _Remote:
    """
    An id of another node, as the directory has it.
    """

    node: bytes
    host: str
    port: int
    pem: bytes
    certificate: Any = None


@dataclass
class _Batch:
    """
    What one reactor turn wrote: Redis commands, the bytes they count
    against the queue's bound.
    """

    commands: list[tuple[Any, ...]]
    size: int


class _Link:
    """
    One Redis connection, made with the injected reactor, authenticated and
    on its database, ready for commands.
    """

    def __init__(self, owner: ClusterRegistry, name: str) -> None:
        self.owner = owner
        self.name = name
        self.protocol: Any = None
        self.ready = False
        self.lastError = ""
        self._calls: list[Any] = []

    def connect(self) -> Deferred[Any]:
        """
        Connect, AUTH and SELECT; fires with the protocol, or fails within
        the connect timeout.
        """
        owner = self.owner
        config = owner.config
        txredisapi = owner._txredisapi
        link = self

        class Protocol(txredisapi.BaseRedisProtocol):  # type: ignore[name-defined]
            _extra = b""

            def setLineMode(self, extra: bytes = b"") -> None:
                # txredisapi parses what follows a bulk string in a call of
                # the next reactor turn, with the socket paused: a stream
                # read of many entries would take a turn per field.  Parsed
                # on in this call instead (see dataReceived).
                self.line_mode = 1
                if extra:
                    self._extra = extra

            def dataReceived(self, data: bytes, unpause: bool = False) -> None:
                super().dataReceived(data, unpause)
                while self._extra:
                    extra, self._extra = self._extra, b""
                    super().dataReceived(extra)

            def connectionLost(self, why: Failure) -> None:
                super().connectionLost(why)
                link._lost(self, why)

        protocol = Protocol(charset=None, convertNumbers=False)
        calls = self._calls = []

        def callLater(delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
            # The protocol's parser goes on in a call of the next turn:
            # tracked, so that closing the connection cancels it.
            if len(calls) > 64:
                calls[:] = [c for c in calls if c.active()]
            call = owner._reactor.callLater(delay, f, *args, **kwargs)
            calls.append(call)
            return call

        protocol.callLater = callLater
        protocol.factory = _FactoryStub()
        endpoint = HostnameEndpoint(
            owner._reactor, config.host, config.port, timeout=owner.connectTimeout
        )
        result: Deferred[Any] = Deferred()
        timer = owner._reactor.callLater(owner.connectTimeout, self._timedOut, result, protocol)

        def connected(p: Any) -> Any:
            # With no password and no database given to it, the protocol is
            # ready once connected (AUTH and SELECT are sent below).
            if not p.connected:
                raise ConnectionError("the connection was lost at once")
            # A command is written whole at once: no need to hold small
            # writes back (Nagle), which would delay a reply's successor.
            p.transport.setTcpNoDelay(True)
            return p

        def prepare(p: Any) -> Deferred[Any]:
            commands = []
            if config.password is not None:
                if config.username:
                    commands.append(p.execute_command("AUTH", config.username, config.password))
                else:
                    commands.append(p.execute_command("AUTH", config.password))
            if config.db:
                commands.append(p.execute_command("SELECT", config.db))
            commands.append(
                p.execute_command("CLIENT", "SETNAME", f"tcpsc-{self.name}-{owner.node.decode()}")
            )
            return DeferredList(commands, fireOnOneErrback=True, consumeErrors=True).addCallback(
                lambda _: p
            )

        def done(p: Any) -> None:
            if timer.active():
                timer.cancel()
            if result.called:
                return
            self.protocol = p
            self.ready = True
            result.callback(p)

        def failed(f: Failure) -> None:
            if timer.active():
                timer.cancel()
            value = f.value
            first = getattr(value, "subFailure", None)
            if first is not None:
                f = first
            self.lastError = f.getErrorMessage() or f.type.__name__
            if protocol.transport is not None:
                protocol.transport.abortConnection()
            if not result.called:
                result.errback(f)

        endpoint.connect(_OneProtocol(protocol)).addCallback(connected).addCallback(
            prepare
        ).addCallbacks(done, failed)
        return result

    def _timedOut(self, result: Deferred[Any], protocol: Any) -> None:
        self.lastError = f"no answer within {self.owner.connectTimeout:g} s"
        if protocol.transport is not None:
            protocol.transport.abortConnection()
        if not result.called:
            result.errback(Failure(TimeoutError(self.lastError)))

    def _lost(self, protocol: Any, why: Failure) -> None:
        if protocol is self.protocol:
            self.protocol = None
            self.ready = False
            self.owner._linkLost(self)

    def close(self) -> None:
        protocol, self.protocol = self.protocol, None
        self.ready = False
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abortConnection()


class _OneProtocol(Factory):
    """
    Builds the one protocol given, quietly (Twisted's C{connectProtocol}
    logs each connection's factory starting and stopping).
    """

    noisy = False

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Any:
        return self._protocol


class _FactoryStub:
    """
    What txredisapi's protocol asks of its factory when it authenticates
    itself (it does not here: L{_Link} does).
    """

    isLazy = False

    def stopTrying(self) -> None:
        pass

    def connectionError(self, message: str) -> None:
        pass


@implementer(IConnectionRegistry)
class ClusterRegistry:
    """
    The connections of every node of a cluster sharing one Redis; see the
    module's docstring for the data model.

    @ivar node: this node's name in the cluster (random, new for each
        registry).
    @ivar config: the cluster's L{ClusterConfig}.
    @ivar blockSize: how many ids one C{INCRBY} reserves.
    @ivar streamMaxLen: the stream is trimmed to about this many entries
        (C{MAXLEN ~}); a node that is behind by more loses the oldest.
    @ivar maxQueuedBytes: the most bytes of messages kept for Redis while
        this node's connection to it is down (or slower than the node).
    @ivar connectTimeout: seconds to connect to Redis; also the bound of
        joining and leaving.
    """

    blockSize = 1024
    streamMaxLen = 100_000
    maxQueuedBytes = 64 * 1024 * 1024
    #: Seconds an XREAD blocks in Redis; a reply later than that plus the
    #: connect timeout means the connection is dead.
    readBlock = 5.0
    readCount = 1000

    def __init__(
        self,
        url: str | ClusterConfig,
        reactor: IReactorTime,
        events: EventSummary,
        log: Logger,
        maxBroadcastSkips: int | None = None,
        connectTimeout: float = 5.0,
    ) -> None:
        """
        @param url: the cluster's C{redis://} URL (see L{parseClusterURL}).
        @raise ValueError: a bad URL.
        @raise ImportError: txredisapi is not installed.
        """
        self.config = url if isinstance(url, ClusterConfig) else parseClusterURL(url)
        self._txredisapi = _txredisapi()
        self._reactor: Any = reactor
        self._events = events
        self._log = log
        self.connectTimeout = connectTimeout
        self.node = uuid.uuid4().hex[:16].encode()
        self._local = LocalRegistry(reactor, events, log, maxBroadcastSkips, idSource=self._takeId)
        prefix = self.config.prefix
        self._kNext = f"{prefix}next"
        self._kDir = f"{prefix}dir"
        self._kNodes = f"{prefix}nodes"
        self._kStream = f"{prefix}stream"
        self._kIds = f"{prefix}ids:{self.node.decode()}"
        self._kHeartbeat = f"{prefix}hb:{self.node.decode()}"
        # Ids reserved and not issued: [next, end] pairs.
        self._blocks: deque[list[int]] = deque()
        # The highest id this node reserved or saw.
        self._highest = 0
        self._refilling = False
        # The directory of the other nodes, and what this node published
        # for its own established ids.
        self._remote: dict[int, _Remote] = {}
        self._published: dict[int, bytes] = {}
        # This turn's writes: stream fields in order, directory changes.
        self._fields: list[bytes] = []
        self._fieldBytes = 0
        self._dirChanges: dict[int, bytes | None] = {}
        self._flushCall: IDelayedCall | None = None
        self._seq = 0
        # Written and not acknowledged by Redis, oldest first.
        self._unacked: deque[_Batch] = deque()
        self._queuedBytes = 0
        # Reading.
        self._lastId = b"0-0"
        self._seen: dict[bytes, int] = {}
        self._readTimer: IDelayedCall | None = None
        self._writer = _Link(self, "w")
        self._reader = _Link(self, "r")
        self._joinWaiters: list[Deferred[None]] = []
        self._running = False
        self._retry: dict[str, IDelayedCall] = {}
        self._timers: list[Any] = []
        self._outageLogged = False

    # -- what the server uses of a local registry --------------------------

    @property
    def broadcaster(self) -> Broadcaster:
        return self._local.broadcaster

    @property
    def registered(self) -> int:
        return self._local.registered

    def connections(self) -> Mapping[int, _ConnectionBase]:
        return self._local.connections()

    def openCount(self) -> int:
        return self._local.openCount()

    def peerCount(self, host: str) -> int:
        return self._local.peerCount(host)

    def lookup(self, connectionId: int) -> MessageProtocol | StreamProtocol | None:
        return self._local.lookup(connectionId)

    # -- ids ----------------------------------------------------------------

    def _takeId(self) -> int:
        blocks = self._blocks
        while blocks and blocks[0][0] > blocks[0][1]:
            blocks.popleft()
        if not blocks:
            self._refill()
            raise IdsExhausted(
                "no cluster id left: the next block of ids has not come back from Redis "
                f"({self.config.describe()}) yet"
            )
        block = blocks[0]
        connectionId = block[0]
        block[0] += 1
        if len(blocks) == 1 and block[1] - block[0] < self.blockSize // 2:
            self._refill()
        return connectionId

    def _refill(self) -> None:
        if self._refilling or not self._writer.ready:
            return
        self._refilling = True

        def reserved(end: Any) -> None:
            self._refilling = False
            self._addBlock(int(end))

        def failed(f: Failure) -> None:
            self._refilling = False
            self._log.warn(
                "Could not reserve cluster ids from Redis: {error}", error=f.getErrorMessage()
            )

        self._reserve(self._writer.protocol).addCallbacks(reserved, failed)

    def _reserve(self, protocol: Any) -> Deferred[Any]:
        return protocol.execute_command(
            "EVAL", _RESERVE, 1, self._kNext, self._highest, self.blockSize
        )

    def _addBlock(self, end: int) -> None:
        self._blocks.append([end - self.blockSize + 1, end])
        self._highest = max(self._highest, end)

    # -- connections' lives -------------------------------------------------

    def register(self, connection: _ConnectionBase, peerHost: str | None = None) -> int:
        return self._local.register(connection, peerHost)

    def establish(self, connectionId: int) -> None:
        self._local.establish(connectionId)
        host, port = self._local.address(connectionId)
        certificate = self._local.certificate(connectionId)
        pem = b""
        if certificate is not None:
            from cryptography.hazmat.primitives.serialization import Encoding

            pem = certificate.public_bytes(Encoding.PEM)
        value = b"\0".join([self.node, host.encode(), b"%d" % port, pem])
        self._published[connectionId] = value
        self._dirChanges[connectionId] = value
        self._add(b"j%d" % connectionId, value, directory=True)

    def withdraw(self, connectionId: int) -> None:
        self._local.withdraw(connectionId)
        self._unpublish(connectionId)

    def unregister(self, connectionId: int) -> _ConnectionBase | None:
        self._unpublish(connectionId)
        return self._local.unregister(connectionId)

    def _unpublish(self, connectionId: int) -> None:
        if self._published.pop(connectionId, None) is not None:
            self._dirChanges[connectionId] = None
            self._add(b"l%d" % connectionId, b"", directory=True)

    # -- reaching connections -----------------------------------------------

    def ids(self) -> list[int]:
        if not self._remote:
            return self._local.ids()
        return sorted({*self._local.ids(), *self._remote})

    def send(self, connectionId: int, data: bytes | str) -> bool:
        """
        See L{IConnectionRegistry.send}: to an id of another node, C{True}
        means accepted for delivery (queued for Redis), not delivered.
        """
        if self._local.lookup(connectionId) is not None:
            return self._local.send(connectionId, data)
        if not isinstance(connectionId, int) or connectionId not in self._remote:
            return False
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        return self._add(b"s%d" % connectionId, payload)

    def broadcast(self, data: bytes | str, exclude: int | Collection[int] | None = None) -> int:
        written = self._local.broadcast(data, exclude)
        if self._running:
            if exclude is None:
                excluded = b""
            elif isinstance(exclude, int):
                excluded = b"%d" % exclude
            else:
                excluded = b",".join(b"%d" % i for i in exclude if isinstance(i, int))
            payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            self._add(b"b" + excluded, payload)
        return written

    def address(self, connectionId: int) -> tuple[str, int]:
        if self._local.lookup(connectionId) is not None:
            return self._local.address(connectionId)
        remote = self._remote.get(connectionId) if isinstance(connectionId, int) else None
        if remote is None:
            raise ServerError(f"no connected client with id {connectionId!r}")
        return remote.host, remote.port

    def certificate(self, connectionId: int) -> x509.Certificate | None:
        if self._local.lookup(connectionId) is not None:
            return self._local.certificate(connectionId)
        remote = self._remote.get(connectionId) if isinstance(connectionId, int) else None
        if remote is None:
            raise ServerError(f"no connected client with id {connectionId!r}")
        if not remote.pem:
            return None
        if remote.certificate is None:
            from cryptography import x509 as x509_

            remote.certificate = x509_.load_pem_x509_certificate(remote.pem)
        return remote.certificate  # type: ignore[no-any-return,unused-ignore]

    # -- writing --------------------------------------------------------------

    def _add(self, field: bytes, value: bytes, directory: bool = False) -> bool:
        """
        Add one operation to this turn's entry.

        @return: C{False} if it was refused: a message past the queue's
            bound.
        """
        size = len(field) + len(value) + 16
        if not directory and self._queuedBytes + self._fieldBytes + size > self.maxQueuedBytes:
            self._events.record(
                "clusterQueueFull",
                "Refused a message for other cluster nodes: {queued} bytes already wait "
                "for Redis ({url}), the bound of the queue",
                queued=self._queuedBytes + self._fieldBytes,
                url=self.config.describe(),
                reason="clusterQueueFull",
            )
            return False
        self._fields.append(field)
        self._fields.append(value)
        self._fieldBytes += size
        if self._flushCall is None and self._running:
            self._flushCall = self._reactor.callLater(0, self._flush)
        return True

    def _flush(self) -> None:
        """
        Write this turn's operations to Redis: the directory changes, then
        one stream entry with all of them.
        """
        self._flushCall = None
        if not self._fields and not self._dirChanges:
            return
        commands: list[tuple[Any, ...]] = []
        changes, self._dirChanges = self._dirChanges, {}
        added = [(i, v) for i, v in changes.items() if v is not None]
        removed = [i for i, v in changes.items() if v is None]
        if added:
            commands.append(("HSET", self._kDir, *[x for pair in added for x in pair]))
            commands.append(("SADD", self._kIds, *[i for i, _ in added]))
        if removed:
            commands.append(("HDEL", self._kDir, *removed))
            commands.append(("SREM", self._kIds, *removed))
        fields, self._fields = self._fields, []
        size, self._fieldBytes = self._fieldBytes, 0
        if fields:
            self._seq += 1
            commands.append(
                (
                    "XADD",
                    self._kStream,
                    "MAXLEN",
                    "~",
                    self.streamMaxLen,
                    "*",
                    b"n",
                    self.node,
                    b"q",
                    b"%d" % self._seq,
                    *fields,
                )
            )
        batch = _Batch(commands, size)
        self._unacked.append(batch)
        self._queuedBytes += size
        if self._writer.ready:
            self._write(batch)

    def _write(self, batch: _Batch) -> None:
        protocol = self._writer.protocol
        results = [protocol.execute_command(*command) for command in batch.commands]

        def written(outcomes: list[tuple[bool, Any]]) -> None:
            if not all(ok for ok, _ in outcomes) and (
                not protocol.connected or protocol is not self._writer.protocol
            ):
                # The connection was lost first: written again on the next.
                return
            for ok, value in outcomes:
                if not ok:
                    self._log.warn(
                        "Redis ({url}) refused a cluster write, which is dropped: {error}",
                        url=self.config.describe(),
                        error=value.getErrorMessage(),
                    )
            if self._unacked and self._unacked[0] is batch:
                self._unacked.popleft()
                self._queuedBytes -= batch.size

        DeferredList(results, consumeErrors=True).addCallback(written)

    # -- joining, leaving, heartbeats ------------------------------------------

    def join(self) -> Deferred[None]:
        """
        Join the cluster: reserve the first block of ids, load the
        directory, start reading the stream and the heartbeats.

        @return: fires once joined; fails with L{ClusterError} if Redis
            cannot be reached within the connect timeout.
        """
        waiter: Deferred[None] = Deferred()
        if self.joined:
            waiter.callback(None)
            return waiter
        self._joinWaiters.append(waiter)
        if not self._running:
            self._running = True
            self._join().addBoth(self._joinDone)
        return waiter

    @property
    def joined(self) -> bool:
        """
        Whether this node is in the cluster: joined and not left.
        """
        return self._running and not self._joinWaiters

    def _joinDone(self, result: Failure | None) -> None:
        waiters, self._joinWaiters = self._joinWaiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)

    def _join(self) -> Deferred[None]:
        where = self.config.describe()

        bound = 2 * self.connectTimeout

        def unreachable(f: Failure) -> Failure:
            self._running = False
            self._writer.close()
            self._reader.close()
            if f.check(defer.TimeoutError):
                why = f"not joined within {bound:g} s"
            else:
                why = f.getErrorMessage() or f.type.__name__
            raise ClusterError(f"cannot join the cluster at {where}: {why}")

        def start(p: Any) -> Deferred[Any]:
            commands = [
                p.execute_command(
                    "SET", self._kHeartbeat, self.node, "PX", int(self.config.ttl * 1000)
                ),
                p.execute_command("SADD", self._kNodes, self.node),
                self._reserve(p),
                p.execute_command("XREVRANGE", self._kStream, "+", "-", "COUNT", 1),
                p.execute_command("HGETALL", self._kDir),
            ]
            return DeferredList(commands, fireOnOneErrback=True, consumeErrors=True)

        def loaded(outcomes: list[tuple[bool, Any]]) -> Deferred[Any]:
            self._addBlock(int(outcomes[2][1]))
            last = outcomes[3][1]
            if last:
                self._lastId = last[0][0]
            directory = outcomes[4][1] or []
            for i in range(0, len(directory) - 1, 2):
                self._remember(int(directory[i]), directory[i + 1])
            return self._reader.connect()

        def joined(_: object) -> None:
            if not self._running:
                # Left while joining.
                self._reader.close()
                self._writer.close()
                return
            self._read()
            interval = self.config.ttl / 5
            from twisted.internet.task import LoopingCall

            for call, period in ((self._beat, interval), (self._reap, self.config.ttl / 3)):
                loop = LoopingCall(call)
                loop.clock = self._reactor
                loop.start(period, now=False).addErrback(
                    lambda f: self._log.failure("Cluster timer failed", f)
                )
                self._timers.append(loop)
            self._log.info(
                "Joined the cluster at {url} as node {node} ({count} ids of other nodes)",
                url=where,
                node=self.node.decode(),
                count=len(self._remote),
            )
            if self._fields or self._dirChanges:
                self._flush()

        return (
            self._writer.connect()
            .addCallback(start)
            .addCallback(loaded)
            .addTimeout(bound, self._reactor)
            .addCallbacks(joined, unreachable)
        )

    def leave(self) -> Deferred[None]:
        """
        Leave the cluster: this node's ids out of the directory (announced),
        its Redis connections closed.  Bounded by the connect timeout: a
        node that cannot tell Redis is removed by the others once its
        heartbeat expires.
        """
        if not self._running:
            return succeed(None)
        self._running = False
        for loop in self._timers:
            if loop.running:
                loop.stop()
        self._timers = []
        for call in self._retry.values():
            if call.active():
                call.cancel()
        self._retry.clear()
        if self._readTimer is not None and self._readTimer.active():
            self._readTimer.cancel()
        self._readTimer = None
        self._reader.close()
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        self._flush()
        done: Deferred[None] = Deferred()
        if not self._writer.ready:
            self._writer.close()
            self._log.warn(
                "Left the cluster at {url} without telling Redis (not connected): the other "
                "nodes remove this node's ids once its heartbeat expires",
                url=self.config.describe(),
            )
            self._reactor.callLater(0, done.callback, None)
            return done
        protocol = self._writer.protocol
        last = protocol.execute_command(
            "EVAL",
            _REAP,
            0,
            self.config.prefix,
            self.node,
            self.streamMaxLen,
            "1",
        )
        timer = self._reactor.callLater(self.connectTimeout, lambda: finish(None))

        def finish(_: object) -> None:
            if timer.active():
                timer.cancel()
            self._writer.close()
            if not done.called:
                self._log.info("Left the cluster at {url}", url=self.config.describe())
                # txredisapi's protocol parses the rest of what it read in a
                # call of the next turn: done after it.
                self._reactor.callLater(0, done.callback, None)

        last.addBoth(finish)
        return done

    def _beat(self) -> None:
        if self._writer.ready:
            self._writer.protocol.execute_command(
                "SET", self._kHeartbeat, self.node, "PX", int(self.config.ttl * 1000)
            ).addErrback(lambda f: None)

    def _reap(self) -> None:
        if not self._writer.ready:
            return
        protocol = self._writer.protocol

        def check(nodes: Any) -> None:
            for node in nodes or []:
                if node != self.node and protocol.connected:
                    protocol.execute_command(
                        "EVAL", _REAP, 0, self.config.prefix, node, self.streamMaxLen, "0"
                    ).addCallback(reaped, node).addErrback(lambda f: None)

        def reaped(count: Any, node: bytes) -> None:
            if int(count) >= 0:
                self._log.warn(
                    "Cluster node {node} stopped its heartbeat: its {count} ids left the directory",
                    node=node.decode(errors="replace"),
                    count=int(count),
                )
                self._forgetNode(node)

        protocol.execute_command("SMEMBERS", self._kNodes).addCallbacks(check, lambda f: None)

    # -- connections lost and made again ----------------------------------------

    def _linkLost(self, link: _Link) -> None:
        if not self._running:
            return
        if link is self._reader and self._readTimer is not None:
            if self._readTimer.active():
                self._readTimer.cancel()
            self._readTimer = None
        if not self._outageLogged:
            self._outageLogged = True
            self._log.warn(
                "Lost the connection to the cluster's Redis at {url}: reconnecting; what is "
                "sent meanwhile waits (up to {bound} bytes)",
                url=self.config.describe(),
                bound=self.maxQueuedBytes,
            )
        self._scheduleReconnect(link, 0.1)

    def _scheduleReconnect(self, link: _Link, delay: float) -> None:
        if not self._running or link.name in self._retry:
            return
        self._retry[link.name] = self._reactor.callLater(delay, self._reconnect, link, delay)

    def _reconnect(self, link: _Link, delay: float) -> None:
        self._retry.pop(link.name, None)
        if not self._running:
            return

        def connected(p: Any) -> None:
            if not self._running:
                link.close()
                return
            if self._outageLogged and self._writer.ready and self._reader.ready:
                self._outageLogged = False
                self._log.info(
                    "Connected again to the cluster's Redis at {url}", url=self.config.describe()
                )
            if link is self._reader:
                self._read()
            else:
                self._rejoin()

        def failed(f: Failure) -> None:
            self._scheduleReconnect(link, min(delay * 2, 1.0))

        link.connect().addCallbacks(connected, failed)

    def _rejoin(self) -> None:
        """
        The writer is connected again: write what waits, in order, then
        announce this node and its ids again (the others may have removed
        them if the outage outlived the heartbeat).
        """
        self._beat()
        protocol = self._writer.protocol
        protocol.execute_command("SADD", self._kNodes, self.node).addErrback(lambda f: None)
        # Past this node's blocks, in case Redis restarted and forgot them.
        protocol.execute_command("EVAL", _RESERVE, 1, self._kNext, self._highest, 0).addErrback(
            lambda f: None
        )
        for batch in list(self._unacked):
            self._write(batch)
        for connectionId, value in self._published.items():
            self._dirChanges[connectionId] = value
            self._add(b"j%d" % connectionId, value, directory=True)
        blocks = self._blocks
        if not blocks or (len(blocks) == 1 and blocks[0][1] - blocks[0][0] < self.blockSize // 2):
            self._refill()

    # -- reading ------------------------------------------------------------------

    def _read(self) -> None:
        if not self._running or not self._reader.ready:
            return
        protocol = self._reader.protocol
        d = protocol.execute_command(
            "XREAD",
            "COUNT",
            self.readCount,
            "BLOCK",
            int(self.readBlock * 1000),
            "STREAMS",
            self._kStream,
            self._lastId,
        )
        self._readTimer = self._reactor.callLater(
            self.readBlock + self.connectTimeout, self._readTimedOut, protocol
        )
        d.addCallbacks(
            self._entriesRead, self._readFailed, callbackArgs=(protocol,), errbackArgs=(protocol,)
        )

    def _readTimedOut(self, protocol: Any) -> None:
        self._readTimer = None
        if protocol.transport is not None:
            protocol.transport.abortConnection()

    def _readFailed(self, f: Failure, protocol: Any) -> None:
        if self._readTimer is not None and self._readTimer.active():
            self._readTimer.cancel()
        self._readTimer = None
        if protocol.connected and protocol is self._reader.protocol and self._running:
            self._log.warn("Reading the cluster stream failed: {error}", error=f.getErrorMessage())
            self._reader.close()
            self._linkLost(self._reader)

    def _entriesRead(self, reply: Any, protocol: Any) -> None:
        if self._readTimer is not None and self._readTimer.active():
            self._readTimer.cancel()
        self._readTimer = None
        if protocol is not self._reader.protocol:
            return
        if reply:
            for _stream, entries in reply:
                for entryId, fields in entries:
                    self._lastId = entryId
                    try:
                        self._apply(fields)
                    except Exception:
                        self._log.failure(
                            "Could not apply cluster stream entry {entryId}",
                            entryId=entryId.decode(errors="replace"),
                        )
        self._read()

    def _apply(self, fields: list[bytes]) -> None:
        node = fields[1]
        if node == self.node:
            return
        if node:
            seq = int(fields[3])
            if seq <= self._seen.get(node, 0):
                return
            self._seen[node] = seq
        local = self._local
        for i in range(4, len(fields) - 1, 2):
            field = fields[i]
            value = fields[i + 1]
            kind = field[:1]
            if kind == b"b":
                rest = field[1:]
                exclude = [int(x) for x in rest.split(b",")] if rest else None
                local.broadcast(value, exclude)
            elif kind == b"s":
                local.send(int(field[1:]), value)
            elif kind == b"j":
                self._remember(int(field[1:]), value)
            elif kind == b"l":
                self._remote.pop(int(field[1:]), None)
            elif kind == b"D":
                self._forgetNode(value)

    def _remember(self, connectionId: int, value: bytes) -> None:
        node, host, port, pem = value.split(b"\0", 3)
        if node == self.node:
            return
        self._remote[connectionId] = _Remote(node, host.decode(), int(port), pem)
        if connectionId > self._highest:
            self._highest = connectionId
        for block in self._blocks:
            # Only after Redis lost the counter can another node issue an
            # id of this node's blocks: not this node, then.
            if block[0] <= connectionId <= block[1]:
                block[0] = connectionId + 1

    def _forgetNode(self, node: bytes) -> None:
        self._seen.pop(node, None)
        for connectionId in [i for i, r in self._remote.items() if r.node == node]:
            del self._remote[connectionId]


def makeRegistry(
    url: str,
    reactor: IReactorTime,
    events: EventSummary,
    log: Logger,
    maxBroadcastSkips: int | None,
) -> ClusterRegistry:
    """
    The registry of a server with C{cluster=url}.
    """
    return ClusterRegistry(url, reactor, events, log, maxBroadcastSkips)
