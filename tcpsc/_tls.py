# -*- test-case-name: tests.test_tls -*-
"""
TLS configuration.

L{TLSConfig} turns three PEM files (CA, certificate, key) into Twisted
connection creators with tcpsc's policy: TLS 1.3 and nothing older, the
peer's chain verified against the configured CA, the client certificate
required by the server unless explicitly waived, and the server's host name
checked by the client (C{service_identity}).

Files are read and parsed with C{cryptography} before anything is handed to
OpenSSL, so that every problem is reported as a L{CertificateLoadError} naming
the file, the reason, and the C++ original's code for it (30-35).

The client side also solves the TLS 1.3 "late rejection" problem: the server
verifies the client certificate only I{after} the client's handshake is
complete, so C{handshakeCompleted} on the client does not mean "accepted".
A server that accepted the client sends its session tickets; one that rejected
it sends an alert instead.  L{acceptanceGate} holds the client's readiness
until the first ticket arrives (or a short grace period passes, for servers
that send no tickets).  The ticket is noticed inside OpenSSL's info callback;
readiness itself runs on the next reactor turn, outside OpenSSL.

Authorisation beyond the chain: a server's L{TLSConfig.allowedClients} names
the clients it serves, by certificate CN or DNS name; the server checks it
once the handshake is complete (see L{isAllowedClient}), before the
connection is established.  And a private key file that group or others may
read is reported when it is loaded, once per file and mode.

Failures are explained as far as the peer lets us: L{classifyTLSFailure}
names the host name a server certificate does not match and why a server
certificate was not trusted (L{diagnoseCertificate}); on the server side,
L{verificationFailure} keeps OpenSSL's reason for a rejected client
certificate, which the handshake's exception reduces to "certificate verify
failed".
"""

from __future__ import annotations

import os
import stat
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Union, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    PrivateCertificate,
    TLSVersion,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._errors import (
    AbortedLocally,
    CertificateLoadError,
    ClientCertificateRejected,
    ClosedLocally,
    ServerCertificateRejected,
    TLSHandshakeError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
    from twisted.internet.interfaces import IDelayedCall, IReactorTime
    from twisted.protocols.tls import TLSMemoryBIOProtocol

    from ._framing import _ConnectionBase

__all__ = [
    "SUBJECT_SHORT_NAMES",
    "PEMSource",
    "TLSConfig",
    "certificateDNSNames",
    "checkKeyPermissions",
    "checkValidity",
    "isAllowedClient",
    "peerCertificate",
    "subjectPart",
]

_log = Logger()

#: A PEM file's path, or the PEM data itself.
PEMSource = Union[str, "os.PathLike[str]", bytes]

#: The short names of the subject parts that certificates name most often,
#: as OpenSSL spells them, with their OIDs.
SUBJECT_SHORT_NAMES: dict[str, x509.ObjectIdentifier] = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "emailAddress": NameOID.EMAIL_ADDRESS,
}

#: How long a TLS client waits, after its handshake, for a sign that the
#: server accepted its certificate, when the server sends no session ticket.
DEFAULT_ACCEPTANCE_GRACE = 1.0


#: Key files already reported as readable by others, with their mode: each
#: is reported once per process, not once per port or connection attempt.
_exposedKeys: set[tuple[str, int]] = set()


def checkKeyPermissions(source: PEMSource, owner: str = "this server") -> bool:
    """
    Log a warning if the private key file C{source} may be read by its group
    or by others: anyone who can read it can impersonate C{owner}.  Each
    file is reported once per process (and again if its mode changes).  PEM
    bytes, and systems without POSIX permissions, are not checked.

    @return: whether the file is readable by group or others.
    """
    if isinstance(source, bytes) or os.name != "posix":
        return False
    path = os.fspath(source)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return False
    readers = [
        who for who, bit in (("group", stat.S_IRGRP), ("others", stat.S_IROTH)) if mode & bit
    ]
    if not readers:
        return False
    seen = (os.path.realpath(path), mode)
    if seen not in _exposedKeys:
        _exposedKeys.add(seen)
        _log.warn(
            "The private key file {path} is readable by {readers} (mode {mode}): whoever "
            "can read it can impersonate {owner}; restrict it with chmod 600",
            path=path,
            readers=" and ".join(readers),
            mode=f"{mode:04o}",
            owner=owner,
        )
    return True


