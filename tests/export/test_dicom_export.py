"""DICOM output of results (``napari_medcnn.export``): SR, Parametric Map,
SEG and the overlay Secondary Capture for a DICOM series and a single-file
scan.  Each written file passes ``dciodvfy`` (dicom3tools) without errors,
re-reads with highdicom, lies on its source (frame positions and
orientation), references the right series and instances, and belongs to
the source's patient and study; a de-identified source gives a
de-identified result; NIfTI and PNG inputs are refused with a clear
message; the ``classify --sr`` and ``explain --out map.dcm`` commands work
end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from _helpers import make_checkpoint

from napari_medcnn._progress import drain
from napari_medcnn.cli import main
from napari_medcnn.export import (
    Algorithm,
    ExportError,
    classification_sr,
    saliency_parametric_map,
    source_images,
    write_classification_sr,
    write_parametric_map,
    write_secondary_capture,
    write_segmentation,
)
from napari_medcnn.export.common import SCHEME, device_uid
from napari_medcnn.inference.predict import classify_scan
from napari_medcnn.io import load
from napari_medcnn.models.checkpoint import load_checkpoint
from napari_medcnn.saliency import explain

DCIODVFY = shutil.which("dciodvfy")
PHI = ("Doe", "Jane", "PID-7788")
#: what dciodvfy said about each file written here: {object type: {warning}}
WARNINGS: dict[str, set[str]] = {}


def dciodvfy(path: Path, kind: str) -> None:
    """Run dciodvfy on ``path``: no line with "Error"; warnings collected."""
    if DCIODVFY is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    run = subprocess.run(
        [DCIODVFY, str(path)], capture_output=True, text=True, timeout=120
    )
    lines = (run.stdout + run.stderr).splitlines()
    errors = [ln for ln in lines if "Error" in ln]
    assert not errors, f"dciodvfy {path.name}:\n" + "\n".join(lines)
    WARNINGS.setdefault(kind, set()).update(ln for ln in lines if "Warning" in ln)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A CT series of Doe^Jane (5 oblique slices, files in shuffled order),
    its de-identified copy, a single-file CT, a NIfTI and a PNG, a tiny
    slice model, its classification of the series and a Grad-CAM map."""
    from napari_medcnn.deid.run import deidentify
    from napari_medcnn.io.synth import write_series

    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 800, size=(5, 24, 20)).astype(np.float64)
    vol[:, 8:16, 6:14] += 600
    c, s = np.cos(0.3), np.sin(0.3)
    write_series(
        vol, root / "Doe_Jane" / "ct", spacing=(2.5, 0.8, 0.9),
        origin=(-10.0, 20.0, 35.0), row_dir=(c, s, 0.0), col_dir=(0.0, 0.0, -1.0),
        modality="CT", patient_name="Doe^Jane", patient_id="PID-7788",
        file_order=[3, 0, 4, 1, 2], series_description="head",
    )  # fmt: skip
    deidentify([root / "Doe_Jane" / "ct"], root / "deid")
    ckpt = make_checkpoint(root / "model")
    loaded = load_checkpoint(ckpt)
    scan = load(root / "Doe_Jane" / "ct", include_phi=False)[0]
    result = drain(classify_scan(scan, loaded, "slice"))
    cam = drain(
        explain([scan.data], loaded, "gradcam", None, spacing=scan.spacing,
                scope="slices", metrics=False)
    )  # fmt: skip
    nifti = root / "scan.nii.gz"
    from napari_medcnn.saliency.export import write_nifti

    write_nifti(nifti, vol, scan.affine)
    png = root / "scan.png"
    from PIL import Image

    Image.fromarray((vol[0] / vol.max() * 255).astype(np.uint8)).save(png)
    single = Path(pydicom.data.get_testdata_file("CT_small.dcm", download=False))
    return {
        "root": root, "ckpt": ckpt, "loaded": loaded, "scan": scan,
        "result": result, "cam": cam, "nifti": nifti, "png": png,
        "single": single, "deid": root / "deid",
    }  # fmt: skip


