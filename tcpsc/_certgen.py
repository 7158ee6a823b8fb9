# -*- test-case-name: tests.test_certgen -*-
"""
Generation of X.509 certificates and keys for tcpsc.

TLS with mutual authentication needs a small PKI: a certificate authority,
a server certificate that names the hosts it is reached under, and one
certificate per client.  The test-suite needs such a set (and broken
variants of it: expired, not yet valid, self-signed, wrongly flagged) for
every run, and users need one to try tcpsc out without learning the
C{openssl} command line first; C{tcpsc certs DIR} writes one.  This module
builds all of them in-process with the C{cryptography} library, so neither
depends on an C{openssl} binary being installed.

The certificates are meant for tests and private deployments: elliptic curve
keys (P-256) by default, RSA on request, SHA-256 signatures, random serial
numbers, and the extensions that OpenSSL checks in strict mode.

Private keys are written unencrypted (PKCS #8 PEM), with file mode C{0600}
from the moment the file is created.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ._tls import SUBJECT_SHORT_NAMES

__all__ = [
    "DEFAULT_SUBJECT",
    "Issued",
    "KeyType",
    "PrivateKey",
    "generateKey",
    "issueCertificate",
    "makeCA",
    "makeSelfSigned",
    "parseSubject",
    "writeCertificateSet",
]

KeyType = Literal["ec", "rsa"]
"""
The kind of key to generate: C{"ec"} for an elliptic curve key on NIST P-256,
C{"rsa"} for an RSA key of a given size.
"""

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""
The private keys this module generates.
"""

DEFAULT_SUBJECT = "O=tcpsc"
"""
The subject fields L{writeCertificateSet} uses when it is given none.
"""

_SUBJECT_KEYS = SUBJECT_SHORT_NAMES

_SUBJECT_KEYS_FOLDED: dict[str, x509.ObjectIdentifier] = {
    key.lower(): oid for key, oid in _SUBJECT_KEYS.items()
}

_CLOCK_SKEW = timedelta(minutes=5)
"""
How far before "now" a certificate's validity starts by default, so that a
peer whose clock is slightly behind still accepts it.
"""


def _splitUnescaped(text: str, separator: str) -> list[str]:
    """
    Split C{text} at every C{separator} that is not preceded by a backslash.
    Escapes are kept, to be resolved by L{_unescape}.

    @param text: the text to split
    @param separator: a single character
    @return: the pieces, at least one
    """
    pieces: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == separator:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


def _unescape(text: str) -> str:
    """
    Resolve backslash escapes: C{\\X} becomes C{X} for any character C{X}.

    @param text: text produced by L{_splitUnescaped}
    @return: the text without escapes
    @raise ValueError: if C{text} ends in a lone backslash
    """
    result: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            result.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            result.append(char)
    if escaped:
        raise ValueError(f"subject ends in a lone backslash: {text!r}")
    return "".join(result)


def _subjectAttributes(text: str) -> list[x509.NameAttribute]:
    """
    Parse a subject string into its attributes, in the order given.

    @param text: see L{parseSubject}
    @return: the attributes
    @raise ValueError: see L{parseSubject}
    """
    attributes: list[x509.NameAttribute] = []
    if not text.strip():
        return attributes
    for field in _splitUnescaped(text, ","):
        if not field.strip():
            raise ValueError(f"empty field in subject {text!r}")
        keyAndValue = _splitUnescaped(field, "=")
        if len(keyAndValue) < 2:
            raise ValueError(f"subject field {field.strip()!r} has no '='")
        rawKey = _unescape(keyAndValue[0]).strip()
        value = _unescape("=".join(keyAndValue[1:])).strip()
        oid = _SUBJECT_KEYS.get(rawKey, _SUBJECT_KEYS_FOLDED.get(rawKey.lower()))
        if oid is None:
            known = ", ".join(_SUBJECT_KEYS)
            raise ValueError(f"unknown subject key {rawKey!r} (known keys: {known})")
        if not value:
            raise ValueError(f"subject key {rawKey!r} has an empty value")
        # NameAttribute itself raises ValueError for, e.g., a country name
        # that is not two letters.
        attributes.append(x509.NameAttribute(oid, value))
    return attributes


