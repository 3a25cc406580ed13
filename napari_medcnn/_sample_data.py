"""npe2 sample-data contributions: real scans that load offline.

Every sample goes through :func:`napari_medcnn.io.load`, like a user's file,
so geometry, intensities and the quality report come from the real readers.

* ``sample_ct``: pydicom's ``CT_small.dcm`` (MIT), a 128x128 axial CT slice,
  in HU.
* ``sample_mr``: ``data/colin27_t1_axial.dcm``, one axial slice of the
  Colin27 T1 brain (level of the lateral ventricles) stored as a standard MR
  DICOM file with real geometry; the brain-tumour model is demoed on it.
* ``sample_volume``: ``data/colin27_t1.nii.gz``, the whole Colin27 T1 head
  at 1 mm (181 x 217 x 181), reoriented to the reader's LPS convention.

Colin27 (Holmes et al., J Comput Assist Tomogr 1998) comes from MRIcron's
templates (Debian ``mricron-data``, BSD-3-Clause); ``scripts/
make_sample_data.py`` rebuilds both files from it.
"""

from __future__ import annotations

from pathlib import Path

from napari_medcnn.io import Scan, ScanReadError, load

DATA = Path(__file__).parent / "data"
MR_SLICE = DATA / "colin27_t1_axial.dcm"
MR_VOLUME = DATA / "colin27_t1.nii.gz"


def pydicom_file(name: str) -> Path:
    """Path of one named pydicom / pydicom-data test file (never downloaded).

    Raises:
        ScanReadError: the file is not installed.
    """
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        raise ScanReadError(name, "pydicom test file not installed")
    return Path(path)


def _layers(scans: list[Scan]) -> list[tuple]:
    return [scan.to_layer_data() for scan in scans]


def sample_ct() -> list[tuple]:
    """A real axial CT slice (pydicom ``CT_small.dcm``), HU, file window."""
    return _layers(load(pydicom_file("CT_small.dcm")))


def sample_mr() -> list[tuple]:
    """A real axial brain MR slice (Colin27 T1), read as a DICOM file."""
    return _layers(load(MR_SLICE))


def mr_brain_volume() -> Scan:
    """The Colin27 T1 head (1 mm) as a :class:`Scan`."""
    scan = load(MR_VOLUME)[0]
    scan.modality = "MR"  # NIfTI carries no modality; Colin27 is a T1 MR
    scan.metadata["modality"] = "MR"
    scan.name = "MR brain T1 (Colin27)"
    scan.metadata["sample"] = "Colin27 T1, MRIcron templates (BSD-3-Clause)"
    return scan


def sample_volume() -> list[tuple]:
    """A real 3D brain MR volume (Colin27 T1, 1 mm voxels)."""
    return _layers([mr_brain_volume()])
