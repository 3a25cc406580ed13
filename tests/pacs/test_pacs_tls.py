"""PACS connections in transit: DICOMweb over HTTPS with a client
certificate, and DIMSE over DICOM TLS, against a real Orthanc.

The module makes a throw-away PKI with ``cryptography`` (a CA, a server
certificate for 127.0.0.1 / localhost, a client certificate, and an
unrelated "wrong" CA with its own client certificate) and starts one
:class:`~napari_medcnn.pacs.orthanc.LocalOrthanc` with DICOM TLS (Orthanc's
own, DCMTK) and HTTPS, client certificates required on both, and our
Storage SCP registered as a DICOM TLS modality for C-MOVE.  HTTPS is served
by LocalOrthanc's TLS front because Orthanc's own HTTPS crashes Debian 12's
Orthanc 1.10.1 (:func:`test_orthanc_own_https` shows it, and skips saying
so).

Round trips: STOW-RS, QIDO-RS and WADO-RS over HTTPS; C-STORE, C-FIND,
C-GET and C-MOVE (to our TLS Storage SCP) over DICOM TLS; the same through
the CLI.  Refusals, each a one-line :class:`PacsError`: a wrong CA, no
client certificate, a client certificate of another CA, a plain DIMSE
association to the TLS port, a missing certificate file.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from _pacs_helpers import CALLING_AET

from napari_medcnn._progress import drain
from napari_medcnn.pacs import PacsError, Server, connect, load_profiles
from napari_medcnn.pacs.orthanc import (
    LocalOrthanc,
    OrthancTls,
    OrthancUnavailable,
    free_port,
)
from napari_medcnn.pacs.pki import Pki, make_pki
from napari_medcnn.pacs.tls import TlsConfigError, client_context, server_context

x509 = pytest.importorskip("cryptography.x509")


@dataclass
class TlsPacs:
    """The TLS Orthanc, its PKI, and profiles to reach it."""

    orthanc: LocalOrthanc
    scp_port: int
    pki: Pki

    def dicomweb(self, **kwargs) -> Server:
        opts = {
            "url": self.orthanc.dicomweb_url,
            "ca_bundle": str(self.pki.ca),
            "client_cert": str(self.pki.client_cert),
            "client_key": str(self.pki.client_key),
            "timeout": 10.0,
            **kwargs,
        }
        return Server("tls-orthanc", **opts)

    def dimse(self, **kwargs) -> Server:
        opts = {
            "calling_aet": CALLING_AET,
            "storage_port": self.scp_port,
            "tls": True,
            "ca_bundle": str(self.pki.ca),
            "client_cert": str(self.pki.client_cert),
            "client_key": str(self.pki.client_key),
            "timeout": 10.0,
            **kwargs,
        }
        address = f"{self.orthanc.aet}@127.0.0.1:{self.orthanc.dicom_port}"
        return Server.dimse(address, name="tls-orthanc-dimse", **opts)

    def dimse_args(self) -> list[str]:
        o = self.orthanc
        return ["--dimse", f"{o.aet}@127.0.0.1:{o.dicom_port}", "--tls",
                "--ca-bundle", str(self.pki.ca), "--client-cert",
                str(self.pki.client_cert), "--client-key", str(self.pki.client_key),
                "--calling-aet", CALLING_AET, "--storage-port",
                str(self.scp_port)]  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_pacs(pki):
    """One Orthanc for the module: DICOM TLS and HTTPS, client certificates
    required, our Storage SCP a DICOM TLS modality."""
    scp_port = free_port()
    server = LocalOrthanc(
        modalities={"medcnn": (CALLING_AET, "127.0.0.1", scp_port)},
        tls=OrthancTls(
            certificate=str(pki.server_cert),
            private_key=str(pki.server_key),
            ca_bundle=str(pki.ca),
            client_cert=str(pki.client_cert),
            client_key=str(pki.client_key),
        ),
    )
    try:
        server.start()
    except OrthancUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield TlsPacs(server, scp_port, pki)
    finally:
        server.stop()


def _testdata(name: str) -> Path:
    path = pydicom.data.get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom's test file {name} is not installed")
    return Path(path)


def _one_line_error(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and "Traceback" not in text
    assert "BEGIN" not in text and "PRIVATE KEY" not in text
    return text


# -- round trips ---------------------------------------------------------------
def test_https_dicomweb_round_trip(tls_pacs, tmp_path):
    """STOW-RS, QIDO-RS and WADO-RS over HTTPS with a client certificate
    (separate key file, and key and certificate in one file)."""
    src = _testdata("CT_small.dcm")
    ds = pydicom.dcmread(src)
    client = connect(tls_pacs.dicomweb())
    assert client.echo() >= 0
    result = client.store([src])
    assert result.stored == [str(ds.SOPInstanceUID)] and not result.failed
    combined = connect(
        tls_pacs.dicomweb(client_cert=str(tls_pacs.pki.client_combined),
                          client_key=None)
    )  # fmt: skip
    studies = combined.find_studies(study_uid=str(ds.StudyInstanceUID))
    assert [s.study_uid for s in studies] == [str(ds.StudyInstanceUID)]
    series = client.find_series(str(ds.StudyInstanceUID))
    assert [s.series_uid for s in series] == [str(ds.SeriesInstanceUID)]
    study, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    folder = drain(client.retrieve_series(study, series_uid, tmp_path / "web"))
    (got,) = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    assert got.pixel_array.tobytes() == ds.pixel_array.tobytes()


@pytest.mark.parametrize("method", ["get", "move"])
def test_dimse_tls_round_trip(tls_pacs, tmp_path, method):
    """C-STORE and C-FIND over DICOM TLS, then C-GET, or C-MOVE to our own
    Storage SCP, which Orthanc reaches over DICOM TLS too (its
    ``UseDicomTls`` modality; our SCP verifies Orthanc's certificate)."""
    src = _testdata("MR_small.dcm")
    ds = pydicom.dcmread(src)
    client = connect(tls_pacs.dimse(retrieve=method))
    assert client.echo() >= 0
    assert client.store([src]).stored == [str(ds.SOPInstanceUID)]
    studies = client.find_studies(study_uid=str(ds.StudyInstanceUID))
    assert [s.study_uid for s in studies] == [str(ds.StudyInstanceUID)]
    series = client.find_series(str(ds.StudyInstanceUID))
    assert str(ds.SeriesInstanceUID) in [s.series_uid for s in series]
    study, series_uid = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    folder = drain(client.retrieve_series(study, series_uid, tmp_path / method))
    (got,) = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    assert got.pixel_array.tobytes() == ds.pixel_array.tobytes()


def test_dimse_tls_by_host_name(tls_pacs):
    """The server certificate names ``localhost`` too: the host name check
    passes for it."""
    assert connect(tls_pacs.dimse().with_(host="localhost")).echo() >= 0


def test_cli_round_trip_over_tls(tls_pacs, tmp_path, capsys, monkeypatch):
    """``pacs send``/``find``/``get`` with ``--tls --ca-bundle --client-cert
    --client-key`` (DIMSE) and the same options over HTTPS; the profile
    saved keeps the paths, and no key material is printed."""
    from napari_medcnn.cli import main

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    src = _testdata("CT_small.dcm")
    ds = pydicom.dcmread(src)
    dimse = tls_pacs.dimse_args()
    assert main(["pacs", "send", *dimse, "--save-profile", "tls", str(src)]) == 0
    assert main(["pacs", "find", *dimse, "--json"]) == 0
    out = capsys.readouterr().out
    assert str(ds.StudyInstanceUID) in out
    assert main(["pacs", "get", "--profile", "tls", "--retrieve", "move",
                 "--study", str(ds.StudyInstanceUID), "--out",
                 str(tmp_path / "got")]) == 0  # fmt: skip
    assert list((tmp_path / "got").rglob("*.dcm"))
    profile = load_profiles()["tls"]
    assert profile.tls and profile.client_cert == str(tls_pacs.pki.client_cert)
    saved = next((tmp_path / "config").rglob("pacs_servers.json")).read_text()
    assert "PRIVATE KEY" not in saved and "BEGIN" not in saved
    pki = tls_pacs.pki
    web = ["--dicomweb", tls_pacs.orthanc.dicomweb_url, "--ca-bundle",
           str(pki.ca), "--client-cert", str(pki.client_combined)]  # fmt: skip
    assert main(["pacs", "echo", *web]) == 0
    out = capsys.readouterr()
    assert "PRIVATE KEY" not in out.out + out.err


# -- refusals --------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_wrong_ca_is_refused(tls_pacs, protocol):
    """A CA bundle that did not sign the server's certificate: "certificate
    not trusted", with the hint to give the right one."""
    server = getattr(tls_pacs, protocol)(ca_bundle=str(tls_pacs.pki.wrong_ca))
    with pytest.raises(PacsError) as exc_info:
        connect(server).echo()
    text = _one_line_error(exc_info)
    assert "handshake failed: certificate not trusted" in text
    assert "--ca-bundle" in text


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_system_cas_do_not_trust_the_test_ca(tls_pacs, protocol):
    server = getattr(tls_pacs, protocol)(ca_bundle=None)
    with pytest.raises(PacsError, match="certificate not trusted"):
        connect(server).echo()


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_missing_client_cert_is_refused(tls_pacs, protocol):
    """Orthanc requires a client certificate: without one, the message
    says so and names the option."""
    server = getattr(tls_pacs, protocol)(client_cert=None, client_key=None)
    with pytest.raises(PacsError) as exc_info:
        connect(server).echo()
    text = _one_line_error(exc_info)
    assert "requires a client certificate" in text and "--client-cert" in text


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_client_cert_of_another_ca_is_refused(tls_pacs, protocol):
    server = getattr(tls_pacs, protocol)(
        client_cert=str(tls_pacs.pki.wrong_client_cert),
        client_key=str(tls_pacs.pki.wrong_client_key),
    )
    with pytest.raises(PacsError) as exc_info:
        connect(server).echo()
    assert "refused our client certificate" in _one_line_error(exc_info)


def test_plain_dimse_to_the_tls_port(tls_pacs):
    """A plain association to Orthanc's DICOM TLS port: "expects DICOM
    TLS", not "no answer"."""
    with pytest.raises(PacsError) as exc_info:
        connect(tls_pacs.dimse(tls=False)).echo()
    text = _one_line_error(exc_info)
    assert "expects DICOM TLS" in text and "--tls" in text


def test_plain_http_to_the_https_port(tls_pacs):
    url = tls_pacs.orthanc.dicomweb_url.replace("https://", "http://")
    server = Server("plain", url=url, timeout=5.0)
    with pytest.raises(PacsError) as exc_info:
        connect(server).echo()
    _one_line_error(exc_info)


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_missing_or_bad_files_are_said_before_connecting(tls_pacs, tmp_path, protocol):
    make = getattr(tls_pacs, protocol)
    with pytest.raises(PacsError, match="client certificate .*nope.crt not found"):
        connect(make(client_cert=str(tmp_path / "nope.crt")))
    with pytest.raises(PacsError, match="key does not match"):
        connect(make(client_key=str(tls_pacs.pki.wrong_client_key)))
    with pytest.raises(PacsError, match="encrypted: give an unencrypted PEM key"):
        connect(make(client_key=str(tls_pacs.pki.encrypted_key)))
    with pytest.raises(PacsError, match="no usable PEM certificate"):
        connect(make(ca_bundle=str(tls_pacs.pki.client_key)))


def test_cli_refusals(tls_pacs, tmp_path, capsys):
    """Exit status 2 with one clear line: a missing certificate file, a
    wrong CA."""
    from napari_medcnn.cli import main

    args = tls_pacs.dimse_args()
    missing = [*args, "--client-cert", str(tmp_path / "missing.crt")]
    assert main(["pacs", "echo", *missing]) == 2
    err = capsys.readouterr().err
    assert "client certificate" in err and "missing.crt not found" in err
    assert "--client-cert" in err and "Traceback" not in err
    wrong = [*args, "--ca-bundle", str(tls_pacs.pki.wrong_ca)]
    assert main(["pacs", "echo", *wrong]) == 2
    err = capsys.readouterr().err
    assert "certificate not trusted" in err and "Traceback" not in err


# -- Orthanc's own HTTPS -----------------------------------------------------------
def test_orthanc_own_https(pki):
    """Orthanc's own HTTPS (``SslEnabled``), without the TLS front: Debian
    12's Orthanc 1.10.1 crashes on the first HTTPS request (SIGSEGV), so
    this skips with the reason; where it works, QIDO-RS over it must."""
    server = LocalOrthanc(
        startup_timeout=10.0,
        tls=OrthancTls(
            certificate=str(pki.server_cert), private_key=str(pki.server_key),
            ca_bundle=str(pki.ca), client_cert=str(pki.client_cert),
            client_key=str(pki.client_key), orthanc_https=True,
        ),
    )  # fmt: skip
    try:
        server.start()
    except OrthancUnavailable as exc:
        if "exit status -11" in str(exc):
            pytest.skip(
                "Orthanc's own HTTPS crashes Debian 12's Orthanc 1.10.1: its "
                "libcivetweb1 1.15 looks up SSL_get_peer_certificate, which "
                "OpenSSL 3 does not export, and calls a null pointer on the "
                "first HTTPS request; HTTPS is tested through LocalOrthanc's "
                "TLS front"
            )
        pytest.skip(str(exc)[:300])
    try:
        client = connect(
            Server("own-https", url=server.dicomweb_url, ca_bundle=str(pki.ca),
                   client_cert=str(pki.client_cert),
                   client_key=str(pki.client_key))
        )  # fmt: skip
        assert client.find_studies() == []
    finally:
        server.stop()


# -- the contexts themselves, and profiles -------------------------------------------
def test_contexts(pki):
    ctx = client_context(pki.ca, pki.client_cert, pki.client_key)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    srv = server_context(pki.client_combined, None, pki.ca)
    assert srv.verify_mode == ssl.CERT_REQUIRED
    assert server_context(pki.client_cert, pki.client_key).verify_mode == ssl.CERT_NONE
    with pytest.raises(TlsConfigError, match="needs its client certificate"):
        client_context(pki.ca, None, pki.client_key)
    with pytest.raises(TlsConfigError, match="give the key with --client-key"):
        client_context(pki.ca, pki.client_cert)


def test_profiles_keep_paths_and_old_ones_load(tmp_path, pki):
    """TLS settings are paths in the profile; a profile saved before them
    still loads (no TLS), and a profile without TLS is written as before."""
    import json

    from napari_medcnn.pacs import save_profile

    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({
        "old": {"kind": "dimse", "host": "pacs", "port": 104, "called_aet": "P",
                "ca_bundle": "/etc/ca.pem", "timeout": 30.0},
    }))  # fmt: skip
    old = load_profiles(path)["old"]
    assert old.tls is False and old.client_cert is None
    assert "tls" not in old.to_dict() and "client_cert" not in old.to_dict()
    node = Server.dimse("P@pacs:2762", name="new", tls=True,
                        ca_bundle=str(pki.ca), client_cert=pki.client_cert,
                        client_key=pki.client_key)  # fmt: skip
    save_profile(node, path)
    raw = json.loads(path.read_text())["new"]
    assert raw["tls"] is True and raw["client_key"] == str(pki.client_key)
    assert "PRIVATE" not in path.read_text()
    assert load_profiles(path)["new"] == node
    with pytest.raises(ValueError, match="needs its client certificate"):
        Server.dimse("P@pacs:2762", client_key="/k.pem")
    with pytest.raises(ValueError, match="https://"):
        Server("w", url="http://pacs/dicom-web", client_cert="/c.pem")


