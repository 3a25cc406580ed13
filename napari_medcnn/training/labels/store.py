"""Image, slice and volume labels, saved to a JSON sidecar beside the scan.

A :class:`LabelStore` holds the labels of one scan: class names, a label for
the whole image (2D) or volume (3D), and labels of single slices (set one by
one or as ranges).  Every change is written at once, atomically, to a
sidecar, so nothing is lost if napari closes:

* a file ``scan.nii.gz`` -> ``scan.nii.gz.medcnn-labels.json``;
* a DICOM folder -> ``folder/.medcnn-labels/<hash of the series key>.json``
  (one folder can hold several series).

The sidecar is keyed by the DICOM series UID or, without one, by the
SHA-256 of the file's bytes (or of the pixel data), and holds no patient
data: no names, IDs, dates or file names; the study is kept only as a hash
(for splits by patient/study).  The previous version is kept as
``<sidecar>.bak``; a corrupt sidecar is never overwritten silently.

``read_label_csv`` reads ``path,label[,group]`` rows for the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcnn.training.labels.csv import CsvLabel, read_label_csv
from napari_medcnn.training.labels.errors import LabelsError, SidecarCorrupt
from napari_medcnn.training.labels.keys import (
    LABELS_DIR,
    SIDECAR_SUFFIX,
    file_sha256,
    group_key,
    scan_key,
    scan_path_for,
    sidecar_path,
)

__all__ = [
    "LABELS_DIR",
    "SIDECAR_SUFFIX",
    "CsvLabel",
    "LabelItem",
    "LabelStore",
    "LabelsError",
    "SidecarCorrupt",
    "file_sha256",
    "group_key",
    "read_label_csv",
    "scan_key",
    "scan_path_for",
    "sidecar_path",
]

SCHEMA = "napari-medcnn/labels"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LabelItem:
    """One labelled thing, for the list a widget shows (click -> go to it).

    ``kind`` is ``image``, ``volume`` or ``slice``; ``index`` the slice index
    (axis 0) for slices, else None.
    """

    kind: str
    index: int | None
    label: str

    def text(self) -> str:
        where = f"slice {self.index}" if self.kind == "slice" else self.kind
        return f"{where}: {self.label}"


class LabelStore:
    """The labels of one scan, saved to its sidecar on every change.

    Args:
        key: :func:`scan_key` of the scan.
        classes: class names (order = model output order).
        n_slices: slices along axis 0 for volumes, None for 2D images.
        group: :func:`group_key` (hashed patient, else hashed study) for
            patient-wise splits.
        path: the sidecar; None keeps the labels in memory only.
        autosave: write the sidecar after every change.
    """

    def __init__(
        self,
        key: str,
        classes: list[str] | tuple[str, ...] = (),
        n_slices: int | None = None,
        group: str | None = None,
        path: str | os.PathLike | None = None,
        autosave: bool = True,
    ):
        self.key = key
        self.classes: list[str] = []
        self.n_slices = n_slices
        self.group = group
        self.path = Path(path) if path is not None else None
        self.autosave = autosave
        self.image_label: str | None = None
        self.volume_label: str | None = None
        self.slices: dict[int, str] = {}
        self.warnings: list[str] = []
        for c in classes:
            self._add_class(c)

    # -- classes ------------------------------------------------------------
    def _add_class(self, name: str) -> None:
        name = str(name).strip()
        if not name:
            raise LabelsError("a class name cannot be empty")
        if name not in self.classes:
            self.classes.append(name)

    def set_classes(self, names: list[str] | tuple[str, ...]) -> None:
        """Replace the class list; classes still in use must stay."""
        used = set(self.counts(include_zero=False))
        missing = used - {str(n).strip() for n in names}
        if missing:
            raise LabelsError(
                f"classes {sorted(missing)} are still used by labels; "
                "remove those labels first"
            )
        self.classes = []
        for n in names:
            self._add_class(n)
        self._changed()

    def add_class(self, name: str) -> None:
        """Append a class name (no-op if present)."""
        self._add_class(name)
        self._changed()

    def class_for_key(self, key: int) -> str:
        """The class bound to number key ``key`` (1-9 = first to ninth)."""
        if not 1 <= key <= min(9, len(self.classes)):
            raise LabelsError(
                f"key {key} has no class ({len(self.classes)} classes defined)"
            )
        return self.classes[key - 1]

    def _cls(self, label: str | int) -> str:
        if isinstance(label, int | np.integer) and not isinstance(label, bool):
            return self.class_for_key(int(label))
        name = str(label).strip()
        if name not in self.classes:
            raise LabelsError(
                f"unknown class {name!r}; defined: {', '.join(self.classes) or 'none'}"
            )
        return name

    # -- labelling ----------------------------------------------------------
    def label_image(self, label: str | int) -> None:
        """Label the whole 2D image (``label``: class name or key 1-9)."""
        if self.n_slices is not None:
            raise LabelsError(
                "this scan is a volume: label the volume or its slices instead"
            )
        self.image_label = self._cls(label)
        self._changed()

    def label_volume(self, label: str | int) -> None:
        """Label the whole volume (for CNN+RNN and 3D models)."""
        if self.n_slices is None:
            raise LabelsError("a 2D image has no volume label: use label_image")
        self.volume_label = self._cls(label)
        self._changed()

    def label_slice(self, index: int, label: str | int) -> None:
        """Label slice ``index`` (axis 0) of a volume."""
        self.label_slices(index, index, label)

    def label_slices(self, start: int, stop: int, label: str | int) -> None:
        """Label slices ``start`` to ``stop`` INCLUSIVE (either order)."""
        name = self._cls(label)
        a, b = sorted((int(start), int(stop)))
        self._check_slice(a)
        self._check_slice(b)
        for i in range(a, b + 1):
            self.slices[i] = name
        self._changed()

    def unlabel_slices(self, start: int, stop: int | None = None) -> None:
        """Remove the labels of slices ``start`` to ``stop`` inclusive."""
        a, b = sorted((int(start), int(start if stop is None else stop)))
        for i in range(a, b + 1):
            self.slices.pop(i, None)
        self._changed()

    def clear_image(self) -> None:
        """Remove the image and volume labels."""
        self.image_label = self.volume_label = None
        self._changed()

    def _check_slice(self, i: int) -> None:
        if self.n_slices is None:
            raise LabelsError("a 2D image has no slices: use label_image")
        if not 0 <= i < self.n_slices:
            raise LabelsError(f"slice {i} outside the volume's {self.n_slices} slices")

    # -- queries ------------------------------------------------------------
    def items(self) -> list[LabelItem]:
        """Labelled items: the image/volume label first, then slices in order."""
        out = []
        if self.image_label is not None:
            out.append(LabelItem("image", None, self.image_label))
        if self.volume_label is not None:
            out.append(LabelItem("volume", None, self.volume_label))
        out += [LabelItem("slice", i, c) for i, c in sorted(self.slices.items())]
        return out

    def counts(self, include_zero: bool = True) -> dict[str, int]:
        """Labelled items per class (image, volume and slice labels)."""
        counts = dict.fromkeys(self.classes, 0) if include_zero else {}
        for item in self.items():
            counts[item.label] = counts.get(item.label, 0) + 1
        return counts

    def ranges(self) -> list[tuple[int, int, str]]:
        """Slice labels as runs ``(start, stop_inclusive, class)``."""
        runs: list[tuple[int, int, str]] = []
        for i, c in sorted(self.slices.items()):
            if runs and runs[-1][1] == i - 1 and runs[-1][2] == c:
                runs[-1] = (runs[-1][0], i, c)
            else:
                runs.append((i, i, c))
        return runs

    def unlabelled_slices(self) -> list[int]:
        """Slice indices with no label (empty for 2D images)."""
        return [i for i in range(self.n_slices or 0) if i not in self.slices]

    # -- persistence --------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The sidecar's JSON content (no patient data)."""
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "key": self.key,
            "group": self.group,
            "n_slices": self.n_slices,
            "classes": list(self.classes),
            "image_label": self.image_label,
            "volume_label": self.volume_label,
            "slices": [[a, b, c] for a, b, c in self.ranges()],
        }

    @classmethod
    def from_dict(cls, d: Any, path: Path | None = None) -> LabelStore:
        """Rebuild a store from sidecar JSON (raises LabelsError)."""
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise LabelsError("not a napari-medcnn label file")
        version = d.get("version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise LabelsError(
                f"label file version {version!r} is newer than this "
                f"napari-medcnn understands ({SCHEMA_VERSION}); update it"
            )
        try:
            store = cls(
                str(d["key"]),
                list(d.get("classes") or []),
                d.get("n_slices"),
                d.get("group"),
                path,
                autosave=False,
            )
            store.image_label = d.get("image_label")
            store.volume_label = d.get("volume_label")
            for a, b, c in d.get("slices") or []:
                for i in range(int(a), int(b) + 1):
                    store.slices[i] = str(c)
        except (KeyError, TypeError, ValueError) as exc:
            raise LabelsError(f"malformed label file ({exc})") from None
        used = {it.label for it in store.items()}
        if used - set(store.classes):
            raise LabelsError(f"labels use undefined classes {sorted(used)}")
        store.autosave = True
        return store

    def save(self) -> Path | None:
        """Write the sidecar atomically, keeping the previous one as .bak."""
        if self.path is None:
            return None
        from napari_medcnn._atomic import atomic_write

        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=1).encode("utf-8")
        if self.path.exists():
            old = self.path.read_bytes()
            if old == text:
                return self.path
            atomic_write(self.path.with_name(self.path.name + ".bak"), old)
        atomic_write(self.path, text)
        return self.path

    def _changed(self) -> None:
        if self.autosave:
            self.save()

    @classmethod
    def load(cls, sidecar: str | os.PathLike) -> LabelStore:
        """Read a sidecar (raises :class:`SidecarCorrupt`)."""
        p = Path(sidecar)
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            return cls.from_dict(d, p)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SidecarCorrupt(p, f"not valid JSON: {exc}") from None
        except LabelsError as exc:
            raise SidecarCorrupt(p, str(exc)) from None

    @classmethod
    def open(
        cls,
        scan_path: str | os.PathLike | None,
        metadata: dict[str, Any] | None = None,
        data: np.ndarray | None = None,
        *,
        n_slices: int | None = None,
        classes: list[str] | tuple[str, ...] = (),
        sidecar: str | os.PathLike | None = None,
        on_error: str = "raise",
    ) -> LabelStore:
        """The labels of a scan: reloaded from its sidecar, or new.

        Args:
            scan_path: the scan's file or DICOM folder (None: in memory only
                unless ``sidecar`` is given).
            metadata: the layer's metadata (``series_uid``,
                ``patient_id_hash``, ``study_uid``).  A reloaded store whose
                group is not yet patient-level takes the patient group.
            data: pixel data, for keying scans without file or UID.
            n_slices: slices along axis 0 (None for a 2D image).
            classes: class names for a new store (e.g. the model's); added
                to a reloaded store's list when missing.
            sidecar: explicit sidecar path (default :func:`sidecar_path`).
            on_error: ``"raise"`` (default) raises :class:`SidecarCorrupt`
                or LabelsError and leaves the file alone; ``"reset"`` moves
                the bad file to ``<sidecar>.corrupt-N`` and starts from the
                ``.bak`` copy if that one is readable, else empty (the
                reason is in ``store.warnings``).
        """
        key = scan_key(scan_path, metadata, data)
        if sidecar is None and scan_path is not None:
            sidecar = sidecar_path(scan_path, key)
        path = Path(sidecar) if sidecar is not None else None
        if path is None or not path.exists():
            store = cls(key, classes, n_slices, group_key(metadata), path)
            return store
        try:
            store = cls.load(path)
            if store.key != key:
                raise LabelsError(
                    f"{path}: these labels belong to another scan (key "
                    f"{store.key}, this scan is {key}); the file was left as it is"
                )
        except LabelsError as exc:
            if on_error != "reset":
                raise
            store = cls._recover(path, key, classes, n_slices, metadata, str(exc))
        if n_slices is not None and store.n_slices is None:
            store.n_slices = n_slices
        fresh = group_key(metadata)
        if (
            fresh
            and fresh != store.group
            and (fresh.startswith("patient:") or store.group is None)
        ):
            # sidecars written before the split was by patient held the study
            store.group = fresh
            if store.autosave:
                store.save()
        for c in classes:
            store._add_class(c)
        return store

    @classmethod
    def _recover(cls, path, key, classes, n_slices, metadata, reason) -> LabelStore:
        n = 1
        while (kept := path.with_name(f"{path.name}.corrupt-{n}")).exists():
            n += 1
        shutil.move(path, kept)
        store = None
        bak = path.with_name(path.name + ".bak")
        if bak.exists():
            try:
                store = cls.load(bak)
                store.path = path
                if store.key != key:
                    store = None
            except LabelsError:
                store = None
        msg = f"{reason}; the bad file was kept as {kept.name}"
        if store is None:
            store = cls(key, classes, n_slices, group_key(metadata), path)
            msg += "; starting with no labels"
        else:
            msg += "; labels restored from the previous version (.bak)"
        store.warnings.append(msg)
        store.save()
        return store
