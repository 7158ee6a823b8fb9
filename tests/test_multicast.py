"""
Tests of L{tcpsc.MulticastSender} and L{tcpsc.MulticastReceiver}, on IPv4
and IPv6 groups.

Every scenario that opens a socket runs in a private network namespace
(L{tests._netns}), as a program of its own: C{python -m tests.test_multicast
SCENARIO ARGUMENTS} runs one of L{SCENARIOS} on the global reactor and
prints what it saw as one line of JSON, which the test asserts on.  Nothing
it sends can leave the namespace, and joining a group there tells no router
outside.  Without a namespace (not root) those tests skip, saying why.

Every wait in a scenario is bounded, and waits on an event: a count of
messages reached.  That a receiver gets I{nothing} is shown by a marker: a
datagram sent afterwards to another group (or by another sender), which
the receiver's neighbour gets; once it has, the receiver would have had its
datagram too.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tcpsc import ListenError, MulticastReceiver, MulticastSender, PortError, StartError
from tcpsc._multicast import _ReceiverProtocol
from tests import _netns

#: The groups of the scenarios, by family.
GROUPS = {"4": ("239.255.0.1", "239.255.0.2"), "6": ("ff15::1", "ff15::2")}

#: The port every receiver of a scenario listens on.
PORT = 9500

#: Bound of one wait inside a scenario.
WAIT = 10.0

#: Linux's IP_RECVTTL, which Python's socket module does not name.
IP_RECVTTL = 12


class Collector:
    """
    What one receiver got, and a way to wait for a count of it.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.messages: list[bytes] = []
        self.senders: set[tuple[str, int]] = set()
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def __call__(self, message: bytes, address: tuple[str, int]) -> None:
        self.messages.append(message)
        self.senders.add(address)
        for entry in list(self._waiting):
            count, d = entry
            if len(self.messages) >= count:
                self._waiting.remove(entry)
                d.callback(None)

    def waitFor(self, count: int) -> Deferred[None]:
        """
        Fires once C{count} messages arrived; fails after L{WAIT} seconds.
        """
        d: Deferred[None] = Deferred()
        if len(self.messages) >= count:
            d.callback(None)
            return d
        self._waiting.append((count, d))
        return d.addTimeout(WAIT, self.reactor)


def rawSender(family: str) -> socket.socket:
    """
    A plain socket to send datagrams to a group with, not tcpsc's.
    """
    return socket.socket(socket.AF_INET if family == "4" else socket.AF_INET6, socket.SOCK_DGRAM)


async def started(*endpoints: MulticastSender | MulticastReceiver) -> None:
    for endpoint in endpoints:
        await endpoint.start()


async def fanout(reactor: Any, family: str) -> dict[str, Any]:
    """
    One sender, three receivers on one host and port, a fourth receiver
    of another group on the same port: 200 messages in batches of 20 (so
    that no socket buffer overflows); then a marker to the other group.
    """
    group, other = GROUPS[family]
    collectors = [Collector(reactor) for _ in range(3)]
    receivers = [MulticastReceiver(group, PORT, onMessage=c) for c in collectors]
    otherCollector = Collector(reactor)
    otherReceiver = MulticastReceiver(other, PORT, onMessage=otherCollector)
    sender = MulticastSender(group, PORT)
    otherSender = MulticastSender(other, PORT)
    await started(*receivers, otherReceiver, sender, otherSender)
    sent = []
    for batch in range(10):
        for i in range(20):
            message = f"message {batch * 20 + i}".encode()
            assert sender.send(message)
            sent.append(message)
        for c in collectors:
            await c.waitFor(len(sent))
    # A unicast datagram to the port, from a plain socket: a receiver is
    # bound to its group, so it is not a message of the group.
    loopback = "127.0.0.1" if family == "4" else "::1"
    rawSender(family).sendto(b"unicast", (loopback, PORT))
    assert otherSender.send(b"marker")
    await otherCollector.waitFor(1)
    return {
        "sent": [m.decode() for m in sent],
        "received": [[m.decode() for m in c.messages] for c in collectors],
        "senders": [sorted(h for h, _ in c.senders) for c in collectors],
        "other": [m.decode() for m in otherCollector.messages],
        "ports": [r.port for r in receivers],
    }


