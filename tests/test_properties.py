"""
Property-based tests (hypothesis) against trivial reference models.

Framing: what L{tests.test_framing} does not already cover with properties
(any chunking, the bound, C{sendMessage} against the reader): pausing and
resuming at random points while bytes keep arriving, against the model
"split the stream on the delimiter"; the replies written while one read is
handled (batched into one write), against the model "the frames in the
order of the calls"; continuous mode, against "the same bytes".

The server's registry: random sequences of connections (plain, and
TLS-like ones that become established only when their handshake completes),
closes by the peer and by the server, sends, broadcasts, handshake
timeouts and C{stop()}, against a model of the open, established and closed
connections.  The server runs in memory: its listening factory builds the
protocols, L{StringTransport}s carry them, a L{MemoryReactorClock} holds its
timers.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from tcpsc import MessageProtocol, Server, StreamProtocol
from tcpsc._server import _ListeningFactory

#: Budget of each property: moderate, for a shared machine; derandomized so
#: that a run is reproducible.
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True)

#: A small alphabet, so that random messages often hold parts of delimiters.
ALPHABET = b"ab-\n\x00"


def delimiters() -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=4).map(bytes)


def texts(maxSize: int = 12) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(ALPHABET), max_size=maxSize).map(bytes)


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    C{data} cut at the offsets C{cuts} (sorted, possibly repeated).
    """
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


# -- framing: pause and resume ---------------------------------------------


class Pausing(MessageProtocol):
    """
    Records messages and drops; pauses itself after the messages whose
    index (counting from 0) is in C{pauseAfter}.
    """

    def __init__(self, pauseAfter: set[int]) -> None:
        self.pauseAfter = pauseAfter
        self.events: list[tuple[str, object]] = []
        self.count = 0

    def messageReceived(self, message: bytes) -> None:
        assert not self._paused, "a message was delivered while paused"
        self.events.append(("message", message))
        self.count += 1
        if self.count - 1 in self.pauseAfter:
            self.pauseReading()

    def messageTooLong(self, length: int) -> None:
        assert not self._paused, "a drop was reported while paused"
        self.events.append(("tooLong", None))
        self.count += 1
        if self.count - 1 in self.pauseAfter:
            self.pauseReading()