def _read(source: PEMSource, what: str, code: int) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, "<PEM bytes>"
    path = os.fspath(source)
    try:
        with open(path, "rb") as f:
            return f.read(), path
    except OSError as e:
        raise CertificateLoadError(
            f"cannot read the {what} file {path!r}: {e.strerror or e}", code, path
        ) from e


def loadCertificates(
    source: PEMSource, what: str, readCode: int, parseCode: int
) -> list[x509.Certificate]:
    """
    Read PEM certificates (a CA bundle, or a certificate followed by its
    intermediates).

    @raise CertificateLoadError: with C{readCode} if unreadable, C{parseCode}
        if it holds no valid PEM certificate.
    """
    data, label = _read(source, what, readCode)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise CertificateLoadError(
            f"the {what} file {label!r} holds no valid PEM certificate: {e}",
            parseCode,
            label,
        ) from e
    return certificates


def loadPrivateKey(
    source: PEMSource, certificate: x509.Certificate | None = None
) -> PrivateKeyTypes:
    """
    Read an unencrypted PEM private key and check that it belongs to
    C{certificate}.

    @raise CertificateLoadError: 32 if unreadable, 35 if not a valid key or
        not the certificate's key.
    """
    data, label = _read(source, "private key", 32)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise CertificateLoadError(
            f"the private key file {label!r} holds no valid unencrypted PEM private key: {e}",
            35,
            label,
        ) from e
    if certificate is not None:
        raw = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        keyBytes = key.public_key().public_bytes(der, raw)
        if keyBytes != certificate.public_key().public_bytes(der, raw):
            raise CertificateLoadError(
                f"the private key {label!r} does not match the certificate "
                f"{certificate.subject.rfc4514_string()!r}",
                35,
                label,
            )
    return key


def checkValidity(
    chain: Sequence[x509.Certificate], source: PEMSource, now: datetime | None = None
) -> None:
    """
    Check that every certificate of C{chain}, read from C{source}, is valid
    now: a certificate that expired, or one issued for later, would fail
    every handshake.

    @raise CertificateLoadError: 34, naming the file and the certificate.
    """
    now = now or datetime.now(UTC)
    label = "<PEM bytes>" if isinstance(source, bytes) else os.fspath(source)
    for certificate in chain:
        subject = certificate.subject.rfc4514_string()
        if certificate.not_valid_after_utc < now:
            raise CertificateLoadError(
                f"the certificate file {label!r} holds a certificate that expired on "
                f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC ({subject!r})",
                34,
                label,
            )
        if certificate.not_valid_before_utc > now:
            raise CertificateLoadError(
                f"the certificate file {label!r} holds a certificate that is not valid "
                f"before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC "
                f"({subject!r})",
                34,
                label,
            )


def _twistedCertificate(certificate: x509.Certificate) -> Certificate:
    return Certificate(crypto.X509.from_cryptography(certificate))


