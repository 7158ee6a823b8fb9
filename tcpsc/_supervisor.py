# -*- test-case-name: tests.test_workers -*-
"""
Worker processes of the daemon, C{twistd tcpsc --workers N}: the parent
that binds the ports, starts, supervises and stops the workers
(L{WorkerSupervisor}), and what a worker needs to serve the sockets it is
handed (L{WorkerRole}, L{AdoptedEndpoint}).

One Python process uses one core.  With C{--workers N} the daemon's process
becomes a parent that serves nothing itself: it binds every TCP listening
socket, then starts N worker processes, each a whole daemon with the same
options, that adopt those sockets with Twisted's C{adoptStreamPort} and
accept from them.  Why the parent binds, rather than each worker binding its
own socket with C{SO_REUSEPORT}:

  - one accept queue is shared by all the workers: a worker that is busy
    leaves the next connection to one that is idle, and a connection that
    arrives while a worker restarts waits in the queue for the others
    instead of being refused (with C{SO_REUSEPORT}, the kernel hashes each
    connection to one socket, whether or not its worker is alive);
  - port 0 works (every worker serves the one port the parent was given),
    and so do ports below 1024 with twistd's C{--uid}: the parent binds
    them before it sheds its privileges, and the workers, started after,
    never have them;
  - no worker can bind the port with other options, or a port of another
    program be shared by mistake.

The parent passes the sockets as inherited descriptors (C{childFDs} of
C{spawnProcess}) and keeps them open, so that a restarted worker gets them
again.  The worker is C{python -m twisted} (twist) running C{tcpsc} with
the options the parent was given, with the environment variable
C{TCPSC_WORKER} (internal, not an interface: C{"INDEX/COUNT:FD,FD"},
INDEX from 0, one descriptor per C{--port} in order) telling it which
worker it is.  Between the two:

  - the worker's standard input is a pipe from the parent that is never
    written: when it closes, the parent is gone (even killed with SIGKILL),
    and the worker stops as on SIGTERM; on Linux the worker also asks the
    kernel for a SIGTERM when its parent dies (C{PR_SET_PDEATHSIG});
  - the worker's standard output carries its log as JSON, one event a
    line, which the parent logs as its own, each line prefixed with the
    worker's index and pid (its fields kept): one log for the daemon, in
    whatever twistd logs to;
  - once every port listens, the worker logs an event that says so (field
    C{tcpsc_workerListening}); when every worker has, the parent tells
    systemd it is ready (C{READY=1}).  It comes in the log, after the
    worker's own lines about its ports, so that the parent's log tells
    things in the order they happened.

Connection ids stay unique across workers without coordination: worker
C{i} of C{N} numbers its connections C{i+1, i+1+N, ...} (see
L{tcpsc._registry.LocalRegistry}).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, execute, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel, eventFromJSON, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from . import _compat
from ._accept import _GuardedPort
from ._errors import ListenError
from ._signals import HangupHandler
from ._systemd import notify

__all__ = [
    "WORKER_ENVIRONMENT",
    "AdoptedEndpoint",
    "BoundPort",
    "WorkerRole",
    "WorkerSupervisor",
    "bindPort",
    "tcpDescription",
]

#: The environment variable that makes a daemon a worker (internal).
WORKER_ENVIRONMENT = "TCPSC_WORKER"

#: The worker's descriptor of the first listening socket (after standard
#: input, output and error).
_FIRST_SOCKET_FD = 3

#: Restart delays: the first, the longest (each is twice the one before),
#: and how long a worker must have run for the next restart to wait the
#: first delay again.
FIRST_RESTART_DELAY = 0.5
LONGEST_RESTART_DELAY = 30.0
STEADY_RUN = 30.0

#: The field of the worker's log event that says every port listens.
_LISTENING = "tcpsc_workerListening"


@dataclass(frozen=True)
class BoundPort:
    """
    What the parent makes of one C{--port}: the listening socket and the
    description it was bound from.

    @ivar description: the C{--port} as given (after the daemon's
        normalising): C{"tcp:0:interface=127.0.0.1"}.
    @ivar socket: the bound, listening, non-blocking socket.
    @ivar haproxy: the port is C{haproxy:tcp:...}: the workers read a
        PROXY header first.
    """

    description: str
    socket: socket.socket
    haproxy: bool


def _split(description: str) -> list[str]:
    """
    The fields of an endpoint description, colons escaped with a backslash
    kept inside their field, and the backslashes removed.
    """
    return [re.sub(r"\\(.)", r"\1", part) for part in re.split(r"(?<!\\):", description)]


def tcpDescription(description: str) -> tuple[int, str, int | None, bool] | None:
    """
    Read a TCP port description as the parent binds it: C{tcp:PORT},
    C{tcp6:PORT}, with C{interface=} and C{backlog=}, or either behind
    C{haproxy:}.

    @return: C{(port, interface, backlog, haproxy)} (C{backlog} C{None}
        when not given), or C{None} for any other kind of endpoint (they
        cannot be bound by the parent and handed over).
    @raise ValueError: a TCP description with a bad port, backlog or
        argument.
    """
    parts = _split(description)
    haproxy = parts[0] == "haproxy"
    if haproxy:
        parts = parts[1:]
    if not parts or parts[0] not in ("tcp", "tcp6"):
        return None
    kind, arguments = parts[0], parts[1:]
    positional = [a for a in arguments if "=" not in a]
    keywords = dict(a.split("=", 1) for a in arguments if "=" in a)
    unknown = set(keywords) - {"interface", "backlog", "port"}
    if unknown:
        raise ValueError(f"unknown argument {sorted(unknown)[0]}= for a {kind}: port")
    if "port" in keywords:
        positional.insert(0, keywords["port"])
    if len(positional) != 1 or not positional[0].isdigit() or int(positional[0]) > 65535:
        raise ValueError("needs one port number from 0 to 65535")
    interface = keywords.get("interface", "::" if kind == "tcp6" else "")
    backlog = keywords.get("backlog")
    if backlog is not None and not backlog.isdigit():
        raise ValueError(f"backlog={backlog}: not a number")
    return int(positional[0]), interface, int(backlog) if backlog else None, haproxy


def bindPort(description: str, defaultBacklog: int) -> BoundPort:
    """
    Bind and listen on one TCP port description, as Twisted's own TCP port
    would (C{SO_REUSEADDR}, IPv6 when the interface is an IPv6 address),
    without accepting.

    @raise ListenError: it cannot be bound (code 42), or it is not a TCP
        description.
    """
    try:
        parsed = tcpDescription(description)
    except ValueError as e:
        raise ListenError(f"cannot listen on {description}: {e}") from None
    if parsed is None:
        raise ListenError(f"cannot listen on {description}: not a TCP port")
    port, interface, backlog, haproxy = parsed
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name == "posix":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((interface, port))
        s.listen(backlog if backlog is not None else defaultBacklog)
        s.setblocking(False)
    except OSError as e:
        s.close()
        where = f"[{interface}]:{port}" if family == socket.AF_INET6 else f"{interface}:{port}"
        raise ListenError(
            f"cannot listen on {description}: {where.lstrip(':')}: {e.strerror or e}"
        ) from None
    return BoundPort(description, s, haproxy)


def _describeEnd(reason: Failure) -> str:
    """
    How a process ended, in words: C{"exited with status 1"}, C{"was
    killed by signal 9 (SIGKILL)"}.
    """
    value = reason.value
    if isinstance(value, ProcessTerminated) and value.signal is not None:
        try:
            name = signal.Signals(value.signal).name
        except ValueError:
            name = "unknown"
        return f"was killed by signal {value.signal} ({name})"
    code = getattr(value, "exitCode", None)
    return f"exited with status {code if code is not None else 'unknown'}"


class _WorkerProcess(ProcessProtocol):
    """
    The parent's end of one worker process: its log, its readiness, its
    end.
    """

    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.pid: int | None = None
        self.started = 0.0
        self.ready = False
        self.ended = False
        self._buffers: dict[int, bytes] = {1: b"", 2: b""}

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD not in self._buffers:
            return
        lines = (self._buffers[childFD] + data).split(b"\n")
        self._buffers[childFD] = lines.pop()
        if len(self._buffers[childFD]) > 1 << 20:
            # A line longer than 1 MiB: logged in pieces.
            lines.append(self._buffers[childFD])
            self._buffers[childFD] = b""
        for line in lines:
            self.supervisor._relay(self, line.decode("utf-8", "replace"), childFD == 1)

    def childConnectionLost(self, childFD: int) -> None:
        rest = self._buffers.get(childFD)
        if rest:
            self._buffers[childFD] = b""
            self.supervisor._relay(self, rest.decode("utf-8", "replace"), childFD == 1)

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        for fd in (1, 2):
            self.childConnectionLost(fd)
        self.supervisor._workerEnded(self, reason)


class WorkerSupervisor(Service):
    """
    The parent of C{--workers N}: binds every port, starts N workers that
    serve them, restarts a worker that ends (after a delay that grows while
    restarts keep failing), passes SIGHUP on to them, and stops them all
    when it stops.

    A worker that ends while the parent runs, whatever its status, is
    restarted: after L{FIRST_RESTART_DELAY} seconds, twice as long at each
    restart that follows, up to L{LONGEST_RESTART_DELAY}; a worker that ran
    for L{STEADY_RUN} seconds or more is restarted after the first delay
    again.  A worker that cannot start (a port it cannot adopt, an
    application that fails to import) is so restarted ever more slowly,
    never in a loop.  Each restart is logged with the worker's index, pid,
    how it ended and the delay.

    Stopping (SIGTERM, SIGINT: twistd stops its services) sends SIGTERM to
    every worker, which closes its connections as one daemon does, and
    waits for them to end; a worker still running after C{stopTimeout}
    seconds is killed (SIGKILL) and that is logged.  The listening sockets
    are closed last.

    @ivar count: how many workers.
    @ivar ports: the bound ports, once bound.
    """

    log = Logger()

    def __init__(
        self,
        count: int,
        ports: Sequence[str],
        arguments: Sequence[str],
        reactor: Any,
        description: str,
        stopTimeout: float,
        backlog: int,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """
        @param count: how many workers, 2 or more.
        @param ports: the C{--port} descriptions, TCP ones.
        @param arguments: the command line of each worker, its executable
            first.
        @param description: what each worker serves, in words, for the log.
        @param stopTimeout: seconds a worker has to stop before it is
            killed.
        @param backlog: the listen queue of a port whose description does
            not say.
        @param environ: the environment of the workers (without
            L{WORKER_ENVIRONMENT}); this process's by default.
        """
        self.count = count
        self.portDescriptions = list(ports)
        self.arguments = list(arguments)
        self.description = description
        self.stopTimeout = stopTimeout
        self.backlog = backlog
        self._reactor = reactor
        self._environ = dict(os.environ if environ is None else environ)
        self._environ.pop(WORKER_ENVIRONMENT, None)
        # The parent tells systemd; a worker must not.
        self._environ.pop("NOTIFY_SOCKET", None)
        self.ports: list[BoundPort] = []
        self.workers: dict[int, _WorkerProcess] = {}
        self._delays = dict.fromkeys(range(count), FIRST_RESTART_DELAY)
        self._restarts: dict[int, Any] = {}
        self._stopping = False
        self._readyAnnounced = False
        self._stopped: list[Deferred[None]] = []
        self._hangup = HangupHandler(reactor, self._hangupReceived)

    # -- starting ----------------------------------------------------------

    def bind(self) -> None:
        """
        Bind every port, if not yet done.

        @raise ListenError: one cannot be bound; those bound are closed
            again.
        """
        if self.ports:
            return
        bound: list[BoundPort] = []
        try:
            for description in self.portDescriptions:
                bound.append(bindPort(description, self.backlog))
        except ListenError:
            for port in bound:
                port.socket.close()
            raise
        self.ports = bound
        for port in bound:
            host = port.socket.getsockname()
            self.log.info(
                "Bound {address} for {count} workers{haproxy}",
                address=f"[{host[0]}]:{host[1]}" if len(host) == 4 else f"{host[0]}:{host[1]}",
                count=self.count,
                haproxy=" (PROXY protocol)" if port.haproxy else "",
            )

    def privilegedStartService(self) -> None:
        """
        Bind the ports: before twistd sheds its privileges, so that ports
        below 1024 work with C{--uid}.
        """
        super().privilegedStartService()
        self.bind()

    def startService(self) -> None:
        """
        Start every worker (binding first if C{privilegedStartService} was
        not called, as with C{twist}).
        """
        self.bind()
        super().startService()
        self.log.info(
            "Starting tcpsc with {count} worker processes: {description}",
            count=self.count,
            description=self.description,
        )
        self._handleHangup()
        for index in range(self.count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        if self._stopping:
            return
        fds = [_FIRST_SOCKET_FD + n for n in range(len(self.ports))]
        childFDs: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        for fd, port in zip(fds, self.ports, strict=True):
            childFDs[fd] = port.socket.fileno()
        environ = dict(self._environ)
        environ[WORKER_ENVIRONMENT] = f"{index}/{self.count}:{','.join(map(str, fds))}"
        worker = _WorkerProcess(self, index)
        worker.started = self._reactor.seconds()
        self.workers[index] = worker
        try:
            self._reactor.spawnProcess(
                worker,
                self.arguments[0],
                self.arguments,
                env=environ,
                path=os.getcwd(),
                childFDs=childFDs,
            )
        except Exception as e:
            self.workers.pop(index, None)
            self._scheduleRestart(index, f"could not be started ({e})", None, 0.0)
            return
        self.log.info(
            "Started worker {index} of {count}: pid {pid}",
            index=index,
            count=self.count,
            pid=worker.pid,
        )

    def _workerReady(self, worker: _WorkerProcess) -> None:
        if self._readyAnnounced:
            self.log.info(
                "Worker {index} (pid {pid}) is listening again", index=worker.index, pid=worker.pid
            )
            return
        if len(self.workers) < self.count or not all(w.ready for w in self.workers.values()):
            return
        self._readyAnnounced = True
        addresses = ", ".join("{}:{}".format(*port.socket.getsockname()[:2]) for port in self.ports)
        self.log.info(
            "All {count} workers are listening on {addresses}",
            count=self.count,
            addresses=addresses,
        )
        if notify(f"READY=1\nSTATUS=Listening on {addresses} with {self.count} workers"):
            self.log.info("Told systemd: ready")

    # -- the workers' log ----------------------------------------------------

    def _relay(self, worker: _WorkerProcess, line: str, fromLog: bool) -> None:
        """
        Log one line of a worker: an event of its JSON log as this
        process's own, with C{tcpsc_worker} and C{tcpsc_workerPid} added
        and shown; anything else as a line of text.
        """
        line = line.lstrip("\x1e").rstrip("\r")
        if not line.strip():
            return
        event: dict[str, Any] | None = None
        if fromLog and line.startswith("{"):
            try:
                event = eventFromJSON(line)
            except ValueError:
                event = None
        if event is None or not isinstance(event, dict):
            self.log.emit(
                LogLevel.info if fromLog else LogLevel.warn,
                "[worker {tcpsc_worker}, pid {tcpsc_workerPid}] {line}",
                tcpsc_worker=worker.index,
                tcpsc_workerPid=worker.pid,
                line=line,
            )
            return
        event["tcpsc_worker"] = worker.index
        event["tcpsc_workerPid"] = worker.pid
        # The prefix as literal text: an event read back from JSON is
        # formatted from its flattened fields, which have no others.
        event["log_format"] = f"[worker {worker.index}, pid {worker.pid}] " + (
            event.get("log_format") or ""
        )
        if not isinstance(event.get("log_level"), LogLevel):
            event["log_level"] = LogLevel.info
        globalLogPublisher(event)
        if event.get(_LISTENING) is True and not worker.ready:
            worker.ready = True
            self._workerReady(worker)

    # -- restarting ----------------------------------------------------------

    def _workerEnded(self, worker: _WorkerProcess, reason: Failure) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        how = _describeEnd(reason)
        if self._stopping:
            level = LogLevel.info
            if not (
                reason.check(ProcessDone)
                or (
                    isinstance(reason.value, ProcessTerminated)
                    and reason.value.signal == signal.SIGTERM
                )
            ):
                level = LogLevel.warn
            self.log.emit(
                level,
                "Worker {index} (pid {pid}) {how}",
                index=worker.index,
                pid=worker.pid,
                how=how,
                status=getattr(reason.value, "exitCode", None),
                signal=getattr(reason.value, "signal", None),
            )
            if not self.workers:
                waiters, self._stopped = self._stopped, []
                for waiter in waiters:
                    waiter.callback(None)
            return
        ran = self._reactor.seconds() - worker.started
        self._scheduleRestart(worker.index, how, worker.pid, ran, reason)

    def _scheduleRestart(
        self, index: int, how: str, pid: int | None, ran: float, reason: Failure | None = None
    ) -> None:
        if ran >= STEADY_RUN:
            self._delays[index] = FIRST_RESTART_DELAY
        delay = self._delays[index]
        self._delays[index] = min(delay * 2, LONGEST_RESTART_DELAY)
        self.log.warn(
            "Worker {index} (pid {pid}) {how} after {ran:.1f} s; restarting it in {delay:g} s"
            if pid is not None
            else "Worker {index} {how}; restarting it in {delay:g} s",
            index=index,
            pid=pid,
            how=how,
            ran=ran,
            delay=delay,
            status=getattr(reason.value, "exitCode", None) if reason else None,
            signal=getattr(reason.value, "signal", None) if reason else None,
        )
        self._restarts[index] = self._reactor.callLater(delay, self._spawn, index)

    # -- SIGHUP ----------------------------------------------------------------

    def _handleHangup(self) -> None:
        """
        Pass SIGHUP (certificate reload) on to every worker, from the
        reactor's loop (see L{HangupHandler}); not where this does not run in
        the main thread.
        """
        if self._hangup.installed or not HangupHandler.available():
            return
        try:
            self._hangup.install()
        except ValueError:
            return

    def _hangupReceived(self) -> None:
        workers = [w for w in self.workers.values() if not w.ended]
        self.log.info("Received SIGHUP: passing it on to {count} workers", count=len(workers))
        self._signal(workers, "HUP")

    def _signal(self, workers: Sequence[_WorkerProcess], name: str) -> None:
        for worker in workers:
            try:
                worker.transport.signalProcess(name)  # type: ignore[union-attr]
            except Exception:
                # Ended meanwhile: processEnded follows.
                pass

    # -- stopping --------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """
        Stop restarting, send SIGTERM to every worker and wait for them to
        end (killing those that take longer than C{stopTimeout}), then
        close the listening sockets.

        @return: fires once every worker has ended.
        """
        super().stopService()
        self._stopping = True
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        workers = [w for w in self.workers.values() if not w.ended]
        self.log.info("Stopping tcpsc: stopping {count} workers", count=len(workers))
        notify("STOPPING=1\nSTATUS=Stopping: stopping the workers")
        if workers:
            done: Deferred[None] = Deferred()
            self._stopped.append(done)
            self._signal(workers, "TERM")
            kill = self._reactor.callLater(self.stopTimeout, self._kill)
            done.addBoth(lambda result: (kill.cancel() if kill.active() else None, result)[1])
        else:
            done = succeed(None)

        def closed(result: object) -> object:
            for port in self.ports:
                port.socket.close()
            self.ports = []
            self._hangup.restore()
            self.log.info("tcpsc stopped: every worker has ended")
            return result

        return done.addBoth(closed)

    def _kill(self) -> None:
        for worker in list(self.workers.values()):
            if worker.ended:
                continue
            self.log.warn(
                "Worker {index} (pid {pid}) did not stop within {timeout:g} s: killing it "
                "(SIGKILL)",
                index=worker.index,
                pid=worker.pid,
                timeout=self.stopTimeout,
            )
            self._signal([worker], "KILL")


# -- the worker's side -------------------------------------------------------


@implementer(IStreamServerEndpoint)
class AdoptedEndpoint:
    """
    Listens on a socket this process inherited already bound and listening
    (C{IReactorSocket.adoptStreamPort}), instead of binding one: how a
    worker serves the ports its parent bound.  Everything a server wraps
    around its factory (limits, TLS, timeouts) is the same as on a port it
    binds itself.
    """

    def __init__(self, reactor: Any, fd: int, description: str) -> None:
        """
        @param fd: the inherited descriptor; closed once adopted (the port
            holds a copy of its own).
        @param description: the C{--port} it was bound from, for messages.
        """
        self._reactor = reactor
        self._fd = fd
        self._description = description

    def __str__(self) -> str:
        return self._description

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        return execute(self._adopt, factory)

    def _adopt(self, factory: Any) -> IListeningPort:
        probe = socket.socket(fileno=self._fd)
        family = probe.family
        probe.detach()
        port: IListeningPort
        if _compat.PRIVATE and isinstance(self._reactor, PosixReactorBase):
            # tcpsc's accept loop: it pauses when out of descriptors, and it
            # takes one connection per wakeup, leaving the next to another
            # worker that is awake too.
            guarded = _SharedPort._fromListeningDescriptor(self._reactor, self._fd, family, factory)
            guarded.startListening()
            port = guarded
        else:
            port = self._reactor.adoptStreamPort(self._fd, family, factory)
        os.close(self._fd)
        return port


class _SharedPort(_GuardedPort):
    """
    The accept loop of a socket that other processes accept from too.
    """

    maxAccepts = 1


class _ParentWatch:
    """
    Reads the worker's standard input, a pipe from its parent that is never
    written: its end means the parent is gone.
    """

    def __init__(self, reactor: Any, fd: int, gone: Callable[[], None]) -> None:
        self._reactor = reactor
        self._fd = fd
        self._gone = gone
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "tcpsc.worker"

    def doRead(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._reactor.removeReader(self)
            self._gone()

    def connectionLost(self, reason: Failure) -> None:
        pass


@dataclass
class WorkerRole:
    """
    What makes a daemon a worker of C{--workers N}: read from
    L{WORKER_ENVIRONMENT}.

    @ivar index: which worker, from 0.
    @ivar count: how many workers.
    @ivar fds: the inherited listening sockets, one per C{--port} in order.
    """

    index: int
    count: int
    fds: list[int]

    log = Logger()

    @classmethod
    def fromEnvironment(cls, environ: dict[str, str] | None = None) -> WorkerRole | None:
        """
        The role of this process, taken out of the environment (so that
        processes it starts do not think they are workers), or C{None} for
        a daemon that is not a worker.

        @raise ValueError: the variable is set but malformed.
        """
        environ = os.environ if environ is None else environ  # type: ignore[assignment]
        assert environ is not None
        value = environ.pop(WORKER_ENVIRONMENT, None)
        if value is None:
            return None
        match = re.fullmatch(r"(\d+)/(\d+):(\d+(?:,\d+)*)?", value)
        if match is None or int(match.group(1)) >= int(match.group(2)):
            raise ValueError(f"{WORKER_ENVIRONMENT}={value!r} is not INDEX/COUNT:FD,FD")
        fds = [int(fd) for fd in match.group(3).split(",")] if match.group(3) else []
        return cls(int(match.group(1)), int(match.group(2)), fds)

    @property
    def firstId(self) -> int:
        """
        The id of this worker's first connection: C{index + 1}.
        """
        return self.index + 1

    def endpoints(self, reactor: Any, ports: Sequence[str]) -> list[IStreamServerEndpoint]:
        """
        The endpoints of the inherited sockets, in the order of C{ports}
        (the C{--port} descriptions the parent bound them from); a
        C{haproxy:} one says so (C{proxiedEndpoint}), so that the server
        reads the PROXY header first with its own receiver, as a single
        daemon does.

        @raise ValueError: not one descriptor per port.
        """
        if len(ports) != len(self.fds):
            raise ValueError(
                f"{WORKER_ENVIRONMENT} names {len(self.fds)} sockets for {len(ports)} ports"
            )
        endpoints: list[IStreamServerEndpoint] = []
        for fd, description in zip(self.fds, ports, strict=True):
            endpoint: IStreamServerEndpoint = AdoptedEndpoint(reactor, fd, description)
            if description.startswith("haproxy:"):
                described = _Described(endpoint, description)
                described.proxiedEndpoint = endpoint
                endpoint = described
            endpoints.append(endpoint)
        return endpoints

    def start(self, reactor: Any) -> None:
        """
        Become a worker: a process group of its own (a Ctrl-C on the
        terminal reaches the parent, which stops the workers in order), a
        SIGTERM from the kernel when the parent dies (Linux), and a stop
        when the pipe from the parent closes.
        """
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        _askForParentDeathSignal()

        def gone() -> None:
            self.log.warn("The parent process is gone: worker {index} stops", index=self.index)
            if reactor.running:
                reactor.stop()

        reactor.addReader(_ParentWatch(reactor, 0, gone))

    def reportListening(self, addresses: str) -> None:
        """
        Tell the parent that every port listens: a log event it knows.
        """
        self.log.info(
            "Worker {index} of {count} is listening on {addresses}",
            index=self.index,
            count=self.count,
            addresses=addresses,
            **{_LISTENING: True},
        )


@implementer(IStreamServerEndpoint)
class _Described:
    """
    An endpoint that names itself by its description in messages.

    @ivar proxiedEndpoint: for a C{haproxy:} port, the endpoint to listen on
        with the PROXY header read first (see L{tcpsc._proxy}); else
        C{None}.
    """

    proxiedEndpoint: IStreamServerEndpoint | None = None

    def __init__(self, endpoint: IStreamServerEndpoint, description: str) -> None:
        self._endpoint = endpoint
        self._description = description

    def __str__(self) -> str:
        return self._description

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        return self._endpoint.listen(factory)


def _askForParentDeathSignal() -> None:
    """
    On Linux, have the kernel send this process SIGTERM when its parent
    dies (C{prctl(PR_SET_PDEATHSIG)}); elsewhere, nothing (the pipe from
    the parent does the same, a little later).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass
