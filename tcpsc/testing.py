# -*- test-case-name: tests.test_testing -*-
"""
Testing tcpsc applications in memory: for your own trial tests, as
C{treq.testing} is for treq.

A L{MemoryNetwork} is a fake reactor (L{MemoryNetwork.reactor}) on which
L{tcpsc.Server}s listen and L{tcpsc.Client}s (or any Twisted client: a
L{tcpsc.MessageProtocol} subclass through an endpoint, a raw
L{Protocol}) connect, with no socket and no real reactor.  Bytes move only
when the test calls L{MemoryNetwork.flush}, and time only when it calls
L{MemoryNetwork.advance}: every test runs the same way every time, and a
timeout of an hour is tested in a millisecond.  TLS is real: the same
OpenSSL handshake, certificates and checks as on a socket, over memory.

Example::

    from twisted.trial.unittest import SynchronousTestCase
    from tcpsc import Client, MessageProtocol, Server
    from tcpsc.testing import MemoryNetwork

    class Echo(MessageProtocol):
        def messageReceived(self, message):
            self.sendMessage(message)

    class EchoTests(SynchronousTestCase):
        def test_echo(self):
            network = MemoryNetwork()
            server = Server(Echo, reactor=network.reactor)
            server.listen(8081)
            received = []
            client = Client(onMessage=received.append, reactor=network.reactor)
            connected = client.connect("127.0.0.1", 8081)
            network.flush()
            self.successResultOf(connected)
            client.send(b"hello")
            network.flush()
            self.assertEqual(received, [b"hello"])

Built on L{twisted.internet.testing.MemoryReactorClock} and
L{twisted.test.iosim}'s transports and pump (the latter is in a test
package of Twisted, outside its compatibility policy: this module is the one
place tcpsc uses it).
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import succeed
from twisted.internet.error import CannotListenError, ConnectionRefusedError
from twisted.internet.interfaces import (
    IConnector,
    IHostnameResolver,
    IListeningPort,
    IReactorPluggableNameResolver,
)
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

__all__ = ["MemoryNetwork"]

#: Rounds of L{MemoryNetwork.flush} after which bytes still moving are taken
#: for two peers answering each other forever.
MAX_ROUNDS = 100_000

_Address = IPv4Address | IPv6Address


def _address(host: str, port: int) -> _Address:
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


@implementer(IListeningPort)
class _MemoryPort:
    """
    A port listening on a L{MemoryNetwork}.
    """

    def __init__(self, network: MemoryNetwork, port: int, factory: Any, interface: str) -> None:
        self._network = network
        self.port = port
        self.factory = factory
        self.interface = interface
        self.listening = True

    def startListening(self) -> None:
        pass

    def stopListening(self) -> Any:
        if self.listening:
            self.listening = False
            self._network._ports.remove(self)
            self.factory.doStop()
        return succeed(None)

    def getHost(self) -> _Address:
        return _address(self.interface or "0.0.0.0", self.port)

    def accepts(self, host: str, port: int) -> bool:
        """
        Whether a connection to C{host}:C{port} reaches this port.
        """
        if port != self.port:
            return False
        interface = self.interface
        if interface in ("", "0.0.0.0"):
            return ":" not in host
        if interface == "::":
            return True
        return interface == host


@implementer(IConnector)
class _MemoryConnector:
    """
    A connection attempt on a L{MemoryNetwork}, completed (or refused) by
    the next L{MemoryNetwork.flush}.
    """

    def __init__(self, network: MemoryNetwork, host: str, port: int, factory: Any) -> None:
        self._network = network
        self.host = host
        self.port = port
        self.factory = factory
        self.stopped = False

    def stopConnecting(self) -> None:
        # An endpoint cancelling its attempt has failed its Deferred itself.
        self.stopped = True
        if self in self._network._pending:
            self._network._pending.remove(self)

    def disconnect(self) -> None:
        self.stopConnecting()

    def connect(self) -> None:
        pass

    def getDestination(self) -> _Address:
        return _address(self.host, self.port)


class _Refuser(Protocol):
    """
    What a server's factory that refuses a connection (returns C{None} from
    C{buildProtocol}) leaves on it: a TCP connection closed at once, as the
    kernel's accept followed by close.
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


@implementer(IHostnameResolver)
class _HostsResolver:
    """
    Resolves the names of L{MemoryNetwork.hosts}, at once, and no others.
    """

    def __init__(self, hosts: dict[str, str]) -> None:
        self._hosts = hosts

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> Any:
        resolutionReceiver.resolutionBegan(None)
        address = self._hosts.get(hostName)
        if address is not None:
            resolutionReceiver.addressResolved(_address(address, portNumber))
        resolutionReceiver.resolutionComplete()
        return None


