"""A throw-away local Orthanc PACS, for the tests, the benchmark and demos.

:class:`LocalOrthanc` starts the Debian ``Orthanc`` binary with a
temporary configuration: storage and index in a temporary folder, free
HTTP and DICOM ports on 127.0.0.1 only, the DICOMweb plugin loaded, no
remote access, optionally HTTP basic authentication, and optionally one
DICOM modality (our Storage SCP, for C-MOVE), and optionally TLS
(:class:`OrthancTls`: HTTPS and DICOM TLS, client certificates required,
modalities reached over DICOM TLS too).

Orthanc's own HTTPS (``SslEnabled``) crashes Debian 12's Orthanc 1.10.1:
its ``libcivetweb1`` 1.15 loads ``libssl.so`` at run time and looks up
``SSL_get_peer_certificate``, which OpenSSL 3 no longer exports (it is
``SSL_get1_peer_certificate``), so the first HTTPS request calls a null
pointer (SIGSEGV in a civetweb worker).  By default
(``OrthancTls.orthanc_https=False``) HTTPS is therefore served by
:class:`TlsProxy`, a small TLS front on ``http_port`` (the same
certificate, the same client-certificate rule) forwarding to Orthanc's
plain HTTP on a second port of 127.0.0.1; DICOM TLS is Orthanc's own
(DCMTK), which works.  It waits until ``GET /system``
answers (over HTTPS verified against the CA bundle) and stops Orthanc (and
deletes its files) on :meth:`~LocalOrthanc.stop` or at the end of a
``with`` block.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import socketserver
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LocalOrthanc",
    "OrthancTls",
    "OrthancUnavailable",
    "TlsProxy",
    "dicomweb_plugin",
    "free_port",
    "orthanc_binary",
]

#: where Debian's packages put the binary and the DICOMweb plugin
_BINARIES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
_PLUGINS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)


class OrthancUnavailable(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed (the reason says
    which), or it did not start."""


def orthanc_binary() -> Path | None:
    """The Orthanc executable (``$ORTHANC_BINARY``, PATH, Debian's), or None."""
    env = os.environ.get("ORTHANC_BINARY")
    candidates = [env] if env else []
    candidates += [shutil.which("Orthanc") or "", *_BINARIES]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return Path(c)
    return None


def dicomweb_plugin() -> Path | None:
    """The DICOMweb plugin's shared library (``$ORTHANC_DICOMWEB_PLUGIN`` or
    Debian's ``orthanc-dicomweb``), or None."""
    env = os.environ.get("ORTHANC_DICOMWEB_PLUGIN")
    for c in ([env] if env else []) + list(_PLUGINS):
        if c and Path(c).is_file():
            return Path(c)
    lib = Path("/usr/lib/orthanc")
    found = sorted(lib.glob("libOrthancDicomWeb.so*")) if lib.is_dir() else []
    return found[0] if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class OrthancTls:
    """TLS for a :class:`LocalOrthanc`: HTTPS (``SslEnabled``) and DICOM TLS
    (``DicomTlsEnabled``) with one certificate.

    Attributes:
        certificate, private_key: Orthanc's certificate (PEM, for
            127.0.0.1) and its unencrypted private key (PEM); Orthanc also
            presents them when it connects to a modality (C-MOVE).
        ca_bundle: the CA certificate(s) (PEM) Orthanc trusts for client
            certificates (HTTPS and DICOM TLS peers), and that
            :class:`LocalOrthanc`'s own REST calls verify Orthanc against.
        client_cert, client_key: the client certificate (and key) of
            :class:`LocalOrthanc`'s own REST calls (readiness check,
            :meth:`LocalOrthanc.get_json`); needed when
            ``require_client_certs``.
        require_client_certs: HTTPS clients and DICOM TLS peers must
            present a certificate signed by ``ca_bundle``
            (``SslVerifyPeers``, ``DicomTlsRemoteCertificateRequired``).
        modalities_tls: Orthanc connects to the modalities over DICOM TLS
            (their ``UseDicomTls``).
        orthanc_https: Orthanc's own HTTPS (``SslEnabled``) instead of a
            :class:`TlsProxy`; it crashes Debian 12's Orthanc (see the
            module docstring).
    """

    certificate: str
    private_key: str
    ca_bundle: str
    client_cert: str | None = None
    client_key: str | None = None
    require_client_certs: bool = True
    modalities_tls: bool = True
    orthanc_https: bool = False

    def server_context(self) -> ssl.SSLContext:
        """What Orthanc's HTTPS would do: present ``certificate`` and, with
        ``require_client_certs``, require a client certificate signed by
        ``ca_bundle`` (for :class:`TlsProxy`)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.certificate, self.private_key)
        if self.require_client_certs:
            ctx.load_verify_locations(cafile=self.ca_bundle)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def ssl_context(self) -> ssl.SSLContext:
        """A client context verifying Orthanc against ``ca_bundle`` (with
        the client certificate when given)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=self.ca_bundle)
        if self.client_cert:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


