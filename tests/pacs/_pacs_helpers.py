"""Constants and helpers of the PACS tests (imported by ``conftest.py``,
the tests and nothing else)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_medcnn.pacs import Server
from napari_medcnn.pacs.orthanc import LocalOrthanc

#: the test PACS's basic-auth password, and a bearer token: neither may
#: ever appear in a log line, an exception, a repr or the CLI's output
PASSWORD = "s3cret-Orthanc-pw-7731"
TOKEN = "tok-ABCDEF-123456-never-print"
USER = "medcnn"
CALLING_AET = "MEDCNN_TEST"
#: PHI stand-ins written into the synthetic series before de-identification
PHI_NAME, PHI_ID = "Doe^Janet", "PID-99321"


@dataclass
class Pacs:
    """The running test Orthanc and how to reach it."""

    orthanc: LocalOrthanc
    scp_port: int

    def dicomweb(self, **kwargs) -> Server:
        """A DICOMweb profile with the right credentials (override any)."""
        opts = {
            "url": self.orthanc.dicomweb_url,
            "user": USER,
            "password": PASSWORD,
            "timeout": 10.0,
            **kwargs,
        }
        return Server("test-orthanc", **opts)

    def dimse(self, **kwargs) -> Server:
        """A DIMSE profile (C-MOVE destination: our SCP's registered port)."""
        opts = {
            "calling_aet": CALLING_AET,
            "storage_port": self.scp_port,
            "timeout": 10.0,
            **kwargs,
        }
        address = f"{self.orthanc.aet}@127.0.0.1:{self.orthanc.dicom_port}"
        return Server.dimse(address, name="test-orthanc-dimse", **opts)


@dataclass
class SentSeries:
    """A de-identified synthetic series on disk, ready to send."""

    folder: Path
    files: list[Path]
    volume: np.ndarray
    study_uid: str
    series_uid: str


def make_deid_series(root: Path, seed: int, n: int = 6) -> SentSeries:
    """An MR series of :data:`PHI_NAME` (``n`` slices, 0.8 x 0.9 mm, 3 mm
    apart, oblique), de-identified with the project's Basic Profile."""
    import pydicom

    from napari_medcnn.deid.run import deidentify
    from napari_medcnn.io.synth import write_series

    rng = np.random.default_rng(seed)
    vol = rng.integers(0, 900, size=(n, 32, 28)).astype(np.float64)
    vol[:, 10:22, 8:20] += 700
    c, s = np.cos(0.2), np.sin(0.2)
    write_series(
        vol, root / "raw", spacing=(3.0, 0.8, 0.9), origin=(-20.0, 10.0, 40.0),
        row_dir=(c, s, 0.0), col_dir=(-s, c, 0.0), modality="MR",
        patient_name=PHI_NAME, patient_id=PHI_ID, series_description="t1 axial",
        seed=f"pacs-{seed}",
    )  # fmt: skip
    result = deidentify([root / "raw"], root / "deid")
    files = sorted(result.outputs)
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert str(ds.PatientIdentityRemoved) == "YES"
    return SentSeries(
        files[0].parent, files, vol, str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
    )  # fmt: skip