def _sorted_sources(folder: Path) -> list[pydicom.Dataset]:
    """The series' datasets sorted by position along the slice normal."""
    dss = [pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm"))]

    def key(ds):
        iop = np.asarray(ds.ImageOrientationPatient, float)
        return float(np.cross(iop[:3], iop[3:]) @ np.asarray(ds.ImagePositionPatient))

    return sorted(dss, key=key)


def _same_patient_and_study(obj: pydicom.Dataset, src: pydicom.Dataset) -> None:
    for kw in ("PatientID", "PatientName", "StudyInstanceUID"):
        assert str(obj.get(kw)) == str(src.get(kw)), kw


def _assert_common(obj: pydicom.Dataset, task: str, label: str) -> None:
    assert obj.SeriesDescription == f"napari-medcnn {task} — not for diagnostic use"
    assert obj.ContentLabel == label
    assert obj.Manufacturer == "napari-medcnn"
    schemes = [
        it.CodingSchemeDesignator for it in obj.CodingSchemeIdentificationSequence
    ]
    assert SCHEME in schemes


def _assert_frames_on_source(obj: pydicom.Dataset, sources: list) -> None:
    """Each frame's position and orientation equal its source slice's, and
    it references that slice's instance."""
    shared = obj.SharedFunctionalGroupsSequence[0]
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    for frame in obj.PerFrameFunctionalGroupsSequence:
        pos = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0]
        src = by_uid[str(ref.ReferencedSOPInstanceUID)]
        np.testing.assert_allclose(pos, np.asarray(src.ImagePositionPatient, float))
        np.testing.assert_allclose(iop, np.asarray(src.ImageOrientationPatient))
    series = obj.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == sources[0].SeriesInstanceUID


# -- sources ----------------------------------------------------------------------
def test_sources_sorted_and_matched(env):
    src = source_images(env["scan"])
    ref = _sorted_sources(env["root"] / "Doe_Jane" / "ct")
    assert [d.SOPInstanceUID for d in src.datasets] == [d.SOPInstanceUID for d in ref]
    for z in range(5):  # scan slice z lies where its source instance does
        ds, frame = src.dataset_of(z)
        want = env["scan"].affine @ np.array([z, 0, 0, 1.0])
        np.testing.assert_allclose(ds.ImagePositionPatient, want[:3], atol=1e-3)
        assert frame is None


@pytest.mark.parametrize("kind", ["nifti", "png"])
def test_no_dicom_source_refused(env, kind):
    scan = load(env[kind])[0]
    with pytest.raises(ExportError, match=r"no DICOM source") as err:
        classification_sr(env["result"], scan)
    assert env[kind].name in str(err.value)
    with pytest.raises(ExportError, match=env[kind].name):
        saliency_parametric_map(env["cam"], scan)
    with pytest.raises(ExportError, match="no DICOM source files are known"):
        source_images({"source_paths": []}, name="Labels")


# -- SR ---------------------------------------------------------------------------
def test_sr_of_series(env, tmp_path):
    loaded, result = env["loaded"], env["result"]
    path = write_classification_sr(result, env["scan"], tmp_path, card=loaded.card)
    assert path.parent == tmp_path and not any(p in path.name for p in PHI)
    dciodvfy(path, "Comprehensive 3D SR")
    sr = hd.sr.srread(path)
    sources = _sorted_sources(env["root"] / "Doe_Jane" / "ct")
    _same_patient_and_study(sr, sources[0])
    assert str(sr.PatientName) == "Doe^Jane"
    _assert_common(sr, "classification", "MEDCNN_CLASS")
    ev = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert ev.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {it.ReferencedSOPInstanceUID for it in ev.ReferencedSOPSequence} == {
        d.SOPInstanceUID for d in sources
    }
    (observer,) = sr.content.get_observer_contexts()
    attrs = observer.observer_identifying_attributes
    assert attrs.uid == device_uid(loaded.card.model_id)
    assert device_uid(loaded.card.model_id) != device_uid("retrained")
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 1 + len(result.classes) + 5
    main_group = groups[0]
    assert main_group.finding_type.value == result.label
    assert main_group.finding_type.scheme_designator == SCHEME
    (prob, *_rest) = main_group.get_measurements()
    assert prob.name.meaning == "Probability"
    assert prob.unit.value == "{probability}"
    assert prob.value == pytest.approx(result.probabilities[result.index], abs=1e-6)
    names = {m.name.value for m in main_group.get_measurements()}
    assert "UNCERTAINTY" in names
    for z, g in enumerate(groups[-5:]):  # per slice: its own source instance
        (img,) = g.source_images
        uid = img.referenced_sop_instance_uid
        assert uid == sources[z].SOPInstanceUID
        k = int(np.argmax(result.slice_probabilities[z]))
        assert g.finding_type.meaning == result.classes[k]
    assert sr.Manufacturer == "napari-medcnn"
    assert sr.SoftwareVersions == loaded.card.model_id