# -- the PACS panel's TLS dialog ---------------------------------------------------
@pytest.mark.gui
def test_widget_tls_settings(
    make_napari_viewer, qtbot, tls_pacs, tmp_path, monkeypatch
):
    """The panel's "TLS…" dialog sets the CA bundle, the client certificate
    and key and "DIMSE over TLS"; "Test" then passes over DICOM TLS, and the
    saved profile keeps the paths."""
    from napari_medcnn.widgets.pacs import dialogs

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    pki, o = tls_pacs.pki, tls_pacs.orthanc
    settings = {"ca_bundle": str(pki.ca), "client_cert": str(pki.client_cert),
                "client_key": str(pki.client_key), "tls": True}  # fmt: skip
    monkeypatch.setattr(dialogs, "ask_tls_settings", lambda parent, now: settings)
    viewer = make_napari_viewer()
    _dock, w = viewer.window.add_plugin_dock_widget("napari-medcnn", "PACS")
    w.kind_combo.setCurrentText("DIMSE")
    w.address_edit.setText(f"{o.aet}@127.0.0.1:{o.dicom_port}")
    w.calling_aet_edit.setText(CALLING_AET)
    w.name_edit.setText("tls-node")
    assert w.tls_button.text() == "TLS…"  # nothing set yet
    w.tls_button.click()
    assert w.tls_button.text() == "TLS: on"  # the state shows on the panel
    assert str(pki.client_cert) in w.tls_button.toolTip()
    server = w.server()
    assert server.tls and server.client_cert == str(pki.client_cert)
    assert w.test()
    qtbot.waitUntil(lambda: w.worker is None, timeout=30_000)
    assert w.test_status.text().startswith("OK:"), w.test_status.text()
    w.save_profile()
    assert load_profiles()["tls-node"].client_key == str(pki.client_key)
    wrong = {**settings, "ca_bundle": str(pki.wrong_ca)}
    monkeypatch.setattr(dialogs, "ask_tls_settings", lambda parent, now: wrong)
    w.tls_button.click()
    assert w.test()
    qtbot.waitUntil(lambda: w.worker is None, timeout=30_000)
    assert "certificate not trusted" in w.test_status.text()


@pytest.mark.gui
def test_tls_dialog_returns_paths_and_the_flag(qtbot):
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication, QCheckBox, QLineEdit

    from napari_medcnn.widgets.pacs import dialogs

    def answer() -> None:
        dialog = QApplication.activeModalWidget()
        dialog.findChildren(QCheckBox)[0].setChecked(True)
        dialog.findChildren(QLineEdit)[1].setText("/pki/client.pem")
        dialog.accept()

    QTimer.singleShot(200, answer)
    got = dialogs.ask_tls_settings(None, {"ca_bundle": "/pki/ca.pem"})
    assert got == {"ca_bundle": "/pki/ca.pem", "client_cert": "/pki/client.pem",
                   "client_key": None, "tls": True}  # fmt: skip
    QTimer.singleShot(200, lambda: QApplication.activeModalWidget().reject())
    assert dialogs.ask_tls_settings(None, {}) is None
