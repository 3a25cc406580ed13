"""The privacy rule of a send (issue 16): de-identified objects, or results
of a de-identified scan, are sent only when the user confirms; nothing is
sent otherwise, and the message names no file or patient."""

from __future__ import annotations

import numpy as np
import pytest
from _pacs_helpers import PHI_ID, PHI_NAME, make_deid_series

from napari_medcnn.cli import main
from napari_medcnn.pacs import PacsError, send
from napari_medcnn.pacs.folder import FolderPacs
from napari_medcnn.pacs.orthanc import free_port
from napari_medcnn.pacs.store import deidentified_files, refuse_deidentified


def _identified(root):
    from napari_medcnn.io.synth import write_series

    return write_series(
        np.ones((2, 8, 8)), root, patient_name=PHI_NAME, patient_id=PHI_ID,
        seed="privacy-id",
    )  # fmt: skip


def test_send_refuses_deidentified_unless_confirmed(tmp_path):
    sent = make_deid_series(tmp_path / "src", seed=91, n=3)
    junk = tmp_path / "notes.txt"
    junk.write_text("not DICOM")
    assert len(deidentified_files([sent.folder, junk])) == 3
    pacs = FolderPacs(tmp_path / "pacs", name="test-folder")
    with pytest.raises(PacsError) as info:
        send(pacs, [sent.folder])
    text = str(info.value)
    assert "test-folder" in text and "3 object(s) are de-identified" in text
    assert "confirm" in text and str(tmp_path) not in text
    assert not (tmp_path / "pacs").exists()  # nothing was sent
    result = send(pacs, [sent.folder], confirm_deidentified=True)
    assert len(result.stored) == 3 and not result.failed


def test_identified_objects_need_no_confirmation(tmp_path):
    files = _identified(tmp_path / "raw")
    assert deidentified_files(files) == []
    assert refuse_deidentified(files, "x") == []
    result = send(FolderPacs(tmp_path / "pacs"), files)
    assert len(result.stored) == 2


def test_cli_send_refuses_deidentified(tmp_path, capsys):
    """Refused before any connection (the URL has nobody listening); with
    ``--confirm-deidentified`` it gets as far as the network."""
    sent = make_deid_series(tmp_path / "src", seed=92, n=2)
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    rc = main(["pacs", "send", "--dicomweb", url, str(sent.folder)])
    err = capsys.readouterr().err
    assert rc == 2 and "2 object(s) are de-identified" in err
    assert "--confirm-deidentified" in err
    rc = main(["pacs", "send", "--dicomweb", url, "--timeout", "3",
               "--confirm-deidentified", str(sent.folder)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "cannot connect" in err