class FramingPropertyTests(SynchronousTestCase):
    """
    Properties of L{MessageProtocol} and L{StreamProtocol} beyond those of
    L{tests.test_framing}.
    """

    @PROPERTY
    @given(st.data())
    def test_pauseAndResumeAnywhere(self, data: st.DataObject) -> None:
        """
        Property: whatever the chunking, wherever the handler pauses (after
        any message or drop), and whenever it resumes (between any two
        reads, several reads later, or never until the connection is
        lost), the events are those of splitting the stream on the
        delimiter: each message in order, exactly once, a drop for each
        message over C{maxMessageLength} (and for a last, unterminated one
        already too long to fit); nothing is delivered while
        paused, and the transport is paused exactly while the protocol is.
        """
        delimiter = data.draw(delimiters(), "delimiter")
        maxLength = data.draw(st.none() | st.integers(0, 10), "maxLength")
        messages = [m for m in data.draw(st.lists(texts(), max_size=12)) if delimiter not in m]
        stream = b"".join(m + delimiter for m in messages) + data.draw(texts(4), "tail")
        parts = cut(stream, data.draw(st.lists(st.integers(0, 10**6), max_size=12)))
        *complete, tail = stream.split(delimiter)
        model = [
            ("message", m) if maxLength is None or len(m) <= maxLength else ("tooLong", None)
            for m in complete
        ]
        # A partial message is dropped as soon as it cannot fit any more,
        # before its delimiter (which may have started: hence the overlap).
        if maxLength is not None and len(tail) > maxLength + len(delimiter) - 1:
            model.append(("tooLong", None))
        pauseAfter = set(data.draw(st.lists(st.integers(0, len(model)), max_size=6)))
        protocol = Pausing(pauseAfter)
        protocol.delimiter = delimiter
        protocol.maxMessageLength = maxLength
        transport = StringTransport()
        protocol.makeConnection(transport)
        for part in parts:
            protocol.dataReceived(part)
            self.assertEqual(transport.producerState, "paused" if protocol._paused else "producing")
            if protocol._paused and data.draw(st.booleans(), "resume now"):
                protocol.resumeReading()
        if data.draw(st.booleans(), "end by connection loss"):
            protocol.connectionLost(Failure(ConnectionDone()))
        else:
            for _ in range(len(model) + 2):
                if not protocol._paused:
                    break
                protocol.resumeReading()
            self.assertEqual(transport.producerState, "producing")
        self.assertEqual(protocol.events, model)

    @PROPERTY
    @given(st.data())
    def test_repliesInCallOrder(self, data: st.DataObject) -> None:
        """
        Property: while one read is handled, any mix of C{sendMessage},
        C{sendFrame} with this protocol's frames, and C{sendFrame} with
        frames of a protocol with another C{messageAppend}, writes exactly
        the frames of the accepted calls, in the order of the calls (the
        model: their concatenation), in at most one write per foreign frame
        plus one; outside of a read each call writes at once.
        """
        delimiter = data.draw(st.sampled_from([b"\n", b"\r\n", b"\x00", b"-a-"]), "delimiter")
        append = data.draw(st.sampled_from([b"", b"+"]), "append")
        action = st.tuples(st.sampled_from(["send", "own", "foreign"]), texts(8))

        class Replier(MessageProtocol):
            script: list[list[tuple[str, bytes]]]

            def messageReceived(self, message: bytes) -> None:
                for kind, body in self.script.pop(0):
                    self.act(kind, body)

            def act(self, kind: str, body: bytes) -> None:
                if kind == "send":
                    frame = self.frame(body)
                    self.assertEqual(self.sendMessage(body), frame is not None)
                elif kind == "own":
                    frame = self.frame(body)
                    if frame is not None:
                        self.assertTrue(self.sendFrame(frame))
                else:
                    frame = body.replace(delimiter, b"") + b"~" + delimiter
                    self.assertTrue(self.sendFrame(frame))
                if frame is not None:
                    expected.append(frame)

        expected: list[bytes] = []
        protocol = Replier()
        protocol.assertEqual = self.assertEqual  # type: ignore[attr-defined]
        protocol.assertTrue = self.assertTrue  # type: ignore[attr-defined]
        protocol.delimiter = delimiter
        protocol.messageAppend = append
        writes: list[bytes] = []
        transport = StringTransport()
        original = transport.write

        def write(chunk: bytes) -> None:
            writes.append(chunk)
            original(chunk)

        transport.write = write  # type: ignore[method-assign]
        transport.writeSequence = lambda seq: write(b"".join(seq))  # type: ignore[method-assign]
        protocol.makeConnection(transport)
        reads = data.draw(
            st.lists(st.lists(st.lists(action, max_size=6), max_size=3), max_size=4), "reads"
        )
        for read in reads:
            protocol.script = list(read)
            before = len(writes)
            protocol.dataReceived(b"m" + delimiter * len(read))
            foreign = sum(1 for replies in read for kind, _ in replies if kind == "foreign")
            self.assertLessEqual(len(writes) - before, 1 + 2 * foreign)
            self.assertEqual(protocol.script, [])
            # Between reads: written at once.
            for kind, body in data.draw(st.lists(action, max_size=2), "outside"):
                count = len(expected)
                before = len(writes)
                protocol.act(kind, body)
                self.assertEqual(len(writes) - before, len(expected) - count)
        self.assertEqual(transport.value(), b"".join(expected))

    @PROPERTY
    @given(st.binary(max_size=200), st.lists(st.integers(0, 10**6), max_size=20))
    def test_streamAnyChunking(self, stream: bytes, cuts: list[int]) -> None:
        """
        Property: in continuous mode the sink receives exactly the bytes
        received, whatever the chunking, and is closed with the connection.
        """

        class Sink:
            closed = False

            def __init__(self) -> None:
                self.chunks: list[bytes] = []

            def write(self, data: bytes) -> None:
                self.chunks.append(data)

            def close(self) -> None:
                self.closed = True

        protocol = StreamProtocol()
        sink = protocol.sink = Sink()
        protocol.makeConnection(StringTransport())
        for part in cut(stream, cuts):
            protocol.dataReceived(part)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(b"".join(sink.chunks), stream)
        self.assertTrue(sink.closed)


# -- the registry ------------------------------------------------------------


class FakeTransport(StringTransport):
    """
    A L{StringTransport} whose closing can be completed later, as a real
    one completes it once its output is flushed: C{loseConnection} only
    marks it closing, L{finish} ends it; C{abortConnection} ends it at once.
    Optionally a TLS transport, so that the connection becomes established
    only at L{handshake}.
    """

    def __init__(self, port: int, tls: bool) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "192.0.2.1", port))
        if tls:
            directlyProvides(self, ISSLTransport)
        self.ended = False

    def getPeerCertificate(self) -> None:
        return None

    def abortConnection(self) -> None:
        self.disconnecting = True
        self.finish()

    def finish(self) -> None:
        if not self.ended:
            self.ended = True
            self.protocol.connectionLost(Failure(ConnectionDone()))


