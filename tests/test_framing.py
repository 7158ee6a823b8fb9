"""
Tests for L{tcpsc._framing}: L{MessageProtocol} and L{StreamProtocol} driven
through L{StringTransport} (deterministic, no reactor), and both over TLS in
memory.
"""

from __future__ import annotations

import random
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from tcpsc import MessageProtocol, StreamProtocol, TLSConfig
from tcpsc._framing import DEFAULT_MAX_MESSAGE_LENGTH
from tcpsc._tls import peerCertificate, subjectPart
from tests._helpers import certificates, tlsPair

#: Hypothesis budget: enough to find chunking bugs, small enough for a shared
#: machine; derandomized so that a run is reproducible.
PROPERTY = settings(max_examples=200, deadline=None, derandomize=True)

#: A small alphabet, so that random messages often hold parts of delimiters.
ALPHABET = b"ab-\r\n\x00"


# -- helpers ---------------------------------------------------------------


class Recorder(MessageProtocol):
    """
    A message protocol recording its hooks, in order, in C{events}.
    """

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.tooLong: list[int] = []
        self.events: list[tuple[object, ...]] = []
        self.readyCount = 0

    def connectionReady(self) -> None:
        self.readyCount += 1
        self.events.append(("ready",))

    def messageReceived(self, message: bytes) -> None:
        self.messages.append(message)
        self.events.append(("message", message))

    def messageTooLong(self, length: int) -> None:
        self.tooLong.append(length)
        self.events.append(("tooLong", length))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.events.append(("connectionLost",))


class Observer:
    """
    Stands for the server or client owning a protocol: records what the
    protocol reports into a shared event list.
    """

    def __init__(self, events: list[tuple[object, ...]]) -> None:
        self.events = events

    def connectionReady(self, protocol: object) -> None:
        self.events.append(("observer ready",))

    def connectionClosed(self, protocol: object, reason: Failure, wasReady: bool) -> None:
        self.events.append(("observer closed", wasReady))

    def messageReceived(self, protocol: object, message: bytes) -> None:
        self.events.append(("observer message", message))

    def dataReceived(self, protocol: object, data: bytes) -> None:
        self.events.append(("observer data", data))


class WriteCountingTransport(StringTransport):
    """
    A L{StringTransport} that also keeps every write call separately.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)

    def writeSequence(self, data: object) -> None:
        joined = b"".join(data)  # type: ignore[arg-type]
        self.writes.append(joined)
        super().writeSequence([joined])


def tlsTransport(cls: type[StringTransport] = StringTransport) -> StringTransport:
    """
    @return: a L{StringTransport} that claims to be a TLS transport, so that
        readiness waits for C{handshakeCompleted}.
    """
    transport = cls()
    directlyProvides(transport, ISSLTransport)
    return transport


def connected(
    protocol: MessageProtocol | StreamProtocol | None = None,
    transport: StringTransport | None = None,
    **attributes: object,
):
    """
    Connect a protocol (a L{Recorder} unless given) to a transport (a plain
    L{StringTransport} unless given) after setting C{attributes} on it.

    @return: C{(protocol, transport)}
    """
    protocol = Recorder() if protocol is None else protocol
    transport = StringTransport() if transport is None else transport
    for name, value in attributes.items():
        setattr(protocol, name, value)
    protocol.makeConnection(transport)
    return protocol, transport


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    @return: C{data} cut at the (sorted, possibly repeated) offsets C{cuts}.
    """
    bounds = [0, *sorted(cuts), len(data)]
    return [data[start:end] for start, end in pairwise(bounds)]


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def feed(protocol: MessageProtocol, parts: list[bytes]) -> int:
    """
    Deliver C{parts} one read each.

    @return: the longest the partial message buffer was after any read.
    """
    longest = 0
    for part in parts:
        protocol.dataReceived(part)
        longest = max(longest, len(protocol._buffer))
    return longest


def randomMessage(size: int, delimiter: bytes, seed: int = 1) -> bytes:
    """
    @return: C{size} reproducible random bytes holding no byte that starts
        C{delimiter} (so no delimiter either).
    """
    data = random.Random(seed).randbytes(size)
    first = delimiter[:1]
    return data.replace(first, b"\x01" if first != b"\x01" else b"\x02")


def framed(messages: list[bytes], delimiter: bytes) -> bytes:
    return b"".join(message + delimiter for message in messages)


@st.composite
def delimiters(draw: st.DrawFn) -> bytes:
    """
    Delimiters of 1 to 5 bytes: random bytes, or bytes of L{ALPHABET} (which
    gives self-overlapping ones such as C{b"aa"} or C{b"-a-"}).
    """
    return draw(
        st.one_of(
            st.binary(min_size=1, max_size=5),
            st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=5).map(bytes),
        )
    )


@st.composite
def streams(draw: st.DrawFn, maxSize: int = 20):
    """
    A delimiter, messages free of it, and their framed byte stream.
    """
    delimiter = draw(delimiters())
    message = st.one_of(
        st.binary(max_size=maxSize),
        st.lists(st.sampled_from(ALPHABET), max_size=maxSize).map(bytes),
    )
    messages = [m for m in draw(st.lists(message, max_size=15)) if delimiter not in m]
    return delimiter, messages, framed(messages, delimiter)


@st.composite
def longStreams(draw: st.DrawFn):
    """
    A delimiter, messages free of it from empty to a few KiB long (around
    the lengths where the reassembly changes how it searches and keeps
    bytes), and their framed byte stream.
    """
    delimiter = draw(delimiters())
    sizes = draw(
        st.lists(
            st.one_of(
                st.sampled_from([0, 1, 511, 512, 513, 4095, 4096, 4097, 9000]),
                st.integers(0, 10_000),
            ),
            max_size=6,
        )
    )
    generator = random.Random(draw(st.integers(0, 2**32)))
    messages = []
    for size in sizes:
        message = bytes(generator.choices(ALPHABET, k=size))
        while delimiter in message:
            message = message.replace(delimiter, b"")
        messages.append(message)
    return delimiter, messages, framed(messages, delimiter)


@st.composite
def cutsOf(draw: st.DrawFn, stream: bytes) -> list[int]:
    """
    Chunk boundaries for C{stream}: random ones, or every byte on its own.
    """
    if draw(st.booleans()):
        return list(range(1, len(stream)))
    return draw(st.lists(st.integers(0, len(stream)), max_size=len(stream) + 2))


def summary(messages: list[bytes]) -> list[object]:
    """
    @return: C{messages} with the long ones shortened, for failure messages.
    """
    return [
        m if not isinstance(m, bytes) or len(m) <= 40 else f"<{len(m)} bytes: {m[:16]!r}...>"
        for m in messages
    ]


class FramingTestCase(SynchronousTestCase):
    """
    Comparisons that stay quick and readable when large messages differ (a
    plain C{assertEqual} on lists diffs their whole representations).
    """

    def assertMessages(self, actual: list[bytes], expected: list[bytes]) -> None:
        if list(actual) != list(expected):
            self.fail(f"got {summary(actual)}, expected {summary(expected)}")

    def assertSameBytes(self, actual: bytes, expected: bytes) -> None:
        if actual == expected:
            return
        at = next(
            (i for i, (a, b) in enumerate(zip(actual, expected, strict=False)) if a != b),
            min(len(actual), len(expected)),
        )
        self.fail(f"{len(actual)} bytes differ from the {len(expected)} expected at offset {at}")


