"""
Tests for L{tcpsc._certgen}.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.trial.unittest import SynchronousTestCase

from tcpsc._certgen import (
    Issued,
    issueCertificate,
    makeCA,
    makeSelfSigned,
    parseSubject,
    writeCertificateSet,
)

OPENSSL = shutil.which("openssl")


def _mode(path: Path) -> int:
    """
    @param path: a file
    @return: its permission bits
    """
    return stat.S_IMODE(path.stat().st_mode)


def _sans(certificate: x509.Certificate) -> list[object]:
    """
    @param certificate: a certificate with a subject alternative name
    @return: its DNS names and IP addresses, in order
    """
    extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return [name.value for name in extension.value]


def _ekus(certificate: x509.Certificate) -> list[x509.ObjectIdentifier]:
    """
    @param certificate: a certificate with an extended key usage
    @return: its usages
    """
    extension = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    return list(extension.value)


def _value(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str | bytes]:
    """
    @param name: an X.509 name
    @param oid: an attribute type
    @return: the values of all attributes of that type in C{name}
    """
    return [attribute.value for attribute in name.get_attributes_for_oid(oid)]


class ParseSubjectTests(SynchronousTestCase):
    """
    Tests for L{parseSubject}.
    """

    def test_allFields(self) -> None:
        """
        All known keys are parsed, in the order given, with whitespace around
        keys and values dropped and inner whitespace kept.
        """
        name = parseSubject(
            "C=DE,ST=my state, L = my city,O=test,OU=server,CN=localhost,emailAddress=a@example.com"
        )
        self.assertEqual(
            [(a.oid, a.value) for a in name],
            [
                (NameOID.COUNTRY_NAME, "DE"),
                (NameOID.STATE_OR_PROVINCE_NAME, "my state"),
                (NameOID.LOCALITY_NAME, "my city"),
                (NameOID.ORGANIZATION_NAME, "test"),
                (NameOID.ORGANIZATIONAL_UNIT_NAME, "server"),
                (NameOID.COMMON_NAME, "localhost"),
                (NameOID.EMAIL_ADDRESS, "a@example.com"),
            ],
        )

    def test_keysIgnoreCase(self) -> None:
        """
        Keys are matched without regard to case.
        """
        self.assertEqual(
            parseSubject("cn=x,EMAILADDRESS=a@b"),
            parseSubject("CN=x,emailAddress=a@b"),
        )

    def test_escapes(self) -> None:
        """
        A backslash makes a comma or an equals sign part of the value.
        """
        name = parseSubject(r"O=Smith\, Jones,CN=a\=b")
        self.assertEqual(_value(name, NameOID.ORGANIZATION_NAME), ["Smith, Jones"])
        self.assertEqual(_value(name, NameOID.COMMON_NAME), ["a=b"])

    def test_equalsInValue(self) -> None:
        """
        Only the first C{=} of a field separates key and value.
        """
        name = parseSubject("CN=a=b")
        self.assertEqual(_value(name, NameOID.COMMON_NAME), ["a=b"])

    def test_empty(self) -> None:
        """
        An empty or blank string is the empty name.
        """
        self.assertEqual(parseSubject(""), x509.Name([]))
        self.assertEqual(parseSubject("  "), x509.Name([]))

    def test_unknownKey(self) -> None:
        """
        An unknown key is a L{ValueError} whose message names it.
        """
        error = self.assertRaises(ValueError, parseSubject, "CN=x,XY=1")
        self.assertIn("'XY'", str(error))

    def test_noEquals(self) -> None:
        """
        A field without C{=} is a L{ValueError}.
        """
        error = self.assertRaises(ValueError, parseSubject, "CN=x,oops")
        self.assertIn("oops", str(error))

    def test_emptyValue(self) -> None:
        """
        A key with an empty value is a L{ValueError}.
        """
        error = self.assertRaises(ValueError, parseSubject, "O=test,CN=")
        self.assertIn("'CN'", str(error))

    def test_emptyField(self) -> None:
        """
        An empty field (two commas in a row) is a L{ValueError}.
        """
        self.assertRaises(ValueError, parseSubject, "O=test,,CN=x")

    def test_badCountry(self) -> None:
        """
        A country name that is not two letters is a L{ValueError}.
        """
        self.assertRaises(ValueError, parseSubject, "C=Germany")

    def test_trailingBackslash(self) -> None:
        """
        A lone backslash at the end is a L{ValueError}.
        """
        self.assertRaises(ValueError, parseSubject, "CN=x\\")


class MakeCATests(SynchronousTestCase):
    """
    Tests for L{makeCA}.
    """

    def test_extensions(self) -> None:
        """
        The CA is self-signed, flagged as a CA, may sign certificates and
        CRLs, and has a subject key identifier.
        """
        ca = makeCA("O=test,CN=test CA")
        certificate = ca.certificate
        certificate.verify_directly_issued_by(certificate)
        self.assertEqual(certificate.subject, parseSubject("O=test,CN=test CA"))
        self.assertEqual(certificate.issuer, certificate.subject)

        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertTrue(constraints.critical)
        self.assertTrue(constraints.value.ca)
        self.assertEqual(constraints.value.path_length, 0)

        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
        self.assertTrue(usage.critical)
        self.assertTrue(usage.value.key_cert_sign)
        self.assertTrue(usage.value.crl_sign)
        self.assertTrue(usage.value.digital_signature)
        self.assertFalse(usage.value.key_encipherment)

        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        self.assertEqual(
            ski.value,
            x509.SubjectKeyIdentifier.from_public_key(ca.key.public_key()),
        )

    def test_ecDefault(self) -> None:
        """
        By default the key is on P-256.
        """
        ca = makeCA(parseSubject("CN=ca"))
        self.assertIsInstance(ca.key, ec.EllipticCurvePrivateKey)
        assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
        self.assertIsInstance(ca.key.curve, ec.SECP256R1)

    def test_validity(self) -> None:
        """
        The CA is valid from about now (a little earlier, for clock skew)
        for C{days} days, or from C{notBefore} if given.
        """
        now = datetime.now(UTC)
        ca = makeCA("CN=ca", days=10)
        start = ca.certificate.not_valid_before_utc
        end = ca.certificate.not_valid_after_utc
        self.assertTrue(now - timedelta(hours=1) < start <= now)
        self.assertEqual(end - start, timedelta(days=10))

        start = datetime(2020, 1, 1, tzinfo=UTC)
        ca = makeCA("CN=ca", notBefore=start, days=1)
        self.assertEqual(ca.certificate.not_valid_before_utc, start)
        self.assertEqual(ca.certificate.not_valid_after_utc, datetime(2020, 1, 2, tzinfo=UTC))

    def test_nonPositiveDays(self) -> None:
        """
        A validity of zero days is a L{ValueError}.
        """
        self.assertRaises(ValueError, makeCA, "CN=ca", days=0)

    def test_unknownKeyType(self) -> None:
        """
        An unknown key type is a L{ValueError}.
        """
        self.assertRaises(
            ValueError,
            makeCA,
            "CN=ca",
            keyType="dsa",  # type: ignore[arg-type]
        )


class IssueCertificateTests(SynchronousTestCase):
    """
    Tests for L{issueCertificate}.
    """

    def setUp(self) -> None:
        """
        Make a CA to issue certificates with.
        """
        self.ca = makeCA("O=test,CN=test CA")

    def test_verifies(self) -> None:
        """
        The certificate is signed by the CA, names it as the issuer and
        refers to its key identifier.
        """
        leaf = issueCertificate(self.ca, "O=test,CN=leaf", server=True)
        leaf.certificate.verify_directly_issued_by(self.ca.certificate)
        self.assertEqual(leaf.certificate.issuer, self.ca.certificate.subject)
        self.assertEqual(leaf.certificate.subject, parseSubject("O=test,CN=leaf"))

        aki = leaf.certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        ski = self.ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        self.assertEqual(aki.value.key_identifier, ski.value.digest)

    def test_otherCA(self) -> None:
        """
        The certificate does not verify against another CA of the same name.
        """
        leaf = issueCertificate(self.ca, "CN=leaf")
        other = makeCA("O=test,CN=test CA")
        self.assertRaises(
            InvalidSignature,
            leaf.certificate.verify_directly_issued_by,
            other.certificate,
        )

    def test_serialRandom(self) -> None:
        """
        Serial numbers are random, so they differ between certificates.
        """
        serials = {issueCertificate(self.ca, "CN=leaf").certificate.serial_number for _ in range(5)}
        self.assertEqual(len(serials), 5)

    def test_sans(self) -> None:
        """
        Hosts that are IP addresses become IP address entries, the others
        DNS names, in the order given, each once.
        """
        leaf = issueCertificate(
            self.ca,
            "CN=leaf",
            server=True,
            hosts=["example.com", "10.0.0.1", "::1", "*.example.org", "10.0.0.1"],
        )
        self.assertEqual(
            _sans(leaf.certificate),
            [
                "example.com",
                ipaddress.IPv4Address("10.0.0.1"),
                ipaddress.IPv6Address("::1"),
                "*.example.org",
            ],
        )
        extension = leaf.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(
            extension.value.get_values_for_type(x509.DNSName),
            ["example.com", "*.example.org"],
        )
        self.assertFalse(extension.critical)

    def test_noHosts(self) -> None:
        """
        Without hosts there is no subject alternative name.
        """
        leaf = issueCertificate(self.ca, "CN=leaf", client=True)
        self.assertRaises(
            x509.ExtensionNotFound,
            leaf.certificate.extensions.get_extension_for_class,
            x509.SubjectAlternativeName,
        )

    def test_badHost(self) -> None:
        """
        An empty or non-ASCII host is a L{ValueError}.
        """
        self.assertRaises(ValueError, issueCertificate, self.ca, "CN=x", hosts=[""])
        self.assertRaises(ValueError, issueCertificate, self.ca, "CN=x", hosts=["bücher.de"])

    def test_extendedKeyUsage(self) -> None:
        """
        C{server} and C{client} select the extended key usages; with neither
        there is no extended key usage.
        """
        server = issueCertificate(self.ca, "CN=s", server=True)
        client = issueCertificate(self.ca, "CN=c", client=True)
        both = issueCertificate(self.ca, "CN=b", server=True, client=True)
        neither = issueCertificate(self.ca, "CN=n")
        self.assertEqual(_ekus(server.certificate), [ExtendedKeyUsageOID.SERVER_AUTH])
        self.assertEqual(_ekus(client.certificate), [ExtendedKeyUsageOID.CLIENT_AUTH])
        self.assertEqual(
            _ekus(both.certificate),
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        )
        self.assertRaises(
            x509.ExtensionNotFound,
            neither.certificate.extensions.get_extension_for_class,
            x509.ExtendedKeyUsage,
        )

    def test_notCA(self) -> None:
        """
        By default the certificate is not a CA and may not sign certificates.
        """
        leaf = issueCertificate(self.ca, "CN=leaf")
        constraints = leaf.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertTrue(constraints.critical)
        self.assertFalse(constraints.value.ca)
        usage = leaf.certificate.extensions.get_extension_for_class(x509.KeyUsage)
        self.assertTrue(usage.value.digital_signature)
        self.assertFalse(usage.value.key_cert_sign)

    def test_isCA(self) -> None:
        """
        With C{isCA} the certificate is flagged as a CA.
        """
        leaf = issueCertificate(self.ca, "CN=sub", isCA=True)
        constraints = leaf.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertTrue(constraints.value.ca)
        usage = leaf.certificate.extensions.get_extension_for_class(x509.KeyUsage)
        self.assertTrue(usage.value.key_cert_sign)

    def test_expired(self) -> None:
        """
        C{notBefore} and C{notAfter} in the past make an expired certificate.
        """
        now = datetime.now(UTC)
        leaf = issueCertificate(
            self.ca,
            "CN=old",
            notBefore=now - timedelta(days=10),
            notAfter=now - timedelta(days=1),
        )
        self.assertLess(leaf.certificate.not_valid_after_utc, now)
        self.assertEqual(
            leaf.certificate.not_valid_after_utc.replace(microsecond=0),
            (now - timedelta(days=1)).replace(microsecond=0),
        )
        leaf.certificate.verify_directly_issued_by(self.ca.certificate)

    def test_notYetValid(self) -> None:
        """
        C{notBefore} in the future makes a certificate that is not yet valid,
        for C{days} days from then.
        """
        now = datetime.now(UTC)
        leaf = issueCertificate(self.ca, "CN=new", notBefore=now + timedelta(days=1), days=2)
        self.assertGreater(leaf.certificate.not_valid_before_utc, now)
        self.assertEqual(
            leaf.certificate.not_valid_after_utc - leaf.certificate.not_valid_before_utc,
            timedelta(days=2),
        )

    def test_naiveDatetimeIsUTC(self) -> None:
        """
        A naive C{notBefore} is taken to be UTC.
        """
        leaf = issueCertificate(self.ca, "CN=x", notBefore=datetime(2030, 5, 6, 7, 8))
        self.assertEqual(
            leaf.certificate.not_valid_before_utc,
            datetime(2030, 5, 6, 7, 8, tzinfo=UTC),
        )

    def test_endBeforeStart(self) -> None:
        """
        A C{notAfter} that is not after C{notBefore} is a L{ValueError}.
        """
        now = datetime.now(UTC)
        self.assertRaises(
            ValueError,
            issueCertificate,
            self.ca,
            "CN=x",
            notBefore=now,
            notAfter=now - timedelta(seconds=1),
        )

    def test_rsa(self) -> None:
        """
        With C{keyType="rsa"} keys are RSA keys of C{rsaBits} bits, for the
        CA and for issued certificates, and RSA certificates may also be used
        for key encipherment.
        """
        ca = makeCA("CN=rsa CA", keyType="rsa", rsaBits=2048)
        self.assertIsInstance(ca.key, rsa.RSAPrivateKey)
        self.assertEqual(ca.key.key_size, 2048)
        leaf = issueCertificate(ca, "CN=rsa leaf", server=True, keyType="rsa", rsaBits=2048)
        self.assertIsInstance(leaf.key, rsa.RSAPrivateKey)
        self.assertEqual(leaf.key.key_size, 2048)
        public = leaf.certificate.public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        self.assertEqual(public.key_size, 2048)
        leaf.certificate.verify_directly_issued_by(ca.certificate)
        usage = leaf.certificate.extensions.get_extension_for_class(x509.KeyUsage)
        self.assertTrue(usage.value.key_encipherment)

    def test_mixedKeyTypes(self) -> None:
        """
        An EC CA can issue an RSA certificate.
        """
        leaf = issueCertificate(self.ca, "CN=rsa", keyType="rsa", rsaBits=2048)
        leaf.certificate.verify_directly_issued_by(self.ca.certificate)


class MakeSelfSignedTests(SynchronousTestCase):
    """
    Tests for L{makeSelfSigned}.
    """

    def test_selfSignedLeaf(self) -> None:
        """
        The certificate is signed by its own key, is not a CA, may be used by
        servers and clients and names the given hosts.
        """
        issued = makeSelfSigned("CN=localhost", hosts=["localhost", "127.0.0.1"])
        certificate = issued.certificate
        certificate.verify_directly_issued_by(certificate)
        self.assertEqual(certificate.issuer, certificate.subject)
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        self.assertFalse(constraints.value.ca)
        self.assertEqual(
            _sans(certificate),
            ["localhost", ipaddress.IPv4Address("127.0.0.1")],
        )
        self.assertEqual(
            _ekus(certificate),
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        )

    def test_notIssuedByCA(self) -> None:
        """
        The certificate does not verify against a CA with the same name.
        """
        issued = makeSelfSigned("CN=test CA")
        ca = makeCA("CN=test CA")
        self.assertRaises(
            InvalidSignature,
            issued.certificate.verify_directly_issued_by,
            ca.certificate,
        )


class IssuedTests(SynchronousTestCase):
    """
    Tests for L{Issued}.
    """

    def setUp(self) -> None:
        """
        Make a certificate and a temporary directory.
        """
        self.issued = makeSelfSigned("CN=x")
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def test_pem(self) -> None:
        """
        The PEM encodings load back to the same certificate and key; the key
        is unencrypted PKCS #8.
        """
        keyPEM = self.issued.keyPEM()
        self.assertTrue(keyPEM.startswith(b"-----BEGIN PRIVATE KEY-----\n"))
        key = serialization.load_pem_private_key(keyPEM, password=None)
        self.assertEqual(
            key.public_key().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            ),
            self.issued.certificate.public_key().public_bytes(
                serialization.Encoding.DER,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            ),
        )
        certPEM = self.issued.certificatePEM()
        self.assertTrue(certPEM.startswith(b"-----BEGIN CERTIFICATE-----\n"))
        self.assertEqual(x509.load_pem_x509_certificate(certPEM), self.issued.certificate)

    def test_writeTo(self) -> None:
        """
        L{Issued.writeTo} writes the PEM encodings, the key with mode
        C{0600} and the certificate with C{0644}, whatever the umask.
        """
        oldUmask = os.umask(0)
        self.addCleanup(os.umask, oldUmask)
        cert = self.directory / "x.pem"
        key = self.directory / "x.key"
        self.issued.writeTo(cert, key)
        self.assertEqual(cert.read_bytes(), self.issued.certificatePEM())
        self.assertEqual(key.read_bytes(), self.issued.keyPEM())
        self.assertEqual(_mode(key), 0o600)
        self.assertEqual(_mode(cert), 0o644)

    def test_writeToRefuses(self) -> None:
        """
        Without C{overwrite}, an existing key file is a L{FileExistsError}
        and is left alone.
        """
        cert = self.directory / "x.pem"
        key = self.directory / "x.key"
        key.write_bytes(b"old")
        self.assertRaises(FileExistsError, self.issued.writeTo, cert, key)
        self.assertEqual(key.read_bytes(), b"old")
        self.assertFalse(cert.exists())

    def test_writeToOverwrite(self) -> None:
        """
        With C{overwrite}, existing files are replaced, and a key file that
        was readable by others becomes C{0600}.
        """
        cert = self.directory / "x.pem"
        key = self.directory / "x.key"
        key.write_bytes(b"old" * 1000)
        key.chmod(0o644)
        cert.write_bytes(b"old")
        cert.chmod(0o600)
        self.issued.writeTo(cert, key, overwrite=True)
        self.assertEqual(key.read_bytes(), self.issued.keyPEM())
        self.assertEqual(cert.read_bytes(), self.issued.certificatePEM())
        self.assertEqual(_mode(key), 0o600)
        self.assertEqual(_mode(cert), 0o644)


class WriteCertificateSetTests(SynchronousTestCase):
    """
    Tests for L{writeCertificateSet}.
    """

    def setUp(self) -> None:
        """
        Pick a directory that does not exist yet.
        """
        self.directory = Path(self.mktemp()) / "certs"

    def _load(self, name: str) -> x509.Certificate:
        """
        @param name: the file name of a certificate in the set
        @return: the certificate
        """
        return x509.load_pem_x509_certificate((self.directory / name).read_bytes())

    def test_files(self) -> None:
        """
        The CA, server and client certificates and keys are written into the
        directory, which is created, and returned by file name; keys have
        mode C{0600}, certificates C{0644}.
        """
        paths = writeCertificateSet(self.directory, clients=("alice", "bob"))
        names = [
            "ca.pem",
            "ca.key",
            "server.pem",
            "server.key",
            "alice.pem",
            "alice.key",
            "bob.pem",
            "bob.key",
        ]
        self.assertEqual(paths, {name: self.directory / name for name in names})
        self.assertEqual(sorted(p.name for p in self.directory.iterdir()), sorted(names))
        for name, path in paths.items():
            self.assertEqual(_mode(path), 0o600 if name.endswith(".key") else 0o644)
        for name in ("ca", "server", "alice", "bob"):
            key = serialization.load_pem_private_key(
                paths[name + ".key"].read_bytes(), password=None
            )
            self.assertEqual(key.public_key(), self._load(name + ".pem").public_key())

    def test_chain(self) -> None:
        """
        The server and client certificates are issued by the CA, for server
        and client use respectively.
        """
        writeCertificateSet(self.directory)
        ca = self._load("ca.pem")
        server = self._load("server.pem")
        client = self._load("client.pem")
        ca.verify_directly_issued_by(ca)
        server.verify_directly_issued_by(ca)
        client.verify_directly_issued_by(ca)
        self.assertEqual(_ekus(server), [ExtendedKeyUsageOID.SERVER_AUTH])
        self.assertEqual(_ekus(client), [ExtendedKeyUsageOID.CLIENT_AUTH])

    def test_serverHosts(self) -> None:
        """
        The server certificate names localhost, 127.0.0.1 and ::1, then the
        given hosts, each once.
        """
        writeCertificateSet(self.directory, hosts=["example.com", "192.0.2.7", "localhost"])
        self.assertEqual(
            _sans(self._load("server.pem")),
            [
                "localhost",
                ipaddress.IPv4Address("127.0.0.1"),
                ipaddress.IPv6Address("::1"),
                "example.com",
                ipaddress.IPv4Address("192.0.2.7"),
            ],
        )

    def test_subjects(self) -> None:
        """
        The given subject is shared; OU and CN are replaced per certificate.
        """
        writeCertificateSet(
            self.directory,
            subject="C=DE,ST=my state,L=my city,O=test,OU=server,CN=localhost",
        )
        base = "C=DE,ST=my state,L=my city,O=test,"
        self.assertEqual(self._load("ca.pem").subject, parseSubject(base + "OU=CA,CN=tcpsc CA"))
        self.assertEqual(
            self._load("server.pem").subject,
            parseSubject(base + "OU=server,CN=localhost"),
        )
        self.assertEqual(
            self._load("client.pem").subject,
            parseSubject(base + "OU=client,CN=client"),
        )

    def test_defaultSubject(self) -> None:
        """
        Without a subject, the organisation is tcpsc.
        """
        writeCertificateSet(self.directory)
        self.assertEqual(
            self._load("server.pem").subject,
            parseSubject("O=tcpsc,OU=server,CN=localhost"),
        )

    def test_refusesExisting(self) -> None:
        """
        If one of the files exists, nothing is written and a
        L{FileExistsError} names that file.
        """
        self.directory.mkdir(parents=True)
        existing = self.directory / "alice.key"
        existing.write_bytes(b"keep me")
        error = self.assertRaises(
            FileExistsError,
            writeCertificateSet,
            self.directory,
            clients=("alice",),
        )
        self.assertIn(str(existing), str(error))
        self.assertEqual([p.name for p in self.directory.iterdir()], ["alice.key"])
        self.assertEqual(existing.read_bytes(), b"keep me")

    def test_force(self) -> None:
        """
        With C{force}, an existing set is replaced.
        """
        writeCertificateSet(self.directory)
        before = self._load("ca.pem")
        (self.directory / "server.key").chmod(0o644)
        writeCertificateSet(self.directory, force=True)
        self.assertNotEqual(self._load("ca.pem"), before)
        self._load("server.pem").verify_directly_issued_by(self._load("ca.pem"))
        self.assertEqual(_mode(self.directory / "server.key"), 0o600)

    def test_badClientNames(self) -> None:
        """
        Client names that are reserved, repeated, empty or not plain file
        names are a L{ValueError}, and nothing is written.
        """
        for clients in [("ca",), ("server",), ("a", "a"), ("",), ("../x",), (".x",)]:
            self.assertRaises(ValueError, writeCertificateSet, self.directory, clients=clients)
        self.assertFalse(self.directory.exists())

    def test_badSubject(self) -> None:
        """
        An invalid subject is a L{ValueError}, and nothing is written.
        """
        self.assertRaises(ValueError, writeCertificateSet, self.directory, subject="X=1")
        self.assertFalse(self.directory.exists())

    def test_rsa(self) -> None:
        """
        C{keyType} and C{rsaBits} apply to all keys of the set.
        """
        writeCertificateSet(self.directory, keyType="rsa", rsaBits=2048)
        for name in ("ca", "server", "client"):
            key = serialization.load_pem_private_key(
                (self.directory / (name + ".key")).read_bytes(), password=None
            )
            assert isinstance(key, rsa.RSAPrivateKey)
            self.assertEqual(key.key_size, 2048)


class OpenSSLVerifyTests(SynchronousTestCase):
    """
    The certificates are accepted, and broken ones rejected, by
    C{openssl verify}.
    """

    if OPENSSL is None:
        skip = "openssl is not on PATH"

    def setUp(self) -> None:
        """
        Pick a directory that does not exist yet.
        """
        self.directory = Path(self.mktemp())

    def _verify(self, *args: str) -> subprocess.CompletedProcess[str]:
        """
        Run C{openssl verify} in strict mode against the CA of the set.

        @param args: further arguments, ending with the certificate file
        @return: the finished process
        """
        assert OPENSSL is not None
        return subprocess.run(
            [
                OPENSSL,
                "verify",
                "-x509_strict",
                "-CAfile",
                str(self.directory / "ca.pem"),
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    def _assertOK(self, *args: str) -> None:
        """
        Assert that C{openssl verify} accepts a certificate.

        @param args: see L{_verify}
        """
        result = self._verify(*args)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertEqual(result.stdout.strip(), f"{args[-1]}: OK")

    def _assertRejected(self, *args: str) -> None:
        """
        Assert that C{openssl verify} rejects a certificate.

        @param args: see L{_verify}
        """
        result = self._verify(*args)
        self.assertNotEqual(result.returncode, 0, result.stdout + result.stderr)

    def _check(self, keyType: str) -> None:
        """
        Write a set with keys of the given type and check that its server
        and client certificates verify for their purpose, and the server
        certificate for its hosts.

        @param keyType: C{"ec"} or C{"rsa"}
        """
        paths = writeCertificateSet(
            self.directory,
            hosts=["example.com", "192.0.2.7"],
            keyType="rsa" if keyType == "rsa" else "ec",
            rsaBits=2048,
        )
        server = str(paths["server.pem"])
        client = str(paths["client.pem"])
        self._assertOK(server)
        self._assertOK(client)
        self._assertOK("-purpose", "sslserver", server)
        self._assertOK("-purpose", "sslclient", client)
        for host in ("localhost", "example.com"):
            self._assertOK("-verify_hostname", host, server)
        for ip in ("127.0.0.1", "::1", "192.0.2.7"):
            self._assertOK("-verify_ip", ip, server)
        self._assertRejected("-verify_hostname", "other.example", server)
        self._assertRejected("-purpose", "sslclient", server)
        self._assertRejected("-purpose", "sslserver", client)

    def test_ec(self) -> None:
        """
        A set with EC keys verifies.
        """
        self._check("ec")

    def test_rsa(self) -> None:
        """
        A set with RSA keys verifies.
        """
        self._check("rsa")

    def _writeIssued(self, issued: Issued, name: str) -> str:
        """
        Write a certificate next to the set.

        @param issued: the certificate
        @param name: the base name of its files
        @return: the path of the certificate file
        """
        cert = self.directory / (name + ".pem")
        issued.writeTo(cert, self.directory / (name + ".key"))
        return str(cert)

    def test_brokenRejected(self) -> None:
        """
        Expired, not yet valid, self-signed and foreign certificates are
        rejected.
        """
        writeCertificateSet(self.directory)
        ca = Issued(
            x509.load_pem_x509_certificate((self.directory / "ca.pem").read_bytes()),
            serialization.load_pem_private_key(  # type: ignore[arg-type]
                (self.directory / "ca.key").read_bytes(), password=None
            ),
        )
        now = datetime.now(UTC)
        expired = issueCertificate(
            ca,
            "CN=localhost",
            server=True,
            hosts=["localhost"],
            notBefore=now - timedelta(days=10),
            notAfter=now - timedelta(days=1),
        )
        future = issueCertificate(
            ca, "CN=localhost", server=True, notBefore=now + timedelta(days=1)
        )
        good = issueCertificate(ca, "CN=localhost", server=True)
        self._assertOK(self._writeIssued(good, "good"))
        self._assertRejected(self._writeIssued(expired, "expired"))
        self._assertRejected(self._writeIssued(future, "future"))
        self._assertRejected(self._writeIssued(makeSelfSigned("CN=localhost"), "selfsigned"))
        other = makeCA("O=tcpsc,OU=CA,CN=tcpsc CA")
        self._assertRejected(self._writeIssued(issueCertificate(other, "CN=localhost"), "foreign"))

    def test_pathLength(self) -> None:
        """
        A certificate issued by a certificate that was issued with C{isCA}
        is rejected, because the CA allows no intermediates.
        """
        writeCertificateSet(self.directory)
        ca = Issued(
            x509.load_pem_x509_certificate((self.directory / "ca.pem").read_bytes()),
            serialization.load_pem_private_key(  # type: ignore[arg-type]
                (self.directory / "ca.key").read_bytes(), password=None
            ),
        )
        intermediate = issueCertificate(ca, "CN=intermediate", isCA=True)
        leaf = issueCertificate(intermediate, "CN=leaf", server=True)
        intermediatePath = self._writeIssued(intermediate, "intermediate")
        self._assertRejected("-untrusted", intermediatePath, self._writeIssued(leaf, "leaf"))
