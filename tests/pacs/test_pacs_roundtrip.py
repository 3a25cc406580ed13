"""Round trips through a real Orthanc, over DICOMweb and over DIMSE.

1. Send a de-identified synthetic MR series (STOW-RS / C-STORE).
2. Find it (QIDO-RS / C-FIND, study and series level, with filters).
3. Retrieve it (WADO-RS / C-GET / C-MOVE) into a cache folder; the loaded
   volume equals the one loaded from the sent files (pixels, spacing,
   affine).
4. Classify it with the default model and explain it (Grad-CAM).
5. Send the results: the Comprehensive 3D SR and the Parametric Map from
   :mod:`napari_medcnn.export`.
6. A search by modality SR finds the SR, and it references the series.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from _pacs_helpers import PHI_ID, PHI_NAME, make_deid_series

from napari_medcnn._progress import drain
from napari_medcnn.io import load
from napari_medcnn.pacs import connect, series_dir
from napari_medcnn.pacs.dicomweb import DicomWebClient
from napari_medcnn.pacs.dimse import DimseClient


@pytest.fixture(scope="module")
def model():
    """The default (shipped) model."""
    from napari_medcnn.models.checkpoint import default_model_path, load_checkpoint

    path = default_model_path()
    if not path.exists():
        pytest.skip("the default model is not installed")
    return load_checkpoint(path, "cpu")


def _results(scan, model, out):
    """Classify and explain ``scan``; write its SR and Parametric Map into
    ``out``; returns (SR path, Parametric Map path)."""
    from napari_medcnn.export import write_classification_sr, write_parametric_map
    from napari_medcnn.inference.predict import classify_scan
    from napari_medcnn.saliency import explain

    result = drain(classify_scan(scan, model, "slice"))
    assert len(result.probabilities) == len(model.card.classes)
    cam = drain(
        explain([scan.data], model, "gradcam", None, spacing=scan.spacing,
                scope="slices", metrics=False)
    )  # fmt: skip
    out.mkdir()
    sr = write_classification_sr(result, scan, out / "sr.dcm", card=model.card)
    pm = write_parametric_map(cam, scan, out / "pm.dcm", card=model.card)
    return sr, pm


def _same_scan(got, want) -> None:
    np.testing.assert_array_equal(got.data, want.data)
    np.testing.assert_allclose(got.spacing, want.spacing, atol=1e-6)
    np.testing.assert_allclose(got.affine, want.affine, atol=1e-6)


def _check_sr_found(client, sent, sr_path) -> None:
    """Search by modality SR within the study: the SR is there and its
    evidence references the sent series."""
    studies = client.find_studies(study_uid=sent.study_uid, modality="SR")
    assert [s.study_uid for s in studies] == [sent.study_uid]
    found = client.find_series(sent.study_uid, modality="SR")
    sr = pydicom.dcmread(sr_path)
    assert [s.series_uid for s in found] == [str(sr.SeriesInstanceUID)]
    evidence = {
        str(item.SeriesInstanceUID)
        for seq in ("CurrentRequestedProcedureEvidenceSequence",
                    "PertinentOtherEvidenceSequence")
        for study in sr.get(seq, [])
        for item in study.ReferencedSeriesSequence
    }  # fmt: skip
    assert sent.series_uid in evidence
    pm = client.find_series(sent.study_uid, modality="OT") or client.find_series(
        sent.study_uid, description="*saliency*"
    )
    assert pm, "the Parametric Map is in the study"


def test_dicomweb_round_trip(orthanc, model, tmp_path):
    sent = make_deid_series(tmp_path / "src", seed=1)
    client = connect(orthanc.dicomweb())
    assert isinstance(client, DicomWebClient)
    assert client.echo() >= 0

    stored = client.store(sent.files)
    assert not stored.failed and len(stored.stored) == len(sent.files)

    studies = client.find_studies(study_uid=sent.study_uid, modality="MR")
    assert [s.study_uid for s in studies] == [sent.study_uid]
    row = studies[0].display_row()
    assert PHI_NAME not in str(row) and "Janet" not in repr(studies[0])
    assert row["patient"].startswith("patient ")
    assert not client.find_studies(study_uid=sent.study_uid, modality="CT")
    assert not client.find_studies(patient_id=PHI_ID)  # it was de-identified
    series = client.find_series(sent.study_uid, modality="MR")
    assert [s.series_uid for s in series] == [sent.series_uid]
    assert series[0].n_instances == len(sent.files)

    events = []
    folder = drain(
        client.retrieve_series(sent.study_uid, sent.series_uid, tmp_path / "cache"),
        events.append,
    )
    assert folder == series_dir(tmp_path / "cache", sent.study_uid, sent.series_uid)
    assert events[-1] == ("retrieve", len(sent.files), len(sent.files))
    scan = load(folder)[0]
    _same_scan(scan, load(sent.folder)[0])

    sr_path, pm_path = _results(scan, model, tmp_path / "results")
    stored = client.store([sr_path, pm_path])
    assert not stored.failed and len(stored.stored) == 2
    _check_sr_found(client, sent, sr_path)


@pytest.mark.parametrize("method", ["get", "move"])
def test_dimse_round_trip(orthanc, model, tmp_path, method):
    sent = make_deid_series(tmp_path / "src", seed=10 + len(method))
    client = connect(orthanc.dimse(retrieve=method))
    assert isinstance(client, DimseClient)
    assert client.echo() >= 0

    stored = client.store(sent.files)
    assert not stored.failed and len(stored.stored) == len(sent.files)

    studies = client.find_studies(study_uid=sent.study_uid, modality="MR")
    assert [s.study_uid for s in studies] == [sent.study_uid]
    assert "patient " in studies[0].display_row()["patient"]
    assert not client.find_studies(patient_id=PHI_ID)
    series = client.find_series(sent.study_uid)
    assert [s.series_uid for s in series] == [sent.series_uid]

    events = []
    folder = drain(
        client.retrieve_series(sent.study_uid, sent.series_uid, tmp_path / "cache"),
        events.append,
    )
    assert len(list(folder.glob("*.dcm"))) == len(sent.files)
    assert events and events[-1][1] == len(sent.files)
    scan = load(folder)[0]
    _same_scan(scan, load(sent.folder)[0])

    if method == "move":
        return  # the result objects go the same way for both: sent once
    sr_path, pm_path = _results(scan, model, tmp_path / "results")
    stored = client.store([sr_path, pm_path])
    assert not stored.failed, stored.failed
    assert len(stored.stored) == 2
    _check_sr_found(client, sent, sr_path)


def test_retrieve_replaces_an_older_copy(orthanc, tmp_path):
    """A second retrieve of the same series replaces the cached copy whole."""
    sent = make_deid_series(tmp_path / "src", seed=30, n=3)
    client = connect(orthanc.dicomweb())
    client.store(sent.files)
    dest = tmp_path / "cache"
    first = drain(client.retrieve_series(sent.study_uid, sent.series_uid, dest))
    (first / "stale.txt").write_text("old")
    again = drain(client.retrieve_series(sent.study_uid, sent.series_uid, dest))
    assert again == first and not (again / "stale.txt").exists()
    assert len(list(again.glob("*.dcm"))) == 3
    assert sorted(p.name for p in (dest / sent.study_uid).iterdir()) == [
        sent.series_uid
    ]