# -- receiving -------------------------------------------------------------


class ChunkingTests(FramingTestCase):
    """
    Whatever the chunking, the messages come out in order, exactly once.
    """

    def assertDelivered(self, delimiter: bytes, messages: list[bytes], parts: list[bytes]):
        protocol, _ = connected(delimiter=delimiter)
        feed(protocol, parts)
        self.assertMessages(protocol.messages, messages)
        self.assertEqual(protocol.tooLong, [])

    def test_oneRead(self) -> None:
        """
        Many messages in one read, empty ones included.
        """
        messages = [b"one", b"", b"three", b""]
        self.assertDelivered(b"\n", messages, [framed(messages, b"\n")])

    def test_oneByteReads(self) -> None:
        """
        Every byte in a read of its own, with one- and multi-byte delimiters.
        """
        messages = [b"alpha", b"", b"-END-", b"a--EN", b"x\r", b"\n"]
        for delimiter in (b"\x00", b"\r\n", b"--END--"):
            wanted = [m for m in messages if delimiter not in m]
            self.assertDelivered(delimiter, wanted, chunks(framed(wanted, delimiter), 1))

    def test_delimiterSplitEverywhere(self) -> None:
        """
        A multi-byte delimiter split at each of its inner positions, also with
        the first part of it alone in a read, is still found.
        """
        delimiter = b"--END--"
        stream = b"first" + delimiter + b"second" + delimiter
        for at in range(len(b"first") + 1, len(b"first") + len(delimiter)):
            self.assertDelivered(delimiter, [b"first", b"second"], pieces(stream, [at]))
            self.assertDelivered(delimiter, [b"first", b"second"], pieces(stream, [5, at]))

    def test_partialDelimiterInsideMessage(self) -> None:
        """
        Bytes that look like the start of the delimiter but do not complete it
        stay part of the message, also when split across reads.
        """
        delimiter = b"--END--"
        message = b"a--EN-b--END-c-"
        stream = message + delimiter
        for at in range(1, len(stream)):
            self.assertDelivered(delimiter, [message], pieces(stream, [at]))

    def test_incompleteTailNotDelivered(self) -> None:
        """
        Bytes after the last delimiter wait for it; they are not delivered
        on their own, nor when more bytes without a delimiter arrive.
        """
        protocol, _ = connected(delimiter=b"\r\n")
        feed(protocol, [b"done\r\npart", b"ial\r", b"ly"])
        self.assertMessages(protocol.messages, [b"done"])
        protocol.dataReceived(b"\r\n")
        self.assertMessages(protocol.messages, [b"done", b"partial\rly"])

    @PROPERTY
    @given(st.data())
    def test_anyChunking(self, data: st.DataObject) -> None:
        """
        Property: for any delimiter of 1-5 bytes, messages free of it and any
        chunking of their stream, the messages delivered are those of
        splitting the stream on the delimiter, in order, each once.
        """
        delimiter, _, stream = data.draw(streams())
        trailing = data.draw(st.binary(max_size=6))
        stream += trailing
        parts = pieces(stream, data.draw(cutsOf(stream)))
        protocol, _ = connected(delimiter=delimiter, maxMessageLength=None)
        feed(protocol, parts)
        self.assertMessages(protocol.messages, stream.split(delimiter)[:-1])
        self.assertEqual(protocol.tooLong, [])

    @PROPERTY
    @given(st.data())
    def test_anyChunkingLongMessages(self, data: st.DataObject) -> None:
        """
        Property: the same for messages of up to 10,000 bytes, cut into
        reads of any size up to 64 KiB (or at random points), with or
        without C{maxMessageLength}: the messages within it are delivered in
        order, each once, those longer reported in their place, and the
        partial buffer stays within the bound after every read.
        """
        delimiter, _, stream = data.draw(longStreams())
        stream += data.draw(st.sampled_from([b"", b"tail", ALPHABET * 1000]))
        if data.draw(st.booleans()):
            size = data.draw(st.sampled_from([1, 7, 512, 4096, 5000, 65536]))
            parts = chunks(stream, size)
        else:
            parts = pieces(stream, data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
        maxLength = data.draw(st.one_of(st.none(), st.integers(0, 12_000)))
        protocol, _ = connected(delimiter=delimiter, maxMessageLength=maxLength)
        longest = feed(protocol, parts)
        *model, partial = stream.split(delimiter)
        if maxLength is None:
            self.assertMessages(protocol.messages, model)
            self.assertEqual(protocol.tooLong, [])
            return
        expected: list[object] = [m if len(m) <= maxLength else "too long" for m in model]
        if len(partial) > maxLength + len(delimiter) - 1:
            # Found too long before its end.
            expected.append("too long")
        seen = [
            event[1] if event[0] == "message" else "too long"
            for event in protocol.events
            if event[0] != "ready"
        ]
        self.assertEqual(summary(seen), summary(expected))  # type: ignore[arg-type]
        self.assertLessEqual(longest, maxLength + len(delimiter) - 1)

    @PROPERTY
    @given(st.data())
    def test_anyChunkingWithMaximum(self, data: st.DataObject) -> None:
        """
        Property: with C{maxMessageLength} set, messages longer than it are
        dropped, each reported once in its place, all others delivered in
        order; the partial buffer stays within the bound after every read.
        """
        delimiter, _, stream = data.draw(streams(maxSize=24))
        maxLength = data.draw(st.integers(0, 12))
        parts = pieces(stream, data.draw(cutsOf(stream)))
        protocol, _ = connected(delimiter=delimiter, maxMessageLength=maxLength)
        longest = feed(protocol, parts)

        model = stream.split(delimiter)[:-1]
        expected = [("message", m) if len(m) <= maxLength else ("tooLong",) for m in model]
        seen = [
            event if event[0] == "message" else ("tooLong",)
            for event in protocol.events
            if event[0] != "ready"
        ]
        self.assertEqual(seen, expected)
        # The length reported is that of the message, or of the bytes
        # received of it when it was found too long: never more.
        dropped = [m for m in model if len(m) > maxLength]
        for length, message in zip(protocol.tooLong, dropped, strict=True):
            self.assertGreater(length, maxLength)
            self.assertLessEqual(length, len(message))
        self.assertLessEqual(longest, maxLength + len(delimiter) - 1)


class LargeMessageTests(FramingTestCase):
    """
    Large messages are delivered intact, with a bounded buffer.
    """

    def assertLargeMessage(self, size: int, delimiter: bytes, chunkSize: int) -> None:
        message = randomMessage(size, delimiter)
        stream = b"before" + delimiter + message + delimiter + b"after" + delimiter
        protocol, _ = connected(delimiter=delimiter, maxMessageLength=size)
        longest = feed(protocol, chunks(stream, chunkSize))
        self.assertEqual(len(protocol.messages), 3)
        self.assertEqual(protocol.messages[0], b"before")
        self.assertSameBytes(protocol.messages[1], message)
        self.assertEqual(protocol.messages[2], b"after")
        self.assertEqual(protocol.tooLong, [])
        self.assertLessEqual(longest, size + len(delimiter) - 1)

    def test_hundredMegabytes(self) -> None:
        """
        A 100 MB message fed in 64 KiB reads arrives intact.
        """
        self.assertLargeMessage(100 * 1024 * 1024, b"\r\n", 64 * 1024)

    def test_eightMegabytesInKibibytes(self) -> None:
        """
        An 8 MB message fed in 1 KiB reads (8192 of them, which only a
        reassembly linear in the bytes received gets through quickly) arrives
        intact, its multi-byte delimiter split across two reads.
        """
        size = 8 * 1024 * 1024 - len(b"before--END--") - 3
        self.assertLargeMessage(size, b"--END--", 1024)

    def test_wholeReadNotCopied(self) -> None:
        """
        A large message that is a whole read, its delimiter arriving in the
        next one, is delivered as the bytes of that read, not a copy of
        them; one that spans reads is joined once from them.
        """
        message = randomMessage(64 * 1024, b"\n")
        protocol, _ = connected()
        feed(protocol, [message, b"\nnext\n"])
        self.assertIs(protocol.messages[0], message)
        self.assertEqual(protocol.messages[1], b"next")
        feed(protocol, [message[:1000], message[1000:], b"\n"])
        self.assertSameBytes(protocol.messages[2], message)

    def test_noLimit(self) -> None:
        """
        C{maxMessageLength = None} means unlimited: a message longer than the
        default bound is delivered (and may be sent).
        """
        size = DEFAULT_MAX_MESSAGE_LENGTH + 1024
        message = randomMessage(size, b"\n")
        protocol, transport = connected(maxMessageLength=None)
        feed(protocol, chunks(message + b"\n", 1024 * 1024))
        self.assertEqual(len(protocol.messages), 1)
        self.assertSameBytes(protocol.messages[0], message)
        self.assertTrue(protocol.sendMessage(message))
        self.assertSameBytes(transport.value(), message + b"\n")

    def test_defaultLimit(self) -> None:
        """
        The default bound is 16 MiB: a message one byte longer is dropped.
        """
        self.assertEqual(MessageProtocol.maxMessageLength, 16 * 1024 * 1024)
        self.assertEqual(DEFAULT_MAX_MESSAGE_LENGTH, 16 * 1024 * 1024)
        protocol, _ = connected()
        protocol.dataReceived(b"x" * (DEFAULT_MAX_MESSAGE_LENGTH + 1) + b"\nnext\n")
        self.assertMessages(protocol.messages, [b"next"])
        self.assertEqual(protocol.tooLong, [DEFAULT_MAX_MESSAGE_LENGTH + 1])


class TooLongTests(FramingTestCase):
    """
    Messages longer than C{maxMessageLength} are dropped, the connection kept.
    """

    def assertEndlessMessage(self, delimiter: bytes, ending: list[bytes]) -> None:
        """
        Feed a message far longer than the bound, without delimiter, then
        C{ending} (the rest of its delimiter, in pieces) and one more message.
        """
        maxLength = 1000
        bound = maxLength + len(delimiter) - 1
        protocol, transport = connected(delimiter=delimiter, maxMessageLength=maxLength)
        protocol.dataReceived(b"first" + delimiter + b"x" * 500)
        for _ in range(2000):
            protocol.dataReceived(b"x" * 997)
            self.assertLessEqual(len(protocol._buffer), bound)
        for part in ending:
            protocol.dataReceived(part)
            self.assertLessEqual(len(protocol._buffer), bound)
        protocol.dataReceived(b"next" + delimiter)
        self.assertMessages(protocol.messages, [b"first", b"next"])
        self.assertEqual(len(protocol.tooLong), 1)
        self.assertGreater(protocol.tooLong[0], maxLength)
        self.assertFalse(transport.disconnecting)

    def test_endlessMessage(self) -> None:
        """
        A message without end keeps the buffer within the bound; it is
        reported once and the message after its delimiter is delivered.
        """
        self.assertEndlessMessage(b"\r\n", [b"\r\n"])

    def test_endlessMessageDelimiterSplit(self) -> None:
        """
        The same when the delimiter ending the oversized message is split
        across reads.
        """
        self.assertEndlessMessage(b"\r\n", [b"\r", b"\n"])
        self.assertEndlessMessage(b"--END--", [bytes([byte]) for byte in b"--END--"])
        self.assertEndlessMessage(b"--END--", [b"x--EN", b"--E", b"ND--"])

    def test_falseDelimiterInsideDroppedMessage(self) -> None:
        """
        The start of a delimiter, not completed, inside a message being
        dropped does not end it.
        """
        protocol, _ = connected(delimiter=b"--END--", maxMessageLength=10)
        feed(protocol, [b"y" * 30 + b"--EN", b"D!--", b"END-", b"-ok--END--"])
        self.assertMessages(protocol.messages, [b"ok"])
        self.assertEqual(len(protocol.tooLong), 1)

    def test_tooLongInOneRead(self) -> None:
        """
        A too-long message among others in one read is dropped; the next one
        is delivered.
        """
        protocol, _ = connected(maxMessageLength=5)
        protocol.dataReceived(b"abc\ntoolong\nnext\n")
        self.assertMessages(protocol.messages, [b"abc", b"next"])
        self.assertEqual(protocol.tooLong, [7])

    def test_exactMaximum(self) -> None:
        """
        A message of exactly C{maxMessageLength} bytes is delivered, one of
        C{maxMessageLength + 1} is dropped and reported with its length: in
        one read, and byte by byte (where the first byte of the delimiter
        arrives before its second).
        """
        stream = b"12345\r\n123456\r\nok\r\n"
        for parts in ([stream], chunks(stream, 1), pieces(stream, [6, 14])):
            protocol, _ = connected(delimiter=b"\r\n", maxMessageLength=5)
            feed(protocol, parts)
            self.assertMessages(protocol.messages, [b"12345", b"ok"])
            self.assertEqual(protocol.tooLong, [6])

    def test_defaultMessageTooLongLogs(self) -> None:
        """
        The default C{messageTooLong} logs a warning naming the peer and the
        length, and keeps the connection open.
        """
        for peer, shown in [
            (IPv4Address("TCP", "203.0.113.7", 4711), "203.0.113.7:4711"),
            (IPv6Address("TCP", "2001:db8::1", 4712), "[2001:db8::1]:4712"),
        ]:
            received: list[bytes] = []
            protocol = MessageProtocol()
            protocol.messageReceived = received.append  # type: ignore[method-assign]
            protocol, transport = connected(
                protocol, StringTransport(peerAddress=peer), maxMessageLength=3
            )
            with capturedLogs() as events:
                protocol.dataReceived(b"toolong\nok\n")
            warnings = [e for e in events if e["log_level"] == LogLevel.warn]
            self.assertEqual(len(warnings), 1)
            self.assertEqual(warnings[0]["length"], 7)
            self.assertEqual(warnings[0]["peer"], shown)
            text = formatEvent(warnings[0])
            self.assertIn(shown, text)
            self.assertIn("7 bytes", text)
            self.assertEqual(received, [b"ok"])
            self.assertFalse(transport.disconnecting)


# -- sending ---------------------------------------------------------------


class SendTests(FramingTestCase):
    """
    C{sendMessage}, C{frame} and C{sendFrame} validate before writing.
    """

    def test_framesMessage(self) -> None:
        """
        A message goes out as C{message + messageAppend + delimiter}; the
        receiver with the same settings gets C{message + messageAppend}.
        """
        sender, transport = connected(delimiter=b"--END--", messageAppend=b"!")
        self.assertTrue(sender.sendMessage(b"hello"))
        self.assertTrue(sender.sendMessage(b"a--EN"))
        self.assertEqual(transport.value(), b"hello!--END--a--EN!--END--")
        receiver, _ = connected(delimiter=b"--END--")
        receiver.dataReceived(transport.value())
        self.assertMessages(receiver.messages, [b"hello!", b"a--EN!"])

    def test_emptyMessage(self) -> None:
        """
        An empty message sends just the delimiter.
        """
        protocol, transport = connected(delimiter=b"\r\n")
        self.assertTrue(protocol.sendMessage(b""))
        self.assertEqual(transport.value(), b"\r\n")

    def test_text(self) -> None:
        """
        Text is sent UTF-8 encoded.
        """
        protocol, transport = connected()
        self.assertTrue(protocol.sendMessage("grüße €"))
        self.assertEqual(transport.value(), "grüße €\n".encode())

    def test_largeMessage(self) -> None:
        """
        A large message (written without one more copy) arrives whole.
        """
        message = randomMessage(300 * 1024, b"\n")
        protocol, transport = connected(messageAppend=b"+")
        self.assertTrue(protocol.sendMessage(message))
        self.assertEqual(transport.value(), message + b"+\n")

    def test_refusesDelimiter(self) -> None:
        """
        A message containing the delimiter is refused and nothing written.
        """
        for delimiter, message in [
            (b"\n", b"a\nb"),
            (b"\n", "a\nb"),
            (b"\n", b"\n"),
            (b"--END--", b"x--END--y"),
            (b"\r\n", b"ab\r\n"),
        ]:
            protocol, transport = connected(delimiter=delimiter)
            self.assertFalse(protocol.sendMessage(message))
            self.assertIsNone(protocol.frame(message))
            self.assertEqual(transport.value(), b"")

    def test_refusesFormingDelimiter(self) -> None:
        """
        A message is refused when its frame would be read back differently:
        its end forms a delimiter with the delimiter after it (delimiters
        overlapping themselves), or C{messageAppend} holds or forms one.
        """
        for delimiter, append, message in [
            (b"--END--", b"", b"--END-"),
            (b"\n\n", b"", b"a\n"),
            (b"--", b"", b"a-"),
            (b"\n", b"\n", b"a"),
            (b"--", b"-", b"a"),
            (b"--", b"x-", b""),
            (b"abab", b"ab", b"xab"),
        ]:
            protocol, transport = connected(delimiter=delimiter, messageAppend=append)
            self.assertFalse(protocol.sendMessage(message), (delimiter, append, message))
            self.assertIsNone(protocol.frame(message))
            self.assertEqual(transport.value(), b"")
        for delimiter, append, message in [
            (b"\n\n", b"", b"\na"),
            (b"--", b"", b"-a"),
            (b"--END--", b"-", b"--EN"),
        ]:
            protocol, transport = connected(delimiter=delimiter, messageAppend=append)
            self.assertTrue(protocol.sendMessage(message))
            receiver, _ = connected(delimiter=delimiter)
            receiver.dataReceived(transport.value())
            self.assertMessages(receiver.messages, [message + append])

    @PROPERTY
    @given(st.data())
    def test_sentIsReceived(self, data: st.DataObject) -> None:
        """
        Property: C{sendMessage} accepts exactly the messages a peer with the
        same settings reads back as sent (C{message + messageAppend}) within
        C{maxMessageLength}; what it accepts arrives in order, what it
        refuses writes nothing, and C{frame} agrees with it.
        """
        delimiter = data.draw(delimiters())
        append = data.draw(st.lists(st.sampled_from(ALPHABET), max_size=3).map(bytes))
        maxLength = data.draw(st.none() | st.integers(0, 16))
        messages = data.draw(
            st.lists(st.lists(st.sampled_from(ALPHABET), max_size=12).map(bytes), max_size=12)
        )
        sender, transport = connected(
            delimiter=delimiter, messageAppend=append, maxMessageLength=maxLength
        )
        accepted = []
        for message in messages:
            body = message + append
            readable = (body + delimiter).find(delimiter) == len(body)
            fits = maxLength is None or len(body) <= maxLength
            before = transport.value()
            frame = sender.frame(message)
            self.assertEqual(sender.sendMessage(message), readable and fits)
            if readable and fits:
                accepted.append(body)
                self.assertEqual(frame, body + delimiter)
                self.assertEqual(transport.value(), before + body + delimiter)
            else:
                self.assertIsNone(frame)
                self.assertEqual(transport.value(), before)
        receiver, _ = connected(delimiter=delimiter, maxMessageLength=maxLength)
        stream = transport.value()
        feed(receiver, pieces(stream, data.draw(cutsOf(stream))))
        self.assertMessages(receiver.messages, accepted)
        self.assertEqual(receiver.tooLong, [])

    def test_refusesTooLong(self) -> None:
        """
        A message is refused when, with C{messageAppend}, it is longer than
        C{maxMessageLength}; one that just fits is sent.
        """
        protocol, transport = connected(maxMessageLength=5, messageAppend=b"!!")
        self.assertFalse(protocol.sendMessage(b"abcd"))
        self.assertFalse(protocol.sendMessage("abcé"))  # 5 bytes of UTF-8
        self.assertIsNone(protocol.frame(b"abcd"))
        self.assertEqual(transport.value(), b"")
        self.assertTrue(protocol.sendMessage(b"abc"))
        self.assertEqual(transport.value(), b"abc!!\n")

    def test_refusesBeforeConnection(self) -> None:
        protocol = Recorder()
        self.assertFalse(protocol.sendMessage(b"early"))
        self.assertFalse(protocol.sendFrame(b"early\n"))

    def test_refusesBeforeHandshake(self) -> None:
        protocol, transport = connected(transport=tlsTransport())
        self.assertFalse(protocol.sendMessage(b"early"))
        self.assertFalse(protocol.sendFrame(b"early\n"))
        self.assertEqual(transport.value(), b"")

    def test_refusesAfterConnectionLost(self) -> None:
        protocol, transport = connected()
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertFalse(protocol.sendMessage(b"late"))
        self.assertFalse(protocol.sendFrame(b"late\n"))
        self.assertEqual(transport.value(), b"")

    def test_refusesWhileClosing(self) -> None:
        protocol, transport = connected()
        transport.loseConnection()
        self.assertFalse(protocol.sendMessage(b"late"))
        self.assertFalse(protocol.sendFrame(b"late\n"))
        self.assertEqual(transport.value(), b"")

    def test_frame(self) -> None:
        """
        C{frame} builds what C{sendMessage} writes (even before a connection,
        for use on many), and C{sendFrame} writes it as is.
        """
        protocol = Recorder()
        protocol.delimiter = b"\r\n"
        protocol.messageAppend = b";"
        frame = protocol.frame("hé")
        self.assertEqual(frame, "hé;\r\n".encode())
        self.assertEqual(protocol.frame(b""), b";\r\n")
        protocol, transport = connected(protocol)
        self.assertTrue(protocol.sendFrame(frame))
        self.assertTrue(protocol.sendMessage("hé"))
        self.assertEqual(transport.value(), frame * 2)


class BatchingTests(FramingTestCase):
    """
    Replies made while one read is handled leave in one write.
    """

    def echo(self, transport: StringTransport, replies: int = 2) -> Recorder:
        class Echo(Recorder):
            def messageReceived(self, message: bytes) -> None:
                super().messageReceived(message)
                for index in range(1, replies + 1):
                    self.sendMessage(message + str(index).encode())

        protocol, _ = connected(Echo(), transport)
        return protocol

    def test_oneWritePerRead(self) -> None:
        transport = WriteCountingTransport()
        protocol = self.echo(transport)
        protocol.dataReceived(b"a\nb\nc\n")
        self.assertMessages(transport.writes, [b"a1\na2\nb1\nb2\nc1\nc2\n"])
        protocol.dataReceived(b"d")
        self.assertEqual(len(transport.writes), 1)
        protocol.dataReceived(b"\ne\n")
        self.assertMessages(transport.writes[1:], [b"d1\nd2\ne1\ne2\n"])

    def test_largeAndFramedRepliesInOrder(self) -> None:
        """
        Large replies and frames join the same single write, in order.
        """
        large = randomMessage(100 * 1024, b"\n")

        class Replier(Recorder):
            def messageReceived(self, message: bytes) -> None:
                self.sendMessage(b"small")
                self.sendMessage(large)
                self.sendFrame(b"frame\n")

        transport = WriteCountingTransport()
        protocol, _ = connected(Replier(), transport)
        protocol.dataReceived(b"go\n")
        self.assertMessages(transport.writes, [b"small\n" + large + b"\nframe\n"])

    def test_largeRepliesNotCopied(self) -> None:
        """
        The replies to one read that include large messages leave in one
        C{writeSequence} holding the large messages themselves: the
        transport joins what it sends anyway, so they are not copied here
        to append their delimiters.
        """
        large = randomMessage(100 * 1024, b"\n")

        class Sequences(StringTransport):
            def __init__(self) -> None:
                super().__init__()
                self.sequences: list[list[bytes]] = []

            def writeSequence(self, data: list[bytes]) -> None:
                self.sequences.append(list(data))
                super().writeSequence(data)

        class Replier(Recorder):
            def messageReceived(self, message: bytes) -> None:
                self.sendMessage(b"small")
                self.sendMessage(large)
                self.sendMessage(b"after")

        transport = Sequences()
        protocol, _ = connected(Replier(), transport)
        protocol.dataReceived(b"go\n")
        self.assertEqual(len(transport.sequences), 1)
        self.assertTrue(any(part is large for part in transport.sequences[0]))
        self.assertSameBytes(transport.value(), b"small\n" + large + b"\nafter\n")

    def test_outsideReadWritesAtOnce(self) -> None:
        """
        Outside of handling a read each message is written at once.
        """
        transport = WriteCountingTransport()
        protocol, _ = connected(transport=transport)
        protocol.sendMessage(b"one")
        self.assertMessages(transport.writes, [b"one\n"])
        protocol.sendMessage(b"two")
        self.assertMessages(transport.writes, [b"one\n", b"two\n"])

    def test_repliesWrittenWhenHandlerFails(self) -> None:
        """
        Replies made before a handler raised are still written.
        """

        class Failing(Recorder):
            def messageReceived(self, message: bytes) -> None:
                self.sendMessage(b"reply " + message)
                if message == b"bad":
                    raise RuntimeError("handler failed")

        transport = WriteCountingTransport()
        protocol, _ = connected(Failing(), transport)
        self.assertRaises(RuntimeError, protocol.dataReceived, b"ok\nbad\n")
        self.assertMessages(transport.writes, [b"reply ok\nreply bad\n"])

    def test_tlsRepliesInOrder(self) -> None:
        """
        On a TLS transport (which aggregates writes itself) replies still go
        out in order.
        """
        transport = tlsTransport()
        protocol = self.echo(transport)
        protocol.handshakeCompleted()
        protocol.dataReceived(b"a\nb\n")
        self.assertEqual(transport.value(), b"a1\na2\nb1\nb2\n")


class Batcher(Recorder):
    """
    A L{Recorder} that takes the messages of a read as a batch, recording
    each batch in C{events}, and pausing (or closing) after the batches
    holding a message in C{pauseOn} (or C{closeOn}).
    """

    pauseOn: frozenset[bytes] = frozenset()
    closeOn: frozenset[bytes] = frozenset()

    def messagesReceived(self, messages: list[bytes]) -> None:
        self.messages.extend(messages)
        self.events.append(("batch", list(messages)))
        if self.pauseOn.intersection(messages):
            self.pauseReading()
        if self.closeOn.intersection(messages):
            self.closeConnection("asked to")


class BatchHookTests(FramingTestCase):
    """
    C{messagesReceived} gets the complete messages of one read at once, and
    keeps every guarantee of C{messageReceived}.
    """

    def batches(self, protocol: Recorder) -> list[object]:
        """
        @return: the batches and the lengths of too-long messages, in order.
        """
        return [
            event[1:] if event[0] == "tooLong" else event[1]
            for event in protocol.events
            if event[0] in ("batch", "tooLong")
        ]

    def test_oneCallPerRead(self) -> None:
        """
        The messages of a read come in one call, in order, the one completed
        from an earlier read first; a read completing none makes no call.
        """
        protocol, _ = connected(Batcher(), delimiter=b"\r\n")
        feed(protocol, [b"a\r\nb\r\nc", b"c\r", b"\nd\r\n\r\ne", b"\r\n"])
        self.assertEqual(self.batches(protocol), [[b"a", b"b"], [b"cc", b"d", b""], [b"e"]])

    def test_defaultCallsMessageReceived(self) -> None:
        """
        The default hook calls C{messageReceived} for each message, so an
        override may do something with the batch and call up.
        """

        class Counting(Recorder):
            def messagesReceived(self, messages: list[bytes]) -> None:
                self.events.append(("batch of", len(messages)))
                super().messagesReceived(messages)

        protocol, _ = connected(Counting())
        protocol.dataReceived(b"a\nb\n")
        self.assertEqual(
            protocol.events[1:], [("batch of", 2), ("message", b"a"), ("message", b"b")]
        )

    def test_tooLongBetweenBatches(self) -> None:
        """
        A message longer than C{maxMessageLength} is in no batch: the
        messages before and after it come in two calls, with
        C{messageTooLong} in between.
        """
        protocol, _ = connected(Batcher(), maxMessageLength=3)
        protocol.dataReceived(b"ab\ncd\ntoo long\nef\n")
        self.assertEqual(self.batches(protocol), [[b"ab", b"cd"], (8,), [b"ef"]])

    def test_pauseHoldsFollowingReads(self) -> None:
        """
        Pausing in the hook takes effect after its batch: what arrives
        next is held, then delivered on resume, in order, as one batch.
        """
        protocol, transport = connected(Batcher())
        protocol.pauseOn = frozenset([b"b"])
        protocol.dataReceived(b"a\nb\nc")
        self.assertEqual(transport.producerState, "paused")
        protocol.dataReceived(b"\nd\n")
        protocol.dataReceived(b"e\n")
        self.assertEqual(self.batches(protocol), [[b"a", b"b"]])
        protocol.resumeReading()
        self.assertEqual(self.batches(protocol), [[b"a", b"b"], [b"c", b"d", b"e"]])
        self.assertEqual(transport.producerState, "producing")

    def test_pauseInMessageReceivedHoldsRestOfBatch(self) -> None:
        """
        With the default hook, a pause in C{messageReceived} holds the rest
        of the batch; an override calling up gets the same.
        """

        class Pausing(Recorder):
            def messagesReceived(self, messages: list[bytes]) -> None:
                self.events.append(("batch of", len(messages)))
                super().messagesReceived(messages)

            def messageReceived(self, message: bytes) -> None:
                super().messageReceived(message)
                if message == b"b":
                    self.pauseReading()

        protocol, _ = connected(Pausing())
        protocol.dataReceived(b"a\nb\nc\nd\n")
        self.assertMessages(protocol.messages, [b"a", b"b"])
        protocol.resumeReading()
        self.assertMessages(protocol.messages, [b"a", b"b", b"c", b"d"])

    def test_closeStopsDelivery(self) -> None:
        """
        A close in C{messageReceived} stops the rest of the batch; a close
        in the hook stops everything after its batch.
        """

        class Closing(Recorder):
            def messageReceived(self, message: bytes) -> None:
                super().messageReceived(message)
                if message == b"close":
                    self.closeConnection("asked to")

        protocol, transport = connected(Closing())
        protocol.dataReceived(b"a\nclose\nb\n")
        self.assertMessages(protocol.messages, [b"a", b"close"])
        self.assertTrue(transport.disconnecting)
        # The connection ends, as its transport would end it: its close
        # timer (on the global reactor here) is cancelled.
        protocol.connectionLost(Failure(ConnectionDone()))

        protocol, transport = connected(Batcher())
        protocol.closeOn = frozenset([b"close"])
        protocol.dataReceived(b"a\nclose\n")
        protocol.dataReceived(b"b\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.batches(protocol), [[b"a", b"close"]])

    def test_repliesOfBatchInOneWrite(self) -> None:
        """
        What the hook sends leaves in one write at the end of the read.
        """

        class Echo(Recorder):
            def messagesReceived(self, messages: list[bytes]) -> None:
                for message in messages:
                    self.sendMessage(message.upper())

        transport = WriteCountingTransport()
        protocol, _ = connected(Echo(), transport)
        protocol.dataReceived(b"a\nb\nc\n")
        self.assertEqual(transport.writes, [b"A\nB\nC\n"])

    def test_daemonEchoBatch(self) -> None:
        """
        The daemon's echo answers a read's messages with one write, large
        ones included and not copied, and falls back to C{sendMessage}
        (which validates) where something is appended.
        """
        from tcpsc._apps import Echo

        large = randomMessage(20 * 1024, b"\n")
        transport = WriteCountingTransport()
        protocol, _ = connected(Echo(), transport)
        protocol.dataReceived(b"a\nb\n" + large + b"\nc")
        self.assertEqual(len(transport.writes), 1)
        self.assertSameBytes(transport.value(), b"a\nb\n" + large + b"\n")
        appended, transport = connected(Echo(), messageAppend=b"!")
        appended.dataReceived(b"x\ny\n")
        self.assertEqual(transport.value(), b"x!\ny!\n")


class PauseTests(FramingTestCase):
    """
    C{pauseReading} holds delivery back; C{resumeReading} replays it.
    """

    def pausing(
        self, pauseOn: set[bytes], transport: StringTransport | None = None, **attributes: object
    ):
        """
        @return: a connected protocol pausing after each message in
            C{pauseOn}, recording the transport's producer state at each
            message in C{states}; and its transport.
        """

        class Pausing(Recorder):
            states: list[str]

            def messageReceived(self, message: bytes) -> None:
                super().messageReceived(message)
                self.states.append(self.transport.producerState)
                if message in pauseOn:
                    self.pauseReading()

        protocol = Pausing()
        protocol.states = []
        return connected(protocol, transport, **attributes)

    def test_pauseStopsDelivery(self) -> None:
        """
        Pausing inside C{messageReceived} stops the rest of the read and
        pauses the transport; data arriving while paused is held.
        """
        protocol, transport = self.pausing({b"b"})
        protocol.dataReceived(b"a\nb\nc\nd")
        self.assertMessages(protocol.messages, [b"a", b"b"])
        self.assertEqual(transport.producerState, "paused")
        protocol.dataReceived(b"\ne\n")
        self.assertMessages(protocol.messages, [b"a", b"b"])

    def test_resumeDeliversThenReads(self) -> None:
        """
        Resuming delivers the held messages in order, while the transport is
        still paused, then resumes the transport.
        """
        protocol, transport = self.pausing({b"b"})
        protocol.dataReceived(b"a\nb\nc\nd")
        protocol.dataReceived(b"\ne\nf")
        protocol.resumeReading()
        self.assertMessages(protocol.messages, [b"a", b"b", b"c", b"d", b"e"])
        self.assertEqual(protocol.states, ["producing"] * 2 + ["paused"] * 3)
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"\n")
        self.assertEqual(protocol.messages[-1], b"f")

    def test_resumeBeforeNewData(self) -> None:
        """
        Held messages come before data the transport delivers as soon as it
        is resumed.
        """

        class Eager(StringTransport):
            def resumeProducing(self) -> None:
                super().resumeProducing()
                protocol.dataReceived(b"late\n")

        protocol, _ = self.pausing({b"a"}, Eager())
        protocol.dataReceived(b"a\nb\nc\n")
        protocol.resumeReading()
        self.assertMessages(protocol.messages, [b"a", b"b", b"c", b"late"])

    def test_pauseAgainDuringReplay(self) -> None:
        protocol, transport = self.pausing({b"b", b"d"})
        protocol.dataReceived(b"a\nb\nc\nd\ne\n")
        protocol.resumeReading()
        self.assertMessages(protocol.messages, [b"a", b"b", b"c", b"d"])
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeReading()
        self.assertMessages(protocol.messages, [b"a", b"b", b"c", b"d", b"e"])
        self.assertEqual(transport.producerState, "producing")

    def test_pauseOnMessageCompletedFromBuffer(self) -> None:
        """
        Pausing on a message whose start was buffered from an earlier read
        holds what follows it in the same read, a multi-byte delimiter split
        across reads included.
        """
        protocol, _ = self.pausing({b"abc"}, delimiter=b"\r\n")
        protocol.dataReceived(b"ab")
        protocol.dataReceived(b"c\r")
        protocol.dataReceived(b"\nd\r\ne\r")
        self.assertMessages(protocol.messages, [b"abc"])
        protocol.dataReceived(b"\nf")
        protocol.resumeReading()
        self.assertMessages(protocol.messages, [b"abc", b"d", b"e"])
        protocol.dataReceived(b"\r\n")
        self.assertMessages(protocol.messages, [b"abc", b"d", b"e", b"f"])

    def test_pauseBeforeData(self) -> None:
        """
        Pausing between reads holds everything after.
        """
        protocol, transport = self.pausing(set())
        protocol.dataReceived(b"a\nb")
        protocol.pauseReading()
        self.assertEqual(transport.producerState, "paused")
        protocol.dataReceived(b"\nc\n")
        self.assertMessages(protocol.messages, [b"a"])
        protocol.resumeReading()
        self.assertMessages(protocol.messages, [b"a", b"b", b"c"])

    def test_repliesDuringReplayBatched(self) -> None:
        """
        Replies made while held messages are replayed leave in one write.
        """

        class Echo(Recorder):
            def messageReceived(self, message: bytes) -> None:
                super().messageReceived(message)
                self.sendMessage(message.upper())
                if message == b"a":
                    self.pauseReading()

        transport = WriteCountingTransport()
        protocol, _ = connected(Echo(), transport)
        protocol.dataReceived(b"a\nb\nc\n")
        protocol.resumeReading()
        self.assertMessages(transport.writes, [b"A\n", b"B\nC\n"])

    def test_connectionLostDeliversHeld(self) -> None:
        """
        Messages held when the connection is lost are delivered first, even
        if a handler pauses again, before the owner is told and the
        connection's closing completes.
        """
        protocol, _ = self.pausing({b"a", b"c"})
        protocol._observer = Observer(protocol.events)
        protocol.dataReceived(b"a\nb\nc\nd\npartial")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            protocol.events,
            [("ready",)]
            + [("message", m) for m in (b"a", b"b", b"c", b"d")]
            + [("observer closed", True), ("connectionLost",)],
        )

    def test_resumeWhenNotPaused(self) -> None:
        """
        Resuming a connection that is not paused does nothing.
        """
        protocol, transport = self.pausing(set())
        transport.producerState = "stopped"  # resumeProducing would raise
        protocol.resumeReading()
        self.assertMessages(protocol.messages, [])