async def delimited(reactor: Any, family: str) -> dict[str, Any]:
    """
    A delimiter: many messages per datagram, from a plain socket and from
    L{MulticastSender.sendMessages}; a trailing part without its delimiter
    is a message too.
    """
    group, _ = GROUPS[family]
    collector = Collector(reactor)
    receiver = MulticastReceiver(group, PORT, delimiter=b"\r\n", onMessage=collector)
    sender = MulticastSender(group, PORT, delimiter="\r\n")
    await started(receiver, sender)
    raw = rawSender(family)
    raw.sendto(b"a\r\nb\r\nc", (group, PORT))
    raw.sendto(b"d\r\n", (group, PORT))
    await collector.waitFor(4)
    many = [f"m{i}" for i in range(200)]
    batched = sender.sendMessages(many)
    await collector.waitFor(4 + 200)
    single = sender.send("one")
    await collector.waitFor(4 + 200 + 1)
    return {
        "received": [m.decode() for m in collector.messages],
        "batched": batched,
        "single": single,
        "withDelimiter": sender.send("x\r\ny"),
        "tooManyForOne": sender.sendMessages(["y" * 100] * 20),
    }


async def oversize(reactor: Any, family: str) -> dict[str, Any]:
    """
    A receiver bound to 100 bytes: datagrams of 101 and 5000 bytes are
    dropped whole and counted, 100 bytes and the ones after arrive.  A
    sender bound to 100 bytes refuses 101 and sends nothing.
    """
    group, _ = GROUPS[family]
    collector = Collector(reactor)
    receiver = MulticastReceiver(group, PORT, maxMessageLength=100, onMessage=collector)
    wide = Collector(reactor)
    wideReceiver = MulticastReceiver(group, PORT, maxMessageLength=65_000, onMessage=wide)
    sender = MulticastSender(group, PORT, maxMessageLength=100)
    await started(receiver, wideReceiver, sender)
    refused = sender.send(b"r" * 101)
    raw = rawSender(family)
    for size in (101, 100, 5000, 1):
        raw.sendto(bytes([48 + size % 10]) * size, (group, PORT))
    await collector.waitFor(2)
    await wide.waitFor(4)
    return {
        "lengths": [len(m) for m in collector.messages],
        "wideLengths": [len(m) for m in wide.messages],
        "counts": receiver.eventCounts,
        "refused": refused,
    }


def hopsOf(family: str, sock: socket.socket) -> int:
    """
    The TTL or hop limit of the next datagram C{sock} receives.
    """
    if family == "4":
        level, kind = socket.IPPROTO_IP, socket.IP_TTL
    else:
        level, kind = socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT
    _, ancillary, _, _ = sock.recvmsg(100, socket.CMSG_SPACE(4))
    for cmsgLevel, cmsgType, data in ancillary:
        if (cmsgLevel, cmsgType) == (level, kind):
            return int(struct.unpack("@i", data[:4])[0])
    raise AssertionError(f"no TTL or hop limit among {ancillary}")


async def hops(reactor: Any, family: str) -> dict[str, Any]:
    """
    The TTL (hop limit) given is the one the datagrams carry, as a plain
    socket that joined the group reads it.
    """
    group, _ = GROUPS[family]
    if family == "4":
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        join = (
            socket.IPPROTO_IP,
            socket.IP_ADD_MEMBERSHIP,
            socket.inet_aton(group) + socket.inet_aton("0.0.0.0"),
        )
    else:
        listener = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        join = (
            socket.IPPROTO_IPV6,
            socket.IPV6_JOIN_GROUP,
            socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", 0),
        )
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((group, PORT))
    listener.setsockopt(*join)
    listener.settimeout(WAIT)
    seen = {}
    for ttl in (1, 7, 255):
        sender = MulticastSender(group, PORT, ttl=ttl)
        await sender.start()
        assert sender.send(b"hop")
        # A plain socket, blocking with a timeout: the datagram was sent
        # from the socket's buffer in send() already.
        seen[str(ttl)] = hopsOf(family, listener)
        await sender.stop()
    return {"seen": seen}