def test_sr_of_single_file(env, tmp_path):
    scan = load(env["single"], include_phi=False)[0]
    result = drain(classify_scan(scan, env["loaded"], "slice"))
    path = write_classification_sr(result, scan, tmp_path / "one.dcm")
    dciodvfy(path, "Comprehensive 3D SR")
    sr = hd.sr.srread(path)
    src = pydicom.dcmread(env["single"])
    _same_patient_and_study(sr, src)
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 1 + len(result.classes)  # no per-slice groups
    (img,) = groups[0].source_images
    assert img.referenced_sop_instance_uid == src.SOPInstanceUID


def test_deidentified_source_gives_deidentified_sr(env, tmp_path):
    scan = load(env["deid"], include_phi=False)[0]
    result = drain(classify_scan(scan, env["loaded"], "slice"))
    path = write_classification_sr(result, scan, tmp_path)
    dciodvfy(path, "Comprehensive 3D SR")
    sr = pydicom.dcmread(path)
    src = pydicom.dcmread(scan.source_paths[0])
    assert src.PatientIdentityRemoved == "YES"
    assert sr.PatientIdentityRemoved == "YES"
    assert list(sr.DeidentificationMethod) == list(src.DeidentificationMethod)
    _same_patient_and_study(sr, src)
    pm_path = write_parametric_map(env["cam"], scan, tmp_path / "map.dcm")
    labels = np.zeros(scan.data.shape, np.uint8)
    labels[2, 8:16, 6:14] = 1
    seg_path = write_segmentation(labels, scan, tmp_path / "seg.dcm")
    for obj_path in (path, pm_path, seg_path):
        obj = pydicom.dcmread(obj_path)
        assert obj.PatientIdentityRemoved == "YES"
        _same_patient_and_study(obj, src)
        raw = obj_path.read_bytes()
        assert not any(p.encode() in raw for p in PHI)


def test_sr_of_sequence_model(env, tmp_path):
    """A CNN+RNN in volume scope: per-slice probabilities, one group per
    slice referencing its instance."""
    seq = load_checkpoint(make_checkpoint(tmp_path / "seq", kind="sequence"))
    result = drain(classify_scan(env["scan"], seq, "volume"))
    assert result.slice_probabilities is not None
    path = write_classification_sr(result, env["scan"], tmp_path / "seq.dcm")
    dciodvfy(path, "Comprehensive 3D SR")
    groups = hd.sr.srread(path).content.get_image_measurement_groups()
    sources = _sorted_sources(env["root"] / "Doe_Jane" / "ct")
    assert len(groups) == 1 + len(result.classes) + 5
    uids = [g.source_images[0].referenced_sop_instance_uid for g in groups[-5:]]
    assert uids == [d.SOPInstanceUID for d in sources]


# -- Parametric Map and Secondary Capture ------------------------------------------
def test_parametric_map_of_series(env, tmp_path):
    cam, loaded = env["cam"], env["loaded"]
    path = write_parametric_map(
        cam, env["scan"], tmp_path / "map.dcm", card=loaded.card
    )
    dciodvfy(path, "Parametric Map")
    pm = hd.pm.ParametricMap.from_file(path)
    sources = _sorted_sources(env["root"] / "Doe_Jane" / "ct")
    _same_patient_and_study(pm, sources[0])
    _assert_common(pm, "saliency", "MEDCNN_CAM")
    _assert_frames_on_source(pm, sources)
    assert pm.NumberOfFrames == 5
    frames = pydicom.dcmread(path).pixel_array
    assert frames.dtype == np.float32
    by_uid = {}
    for i, f in enumerate(pm.PerFrameFunctionalGroupsSequence):
        ref = f.DerivationImageSequence[0].SourceImageSequence[0]
        by_uid[ref.ReferencedSOPInstanceUID] = frames[i]
    for z, ds in enumerate(sources):  # the map's slice z on source slice z
        np.testing.assert_allclose(by_uid[ds.SOPInstanceUID], cam.map[z], atol=1e-6)
    rwvm = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert rwvm.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeMeaning == (
        "Class activation"
    )
    assert rwvm.LUTLabel == "CAM"


