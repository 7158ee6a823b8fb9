"""
Tests of the reactor services L{tcpsc.ServerService} and
L{tcpsc.KeepConnectedService}: in an C{Application}, as twistd starts and
stops it, on real ports of 127.0.0.1 and ::1 with real tcpsc clients and
servers.
"""

from __future__ import annotations

from twisted.application.service import Application, IService, MultiService
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpsc import (
    Client,
    ClientCertificateRejected,
    KeepConnectedService,
    ListenError,
    PortError,
    Server,
    ServerService,
)
from tests._helpers import SHORT, asyncTest, waitFor, within
from tests.test_tls import Echo, clientTLS, freePort, serverTLS

LOCAL = "tcp:0:interface=127.0.0.1"
LOCAL6 = "tcp6:0:interface=\\:\\:1"


def startApplication(application: MultiService | Application) -> IService:
    """
    Start an application's services as twistd does: privileged start
    first, then start.
    """
    service = IService(application)
    service.privilegedStartService()
    service.startService()
    return service


class ServerServiceArgumentTests(SynchronousTestCase):
    """
    What a L{ServerService} accepts as its ports.
    """

    def test_onePort(self) -> None:
        """
        A single port number or description stands for a list of one.
        """
        self.assertEqual(ServerService(Server(), 8081).ports, [8081])
        self.assertEqual(ServerService(Server(), "tcp:8081").ports, ["tcp:8081"])

    def test_noPort(self) -> None:
        """
        No port at all is refused, in words.
        """
        with self.assertRaises(ValueError) as raised:
            ServerService(Server(), [])
        self.assertIn("at least one port", str(raised.exception))


class ServerServiceTests(TestCase):
    """
    L{ServerService} on real ports.
    """

    @asyncTest
    async def test_servesEveryPortAndStopsWithFlush(self) -> None:
        """
        In an C{Application}, the service listens on every port (IPv4 and
        IPv6) once started; stopping the application returns a Deferred
        that fires only once the server stopped: no port listens, no
        connection is open, and the clients saw their connections close.
        """
        application = Application("test")
        server = Server(Echo, reactor=reactor)
        service = ServerService(server, [LOCAL, LOCAL6])
        service.setServiceParent(application)
        top = startApplication(application)
        ports = await within(service.whenListening())
        self.assertEqual(sorted(p.getHost().host for p in ports), ["127.0.0.1", "::1"])
        closed: list[Failure] = []
        clients = []
        for port in ports:
            received: list[bytes] = []
            client = Client(onMessage=received.append, onClosed=closed.append)
            await within(client.connect(port.getHost().host, port.getHost().port))
            client.send(b"hello " + port.getHost().host.encode())
            await waitFor(lambda received=received: received, what="the echo to the client")
            self.assertEqual(received, [b"hello " + port.getHost().host.encode()])
            clients.append(client)
        self.assertEqual(server.openConnections(), 2)

        stopped = top.stopService()
        self.assertIsInstance(stopped, Deferred)
        await within(stopped)
        self.assertEqual(server.ports, [])
        self.assertEqual(server.openConnections(), 0)
        await waitFor(lambda: len(closed) == 2)

    @asyncTest
    async def test_whenListeningBeforeStart(self) -> None:
        """
        L{ServerService.whenListening} asked before the start fires once
        the service listens; asked after, it fires at once.
        """
        service = ServerService(Server(reactor=reactor), LOCAL)
        early = service.whenListening()
        self.assertNoResult(early)
        service.startService()
        self.addCleanup(service.stopService)
        ports = await within(early)
        self.assertEqual(ports, service.server.ports)
        self.assertEqual(self.successResultOf(service.whenListening()), ports)

    @asyncTest
    async def test_restart(self) -> None:
        """
        A service stopped and started again listens again.
        """
        service = ServerService(Server(reactor=reactor), LOCAL)
        service.startService()
        await within(service.whenListening())
        await within(service.stopService())
        self.assertEqual(service.server.ports, [])
        service.startService()
        self.addCleanup(service.stopService)
        ports = await within(service.whenListening())
        self.assertEqual(len(ports), 1)

    @asyncTest
    async def test_portInUse(self) -> None:
        """
        A port that cannot be listened on makes the start raise the error
        (twistd then stops with it), after one critical line naming the
        port; the ports it opened before are closed again, and the service
        is not running.
        """
        first = ServerService(Server(reactor=reactor), LOCAL)
        first.startService()
        self.addCleanup(first.stopService)
        (busy,) = await within(first.whenListening())
        busyPort = f"tcp:{busy.getHost().port}:interface=127.0.0.1"
        second = ServerService(Server(reactor=reactor), [LOCAL, busyPort])
        with capturedLogs() as events:
            with self.assertRaises(ListenError) as raised:
                second.startService()
        self.assertIn("in use", str(raised.exception))
        self.assertFalse(second.running)
        self.assertEqual(second.server.ports, [])
        critical = [e for e in events if e["log_level"] == LogLevel.critical]
        self.assertEqual(len(critical), 1)
        self.assertEqual(critical[0]["port"], busyPort)
        self.assertEqual(critical[0]["code"], 42)

    def test_badDescription(self) -> None:
        """
        A description Twisted does not know fails the privileged start with
        L{PortError} (code 10).
        """
        service = ServerService(Server(reactor=reactor), "tcp:notaport")
        with capturedLogs():
            with self.assertRaises(PortError) as raised:
                service.privilegedStartService()
        self.assertEqual(raised.exception.code, 10)