def parseSubject(text: str) -> x509.Name:
    """
    Parse a subject in the comma-separated form used by the tcpsc
    configuration, e.g. C{"C=DE,ST=my state,L=my city,O=test,OU=server,
    CN=localhost"}.

    The known keys are C{C}, C{ST}, C{L}, C{O}, C{OU}, C{CN} and
    C{emailAddress} (matched without regard to case).  Whitespace around keys
    and values is ignored; a backslash makes the next character literal, so
    C{"O=Smith\\, Jones"} is one organisation.  Fields keep the order given,
    and a key may repeat.  An empty or blank string gives an empty name.

    @param text: the subject
    @return: the subject as an X.509 name
    @raise ValueError: if a field has no C{=}, an unknown key (the message
        names it) or an empty value, or if a value is not valid for its key
        (a country name must have two letters)
    """
    return x509.Name(_subjectAttributes(text))


def _toName(name: x509.Name | str) -> x509.Name:
    """
    Accept a name either parsed or as a subject string.

    @param name: an X.509 name, or a string for L{parseSubject}
    @return: the X.509 name
    @raise ValueError: if C{name} is a string L{parseSubject} rejects
    """
    if isinstance(name, x509.Name):
        return name
    return parseSubject(name)


def generateKey(keyType: KeyType = "ec", rsaBits: int = 3072) -> PrivateKey:
    """
    Generate a new private key.

    @param keyType: C{"ec"} for NIST P-256, C{"rsa"} for RSA
    @param rsaBits: the size of an RSA key in bits; ignored for C{"ec"}
    @return: the new key
    @raise ValueError: if C{keyType} is neither C{"ec"} nor C{"rsa"}, or
        C{rsaBits} is a size the C{cryptography} library refuses
    """
    if keyType == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if keyType == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsaBits)
    raise ValueError(f"unknown key type {keyType!r}; use 'ec' or 'rsa'")


def _builder(
    subject: x509.Name, issuer: x509.Name, key: PrivateKey, start: datetime, end: datetime
) -> x509.CertificateBuilder:
    """
    A certificate of C{key} for C{subject}, issued by C{issuer}, valid from
    C{start} to C{end}, with a random serial number; its extensions are the
    caller's to add.
    """
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _validity(
    days: int,
    notBefore: datetime | None,
    notAfter: datetime | None,
) -> tuple[datetime, datetime]:
    """
    Work out the validity period of a certificate.

    @param days: the length of the period, if C{notAfter} is not given
    @param notBefore: the start; by default a few minutes before now, so that
        clocks that lag a little still accept the certificate.  A naive
        datetime is taken to be UTC.
    @param notAfter: the end; by default C{days} days after C{notBefore}.
        A naive datetime is taken to be UTC.
    @return: start and end, both timezone-aware
    @raise ValueError: if the end is not after the start
    """
    if notBefore is None:
        notBefore = datetime.now(UTC) - _CLOCK_SKEW
    elif notBefore.tzinfo is None:
        notBefore = notBefore.replace(tzinfo=UTC)
    if notAfter is None:
        notAfter = notBefore + timedelta(days=days)
    elif notAfter.tzinfo is None:
        notAfter = notAfter.replace(tzinfo=UTC)
    if notAfter <= notBefore:
        raise ValueError(
            f"certificate would end ({notAfter.isoformat()}) "
            f"before it starts ({notBefore.isoformat()})"
        )
    return notBefore, notAfter


def _generalName(host: str) -> x509.GeneralName:
    """
    Turn a host into a subject alternative name.

    @param host: an IPv4 or IPv6 address, or a DNS name (ASCII; use the
        C{xn--} form for internationalised names)
    @return: an L{x509.IPAddress} for an address, else an L{x509.DNSName}
    @raise ValueError: if C{host} is empty or not ASCII
    """
    host = host.strip()
    if not host:
        raise ValueError("empty host name")
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host.isascii():
        raise ValueError(f"host name {host!r} is not ASCII; give its IDNA (xn--) form")
    return x509.DNSName(host)


