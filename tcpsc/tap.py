# -*- test-case-name: tests.test_tap,tests.test_daemon -*-
"""
The C{twistd tcpsc} daemon: its command-line L{Options} and L{makeService},
which twistd finds through the plugin in C{twisted/plugins/tcpsc_plugin.py}.

Start-up failures are made loud on purpose.  Twisted's own
C{StreamServerEndpointService} only logs a bind error and keeps running with
no port; here a certificate problem stops twistd before anything starts
(L{makeService}), and a port that cannot be bound stops it from
L{TcpscService.privilegedStartService}, in both cases with one line naming
the cause and its start-up code (L{tcpsc.StartError.code}), and a non-zero
exit status.

The grammar of option values (L{parseDelimiter}, L{formatDelimiter},
L{DELIMITER_HELP}, L{parseSeconds}, L{parseCount}, L{parsePortNumber},
L{parseHostPort}, L{OutOfRange}) and L{raiseOpenFileLimit} are public here because the
C{tcpsc} command shares them with the daemon: a value typed for either
reads the same, and both make room for their connections where they start.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import ILogObserver, Logger
from twisted.python import usage
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from ._accept import BACKLOG
from ._addresses import describeAddress
from ._apps import (
    BUILTIN_APPS,
    DATAGRAM_APPS,
    broadcastApp,
    loadAppClass,
    recordRunDirectory,
    recordSink,
)
from ._cluster import INSTALL_HINT as CLUSTER_INSTALL_HINT
from ._cluster import ClusterError, parseClusterURL, probeCluster
from ._datagram import DatagramPeer, DatagramServer
from ._errors import ListenError, StartError
from ._events import plural
from ._framing import DEFAULT_MAX_PENDING_OUTPUT, MessageProtocol, StreamProtocol
from ._limits import FILE_MARGIN, raiseOpenFileLimit
from ._logtext import daemonLogObserver
from ._metrics import INSTALL_HINT
from ._options import (
    DELIMITER_HELP,
    OutOfRange,
    formatDelimiter,
    parseCount,
    parseDelimiter,
    parseHostPort,
    parsePortNumber,
    parseSeconds,
)
from ._server import Server
from ._service import ServerService
from ._settings import Settings
from ._signals import HangupHandler
from ._supervisor import WorkerRole, WorkerSupervisor, tcpDescription
from ._systemd import notify
from ._tls import TLSConfig

__all__ = [
    "DEFAULT_PORT",
    "DELIMITER_HELP",
    "FILE_MARGIN",
    "DaemonStartError",
    "Options",
    "OutOfRange",
    "TcpscService",
    "formatDelimiter",
    "makeService",
    "parseCount",
    "parseDelimiter",
    "parseHostPort",
    "parsePortNumber",
    "parseSeconds",
    "raiseOpenFileLimit",
]

#: Where the daemon listens when neither C{--port} nor C{--udp} is given.
DEFAULT_PORT = "tcp:8081"

#: The largest C{--max-length} with C{--udp}: the payload of the largest
#: UDP datagram over IPv4 (65,535 bytes less the IP and UDP headers).
MAX_UDP_LENGTH = 65_507


#: The settings of a server given no options: the daemon's defaults.
_DEFAULTS = Settings()

_BROADCAST_RATE = 1000.0
_BROADCAST_SIZE = 32


#: Endpoint types whose description has one positional argument (the port
#: or path), so that a second one is a colon left unescaped in a value.
_ONE_POSITIONAL = frozenset({"tcp", "tcp6", "ssl", "unix"})


def _normalisePort(port: str, option: str = "--port") -> str:
    """
    A bare port number becomes C{tcp:PORT}, because Twisted's
    C{serverFromString} knows no bare numbers; endpoint descriptions are kept.
    """
    port = port.strip()
    if port.isdigit():
        try:
            return f"tcp:{parsePortNumber(port, minimum=0)}"
        except ValueError as e:
            raise usage.UsageError(f"{option} {port}: {e}") from None
    if ":" not in port:
        raise usage.UsageError(
            f"{option} {port!r}: not a port number or a Twisted endpoint description "
            "(such as tcp:8081:interface=127.0.0.1)"
        )
    parts = re.split(r"(?<!\\):", port)
    if parts[0].lower() == "haproxy":
        # A PROXY-protocol port: the description it wraps follows.
        parts = parts[1:] or [""]
    if parts[0] in _ONE_POSITIONAL and len([p for p in parts[1:] if "=" not in p]) > 1:
        raise usage.UsageError(
            f"{option} {port!r}: a colon inside a value must be escaped with a backslash, "
            "and the backslashes quoted from the shell, as in "
            f"{option} 'tcp6:8081:interface=\\:\\:'"
        )
    return port


#: What turns off a limit (C{--max-connections-per-peer none}), a timeout
#: (C{--idle-timeout none}) or a bound in bytes (C{--max-length none}).
_NO_LIMIT = ("none", "off", "unlimited")
_NO_TIMEOUT = ("none", "off", "never")
_NO_BOUND = ("none", "unlimited")


def _shown(value: float | None) -> str:
    """
    A default as the daemon's C{--help} shows it and its options read it:
    C{none}, C{4096}, C{10}, C{0.5}.
    """
    if value is None:
        return "none"
    return str(value) if isinstance(value, int) else f"{value:g}"


def _count(
    name: str,
    value: str,
    minimum: int = 1,
    noneWords: Sequence[str] = _NO_LIMIT,
    expected: str = "a number of 1 or more, or 'none'",
    quoteNumber: bool = True,
) -> int | None:
    """
    C{--NAME}'s number of C{minimum} or more, or C{None} for one of
    C{noneWords}; otherwise a usage error saying that C{expected} is,
    quoting the value (a number too small too, unless not C{quoteNumber}).
    """
    try:
        return parseCount(value, minimum=minimum, noneWords=noneWords)
    except OutOfRange:
        shown = repr(value) if quoteNumber else str(int(value))
        raise usage.UsageError(f"--{name} {shown}: not {expected}") from None
    except ValueError:
        raise usage.UsageError(f"--{name} {value!r}: not {expected}") from None


def _positive(name: str, value: str, allowNone: bool) -> float | None:
    """
    C{--NAME}'s number of seconds, more than 0, or C{None} for 'none' when
    C{allowNone}.
    """
    try:
        return parseSeconds(value, noneWords=_NO_TIMEOUT if allowNone else ())
    except ValueError as e:
        raise usage.UsageError(f"--{name} {value!r}: {e}") from None


class Options(usage.Options):
    """
    Command-line options of C{twistd tcpsc}.

    After parsing: C{ports} (endpoint descriptions, empty when only
    C{--udp} is given), C{udp} (the C{(address, port)} pairs of C{--udp},
    address C{""} for every IPv4 address), C{protocol} (the protocol class
    to serve over TCP, C{None} for a L{DatagramPeer} application, which is
    served over UDP only), C{datagram-protocol} (the L{DatagramPeer} class
    to serve over UDP, C{None} without C{--udp}), C{stream} (continuous
    mode), C{delimiter}
    (bytes or C{None} for the class's own), C{max-length} (C{int}, C{None}
    for no limit, or absent for the class's own), C{max-connections},
    C{max-connections-per-peer}, C{memory-budget}, C{max-pending-output},
    C{handshake-timeout}, C{first-byte-timeout}, C{idle-timeout} (numbers,
    or C{None}),
    C{close-timeout} (a number),
    C{allow-client} (a list of names, empty for no allow-list), and
    C{workers} (an C{int}, 1 for the one process of a daemon without
    C{--workers}).  C{arguments} keeps the options as given, which the
    workers of C{--workers} are started with.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve messages over TCP or TLS 1.3: echo them back (the default), relay them "
        "between clients (--app chat), send every client the same messages at a set rate "
        "(--app broadcast), record each connection to a file (--app record), "
        "or run your own tcpsc.MessageProtocol subclass (--app module:Class). "
        "With --udp it serves echo, or your own tcpsc.DatagramPeer subclass, over UDP "
        "as well (UDP only when no --port is given). "
        "Example: twistd -n --pidfile= tcpsc --port 8081 --udp 9000"
    )

    optFlags = [
        [
            "tls",
            None,
            "Serve TLS 1.3 on every --port; needs --cert and --key, and --ca "
            "unless --no-client-auth.",
        ],
        [
            "no-client-auth",
            None,
            "With --tls: do not require client certificates (one "
            "that is presented is still verified against --ca).",
        ],
        [
            "stream",
            "s",
            "Continuous mode: each connection is a raw byte stream, not delimited messages.",
        ],
        [
            "quiet-connections",
            "q",
            "Do not log each connection established and closed "
            "(refusals and errors are still logged).",
        ],
        [
            "log-every-event",
            None,
            "Log every refusal, failed handshake and dropped message, "
            "at debug level (by default the first of each kind is "
            "logged, then a count every 5 s).",
        ],
    ]

    optParameters = [
        [
            "app",
            "a",
            "echo",
            "What to serve: echo, chat, broadcast, record, or "
            "module:Class, a tcpsc.MessageProtocol (or StreamProtocol) "
            "subclass, or a tcpsc.DatagramPeer subclass with --udp (UDP only). "
            "Over --udp: echo or a DatagramPeer subclass.",
        ],
        ["ca", None, None, "PEM file of the CA that client certificates must be issued by."],
        ["cert", None, None, "PEM file of the server certificate (then any intermediates)."],
        [
            "key",
            None,
            None,
            "PEM file of the server certificate's private key (a warning "
            "is logged if group or others may read it).",
        ],
        [
            "delimiter",
            "d",
            None,
            DELIMITER_HELP[0].upper()
            + DELIMITER_HELP[1:]
            + " [default: \\n, or the --app class's delimiter]",
        ],
        [
            "max-length",
            "m",
            None,
            "Longest message in bytes, or 'none' for no limit; with --udp it bounds "
            f"datagrams too, at most {MAX_UDP_LENGTH} "
            "[default: 16777216, or 1472 over UDP, or the --app class's]",
        ],
        [
            "max-connections",
            None,
            str(_DEFAULTS.maxConnections),
            "Most connections open at once; the next one is refused and logged.",
        ],
        [
            "max-connections-per-peer",
            None,
            _shown(_DEFAULTS.maxConnectionsPerPeer),
            "Most connections open at once from one peer address, or 'none'; the next one "
            "is refused and logged.",
        ],
        [
            "memory-budget",
            None,
            _shown(_DEFAULTS.memoryBudget),
            "Bytes the connections' buffers (partial messages, messages held for a later turn, "
            "output) may hold "
            "together, or 'none'; past it the largest partial messages are dropped and "
            "congested connections share what is left.",
        ],
        [
            "max-pending-output",
            None,
            None,
            "Bytes of output a connection accepts while its peer does not read, or 'none' "
            "for no bound; past it, messages to that peer are not sent "
            f"[default: {DEFAULT_MAX_PENDING_OUTPUT}, or the --app class's]",
        ],
        [
            "handshake-timeout",
            None,
            _shown(_DEFAULTS.handshakeTimeout),
            "Seconds a TLS client has to complete its handshake.",
        ],
        [
            "first-byte-timeout",
            None,
            None,
            "Seconds a plain TCP client has to send its first byte before it is closed, or "
            "'none' (for clients that only listen) "
            f"[default: {_shown(_DEFAULTS.firstByteTimeout)}; none with --app broadcast, whose "
            "clients only listen]",
        ],
        [
            "idle-timeout",
            None,
            _shown(_DEFAULTS.idleTimeout),
            "Seconds without traffic after which a connection is closed, or 'none'.",
        ],
        [
            "udp-peer-timeout",
            None,
            _shown(_DEFAULTS.peerIdleTimeout),
            "With --udp: seconds without a datagram after which a peer is forgotten, or 'none'.",
        ],
        [
            "udp-max-peers",
            None,
            str(_DEFAULTS.maxPeers),
            "With --udp: the most peers kept at once; when the table is full, the peer heard "
            "from least recently is forgotten first.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics on this endpoint, such as "
            "tcp:9100:interface=127.0.0.1 (a bare port listens on every address); needs "
            f"prometheus-client: {INSTALL_HINT}.",
        ],
        [
            "cluster",
            None,
            None,
            "Be one node of a cluster of tcpsc daemons sharing this Redis: "
            "redis://HOST[:PORT][/DB] (also redis://USER:PASSWORD@HOST..., and ?prefix=P&ttl=S); "
            "ids, send, broadcast and the chat span every node. Needs txredisapi: "
            f"{CLUSTER_INSTALL_HINT}.",
        ],
        [
            "workers",
            None,
            "1",
            "Serve with this many worker processes, each a daemon with the same options, "
            "sharing the --port sockets that this process binds, and restarted when one "
            "ends; not with --udp or --metrics, nor with an --app that reaches other "
            "clients (chat) unless --cluster is given.",
        ],
        [
            "close-timeout",
            None,
            _shown(_DEFAULTS.closeTimeout),
            "Seconds a closing connection (stop, idle timeout, disconnect) gives its peer to "
            "take the last output and, over TLS, close_notify, before it is aborted.",
        ],
        [
            "record-dir",
            None,
            None,
            "With --app record: directory (created if missing) in which each run makes a "
            "directory of its own, named after its start time (YYYYMMDD-HHMMSS, UTC), for its "
            "files client-<id>.bin; a run never writes into another run's files "
            "[default: the current directory]",
        ],
        [
            "rate",
            None,
            None,
            "With --app broadcast: messages per second sent to every client "
            f"[default: {_BROADCAST_RATE:g}]",
        ],
        [
            "message-size",
            None,
            None,
            "With --app broadcast: bytes per message, the delimiter included "
            f"[default: {_BROADCAST_SIZE}]",
        ],
    ]

    compData = usage.Completions(
        optActions={
            "ca": usage.CompleteFiles("*.pem"),
            "cert": usage.CompleteFiles("*.pem"),
            "key": usage.CompleteFiles("*"),
            "record-dir": usage.CompleteDirs(),
            "app": usage.CompleteList(["echo", "chat", "broadcast", "record"]),
        },
        multiUse=["port", "udp", "allow-client"],
    )

    def __init__(self) -> None:
        super().__init__()
        self["ports"] = []
        self["udp"] = []
        self["allow-client"] = []

    # One line: twistd's --help keeps the line breaks of this docstring.
    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse the options; run by twistd (or twist) as its C{tcpsc}
        subcommand, an option error prints the usage, then the error on the
        last line, and exits with status 1.

        twistd itself does the same only from Twisted 26.10 on: before, it
        exited 0 after an option error, which a script cannot tell from a
        successful start.  Parsed on its own (no parent command), the error
        is raised as C{usage.UsageError}.
        """
        # The workers of --workers are given the same options.
        self.arguments = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            print(self)
            print(f"{' '.join(sys.argv[0:2])} tcpsc: {e}", flush=True)
            sys.exit(1)

    def opt_allow_client(self, name: str) -> None:
        """With --tls: serve only clients whose certificate has this CN or DNS name (checked after the handshake, others are disconnected and logged); repeatable [default: any client with a valid certificate]"""
        name = name.strip()
        if not name:
            raise usage.UsageError("--allow-client needs a name")
        self["allow-client"].append(name)

    # One line: twistd's --help keeps the line breaks of this docstring.
    def opt_port(self, port: str) -> None:
        """Where to listen: a port number, or a Twisted server endpoint description such as tcp:8081:interface=127.0.0.1 or 'tcp6:8081:interface=\\:\\:' (colons in a value escaped, the backslashes quoted from the shell); haproxy:tcp:8081 behind a load balancer that sends the PROXY protocol (v1 or v2), whose header gives the client's address; repeatable [default: tcp:8081, or none when --udp is given]"""
        self["ports"].append(_normalisePort(port))

    opt_p = opt_port

    # One line: twistd's --help keeps the line breaks of this docstring.
    def opt_udp(self, address: str) -> None:
        """Serve the --app over UDP too, at this address: a port alone (every IPv4 address), 127.0.0.1:9000, or [::1]:9000 for IPv6; repeatable; without --port, UDP only. One datagram is one message (with --delimiter, one or more); plain UDP, so not with --tls [default: none]"""
        try:
            self["udp"].append(parseHostPort(address, minimum=0, bare=True))
        except ValueError as e:
            raise usage.UsageError(f"--udp {address!r}: {e}") from None

    def postOptions(self) -> None:
        if not self["ports"] and not self["udp"]:
            self["ports"] = [DEFAULT_PORT]
        self._checkTLS()
        if self["delimiter"] is not None:
            try:
                self["delimiter"] = parseDelimiter(self["delimiter"])
            except ValueError as e:
                raise usage.UsageError(f"--delimiter: {e}") from None
        for name in ("max-length", "max-pending-output"):
            if self[name] is None:
                # Not given: the --app class's own.
                del self[name]
            else:
                self[name] = _count(
                    name,
                    self[name],
                    minimum=0,
                    noneWords=_NO_BOUND,
                    expected="a number of bytes (0 or more) or 'none'",
                )
        self["max-connections"] = _count(
            "max-connections",
            str(self["max-connections"]),
            noneWords=(),
            expected="a number of 1 or more",
            quoteNumber=False,
        )
        self["max-connections-per-peer"] = _count(
            "max-connections-per-peer", str(self["max-connections-per-peer"])
        )
        self["memory-budget"] = _count("memory-budget", str(self["memory-budget"]))
        self["handshake-timeout"] = _positive(
            "handshake-timeout", str(self["handshake-timeout"]), allowNone=False
        )
        firstByte = self["first-byte-timeout"]
        if firstByte is None:
            listenOnly = self["app"] == "broadcast"
            firstByte = "none" if listenOnly else _shown(_DEFAULTS.firstByteTimeout)
        self["first-byte-timeout"] = _positive("first-byte-timeout", str(firstByte), allowNone=True)
        self["idle-timeout"] = _positive("idle-timeout", str(self["idle-timeout"]), allowNone=True)
        for name, default in (
            ("udp-peer-timeout", _shown(_DEFAULTS.peerIdleTimeout)),
            ("udp-max-peers", str(_DEFAULTS.maxPeers)),
        ):
            if not self["udp"] and str(self[name]) != default:
                raise usage.UsageError(f"--{name} applies to --udp only: give --udp ADDRESS")
        self["udp-peer-timeout"] = _positive(
            "udp-peer-timeout", str(self["udp-peer-timeout"]), allowNone=True
        )
        self["udp-max-peers"] = _count(
            "udp-max-peers",
            str(self["udp-max-peers"]),
            noneWords=(),
            expected="a number of 1 or more",
            quoteNumber=False,
        )
        self["close-timeout"] = _positive(
            "close-timeout", str(self["close-timeout"]), allowNone=False
        )
        if self["metrics"] is not None:
            self["metrics"] = _normalisePort(self["metrics"], "--metrics")
            try:
                import prometheus_client.twisted  # noqa: F401
            except ImportError:
                raise usage.UsageError(
                    f"--metrics needs prometheus-client, which is not installed: {INSTALL_HINT}"
                ) from None
        self._checkCluster()
        self._checkAppOptions()
        self._chooseApp()
        self._checkWorkers()

    def _checkCluster(self) -> None:
        """
        C{--cluster}: a C{redis://} URL, and txredisapi installed.
        """
        url = self["cluster"]
        if url is None:
            return
        try:
            parseClusterURL(url)
        except ValueError as e:
            raise usage.UsageError(f"--cluster: {e}") from None
        try:
            import txredisapi  # noqa: F401
        except ImportError:
            raise usage.UsageError(
                f"--cluster needs txredisapi, which is not installed: {CLUSTER_INSTALL_HINT}"
            ) from None

    def _checkAppOptions(self) -> None:
        """
        Options of one built-in application are usage errors with another,
        as C{--cert} is without C{--tls}.
        """
        for option, app in (
            ("record-dir", "record"),
            ("rate", "broadcast"),
            ("message-size", "broadcast"),
        ):
            if self[option] is not None and self["app"] != app:
                raise usage.UsageError(f"--{option} only applies with --app {app}")
        if self["app"] != "broadcast":
            return
        rate, size = self["rate"], self["message-size"]
        try:
            self["rate"] = float(rate) if rate is not None else _BROADCAST_RATE
            if not 0 < self["rate"] < float("inf"):
                raise ValueError
        except ValueError:
            raise usage.UsageError(
                f"--rate {rate!r}: not a number of messages per second above 0"
            ) from None
        try:
            self["message-size"] = int(size) if size is not None else _BROADCAST_SIZE
        except ValueError:
            raise usage.UsageError(f"--message-size {size!r}: not a number of bytes") from None

    def _checkWorkers(self) -> None:
        """
        C{--workers N}: a number of 1 or more; with 2 or more, only what N
        processes can serve apart: TCP ports (which this process binds and
        hands over), no C{--udp} and no C{--metrics}, and no application
        that reaches the clients of other connections unless C{--cluster}
        lets the workers reach each other's.
        """
        workers = _count(
            "workers",
            str(self["workers"]),
            noneWords=(),
            expected="a number of worker processes (1 or more)",
            quoteNumber=False,
        )
        assert workers is not None
        self["workers"] = workers
        if workers == 1:
            return
        if self["udp"]:
            raise usage.UsageError(
                f"--workers {workers} serves TCP only: a UDP peer's state lives in one "
                "process, so --udp cannot be shared by workers; serve --udp from a daemon "
                "without --workers"
            )
        if self["metrics"] is not None:
            raise usage.UsageError(
                f"--metrics with --workers {workers}: each worker counts only its own "
                "connections, and one endpoint cannot serve them all; drop --metrics or "
                "--workers"
            )
        for port in self["ports"]:
            try:
                tcp = tcpDescription(port)
            except ValueError as e:
                raise usage.UsageError(f"--port {port!r}: {e}") from None
            if tcp is None:
                raise usage.UsageError(
                    f"--port {port!r}: with --workers the ports must be TCP (a port number, "
                    "tcp:, tcp6:, or haproxy:tcp:), which this process binds and hands to "
                    "its workers"
                )
        protocol = self["protocol"]
        if getattr(protocol, "reachesOtherClients", False) and not self.get("cluster"):
            raise usage.UsageError(
                f"--app {self['app']} reaches clients of other connections, and each of "
                f"--workers {workers} would reach only its own: give --cluster "
                "redis://HOST:PORT so that they reach each other's, or drop --workers"
            )

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
                names = given[0] if len(given) == 1 else f"{', '.join(given[:-1])} and {given[-1]}"
                raise usage.UsageError(
                    f"{names} only {'applies' if len(given) == 1 else 'apply'} with --tls"
                )
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
        loaded = None
        if app not in BUILTIN_APPS:
            try:
                loaded = loadAppClass(app)
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
        self["datagram-protocol"] = self._chooseDatagramApp(app, loaded)
        if loaded is not None and issubclass(loaded, DatagramPeer):
            # Served over UDP only (_chooseDatagramApp made sure).
            self["protocol"] = None
            self["stream"] = False
            return
        if app in BUILTIN_APPS:
            fragmented, continuous, _ = BUILTIN_APPS[app]
            stream = self["stream"] or fragmented is None
            if stream and continuous is None:
                raise usage.UsageError(
                    f"--app {app} deals in messages; it has no continuous mode (drop --stream)"
                )
            protocol = continuous if stream else fragmented  # type: ignore[assignment]
            if app == "broadcast":
                try:
                    protocol = broadcastApp(
                        self["rate"], self["message-size"], self["delimiter"] or b"\n"
                    )
                except ValueError as e:
                    raise usage.UsageError(str(e)) from None
        else:
            assert loaded is not None
            protocol = loaded
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

    def _chooseDatagramApp(self, app: str, loaded: type[Any] | None) -> type[DatagramPeer] | None:
        """
        The L{DatagramPeer} class that C{--udp} serves, or C{None} without
        C{--udp}; what does not go with UDP is a usage error.

        @param loaded: the C{module:Class} of C{--app}, or C{None} for a
            built-in application.
        """
        isDatagram = loaded is not None and issubclass(loaded, DatagramPeer)
        if not self["udp"]:
            if isDatagram:
                raise usage.UsageError(
                    f"--app {app} is a tcpsc.DatagramPeer subclass, which is served over "
                    "UDP: give --udp ADDRESS"
                )
            return None
        if self["tls"]:
            raise usage.UsageError(
                "--udp serves plain UDP, which --tls cannot protect, and it would serve the "
                "--app without the client certificates --tls requires: serve TLS and UDP "
                "from separate daemons"
            )
        if self["stream"]:
            raise usage.UsageError(
                "--udp carries messages, one or more per datagram: it has no continuous "
                "mode (drop --stream)"
            )
        if "max-length" in self:
            bound = self["max-length"]
            if bound is None or not 1 <= bound <= MAX_UDP_LENGTH:
                raise usage.UsageError(
                    f"--max-length {'none' if bound is None else bound}: --udp needs a bound "
                    f"from 1 to {MAX_UDP_LENGTH} bytes, {MAX_UDP_LENGTH} being the largest UDP "
                    "datagram (over IPv4)"
                )
        if loaded is None:
            datagram = DATAGRAM_APPS.get(app)
            if datagram is None:
                served = ", ".join(sorted(DATAGRAM_APPS))
                raise usage.UsageError(
                    f"--app {app} is served over TCP only: --udp serves {served}, or a "
                    "module:Class that subclasses tcpsc.DatagramPeer"
                )
            return datagram
        if not isDatagram:
            kind = "StreamProtocol" if issubclass(loaded, StreamProtocol) else "MessageProtocol"
            raise usage.UsageError(
                f"--udp serves a tcpsc.DatagramPeer subclass, and --app {app} is a "
                f"tcpsc.{kind} (served over TCP only): give a DatagramPeer subclass, or "
                "drop --udp"
            )
        if self["ports"]:
            raise usage.UsageError(
                f"--app {app} is a tcpsc.DatagramPeer subclass, served over UDP only: "
                "drop --port (or serve a tcpsc.MessageProtocol over TCP from another daemon)"
            )
        assert loaded is not None
        return loaded


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

    def hook(
        kind: type[BaseException], value: BaseException, traceback: TracebackType | None
    ) -> None:
        if isinstance(value, DaemonStartError):
            return
        previous(kind, value, traceback)

    return hook


