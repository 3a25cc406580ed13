"""Build the shipped sample scans from Debian's mricron-data Colin27 T1.

    apt-get install mricron-data
    .venv/bin/python scripts/make_sample_data.py

Writes ``napari_medcnn/data/colin27_t1.nii.gz`` (the 1 mm T1 head, copied
with a clean header) and ``napari_medcnn/data/colin27_t1_axial.dcm`` (one
axial slice at the level of the lateral ventricles, as a standard MR DICOM
file with real geometry), so a brain MR slice and volume load offline.
Colin27 (Holmes et al., 1998) ships in MRIcron's templates, BSD-3-Clause.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_medcnn.io import load
from napari_medcnn.io.synth import write_series

SRC = Path("/usr/share/mricron/templates/ch2.nii.gz")
OUT = Path(__file__).resolve().parents[1] / "napari_medcnn" / "data"
SLICE_Z = 88  # LPS array z (inferior -> superior): ventricles, basal ganglia


def main() -> None:
    OUT.mkdir(exist_ok=True)
    img = nib.load(SRC)
    data = np.asarray(img.dataobj)
    clean = nib.Nifti1Image(data, img.affine)
    clean.header["descrip"] = b"Colin27 T1 1mm (MRIcron ch2), BSD-3-Clause"
    clean.set_qform(img.affine, code=1)
    clean.set_sform(img.affine, code=1)
    nib.save(clean, OUT / "colin27_t1.nii.gz")

    scan = load(OUT / "colin27_t1.nii.gz")[0]
    a = np.asarray(scan.affine)
    origin = a[:3, :3] @ np.array([SLICE_Z, 0, 0]) + a[:3, 3]
    with tempfile.TemporaryDirectory() as tmp:
        (path,) = write_series(
            scan.data[SLICE_Z : SLICE_Z + 1].astype(np.int16),
            tmp,
            spacing=scan.spacing,
            origin=origin,
            row_dir=a[:3, 2] / np.linalg.norm(a[:3, 2]),
            col_dir=a[:3, 1] / np.linalg.norm(a[:3, 1]),
            modality="MR",
            series_description="T1 axial brain",
            patient_name="MNI^Template",
            patient_id="MNI-TEMPLATE-27",
            window=(110.0, 220.0),
            seed="napari-medcnn-colin27",
        )
        shutil.copy(path, OUT / "colin27_t1_axial.dcm")
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
