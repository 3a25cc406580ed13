"""TLS for PACS connections: the one place that builds ``ssl.SSLContext``
objects and turns TLS failures into words.

* :func:`client_context`: for an HTTPS or DICOM TLS client; verifies the
  server's certificate against a CA bundle (or the system's CAs) and its
  host name, and presents a client certificate when one is given.
* :func:`server_context`: for our Storage SCP (the C-MOVE destination over
  DICOM TLS); presents our certificate and, with a CA bundle, requires and
  verifies the peer's.
* :func:`check_files`: the certificate, key and CA files exist and load
  (a missing file or a key that does not match its certificate is
  reported before any connection).
* :func:`describe_ssl_error`: a one-line reason for an SSL failure (not
  trusted, host name mismatch, client certificate refused or missing);
  :func:`probe` connects once to find it (pynetdicom only logs it), and
  :func:`speaks_tls` tells a plain DICOM client that the port wants TLS.

Only file paths are handled here: key material is read by :mod:`ssl`
itself and never kept, logged or put into a message.  Keys must be
unencrypted PEM (a separate key file, or the key in the certificate file).
"""

from __future__ import annotations

import os
import ssl

__all__ = [
    "TlsConfigError",
    "check_files",
    "client_context",
    "describe_ssl_error",
    "diagnose",
    "probe",
    "server_context",
    "speaks_tls",
]


class TlsConfigError(ValueError):
    """A certificate, key or CA file is missing or unusable (the message
    names the file and what is wrong, never its contents)."""


def _need_file(path: str | os.PathLike, what: str) -> str:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise TlsConfigError(f"{what} {p} not found")
    if not os.access(p, os.R_OK):
        raise TlsConfigError(f"{what} {p} is not readable")
    return p