# -- readiness -------------------------------------------------------------


class ReadinessTests(FramingTestCase):
    """
    C{connectionReady} and C{ready}: at connect for TCP, after the handshake
    (and the readiness gate) for TLS.
    """

    def test_plainReadyAtConnect(self) -> None:
        """
        A plain connection is ready when made; the owner is told first, so
        that the hook may use what the owner set up.
        """
        protocol = Recorder()
        protocol._observer = Observer(protocol.events)
        self.assertFalse(protocol.ready)
        connected(protocol)
        self.assertTrue(protocol.ready)
        self.assertEqual(protocol.events, [("observer ready",), ("ready",)])

    def test_connectionMadeWithoutUpcall(self) -> None:
        """
        A subclass overriding C{connectionMade} without calling up still
        becomes ready, over TCP and over TLS.
        """

        class Own(Recorder):
            def connectionMade(self) -> None:
                self.events.append(("made", self.ready))

        protocol, _ = connected(Own())
        self.assertEqual(protocol.events, [("made", False), ("ready",)])
        protocol, _ = connected(Own(), tlsTransport())
        protocol.handshakeCompleted()
        self.assertEqual(protocol.events, [("made", False), ("ready",)])

    def test_tlsReadyAfterHandshake(self) -> None:
        """
        A TLS connection becomes ready only at C{handshakeCompleted}, once;
        a second one is ignored.
        """
        protocol = Recorder()
        protocol._observer = Observer(protocol.events)
        connected(protocol, tlsTransport())
        self.assertFalse(protocol.ready)
        self.assertEqual(protocol.events, [])
        protocol.handshakeCompleted()
        self.assertTrue(protocol.ready)
        protocol.handshakeCompleted()
        self.assertEqual(protocol.events, [("observer ready",), ("ready",)])

    def test_readinessGate(self) -> None:
        """
        A readiness gate is asked once, after the handshake; the connection
        is ready only when it proceeds, and only once.
        """
        gates: list[tuple[object, object]] = []
        protocol = Recorder()
        protocol._readinessGate = lambda p, proceed: gates.append((p, proceed))
        connected(protocol, tlsTransport())
        self.assertEqual(gates, [])
        protocol.handshakeCompleted()
        protocol.handshakeCompleted()
        self.assertEqual(len(gates), 1)
        self.assertIs(gates[0][0], protocol)
        self.assertFalse(protocol.ready)
        self.assertFalse(protocol.sendMessage(b"early"))
        proceed = gates[0][1]
        proceed()  # type: ignore[operator]
        self.assertTrue(protocol.ready)
        proceed()  # type: ignore[operator]
        self.assertEqual(protocol.readyCount, 1)

    def test_gateAfterConnectionLost(self) -> None:
        """
        A gate (or handshake) completing after the connection was lost does
        not make it ready.
        """
        gates: list[object] = []
        protocol = Recorder()
        protocol._observer = Observer(protocol.events)
        protocol._readinessGate = lambda p, proceed: gates.append(proceed)
        connected(protocol, tlsTransport())
        protocol.handshakeCompleted()
        protocol.connectionLost(Failure(ConnectionLost()))
        gates[0]()  # type: ignore[operator]
        self.assertFalse(protocol.ready)
        self.assertEqual(protocol.events, [("observer closed", False), ("connectionLost",)])

        late = Recorder()
        connected(late, tlsTransport())
        late.connectionLost(Failure(ConnectionLost()))
        late.handshakeCompleted()
        self.assertFalse(late.ready)
        self.assertEqual(late.readyCount, 0)

    def test_notReadyAfterConnectionLost(self) -> None:
        protocol = Recorder()
        protocol._observer = Observer(protocol.events)
        connected(protocol)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(protocol.ready)
        self.assertEqual(protocol.events[-2:], [("observer closed", True), ("connectionLost",)])

    def test_closedByOwnerWhileBecomingReady(self) -> None:
        """
        If the owner closes the connection when told it is ready (a
        connection limit, say), the hook is not called.
        """

        class Closing(Observer):
            def connectionReady(self, protocol: object) -> None:
                super().connectionReady(protocol)
                protocol.transport.loseConnection()  # type: ignore[attr-defined]

        protocol = Recorder()
        protocol._observer = Closing(protocol.events)
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        connected(protocol, transport)
        self.assertFalse(protocol.ready)
        self.assertEqual(protocol.readyCount, 0)

    def test_invalidDelimiter(self) -> None:
        """
        An empty or text delimiter is refused with a clear error when the
        connection is made; losing it afterwards reports a connection that
        never was ready.
        """
        for delimiter in (b"", "\n", None):
            protocol = Recorder()
            protocol._observer = Observer(protocol.events)
            protocol.delimiter = delimiter  # type: ignore[assignment]
            error = self.assertRaises(ValueError, protocol.makeConnection, StringTransport())
            self.assertIn("delimiter must be non-empty bytes", str(error))
            self.assertIn(repr(delimiter), str(error))
            self.assertFalse(protocol.ready)
            protocol.connectionLost(Failure(ConnectionLost()))
            self.assertEqual(protocol.events, [("observer closed", False), ("connectionLost",)])


