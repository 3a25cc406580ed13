"""From labels and scans to training arrays, through the card's preprocessing.

Every example is prepared with the *model card's* preprocessing record
(:func:`~napari_medcnn.preprocessing.record.prepare`), the same path classify and
saliency take, so a fine-tuned model works in them at once.

:func:`examples_from_scan` turns one :class:`~.labels.LabelStore` plus the
scan's arrays (what a widget has in its layers) into a :class:`LabeledSet`;
:func:`load_labeled` does the same for sidecar and CSV files (the CLI),
as a generator yielding ``("load", i, n)``.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcnn.training.data.volumes import VolumeCache, VolumeStack
from napari_medcnn.training.labels.store import (
    CsvLabel,
    LabelsError,
    LabelStore,
    read_label_csv,
    scan_key,
)


@dataclass
class LabeledSet:
    """Prepared examples.

    Attributes:
        x: float32 (N, C, H, W) or (N, C, D, H, W) in [0, 1]; volumes are a
            lazy :class:`~.volumes.VolumeStack` read from the disk cache.
        y: int64 (N,) class indices into ``classes``.
        classes: class names.
        groups: (N,) group keys (hashed patient, else hashed study, else
            the scan key): whole groups stay on one side of a split.
        items: (N,) item keys ``<scan key>#slice:<i>`` / ``#image`` /
            ``#volume`` (no patient data).
        warnings: labels that were skipped, and why.
        masks: volume examples only: per example a prepared lesion mask,
            float16 (S, H, W) in [0, 1] (the fraction of each voxel inside
            the drawn finding), or None where none was given; None when no
            example has one.  See :meth:`dense_targets`.
    """

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    groups: np.ndarray
    items: list[str]
    warnings: list[str] = field(default_factory=list)
    masks: list[np.ndarray | None] | None = None

    def mask_classes(self) -> list[str]:
        """The classes with at least one masked example (the findings)."""
        if self.masks is None:
            return []
        have = {int(y) for y, m in zip(self.y, self.masks) if m is not None}
        return [c for i, c in enumerate(self.classes) if i in have]

    def dense_targets(self) -> list[np.ndarray | float] | None:
        """Per-voxel targets for a model with an evidence map, or None.

        A class with drawn masks is a *finding* class: its volumes without a
        mask are unknown (NaN: they do not count).  Every volume of the
        other classes is known to be free of findings (0), since a finding
        would have been drawn.  An entry is the prepared mask, or the
        number that fills the whole volume.
        """
        if self.masks is None:
            return None
        finding = {self.classes.index(c) for c in self.mask_classes()}
        return [
            m if m is not None else (np.nan if int(y) in finding else 0.0)
            for y, m in zip(self.y, self.masks)
        ]

    def __len__(self) -> int:
        return len(self.y)

    def counts(self) -> dict[str, int]:
        """Examples per class name (zeros included)."""
        n = np.bincount(self.y, minlength=len(self.classes))
        return {c: int(k) for c, k in zip(self.classes, n)}

    def without_empty_classes(self) -> LabeledSet:
        """The same examples with classes that have no example dropped
        (e.g. model classes the user did not label), labels re-indexed."""
        keep = [c for c, n in self.counts().items() if n > 0]
        remap = np.full(len(self.classes), -1, np.int64)
        for j, c in enumerate(keep):
            remap[self.classes.index(c)] = j
        return LabeledSet(
            self.x, remap[self.y], keep, self.groups, self.items, self.warnings,
            self.masks,
        )  # fmt: skip

    def subset(self, idx: np.ndarray) -> LabeledSet:
        idx = np.asarray(idx)
        return LabeledSet(
            self.x[idx],
            self.y[idx],
            list(self.classes),
            self.groups[idx],
            [self.items[i] for i in idx],
            list(self.warnings),
            None if self.masks is None else [self.masks[i] for i in idx],
        )

    @classmethod
    def concat(cls, parts: Sequence[LabeledSet], classes: Sequence[str]) -> LabeledSet:
        """Join sets, re-indexing labels to ``classes`` (a superset)."""
        classes = list(classes)
        xs, ys, gs, items, warns = [], [], [], [], []
        masks: list[np.ndarray | None] = []
        for p in parts:
            if len(p):
                remap = np.array([classes.index(c) for c in p.classes])
                xs.append(p.x)
                ys.append(remap[p.y])
                gs.append(p.groups)
                items += p.items
                masks += p.masks if p.masks is not None else [None] * len(p)
            warns += p.warnings
        if not xs:
            raise LabelsError("no labelled examples found")
        shapes = {tuple(x.shape[1:]) for x in xs}
        if len(shapes) > 1:
            raise LabelsError(f"examples differ in prepared shape: {sorted(shapes)}")
        lazy = any(isinstance(x, VolumeStack) for x in xs)
        return cls(
            VolumeStack.concat(xs) if lazy else np.concatenate(xs),
            np.concatenate(ys).astype(np.int64),
            classes,
            np.concatenate(gs),
            items,
            warns,
            masks if any(m is not None for m in masks) else None,
        )


def _inplane(spacing: Sequence[float] | None) -> tuple[float, float]:
    return tuple(spacing[-2:]) if spacing is not None else (1.0, 1.0)


def examples_from_scan(
    store: LabelStore,
    images: Sequence[np.ndarray],
    record: dict[str, Any],
    spacing: Sequence[float] | None = None,
    *,
    rgb: bool = False,
    input_kind: str = "slice",
    classes: Sequence[str] | None = None,
    cache: VolumeCache | None = None,
    identity: Sequence[Any] | None = None,
    mask: np.ndarray | None = None,
) -> LabeledSet:
    """The labelled examples of one scan, prepared as the card says.

    Args:
        store: the scan's labels.
        images: one array per channel (the card's channel order): (H, W)
            or (H, W, 3) with ``rgb`` for 2D images, (S, H, W) for volumes.
        record: the card's preprocessing record.
        spacing: mm per array axis (the layer's scale).
        input_kind: the card's ``input_kind``: slice models use image and
            slice labels; volume/sequence models use volume labels.
        classes: class order (default the store's).
        cache, identity: volume examples are kept in ``cache`` under the
            source's ``identity`` (see :mod:`.volumes`); without them they
            stay in memory.
        mask: a volume label's lesion mask on the scan's grid (non-zero
            inside the finding), prepared with the volume (see
            :attr:`LabeledSet.masks`).
    """
    from napari_medcnn.preprocessing.batch import prepare_slices
    from napari_medcnn.preprocessing.record import prepare

    classes = list(classes or store.classes)
    images = [np.asarray(im) for im in images]
    nd = images[0].ndim - (1 if rgb else 0)
    group = store.group or store.key
    xs, ys, items, warnings = [], [], [], []
    masks = None
    if input_kind == "slice":
        if store.image_label is not None and nd == 2:
            xs.append(prepare(images, record, _inplane(spacing))[None])
            ys.append(classes.index(store.image_label))
            items.append(f"{store.key}#image")
        if store.slices and nd == 3:
            idx = sorted(store.slices)
            bad = [i for i in idx if i >= images[0].shape[0]]
            if bad:
                raise LabelsError(
                    f"slice labels {bad[:5]} outside the scan's "
                    f"{images[0].shape[0]} slices: labels and image do not match"
                )
            xs.append(
                prepare_slices(
                    [im[idx] for im in images], record, _inplane(spacing), rgb
                )
            )
            ys += [classes.index(store.slices[i]) for i in idx]
            items += [f"{store.key}#slice:{i}" for i in idx]
        if store.volume_label is not None:
            warnings.append(
                f"{store.key}: volume label skipped (a slice model needs image "
                "or slice labels)"
            )
    else:
        if store.volume_label is not None and nd == 3:
            x, m = _volume_example(images, record, spacing, cache, identity, mask)
            xs.append(x)
            masks = None if m is None else [m]
            ys.append(classes.index(store.volume_label))
            items.append(f"{store.key}#volume")
        elif store.volume_label is not None:
            raise LabelsError(
                f"{store.key}: a volume label on a 2D image; a volume model "
                "needs 3D scans (use a slice model for 2D images)"
            )
        if store.slices or store.image_label is not None:
            warnings.append(
                f"{store.key}: slice/image labels skipped (a volume model needs "
                "volume labels)"
            )
    if xs and isinstance(xs[0], VolumeStack):
        x = VolumeStack.concat(xs)
    elif xs:
        x = np.concatenate(xs).astype(np.float32, copy=False)
    else:
        x = np.zeros((0, len(images), *record["size"]), np.float32)
    y = np.asarray(ys, dtype=np.int64)
    groups = np.array([group] * len(y), dtype=object)
    return LabeledSet(x, y, classes, groups, items, warnings, masks)


def _volume_example(
    images, record, spacing, cache, identity, mask=None
) -> tuple[VolumeStack, np.ndarray | None]:
    """One prepared volume as a one-item stack, through the cache, and its
    prepared mask (float16, or None without ``mask``)."""
    from napari_medcnn.preprocessing.volume import (
        prepare_model_input,
        prepare_volume,
    )

    key = None if cache is None or identity is None else cache.key(identity, record)
    if mask is not None:
        x, t = prepare_volume(images, record, spacing, targets=[mask])
        if key is not None:
            cached = cache.get(key)
            x = cached if cached is not None else cache.put(key, x)
        return VolumeStack([x]), t[0].astype(np.float16)
    if key is None:
        return VolumeStack([prepare_model_input(images, record, spacing)]), None
    x = cache.get(key)
    if x is None:
        x = cache.put(key, prepare_model_input(images, record, spacing))
    return VolumeStack([x]), None


def _load_scan(path: Path, key: str | None = None):
    from napari_medcnn.io import load

    scans = load(path, include_phi=False)
    if len(scans) == 1:
        return scans[0]
    if key is None:  # a CSV row: it must name one volume
        names = ", ".join(f"'{s.name}' {tuple(s.data.shape)}" for s in scans[:4])
        raise LabelsError(
            f"{path}: holds {len(scans)} series or stacks ({names}"
            f"{', ...' if len(scans) > 4 else ''}), e.g. slices that differ in "
            "size or orientation; a label row must name one volume: point it "
            "to one series, or label it in the Label images widget"
        )
    for s in scans:
        if scan_key(path, s.metadata, None) == key:
            return s
    raise LabelsError(f"{path}: no series with the labelled key {key}")


def _csv_set(
    row: CsvLabel, record, input_kind: str, cache: VolumeCache | None = None
) -> LabeledSet:

    scan = _load_scan(row.path)
    nd = scan.ndim_spatial
    if input_kind != "slice" and nd != 3:
        raise LabelsError(
            f"{row.path}: a 2D image among a volume model's labels (2D and 3D "
            "labels cannot be mixed in one run); label 3D volumes or train a "
            "slice model"
        )
    mask = None
    if row.mask is not None:
        mask = _read_mask(row.mask, scan, input_kind)
    key = scan_key(row.path, scan.metadata, None)
    store = LabelStore(key, [row.label], None if nd == 2 else scan.data.shape[0])
    store.group = row.group or store.group
    store.autosave = False
    if nd == 2:
        store.image_label = row.label
    else:
        store.volume_label = row.label
    return _scan_examples(store, scan, row.path, record, input_kind, cache, mask)


def _read_mask(path: Path, scan, input_kind: str) -> np.ndarray:
    """A CSV row's lesion mask: one volume on the scan's voxel grid."""
    from napari_medcnn.io import load

    if input_kind == "slice":
        raise LabelsError(
            f"{path}: lesion masks train volume models (--arch cnn_rnn or "
            "slice_pool); a slice model does not use them"
        )
    found = load(path, include_phi=False)
    if len(found) != 1 or found[0].ndim_spatial != 3:
        raise LabelsError(f"{path}: a lesion mask must be one 3D volume")
    m = np.asarray(found[0].data)
    if m.shape != tuple(scan.data.shape):
        raise LabelsError(
            f"{path}: mask shape {m.shape} differs from its scan's "
            f"{tuple(scan.data.shape)}; a mask must be on the scan's voxel grid"
        )
    return m


def _scan_examples(
    store, scan, path, record, input_kind: str, cache, mask=None
) -> LabeledSet:
    """:func:`examples_from_scan` on a loaded scan, volumes cached under
    the source file's identity."""
    from napari_medcnn.training.data.volumes import source_identity

    return examples_from_scan(
        store,
        [scan.data],
        record,
        scan.spacing,
        rgb=scan.rgb,
        input_kind=input_kind,
        cache=cache,
        identity=[*source_identity(path), store.key],
        mask=mask,
    )


def expand_sources(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """Sidecars and CSVs; a folder is searched for ``*.medcnn-labels.json``."""
    from napari_medcnn.training.labels.store import LABELS_DIR, SIDECAR_SUFFIX

    out: list[Path] = []
    for s in map(Path, sources):
        if s.is_dir():
            found = sorted(s.rglob(f"*{SIDECAR_SUFFIX}"))
            found += sorted(s.rglob(f"{LABELS_DIR}/*.json"))
            if not found:
                raise LabelsError(f"{s}: no label sidecars in this folder")
            out += found
        elif not s.exists():
            raise LabelsError(f"{s}: no such label file")
        else:
            out.append(s)
    return out


def load_labeled(
    sources: Sequence[str | os.PathLike],
    record: dict[str, Any],
    *,
    input_kind: str = "slice",
    classes: Sequence[str] | None = None,
    cache: VolumeCache | None = None,
) -> Generator[tuple[str, int, int], None, LabeledSet]:
    """Read label sidecars and/or ``path,label`` CSVs and prepare the scans.

    Args:
        sources: sidecar JSON files, CSV files or folders of sidecars.
        record: the card's preprocessing record.
        input_kind: the card's input kind (see :func:`examples_from_scan`).
        classes: class order; default: classes in order of appearance.
        cache: where prepared volumes are kept (volume models; default the
            user's cache folder, see :mod:`.volumes`).

    Yields:
        ``("load", done, total)`` per scan.

    Raises:
        LabelsError: a scan that cannot be read or prepared, naming its file.
    """
    from napari_medcnn.io.scan import ScanReadError

    if input_kind != "slice" and cache is None:
        cache = VolumeCache()

    jobs: list[Any] = []
    for src in expand_sources(sources):
        if src.suffix.lower() == ".csv":
            jobs += read_label_csv(src)
        else:
            jobs.append(LabelStore.load(src))
    order: list[str] = list(classes or [])
    for job in jobs:
        names = [job.label] if isinstance(job, CsvLabel) else job.classes
        order += [c for c in names if c not in order]
    parts = []
    yield ("load", 0, len(jobs))
    for i, job in enumerate(jobs, 1):
        where = job.path
        try:
            parts.append(_job_set(job, record, input_kind, cache))
        except LabelsError:
            raise
        except (ScanReadError, ValueError, OSError, MemoryError) as exc:
            msg = str(exc)
            named = os.fspath(where) in msg or Path(where).name in msg
            raise LabelsError(msg if named else f"{where}: {msg}") from None
        yield ("load", i, len(jobs))
    return LabeledSet.concat(parts, order)


def _job_set(job, record, input_kind: str, cache) -> LabeledSet:
    """The examples of one CSV row or sidecar."""
    from napari_medcnn.training.labels.store import scan_path_for

    if isinstance(job, CsvLabel):
        return _csv_set(job, record, input_kind, cache)
    scan_path = scan_path_for(job.path)
    scan = _load_scan(scan_path, job.key)
    if scan_key(scan_path, scan.metadata, None) != job.key:
        raise LabelsError(
            f"{job.path}: the scan {scan_path.name} changed since it was "
            "labelled (its key differs)"
        )
    mask = None
    if input_kind != "slice" and job.volume_label is not None and job.path:
        # a lesion mask painted in napari, kept beside the sidecar
        from napari_medcnn.training.labels.masks import load_mask, mask_path

        mask = load_mask(mask_path(job.path), tuple(scan.data.shape))
    return _scan_examples(job, scan, scan_path, record, input_kind, cache, mask)