class _StartingTerminal:
    """
    The standard error of the process that started twistd, kept so that a
    daemon that fails to start can say why there, in one whole line.

    Daemonizing, twistd forks and points the daemon's standard error at
    C{/dev/null}; the process that started it waits for a status, prints
    the first 100 bytes of the daemon's exception as a C{bytes} repr, and
    exits 1.  The descriptor kept here (made in L{makeService}, before
    twistd forks) still reaches the terminal: the daemon writes the whole
    sentence to it, and the starting process's report of the cut
    exception is then left out.
    """

    #: How twistd's starting process begins its report of a daemon that
    #: failed to start with a L{DaemonStartError}.
    _report = "An error has occurred: b'tcpsc.tap.DaemonStartError"

    def __init__(self) -> None:
        try:
            self.fd: int | None = os.dup(2)
        except OSError:
            self.fd = None
            return
        stderr = sys.__stderr__
        if stderr is not None and not isinstance(stderr, _WithoutCutReport):
            sys.__stderr__ = _WithoutCutReport(stderr, self._report)  # type: ignore[misc,assignment]

    def report(self, message: str) -> None:
        """
        Write C{message} to the starting terminal, if this process is a
        daemon whose standard error goes elsewhere (else the log, on the
        terminal, has it already).
        """
        if self.fd is None:
            return
        try:
            kept, current = os.fstat(self.fd), os.fstat(2)
            if (kept.st_dev, kept.st_ino) == (current.st_dev, current.st_ino):
                return
            os.write(self.fd, f"tcpsc cannot start: {message}\n".encode("utf-8", "replace"))
        except OSError:
            pass

    def close(self) -> None:
        """
        Let go of the descriptor once the start is over.
        """
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)

    # A service that is made but never started (or started by twist, which
    # does not call privilegedStartService) lets go of it here.
    __del__ = close