def test_parametric_map_of_single_file(env, tmp_path):
    scan = load(env["single"], include_phi=False)[0]
    cam = drain(
        explain([scan.data], env["loaded"], "gradcam", None, spacing=scan.spacing,
                metrics=False)
    )  # fmt: skip
    path = write_parametric_map(cam, scan, tmp_path / "map.dcm")
    dciodvfy(path, "Parametric Map")
    pm = hd.pm.ParametricMap.from_file(path)
    src = pydicom.dcmread(env["single"])
    _same_patient_and_study(pm, src)
    _assert_frames_on_source(pm, [src])
    sc = write_secondary_capture(cam, scan, scan.data, tmp_path / "sc.dcm")
    dciodvfy(sc, "Secondary Capture (overlay)")


def test_overlay_secondary_capture(env, tmp_path):
    scan = env["scan"]
    path = write_secondary_capture(
        env["cam"], scan, scan.data, tmp_path / "sc.dcm", slice_index=2,
        window=scan.window,
    )  # fmt: skip
    dciodvfy(path, "Secondary Capture (overlay)")
    sc = hd.imread(path)  # highdicom re-reads it
    sources = _sorted_sources(env["root"] / "Doe_Jane" / "ct")
    _same_patient_and_study(sc, sources[0])
    assert sc.PhotometricInterpretation == "RGB"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == (
        sources[2].SOPInstanceUID
    )


# -- SEG ----------------------------------------------------------------------------
def test_binary_seg_of_series(env, tmp_path):
    labels = np.zeros(env["scan"].data.shape, np.uint8)
    labels[1:4, 8:16, 6:14] = 1
    labels[2, 2:5, 2:5] = 2
    path = write_segmentation(labels, env["scan"], tmp_path, segment_names=["lesion"])
    dciodvfy(path, "Segmentation (BINARY)")
    seg = hd.seg.segread(path)
    sources = _sorted_sources(env["root"] / "Doe_Jane" / "ct")
    _same_patient_and_study(seg, sources[0])
    _assert_common(seg, "segmentation", "MEDCNN_SEG")
    _assert_frames_on_source(seg, sources)
    assert seg.SegmentationType == "BINARY" and seg.number_of_segments == 2
    assert seg.SegmentSequence[0].SegmentLabel == "lesion"
    for z in (1, 2, 3):  # the segments lie on the source slices they were drawn on
        got = seg.get_pixels_by_source_instance(
            [sources[z].SOPInstanceUID], combine_segments=True
        )[0]
        np.testing.assert_array_equal(got, labels[z])


def test_fractional_seg_and_single_file(env, tmp_path):
    cam = env["cam"].map.clip(0, 1)
    prob = np.stack([1 - cam, cam], axis=-1)
    algo = Algorithm.from_card(env["loaded"].card)
    path = write_segmentation(prob, env["scan"], tmp_path / "f.dcm", algorithm=algo)
    dciodvfy(path, "Segmentation (FRACTIONAL)")
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "FRACTIONAL" and seg.number_of_segments == 2
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == list(env["loaded"].card.classes)
    item = seg.SegmentSequence[1]
    assert item.SegmentAlgorithmType == "AUTOMATIC"
    assert item.SegmentAlgorithmName == algo.name
    _assert_frames_on_source(seg, _sorted_sources(env["root"] / "Doe_Jane" / "ct"))
    scan = load(env["single"], include_phi=False)[0]
    labels2d = np.zeros(scan.data.shape, np.uint8)
    labels2d[40:60, 50:70] = 1
    one = write_segmentation(labels2d, scan, tmp_path / "one.dcm")
    dciodvfy(one, "Segmentation (BINARY)")
    seg1 = hd.seg.segread(one)
    _same_patient_and_study(seg1, pydicom.dcmread(env["single"]))
    _assert_frames_on_source(seg1, [pydicom.dcmread(env["single"])])
    with pytest.raises(ExportError, match="empty"):
        write_segmentation(labels2d * 0, scan, tmp_path / "none.dcm")
    assert not (tmp_path / "none.dcm").exists()