@dataclass(frozen=True)
class TLSConfig:
    """
    TLS settings of a server or a client.  Paths or PEM bytes; nothing is
    read until a server listens or a client connects, and then every problem
    is a L{CertificateLoadError} with the original's code.

    @ivar ca: the CA certificate(s) the peer's certificate must be issued by.
        A server without one cannot require client certificates; a client
        without one verifies the server against the system's trust store.
    @ivar cert: this side's certificate, optionally followed by intermediate
        certificates.  Required on a server; optional on a client.
    @ivar key: the private key of C{cert}.
    @ivar requireClientCertificate: (server) refuse clients without a valid
        certificate issued by C{ca}.  True by default; turning it off while a
        C{ca} is given still verifies certificates that clients do present.
    @ivar verifyServer: (client) verify the server's certificate at all.
        Turning it off makes the connection open to impersonation; it exists
        for the original's "no CA given" mode.
    @ivar verifyHostname: (client) check that the server's certificate is
        issued for the host name connected to (or C{hostname}).
    @ivar hostname: (client) the name to check and to send as SNI, when it
        differs from the host connected to.
    @ivar allowedClients: (server) the clients served, by name: a client
        whose certificate (verified against C{ca}) has none of these names
        as its subject's CN or among its DNS subject alternative names is
        disconnected right after the handshake, logged with its CN, and
        never established.  Names are exact (DNS names compared without
        regard to case; no wildcards).  C{None}, the default: every client
        with a valid certificate.  Any collection of strings; kept as a
        C{frozenset}.  Needs client certificates required.
    """

    ca: PEMSource | None = None
    cert: PEMSource | None = None
    key: PEMSource | None = None
    requireClientCertificate: bool = True
    verifyServer: bool = True
    verifyHostname: bool = True
    hostname: str | None = None
    allowedClients: frozenset[str] | None = None

    def __post_init__(self) -> None:
        allowed = self.allowedClients
        if allowed is None:
            return
        if isinstance(allowed, (str, bytes)):
            raise TypeError(
                f"allowedClients must be a collection of names, not one string: "
                f"write frozenset({{{allowed!r}}})"
            )
        names = frozenset(allowed)
        for name in names:
            if not isinstance(name, str) or not name:
                raise TypeError(f"allowedClients holds {name!r}: names are non-empty strings")
        if not self.requireClientCertificate:
            raise ValueError(
                "allowedClients needs client certificates: it cannot be combined with "
                "requireClientCertificate=False"
            )
        object.__setattr__(self, "allowedClients", names)

    def _loadCA(self) -> list[x509.Certificate] | None:
        if self.ca is None:
            return None
        return loadCertificates(self.ca, "CA certificate", 30, 33)

    def _loadIdentity(
        self, owner: str, current: bool = False
    ) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
        assert self.cert is not None and self.key is not None
        chain = loadCertificates(self.cert, "certificate", 31, 34)
        if current:
            checkValidity(chain, self.cert)
        key = loadPrivateKey(self.key, chain[0])
        checkKeyPermissions(self.key, owner)
        return chain, key

    def serverOptions(self, current: bool = False) -> IOpenSSLServerConnectionCreator:
        """
        Build the server's TLS options: a connection creator for Twisted's
        TLS factories (C{TLSMemoryBIOFactory}, C{wrapServerTLS}), which also
        gives the OpenSSL context (C{getContext}) to the APIs that take a
        context factory (C{listenSSL}).

        @param current: also refuse a certificate in C{cert} that expired or
            is not valid yet.
        @raise CertificateLoadError: a file is missing, unreadable, invalid,
            or client certificates are required but no CA is given; with
            C{current}, 34 for a certificate that is not valid now.
        """
        return self._serverCreator(current)

    def _serverCreator(self, current: bool = False) -> _ServerCreator:
        """
        L{serverOptions}, as tcpsc's own creator: the server swaps its
        context on a certificate reload (see
        L{tcpsc.Server.reloadCertificates}), which passes C{current} so that
        working certificates are never replaced with ones that would fail
        every handshake.
        """
        if self.cert is None:
            raise CertificateLoadError("a TLS server needs a certificate (cert=)", 31, "")
        if self.key is None:
            raise CertificateLoadError("a TLS server needs a private key (key=)", 32, "")
        ca = self._loadCA()
        chain, key = self._loadIdentity("this server", current)
        if ca is None and self.requireClientCertificate:
            raise CertificateLoadError(
                "requireClientCertificate is set but no CA is given to verify "
                "client certificates against: give ca= or set "
                "requireClientCertificate=False",
                30,
                "",
            )
        options: dict[str, object] = {
            # pyOpenSSL raises TypeError for the kinds of keys it does not take.
            "privateKey": crypto.PKey.from_cryptography_key(key),  # type: ignore[arg-type]
            "certificate": crypto.X509.from_cryptography(chain[0]),
            "raiseMinimumTo": TLSVersion.TLSv1_3,
        }
        if chain[1:]:
            options["extraCertChain"] = [crypto.X509.from_cryptography(c) for c in chain[1:]]
        if ca is not None:
            if self.requireClientCertificate:
                options["trustRoot"] = trustRootFromCertificates(
                    [_twistedCertificate(c) for c in ca]
                )
            else:
                options["verify"] = True
                options["requireCertificate"] = False
                options["caCerts"] = [crypto.X509.from_cryptography(c) for c in ca]
        serverOptions = CertificateOptions(**options)  # type: ignore[arg-type]
        if ca is not None:
            # OpenSSL reports a rejected client certificate only as
            # "certificate verify failed"; record the verification error
            # itself (expired, unknown issuer, ...) for verificationFailure().
            context = serverOptions.getContext()
            context.set_verify(context.get_verify_mode(), _recordVerifyResult)
        return _ServerCreator(serverOptions, chain[0])

    def clientCreator(self, host: str, current: bool = False) -> IOpenSSLClientConnectionCreator:
        """
        Build the client's connection creator for connecting to C{host}.

        @param current: also refuse a client certificate that expired or is
            not valid yet (a client reading rotated files again checks
            this before it lets them replace the ones it used).
        @raise CertificateLoadError: a file is missing, unreadable or invalid,
            or only one of C{cert} and C{key} is given; with C{current}, 34
            for a certificate that is not valid now.
        """
        ca = self._loadCA()
        if (self.cert is None) != (self.key is None):
            missing = "key" if self.key is None else "cert"
            raise CertificateLoadError(
                f"a client certificate needs both cert= and key=; {missing}= is missing",
                32 if missing == "key" else 31,
                "",
            )
        extra: dict[str, object] = {"raiseMinimumTo": TLSVersion.TLSv1_3}
        clientCertificate = None
        if self.cert is not None:
            chain, key = self._loadIdentity("this client", current)
            clientCertificate = PrivateCertificate.fromCertificateAndKeyPair(
                _twistedCertificate(chain[0]),
                # As in serverOptions: pyOpenSSL checks the kind of key.
                KeyPair(crypto.PKey.from_cryptography_key(key)),  # type: ignore[arg-type]
            )
            if chain[1:]:
                extra["extraCertChain"] = [crypto.X509.from_cryptography(c) for c in chain[1:]]
        options: dict[str, object] = dict(extra)
        if clientCertificate is not None:
            options["privateKey"] = clientCertificate.privateKey.original
            options["certificate"] = clientCertificate.original
        if self.verifyServer:
            options["trustRoot"] = (
                trustRootFromCertificates([_twistedCertificate(c) for c in ca])
                if ca is not None
                else platformTrust()
            )
        # Twisted's own client options (optionsForClientTLS) check the host
        # name too, but not in a way that fails closed: a certificate without
        # any subjectAltName is logged and accepted.  The check is tcpsc's own
        # (see _ClientCreator), on plain CertificateOptions.
        return _ClientCreator(
            CertificateOptions(**options),  # type: ignore[arg-type]
            ca or (),
            serverName=self.hostname or host,
            checkIdentity=self.verifyServer and self.verifyHostname,
        )