def _dedupe(hosts: Iterable[str]) -> list[str]:
    """
    Drop repeated entries, keeping the first of each.

    @param hosts: host names and addresses
    @return: the hosts in their first order, each once
    """
    seen: dict[str, None] = {}
    for host in hosts:
        seen.setdefault(host, None)
    return list(seen)


def _keyUsage(
    *,
    digitalSignature: bool = False,
    keyEncipherment: bool = False,
    keyCertSign: bool = False,
    cRLSign: bool = False,
) -> x509.KeyUsage:
    """
    Build a key usage extension with the named bits set and all others clear.

    @param digitalSignature: set C{digitalSignature}
    @param keyEncipherment: set C{keyEncipherment}
    @param keyCertSign: set C{keyCertSign}
    @param cRLSign: set C{cRLSign}
    @return: the extension value
    """
    return x509.KeyUsage(
        digital_signature=digitalSignature,
        content_commitment=False,
        key_encipherment=keyEncipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=keyCertSign,
        crl_sign=cRLSign,
        encipher_only=False,
        decipher_only=False,
    )


def _leafExtensions(
    builder: x509.CertificateBuilder,
    key: PrivateKey,
    *,
    server: bool,
    client: bool,
    hosts: Sequence[str],
    isCA: bool,
    subjectIsEmpty: bool,
) -> x509.CertificateBuilder:
    """
    Add the extensions of an end-entity certificate (or, with C{isCA}, of a
    certificate issued with the CA flag set).

    @param builder: the certificate under construction
    @param key: the certificate's private key
    @param server: include C{serverAuth} in the extended key usage
    @param client: include C{clientAuth} in the extended key usage
    @param hosts: host names and addresses for the subject alternative name
    @param isCA: set the CA flag in the basic constraints, and allow the key
        to sign certificates and CRLs
    @param subjectIsEmpty: the subject is empty, which makes the subject
        alternative name critical (RFC 5280, 4.2.1.6)
    @return: the builder with the extensions
    @raise ValueError: if a host is empty or not ASCII
    """
    builder = builder.add_extension(x509.BasicConstraints(ca=isCA, path_length=None), critical=True)
    builder = builder.add_extension(
        _keyUsage(
            digitalSignature=True,
            keyEncipherment=isinstance(key, rsa.RSAPrivateKey),
            keyCertSign=isCA,
            cRLSign=isCA,
        ),
        critical=True,
    )
    usages: list[x509.ObjectIdentifier] = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    names = [_generalName(host) for host in _dedupe(hosts)]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=subjectIsEmpty)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
        critical=False,
    )
    return builder


def _writeFile(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    """
    Write C{data} to a file that has mode C{mode} from the moment it exists.

    @param path: the file
    @param data: its new content
    @param mode: its permission bits
    @param overwrite: replace the content of an existing file (whose mode is
        then set to C{mode} before anything is written); if false, an
        existing file is an error
    @raise FileExistsError: if the file exists and C{overwrite} is false
    @raise OSError: if the file cannot be written
    """
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0)
    flags |= os.O_TRUNC if overwrite else os.O_EXCL
    fd = os.open(path, flags, mode)
    try:
        # The umask may have taken bits away at creation, and an existing
        # file keeps its old mode; either way, set exactly what was asked for
        # before the content goes in.
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        else:  # pragma: no cover - Windows before Python 3.13
            os.chmod(path, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Issued:
    """
    A certificate together with its private key.

    @ivar certificate: the certificate
    @ivar key: the private key belonging to the certificate's public key
    """

    certificate: x509.Certificate
    key: PrivateKey

    def certificatePEM(self) -> bytes:
        """
        @return: the certificate, PEM encoded
        """
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def keyPEM(self) -> bytes:
        """
        @return: the private key, unencrypted PKCS #8 in PEM encoding
        """
        return self.key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )

    def writeTo(
        self,
        certPath: str | os.PathLike[str],
        keyPath: str | os.PathLike[str],
        *,
        overwrite: bool = False,
    ) -> None:
        """
        Write the certificate and the key as PEM files.

        The key file is created with mode C{0600}, so that it is never
        readable by others, not even briefly; the certificate gets C{0644}.
        The key is written first.

        @param certPath: where to write the certificate
        @param keyPath: where to write the private key
        @param overwrite: replace existing files (their modes are reset to
            C{0644} and C{0600}); if false, an existing file is an error
        @raise FileExistsError: if C{overwrite} is false and a file exists;
            if only the certificate file exists, the key file has been
            written by then
        @raise OSError: if a file cannot be written
        """
        _writeFile(Path(keyPath), self.keyPEM(), 0o600, overwrite)
        _writeFile(Path(certPath), self.certificatePEM(), 0o644, overwrite)