class KeepConnectedServiceTests(TestCase):
    """
    L{KeepConnectedService} against real servers on 127.0.0.1.
    """

    def client(self, **kwargs: object) -> Client:
        kwargs.setdefault("initialDelay", 0.02)
        kwargs.setdefault("maxDelay", 0.1)
        kwargs.setdefault("jitter", 0.0)
        return Client(reactor=reactor, **kwargs)  # type: ignore[arg-type]

    @asyncTest
    async def test_connectsOnceTheServerListens(self) -> None:
        """
        Started while nothing listens, the service keeps trying; once the
        server listens it connects; when the server goes away and comes
        back, it connects again; stopped, it disconnects, tries no more,
        and gives the client back its own C{reconnect} setting.
        """
        port = freePort()
        established: list[object] = []
        client = self.client(onEstablished=established.append)
        service = KeepConnectedService(client, "127.0.0.1", port)
        with capturedLogs() as events:
            service.startService()
            self.assertTrue(client.reconnect)
            await waitFor(lambda: sum("trying again" in e["log_format"] for e in events) >= 2)
        server = Server(Echo, reactor=reactor)
        await within(server.listen(port, interface="127.0.0.1"))
        self.addCleanup(server.stop)
        await waitFor(lambda: len(established) == 1)
        received: list[bytes] = []
        client.onMessage = received.append
        client.send(b"kept")
        await waitFor(lambda: received == [b"kept"])

        await within(server.stop())
        await waitFor(lambda: not client.isConnected)
        await within(server.listen(port, interface="127.0.0.1"))
        await waitFor(lambda: len(established) == 2)

        await within(service.stopService())
        self.assertFalse(client.isConnected)
        self.assertFalse(client.reconnect)
        await waitFor(lambda: server.openConnections() == 0)
        # Nothing is left scheduled: trial's clean-reactor check proves it.

    @asyncTest
    async def test_stopWhileRetrying(self) -> None:
        """
        Stopped between two attempts, the service cancels the next one.
        """
        client = self.client(initialDelay=SHORT)
        service = KeepConnectedService(client, "127.0.0.1", freePort())
        with capturedLogs() as events:
            service.startService()
            await waitFor(lambda: any("trying again" in e["log_format"] for e in events))
        self.assertIsNotNone(service._retryCall)
        await within(service.stopService())
        self.assertIsNone(service._retryCall)

    @asyncTest
    async def test_rejectedCertificateStops(self) -> None:
        """
        A client certificate the server rejects stops the attempts: logged
        as an error, never retried.
        """
        server = Server(Echo, reactor=reactor)
        port = await within(server.listen(0, interface="127.0.0.1", tls=serverTLS()))
        self.addCleanup(server.stop)
        closed: list[Failure] = []
        client = self.client(onClosed=closed.append)
        service = KeepConnectedService(
            client, "127.0.0.1", port.getHost().port, tls=clientTLS("other-client")
        )
        with capturedLogs() as events:
            service.startService()
            await waitFor(lambda: any(e["log_level"] == LogLevel.error for e in events))
        self.addCleanup(service.stopService)
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertIn(
            "Stopped connecting to 127.0.0.1", errors[0]["log_format"].format(**errors[0])
        )
        self.assertFalse(any("trying again" in e["log_format"] for e in events))
        self.assertIsNone(service._retryCall)
        self.flushLoggedErrors(ClientCertificateRejected)

    def test_settingsThatCannotWork(self) -> None:
        """
        A port out of range is raised from the start; the service is then
        not running and the client's setting is as it was.
        """
        client = self.client()
        service = KeepConnectedService(client, "127.0.0.1", 0)
        with self.assertRaises(PortError):
            service.startService()
        self.assertFalse(service.running)
        self.assertFalse(client.reconnect)