def _load_verify(ctx: ssl.SSLContext, ca_bundle: str | os.PathLike) -> None:
    path = _need_file(ca_bundle, "CA bundle")
    try:
        ctx.load_verify_locations(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsConfigError(
            f"CA bundle {path} holds no usable PEM certificate ({_short(exc)})"
        ) from None


def _load_chain(
    ctx: ssl.SSLContext, cert: str | os.PathLike, key: str | os.PathLike | None
) -> None:
    cert_path = _need_file(cert, "client certificate")
    key_path = _need_file(key, "client key") if key else None

    def no_passphrase() -> str:
        raise TlsConfigError(
            f"the key of {cert_path} is encrypted: give an unencrypted PEM key"
        )

    try:
        ctx.load_cert_chain(cert_path, key_path, password=no_passphrase)
    except ssl.SSLError as exc:
        where = f"{cert_path} and {key_path}" if key_path else cert_path
        why = "the key does not match the certificate"
        if "KEY_VALUES_MISMATCH" not in str(exc):
            why = "not a PEM certificate with its unencrypted private key"
            if not key_path:
                why += " (give the key with --client-key)"
        raise TlsConfigError(f"cannot use {where}: {why} ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc)[:120]


def client_context(
    ca_bundle: str | os.PathLike | None = None,
    client_cert: str | os.PathLike | None = None,
    client_key: str | os.PathLike | None = None,
) -> ssl.SSLContext:
    """A client context: TLS 1.2 or later, the server's certificate
    verified against ``ca_bundle`` (None: the system's CAs) with its host
    name checked, and ``client_cert`` (+ ``client_key`` unless the
    certificate file holds the key) presented when the server asks.

    Raises:
        TlsConfigError: a file is missing, unreadable or unusable.
    """
    if client_key and not client_cert:
        raise TlsConfigError("a client key needs its client certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, host names
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_bundle:
        _load_verify(ctx, ca_bundle)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if client_cert:
        _load_chain(ctx, client_cert, client_key)
    return ctx


def server_context(
    cert: str | os.PathLike,
    key: str | os.PathLike | None = None,
    ca_bundle: str | os.PathLike | None = None,
) -> ssl.SSLContext:
    """A server context for our Storage SCP: presents ``cert`` (+ ``key``);
    with ``ca_bundle`` every peer must present a certificate signed by it
    (``CERT_REQUIRED``), otherwise peers are not asked for one.

    Raises:
        TlsConfigError: a file is missing, unreadable or unusable.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert, key)
    if ca_bundle:
        _load_verify(ctx, ca_bundle)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def check_files(
    ca_bundle: str | os.PathLike | None = None,
    client_cert: str | os.PathLike | None = None,
    client_key: str | os.PathLike | None = None,
) -> None:
    """Raise :class:`TlsConfigError` when a given file is missing or
    unusable (by building a :func:`client_context` with them)."""
    client_context(ca_bundle, client_cert, client_key)


#: OpenSSL alerts sent by a server that wants a (different) client
#: certificate, as they appear in Python's error text
_CLIENT_CERT_ALERTS = (
    "certificate required",
    "alert bad certificate",
    "alert unknown ca",
    "alert certificate unknown",
    "alert handshake failure",
    "alert access denied",
    "certificate_required",
    "bad_certificate",
    "unknown_ca",
)


def describe_ssl_error(exc: BaseException | str, *, has_client_cert: bool) -> str:
    """One line saying why a TLS connection failed: the server's
    certificate is not trusted (with OpenSSL's reason), its host name does
    not match, the server refused our client certificate or wanted one, or
    the peer does not speak TLS."""
    text = str(exc)
    low = text.lower()
    verify = getattr(exc, "verify_message", None)
    if isinstance(exc, ssl.SSLCertVerificationError) or (
        "certificate_verify_failed" in low or "certificate verify failed" in low
    ):
        if verify is None:
            start = low.find("certificate verify failed")
            verify = text[start:].split("(")[0].split(")")[0] if start >= 0 else ""
            verify = verify.replace("certificate verify failed:", "").strip()
        if "hostname mismatch" in (verify or "").lower() or "hostname" in low:
            return (
                "TLS handshake failed: the server's certificate does not name "
                f"this host ({verify or 'host name mismatch'}): use the host "
                "name or address the certificate was made for"
            )
        return (
            "TLS handshake failed: certificate not trusted (the server's "
            f"certificate: {verify or 'verify failed'}): give the CA bundle "
            "that signed it (--ca-bundle FILE)"
        )
    if any(a in low for a in _CLIENT_CERT_ALERTS):
        if has_client_cert:
            return (
                "TLS handshake failed: the server refused our client "
                "certificate (not signed by a CA it trusts, or expired)"
            )
        return (
            "TLS handshake failed: the server requires a client certificate: "
            "give one with --client-cert FILE (and --client-key FILE)"
        )
    if "wrong version number" in low or "record layer failure" in low:
        return "TLS handshake failed: the server does not speak TLS on this port"
    why = text[:120] if isinstance(exc, str) else _short(exc)
    return f"TLS handshake failed ({why})"


def probe(
    context: ssl.SSLContext,
    host: str,
    port: int,
    timeout: float,
    *,
    has_client_cert: bool,
) -> str | None:
    """Connect once with ``context`` to say why a TLS connection failed:
    the reason (:func:`describe_ssl_error`), or None when the handshake
    works and the server sends no alert within a moment (with TLS 1.3 a
    server refuses a client certificate only after the handshake)."""
    import socket

    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as conn,
        ):
            conn.settimeout(min(2.0, timeout))
            try:
                conn.recv(1)
            except TimeoutError:
                return None
            return None
    except ssl.SSLError as exc:
        return describe_ssl_error(exc, has_client_cert=has_client_cert)
    except OSError:
        return None


def speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether the peer at ``host:port`` answers a TLS handshake (without
    verifying anything: only to say "this port wants TLS")."""
    import socket

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except ssl.SSLError as exc:
        # an alert (e.g. "certificate required") is TLS too; a plain DICOM
        # peer gives "wrong version number" or closes the connection
        return "alert" in str(exc).lower()
    except OSError:
        return False


def diagnose(
    exc: BaseException,
    context: ssl.SSLContext,
    host: str,
    port: int,
    timeout: float,
    *,
    has_client_cert: bool,
) -> str:
    """:func:`describe_ssl_error` of ``exc``; when that names no cause (an
    HTTP client that wrote its request before the server's alert came back
    sees only a closed connection), one :func:`probe` finds it."""
    why = describe_ssl_error(exc, has_client_cert=has_client_cert)
    if not why.startswith("TLS handshake failed ("):
        return why
    return probe(context, host, port, timeout, has_client_cert=has_client_cert) or why