class TlsProxy(socketserver.ThreadingTCPServer):
    """A TLS front: accepts TLS on ``127.0.0.1:port`` with ``context`` (a
    failed handshake just closes that connection) and forwards the bytes to
    ``127.0.0.1:backend_port``.  :meth:`start` serves in a daemon thread;
    :meth:`stop` closes it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, backend_port: int, context: ssl.SSLContext):
        self.context = context
        self.backend_port = backend_port
        super().__init__(("127.0.0.1", port), _ProxyHandler)
        self._thread: threading.Thread | None = None

    def start(self) -> TlsProxy:
        self._thread = threading.Thread(
            target=self.serve_forever, name="orthanc-tls-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address) -> None:
        pass  # a refused or broken connection is not the test's business


class _ProxyHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: TlsProxy = self.server  # type: ignore[assignment]
        try:
            conn = server.context.wrap_socket(self.request, server_side=True)
        except (OSError, ValueError):
            return  # handshake refused (untrusted CA, no client certificate)
        try:
            backend = socket.create_connection(("127.0.0.1", server.backend_port))
        except OSError:
            conn.close()
            return
        with conn, backend:
            socks = [conn, backend]
            while True:
                ready = [conn] if conn.pending() else []
                if not ready:
                    ready, _w, _x = select.select(socks, [], [], 60)
                    if not ready:
                        return
                for src in ready:
                    dst = backend if src is conn else conn
                    try:
                        data = src.recv(65536)
                    except (OSError, ValueError):
                        return
                    if not data:
                        return
                    try:
                        dst.sendall(data)
                    except OSError:
                        return


@dataclass
class LocalOrthanc:
    """One temporary Orthanc on 127.0.0.1.

    Attributes:
        aet: Orthanc's own AE title (the called AET for DIMSE).
        user, password: HTTP basic credentials; None: no authentication.
        modalities: DICOM nodes Orthanc may C-MOVE to:
            ``{name: (aet, host, port)}``.
        check_called_aet: refuse associations whose called AET is not
            ``aet`` (Orthanc's ``DicomCheckCalledAet``).
        startup_timeout: seconds to wait for ``GET /system``.
        tls: HTTPS and DICOM TLS (see :class:`OrthancTls`); None: plain
            HTTP and DICOM.
        http_port, dicom_port: filled in by :meth:`start`.
    """

    aet: str = "ORTHANC"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    modalities: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    check_called_aet: bool = True
    startup_timeout: float = 30.0
    tls: OrthancTls | None = None
    http_port: int = 0
    dicom_port: int = 0
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _dir: Path | None = field(default=None, repr=False)
    _log: object | None = field(default=None, repr=False)
    _backend_port: int = field(default=0, repr=False)
    _proxy: TlsProxy | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The HTTP root, e.g. ``http://127.0.0.1:8042`` (``https://`` with
        :attr:`tls`)."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (QIDO, WADO and STOW share it)."""
        return f"{self.url}/dicom-web"

    def config(self) -> dict:
        """The Orthanc configuration (JSON-able) that :meth:`start` writes."""
        assert self._dir is not None
        cfg = {
            "Name": "napari-medcnn test PACS",
            "StorageDirectory": str(self._dir / "storage"),
            "IndexDirectory": str(self._dir / "index"),
            "HttpPort": self._backend_port or self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "DicomCheckCalledAet": self.check_called_aet,
            "DicomCheckModalityHost": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomModalities": {
                name: self._modality(aet, host, port)
                for name, (aet, host, port) in self.modalities.items()
            },
            "Plugins": [str(dicomweb_plugin())],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": "127.0.0.1"},
            "AuthenticationEnabled": self.user is not None,
            "RegisteredUsers": (
                {self.user: self.password or ""} if self.user is not None else {}
            ),
            "StableAge": 1,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 8,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "SaveJobs": False,
        }
        if self.tls is not None:
            cfg.update(self._tls_config())
        return cfg

    def _modality(self, aet: str, host: str, port: int) -> list | dict:
        if self.tls is None or not self.tls.modalities_tls:
            return [aet, host, port]
        return {"AET": aet, "Host": host, "Port": port, "UseDicomTls": True}

    def _tls_config(self) -> dict:
        """HTTPS and DICOM TLS settings; Orthanc's HTTPS wants the key and
        the certificate in one PEM file, written into the temporary folder
        (mode 0600)."""
        assert self._dir is not None and self.tls is not None
        t = self.tls
        dicom = {
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(t.certificate),
            "DicomTlsPrivateKey": str(t.private_key),
            "DicomTlsTrustedCertificates": str(t.ca_bundle),
            "DicomTlsRemoteCertificateRequired": t.require_client_certs,
        }
        if not t.orthanc_https:
            return dicom  # HTTPS by TlsProxy
        combined = self._dir / "https.pem"
        fd = os.open(combined, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(Path(t.private_key).read_bytes().rstrip() + b"\n")
            f.write(Path(t.certificate).read_bytes())
        return {
            "SslEnabled": True,
            "SslCertificate": str(combined),
            "SslVerifyPeers": t.require_client_certs,
            "SslTrustedClientCertificates": str(t.ca_bundle),
            **dicom,
        }

    def start(self) -> LocalOrthanc:
        """Start Orthanc and wait until it answers; returns self.

        Raises:
            OrthancUnavailable: the binary or the plugin is missing, or
                Orthanc did not answer within ``startup_timeout`` seconds
                (its log is in the message).
        """
        binary, plugin = orthanc_binary(), dicomweb_plugin()
        if binary is None:
            raise OrthancUnavailable(
                "Orthanc is not installed (apt-get install orthanc)"
            )
        if plugin is None:
            raise OrthancUnavailable(
                "the Orthanc DICOMweb plugin is not installed "
                "(apt-get install orthanc-dicomweb)"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="napari-medcnn-orthanc-"))
        self.http_port = self.http_port or free_port()
        self.dicom_port = self.dicom_port or free_port()
        if self.tls is not None and not self.tls.orthanc_https:
            self._backend_port = free_port()
            try:
                self._proxy = TlsProxy(
                    self.http_port, self._backend_port, self.tls.server_context()
                ).start()
            except (OSError, ssl.SSLError) as exc:
                self.stop()
                raise OrthancUnavailable(f"cannot start the TLS front: {exc}") from None
        cfg_path = self._dir / "orthanc.json"
        cfg_path.write_text(json.dumps(self.config(), indent=2))
        log = open(self._dir / "orthanc.log", "wb")  # noqa: SIM115 (closed in stop)
        self._log = log
        self._proc = subprocess.Popen(
            [str(binary), str(cfg_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self._dir,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                self.get_json("/system")
                return self
            except (OSError, urllib.error.URLError, ValueError):
                time.sleep(0.1)
        tail = self.log_tail()
        code = self._proc.poll()
        self.stop()
        status = f" (exit status {code})" if code is not None else ""
        raise OrthancUnavailable(f"Orthanc did not start{status}: {tail}")

    def log_tail(self, n: int = 2000) -> str:
        """The last ``n`` characters of Orthanc's log."""
        if self._dir is None or not (self._dir / "orthanc.log").exists():
            return ""
        return (self._dir / "orthanc.log").read_text(errors="replace")[-n:]

    def get_json(self, path: str, timeout: float = 5.0):
        """``GET`` a REST path (with the credentials); returns parsed JSON."""
        req = urllib.request.Request(self.url + path)
        if self.user is not None:
            token = b64encode(f"{self.user}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        context = self.tls.ssl_context() if self.tls is not None else None
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 10 s) and its TLS
        front, and delete its storage, index and configuration."""
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> LocalOrthanc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
