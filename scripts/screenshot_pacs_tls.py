"""Screenshot of the PACS widget retrieving over DICOM TLS into the
encrypted cache, in a real napari window, against a real PACS (Debian's
Orthanc, DICOM TLS by DCMTK, client certificates required).

Run from the repository root, with a display (Xvfb)::

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python \\
        scripts/screenshot_pacs_tls.py [docs/pacs_tls_vault.png]

A throw-away PKI (:func:`napari_medcnn.pacs.pki.make_pki`) is made in a
temporary folder: a CA, a server certificate for 127.0.0.1 / localhost
(SAN IP and DNS) and a client certificate (server and client auth).  A
:class:`~napari_medcnn.pacs.orthanc.LocalOrthanc` is started with
:class:`~napari_medcnn.pacs.orthanc.OrthancTls` (DICOM TLS, client
certificates required) and a 3 mm slab of the shipped Colin27 T1 head,
written as a DICOM MR series of a synthetic patient, is stored in it with
C-STORE over DICOM TLS.

The **PACS** widget is then given the DIMSE node (``AET@127.0.0.1:port``)
and the TLS settings that its "TLS…" dialog sets (CA bundle, client
certificate and key, "DIMSE over TLS"; the dialog is answered by the
script, as the tests do), tests the connection (C-ECHO over TLS), searches
(patient names masked), and retrieves the series with C-GET over DICOM TLS
with "Keep retrieved series encrypted at rest" ticked: the series opens in
napari and is sealed into an encrypted cache folder (the passphrase
question is answered by the script).  The **Classify** widget classifies
it with the default model (every slice) and the window is saved.

Printed checks: the test status line, the encrypted cache's files (random
names; no ``DICM`` and no patient name or ID bytes in any of them), and
that the session cache (the plaintext copy) is gone once the panel and the
viewer are closed.  The head has no tumour: the label shows what the model
says, not a diagnosis.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _gui import pacs_and_classify, pump, wait, write_head_series

PATIENT_NAME, PATIENT_ID = "Example^Colin", "COLIN-0027"
PASSPHRASE = b"screenshot-only vault passphrase"
SERVER_NAME = "Orthanc (DICOM TLS)"


def vault_report(vault_dir: Path) -> bool:
    """Print the encrypted cache's files; returns whether none holds a
    DICOM preamble or the patient's name or ID (in its bytes or its name)."""
    ok = True
    phi = (PATIENT_NAME, PATIENT_ID, PATIENT_NAME.replace("^", " "))
    files = sorted(p for p in vault_dir.rglob("*") if p.is_file())
    print(f"encrypted cache {vault_dir.name}/: {len(files)} files")
    for p in files:
        data = p.read_bytes()
        bad = [b"DICM"] * (b"DICM" in data) + [
            v.encode() for v in phi if v.encode() in data or v in str(p)
        ]
        ok &= not bad
        flag = f"  <- {bad}" if bad else ""
        print(f"  {p.relative_to(vault_dir)}  {len(data)} bytes{flag}")
    print(f"no 'DICM', no patient name or ID in any vault file: {ok}")
    return ok and bool(files)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shot", nargs="?", default="docs/pacs_tls_vault.png")
    args = ap.parse_args()
    import os

    base = Path(tempfile.mkdtemp(prefix="medcnn-tls-"))
    # a private cache and config: nothing of the demo stays in the user's
    os.environ["XDG_CACHE_HOME"] = str(base / "cache")
    os.environ["XDG_CONFIG_HOME"] = str(base / "config")

    import napari

    from napari_medcnn.pacs import Server, connect, session_cache
    from napari_medcnn.pacs.orthanc import LocalOrthanc, OrthancTls
    from napari_medcnn.pacs.pki import make_pki
    from napari_medcnn.widgets.pacs import dialogs, encrypted

    pki = make_pki(base / "pki")
    folder = write_head_series(
        base / "series", PATIENT_NAME, PATIENT_ID, "pacs-tls-screenshot"
    )
    orthanc = LocalOrthanc(
        tls=OrthancTls(
            certificate=str(pki.server_cert),
            private_key=str(pki.server_key),
            ca_bundle=str(pki.ca),
            client_cert=str(pki.client_cert),
            client_key=str(pki.client_key),
        )
    ).start()
    tls = {"ca_bundle": str(pki.ca), "client_cert": str(pki.client_cert),
           "client_key": str(pki.client_key), "tls": True}  # fmt: skip
    address = f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
    vault_dir = base / "encrypted-cache"
    try:
        # the PACS holds the series: C-STORE over DICOM TLS
        server = Server.dimse(address, name=SERVER_NAME, timeout=30.0, **tls)
        stored = connect(server).store([folder])
        print(f"stored {len(stored.stored)} instances in Orthanc over DICOM TLS")

        # the questions the panel would ask in modal dialogs, answered here
        dialogs.ask_tls_settings = lambda parent, now: dict(tls)
        encrypted.ask_passphrase = lambda parent, folder, new: PASSPHRASE

        viewer = napari.Viewer(show=True)
        viewer.window.resize(1600, 1000)
        pdock, w, cw = pacs_and_classify(viewer)
        wait(lambda: cw.worker is None)  # the default model loads
        if cw.model is None:
            print(cw.status.text(), file=sys.stderr)
            return 1

        # the DIMSE node as a user types it, then "TLS…" (answered above)
        w.kind_combo.setCurrentText("DIMSE")
        w.address_edit.setText(address)
        w.name_edit.setText(SERVER_NAME)
        w.tls_button.click()
        assert w.server().tls and w.server().client_cert == tls["client_cert"]
        w.test()
        wait(lambda: w.worker is None)
        test_status = w.test_status.text()
        print(f"test status: {test_status}")
        if not test_status.startswith("OK:"):
            return 1
        w.set_filters(modality="MR")
        w.search()
        wait(lambda: w.worker is None)
        print(w.status.text())
        if not w.rows:
            return 1

        # keep what is retrieved encrypted at rest, in a new cache folder
        w.encrypted_box.keep_box.setChecked(True)
        w.encrypted_box.folder_edit.setText(str(vault_dir))
        w.select_rows([0])
        if not w.retrieve():
            print(w.status.text(), file=sys.stderr)
            return 1
        wait(lambda: w.worker is None)
        print(w.status.text())
        if "layer(s) added" not in w.status.text():
            return 1
        plaintext = session_cache()  # where the retrieve put the plain copy
        layer = viewer.layers[-1]
        viewer.layers.selection.active = layer

        cw.set_channels([layer])
        cw.set_scope("slices")
        if not cw.run():
            print(cw.status.text(), file=sys.stderr)
            return 1
        wait(lambda: cw.worker is None)
        print(cw.status.text())
        viewer.dims.set_point(0, float(layer.translate[0] + layer.scale[0] * 12))
        w.select_rows([0])
        pump(1.5)
        shot = Path(args.shot)
        shot.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(shot), canvas_only=False, flash=False)
        print(shot)

        vault_ok = vault_report(vault_dir)
        print(f"session cache while open: {plaintext} exists: {plaintext.exists()}")
        pdock.close()
        w.close()
        viewer.close()
        pump(0.5)
        gone = not plaintext.exists()
        print(f"session cache gone after the panel and viewer closed: {gone}")
        return 0 if vault_ok and gone else 1
    finally:
        orthanc.stop()
        shutil.rmtree(base, ignore_errors=True)  # PKI, series, vault, cache


if __name__ == "__main__":
    sys.exit(main())
