"""A throw-away local Orthanc PACS, for the tests, the benchmark and demos.

:class:`LocalOrthanc` starts the Debian ``Orthanc`` binary with a
temporary configuration: storage and index in a temporary folder, free
HTTP and DICOM ports on 127.0.0.1 only, the DICOMweb plugin loaded, no
remote access, optionally HTTP basic authentication, and optionally one
DICOM modality (our Storage SCP, for C-MOVE).  It waits until
``GET /system`` answers and stops Orthanc (and deletes its files) on
:meth:`~LocalOrthanc.stop` or at the end of a ``with`` block.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LocalOrthanc",
    "OrthancUnavailable",
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
        http_port, dicom_port: filled in by :meth:`start`.
    """

    aet: str = "ORTHANC"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    modalities: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    check_called_aet: bool = True
    startup_timeout: float = 30.0
    http_port: int = 0
    dicom_port: int = 0
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _dir: Path | None = field(default=None, repr=False)
    _log: object | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The HTTP root, e.g. ``http://127.0.0.1:8042``."""
        return f"http://127.0.0.1:{self.http_port}"

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
            "HttpPort": self.http_port,
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
                name: [aet, host, port]
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
        return cfg

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
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise OrthancUnavailable(f"Orthanc did not start: {tail}")

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
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 10 s) and delete its
        storage, index and configuration."""
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