def makeCA(
    name: x509.Name | str,
    *,
    keyType: KeyType = "ec",
    rsaBits: int = 3072,
    days: int = 365,
    notBefore: datetime | None = None,
    pathLength: int | None = 0,
) -> Issued:
    """
    Make a self-signed certificate authority.

    The certificate has the CA flag set (critical basic constraints), key
    usage C{keyCertSign}, C{cRLSign} and C{digitalSignature} (critical), and
    a subject key identifier, which certificates issued by it refer to.

    @param name: the CA's subject (and issuer), as a name or a string for
        L{parseSubject}
    @param keyType: the kind of key, see L{generateKey}
    @param rsaBits: the size of an RSA key
    @param days: how long the CA is valid
    @param notBefore: when the validity starts; by default a few minutes ago
    @param pathLength: how many intermediate CAs may follow this one in a
        chain.  The default, C{0}, allows none: every certificate issued
        with C{isCA=True} by L{issueCertificate} is then not accepted as an
        issuer.  C{None} sets no limit.
    @return: the CA certificate and its key
    @raise ValueError: if C{name} is an invalid subject string, C{keyType} is
        unknown, or C{days} is not positive
    """
    subject = _toName(name)
    key = generateKey(keyType, rsaBits)
    start, end = _validity(days, notBefore, None)
    builder = (
        _builder(subject, subject, key, start, end)
        .add_extension(
            x509.BasicConstraints(ca=True, path_length=pathLength),
            critical=True,
        )
        .add_extension(
            _keyUsage(digitalSignature=True, keyCertSign=True, cRLSign=True),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
    )
    return Issued(builder.sign(key, hashes.SHA256()), key)


def _authorityKeyIdentifier(ca: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """
    Build the authority key identifier for certificates issued by C{ca}.

    @param ca: the issuing certificate
    @return: an identifier that matches the CA's subject key identifier, or,
        if it has none, one computed from its public key
    @raise TypeError: if the CA has no subject key identifier and a key
        that is neither EC nor RSA
    """
    try:
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        publicKey = ca.public_key()
        if not isinstance(publicKey, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise TypeError(f"unsupported CA key type {type(publicKey).__name__}") from None
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(publicKey)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def issueCertificate(
    ca: Issued,
    name: x509.Name | str,
    *,
    server: bool = False,
    client: bool = False,
    hosts: Sequence[str] = (),
    keyType: KeyType = "ec",
    rsaBits: int = 3072,
    days: int = 365,
    notBefore: datetime | None = None,
    notAfter: datetime | None = None,
    isCA: bool = False,
) -> Issued:
    """
    Issue a certificate, with a new key, signed by C{ca}.

    The certificate has critical basic constraints (CA flag as C{isCA} says),
    a critical key usage (C{digitalSignature}; also C{keyEncipherment} for an
    RSA key; also C{keyCertSign} and C{cRLSign} with C{isCA}), an extended
    key usage if C{server} or C{client} is set, a subject alternative name
    if C{hosts} is not empty, a subject key identifier and an authority key
    identifier referring to C{ca}.  The serial number is random; the
    signature uses SHA-256.

    To make a certificate that has expired, pass e.g. C{notBefore} ten days
    ago and C{notAfter} one day ago; one that is not yet valid, C{notBefore}
    in the future.

    @param ca: the issuer, e.g. from L{makeCA}
    @param name: the subject, as a name or a string for L{parseSubject}
    @param server: allow the certificate for TLS servers (C{serverAuth})
    @param client: allow the certificate for TLS clients (C{clientAuth})
    @param hosts: host names and IP addresses the certificate is valid for;
        each entry that parses as an IPv4 or IPv6 address becomes an IP
        address entry, every other a DNS name.  Repeats are dropped.
    @param keyType: the kind of key, see L{generateKey}
    @param rsaBits: the size of an RSA key
    @param days: how long the certificate is valid, if C{notAfter} is not
        given
    @param notBefore: when the validity starts; by default a few minutes
        ago.  A naive datetime is taken to be UTC.
    @param notAfter: when the validity ends; by default C{days} days after
        C{notBefore}.  A naive datetime is taken to be UTC.
    @param isCA: set the CA flag, so that the certificate may itself sign
        certificates (subject to the path length limit of C{ca})
    @return: the certificate and its key
    @raise ValueError: if C{name} is an invalid subject string, C{keyType} is
        unknown, the validity period ends before it starts, or a host is
        empty or not ASCII
    """
    subject = _toName(name)
    start, end = _validity(days, notBefore, notAfter)
    key = generateKey(keyType, rsaBits)
    builder = _leafExtensions(
        _builder(subject, ca.certificate.subject, key, start, end),
        key,
        server=server,
        client=client,
        hosts=hosts,
        isCA=isCA,
        subjectIsEmpty=len(subject) == 0,
    )
    builder = builder.add_extension(_authorityKeyIdentifier(ca.certificate), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def makeSelfSigned(
    name: x509.Name | str,
    *,
    hosts: Sequence[str] = (),
    keyType: KeyType = "ec",
    rsaBits: int = 3072,
    days: int = 365,
) -> Issued:
    """
    Make a self-signed end-entity certificate: not a CA, allowed for both
    server and client use.  Peers that check certificates against a CA
    reject it, which is what negative tests need.

    @param name: the subject (and issuer), as a name or a string for
        L{parseSubject}
    @param hosts: host names and IP addresses for the subject alternative
        name, as for L{issueCertificate}
    @param keyType: the kind of key, see L{generateKey}
    @param rsaBits: the size of an RSA key
    @param days: how long the certificate is valid
    @return: the certificate and its key
    @raise ValueError: if C{name} is an invalid subject string, C{keyType} is
        unknown, C{days} is not positive, or a host is empty or not ASCII
    """
    subject = _toName(name)
    start, end = _validity(days, None, None)
    key = generateKey(keyType, rsaBits)
    builder = _leafExtensions(
        _builder(subject, subject, key, start, end),
        key,
        server=True,
        client=True,
        hosts=hosts,
        isCA=False,
        subjectIsEmpty=len(subject) == 0,
    )
    return Issued(builder.sign(key, hashes.SHA256()), key)


def _roleName(
    base: Sequence[x509.NameAttribute], organizationalUnit: str, commonName: str
) -> x509.Name:
    """
    Make the subject of one certificate of a set.

    @param base: the fields shared by the set; any C{OU} and C{CN} among them
        are dropped
    @param organizationalUnit: the C{OU} of this certificate
    @param commonName: the C{CN} of this certificate
    @return: C{base}, then C{OU}, then C{CN}
    """
    replaced = {NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME}
    attributes = [a for a in base if a.oid not in replaced]
    attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organizationalUnit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, commonName))
    return x509.Name(attributes)


def _checkClientNames(clients: Sequence[str]) -> None:
    """
    Check that client names can be used as file names in a set.

    @param clients: the names
    @raise ValueError: if a name is empty, repeated, C{"ca"} or C{"server"},
        starts with a dot, or contains a path separator
    """
    seen: set[str] = set()
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    for client in clients:
        if not client or client.startswith("."):
            raise ValueError(f"invalid client name {client!r}")
        if any(sep in client for sep in separators):
            raise ValueError(f"client name {client!r} contains a path separator")
        if client in ("ca", "server"):
            raise ValueError(f"client name {client!r} is reserved")
        if client in seen:
            raise ValueError(f"client name {client!r} is given twice")
        seen.add(client)


def writeCertificateSet(
    directory: str | os.PathLike[str],
    *,
    hosts: Sequence[str] = (),
    clients: Sequence[str] = ("client",),
    subject: str | None = None,
    keyType: KeyType = "ec",
    rsaBits: int = 3072,
    days: int = 365,
    force: bool = False,
) -> dict[str, Path]:
    """
    Write a CA, a server certificate and client certificates, with their
    keys, into C{directory}, ready for tcpsc with mutual authentication.

    The files are C{ca.pem} and C{ca.key}, C{server.pem} and C{server.key},
    and C{NAME.pem} and C{NAME.key} for every client C{NAME}.  Keys have mode
    C{0600}, certificates C{0644}.  The directory (and its parents) is
    created if missing.

    The server certificate is for C{serverAuth} and names C{localhost},
    C{127.0.0.1} and C{::1} and then C{hosts}; client certificates are for
    C{clientAuth} and name no hosts.  All are signed by the CA and valid for
    C{days} days.

    Subjects: the fields of C{subject} (default L{DEFAULT_SUBJECT}) are
    shared by all certificates, except that any C{OU} and C{CN} in it are
    replaced, per certificate, by C{OU=CA, CN=tcpsc CA} for the CA,
    C{OU=server, CN=localhost} for the server, and C{OU=NAME, CN=NAME} for
    client C{NAME}.

    @param directory: where to write the files
    @param hosts: further host names and IP addresses of the server
    @param clients: the names of the clients to make certificates for
    @param subject: the shared subject fields, as for L{parseSubject}
    @param keyType: the kind of keys, see L{generateKey}
    @param rsaBits: the size of RSA keys
    @param days: how long the certificates are valid
    @param force: replace existing files
    @return: the paths written, keyed by file name without the directory:
        C{"ca.pem"}, C{"ca.key"}, C{"server.pem"}, C{"server.key"},
        C{"NAME.pem"} and C{"NAME.key"} for each client
    @raise FileExistsError: if C{force} is false and one of the files exists
        already (the message names it); nothing has been written then
    @raise ValueError: if C{subject} is invalid, a client name is empty,
        repeated, reserved (C{ca}, C{server}) or not a plain file name, or
        another argument is invalid; nothing has been written then
    @raise OSError: if the directory or a file cannot be written
    """
    _checkClientNames(clients)
    base = _subjectAttributes(DEFAULT_SUBJECT if subject is None else subject)
    roles = ["ca", "server", *clients]
    directoryPath = Path(directory)
    paths: dict[str, Path] = {}
    for role in roles:
        for suffix in (".pem", ".key"):
            paths[role + suffix] = directoryPath / (role + suffix)
    if not force:
        for path in paths.values():
            if os.path.lexists(path):
                raise FileExistsError(f"{path} exists already; not overwriting it without force")

    # Everything that can fail for bad arguments happens before the first
    # file is touched.
    ca = makeCA(
        _roleName(base, "CA", "tcpsc CA"),
        keyType=keyType,
        rsaBits=rsaBits,
        days=days,
    )
    issued: dict[str, Issued] = {"ca": ca}
    issued["server"] = issueCertificate(
        ca,
        _roleName(base, "server", "localhost"),
        server=True,
        hosts=_dedupe(["localhost", "127.0.0.1", "::1", *hosts]),
        keyType=keyType,
        rsaBits=rsaBits,
        days=days,
    )
    for client in clients:
        issued[client] = issueCertificate(
            ca,
            _roleName(base, client, client),
            client=True,
            keyType=keyType,
            rsaBits=rsaBits,
            days=days,
        )

    directoryPath.mkdir(parents=True, exist_ok=True)
    for role in roles:
        issued[role].writeTo(paths[role + ".pem"], paths[role + ".key"], overwrite=force)
    return paths