# -- continuous mode -------------------------------------------------------


class Sink:
    def __init__(self, events: list[tuple[object, ...]]) -> None:
        self.events = events

    def write(self, data: bytes) -> None:
        self.events.append(("write", data))

    def close(self) -> None:
        self.events.append(("close",))


class StreamTests(FramingTestCase):
    """
    L{StreamProtocol}: bytes as they come, to a sink or the owner.
    """

    def test_sinkGetsBytesAndIsClosed(self) -> None:
        """
        Received bytes go to the sink unchanged and in order; the sink is
        closed when the connection is lost, after the owner was told.
        """
        events: list[tuple[object, ...]] = []
        protocol = StreamProtocol()
        protocol._observer = Observer(events)
        protocol.sink = Sink(events)
        connected(protocol)
        for data in (b"a\n", b"\x00bc", b"\r\n"):
            protocol.dataReceived(data)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            events,
            [
                ("observer ready",),
                ("write", b"a\n"),
                ("write", b"\x00bc"),
                ("write", b"\r\n"),
                ("observer closed", True),
                ("close",),
            ],
        )
        self.assertIsNone(protocol.sink)

    def test_sinkClosedWhenOwnerFails(self) -> None:
        events: list[tuple[object, ...]] = []

        class Failing(Observer):
            def connectionClosed(self, protocol: object, reason: Failure, wasReady: bool):
                raise RuntimeError("owner failed")

        protocol = StreamProtocol()
        protocol._observer = Failing(events)
        protocol.sink = Sink(events)
        connected(protocol)
        self.assertRaises(RuntimeError, protocol.connectionLost, Failure(ConnectionDone()))
        self.assertEqual(events[-1], ("close",))

    def test_sinkWithoutClose(self) -> None:
        written: list[bytes] = []

        class WriteOnly:
            write = staticmethod(written.append)

        protocol = StreamProtocol()
        protocol.sink = WriteOnly()
        connected(protocol)
        protocol.dataReceived(b"data")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(written, [b"data"])
        self.assertIsNone(protocol.sink)

    def test_withoutSinkToOwner(self) -> None:
        events: list[tuple[object, ...]] = []
        protocol = StreamProtocol()
        protocol._observer = Observer(events)
        connected(protocol)
        protocol.dataReceived(b"xy")
        self.assertEqual(events, [("observer ready",), ("observer data", b"xy")])

    def test_sendData(self) -> None:
        """
        Bytes are sent as they are, text UTF-8 encoded; empty data writes
        nothing and succeeds.
        """
        transport = WriteCountingTransport()
        protocol, _ = connected(StreamProtocol(), transport)
        self.assertTrue(protocol.sendData(b"a\nb\x00"))
        self.assertTrue(protocol.sendData("é"))
        self.assertTrue(protocol.sendData(b""))
        self.assertMessages(transport.writes, [b"a\nb\x00", "é".encode()])

    def test_sendDataRefused(self) -> None:
        """
        Like C{sendMessage}: refused before the connection is made, before
        the TLS handshake, while closing and after the connection was lost.
        """
        self.assertFalse(StreamProtocol().sendData(b"x"))
        protocol, transport = connected(StreamProtocol(), tlsTransport())
        self.assertFalse(protocol.sendData(b"x"))
        protocol.handshakeCompleted()
        self.assertTrue(protocol.sendData(b"y"))
        transport.loseConnection()
        self.assertFalse(protocol.sendData(b"x"))
        protocol, other = connected(StreamProtocol())
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(protocol.sendData(b"x"))
        self.assertEqual((transport.value(), other.value()), (b"y", b""))