#: X.509 verification errors (OpenSSL's X509_V_ERR_* numbers, stable across
#: versions) and OpenSSL's own wording of them.
_VERIFY_ERRORS = {
    2: "unable to get issuer certificate",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    22: "certificate chain too long",
    23: "certificate revoked",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
    27: "certificate not trusted",
    28: "certificate rejected",
}

#: Why the client certificate of a server connection failed verification,
#: by the connection's TLS protocol (Twisted makes it the connection's
#: C{get_app_data()}).
_verifyFailures: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()


def _recordVerifyResult(
    connection: SSL.Connection, certificate: crypto.X509, errno: int, depth: int, ok: int
) -> bool:
    # Runs inside OpenSSL: it must never raise, and it must not change the
    # verdict, only remember why a certificate failed.
    if not ok:
        try:
            owner = connection.get_app_data()
            if owner is not None and owner not in _verifyFailures:
                what = _VERIFY_ERRORS.get(errno, f"X.509 verification error {errno}")
                subject = certificate.to_cryptography().subject.rfc4514_string()
                _verifyFailures[owner] = f"{what} (certificate {subject!r}, depth {depth})"
        except Exception:  # pragma: no cover - defensive
            pass
    return bool(ok)


def verificationFailure(transport: object) -> str | None:
    """
    Why a TLS server rejected the client's certificate on C{transport} (the
    L{TLSMemoryBIOProtocol} of a server connection), in OpenSSL's words:
    C{"certificate has expired"}, C{"unable to get local issuer
    certificate"}, ...; or C{None} if it did not reject one.  Meant for the
    log line of a failed handshake, whose exception says only
    C{"certificate verify failed"}.
    """
    try:
        return _verifyFailures.get(transport)
    except TypeError:
        return None


#: Why tcpsc's identity check refused the server certificate of a client
#: connection, by the connection's TLS protocol.
_identityFailures: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()


def identityFailure(transport: object) -> str | None:
    """
    Why the server's certificate on the client connection C{transport} was
    refused for its identity (the host name or address it is issued for), in
    words that name the way out; C{None} if it was not.
    """
    try:
        return _identityFailures.get(transport)
    except TypeError:
        return None