async def loopback(reactor: Any, family: str, mode: str) -> dict[str, Any]:
    """
    Over C{mc0}, a real (virtual Ethernet) interface: a sender with
    loopback on or off sends 20 datagrams to a group that a receiver on
    this host joined on C{mc0}; then a sender with loopback on sends a
    marker to another group, that a second receiver on C{mc0} joined.  On
    IPv4 a third receiver, on the same group and port, joined the group on
    C{mc1}, the other end of the pair: it gets every datagram either way,
    which shows that they were sent, and that a receiver's interface
    decides what it hears.  (On Linux an IPv6 receiver hears its group
    from every interface the host joined it on.)
    """
    on = mode == "on"
    group, other = GROUPS[family]
    address = _netns.VETH_ADDRESSES["mc0"][0 if family == "4" else 1]
    here = Collector(reactor)
    marker = Collector(reactor)
    across = Collector(reactor)
    receivers = [
        MulticastReceiver(group, PORT, interface=address, onMessage=here),
        MulticastReceiver(other, PORT, interface="mc0", onMessage=marker),
    ]
    if family == "4":
        receivers.append(MulticastReceiver(group, PORT, interface="mc1", onMessage=across))
    sender = MulticastSender(group, PORT, interface=address, loopback=on)
    markerSender = MulticastSender(other, PORT, interface="mc0")
    await started(*receivers, sender, markerSender)
    for i in range(20):
        assert sender.send(f"datagram {i}")
    if family == "4":
        await across.waitFor(20)
    assert markerSender.send(b"marker")
    await marker.waitFor(1)
    if on:
        await here.waitFor(20)
    return {
        "here": len(here.messages),
        "across": len(across.messages),
        "marker": [m.decode() for m in marker.messages],
    }


async def errors(reactor: Any, family: str) -> dict[str, Any]:
    """
    What start() says for an interface that does not exist, an address no
    interface has, a second start; and stop() ends the deliveries.
    """
    group, _ = GROUPS[family]
    stranger = "10.77.0.1" if family == "4" else "fd77::1"
    result: dict[str, Any] = {}
    cases: dict[str, Callable[[], MulticastSender | MulticastReceiver]] = {
        "receiverName": lambda: MulticastReceiver(group, PORT, interface="nosuch0"),
        "receiverIndex": lambda: MulticastReceiver(group, PORT, interface="9999"),
        "receiverAddress": lambda: MulticastReceiver(group, PORT, interface=stranger),
        "senderName": lambda: MulticastSender(group, PORT, interface="nosuch0"),
        "senderAddress": lambda: MulticastSender(group, PORT, interface=stranger),
    }
    for name, make in cases.items():
        try:
            await make().start()
        except ListenError as e:
            result[name] = ["ListenError", str(e)]
        else:
            result[name] = ["started"]
    # A port taken by a socket that does not share it.
    taken = rawSender(family)
    taken.bind(("", PORT + 1))
    try:
        await MulticastReceiver(group, PORT + 1).start()
    except ListenError as e:
        result["portTaken"] = ["ListenError", str(e)]
    taken.close()
    collector = Collector(reactor)
    receiver = MulticastReceiver(group, PORT, onMessage=collector)
    sender = MulticastSender(group, PORT)
    result["notStarted"] = sender.send(b"early")
    await started(receiver, sender)
    try:
        await receiver.start()
    except StartError as e:
        result["again"] = [type(e).__name__, e.code, str(e)]
    assert sender.send(b"first")
    await collector.waitFor(1)
    await receiver.stop()
    result["stoppedSend"] = sender.send(b"after stop")
    # A receiver started after the first one stopped hears the next
    # datagram: had the first one not left, it would have too.
    late = Collector(reactor)
    lateReceiver = MulticastReceiver(group, PORT, onMessage=late)
    await lateReceiver.start()
    assert sender.send(b"second")
    await late.waitFor(1)
    await sender.stop()
    result["senderStopped"] = sender.send(b"gone")
    result["received"] = [m.decode() for m in collector.messages]
    result["late"] = [m.decode() for m in late.messages]
    # Port 0: the system picks one, which the receiver then tells, and a
    # sender to it reaches the receiver.
    picked = Collector(reactor)
    anyPort = MulticastReceiver(group, 0, onMessage=picked)
    await anyPort.start()
    toPicked = MulticastSender(group, anyPort.port)
    await toPicked.start()
    assert toPicked.send(b"picked")
    await picked.waitFor(1)
    result["picked"] = [anyPort.port != 0, [m.decode() for m in picked.messages]]
    return result


