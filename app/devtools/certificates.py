"""A throwaway certificate authority for the local broker's TLS listeners (tests of ttbridge's
Kafka security): a CA, a broker certificate for 127.0.0.1 and localhost, and a client
certificate for the listener that requires one. Made fresh each time, never for production.

Needs the `cryptography` package (the test extra).
"""
from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Certificates", "make_certificates"]


@dataclass(frozen=True)
class Certificates:
    ca: Path                  # the CA's certificate: clients' KAFKA_SSL_CAFILE, the broker's truststore
    broker: Path              # the broker's key and certificate chain, a PKCS#12 keystore
    broker_password: str      # the keystore's (and its key's) password
    client_cert: Path         # KAFKA_SSL_CERTFILE of a client the SSL listener lets in
    client_key: Path          # KAFKA_SSL_KEYFILE, encrypted with client_key_password
    client_key_password: str  # KAFKA_SSL_KEY_PASSWORD


def make_certificates(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                      name: str = "ttbridge test CA") -> Certificates:
    """A new CA in `directory` and the certificates it signs; the broker's is valid for `hosts`
    (IP addresses and DNS names, as subject alternative names: clients check them)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    # Valid from a minute ago: a broker whose clock is a little behind still accepts it.
    start, end = now - datetime.timedelta(minutes=1), now + datetime.timedelta(days=2)

    def subject(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def certificate(cn, key, issuer, issuer_key, *, ca=False, usage=None, sans=()):
        builder = (x509.CertificateBuilder().subject_name(subject(cn)).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(start).not_valid_after(end)
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    def pem(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def encrypted(key, password: str) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.BestAvailableEncryption(password.encode()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate(name, ca_key, subject(name), ca_key, ca=True)
    sans = [x509.IPAddress(ipaddress.ip_address(h)) if _is_ip(h) else x509.DNSName(h) for h in hosts]
    broker_key = ec.generate_private_key(ec.SECP256R1())
    broker_cert = certificate(hosts[0], broker_key, ca_cert.subject, ca_key,
                              usage=ExtendedKeyUsageOID.SERVER_AUTH, sans=sans)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = certificate("ttbridge", client_key, ca_cert.subject, ca_key,
                              usage=ExtendedKeyUsageOID.CLIENT_AUTH)

    certs = Certificates(ca=directory / "ca.pem", broker=directory / "broker.p12",
                         broker_password="broker-keystore-pass",
                         client_cert=directory / "client.pem", client_key=directory / "client-key.pem",
                         client_key_password="client-key-pass")
    certs.ca.write_bytes(pem(ca_cert))
    # PKCS#12, not a PEM keystore: Kafka reads an encrypted PEM key through a Java
    # SecretKeyFactory that has no PBES2 (what cryptography and OpenSSL 3 encrypt with), while
    # Java's PKCS#12 keystore reads PBES2 itself.
    certs.broker.write_bytes(pkcs12.serialize_key_and_certificates(
        b"broker", broker_key, broker_cert, [ca_cert],
        serialization.BestAvailableEncryption(certs.broker_password.encode())))
    certs.client_cert.write_bytes(pem(client_cert))
    certs.client_key.write_bytes(encrypted(client_key, certs.client_key_password))
    for path in (certs.broker, certs.client_key):
        path.chmod(0o600)
    return certs


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
