"""A local folder as a PACS (:class:`FolderPacs`), for tests and offline
use: searches read headers only, a retrieve copies a series into the cache
(atomically, like the network clients), a store copies files into
``<root>/<study>/<series>/<instance>.dcm``."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from napari_medcnn.pacs.client import (
    Cancel,
    SeriesResult,
    SeriesStaging,
    StudyResult,
    check_cancel,
    matches,
    normalise_filters,
    series_dir,
)
from napari_medcnn.pacs.server import PacsError, Server
from napari_medcnn.pacs.store import StoreResult, read_for_store

__all__ = ["FolderPacs"]


class FolderPacs:
    """A :class:`~napari_medcnn.pacs.client.PacsClient` over a folder of
    DICOM files (searched recursively).

    Args:
        root: the folder (created by :meth:`store` if missing).
        name: how messages name it (default: the folder's path).
    """

    def __init__(self, root: str | os.PathLike, name: str | None = None):
        self.root = Path(root)
        self.name = name or str(self.root)
        #: a folder has no network profile
        self.server: Server | None = None

    def __repr__(self) -> str:
        return f"FolderPacs({self.name!r})"

    def _headers(self) -> list[tuple[Path, Dataset]]:
        if not self.root.is_dir():
            raise PacsError(self.name, "no such folder")
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if f.startswith("."):
                    continue
                path = Path(dirpath, f)
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=True)
                except Exception:  # not DICOM: a folder may hold anything
                    continue
                if "SeriesInstanceUID" in ds and "StudyInstanceUID" in ds:
                    out.append((path, ds))
        return out

    def echo(self) -> float:
        """Check that the folder exists; returns seconds taken."""
        t0 = time.perf_counter()
        if not self.root.is_dir():
            raise PacsError(self.name, "no such folder")
        return time.perf_counter() - t0

    def find_studies(self, **filters: Any) -> list[StudyResult]:
        """Studies whose files match the filters (C-FIND matching rules)."""
        keywords = normalise_filters(filters, "study")
        studies: dict[str, tuple[Dataset, set[str], set[str], int]] = {}
        for _path, ds in self._headers():
            uid = str(ds.StudyInstanceUID)
            first, series, mods, n = studies.get(uid, (ds, set(), set(), 0))
            series.add(str(ds.SeriesInstanceUID))
            mods.add(str(ds.get("Modality", "")))
            studies[uid] = (first, series, mods, n + 1)
        out = []
        for ds, series, mods, n in studies.values():
            want = dict(keywords)
            mod = want.pop("ModalitiesInStudy", None)
            if mod and not any(matches(_modality(m), {"Modality": mod}) for m in mods):
                continue
            if not matches(ds, want):
                continue
            r = StudyResult.from_dataset(ds)
            r.modalities = tuple(sorted(m for m in mods if m))
            r.n_series, r.n_instances = len(series), n
            out.append(r)
        return sorted(out, key=lambda r: (r.study_date, r.study_uid))

    def find_series(self, study_uid: str, **filters: Any) -> list[SeriesResult]:
        """Series of one study whose files match the filters."""
        keywords = normalise_filters(filters, "series")
        series: dict[str, tuple[Dataset, int]] = {}
        for _path, ds in self._headers():
            if str(ds.StudyInstanceUID) != study_uid or not matches(ds, keywords):
                continue
            uid = str(ds.SeriesInstanceUID)
            first, n = series.get(uid, (ds, 0))
            series[uid] = (first, n + 1)
        out = []
        for ds, n in series.values():
            r = SeriesResult.from_dataset(ds, study_uid)
            r.n_instances = n
            out.append(r)
        return sorted(out, key=lambda r: (r.series_number or 0, r.series_uid))

    def retrieve_series(
        self,
        study_uid: str,
        series_uid: str,
        dest: str | os.PathLike | None = None,
        cancel: Cancel = None,
    ) -> Generator[tuple[str, int, int], None, Path]:
        """Copy one series into ``<dest or cache>/<study>/<series>/``,
        atomically; yields ``("retrieve", i, n)``, returns the folder."""
        target = series_dir(dest, study_uid, series_uid)
        files = [
            (p, ds)
            for p, ds in self._headers()
            if str(ds.StudyInstanceUID) == study_uid
            and str(ds.SeriesInstanceUID) == series_uid
        ]
        if not files:
            raise PacsError(self.name, f"series {series_uid} not found")
        yield ("retrieve", 0, len(files))
        with SeriesStaging(target) as staging:
            for i, (path, ds) in enumerate(files, 1):
                check_cancel(cancel, self.name, "retrieve")
                name = f"{ds.get('SOPInstanceUID', f'instance{i}')}.dcm"
                shutil.copyfile(path, staging.tmp / name)
                staging.files.append(staging.tmp / name)
                yield ("retrieve", i, len(files))
            check_cancel(cancel, self.name, "retrieve")
            return staging.commit()

    def store(self, paths: Iterable[str | os.PathLike]) -> StoreResult:
        """Copy DICOM files into ``<root>/<study>/<series>/<sop>.dcm``."""
        from napari_medcnn._atomic import atomic_write

        result = StoreResult()
        for path, ds, why in read_for_store(paths):
            if ds is None:
                result.failed.append((path, why))
                continue
            try:
                target = series_dir(
                    self.root, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
                )
                target.mkdir(parents=True, exist_ok=True)
                atomic_write(
                    target / f"{ds.SOPInstanceUID}.dcm", Path(path).read_bytes()
                )
            except (OSError, ValueError, AttributeError) as exc:
                result.failed.append((path, f"{type(exc).__name__}: {exc}"))
                continue
            result.stored.append(str(ds.SOPInstanceUID))
        return result


def _modality(modality: str) -> Dataset:
    out = Dataset()
    out.Modality = modality
    return out