async def linkLocal(reactor: Any) -> dict[str, Any]:
    """
    An IPv6 group of link-local scope, on C{lo}: two receivers on one port
    and a sender, each given the interface (by name, and by index).
    """
    group = "ff02::4242"
    collectors = [Collector(reactor), Collector(reactor)]
    index = str(socket.if_nametoindex("lo"))
    receivers = [
        MulticastReceiver(group, PORT, interface="lo", onMessage=collectors[0]),
        MulticastReceiver(group, PORT, interface=index, onMessage=collectors[1]),
    ]
    sender = MulticastSender(group, PORT, interface="lo")
    await started(*receivers, sender)
    for i in range(5):
        assert sender.send(f"link {i}")
    for c in collectors:
        await c.waitFor(5)
    return {"received": [[m.decode() for m in c.messages] for c in collectors]}


#: The scenarios, by name: each takes the reactor and its arguments.
SCENARIOS: dict[str, Callable[..., Coroutine[Any, Any, dict[str, Any]]]] = {
    "fanout": fanout,
    "delimited": delimited,
    "oversize": oversize,
    "hops": hops,
    "loopback": loopback,
    "errors": errors,
    "linkLocal": linkLocal,
}


def main(arguments: list[str]) -> None:
    """
    Run one scenario and print its result as JSON.
    """
    from twisted.internet import task

    name, *rest = arguments

    async def run(reactor: Any) -> None:
        result = await SCENARIOS[name](reactor, *rest)
        print(json.dumps(result), flush=True)

    task.react(lambda reactor: Deferred.fromCoroutine(run(reactor)))


class NamespaceTestCase(SynchronousTestCase):
    """
    Runs scenarios in a private network namespace; skips without one.
    """

    veth = False

    def setUp(self) -> None:
        reason = _netns.namespaceUnavailable(self.veth)
        if reason is not None:
            if _netns.required():
                self.fail(f"{reason} ({_netns.REQUIRE} is set: these tests must run)")
            raise SkipTest(reason)

    def scenario(self, *arguments: str) -> Any:
        """
        The result of a scenario; fails with its output if it failed.
        """
        result = _netns.runInNamespace(["-m", "tests.test_multicast", *arguments], self.veth)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        lines = result.stdout.strip().splitlines()
        self.assertTrue(lines, output)
        return json.loads(lines[-1])