class _WithoutCutReport:
    """
    A stream that passes everything on to C{stream} except a write that
    begins with C{prefix}.
    """

    def __init__(self, stream: Any, prefix: str) -> None:
        self._stream = stream
        self._prefix = prefix

    def write(self, text: str) -> int:
        if text.startswith(self._prefix):
            # What remains of it: where the details are.
            text = text[text.find("\n") + 1 :]
        return int(self._stream.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _setLogObserver(service: Any, parent: Any) -> None:
    """
    Give the application twistd made for C{service} (its C{parent}) the
    log observer twistd would make for its options, writing the same lines
    for less CPU (see L{tcpsc._logtext}); twistd uses an application's
    observer instead of making its own.  Nothing changes where there are no
    twistd options (the service was not made by twistd), where the
    application has an observer already, or where twistd's own choice is
    kept (see L{daemonLogObserver}).
    """
    config = service.twistdOptions
    if config is None or not isinstance(parent, Componentized):
        return
    if parent.getComponent(ILogObserver) is not None:
        return
    observer = daemonLogObserver(config)
    if observer is not None:
        parent.setComponent(ILogObserver, observer)


class TcpscService(ServerService):
    """
    The daemon's service: a L{ServerService} that logs what it serves, and
    turns a port that cannot be listened on into one line naming the cause
    and a non-zero exit status of twistd.

    With C{--udp} it also serves a L{DatagramServer} on its UDP addresses,
    in the same process: they listen after the TCP ports (a UDP address
    that cannot be bound stops the start as a TCP port does) and stop with
    them.  A daemon may serve UDP only: then it has no TCP port.

    @ivar server: the server.
    @ivar ports: the endpoint descriptions listened on.
    @ivar datagramServer: the UDP server, or C{None} without C{--udp}.
    @ivar udpAddresses: the C{(address, port)} pairs it listens on.
    """

    log = Logger()
    #: Where a start failure is also written when daemonized (see
    #: L{makeService}).
    terminal: _StartingTerminal | None = None
    #: Which worker of C{--workers N} this daemon is, or C{None}: a worker
    #: serves the sockets its parent bound, tells the parent (not systemd)
    #: once it listens, and stops when the parent is gone.
    worker: WorkerRole | None = None
    #: twistd's own options, when twistd made this service: see
    #: L{setServiceParent}.
    twistdOptions: Any = None

    def __init__(
        self,
        server: Server,
        ports: Sequence[Any],
        tls: TLSConfig | None,
        description: str,
        reactor: Any,
        metrics: tuple[str, Any] | None = None,
        datagramServer: DatagramServer | None = None,
        udpAddresses: Sequence[tuple[str, int]] = (),
    ) -> None:
        """
        @param metrics: the endpoint description to serve Prometheus
            metrics on at C{/metrics} (C{--metrics}), and the
            C{CollectorRegistry} that holds the server's collector.
        @param datagramServer: the server of C{--udp}.
        @param udpAddresses: where it listens: C{(address, port)}, address
            C{""} for every IPv4 address.
        @raise ValueError: neither a TCP port nor a UDP address.
        """
        if not ports and not (datagramServer is not None and udpAddresses):
            raise ValueError("the daemon needs a --port or a --udp address")
        # A ServerService needs a port: one that serves UDP only is given a
        # stand-in, and then none.
        super().__init__(server, list(ports) or [0], tls)
        self.ports = list(ports)
        self.datagramServer = datagramServer
        self.udpAddresses = list(udpAddresses)
        self._udpPorts: list[Any] = []
        self._udpWaiters: list[Deferred[list[Any]]] = []
        self.description = description
        self._reactor = reactor
        self.metrics = metrics
        self._metricsPort: Any = None
        self._startError: DaemonStartError | None = None
        self._hangup = HangupHandler(reactor, self._hangupReceived)

    def reloadCertificates(self) -> int:
        """
        What SIGHUP does: read C{--ca}, C{--cert} and C{--key} again and
        serve new handshakes with them, leaving established connections
        untouched (L{Server.reloadCertificates}).  A reload that fails keeps
        the certificates in use; the cause is logged, naming the file.  A
        daemon without C{--tls} logs that there is nothing to reload.

        @return: how many ports serve the files just read.
        """
        if self.tls is None:
            self.log.info("Nothing to reload: this daemon serves plain TCP (no --tls)")
            return 0
        self.log.info(
            "Reading the TLS certificates again: --ca {ca}, --cert {cert}, --key {key}",
            ca=self.tls.ca,
            cert=self.tls.cert,
            key=self.tls.key,
        )
        try:
            count = self.server.reloadCertificates()
        except StartError:
            # Logged by the server, with the file and the cause.
            return 0
        except Exception:
            self.log.failure("Certificate reload failed; the certificates in use are kept")
            return 0
        if count == 0:
            self.log.info("Nothing to reload: no TLS port is listening")
        return count

    def _handleHangup(self) -> None:
        """
        Make SIGHUP call L{reloadCertificates} instead of ending the
        process (see L{HangupHandler}).  Only the main thread can set signal
        handlers: elsewhere (a service run by other code) SIGHUP is left as
        it is.
        """
        if self._hangup.installed or not HangupHandler.available():
            return
        try:
            self._hangup.install()
        except ValueError:
            self.log.info("SIGHUP is not handled: the service does not run in the main thread")
            return
        if self.tls is not None:
            self.log.info("SIGHUP reads --ca, --cert and --key again (certificate rotation)")

    def _hangupReceived(self) -> None:
        self.log.info("Received SIGHUP")
        self.reloadCertificates()

    def setServiceParent(self, parent: Any) -> None:
        """
        Join C{parent}; when it is the application twistd made for this
        service, give it the daemon's log observer (see L{_setLogObserver}).
        """
        _setLogObserver(self, parent)
        super().setServiceParent(parent)

    def privilegedStartService(self) -> None:
        """
        Listen on every port, before twistd sheds privileges (so that ports
        below 1024 work with C{--uid}).

        @raise DaemonStartError: a port could not be listened on; the cause
            is logged as one line first.
        """
        try:
            super().privilegedStartService()
        except DaemonStartError as e:
            if self.terminal is not None:
                self.terminal.report(str(e))
            # twistd lets this end the process (after removing its pid file
            # and, when daemonizing, reporting it to the parent process):
            # keep the interpreter from adding a traceback to the log line.
            sys.excepthook = _quietExceptHook(sys.excepthook)
            raise
        finally:
            if self.terminal is not None:
                self.terminal.close()

    def startService(self) -> None:
        """
        Start; listen now if L{privilegedStartService} was not called, as
        C{twist} (unlike twistd) does not call it.

        @raise SystemExit: then, with status 1, if a port could not be
            listened on.  The cause is logged first as one critical line;
            C{twist} starts services before it begins logging, and until
            then Twisted prints critical events on standard error.
        """
        if self.worker is not None:
            self.worker.start(self._reactor)
        try:
            super().startService()
        except DaemonStartError:
            raise SystemExit(1) from None
        self._handleHangup()
        self.whenListening().addCallbacks(self._ready, lambda failure: None)

    def _ready(self, ports: list[Any]) -> None:
        """
        Every port listens: tell systemd (C{Type=notify}), if it asked.
        """
        addresses = ", ".join(describeAddress(port.getHost()) for port in ports)
        if self.worker is not None:
            self.worker.reportListening(addresses)
            return
        if notify(f"READY=1\nSTATUS=Listening on {addresses}"):
            self.log.info("Told systemd: ready")

    def _listen(self) -> None:
        self.log.info("Starting tcpsc: {description}", description=self.description)
        self._startError = None
        try:
            super()._listen()
        except Exception:
            error, self._startError = self._startError, None
            if error is None:
                raise
            raise error from None
        self._listenUDP()
        if self.metrics is not None:
            self._listenMetrics(*self.metrics)

    def _listenUDP(self) -> None:
        """
        Listen on every C{--udp} address, once the TCP ports listen.

        @raise DaemonStartError: an address cannot be bound (the cause is
            logged as one line first, as for a C{--port}); the ports
            already opened, TCP and UDP, are closed again.
        """
        server = self.datagramServer
        if server is None:
            return
        for host, port in self.udpAddresses:
            result: list[Any] = []
            try:
                server.listen(port, host).addBoth(result.append)
            except Exception:
                result.append(Failure())
            if not result:
                result.append(Failure(RuntimeError("the UDP port did not listen at once")))
            if isinstance(result[0], Failure):
                where = f"[{host}]:{port}" if ":" in host else f"{host or '0.0.0.0'}:{port}"
                error = result[0].value
                code = getattr(error, "code", None)
                message = f"--udp {where}: {result[0].getErrorMessage()}"
                if code is not None:
                    message += f" (code {code})"
                self.log.critical("tcpsc cannot start: {error}", error=message, code=code)
                self._udpPorts = []
                server.stop()
                self._listenStarted = False
                self._listening = None
                self.server.stop()
                raise DaemonStartError(message, code)
            self._udpPorts.append(result[0])
            self.log.info(
                "tcpsc UDP listening on {address}",
                address=describeAddress(result[0].getHost()),
            )
        waiters, self._udpWaiters = self._udpWaiters, []
        for waiter in waiters:
            waiter.callback(list(self._udpPorts))

    def whenListening(self) -> Deferred[list[Any]]:
        """
        Wait until every port listens, TCP and UDP.

        @return: fires with the listening ports (the TCP ones first), or
            fails as L{ServerService.whenListening}.
        """
        if not self.ports:
            if self._udpPorts:
                return succeed(list(self._udpPorts))
            waiter: Deferred[list[Any]] = Deferred()
            self._udpWaiters.append(waiter)
            return waiter
        return super().whenListening().addCallback(lambda ports: [*ports, *self._udpPorts])

    def _listenMetrics(self, description: str, registry: Any) -> None:
        """
        Serve C{registry} in Prometheus' text format at C{/metrics} on
        C{description} (prometheus-client's Twisted resource on a
        twisted.web site).

        @raise DaemonStartError: the endpoint cannot be listened on (the
            cause is logged as one line first), as for a C{--port}.
        """
        from prometheus_client.twisted import MetricsResource
        from twisted.internet.endpoints import serverFromString
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        root = Resource()
        root.putChild(b"metrics", MetricsResource(registry))
        site = Site(root)
        site.noisy = False
        result: list[Any] = []
        try:
            serverFromString(self._reactor, description).listen(site).addBoth(result.append)
        except Exception:
            result.append(Failure())
        if not result:
            # An endpoint that listens later (none of Twisted's own).
            raise DaemonStartError(
                f"--metrics {description}: the endpoint did not listen at once", None
            )
        if isinstance(result[0], Failure):
            message, code = _describeStartFailure(description, result[0])
            message = f"--metrics: {message}"
            self.log.critical("tcpsc cannot start: {error}", error=message, code=code)
            for port in self.server.ports:
                port.stopListening()
            raise DaemonStartError(message, code)
        self._metricsPort = result[0]
        self.log.info(
            "Serving Prometheus metrics at http://{address}/metrics",
            address=describeAddress(self._metricsPort.getHost()),
        )

    def logListenFailure(self, port: object, failure: Failure) -> None:
        message, code = _describeStartFailure(str(port), failure)
        self.log.critical("tcpsc cannot start: {error}", error=message, code=code)
        self._startError = DaemonStartError(message, code)

    def listenFailedLater(self, port: object, failure: Failure) -> None:
        # An endpoint that listens asynchronously failed later: all that is
        # left is to stop.
        if self._reactor.running:
            self._reactor.stop()

    def stopService(self) -> Deferred[None]:
        """
        Stop accepting, flush and close every connection.

        @return: fires once every port and connection is closed (twistd
            waits for it before exiting).
        """
        count = self.server.openConnections()
        udp = self.datagramServer
        peers = len(udp.clientIds()) if udp is not None else 0
        self.log.info(
            "Stopping tcpsc: closing {connections}{udp}",
            connections=plural(count, "connection"),
            count=count,
            udp=f", forgetting {plural(peers, 'UDP peer')}" if udp is not None else "",
            peers=peers,
        )
        notify("STOPPING=1\nSTATUS=Stopping: closing connections")

        def stopped(result: None) -> None:
            self.log.info("tcpsc stopped")

        metricsPort, self._metricsPort = self._metricsPort, None
        if metricsPort is not None:
            metricsPort.stopListening()

        def restore(result: object) -> object:
            # Only now: a SIGHUP while connections close is still a reload.
            self._hangup.restore()
            return result

        stopping: list[Deferred[Any]] = [super().stopService()]
        self._udpPorts = []
        if udp is not None:
            stopping.append(udp.stop())
        done: Deferred[Any] = gatherResults(stopping, consumeErrors=True)
        return done.addCallback(stopped).addBoth(restore)


def _describeUDP(options: Options, datagram: type[DatagramPeer]) -> str:
    """
    What C{--udp} serves, in words: C{"one message per datagram,
    datagrams up to 1472 bytes"}.
    """
    delimiter = options["delimiter"] or datagram.delimiter
    bound = options.get("max-length", datagram.maxMessageLength)
    if delimiter is None:
        framing = "one message per datagram"
    else:
        framing = f"messages delimited by {formatDelimiter(delimiter)}"
    return f"{framing}, datagrams up to {plural(bound, 'byte')}"


def _describe(options: Options, protocol: type[Any] | None, tls: TLSConfig | None) -> str:
    app = options["app"]
    datagram = options.get("datagram-protocol")
    udp = f"UDP ({_describeUDP(options, datagram)})" if datagram is not None else ""
    if protocol is None or not options["ports"]:
        return f"app {app} over {udp} only"
    if options["stream"]:
        mode = "continuous mode"
    else:
        delimiter = options["delimiter"] or protocol.delimiter
        maxLength = options.get("max-length", protocol.maxMessageLength)
        limit = "no length limit" if maxLength is None else f"messages up to {maxLength} bytes"
        mode = f"fragmented mode, delimiter {formatDelimiter(delimiter)}, {limit}"
    if tls is None:
        security = "plain TCP"
    elif tls.allowedClients is not None:
        security = "TLS 1.3, client certificate required, clients allowed: " + ", ".join(
            sorted(tls.allowedClients)
        )
    elif tls.requireClientCertificate:
        security = "TLS 1.3, client certificate required"
    else:
        security = "TLS 1.3, client certificate optional"
    extra = ""
    perPeer = options.get("max-connections-per-peer")
    if perPeer is not None:
        extra += f", at most {perPeer} per peer address"
    if app == "record":
        extra += f", recording into {os.path.abspath(options['record-run'])}"
    if app == "broadcast":
        mode += (
            f", {options['rate']:g} {'message' if options['rate'] == 1 else 'messages'}"
            f"/s of {plural(options['message-size'], 'byte')}"
        )
    cluster = options.get("cluster")
    if cluster is not None:
        extra += f", a node of the cluster at {parseClusterURL(cluster).describe()}"
    if udp:
        extra += f"; and over {udp}"
    return (
        f"app {app} ({mode}), {security}, at most "
        f"{plural(options['max-connections'], 'connection')}{extra}"
    )


def _settingsOf(options: Options) -> Settings:
    """
    The L{Settings} of the server that parsed L{Options} describe: what an
    option leaves out is the default of L{Settings} (or, for the framing,
    the C{--app} class's own).

    @raise ValueError: a combination L{Settings} refuses.
    """
    fields: dict[str, Any] = dict(
        maxConnections=options["max-connections"],
        maxConnectionsPerPeer=options["max-connections-per-peer"],
        memoryBudget=options["memory-budget"],
        handshakeTimeout=options["handshake-timeout"],
        firstByteTimeout=options["first-byte-timeout"],
        idleTimeout=options["idle-timeout"],
        closeTimeout=options["close-timeout"],
        logConnections=not options["quiet-connections"],
        logEveryEvent=options["log-every-event"],
        peerIdleTimeout=options["udp-peer-timeout"],
        maxPeers=options["udp-max-peers"],
    )
    if not options["stream"]:
        if options["delimiter"] is not None:
            fields["delimiter"] = options["delimiter"]
        if "max-length" in options:
            fields["maxMessageLength"] = options["max-length"]
    if "max-pending-output" in options:
        fields["maxPendingOutput"] = options["max-pending-output"]
    return Settings(**fields)


def makeService(options: Options, reactor: Any = None) -> TcpscService | TcpscSupervisor:
    """
    Build the daemon's service from parsed L{Options}.

    Certificates are loaded and checked here, before twistd starts anything,
    so that a missing or invalid file stops it at once.  The process's
    limit of open files is raised here too, toward C{--max-connections}
    plus L{FILE_MARGIN} (a warning is logged if the hard limit is lower).

    With C{--workers N} (N > 1) the service is a L{TcpscSupervisor}: this
    process binds the ports and runs N workers, each this daemon with the
    same options (see L{tcpsc._supervisor}).  A worker, which its parent
    marks with the environment variable C{TCPSC_WORKER}, builds the daemon's
    service on the sockets it inherited, numbering its connections apart
    from the other workers'.

    @param reactor: the reactor to serve on; the global one by default.
    @raise SystemExit: with one line naming the problem (and the original's
        code, 30-35, for certificates): twistd prints it and exits with
        status 1.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    # Room for --max-connections: the daemon is where the process starts.
    raiseOpenFileLimit(options["max-connections"] + FILE_MARGIN)
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
    try:
        settings = _settingsOf(options)
    except ValueError as e:
        raise SystemExit(f"tcpsc: {e}") from None
    try:
        worker = WorkerRole.fromEnvironment()
    except ValueError as e:
        raise SystemExit(f"tcpsc: {e}") from None
    if options.get("cluster") is not None:
        # Redis is asked at once, as the certificates are read: a cluster
        # that cannot be joined stops the daemon before it starts (the
        # parent of --workers included, rather than workers that fail and
        # are restarted for ever).
        try:
            probeCluster(options["cluster"])
        except ClusterError as e:
            raise SystemExit(f"tcpsc: {e.args[0]}") from None
    if worker is None and options.get("workers", 1) > 1:
        supervisor = _supervisor(options, reactor, _describe(options, protocol, tls), settings)
        supervisor.twistdOptions = getattr(options, "parent", None)
        return supervisor
    extra: dict[str, Any] = {}
    server: Server | None = None
    if options["app"] == "record":
        base = Path(options["record-dir"] or ".")
        try:
            directory = recordRunDirectory(base)
        except PermissionError:
            raise SystemExit(f"tcpsc: the --record-dir {str(base)!r} is not writable") from None
        except OSError as e:
            raise SystemExit(
                f"tcpsc: cannot create the --record-dir {str(base)!r}: {e.strerror or e}"
            ) from None
        options["record-run"] = str(directory)
        extra["createSink"] = recordSink(directory, lambda: server)  # type: ignore[arg-type,return-value]
    registry = None
    if options.get("metrics") is not None:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
    cluster = options.get("cluster")
    try:
        server = Server(
            protocol,
            stream=options["stream"],
            reactor=reactor,
            metrics=registry,
            settings=settings,
            cluster=cluster,
            **extra,
        )
    except (TypeError, ValueError) as e:
        raise SystemExit(f"tcpsc: {e}") from None
    datagramServer = None
    datagram = options.get("datagram-protocol")
    if datagram is not None:
        # -d and -m override the class's own framing, as they do over TCP:
        # a subclass with them, so that the class's values and the
        # server's defaults cannot be taken for one another.
        framing: dict[str, Any] = {"__module__": datagram.__module__}
        if options["delimiter"] is not None:
            framing["delimiter"] = options["delimiter"]
        if "max-length" in options:
            framing["maxMessageLength"] = options["max-length"]
        if len(framing) > 1:
            datagram = type(datagram.__name__, (datagram,), framing)
        try:
            datagramServer = DatagramServer(
                datagram,
                reactor=reactor,
                peerIdleTimeout=settings.peerIdleTimeout,
                maxPeers=settings.maxPeers,
            )
        except (TypeError, ValueError) as e:
            raise SystemExit(f"tcpsc: {e}") from None
    ports: list[Any] = list(options["ports"])
    description = _describe(options, protocol, tls)
    if worker is not None:
        ports = worker.endpoints(reactor, ports)
        description += f"; worker {worker.index} of {worker.count}"
        if not options.get("cluster"):
            # Ids apart from the other workers' (with a cluster, the cluster
            # gives them).
            server._numberIds(worker.firstId, worker.count)
    service = TcpscService(
        server,
        ports,
        tls,
        description,
        reactor,
        metrics=(options["metrics"], registry) if registry else None,
        datagramServer=datagramServer,
        udpAddresses=options["udp"],
    )
    if worker is None:
        service.terminal = _StartingTerminal()
    service.worker = worker
    service.twistdOptions = getattr(options, "parent", None)
    return service


#: The twist reactor names of the reactors a worker can be asked to use: the
#: parent's own, so that C{twistd -r poll tcpsc --workers 2} runs its workers
#: on poll too.
_REACTOR_NAMES = {
    "twisted.internet.epollreactor": "epoll",
    "twisted.internet.pollreactor": "poll",
    "twisted.internet.selectreactor": "select",
    "twisted.internet.asyncioreactor": "asyncio",
    "twisted.internet.kqreactor": "kqueue",
}


def _supervisor(
    options: Options, reactor: Any, description: str, settings: Settings
) -> TcpscSupervisor:
    """
    The service of a daemon with C{--workers N}: a parent that binds the
    ports and runs N workers, each this daemon with the same options.
    """
    command = [sys.executable, "-m", "twisted", "--log-format=json", "--log-file=-"]
    name = _REACTOR_NAMES.get(type(reactor).__module__)
    if name is not None:
        command.append(f"--reactor={name}")
    command += ["tcpsc", *getattr(options, "arguments", [])]
    service = TcpscSupervisor(
        options["workers"],
        options["ports"],
        command,
        reactor,
        description,
        # A worker stops within its close timeout; and it is a Python
        # process to start and end.
        stopTimeout=settings.closeTimeout + 10.0,
        backlog=BACKLOG,
    )
    service.terminal = _StartingTerminal()
    return service


class TcpscSupervisor(WorkerSupervisor):
    """
    The parent of C{--workers N} in the daemon: a port that cannot be
    bound stops twistd with one line naming the cause, and a non-zero exit
    status, as a daemon without workers does.
    """

    terminal: _StartingTerminal | None = None
    #: As L{TcpscService.twistdOptions}.
    twistdOptions: Any = None

    def setServiceParent(self, parent: Any) -> None:
        """
        As L{TcpscService.setServiceParent}.
        """
        _setLogObserver(self, parent)
        super().setServiceParent(parent)

    def bind(self) -> None:
        try:
            super().bind()
        except ListenError as e:
            message = f"{e} (code {e.code})"
            self.log.critical("tcpsc cannot start: {error}", error=message, code=e.code)
            if self.terminal is not None:
                self.terminal.report(message)
            sys.excepthook = _quietExceptHook(sys.excepthook)
            raise DaemonStartError(message, e.code) from None
        finally:
            if self.terminal is not None:
                self.terminal.close()

    def startService(self) -> None:
        try:
            super().startService()
        except DaemonStartError:
            # twist, which calls no privilegedStartService.
            raise SystemExit(1) from None
