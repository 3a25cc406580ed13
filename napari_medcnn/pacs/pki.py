"""A throw-away PKI for a local TLS PACS: tests, demos and benchmarks
(beside :class:`~napari_medcnn.pacs.orthanc.LocalOrthanc`), and a way to
try the TLS settings before asking the hospital for certificates.

:func:`make_pki` writes PEM files into a folder (mode 0600): a CA, a server
certificate for 127.0.0.1 and ``localhost``, a client certificate, and an
unrelated "wrong" CA with a client certificate of its own (to see a
refusal).  Keys are P-256, unencrypted except ``encrypted_key``; the
certificates are valid for one day.  Never use them for real data.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pki", "make_pki"]


@dataclass
class Pki:
    """File paths of a throw-away PKI (PEM).

    Attributes:
        ca: the CA certificate (the CA bundle to trust).
        wrong_ca: an unrelated CA (a bundle that must be refused).
        server_cert, server_key: for 127.0.0.1 / localhost, signed by ``ca``.
        client_cert, client_key: ours, signed by ``ca``.
        client_combined: the client key and certificate in one file.
        wrong_client_cert, wrong_client_key: signed by ``wrong_ca``.
        encrypted_key: ``client_key`` encrypted with the password
            ``pw-1234`` (the plugin refuses encrypted keys, with a reason).

    Server and client certificates carry both the server and the client
    extended key usage: in a C-MOVE the PACS connects to our Storage SCP,
    so each side is also the other's server.
    """

    ca: Path
    wrong_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_combined: Path
    wrong_client_cert: Path
    wrong_client_key: Path
    encrypted_key: Path


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key, password: bytes | None = None) -> bytes:
    from cryptography.hazmat.primitives import serialization as ser

    enc = ser.BestAvailableEncryption(password) if password else ser.NoEncryption()
    return key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, enc)


def _pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization as ser

    return cert.public_bytes(ser.Encoding.PEM)


def _cert(subject: str, key, issuer=None, issuer_key=None, *, ca=False, san=()):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:  # digital signature, certificate and CRL signing
        usage = x509.KeyUsage(
            True, False, False, False, False, True, True, False, False
        )
        b = b.add_extension(usage, critical=True)
    else:
        eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


def make_pki(folder: str | Path) -> Pki:
    """Write a throw-away PKI into ``folder`` (created; files mode 0600).

    Raises:
        ImportError: ``cryptography`` is not installed.
    """
    from cryptography import x509

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, data: bytes) -> Path:
        path = folder / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    ca_key, wrong_key = _key(), _key()
    ca = _cert("napari-medcnn throw-away CA", ca_key, ca=True)
    wrong = _cert("unrelated CA", wrong_key, ca=True)
    server_key, client_key, other_key = _key(), _key(), _key()
    san = (x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"))
    server = _cert("127.0.0.1", server_key, ca, ca_key, san=san)
    client = _cert("napari-medcnn client", client_key, ca, ca_key, san=san)
    other = _cert("napari-medcnn client", other_key, wrong, wrong_key, san=san)
    return Pki(
        ca=write("ca.pem", _pem(ca)),
        wrong_ca=write("wrong-ca.pem", _pem(wrong)),
        server_cert=write("server.crt", _pem(server)),
        server_key=write("server.key", _pem_key(server_key)),
        client_cert=write("client.crt", _pem(client)),
        client_key=write("client.key", _pem_key(client_key)),
        client_combined=write("client.pem", _pem_key(client_key) + _pem(client)),
        wrong_client_cert=write("other.crt", _pem(other)),
        wrong_client_key=write("other.key", _pem_key(other_key)),
        encrypted_key=write("client-enc.key", _pem_key(client_key, b"pw-1234")),
    )