def test_multiframe_source(env, tmp_path):
    """A multi-frame source (a legacy-converted enhanced CT, frames from the
    top down): the map's frames follow the file's frame order, each on the
    source frame at its position and referencing that frame."""
    dss = [
        pydicom.dcmread(p) for p in sorted((env["root"] / "Doe_Jane").rglob("*.dcm"))
    ]
    type2 = ("PatientSex", "PatientBirthDate", "StudyID", "StudyTime", "StudyDate")
    for ds in dss:
        for kw in (*type2, "ReferringPhysicianName", "AccessionNumber"):
            if kw not in ds:
                setattr(ds, kw, None)
    dss.sort(key=lambda ds: -float(ds.InstanceNumber))
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(dss, hd.UID(), 2, hd.UID(), 1)
    mf.save_as(tmp_path / "mf.dcm", enforce_file_format=True)
    scan = load(tmp_path / "mf.dcm", include_phi=False)[0]
    assert scan.data.shape == (5, 24, 20)
    src = source_images(scan)
    assert src.multiframe
    cam = drain(
        explain([scan.data], env["loaded"], "gradcam", None, spacing=scan.spacing,
                scope="slices", metrics=False)
    )  # fmt: skip
    path = write_parametric_map(cam, scan, tmp_path / "pm.dcm")
    dciodvfy(path, "Parametric Map")
    pm = pydicom.dcmread(path)
    hd.pm.ParametricMap.from_dataset(pm)
    for i, frame in enumerate(pm.PerFrameFunctionalGroupsSequence):
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == mf.SOPInstanceUID
        n = int(ref.ReferencedFrameNumber)
        src_frame = mf.PerFrameFunctionalGroupsSequence[n - 1]
        np.testing.assert_allclose(
            frame.PlanePositionSequence[0].ImagePositionPatient,
            src_frame.PlanePositionSequence[0].ImagePositionPatient,
        )
        z = [z for z, (_, f) in enumerate(src.slices) if f == n][0]
        np.testing.assert_allclose(pm.pixel_array[i], cam.map[z], atol=1e-6)
    labels = np.zeros(scan.data.shape, np.uint8)
    labels[1:3, 5:10, 5:10] = 1
    seg_path = write_segmentation(labels, scan, tmp_path / "seg.dcm")
    dciodvfy(seg_path, "Segmentation (BINARY)")
    seg = hd.seg.segread(seg_path)
    assert seg.NumberOfFrames == 2
    _same_patient_and_study(seg, mf)


# -- command line ----------------------------------------------------------------
def test_cli_classify_sr(env, tmp_path, capsys):
    out = tmp_path / "sr"
    rc = main(["classify", str(env["root"] / "Doe_Jane"), str(env["single"]),
               "--model", str(env["ckpt"]), "--sr", str(out)])  # fmt: skip
    assert rc == 0
    files = sorted(out.glob("*.dcm"))
    assert len(files) == 2
    assert not any(p in f.name for f in files for p in PHI)
    for f in files:
        dciodvfy(f, "Comprehensive 3D SR")
        hd.sr.srread(f)
    text = capsys.readouterr().out
    assert "wrote SR" in text and "Doe" not in text
    rc = main(["classify", str(env["nifti"]), "--model", str(env["ckpt"]),
               "--sr", str(tmp_path / "sr2")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "scan.nii.gz" in err and "no DICOM source" in err
    assert not (tmp_path / "sr2").exists()


def test_cli_explain_parametric_map(env, tmp_path, capsys):
    out = tmp_path / "map.dcm"
    sc = tmp_path / "overlay.dcm"
    rc = main(["explain", str(env["root"] / "Doe_Jane" / "ct"), "--model",
               str(env["ckpt"]), "--out", str(out), "--overlay-sc", str(sc),
               "--no-metrics"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == str(out)
    dciodvfy(out, "Parametric Map")
    dciodvfy(sc, "Secondary Capture (overlay)")
    pm = hd.pm.ParametricMap.from_file(out)
    _assert_frames_on_source(pm, _sorted_sources(env["root"] / "Doe_Jane" / "ct"))
    side = json.loads((tmp_path / "map.json").read_text())
    assert side["format"] == "dicom" and "Doe" not in json.dumps(side)
    for bad in ("png", "nifti"):
        rc = main(["explain", str(env[bad]), "--model", str(env["ckpt"]),
                   "--out", str(tmp_path / f"{bad}.dcm")])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 2 and env[bad].name in err and "no DICOM source" in err
        assert not (tmp_path / f"{bad}.dcm").exists()


def test_zz_report_warnings():
    """Print the dciodvfy warnings per object type (for the README)."""
    for kind, lines in sorted(WARNINGS.items()):
        print(f"\n{kind}:")
        for line in sorted(lines):
            print(f"  {line}")