class IPv4Tests(NamespaceTestCase):
    """
    The scenarios on IPv4 groups.
    """

    family = "4"

    def test_fanout(self) -> None:
        """
        Three receivers on one host and port each get every message, in
        order, from the sender's address; a receiver of another group on
        the same port gets none of them, and none gets a unicast datagram
        sent to the port.
        """
        result = self.scenario("fanout", self.family)
        for received in result["received"]:
            self.assertEqual(received, result["sent"])
        self.assertEqual(result["ports"], [PORT] * 3)
        loopback = "127.0.0.1" if self.family == "4" else "::1"
        self.assertEqual(result["senders"], [[loopback]] * 3)
        self.assertEqual(result["other"], ["marker"])

    def test_delimited(self) -> None:
        """
        With a delimiter, every message of a datagram is delivered, in
        order, from a plain socket and from C{sendMessages}; a message that
        holds the delimiter is refused, and so is a batch whose datagram
        would be too long.
        """
        result = self.scenario("delimited", self.family)
        expected = ["a", "b", "c", "d"] + [f"m{i}" for i in range(200)] + ["one"]
        self.assertEqual(result["received"], expected)
        self.assertTrue(result["batched"])
        self.assertTrue(result["single"])
        self.assertEqual(result["withDelimiter"], False)
        self.assertEqual(result["tooManyForOne"], False)

    def test_oversize(self) -> None:
        """
        A datagram over the receiver's bound is dropped whole and counted;
        the ones within it arrive; a sender refuses a message over its own.
        """
        result = self.scenario("oversize", self.family)
        self.assertEqual(result["lengths"], [100, 1])
        self.assertEqual(result["wideLengths"], [101, 100, 5000, 1])
        self.assertEqual(result["counts"], {"datagramTooLong": 2})
        self.assertEqual(result["refused"], False)

    def test_hops(self) -> None:
        """
        The datagrams carry the TTL (hop limit) the sender was given.
        """
        result = self.scenario("hops", self.family)
        self.assertEqual(result["seen"], {"1": 1, "7": 7, "255": 255})

    def test_errors(self) -> None:
        """
        An interface that does not exist, or an address no interface has,
        is a ListenError naming it; a second start is a StartError (-1);
        nothing is sent before start or after stop, and a stopped receiver
        hears nothing more.
        """
        result = self.scenario("errors", self.family)
        stranger = "10.77.0.1" if self.family == "4" else "fd77::1"
        group = GROUPS[self.family][0]
        join = f"cannot join multicast group {group}: "
        send = f"cannot send to multicast group {group}: "
        expected = {
            "receiverName": join + "there is no network interface named 'nosuch0' (code 42)",
            "receiverIndex": join + "there is no network interface with index 9999 (code 42)",
            "receiverAddress": join
            + f"no network interface of this host has the address {stranger} (code 42)",
            "senderName": send + "there is no network interface named 'nosuch0' (code 42)",
            "senderAddress": send
            + f"no network interface of this host has the address {stranger} (code 42)",
        }
        for name, text in expected.items():
            self.assertEqual(result[name], ["ListenError", text])
        where = f"[{group}]:{PORT + 1}" if ":" in group else f"{group}:{PORT + 1}"
        self.assertEqual(
            result["portTaken"],
            ["ListenError", f"cannot listen on {where}: Address already in use (code 42)"],
        )
        self.assertEqual(result["again"][:2], ["StartError", -1])
        self.assertEqual(result["notStarted"], False)
        self.assertEqual(result["senderStopped"], False)
        self.assertEqual(result["received"], ["first"])
        self.assertEqual(result["late"], ["second"])
        self.assertEqual(result["picked"], [True, ["picked"]])


class IPv6Tests(IPv4Tests):
    """
    The scenarios on IPv6 groups.
    """

    family = "6"


class LinkLocalTests(NamespaceTestCase):
    """
    IPv6 groups of link-local scope.
    """

    def test_linkLocal(self) -> None:
        """
        Receivers and a sender of C{ff02::4242}, given their interface,
        exchange messages.
        """
        result = self.scenario("linkLocal")
        self.assertEqual(result["received"], [[f"link {i}" for i in range(5)]] * 2)


class LoopbackTests(NamespaceTestCase):
    """
    The loopback setting, over a pair of virtual Ethernet interfaces.
    """

    veth = True

    def check(self, family: str) -> None:
        across = 20 if family == "4" else 0
        off = self.scenario("loopback", family, "off")
        self.assertEqual(off, {"here": 0, "across": across, "marker": ["marker"]})
        on = self.scenario("loopback", family, "on")
        self.assertEqual(on, {"here": 20, "across": across, "marker": ["marker"]})

    def test_ipv4(self) -> None:
        """
        Loopback off: a receiver on this host gets nothing, though every
        datagram was sent (a receiver of the same group and port on the
        other end of the pair got them all); on, both get them all.
        """
        self.check("4")

    def test_ipv6(self) -> None:
        """
        The same for an IPv6 group.
        """
        self.check("6")


