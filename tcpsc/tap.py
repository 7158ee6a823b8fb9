# -*- test-case-name: tests.test_tap,tests.test_daemon -*-
"""
Layer 4: the C{twistd tcpsc} daemon: its command-line L{Options} and
L{makeService}, which twistd finds through the plugin in
C{twisted/plugins/tcpsc_plugin.py}.

Start-up failures are made loud on purpose.  Twisted's own
C{StreamServerEndpointService} only logs a bind error and keeps running with
no port; here a certificate problem stops twistd before anything starts
(L{makeService}), and a port that cannot be bound stops it from
L{TcpscService.privilegedStartService}, in both cases with one line naming
the cause and the C++ original's code for it, and a non-zero exit status.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from ._apps import BUILTIN_APPS, loadAppClass, recordSink
from ._errors import ListenError, StartError
from ._events import plural
from ._framing import (
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_MAX_PENDING_OUTPUT,
    MessageProtocol,
    StreamProtocol,
)
from ._server import (
    DEFAULT_FIRST_BYTE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_PEER,
    DEFAULT_MEMORY_BUDGET,
    Server,
)
from ._tls import TLSConfig

__all__ = [
    "DEFAULT_PORT",
    "DaemonStartError",
    "Options",
    "TcpscService",
    "makeService",
    "parseDelimiter",
]

#: Where the daemon listens when no C{--port} is given.
DEFAULT_PORT = "tcp:8081"

_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\"}


def parseDelimiter(text: str) -> bytes:
    r"""
    Turn a delimiter as typed on a command line into bytes: C{\n}, C{\r},
    C{\t}, C{\0}, C{\\} and C{\xHH} are escapes, anything else stands for
    itself (encoded as UTF-8), so C{"|"}, C{"\r\n"} and C{"\x1e"} all work.

    @raise ValueError: empty, or an unknown or incomplete escape.
    """
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out += char.encode("utf-8")
            i += 1
            continue
        if i + 1 >= len(text):
            raise ValueError(f"delimiter {text!r} ends with a lone backslash (write \\\\)")
        escape = text[i + 1]
        if escape in _ESCAPES:
            out += _ESCAPES[escape]
            i += 2
        elif escape == "x":
            digits = text[i + 2 : i + 4]
            try:
                if len(digits) != 2:
                    raise ValueError
                out.append(int(digits, 16))
            except ValueError:
                raise ValueError(
                    f"delimiter {text!r}: \\x needs two hex digits, as in \\x1e"
                ) from None
            i += 4
        else:
            raise ValueError(
                f"delimiter {text!r}: unknown escape \\{escape} "
                "(known: \\n \\r \\t \\0 \\\\ \\xHH)"
            )
    if not out:
        raise ValueError("the delimiter must be one or more bytes")
    return bytes(out)


def _normalisePort(port: str) -> str:
    """
    A bare port number becomes C{tcp:PORT}, because Twisted's
    C{serverFromString} knows no bare numbers; endpoint descriptions are kept.
    """
    port = port.strip()
    if port.isdigit():
        if int(port) > 65535:
            raise usage.UsageError(f"--port {port}: outside 0-65535")
        return f"tcp:{int(port)}"
    if ":" not in port:
        raise usage.UsageError(
            f"--port {port!r}: not a port number or a Twisted endpoint description "
            "(such as tcp:8081:interface=127.0.0.1)"
        )
    return port


def _count(name: str, value: str) -> int | None:
    """
    A number of 1 or more, or C{None} for 'none'.
    """
    if value.lower() in ("none", "off", "unlimited"):
        return None
    try:
        number = int(value)
        if number < 1:
            raise ValueError
    except ValueError:
        raise usage.UsageError(f"--{name} {value!r}: not a number of 1 or more, or 'none'"
                               ) from None
    return number


def _positive(name: str, value: str, allowNone: bool) -> float | None:
    if allowNone and value.lower() in ("none", "off", "never"):
        return None
    try:
        number = float(value)
    except ValueError:
        raise usage.UsageError(f"--{name} {value!r}: not a number of seconds") from None
    if not number > 0 or number == float("inf"):
        raise usage.UsageError(f"--{name} {value!r}: must be more than 0 seconds")
    return number


class Options(usage.Options):
    """
    Command-line options of C{twistd tcpsc}.

    After parsing: C{ports} (endpoint descriptions), C{protocol} (the
    protocol class to serve), C{stream} (continuous mode), C{delimiter}
    (bytes or C{None} for the class's own), C{max-length} (C{int}, C{None}
    for no limit, or absent for the class's own), C{max-connections},
    C{max-connections-per-peer}, C{memory-budget}, C{max-pending-output},
    C{handshake-timeout}, C{first-byte-timeout}, C{idle-timeout} (numbers,
    or C{None}),
    C{close-timeout} (a number), and
    C{allow-client} (a list of names, empty for no allow-list).
    """

    synopsis = "[options]"
    longdesc = (
        "Serve messages over TCP or TLS 1.3: echo them back (the default), relay them "
        "between clients (--app chat), record each connection to a file (--app record), "
        "or run your own tcpsc.MessageProtocol subclass (--app module:Class). "
        "Example: twistd -n --pidfile= tcpsc --port 8081"
    )

    optFlags = [
        ["tls", None, "Serve TLS 1.3 on every --port; needs --cert and --key, and --ca "
                      "unless --no-client-auth."],
        ["no-client-auth", None, "With --tls: do not require client certificates (one "
                                 "that is presented is still verified against --ca)."],
        ["stream", "s", "Continuous mode: each connection is a raw byte stream, not "
                        "delimited messages."],
        ["quiet-connections", "q", "Do not log each connection established and closed "
                                   "(refusals and errors are still logged)."],
        ["log-every-event", None, "Log every refusal, failed handshake and dropped message, "
                                  "at debug level (by default the first of each kind is "
                                  "logged, then a count every 5 s)."],
    ]

    optParameters = [
        ["app", "a", "echo", "What to serve: echo, chat, record, or module:Class, a "
                             "tcpsc.MessageProtocol (or StreamProtocol) subclass."],
        ["ca", None, None, "PEM file of the CA that client certificates must be issued by."],
        ["cert", None, None, "PEM file of the server certificate (then any intermediates)."],
        ["key", None, None, "PEM file of the server certificate's private key (a warning "
                            "is logged if group or others may read it)."],
        ["delimiter", "d", None, "Message delimiter; escapes \\n \\r \\t \\0 \\\\ \\xHH "
                                 "[default: \\n, or the --app class's delimiter]"],
        ["max-length", "m", None, "Longest message in bytes, or 'none' for no limit "
                                  "[default: 16777216, or the --app class's]"],
        ["max-connections", None, str(DEFAULT_MAX_CONNECTIONS),
         "Most connections open at once; the next one is refused and logged."],
        ["max-connections-per-peer", None, str(DEFAULT_MAX_CONNECTIONS_PER_PEER),
         "Most connections open at once from one peer address, or 'none'; the next one "
         "is refused and logged."],
        ["memory-budget", None, str(DEFAULT_MEMORY_BUDGET),
         "Bytes the connections' buffers (partial messages, output not yet sent) may hold "
         "together, or 'none'; past it the largest partial messages are dropped and "
         "congested connections share what is left."],
        ["max-pending-output", None, None,
         "Bytes of output a connection accepts while its peer does not read, or 'none' "
         "for no bound; past it, messages to that peer are not sent "
         f"[default: {DEFAULT_MAX_PENDING_OUTPUT}, or the --app class's]"],
        ["handshake-timeout", None, "10",
         "Seconds a TLS client has to complete its handshake."],
        ["first-byte-timeout", None, f"{DEFAULT_FIRST_BYTE_TIMEOUT:g}",
         "Seconds a plain TCP client has to send its first byte before it is closed, or "
         "'none' (for clients that only listen)."],
        ["idle-timeout", None, "none",
         "Seconds without traffic after which a connection is closed, or 'none'."],
        ["close-timeout", None, f"{DEFAULT_CLOSE_TIMEOUT:g}",
         "Seconds a closing connection (stop, idle timeout, disconnect) gives its peer to "
         "take the last output and, over TLS, close_notify, before it is aborted."],
        ["record-dir", None, ".",
         "Directory of --app record's files client-<id>.bin (created if missing)."],
    ]

    compData = usage.Completions(
        optActions={
            "ca": usage.CompleteFiles("*.pem"),
            "cert": usage.CompleteFiles("*.pem"),
            "key": usage.CompleteFiles("*"),
            "record-dir": usage.CompleteDirs(),
            "app": usage.CompleteList(["echo", "chat", "record"]),
        },
        multiUse=["port", "allow-client"],
    )

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []
        self["allow-client"] = []

    # One line: twistd's --help keeps the line breaks of this docstring.
    def opt_allow_client(self, name: str) -> None:
        """With --tls: serve only clients whose certificate has this CN or DNS name (checked after the handshake, others are disconnected and logged); repeatable [default: any client with a valid certificate]"""
        name = name.strip()
        if not name:
            raise usage.UsageError("--allow-client needs a name")
        self["allow-client"].append(name)

    # One line: twistd's --help keeps the line breaks of this docstring.
    def opt_port(self, port: str) -> None:
        """Where to listen: a port number, or a Twisted server endpoint description such as tcp:8081:interface=127.0.0.1 or tcp6:8081:interface=\\:\\:; repeatable [default: tcp:8081]"""
        self["ports"].append(_normalisePort(port))

    opt_p = opt_port

    def postOptions(self) -> None:
        if not self["ports"]:
            self["ports"] = [DEFAULT_PORT]
        self._checkTLS()
        if self["delimiter"] is not None:
            try:
                self["delimiter"] = parseDelimiter(self["delimiter"])
            except ValueError as e:
                raise usage.UsageError(f"--delimiter: {e}") from None
        maxLength = self["max-length"]
        if maxLength is None:
            del self["max-length"]
        elif maxLength.lower() in ("none", "unlimited"):
            self["max-length"] = None
        else:
            try:
                self["max-length"] = int(maxLength)
                if self["max-length"] < 0:
                    raise ValueError
            except ValueError:
                raise usage.UsageError(
                    f"--max-length {maxLength!r}: not a number of bytes (0 or more) or 'none'"
                ) from None
        try:
            self["max-connections"] = int(self["max-connections"])
            if self["max-connections"] < 1:
                raise ValueError
        except ValueError:
            raise usage.UsageError(
                f"--max-connections {self['max-connections']!r}: not a number of 1 or more"
            ) from None
        self["max-connections-per-peer"] = _count(
            "max-connections-per-peer", str(self["max-connections-per-peer"]))
        self["memory-budget"] = _count("memory-budget", str(self["memory-budget"]))
        pending = self["max-pending-output"]
        if pending is None:
            del self["max-pending-output"]
        elif pending.lower() in ("none", "unlimited"):
            self["max-pending-output"] = None
        else:
            try:
                self["max-pending-output"] = int(pending)
                if self["max-pending-output"] < 0:
                    raise ValueError
            except ValueError:
                raise usage.UsageError(
                    f"--max-pending-output {pending!r}: not a number of bytes (0 or more) "
                    "or 'none'"
                ) from None
        self["handshake-timeout"] = _positive(
            "handshake-timeout", str(self["handshake-timeout"]), allowNone=False
        )
        self["first-byte-timeout"] = _positive(
            "first-byte-timeout", str(self["first-byte-timeout"]), allowNone=True)
        self["idle-timeout"] = _positive("idle-timeout", str(self["idle-timeout"]),
                                         allowNone=True)
        self["close-timeout"] = _positive("close-timeout", str(self["close-timeout"]),
                                          allowNone=False)
        self._chooseApp()

    def _checkTLS(self) -> None:
        given = [f"--{name}" for name in ("ca", "cert", "key") if self[name] is not None]
        if self["no-client-auth"]:
            given.append("--no-client-auth")
        if self["allow-client"]:
            given.append("--allow-client")
            if self["no-client-auth"]:
                raise usage.UsageError(
                    "--allow-client names clients by their certificates: it cannot be "
                    "combined with --no-client-auth"
                )
        if not self["tls"]:
            if given:
                raise usage.UsageError(f"{', '.join(given)} only apply with --tls")
            return
        missing = [f"--{name}" for name in ("cert", "key") if self[name] is None]
        if missing:
            raise usage.UsageError(f"--tls needs {' and '.join(missing)}")
        if self["ca"] is None and not self["no-client-auth"]:
            raise usage.UsageError(
                "--tls requires client certificates, so it needs --ca (the CA that "
                "issues them); or give --no-client-auth"
            )

    def _chooseApp(self) -> None:
        app = self["app"]
        protocol: type[MessageProtocol] | type[StreamProtocol]
        if app in BUILTIN_APPS:
            fragmented, continuous, _ = BUILTIN_APPS[app]
            stream = self["stream"] or fragmented is None
            if stream and continuous is None:
                raise usage.UsageError(
                    f"--app {app} relays messages; it has no continuous mode (drop --stream)"
                )
            protocol = continuous if stream else fragmented  # type: ignore[assignment]
        else:
            try:
                protocol = loadAppClass(app)
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
            stream = issubclass(protocol, StreamProtocol)
            if self["stream"] and not stream:
                raise usage.UsageError(
                    f"--stream needs a tcpsc.StreamProtocol subclass; {app} is a MessageProtocol"
                )
        if stream:
            given = []
            if self["delimiter"] is not None:
                given.append("--delimiter")
            if "max-length" in self:
                given.append("--max-length")
            if given:
                raise usage.UsageError(
                    "continuous mode (--stream, --app record) has no message "
                    f"boundaries: drop {' and '.join(given)}"
                )
        self["protocol"] = protocol
        self["stream"] = stream


class DaemonStartError(Exception):
    """
    The daemon could not start listening.  Raised from
    L{TcpscService.privilegedStartService} after the cause was logged, so that
    twistd stops with a non-zero exit status (and, when daemonizing, reports
    it through its status pipe), with no traceback printed.

    @ivar code: the C++ original's code for the cause (10 bad port, 30-35
        certificates, 42 cannot listen), or C{None}.
    """

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


def _describeStartFailure(port: str, failure: Failure) -> tuple[str, int | None]:
    value = failure.value
    code = getattr(value, "code", None)
    cause = getattr(value, "__cause__", None)
    if isinstance(value, ListenError) and isinstance(cause, CannotListenError):
        message = f"cannot listen on {port}: {cause.socketError}"
    elif isinstance(value, StartError):
        message = value.args[0]
    else:
        message = f"cannot listen on {port}: {failure.getErrorMessage()}"
    if code is not None:
        message += f" (code {code})"
    return message, code


def _quietExceptHook(previous: Any) -> Any:
    """
    An exception hook that prints nothing for L{DaemonStartError}, whose
    cause is already in the log as one line, and defers to C{previous} for
    everything else.
    """

    def hook(kind: type[BaseException], value: BaseException,
             traceback: TracebackType | None) -> None:
        if isinstance(value, DaemonStartError):
            return
        previous(kind, value, traceback)

    return hook


class TcpscService(Service):
    """
    Listens with one L{Server} on every port while running, and stops it
    (closing every connection after its output is flushed) when stopped.

    @ivar server: the server.
    @ivar ports: the endpoint descriptions listened on.
    """

    log = Logger()

    def __init__(self, server: Server, ports: Sequence[str], tls: TLSConfig | None,
                 description: str, reactor: Any) -> None:
        self.server = server
        self.ports = list(ports)
        self.tls = tls
        self.description = description
        self._reactor = reactor
        self._starting = False
        self._listenStarted = False
        self._startError: DaemonStartError | None = None

    def privilegedStartService(self) -> None:
        """
        Listen on every port, before twistd sheds privileges (so that ports
        below 1024 work with C{--uid}).

        @raise DaemonStartError: a port could not be listened on; the cause
            is logged as one line first.
        """
        super().privilegedStartService()
        try:
            self._listen()
        except DaemonStartError:
            # twistd lets this end the process (after removing its pid file
            # and, when daemonizing, reporting it to the parent process):
            # keep the interpreter from adding a traceback to the log line.
            sys.excepthook = _quietExceptHook(sys.excepthook)
            raise

    def startService(self) -> None:
        """
        Start; listen now if L{privilegedStartService} was not called, as
        C{twist} (unlike twistd) does not call it.

        @raise SystemExit: then, with status 1, if a port could not be
            listened on.  The cause is logged first as one critical line;
            C{twist} starts services before it begins logging, and until
            then Twisted prints critical events on standard error.
        """
        super().startService()
        if not self._listenStarted:
            try:
                self._listen()
            except DaemonStartError:
                raise SystemExit(1) from None

    def _listen(self) -> None:
        self._listenStarted = True
        self.log.info("Starting tcpsc: {description}", description=self.description)
        self._starting = True
        try:
            for port in self.ports:
                self.server.listen(port, tls=self.tls).addErrback(self._listenFailed, port)
                if self._startError is not None:
                    break
        finally:
            self._starting = False
        error = self._startError
        if error is not None:
            self.server.stop()
            raise error

    def _listenFailed(self, failure: Failure, port: str) -> None:
        message, code = _describeStartFailure(port, failure)
        self.log.critical("tcpsc cannot start: {error}", error=message, code=code)
        if self._starting:
            # Endpoints that listen at once (TCP, UNIX, TLS, systemd) fail
            # here, synchronously: raising from privilegedStartService is
            # what makes twistd exit non-zero.
            self._startError = DaemonStartError(message, code)
        elif self._reactor.running:
            # An endpoint that listens asynchronously failed later: all that
            # is left is to stop.
            self._reactor.stop()

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting, flush and close every connection.

        @return: fires once every port and connection is closed (twistd
            waits for it before exiting).
        """
        super().stopService()
        self.log.info("Stopping tcpsc: closing {count} connections",
                      count=self.server.openConnections())

        def stopped(result: None) -> None:
            self.log.info("tcpsc stopped")

        return self.server.stop().addCallback(stopped)