@implementer(IReactorPluggableNameResolver)
class _NetworkReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} whose TCP ports and connections are those of a
    L{MemoryNetwork}.
    """

    def __init__(self, network: MemoryNetwork) -> None:
        super().__init__()
        self._network = network
        self.nameResolver: IHostnameResolver = _HostsResolver(network.hosts)

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        previous, self.nameResolver = self.nameResolver, resolver
        return previous

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> _MemoryPort:
        return self._network._listen(port, factory, interface)

    def connectTCP(
        self, host: str, port: int, factory: Any, timeout: float = 30, bindAddress: Any = None
    ) -> _MemoryConnector:
        connector = _MemoryConnector(self._network, host, port, factory)
        factory.startedConnecting(connector)
        self._network._pending.append(connector)
        return connector


class MemoryNetwork:
    """
    An in-memory network of servers and clients, and the clock they share.

    Give L{reactor} to every L{tcpsc.Server} and L{tcpsc.Client} of the
    test (C{reactor=network.reactor}); call L{flush} to complete connection
    attempts and move every byte, and L{advance} to let time pass.

    Connections go to a port by its number and interface, as on loopback:
    a port listening on all interfaces (C{""}, C{"0.0.0.0"}) takes IPv4
    addresses, one on C{"::"} any address, one on an address that
    address.  An attempt to a port nobody listens on is refused.  Host names
    are those of L{hosts} (C{localhost} is C{127.0.0.1}); connect to an
    address, or add a name, for the certificates of your test.  Port 0 picks
    a free port number, from 40000 up.

    @ivar reactor: the fake reactor, also the clock (a
        L{twisted.internet.testing.MemoryReactorClock}).
    @ivar hosts: names and the address each resolves to.
    @ivar pumps: the L{iosim.IOPump} of every connection still open, in
        the order they were made.
    """

    def __init__(self) -> None:
        self.hosts: dict[str, str] = {"localhost": "127.0.0.1"}
        self.pumps: list[iosim.IOPump] = []
        self._ports: list[_MemoryPort] = []
        self._pending: list[_MemoryConnector] = []
        self._nextPort = 40000
        self.reactor = _NetworkReactor(self)

    def _listen(self, port: int, factory: Any, interface: str) -> _MemoryPort:
        if port == 0:
            port = self._freePort()
        for existing in self._ports:
            if existing.port == port and (
                existing.interface == interface or "" in (existing.interface, interface)
            ):
                raise CannotListenError(
                    interface, port, OSError(errno.EADDRINUSE, "Address already in use")
                )
        listening = _MemoryPort(self, port, factory, interface)
        factory.doStart()
        self._ports.append(listening)
        return listening

    def _freePort(self) -> int:
        used = {p.port for p in self._ports}
        while self._nextPort in used:
            self._nextPort += 1
        port = self._nextPort
        self._nextPort += 1
        return port

    def _complete(self, connector: _MemoryConnector) -> None:
        port = next((p for p in self._ports if p.accepts(connector.host, connector.port)), None)
        if port is None:
            connector.factory.clientConnectionFailed(
                connector,
                Failure(ConnectionRefusedError(connector.host, connector.port)),
            )
            return
        serverAddress = _address(connector.host, connector.port)
        clientAddress = _address(connector.host, self._freePort())
        serverProtocol = port.factory.buildProtocol(clientAddress)
        if serverProtocol is None:
            serverProtocol = _Refuser()
        clientProtocol = connector.factory.buildProtocol(serverAddress)
        if clientProtocol is None:
            return
        serverTransport = iosim.FakeTransport(
            serverProtocol, isServer=True, hostAddress=serverAddress, peerAddress=clientAddress
        )
        clientTransport = iosim.FakeTransport(
            clientProtocol, isServer=False, hostAddress=clientAddress, peerAddress=serverAddress
        )
        pump = iosim.connect(
            serverProtocol,
            serverTransport,
            clientProtocol,
            clientTransport,
            greet=False,
            clock=self.reactor,
        )
        self.pumps.append(pump)

    def flush(self) -> None:
        """
        Run what is due now on the clock, complete every pending
        connection attempt (connected, or refused), and move bytes both ways
        on every connection, closes included, until nothing moves any more.

        @raise AssertionError: bytes still move after L{MAX_ROUNDS} rounds:
            two peers answer each other forever.
        """
        self.reactor.advance(0)
        for _ in range(MAX_ROUNDS):
            moved = False
            while self._pending:
                self._complete(self._pending.pop(0))
                moved = True
            for pump in list(self.pumps):
                if pump.pump():
                    moved = True
                elif pump.clientIO.disconnected and pump.serverIO.disconnected:
                    self.pumps.remove(pump)
            if not moved and not self._pending:
                return
        raise AssertionError(f"bytes still move after {MAX_ROUNDS} rounds of flush()")

    def advance(self, seconds: float) -> None:
        """
        Let C{seconds} pass on the clock (timers due meanwhile run), then
        L{flush}.
        """
        self.flush()
        self.reactor.advance(seconds)
        self.flush()

    def listeningPorts(self) -> list[IListeningPort]:
        """
        The ports listening now.
        """
        return list(self._ports)