class ArgumentTests(SynchronousTestCase):
    """
    What the constructors refuse, before any socket is opened.
    """

    def test_notMulticast(self) -> None:
        """
        A group that is not a multicast address, or not an address, is a
        ValueError that says what a group is.
        """
        for cls in (MulticastSender, MulticastReceiver):
            for group in ("10.0.0.1", "2001:db8::1", "example.com", "239.255.0"):
                with self.assertRaises(ValueError) as raised:
                    cls(group, PORT)
                self.assertIn(group, str(raised.exception))
                self.assertIn("multicast", str(raised.exception))

    def test_port(self) -> None:
        """
        A port outside the range is a PortError (a ValueError, code 10);
        a receiver may take 0, a sender must name the port.
        """
        for port in (-1, 65536, "9000", True):
            for cls in (MulticastSender, MulticastReceiver):
                with self.assertRaises(PortError) as raised:
                    cls("239.255.0.1", port)  # type: ignore[arg-type]
                self.assertEqual(raised.exception.code, 10)
                self.assertIsInstance(raised.exception, ValueError)
        with self.assertRaises(PortError):
            MulticastSender("239.255.0.1", 0)
        self.assertEqual(MulticastReceiver("239.255.0.1", 0).port, 0)

    def test_ttl(self) -> None:
        """
        The TTL is 0-255.
        """
        for ttl in (-1, 256, 1.5, None):
            with self.assertRaises(ValueError) as raised:
                MulticastSender("ff15::1", PORT, ttl=ttl)  # type: ignore[arg-type]
            self.assertIn("ttl must be 0-255", str(raised.exception))

    def test_bound(self) -> None:
        """
        maxMessageLength is at most the largest UDP payload of the group's
        family: 65,507 bytes over IPv4, 65,527 over IPv6.
        """
        MulticastReceiver("239.255.0.1", PORT, maxMessageLength=65_507)
        MulticastReceiver("ff15::1", PORT, maxMessageLength=65_527)
        for group, bound, limit in (
            ("239.255.0.1", 65_508, "65,507"),
            ("ff15::1", 65_528, "65,527"),
            ("ff15::1", 0, "65,527"),
        ):
            for cls in (MulticastSender, MulticastReceiver):
                with self.assertRaises(ValueError) as raised:
                    cls(group, PORT, maxMessageLength=bound)
                self.assertIn("maxMessageLength", str(raised.exception))
                self.assertIn(limit, str(raised.exception))

    def test_interfaceFamily(self) -> None:
        """
        An interface address of the other family than the group's is a
        ValueError naming both.
        """
        with self.assertRaises(ValueError) as raised:
            MulticastReceiver("239.255.0.1", PORT, interface="::1")
        self.assertIn("IPv6 address, the group an IPv4 one", str(raised.exception))
        with self.assertRaises(ValueError) as raised:
            MulticastSender("ff15::1", PORT, interface="127.0.0.1")
        self.assertIn("IPv4 address, the group an IPv6 one", str(raised.exception))

    def test_linkLocalNeedsInterface(self) -> None:
        """
        An IPv6 group of link-local or interface-local scope needs its
        interface; a scope written into the group is refused, pointing at
        C{interface}.
        """
        for group in ("ff02::1", "ff12::4242", "ff01::1"):
            for cls in (MulticastSender, MulticastReceiver):
                with self.assertRaises(ValueError) as raised:
                    cls(group, PORT)
                self.assertIn("give its interface", str(raised.exception))
        MulticastReceiver("ff02::1", PORT, interface="lo")
        with self.assertRaises(ValueError) as raised:
            MulticastReceiver("ff02::1%lo", PORT)
        self.assertIn("give the interface as interface=", str(raised.exception))
        with self.assertRaises(TypeError):
            MulticastReceiver(4026466305, PORT)  # type: ignore[arg-type]

    def test_delimiter(self) -> None:
        """
        An empty delimiter is refused; without a delimiter, several messages
        in one datagram are.
        """
        with self.assertRaises(ValueError):
            MulticastReceiver("239.255.0.1", PORT, delimiter=b"")
        with self.assertRaises(ValueError):
            MulticastSender("239.255.0.1", PORT).sendMessages([b"a", b"b"])


