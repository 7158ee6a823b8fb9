"""
Prometheus metrics of a L{tcpsc.Server}, for C{Server(metrics=registry)} and
the daemon's C{--metrics}.

Nothing is counted per message in Python: each connection counts what a read
delivered and what a write carried (plain int attributes, see
L{tcpsc._framing}), the server adds them up when a connection ends and keeps
its own counts of refusals, drops and closes (most of them the exact counts
of its log summary, L{tcpsc.Server.eventCounts}).  A collector reads them
when Prometheus scrapes.

Label values are the fixed names of this module, never anything a peer sent.

prometheus-client is optional (C{pip install "tcpsc[metrics]"}): this module
imports it only when a collector is made.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.python.failure import Failure

from ._errors import AbortedLocally, ClosedLocally

if TYPE_CHECKING:
    from ._server import Server

__all__ = [
    "CLOSE_REASONS",
    "DROP_REASONS",
    "HANDSHAKE_BUCKETS",
    "HANDSHAKE_FAILURE_REASONS",
    "INSTALL_HINT",
    "REFUSAL_REASONS",
    "ServerCollector",
    "closeReason",
    "handshakeFailureReason",
]

#: The line that installs what metrics need.
INSTALL_HINT = 'pip install "tcpsc[metrics]"'

#: Upper bounds, in seconds, of the buckets of C{tcpsc_tls_handshake_seconds}.
HANDSHAKE_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: C{tcpsc_connections_refused_total{reason}}, by the kind of event the
#: server counts (L{tcpsc.Server.eventCounts}).
REFUSAL_REASONS: dict[str, str] = {
    "maxConnections": "connection_limit",
    "maxConnectionsPerPeer": "per_peer_limit",
    "allowedClients": "allow_list",
    "tlsClientOnPlainPort": "tls_client_on_plain_port",
    "proxyHeader": "proxy_header",
}

#: C{tcpsc_messages_dropped_total{reason}}.
DROP_REASONS: tuple[str, ...] = ("too_long", "broadcast_skip", "output_bound", "memory_budget")

#: C{tcpsc_tls_handshake_failures_total{reason}}.
HANDSHAKE_FAILURE_REASONS: tuple[str, ...] = (
    "timeout",
    "certificate_rejected",
    "tls_error",
    "peer_closed",
)

#: C{tcpsc_close_reasons_total{reason}}: this side's reasons, by how their
#: words begin (see L{tcpsc.ClosedLocally}), then what the peer did.
_LOCAL_REASONS: tuple[tuple[str, str], ...] = (
    ("idle timeout", "idle_timeout"),
    ("nothing received within", "first_byte_timeout"),
    ("handshake timeout", "handshake_timeout"),
    ("server stopping", "server_stopping"),
    ("disconnect() called", "disconnect"),
    ("a TLS client connected to a plain port", "tls_client_on_plain_port"),
    ("the client's certificate is not on the allow-list", "allow_list"),
    ("it missed", "broadcast_skips"),
    ("the createSink callback failed", "application_error"),
    ("an exception while delivering", "application_error"),
)

CLOSE_REASONS: tuple[str, ...] = (
    *dict.fromkeys(label for _, label in _LOCAL_REASONS),
    "closed_locally",
    "close_timeout",
    "peer_closed",
    "connection_lost",
    "tls_error",
    "other",
)


def closeReason(reason: Failure) -> str:
    """
    The label of why a connection ended: one of L{CLOSE_REASONS}.

    A close this side started is named by its cause (C{"idle_timeout"},
    C{"server_stopping"}, ...); one of its own (C{closeConnection} with
    other words) is C{"closed_locally"}, or C{"close_timeout"} when its
    bound ran out.
    """
    value = reason.value
    if isinstance(value, (ClosedLocally, AbortedLocally)):
        words = str(value)
        for start, label in _LOCAL_REASONS:
            if words.startswith(start):
                return label
        return "closed_locally" if isinstance(value, ClosedLocally) else "close_timeout"
    if isinstance(value, SSL.Error):
        return "tls_error"
    if isinstance(value, ConnectionDone):
        return "peer_closed"
    if isinstance(value, ConnectionLost):
        return "connection_lost"
    return "other"


def handshakeFailureReason(reason: Failure, verification: str | None) -> str:
    """
    The label of why a TLS handshake failed: one of
    L{HANDSHAKE_FAILURE_REASONS}.

    @param verification: why the client's certificate was rejected, if it
        was (L{tcpsc._tls.verificationFailure}).
    """
    if verification is not None:
        return "certificate_rejected"
    value = reason.value
    if isinstance(value, AbortedLocally) and str(value).startswith("handshake timeout"):
        return "timeout"
    if isinstance(value, SSL.Error):
        return "tls_error"
    return "peer_closed"


class ServerCollector:
    """
    A Prometheus collector (C{registry.register(collector)}) of one
    L{tcpsc.Server}: made by C{Server(metrics=registry)}.

    Read from whatever thread serves the scrape (prometheus-client's own
    HTTP server and its Twisted resource use other threads than the
    reactor's): it only reads ints and copies dicts, and a counter it
    reports never goes down, even while a connection's counts move into
    its server's totals.
    """

    def __init__(self, server: Server) -> None:
        # Fails here, not at the first scrape, without prometheus-client.
        try:
            from prometheus_client.core import CounterMetricFamily  # noqa: F401
        except ImportError as e:
            raise ImportError(
                f"tcpsc metrics need prometheus-client, which is not installed: {INSTALL_HINT}"
            ) from e

        self._server = server
        self._last: dict[str, float] = {}

    def _monotonic(self, name: str, value: float) -> float:
        last = self._last.get(name, 0)
        if value < last:
            return last
        self._last[name] = value
        return value

    def describe(self) -> list[Any]:
        """
        The metrics this collector reports, for the registry's check of
        duplicate names (without reading the server).
        """
        return list(self._families(_Zero()))

    def collect(self) -> Iterator[Any]:
        """
        The metrics of the server as they are now.
        """
        return iter(list(self._families(self._server)))

    def _families(self, server: Any) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        # The totals of the connections gone first, then the open ones: a
        # connection ending in between is missed by this scrape at worst.
        totals = list(server._closedTotals)
        events = dict(server._events.counts)
        closes = dict(server._closeReasons)
        failures = dict(server._handshakeFailures)
        buckets = list(server._handshakeBuckets)
        handshakeSum = server._handshakeSum
        registry = server._registry
        broadcaster = registry.broadcaster
        broadcast = broadcaster.messages, broadcaster.bytesWritten
        connectionsTotal = registry.registered
        protocols = list(registry.connections().values())
        for p in protocols:
            totals[0] += p._bytesIn
            totals[1] += p._bytesOut
            totals[2] += p._messagesIn
            totals[3] += p._messagesOut
            totals[4] += p._outputDropped
        totals[3] += broadcast[0]
        totals[1] += broadcast[1]
        count = self._monotonic

        yield GaugeMetricFamily(
            "tcpsc_connections_open",
            "Connections open now (established or in their TLS handshake).",
            value=len(protocols),
        )
        yield CounterMetricFamily(
            "tcpsc_connections_total",
            "Connections accepted (not refused by a limit) since the server started.",
            value=count("connections", connectionsTotal),
        )
        refused = CounterMetricFamily(
            "tcpsc_connections_refused",
            "Connections refused or closed at once, by reason.",
            labels=["reason"],
        )
        for kind, label in REFUSAL_REASONS.items():
            refused.add_metric([label], count("refused:" + label, events.get(kind, 0)))
        yield refused
        for name, index, text in (
            ("tcpsc_messages_received", 2, "Messages received and delivered."),
            ("tcpsc_messages_sent", 3, "Messages written to connections."),
            (
                "tcpsc_bytes_received",
                0,
                "Bytes received by the connections' protocols (after TLS), delimiters included.",
            ),
            (
                "tcpsc_bytes_sent",
                1,
                "Bytes written by the connections' protocols (before TLS), delimiters included.",
            ),
        ):
            yield CounterMetricFamily(name, text, value=count(name, totals[index]))
        handshakeFailures = CounterMetricFamily(
            "tcpsc_tls_handshake_failures",
            "TLS handshakes that failed, by reason.",
            labels=["reason"],
        )
        for label in HANDSHAKE_FAILURE_REASONS:
            handshakeFailures.add_metric(
                [label], count("handshake:" + label, failures.get(label, 0))
            )
        yield handshakeFailures
        cumulative = 0
        histogram = []
        for bound, inBucket in zip((*HANDSHAKE_BUCKETS, float("inf")), buckets, strict=True):
            cumulative += inBucket
            histogram.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "tcpsc_tls_handshake_seconds",
            "Seconds from a TLS connection accepted to its handshake completed.",
            buckets=histogram,
            sum_value=handshakeSum,
        )
        dropped = CounterMetricFamily(
            "tcpsc_messages_dropped",
            "Messages dropped, by reason: longer than maxMessageLength, a broadcast a "
            "congested connection missed, a send refused by the output bound, a partial "
            "message dropped for the memory budget.",
            labels=["reason"],
        )
        for label, value in (
            ("too_long", events.get("messageTooLong", 0)),
            ("broadcast_skip", server.broadcastSkips),
            ("output_bound", totals[4]),
            ("memory_budget", events.get("memoryBudget", 0)),
        ):
            dropped.add_metric([label], count("dropped:" + label, value))
        yield dropped
        closeReasons = CounterMetricFamily(
            "tcpsc_close_reasons", "Connections ended, by why.", labels=["reason"]
        )
        for label in CLOSE_REASONS:
            closeReasons.add_metric([label], count("close:" + label, closes.get(label, 0)))
        yield closeReasons


class _Zero:
    """
    A server with nothing counted, for L{ServerCollector.describe}.
    """

    _closedTotals = (0, 0, 0, 0, 0)
    _closeReasons: dict[str, int] = {}
    _handshakeFailures: dict[str, int] = {}
    _handshakeBuckets = (0,) * (len(HANDSHAKE_BUCKETS) + 1)
    _handshakeSum = 0.0
    broadcastSkips = 0

    class _registry:
        registered = 0

        class broadcaster:
            messages = bytesWritten = 0

        @staticmethod
        def connections() -> dict[int, Any]:
            return {}

    class _events:
        counts: dict[str, int] = {}