# -- TLS in memory ---------------------------------------------------------


class TLSRecorder(Recorder):
    """
    Records whether it was ready and could send at C{connectionMade}, and the
    peer certificate's CN at C{connectionReady}.
    """

    def connectionMade(self) -> None:
        self.events.append(("made", self.ready, self.sendMessage(b"too early")))

    def connectionReady(self) -> None:
        super().connectionReady()
        self.events.append(("peer", subjectPart(peerCertificate(self.transport), "CN")))


class ServerRecorder(TLSRecorder):
    pass


class ClientRecorder(TLSRecorder):
    pass


def connectedOverTLS():
    """
    @return: the result of L{tlsPair} for a L{ServerRecorder} and a
        L{ClientRecorder} with the main certificate set.
    """
    files = certificates()
    return tlsPair(
        TLSConfig(ca=files.ca, cert=files.server, key=files.serverKey).serverOptions(),
        TLSConfig(ca=files.ca, cert=files.client, key=files.clientKey).clientCreator("localhost"),
        Factory.forProtocol(ServerRecorder),
        Factory.forProtocol(ClientRecorder),
    )


class TLSPairTests(FramingTestCase):
    def test_readyAfterHandshakeAndMessagesFlow(self) -> None:
        """
        Over TLS both sides become ready only after the handshake verified
        the peer, and messages flow both ways.
        """
        first, second, pump, clock = connectedOverTLS()
        sides = {type(p.wrappedProtocol): p.wrappedProtocol for p in (first, second)}
        serverSide, clientSide = sides[ServerRecorder], sides[ClientRecorder]
        self.assertEqual(
            serverSide.events[:3], [("made", False, False), ("ready",), ("peer", "client")]
        )
        self.assertEqual(
            clientSide.events[:3], [("made", False, False), ("ready",), ("peer", "localhost")]
        )
        self.assertTrue(serverSide.ready and clientSide.ready)

        large = randomMessage(200 * 1024, b"\n")
        self.assertTrue(clientSide.sendMessage(b"hello"))
        self.assertTrue(clientSide.sendMessage(large))
        self.assertTrue(serverSide.sendMessage("wörld"))
        self.assertTrue(serverSide.sendMessage(b""))
        pump.flush()
        self.assertMessages(serverSide.messages, [b"hello", large])
        self.assertMessages(clientSide.messages, ["wörld".encode(), b""])

        clientSide.transport.loseConnection()
        pump.flush()
        self.assertFalse(serverSide.ready or clientSide.ready)
        self.assertEqual(serverSide.events[-1], ("connectionLost",))
        self.assertEqual(clientSide.events[-1], ("connectionLost",))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_tlsPairOrder(self) -> None:
        """
        L{tlsPair} returns the server's TLS protocol first, as documented.
        """
        server, client, _, _ = connectedOverTLS()
        self.assertIsInstance(server.wrappedProtocol, ServerRecorder)
        self.assertIsInstance(client.wrappedProtocol, ClientRecorder)