class DeliveryTests(SynchronousTestCase):
    """
    What a receiver does with the datagrams its port reads, driven without
    a socket, on a L{Clock}.
    """

    def receiver(self, **kwargs: Any) -> tuple[MulticastReceiver, Clock, list[bytes]]:
        clock = Clock()
        got: list[bytes] = []
        receiver = MulticastReceiver(
            "239.255.0.1", PORT, reactor=clock, onMessage=lambda m, a: got.append(m), **kwargs
        )
        return receiver, clock, got

    def test_floodOfOversize(self) -> None:
        """
        A flood of datagrams over the bound is counted exactly and logged
        once in full, then as one summary with the count, not a line each;
        the datagrams within the bound among them are delivered.
        """
        receiver, clock, got = self.receiver(maxMessageLength=10)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        port = _ReceiverProtocol(receiver)
        for i in range(1000):
            port.datagramReceived(b"x" * 11, ("192.0.2.1", 5000 + i))
            if i % 100 == 0:
                port.datagramReceived(b"ok %d" % i, ("192.0.2.1", 5000))
        self.assertEqual(receiver.eventCounts, {"datagramTooLong": 1000})
        self.assertEqual(got, [b"ok %d" % i for i in range(0, 1000, 100)])
        clock.advance(5)
        tooLong = [e for e in events if e.get("kind") == "datagramTooLong"]
        self.assertEqual(len(tooLong), 2)
        self.assertEqual(tooLong[0]["group"], "239.255.0.1")
        self.assertEqual(tooLong[0]["sender"], "192.0.2.1:5000")
        self.assertEqual((tooLong[1]["summary"], tooLong[1]["count"]), (True, 999))

    def test_failingOnMessage(self) -> None:
        """
        An exception of C{onMessage} is logged, and the other messages of
        the datagram are delivered all the same.
        """
        clock = Clock()
        got: list[bytes] = []

        def onMessage(message: bytes, address: tuple[str, int]) -> None:
            if message == b"bad":
                raise ZeroDivisionError(message)
            got.append(message)

        receiver = MulticastReceiver(
            "ff15::1", PORT, delimiter=b"\n", reactor=clock, onMessage=onMessage
        )
        _ReceiverProtocol(receiver).datagramReceived(b"a\nbad\nb\n", ("::1", 5000))
        self.assertEqual(got, [b"a", b"b"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_subclass(self) -> None:
        """
        A subclass overrides C{messageReceived} and C{messageTooLong}; the
        datagram dropped is counted whatever the override does.
        """
        seen: list[object] = []

        class Receiver(MulticastReceiver):
            def messageReceived(self, message: bytes, address: tuple[str, int]) -> None:
                seen.append((message, address))

            def messageTooLong(self, length: int, address: tuple[str, int]) -> None:
                seen.append(length)

        receiver = Receiver("239.255.0.1", PORT, maxMessageLength=3, reactor=Clock())
        port = _ReceiverProtocol(receiver)
        port.datagramReceived(b"abc", ("192.0.2.1", 1))
        port.datagramReceived(b"abcd", ("192.0.2.1", 1))
        self.assertEqual(seen, [(b"abc", ("192.0.2.1", 1)), 4])
        self.assertEqual(receiver.eventCounts, {"datagramTooLong": 1})


if __name__ == "__main__":
    main(sys.argv[1:])
