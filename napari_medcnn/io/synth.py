"""Synthetic data with known ground truth.

* :func:`write_series`: a volume as a DICOM series with known geometry.
  Used by the tests (reader correctness against dcm2niix), the benchmarks
  and the demo to build real, standard-conforming series from arrays.
  Files are uncompressed, Explicit VR Little Endian, one slice per file.
* :func:`blob_images` / :func:`write_blob_dataset`: textured-noise images,
  half with one faint Gaussian blob at a recorded place, as PNGs and a
  ``path,label`` CSV for ``napari-medcnn train``: the pointing game of
  the saliency methods (a map's maximum should lie on the blob).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

_SOP = {"CT": CTImageStorage, "MR": MRImageStorage}


def write_series(
    volume: np.ndarray,
    out_dir: str | os.PathLike,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    row_dir: Sequence[float] = (1.0, 0.0, 0.0),
    col_dir: Sequence[float] = (0.0, 1.0, 0.0),
    modality: str = "MR",
    slope: float = 1.0,
    intercept: float = 0.0,
    series_description: str = "synthetic",
    series_number: int = 1,
    patient_name: str = "Anonymous^Phantom",
    patient_id: str = "SYNTH0001",
    skip: Sequence[int] = (),
    file_order: Sequence[int] | None = None,
    window: tuple[float, float] | None = None,
    seed: str | None = None,
) -> list[Path]:
    """Write ``volume`` (z, y, x), in output units, as a DICOM series.

    Args:
        volume: array indexed (slice, row, column); values are the *rescaled*
            intensities (e.g. HU); stored values are ``(v - intercept) / slope``
            rounded to int16.
        out_dir: folder to write ``IM0000.dcm``... into (created).
        spacing: (slice, row, column) spacing in mm; slice spacing is used for
            the positions, and SliceThickness is set to it as well.
        origin: LPS position (mm) of the centre of voxel (0, 0, 0).
        row_dir, col_dir: ImageOrientationPatient direction cosines (unit,
            orthogonal); slices advance along ``row_dir x col_dir``.
        skip: slice indices not to write (to simulate a missing slice).
        file_order: permutation of slice indices used for the file names
            (IM0000 gets slice ``file_order[0]``...), to test that the reader
            never sorts by name.  InstanceNumber follows the file name too.
        seed: makes the UIDs deterministic when given.

    Returns:
        The written file paths, in file-name order.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3D (z, y, x), got shape {vol.shape}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    r = np.asarray(row_dir, float)
    c = np.asarray(col_dir, float)
    n = np.cross(r, c)
    dz, dy, dx = (float(s) for s in spacing)
    o = np.asarray(origin, float)
    stored = np.rint((vol.astype(np.float64) - intercept) / slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise ValueError("stored values do not fit int16; change slope/intercept")
    stored = stored.astype(np.int16)

    def uid(tag: str) -> str:
        return generate_uid(entropy_srcs=[seed, tag] if seed else None)

    study_uid, series_uid, for_uid = uid("study"), uid("series"), uid("for")
    order = list(file_order) if file_order is not None else list(range(len(vol)))
    paths = []
    for file_idx, k in enumerate(order):
        if k in skip:
            continue
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = _SOP.get(modality, MRImageStorage)
        ds.file_meta.MediaStorageSOPInstanceUID = uid(f"sop{k}")
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = for_uid
        ds.StudyDate = "20260101"
        ds.Modality = modality
        ds.SeriesDescription = series_description
        ds.SeriesNumber = series_number
        ds.InstanceNumber = file_idx + 1
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*r, *c)]
        pos = o + k * dz * n
        ds.ImagePositionPatient = [f"{v:.10g}" for v in pos]
        ds.PixelSpacing = [f"{dy:.10g}", f"{dx:.10g}"]
        ds.SliceThickness = f"{dz:.10g}"
        ds.Rows, ds.Columns = vol.shape[1], vol.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleIntercept = f"{intercept:.10g}"
        if modality == "CT":
            ds.RescaleType = "HU"
        if window is not None:
            ds.WindowCenter = f"{window[0]:.10g}"
            ds.WindowWidth = f"{window[1]:.10g}"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        path = out / f"IM{file_idx:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def blob_images(
    n: int,
    *,
    size: int = 96,
    sigma: float = 4.0,
    amplitude: float = 3.0,
    margin: int = 12,
    texture: Sequence[tuple[float, float]] = ((1.0, 0.7),),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` images of textured noise, every other one (odd indices) with
    one faint Gaussian blob.

    The texture is white noise plus noise smoothed at 1.5 and 4 px (unit
    standard deviation in all, mean 0), so that neither the brightest
    pixel nor a smooth bump of the background's own size gives the blob
    away; the blob adds ``amplitude`` (in units of the texture's standard
    deviation) times a Gaussian of ``sigma`` px at a uniformly random
    centre at least ``margin`` px inside the border.

    Returns:
        (images float32 (n, size, size), labels int (n,): 1 = blob,
        centres float (n, 2): (row, col) in px, NaN without a blob).
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    images = np.empty((n, size, size), np.float32)
    labels = np.arange(n) % 2
    centres = np.full((n, 2), np.nan)
    for i in range(n):
        tex = rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
        for s, w in texture:
            smooth = ndimage.gaussian_filter(
                rng.normal(0.0, 1.0, (size, size)), s, mode="wrap"
            )
            tex += w * (smooth / smooth.std()).astype(np.float32)
        tex /= tex.std()
        if labels[i]:
            cy, cx = rng.uniform(margin, size - 1 - margin, 2)
            centres[i] = (cy, cx)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
            tex += amplitude * blob
        images[i] = tex
    return images, labels, centres


def blob_grey(image: np.ndarray) -> np.ndarray:
    """A :func:`blob_images` image as the 8-bit grey levels that
    :func:`write_blob_dataset` saves: 128 + 25 * value, clipped."""
    return np.clip(np.round(128 + 25 * np.asarray(image)), 0, 255).astype(np.uint8)


def write_blob_dataset(
    folder: str | os.PathLike,
    n: int = 240,
    *,
    classes: Sequence[str] = ("noise", "blob"),
    seed: int = 0,
    **kwargs,
) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write :func:`blob_images` as 8-bit PNGs (``img000.png`` ...) and a
    ``labels.csv`` (``path,label``, paths relative to ``folder``).

    Grey levels: :func:`blob_grey`.  ``kwargs`` go to :func:`blob_images`.

    Returns:
        (the CSV's path, labels (n,), blob centres (n, 2) in px, NaN
        without a blob).
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, labels, centres = blob_images(n, seed=seed, **kwargs)
    rows = ["path,label"]
    for i, (im, y) in enumerate(zip(images, labels)):
        name = f"img{i:03d}.png"
        Image.fromarray(blob_grey(im)).save(folder / name)
        rows.append(f"{name},{classes[int(y)]}")
    csv = folder / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv, labels, centres


#: patient names and IDs the synthetic cohort writes into its DICOM headers
#: (and folder names); a report or table that shows one leaks PHI
COHORT_PATIENTS = (
    ("Doe^Jane", "PID-0042"),
    ("Roe^Richard", "PID-0077"),
    ("Poe^Edgar", "PID-1809"),
)


def _head_volume() -> tuple[np.ndarray, tuple[float, float, float]]:
    """The shipped Colin27 T1 head as (z, y, x) float32 and its spacing, mm."""
    import nibabel as nib

    img = nib.as_closest_canonical(
        nib.load(Path(__file__).resolve().parents[1] / "data" / "colin27_t1.nii.gz")
    )
    vol = np.asarray(img.dataobj, dtype=np.float32).transpose(2, 1, 0)[:, ::-1]
    sx, sy, sz = (float(v) for v in img.header.get_zooms()[:3])
    return np.ascontiguousarray(vol), (sz, sy, sx)


def write_cohort(
    root: str | os.PathLike,
    *,
    n_dicom: int = 10,
    n_nifti: int = 10,
    n_png: int = 6,
    corrupt: Sequence[str] = ("dicom", "nifti", "png"),
    non_image_folder: bool = True,
    shape: Sequence[int] = (16, 64, 64),
    seed: int = 0,
) -> dict[str, list[Path]]:
    """A cohort folder of real anatomy for cohort jobs: slabs of the shipped
    Colin27 head at random heights, resampled to ``shape`` (slices, rows,
    columns) with a little noise.

    * ``n_dicom`` DICOM MR series, one folder each, named after its patient
      (``Doe_Jane_PID-0042/series03``): PHI in the folder names and headers
      (:data:`COHORT_PATIENTS`);
    * ``n_nifti`` ``.nii.gz`` volumes (1.5 mm voxels);
    * ``n_png`` 8-bit PNG axial slices;
    * one corrupt file per entry of ``corrupt``: ``dicom`` (a ``.dcm``
      with a DICOM preamble and a garbage header), ``nifti`` (a truncated
      ``.nii.gz``), ``png`` (random bytes named ``.png``);
    * with ``non_image_folder``, a folder holding only text files.

    Returns:
        Paths by kind: ``dicom`` (series folders), ``nifti``, ``png``,
        ``corrupt`` (files), ``non_image`` (folders).
    """
    import nibabel as nib
    from scipy import ndimage

    def write_nifti(path: Path, vol: np.ndarray, spacing) -> None:
        # (z, y, x) array -> NIfTI (x, y, z) with the voxel size in mm
        dz, dy, dx = spacing
        affine = np.diag([dx, dy, dz, 1.0])
        nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0), affine), str(path))

    root = Path(root)
    rng = np.random.default_rng(seed)
    head, (sz, sy, sx) = _head_volume()
    s, h, w = (int(v) for v in shape)
    out: dict[str, list[Path]] = {
        k: [] for k in ("dicom", "nifti", "png", "corrupt", "non_image")
    }

    def slab() -> np.ndarray:
        depth = min(head.shape[0], max(s, int(round(s * 4.0 / sz))))
        z0 = int(rng.integers(20, max(21, head.shape[0] - depth - 20)))
        part = head[z0 : z0 + depth]
        zoom = (s / part.shape[0], h / part.shape[1], w / part.shape[2])
        vol = ndimage.zoom(part, zoom, order=1)[:s, :h, :w]
        noise = rng.normal(0.0, 0.02 * float(vol.max() or 1.0), vol.shape)
        return np.clip(vol + noise, 0, None).astype(np.float32)

    spacing = (4.0, head.shape[1] * sy / h, head.shape[2] * sx / w)
    for i in range(n_dicom):
        name, pid = COHORT_PATIENTS[i % len(COHORT_PATIENTS)]
        folder = root / "dicom" / f"{name.replace('^', '_')}_{pid}" / f"series{i:02d}"
        write_series(
            slab(), folder, spacing=spacing, patient_name=name, patient_id=pid,
            series_description=f"T1 axial {i}", series_number=i + 1,
            seed=f"cohort-{seed}-{i}",
        )  # fmt: skip
        out["dicom"].append(folder)
    for i in range(n_nifti):
        path = root / "nifti" / f"vol{i:02d}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_nifti(path, slab(), spacing=spacing)
        out["nifti"].append(path)
    if n_png:
        from PIL import Image

        (root / "png").mkdir(parents=True, exist_ok=True)
    for i in range(n_png):
        img = slab()[s // 2]
        grey = np.clip(255 * img / max(float(img.max()), 1e-6), 0, 255).astype(np.uint8)
        path = root / "png" / f"slice{i:02d}.png"
        Image.fromarray(grey).save(path)
        out["png"].append(path)
    bad = root / "corrupt"
    for kind in corrupt:
        bad.mkdir(parents=True, exist_ok=True)
        if kind == "dicom":
            path = bad / "broken.dcm"
            path.write_bytes(b"\0" * 128 + b"DICM" + rng.bytes(300))
        elif kind == "nifti":
            good = bad / "full.nii.gz"
            write_nifti(good, slab(), spacing=spacing)
            data = good.read_bytes()
            good.unlink()
            path = bad / "truncated.nii.gz"
            path.write_bytes(data[: len(data) // 3])
        elif kind == "png":
            path = bad / "garbage.png"
            path.write_bytes(rng.bytes(500))
        else:
            raise ValueError(f"corrupt kinds are dicom, nifti, png: not {kind!r}")
        out["corrupt"].append(path)
    if non_image_folder:
        notes = root / "notes"
        notes.mkdir(parents=True, exist_ok=True)
        (notes / "README.txt").write_text("study protocol notes, no images\n")
        (notes / "protocol.json").write_text('{"sequence": "T1"}\n')
        out["non_image"].append(notes)
    return out