def _describe(options: Options, protocol: type[Any], tls: TLSConfig | None) -> str:
    app = options["app"]
    if options["stream"]:
        mode = "continuous mode"
    else:
        delimiter = options["delimiter"] or protocol.delimiter
        maxLength = options.get("max-length", protocol.maxMessageLength)
        limit = "no length limit" if maxLength is None else f"messages up to {maxLength} bytes"
        mode = f"fragmented mode, delimiter {delimiter!r}, {limit}"
    if tls is None:
        security = "plain TCP"
    elif tls.allowedClients is not None:
        security = ("TLS 1.3, client certificate required, clients allowed: "
                    + ", ".join(sorted(tls.allowedClients)))
    elif tls.requireClientCertificate:
        security = "TLS 1.3, client certificate required"
    else:
        security = "TLS 1.3, client certificate optional"
    extra = ""
    perPeer = options.get("max-connections-per-peer")
    if perPeer is not None:
        extra += f", at most {perPeer} per peer address"
    if app == "record":
        extra += f", recording into {os.path.abspath(options['record-dir'])}"
    return (f"app {app} ({mode}), {security}, at most "
            f"{plural(options['max-connections'], 'connection')}{extra}")


def makeService(options: Options, reactor: Any = None) -> TcpscService:
    """
    Build the daemon's service from parsed L{Options}.

    Certificates are loaded and checked here, before twistd starts anything,
    so that a missing or invalid file stops it at once.

    @param reactor: the reactor to serve on; the global one by default.
    @raise SystemExit: with one line naming the problem (and the original's
        code, 30-35, for certificates): twistd prints it and exits with
        status 1.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    tls = None
    if options["tls"]:
        tls = TLSConfig(
            ca=options["ca"],
            cert=options["cert"],
            key=options["key"],
            requireClientCertificate=not options["no-client-auth"],
            allowedClients=frozenset(options["allow-client"]) or None,
        )
        try:
            tls.serverOptions()
        except StartError as e:
            raise SystemExit(f"tcpsc: {e}") from None
    protocol = options["protocol"]
    settings: dict[str, Any] = {}
    if options["stream"]:
        settings["stream"] = True
    else:
        if options["delimiter"] is not None:
            settings["delimiter"] = options["delimiter"]
        if "max-length" in options:
            settings["maxMessageLength"] = options["max-length"]
    server: Server | None = None
    if options["app"] == "record":
        directory = Path(options["record-dir"])
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SystemExit(
                f"tcpsc: cannot create the --record-dir {str(directory)!r}: {e.strerror or e}"
            ) from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise SystemExit(f"tcpsc: the --record-dir {str(directory)!r} is not writable")
        settings["createSink"] = recordSink(directory, lambda: server)  # type: ignore[arg-type,return-value]
    if "max-pending-output" in options:
        settings["maxPendingOutput"] = options["max-pending-output"]
    try:
        server = Server(
            protocol,
            maxConnections=options["max-connections"],
            maxConnectionsPerPeer=options.get("max-connections-per-peer"),
            handshakeTimeout=options["handshake-timeout"],
            firstByteTimeout=options["first-byte-timeout"],
            idleTimeout=options["idle-timeout"],
            closeTimeout=options["close-timeout"],
            logConnections=not options["quiet-connections"],
            logEveryEvent=options["log-every-event"],
            memoryBudget=options["memory-budget"],
            reactor=reactor,
            **settings,
        )
    except (TypeError, ValueError) as e:
        raise SystemExit(f"tcpsc: {e}") from None
    return TcpscService(server, options["ports"], tls, _describe(options, protocol, tls),
                        reactor)