def diagnoseCertificate(
    certificate: x509.Certificate,
    authorities: Sequence[x509.Certificate],
    now: datetime | None = None,
) -> str | None:
    """
    Explain, in plain words, why C{certificate} fails verification against
    C{authorities}: expired, not yet valid, or not issued by any of them.

    @return: the explanation, or C{None} if none of these applies.
    """
    now = now or datetime.now(UTC)
    subject = certificate.subject.rfc4514_string()
    if certificate.not_valid_after_utc < now:
        return (
            f"the certificate {subject!r} expired on "
            f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    if certificate.not_valid_before_utc > now:
        return (
            f"the certificate {subject!r} is not valid before "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC"
        )
    if authorities:
        for authority in authorities:
            try:
                certificate.verify_directly_issued_by(authority)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return None
        return (
            f"the certificate {subject!r} is issued by "
            f"{certificate.issuer.rfc4514_string()!r}, not by the configured CA"
        )
    return None


class _Acceptance:
    """
    What a TLS client learnt about the server's verdict on its certificate.
    """

    certificateRequested = False
    accepted = False

    def __init__(self) -> None:
        self.waiters: list[Callable[[], None]] = []

    def accept(self) -> None:
        if self.accepted:
            return
        self.accepted = True
        waiters, self.waiters = self.waiters, []
        for proceed in waiters:
            proceed()


_acceptances: weakref.WeakKeyDictionary[TLSMemoryBIOProtocol, _Acceptance] = (
    weakref.WeakKeyDictionary()
)


@implementer(IOpenSSLServerConnectionCreator)
class _ServerCreator:
    """
    The connection creator of a tcpsc TLS server: Twisted's
    L{CertificateOptions}, with each connection's TLS protocol as its app
    data, which explains a rejected client certificate (see
    L{verificationFailure}).

    Its options can be replaced while it serves (L{replaceWith}): each
    connection keeps the OpenSSL context it was made with, the next ones
    get the new context.  A context is never changed once made, as
    pyOpenSSL refuses to change a context that has served a connection.

    @ivar certificate: the certificate served (the first of C{cert}), for
        log lines.
    """

    def __init__(
        self, options: CertificateOptions, certificate: x509.Certificate | None = None
    ) -> None:
        self._options = options
        self.certificate = certificate

    def getContext(self) -> SSL.Context:
        return self._options.getContext()

    def replaceWith(self, other: _ServerCreator) -> None:
        """
        Serve the connections made from now on with the options, and so the
        certificates, of C{other}; connections already made are untouched.
        """
        self._options = other._options
        self.certificate = other.certificate

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = SSL.Connection(self._options.getContext(), None)
        connection.set_app_data(tlsProtocol)
        return connection


def _identityRefusal(certificate: x509.Certificate, name: str) -> str | None:
    """
    Why the server certificate C{certificate} is not valid for C{name} (a
    host name or an IP address), in words; C{None} if it is.

    The check is service_identity's, on the subjectAltName only: like
    Python's C{ssl}, Go and browsers, the subject's CN is never used as a
    fallback.  Any error of the check itself is a refusal.
    """
    isAddress = isIPAddress(name) or isIPv6Address(name)
    kind = "IP address" if isAddress else "host name"
    try:
        if isAddress:
            verify_certificate_ip_address(certificate, name)
        else:
            verify_certificate_hostname(certificate, name)
    except VerificationError:
        valid = _certificateDNSNamesAndAddresses(certificate)
        return (
            f"the server's certificate is not valid for the {kind} {name!r}; it is issued "
            f"for {', '.join(valid) if valid else 'no host name or address'}"
        )
    except CertificateError:
        commonName = subjectPart(certificate, NameOID.COMMON_NAME)
        issued = f" (its subject is CN={commonName})" if commonName else ""
        if _subjectAltName(certificate) is not None:
            what = "no DNS name or IP address among its subjectAltNames"
        else:
            what = "no subjectAltName"
        return (
            f"the server's certificate has {what}{issued}, so the {kind} {name!r} cannot be "
            f"verified; make certificates with `tcpsc certs`, or turn host name checks off "
            f"(verifyHostname=False)"
        )
    except Exception as e:
        return f"the server's certificate could not be checked against the {kind} {name!r}: {e}"
    return None


def _subjectAltName(certificate: x509.Certificate) -> x509.SubjectAlternativeName | None:
    """
    The subjectAltName extension of C{certificate}, or C{None} without one.
    """
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _infoCallback(connection: SSL.Connection, where: int, ret: int) -> None:
    # Runs inside OpenSSL: it must never raise, and nothing here may call
    # back into the connection (the waiters only schedule work).
    try:
        acceptance = _acceptances.get(connection.get_app_data())
        if acceptance is None:
            return
        state = connection.get_state_string() or b""
        if b"certificate request" in state:
            acceptance.certificateRequested = True
        elif b"session ticket" in state:
            acceptance.accept()
    except Exception:  # pragma: no cover - defensive
        pass


@implementer(IOpenSSLClientConnectionCreator)
class _ClientCreator:
    """
    The connection creator of a tcpsc TLS client: Twisted's
    L{CertificateOptions} (TLS 1.3 floor, the chain verified against the
    trust root), plus what tcpsc adds per connection:

      - the server's identity, checked by tcpsc itself with
        service_identity as soon as OpenSSL verified the chain, in the verify
        callback, so that a refusal fails the handshake before the
        connection is ready or anything is sent: a mismatch, a certificate
        without subjectAltName and any error of the check all refuse
        (L{_identityRefusal}); the reason is kept for
        L{verificationFailure};
      - the server name sent as SNI (for a host name, not an address);
      - whether the server asked for a certificate and then sent session
        tickets (L{acceptanceGate}), seen by an info callback on the context
        this creator owns: no callback Twisted installs is replaced.

    @ivar authorities: the CA certificates the server is verified against
        (empty: the platform's trust store, or no verification), to explain
        a rejected server certificate.
    """

    def __init__(
        self,
        options: CertificateOptions,
        authorities: Sequence[x509.Certificate] = (),
        *,
        serverName: str,
        checkIdentity: bool,
    ) -> None:
        self._options = options
        self.authorities = tuple(authorities)
        self.serverName = serverName
        self._checkIdentity = checkIdentity
        self._sni = (
            None
            if isIPAddress(serverName) or isIPv6Address(serverName)
            else serverName.encode("idna")
        )
        context = options.getContext()
        context.set_info_callback(_infoCallback)
        self._verifyMode = context.get_verify_mode()

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = SSL.Connection(self._options.getContext(), None)
        connection.set_app_data(tlsProtocol)
        _acceptances[tlsProtocol] = _Acceptance()
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        if self._checkIdentity:
            connection.set_verify(self._verifyMode, self._verify)
        return connection

    def _verify(
        self, connection: SSL.Connection, certificate: crypto.X509, errno: int, depth: int, ok: int
    ) -> bool:
        # Runs inside OpenSSL: it must never raise; anything unexpected
        # refuses the certificate.
        try:
            if not ok:
                return _recordVerifyResult(connection, certificate, errno, depth, ok)
            if depth != 0:
                return True
            refusal = _identityRefusal(certificate.to_cryptography(), self.serverName)
        except BaseException as e:
            refusal = f"the server's certificate could not be checked: {e!r}"
        if refusal is None:
            return True
        try:
            owner = connection.get_app_data()
            if owner is not None:
                _identityFailures[owner] = refusal
        except Exception:  # pragma: no cover - defensive
            pass
        return False


class _AcceptanceGate:
    """
    A readiness gate for one TLS client connection (see
    C{_ConnectionBase._readinessGate}); made by L{acceptanceGate}.
    """

    def __init__(self, clock: IReactorTime, grace: float) -> None:
        self._clock = clock
        self._grace = grace
        self._timer: IDelayedCall | None = None
        self._proceeding: IDelayedCall | None = None
        self._stopped = False

    def __call__(self, protocol: _ConnectionBase, proceed: Callable[[], None]) -> None:
        # A gate is set on TLS client connections only.
        acceptance = _acceptances.get(cast("TLSMemoryBIOProtocol", protocol.transport))
        if acceptance is None or not acceptance.certificateRequested or acceptance.accepted:
            proceed()
            return
        if self._stopped:
            return
        clock, grace = self._clock, self._grace

        def graceOver() -> None:
            self._timer = None
            _log.debug(
                "No session ticket from the server within {grace} s of the "
                "handshake; taking the client certificate as accepted",
                grace=grace,
            )
            acceptance.accept()

        def accepted() -> None:
            self._cancelTimer()
            if self._stopped:
                return
            # Usually called from OpenSSL's info callback, in the middle of
            # reading from the connection: readiness (and whatever the
            # application does then, such as writing or closing) must run
            # after OpenSSL returned, never inside it.
            self._proceeding = clock.callLater(0, self._proceed, proceed)

        self._timer = clock.callLater(grace, graceOver)
        acceptance.waiters.append(accepted)

    def _proceed(self, proceed: Callable[[], None]) -> None:
        self._proceeding = None
        if not self._stopped:
            proceed()

    def _cancelTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def stop(self) -> None:
        """
        Stop waiting (the connection ended or the attempt was given up): no
        timer is left behind and the connection never becomes ready through
        this gate.
        """
        self._stopped = True
        self._cancelTimer()
        proceeding, self._proceeding = self._proceeding, None
        if proceeding is not None and proceeding.active():
            proceeding.cancel()


def acceptanceGate(clock: IReactorTime, grace: float = DEFAULT_ACCEPTANCE_GRACE) -> _AcceptanceGate:
    """
    Make a readiness gate for one TLS client protocol (see
    C{_ConnectionBase._readinessGate}).

    The gate lets the connection become ready at once if the server did not
    ask for a client certificate; otherwise when the server's first session
    ticket arrives (it sends them only after accepting the certificate), or
    after C{grace} seconds for servers that send none.  A rejection arrives
    as an alert instead and ends the connection before it is ready; the owner
    then calls the gate's C{stop()} so that no timer outlives the connection.
    """
    return _AcceptanceGate(clock, grace)


def _certificateDNSNamesAndAddresses(certificate: x509.Certificate) -> list[str]:
    """
    The DNS names, then the IP addresses, among the subject alternative
    names of C{certificate}: what a server's certificate may be verified
    for.
    """
    names = certificateDNSNames(certificate)
    san = _subjectAltName(certificate)
    if san is not None:
        names += [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    return names


def classifyTLSFailure(
    reason: Failure,
    *,
    certificate: x509.Certificate | None = None,
    authorities: Sequence[x509.Certificate] = (),
    identity: str | None = None,
) -> TLSHandshakeError:
    """
    Turn the reason a TLS client connection ended before it was ready into
    the most specific L{TLSHandshakeError}.

    @param certificate: the certificate the server presented, if known: it
        makes the message of a rejected server certificate say why.
    @param authorities: the CA certificates the server was verified against.
    @param identity: why tcpsc's identity check refused the server's
        certificate (see L{identityFailure}), if it did.
    """
    value = reason.value
    if identity is not None:
        return ServerCertificateRejected(identity, value)
    text = str(value)
    lowered = text.lower()
    if "certificate verify failed" in lowered:
        message = f"the server's certificate was rejected: {_sslReason(value)}"
        why = diagnoseCertificate(certificate, authorities) if certificate is not None else None
        if why:
            message += f" ({why})"
        return ServerCertificateRejected(message, value)
    if "alert" in lowered and any(
        word in lowered
        for word in (
            "certificate required",
            "unknown ca",
            "bad certificate",
            "certificate expired",
            "certificate unknown",
            "unsupported certificate",
            "certificate revoked",
            "decrypt error",
            "access denied",
        )
    ):
        return ClientCertificateRejected(
            f"the server rejected this client's certificate: {_sslReason(value)}", value
        )
    if any(words in lowered for words in _NOT_TLS_REASONS):
        # The server answered the ClientHello with bytes that are not TLS.
        return TLSHandshakeError(
            f"the server does not speak TLS (a plain port?): {_sslReason(value)}", value
        )
    return TLSHandshakeError(f"the TLS handshake failed: {_sslReason(value)}", value)


#: OpenSSL's reasons for a first answer that is not a TLS record.
_NOT_TLS_REASONS = ("wrong version number", "packet length too long", "unknown protocol")


#: OpenSSL's reasons for a failed handshake, in words, by the side that
#: reports them ("client": this side is the client; "server": the server).
_TLS_REASONS = {
    "peer did not return a certificate": "the client sent no certificate",
    "unsupported protocol": "the peer speaks TLS 1.2 or older; TLS 1.3 is required",
    "wrong version number": "the peer does not speak TLS (or not TLS 1.3)",
    "http request": "the peer sent an HTTP request to a TLS port",
    "no shared cipher": "the peer offers no cipher suite this side accepts",
    "tlsv13 alert certificate required": "the server requires a client certificate",
    "tlsv1 alert unknown ca": "the peer does not trust the CA of this side's certificate",
    "tlsv1 alert protocol version": "the peer requires another TLS version",
}

#: X.509 verification errors that mean "not issued by the CA".
_UNKNOWN_ISSUER = (
    "unable to get local issuer certificate",
    "unable to get issuer certificate",
    "self-signed certificate",
    "unable to verify the first certificate",
    "certificate signature failure",
)


def describeTLSFailure(value: BaseException, verification: str | None = None) -> str:
    """
    Why a TLS connection failed, in words a person reads, rather than
    OpenSSL's list of tuples: C{"the client sent no certificate"}, C{"the
    client's certificate is not issued by the CA (...)"}, C{"the peer
    speaks TLS 1.2 or older; ..."}; OpenSSL's own reason strings when no
    better words are known.

    @param verification: on a server, why the client's certificate failed
        verification (L{verificationFailure}).
    """
    reason = _sslReason(value)
    lowered = reason.lower()
    if verification is not None and "certificate verify failed" in lowered:
        if verification.startswith(_UNKNOWN_ISSUER):
            return f"the client's certificate is not issued by the CA ({verification})"
        return f"the client's certificate was rejected: {verification}"
    for words, meaning in _TLS_REASONS.items():
        if words in lowered:
            # OpenSSL's words too, for searching and for reports.
            return f"{meaning} ({reason})"
    return reason


def describeClose(reason: Failure, tls: bool, verification: str | None = None) -> str:
    """
    Why a connection ended, in words, for logs and C{onClosed}: this side's
    own reason (L{ClosedLocally}, L{AbortedLocally}), a TLS failure
    (L{describeTLSFailure}), or what the peer did.
    """
    value = reason.value
    if isinstance(value, (ClosedLocally, AbortedLocally)):
        return str(value)
    if isinstance(value, SSL.Error):
        return describeTLSFailure(value, verification)
    if isinstance(value, ConnectionDone):
        return "the peer closed the connection"
    if isinstance(value, ConnectionLost):
        if tls:
            return "the peer closed the connection without close_notify"
        return "the connection was lost (reset by the peer)"
    return reason.getErrorMessage()


def _sslReason(value: BaseException) -> str:
    """
    The readable part of an L{SSL.Error}: its reason strings.
    """
    if isinstance(value, SSL.Error) and value.args and isinstance(value.args[0], list):
        reasons = [entry[-1] for entry in value.args[0] if isinstance(entry, tuple)]
        if reasons:
            return "; ".join(str(r) for r in reasons)
    return str(value) or value.__class__.__name__


def certificateDNSNames(certificate: x509.Certificate | None) -> list[str]:
    """
    The DNS names among the subject alternative names of C{certificate}, in
    their order; empty without a certificate or that extension.
    """
    san = _subjectAltName(certificate) if certificate is not None else None
    if san is None:
        return []
    return [str(name) for name in san.get_values_for_type(x509.DNSName)]


def isAllowedClient(certificate: x509.Certificate | None, allowed: frozenset[str]) -> bool:
    """
    Whether a client presenting C{certificate} is on the allow-list
    C{allowed}: its subject's CN is one of the names, or one of its DNS
    subject alternative names is (without regard to case).  No certificate
    is never allowed.
    """
    if certificate is None:
        return False
    commonName = subjectPart(certificate, NameOID.COMMON_NAME)
    if commonName is not None and commonName in allowed:
        return True
    names = certificateDNSNames(certificate)
    if not names:
        return False
    folded = {name.lower() for name in allowed}
    return any(name.lower() in folded for name in names)


def peerCertificate(transport: object) -> x509.Certificate | None:
    """
    The certificate the peer presented on C{transport}, or C{None} (plain
    TCP, no certificate, or handshake not complete).
    """
    getPeerCertificate = getattr(transport, "getPeerCertificate", None)
    if getPeerCertificate is None:
        return None
    try:
        certificate = getPeerCertificate()
    except Exception:
        return None
    if certificate is None:
        return None
    return certificate.to_cryptography()


def nameOID(part: x509.ObjectIdentifier | str) -> x509.ObjectIdentifier:
    """
    Resolve a subject part given as a L{NameOID} or a short name (C, ST, L,
    O, OU, CN, emailAddress).

    @raise ValueError: unknown short name.
    """
    if isinstance(part, x509.ObjectIdentifier):
        return part
    try:
        return SUBJECT_SHORT_NAMES[part]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown subject part {part!r}: use a cryptography NameOID or one of "
            + ", ".join(SUBJECT_SHORT_NAMES)
        ) from None


def subjectPart(
    certificate: x509.Certificate | None, part: x509.ObjectIdentifier | str
) -> str | None:
    """
    The first value of C{part} in the subject of C{certificate}, or C{None}
    if there is no certificate or the subject has no such part.
    """
    oid = nameOID(part)
    if certificate is None:
        return None
    attributes = certificate.subject.get_attributes_for_oid(oid)
    if not attributes:
        return None
    value = attributes[0].value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