class _PassThroughTLS:
    """
    Stands for a TLS factory in the listening factory: the handshake is not
    what is tested, so the wrapped protocol is used as is, on a transport
    that claims TLS (L{FakeTransport} with C{tls=True}).
    """

    @staticmethod
    def protocol(factory: object, wrapped: Any) -> Any:
        return wrapped


class RegistryMachine(RuleBasedStateMachine):
    """
    The registry of a L{Server} against a model: C{pending} (TLS
    connections in their handshake), C{established}, C{closing} (closed by
    the server, output not yet flushed) and the ids ever given.
    """

    MAX_CONNECTIONS = 6
    HANDSHAKE_TIMEOUT = 5.0
    CLOSE_TIMEOUT = 12.0

    connections = Bundle("connections")

    def __init__(self) -> None:
        super().__init__()
        self.clock = MemoryReactorClock()
        self.established: list[int] = []
        self.closed: list[int] = []
        # The peers of the model send nothing: no first-byte timeout (it
        # is tested in tests.test_guarantees_limits).
        self.server = Server(
            maxConnections=self.MAX_CONNECTIONS,
            firstByteTimeout=None,
            handshakeTimeout=self.HANDSHAKE_TIMEOUT,
            closeTimeout=self.CLOSE_TIMEOUT,
            reactor=self.clock,
            onEstablished=self.established.append,
            onClosed=self.closed.append,
        )
        self.plain = _ListeningFactory(self.server, None)
        self.tls = _ListeningFactory(self.server, _PassThroughTLS())  # type: ignore[arg-type]
        self.protocols: dict[int, tuple[MessageProtocol, FakeTransport]] = {}
        self.pending: set[int] = set()  # in the TLS handshake
        self.pendingClosing: set[int] = set()  # in the handshake, asked to close
        self.open: set[int] = set()  # established, not closing
        self.closing: set[int] = set()  # established, closed by the server
        self.gone: set[int] = set()
        self.given: list[int] = []
        self.stops = 0
        self.stopped: list[object] = []
        # When each connection the server is closing is aborted if it is
        # still open: every close is bounded by the close timeout.
        self.abortAt: dict[int, float] = {}
        self.nextPort = 10000

    # -- model helpers --

    def live(self) -> set[int]:
        return self.pending | self.open | self.closing

    def end(self, clientId: int) -> None:
        """
        The model of a connection that ended.
        """
        wasEstablished = clientId in self.open or clientId in self.closing
        self.pending.discard(clientId)
        self.pendingClosing.discard(clientId)
        self.open.discard(clientId)
        self.closing.discard(clientId)
        self.gone.add(clientId)
        self.abortAt.pop(clientId, None)
        assert (clientId in self.closed) == wasEstablished, (clientId, self.closed)
        if not self.live():
            # Every stop() waiting for the connections has fired.
            assert self.stopped == [None] * self.stops, self.stopped

    # -- rules --

    @rule(target=connections, tls=st.booleans())
    def connect(self, tls: bool) -> int:
        self.nextPort += 1
        factory = self.tls if tls else self.plain
        protocol = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", self.nextPort))
        if len(self.live()) >= self.MAX_CONNECTIONS:
            assert protocol is None, "a connection beyond the limit was accepted"
            return -1
        assert protocol is not None, "a connection within the limit was refused"
        transport = FakeTransport(self.nextPort, tls)
        protocol.makeConnection(transport)
        transport.protocol = protocol
        clientId = protocol.connectionId
        assert isinstance(clientId, int) and clientId >= 1
        assert clientId not in self.given, f"id {clientId} given twice"
        assert all(clientId > old for old in self.given), "ids must only grow"
        self.given.append(clientId)
        self.protocols[clientId] = (protocol, transport)
        if tls:
            self.pending.add(clientId)
            assert clientId not in self.established
        else:
            self.open.add(clientId)
            assert self.established[-1] == clientId
        return clientId

    @rule(clientId=connections)
    def handshake(self, clientId: int) -> None:
        if clientId not in self.pending:
            return
        protocol, _ = self.protocols[clientId]
        protocol.handshakeCompleted()
        self.pending.discard(clientId)
        if clientId in self.pendingClosing:
            # stop() asked it to close during its handshake: established,
            # and closing.
            self.pendingClosing.discard(clientId)
            self.closing.add(clientId)
        else:
            self.open.add(clientId)
        assert self.established[-1] == clientId

    @rule(clientId=consumes(connections))
    def peerCloses(self, clientId: int) -> None:
        if clientId not in self.live():
            return
        self.protocols[clientId][1].finish()
        self.end(clientId)

    @rule(clientId=connections)
    def serverDisconnects(self, clientId: int) -> None:
        result = self.server.disconnect(clientId) if clientId > 0 else False
        assert result == (clientId in self.open or clientId in self.closing), (clientId, result)
        if clientId in self.open:
            self.open.discard(clientId)
            self.closing.add(clientId)
            self.abortAt[clientId] = self.clock.seconds() + self.CLOSE_TIMEOUT
            assert self.protocols[clientId][1].disconnecting

    @rule(clientId=connections)
    def flushed(self, clientId: int) -> None:
        """
        A connection closing on the server's side finished writing.
        """
        if clientId not in self.closing:
            return
        self.protocols[clientId][1].finish()
        self.end(clientId)

    @rule(clientId=connections, message=texts())
    def send(self, clientId: int, message: bytes) -> None:
        valid = b"\n" not in message
        accepted = clientId in self.open and valid
        transport = self.protocols[clientId][1] if clientId in self.protocols else None
        before = transport.value() if transport is not None else b""
        assert self.server.send(clientId, message) == accepted, (clientId, message)
        if transport is not None:
            assert transport.value() == before + (message + b"\n" if accepted else b"")

    @rule(clientId=st.integers(-3, 200), message=texts())
    def sendToAnyId(self, clientId: int, message: bytes) -> None:
        if clientId in self.open:
            return
        assert self.server.send(clientId, message) is False

    @rule(message=texts(), exclude=st.lists(st.integers(0, 40), max_size=3))
    def broadcast(self, message: bytes, exclude: list[int]) -> None:
        before = {i: self.protocols[i][1].value() for i in self.live()}
        count = self.server.broadcast(message, exclude=exclude)
        targets = self.open - set(exclude)
        if b"\n" in message:
            assert count == 0
            targets = set()
        assert count == len(targets), (count, targets)
        for i, value in before.items():
            added = message + b"\n" if i in targets else b""
            assert self.protocols[i][1].value() == value + added, i

    @rule()
    def timePasses(self) -> None:
        """
        The handshake timeout passes: every connection still in its
        handshake is aborted; so is every connection whose close (by
        disconnect() or stop()) reached the close timeout.
        """
        self.clock.advance(self.HANDSHAKE_TIMEOUT)
        now = self.clock.seconds()
        for clientId in list(self.pending):
            self.end(clientId)
        for clientId, when in list(self.abortAt.items()):
            if when <= now and clientId in self.live():
                self.end(clientId)

    @rule()
    def stop(self) -> None:
        live = self.live()
        self.stops += 1
        self.server.stop().addBoth(self.stopped.append)
        if not live:
            assert self.stopped == [None] * self.stops, self.stopped
        deadline = self.clock.seconds() + self.CLOSE_TIMEOUT
        for clientId in live:
            self.abortAt.setdefault(clientId, deadline)
        self.closing |= self.open
        self.open.clear()
        self.pendingClosing |= self.pending
        for clientId in live:
            assert self.protocols[clientId][1].disconnecting, clientId

    # -- invariants --

    @invariant()
    def registryMatchesModel(self) -> None:
        server = self.server
        assert server.clientIds() == sorted(self.open | self.closing), (
            server.clientIds(),
            self.open,
            self.closing,
        )
        assert server.openConnections() == len(self.live())
        for clientId in self.gone:
            assert server.send(clientId, b"late") is False
            assert server.disconnect(clientId) is False
        assert sorted(self.closed) == sorted(self.gone & set(self.established))
        assert len(set(self.established)) == len(self.established)


class RegistryPropertyTests(SynchronousTestCase):
    """
    The registry under random sequences of operations.
    """

    def test_registry(self) -> None:
        """
        Property: for any sequence of plain and TLS connections (beyond the
        limit too), handshakes, closes by either side, flushes, sends,
        sends to unknown ids, broadcasts with exclusions, handshake
        timeouts and stops: ids are positive, unique, only grow and are
        never reused; C{clientIds()} is the model's established set,
        C{openConnections()} counts the handshaking ones too; the limit
        refuses exactly when reached; C{send} is C{True} exactly for an
        established, not closing connection and a valid message, and then
        writes exactly its frame; C{broadcast} returns how many it wrote
        to, and writes to exactly those; C{onEstablished} and C{onClosed}
        fire once per established connection.
        """
        run_state_machine_as_test(
            RegistryMachine,
            settings=settings(
                max_examples=120, stateful_step_count=40, deadline=None, derandomize=True
            ),
        )
