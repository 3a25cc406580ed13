"""A real PACS for the PACS tests: Debian's Orthanc with the DICOMweb plugin.

:func:`orthanc` (session scope) starts ``/usr/sbin/Orthanc`` through
:class:`napari_medcnn.pacs.orthanc.LocalOrthanc`: storage and index in a
temporary folder, free HTTP and DICOM ports on 127.0.0.1, the DICOMweb
plugin, no remote access, HTTP basic authentication (user ``medcnn``,
password :data:`PASSWORD`), ``DicomCheckCalledAet`` on, and our Storage SCP
(:data:`CALLING_AET` on ``orthanc.scp_port``) registered as a DICOM node
for C-MOVE.  It waits on ``GET /system`` and stops Orthanc at teardown.
Without Orthanc the tests skip with the reason; with it they must run.
"""

from __future__ import annotations

import socket
import threading

import pytest
from _pacs_helpers import CALLING_AET, PASSWORD, TOKEN, USER, Pacs

from napari_medcnn.pacs.orthanc import LocalOrthanc, OrthancUnavailable, free_port


@pytest.fixture(scope="session")
def orthanc():
    """The session's Orthanc (see the module docstring)."""
    scp_port = free_port()
    server = LocalOrthanc(
        user=USER,
        password=PASSWORD,
        modalities={"medcnn": (CALLING_AET, "127.0.0.1", scp_port)},
        check_called_aet=True,
    )
    try:
        server.start()
    except OrthancUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield Pacs(server, scp_port)
    finally:
        server.stop()


@pytest.fixture
def silent_server():
    """``(host, port)`` of a socket that accepts connections but never
    answers (a hung server): the kernel completes the handshake from the
    listen backlog; nothing ever reads or writes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()
    finally:
        sock.close()


@pytest.fixture
def bearer_server():
    """A tiny HTTP server on 127.0.0.1 (see :func:`_bearer_server`)."""
    yield from _bearer_server(None)


@pytest.fixture
def https_bearer_server(tmp_path):
    """The same over HTTPS with a self-signed certificate for 127.0.0.1
    (made with the ``openssl`` command); yields ``(url, seen, ca_file)``."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    for url, seen in _bearer_server(ctx):
        yield url, seen, cert


def _bearer_server(ssl_context):
    """A tiny HTTP server that answers QIDO-RS ``/studies`` with ``[]`` when
    the request carries ``Authorization: Bearer`` :data:`TOKEN` and 401
    otherwise; yields ``(url, seen)`` where ``seen`` lists the
    Authorization headers it got."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            auth = self.headers.get("Authorization", "")
            seen.append(auth)
            ok = auth == f"Bearer {TOKEN}"
            body = b"[]" if ok else b""
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # keep the test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if ssl_context is not None:
        httpd.socket = ssl_context.wrap_socket(httpd.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{httpd.server_address[1]}/dicom-web", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
