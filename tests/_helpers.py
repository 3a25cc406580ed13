"""Helpers shared by the tests of every package (import as ``_helpers``:
``tests/`` is on ``sys.path`` through its ``conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from napari_medcnn.deid.keys import ProjectKey
from napari_medcnn.io.synth import write_series

#: the patient names the synthetic folders carry; no output may contain them
PATIENT_NAMES = ("Doe^Jane", "Roe^Richard")


def make_checkpoint(
    path, *, in_channels=1, kind="slice", classes=("no_tumor", "tumor")
):
    """A tiny untrained checkpoint: seed CNN (slices) or CNN+RNN (sequence)."""
    import torch

    from napari_medcnn.models import build_model
    from napari_medcnn.models.card import ModelCard
    from napari_medcnn.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    record = {
        "intensity": {"mode": "percentile", "low": 1.0, "high": 99.0},
        "foreground_crop": None,
        "size": [32, 32],
    }
    if kind == "slice":
        arch, dims = "seed_cnn", 2
        kw = {"spatial_dims": 2, "in_channels": in_channels, "widths": (8, 16, 16)}
    else:
        arch, dims = "cnn_rnn", 3
        kw = {
            "in_channels": in_channels,
            "encoder_kwargs": {"widths": (4, 8, 8), "pooled_size": 2},
            "hidden_size": 8,
        }
    kw["num_classes"] = len(classes)
    card = ModelCard(
        arch=arch,
        arch_kwargs=kw,
        classes=list(classes),
        spatial_dims=dims,
        in_channels=in_channels,
        channel_names=["MR", "T2"][:in_channels] if in_channels <= 2 else [],
        input_size=[32, 32],
        input_kind=kind,
        preprocessing=record,
        name=f"tiny {kind} x{in_channels}",
    )
    return save_checkpoint(build_model(arch, **kw).eval(), card, path)


KEY = ProjectKey(b"export tests key, thirty-two b!!")
#: PHI strings written into the synthetic series; none may leave unmasked.
PHI = (
    "Doe^Jane", "PID-0042", "ACC-77812", "19600214", "St Elsewhere Hospital",
    "House^Gregory", "12 Privet Drive",
)  # fmt: skip


def phi_series(
    root: Path,
    *,
    patient=("Doe^Jane", "PID-0042"),
    study_date="20210304",
    n=5,
    seed="s1",
    modality="CT",
    accession="ACC-77812",
) -> list[Path]:
    """A synthetic series with PHI in the header: names, IDs, dates,
    institution, address, a private tag, a reference to its first slice."""
    rng = np.random.default_rng(abs(hash(seed)) % 2**32)
    vol = rng.integers(-1000, 1000, size=(n, 12, 10)).astype(float)
    paths = write_series(vol, root, spacing=(2.0, 0.7, 0.8), origin=(-5.0, 3.0, 40.0),
                         modality=modality, patient_name=patient[0],
                         patient_id=patient[1], seed=seed,
                         series_description=f"{modality} for {patient[0]}")  # fmt: skip
    first = pydicom.dcmread(paths[0]).SOPInstanceUID
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.StudyDate, ds.StudyTime = study_date, "093000"
        ds.AcquisitionDateTime = study_date + "093512.25"
        ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = PHI[3], "F", "061Y"
        ds.AccessionNumber, ds.InstitutionName = accession, PHI[4]
        ds.ReferringPhysicianName, ds.PatientAddress = PHI[5], PHI[6]
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = first
        ds.ReferencedImageSequence = Sequence([ref])
        ds.private_block(0x0029, "ACME 1.0", create=True).add_new(
            0x01, "LO", patient[0]
        )
        ds.save_as(p, enforce_file_format=True)
    return paths


def grep_phi(root: Path, strings=PHI) -> list[str]:
    """Every (file, string) where a PHI string (or a name part) occurs."""
    needles = set(strings) | {part for s in strings for part in s.split("^")}
    hits = []
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        data = p.read_bytes() if p.is_file() else b""
        for s in needles:
            if s.encode() in data or s in rel:
                hits.append(f"{rel}: {s}")
    return hits


def noisy_head(shape, seed: int = 0, empty: int = 3) -> np.ndarray:
    """A noisy ellipsoid "head" (float32, about 110 inside and 10 outside)
    filling ``shape`` but for ``empty`` slices above and below."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    c = [(s - 1) / 2 for s in shape]
    r = [(shape[0] - 2 * empty) / 2, shape[1] * 0.4, shape[2] * 0.4]
    inside = sum(((a - ca) / ra) ** 2 for a, ca, ra in zip((z, y, x), c, r)) <= 1
    vol = rng.normal(10, 2, shape).astype(np.float32)
    vol[inside] += 100
    return vol
