"""The work on one cohort item: a pure function of (item, options) -> row.

:func:`process_item` is what every executor runs (the local process pool,
Dask workers, tests): it loads the item (after de-identifying a DICOM series
into the output folder when asked), classifies it with the same core as
``napari-medcnn classify``, optionally explains it with the same core as
``napari-medcnn explain`` (the map written under ``saliency/``), draws a
small thumbnail of its most telling slice (with the saliency overlay) under
``thumbs/``, and returns one flat, JSON-safe row.  Whatever goes wrong with
one item (a corrupt file, a missing decoder, a native decoder's panic, not
enough memory) becomes that item's ``error`` row with the reason, naming the
file; nothing escapes but ``KeyboardInterrupt``/``SystemExit``.

The model is loaded through the checkpoint cache
(:func:`~napari_medcnn.models.checkpoint.load_checkpoint`, an LRU cache on
path, file stamp and device), so each worker process loads it once.

Rows hold no patient data: names, IDs and birth dates are never read into
them (scans are loaded without PHI), the path is redacted with the scan's
own PHI strings (a folder named after the patient), and the row passes
through :func:`~napari_medcnn.inference.records.scrub`.  With
``include_phi`` the path is left as given (the user opted in).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcnn.cohort.items import Item

__all__ = [
    "CohortOptions",
    "VOLATILE_COLUMNS",
    "process_item",
    "error_row",
    "status_row",
    "task_id",
]

#: row columns that differ between runs of the same task (timing, where)
VOLATILE_COLUMNS = (
    "t_load_s",
    "t_classify_s",
    "t_explain_s",
    "t_total_s",
    "finished_at",
    "worker",
    "worker_peak_rss_mb",
)

THUMB_PX = 160  # longest side of a thumbnail, pixels


@dataclass(frozen=True)
class CohortOptions:
    """What to do with every item (picklable; the same for every worker).

    Attributes:
        model: the checkpoint (``.safetensors``, ``.pt`` or card); None is
            the shipped default model.
        scope: ``slice`` (a 2D model on every slice), ``volume`` or None
            (what the model's card says).
        explain: a saliency method (core name, e.g. ``gradcam``) or None.
        deidentify: de-identify DICOM series (PS3.15 Basic Profile) into
            ``<out>/deid/`` before reading them.
        key_file: the de-identification project key (reproducible
            pseudonyms across items and runs); None: a one-off key per item.
        passphrase: opens an encrypted (sealed) ``key_file``; None: the
            environment variable ``NAPARI_MEDCNN_PASSPHRASE`` if set.  Not
            in ``repr``; it reaches local workers with the options, but a
            remote Dask scheduler's workers never get it (they need the
            variable set on their own machines).
        include_phi: keep the path as given even when it holds the
            patient's name (the user opted in).
        device: torch device; None picks cuda, mps, then cpu.
        batch_size: slices per batch (None: the classifier's default).
        thumbnails: draw a thumbnail per item (for the report and table).
        trust_metrics: with ``explain``, also measure the map's deletion
            and insertion AUCs against a random order (about 1-2 s more
            per item on a CPU core); a map that a random order beats is
            flagged in ``saliency_trusted`` and ``saliency_warnings``.
    """

    model: str | None = None
    scope: str | None = None
    explain: str | None = None
    deidentify: bool = False
    key_file: str | None = None
    passphrase: bytes | None = field(default=None, repr=False)
    include_phi: bool = False
    device: str | None = None
    batch_size: int | None = None
    thumbnails: bool = True
    trust_metrics: bool = True


#: card fields besides the weights that change what a model returns
OUTPUT_FIELDS = ("classes", "temperature", "tta", "preprocessing", "domain")


def task_id(model_id: str, options: CohortOptions, card=None) -> str:
    """What a journal entry answers: the model id plus the options that
    change a row (scope, explain method, de-identification) and, given the
    ``card``, the card fields that change a prediction without changing the
    weights (:data:`OUTPUT_FIELDS`: a refitted temperature, a dropped
    mirror average or a refitted domain guard keep the model id, which is
    a hash of the weights, but give other rows)."""
    what = {
        "model": model_id,
        "scope": options.scope,
        "explain": options.explain,
        "deidentify": options.deidentify,
    }
    if card is not None:
        what["card"] = {f: getattr(card, f, None) for f in OUTPUT_FIELDS}
    text = json.dumps(what, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{model_id}:{digest[:8]}"


def load_model(options: CohortOptions):
    """The :class:`LoadedModel` of ``options`` (cached per process).

    Raises:
        napari_medcnn.models.checkpoint.CheckpointError: a missing or
            corrupt checkpoint.
    """
    from napari_medcnn.models.checkpoint import (
        CheckpointError,
        default_model_path,
        load_checkpoint,
    )

    path = options.model or default_model_path()
    if options.model is None and not Path(path).exists():
        raise CheckpointError(f"default model not found ({path}); pass a model")
    return load_checkpoint(path, options.device)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _peak_rss_mb() -> float:
    """This process's peak resident memory, MiB (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def base_row(item: Item, path: str | None = None) -> dict[str, Any]:
    """The item's identity columns plus the manifest's columns."""
    row: dict[str, Any] = {
        "key": item.key,
        "path": item.path if path is None else path,
        "series_uid": item.series_uid,
        "id": item.id,
        "kind": item.kind,
        "name": "",
    }
    for name, value in item.extra:
        row[name if name not in row else f"manifest_{name}"] = value
    return row


def status_row(
    item: Item, status: str, reason: str, *, model_id: str = "", model_name: str = ""
) -> dict[str, Any]:
    """A row without a result: ``error`` or ``skipped`` with its reason."""
    row = base_row(item)
    row.update(
        status=status,
        error=reason,
        label="",
        probability=None,
        model_id=model_id,
        model_name=model_name,
        t_total_s=0.0,
        finished_at=_now(),
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )
    return row


def _reason(exc: BaseException, where: str) -> str:
    """A one-line reason that names the file."""
    from napari_medcnn.io.scan import ScanReadError

    if isinstance(exc, ScanReadError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return f"{where}: not enough memory to process this item"
    text = str(exc).strip() or type(exc).__name__
    if where not in text:
        text = f"{where}: {type(exc).__name__}: {text}"
    return text


def _one_line(text: str, limit: int = 1000) -> str:
    """A reason on one line (native libraries write several), at most
    ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _header_tokens(item: Item) -> frozenset[str]:
    """The patient's identifying strings from the item's DICOM headers (to
    redact a path or message when the scan itself could not be loaded)."""
    if item.kind != "dicom":
        return frozenset()
    import pydicom

    from napari_medcnn.io.metadata import phi_tokens

    tokens: set[str] = set()
    for f in item.files[:3]:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
            tokens |= phi_tokens(ds)
        except Exception:  # noqa: BLE001 - unreadable: nothing to learn
            continue
    return frozenset(tokens)


def _load_scan(item: Item, options: CohortOptions, out_dir: Path):
    """The item's scan (the first one of a multi-stack file) and notes."""
    from napari_medcnn.io import load

    notes: list[str] = []
    if item.kind == "dicom":
        files: list[str] = list(item.files) or [item.path]
        if options.deidentify:
            files = _deidentified(item, files, options, out_dir)
        scans = _load_dicom(files)
    else:
        if options.deidentify:
            notes.append(f"{item.kind} file: no DICOM header to de-identify")
        scans = list(load(item.path, include_phi=False))
    if not scans:
        from napari_medcnn.io.scan import ScanReadError

        raise ScanReadError(item.path, "no image found")
    if len(scans) > 1:
        notes.append(f"{len(scans)} stacks in this item; classified the first")
    return scans[0], notes


def _load_dicom(files: list[str]):
    from napari_medcnn.io import load
    from napari_medcnn.io.dicom.find import group_headers
    from napari_medcnn.io.dicom.headers import read_header
    from napari_medcnn.io.dicom.load import load_series_scans

    if len(files) == 1:
        return list(load(files[0], include_phi=False))
    headers = [h for h in (read_header(f) for f in files) if h is not None]
    infos = [i for i in group_headers(headers) if i.kind == "image"]
    scans = []
    for info in infos:
        scans.extend(load_series_scans(info, include_phi=False, workers=1))
    return scans


def _deidentified(
    item: Item, files: list[str], options: CohortOptions, out_dir: Path
) -> list[str]:
    """De-identify the series into ``<out>/deid/<key>/``; the new files."""
    from napari_medcnn._progress import drain
    from napari_medcnn.deid.run import iter_deidentify
    from napari_medcnn.io.scan import ScanReadError

    target = out_dir / "deid" / item.key
    if target.exists():  # a rerun after a crash: start that item afresh
        import shutil

        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    result = drain(iter_deidentify(files, target, key_file=options.key_file,
                                   passphrase=options.passphrase))  # fmt: skip
    if result.failed:
        path, why = result.failed[0]
        raise ScanReadError(path, f"cannot de-identify: {why}")
    if not result.outputs:
        raise ScanReadError(item.path, "de-identification wrote no file")
    return [str(p) for p in result.outputs]


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    """The flat result columns of a classification record."""
    out: dict[str, Any] = {}
    classes = list(record.get("classes") or [])
    probs = list(record.get("probabilities") or [])
    for c, p in zip(classes, probs):
        out[f"p_{c}"] = p
    idx = record.get("index")
    out["label"] = record.get("label") or ""
    out["probability"] = probs[idx] if idx is not None and idx < len(probs) else None
    domain = record.get("domain") or {}
    out["in_domain"] = None if not domain else bool(domain.get("in_domain"))
    out["domain_score"] = domain.get("score")
    out["domain_reasons"] = "; ".join(domain.get("reasons") or [])
    out["uncertainty"] = record.get("uncertainty")
    out["scope"] = record.get("scope") or ""
    out["n_slices"] = record.get("n_slices")
    out["warnings"] = "; ".join(record.get("warnings") or [])
    out["modality"] = record.get("modality") or ""
    out["model_id"] = record.get("model_id") or ""
    out["model_name"] = record.get("model_name") or ""
    imp = record.get("slice_importance")
    out["slice_importance"] = (
        "" if imp is None else json.dumps(imp, separators=(",", ":"))
    )
    return out


def trust_columns(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The saliency map's trust metrics as row columns: deletion and
    insertion AUCs (fraction of the class probability, 0..1) and their
    random-order references, and ``saliency_trusted``: the map beats a
    random order on both (None when not measured)."""
    m = metrics or {}
    out = {
        f"saliency_{k}": m.get(k)
        for k in (
            "deletion_auc",
            "deletion_auc_random",
            "insertion_auc",
            "insertion_auc_random",
        )
    }
    d, dr = m.get("deletion_auc"), m.get("deletion_auc_random")
    i, ir = m.get("insertion_auc"), m.get("insertion_auc_random")
    known = None not in (d, dr, i, ir)
    out["saliency_trusted"] = bool(d < dr and i > ir) if known else None
    return out


def telling_slice(result: Any, n_slices: int | None) -> int | None:
    """The slice that best shows the decision: the most important slice of
    a sequence model, else the slice with the highest probability of the
    predicted class, else the middle one (None for a 2D image)."""
    if not n_slices:
        return None
    imp = getattr(result, "slice_importance", None)
    if imp is not None and len(imp) == n_slices:
        return int(np.argmax(np.asarray(imp)))
    sp = getattr(result, "slice_probabilities", None)
    if sp is not None and len(sp) == n_slices:
        return int(np.argmax(np.asarray(sp)[:, result.index]))
    return n_slices // 2


def _thumbnail(
    path: Path, scan: Any, slice_index: int | None, saliency: np.ndarray | None
) -> None:
    """A PNG of one slice (longest side :data:`THUMB_PX`), windowed as the
    viewer shows it, with the saliency overlay when there is one."""
    import io

    from PIL import Image

    from napari_medcnn._atomic import atomic_write
    from napari_medcnn.saliency.export import overlay_rgb, window_gray

    img = np.asarray(scan.data)
    m = saliency
    if scan.ndim_spatial == 3:
        k = slice_index if slice_index is not None else img.shape[0] // 2
        img = img[k]
        m = None if m is None else np.asarray(m)[k]
    if m is not None and m.shape == img.shape[:2]:
        rgb = overlay_rgb(img, m, window=scan.window, threshold=0.2)
    else:
        rgb = (window_gray(img, scan.window) * 255 + 0.5).astype(np.uint8)
    pic = Image.fromarray(rgb)
    h, w = rgb.shape[:2]
    sy, sx = (float(s) for s in scan.spacing[-2:])
    # square pixels in mm, longest side THUMB_PX
    hh, ww = h * sy, w * sx
    scale = THUMB_PX / max(hh, ww)
    pic = pic.resize((max(1, round(ww * scale)), max(1, round(hh * scale))))
    buf = io.BytesIO()
    pic.save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, buf.getvalue())


def _explain(scan: Any, loaded: Any, options: CohortOptions, out_dir: Path, key: str):
    """Run the saliency method; write the map; the result and its file."""
    from napari_medcnn._progress import drain
    from napari_medcnn.inference.request import default_scope
    from napari_medcnn.saliency import explain
    from napari_medcnn.saliency.export import write_map

    scope = default_scope(loaded.card, scan.ndim_spatial)
    result = drain(
        explain(
            [scan.data],
            loaded,
            options.explain,
            None,
            spacing=scan.spacing,
            scope=scope,
            rgb=scan.rgb,
            metrics=options.trust_metrics,
            device=options.device,
        )
    )
    suffix = ".nii.gz" if scan.ndim_spatial == 3 else ".npy"
    target = out_dir / "saliency" / f"{key}{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_map(
        target,
        result,
        image=scan.data,
        affine=scan.affine,
        spacing=scan.spacing,
        window=scan.window,
        rgb=scan.rgb,
        source_name=scan.name,
        model_name=loaded.card.name,
        overwrite=True,
    )
    return result, target


def process_item(
    item: Item, options: CohortOptions, out_dir: str | os.PathLike
) -> dict[str, Any]:
    """Classify (and explain) one item; its row (see module doc).

    Args:
        item: what to process.
        options: the run's options.
        out_dir: the run's output folder (``saliency/``, ``thumbs/`` and
            ``deid/`` are written below it).

    Returns:
        A flat JSON-safe dict: the identity columns, ``status`` (``ok``,
        ``error``, ``skipped``), ``error``, ``label``, ``probability``, one
        ``p_<class>`` per class, ``in_domain``, ``domain_score``,
        ``domain_reasons``, ``uncertainty``, ``scope``, ``n_slices``,
        ``top_slice``, ``explain_method``, ``saliency_file``,
        ``saliency_warnings``, ``thumbnail`` (paths relative to
        ``out_dir``), ``model_id``, ``model_name``, timings in seconds,
        ``finished_at``, ``worker`` and ``worker_peak_rss_mb``.
    """
    from napari_medcnn._progress import drain
    from napari_medcnn.inference.predict import classify_scan
    from napari_medcnn.inference.records import classification_record, scrub

    out = Path(out_dir)
    t0 = time.perf_counter()
    model_id = model_name = ""
    if item.kind in ("folder", "missing") or (item.kind == "dicom" and item.note):
        status = "error" if item.kind == "missing" else "skipped"
        return status_row(item, status, item.note)
    where = item.files[0] if len(item.files) == 1 else item.path
    stage = "loading"
    try:
        loaded = load_model(options)
        model_id, model_name = loaded.card.model_id, loaded.card.name
        scan, notes = _load_scan(item, options, out)
        t_load = time.perf_counter() - t0
        stage = "classifying"
        from napari_medcnn.inference.request import default_scope
        from napari_medcnn.saliency.slices import classify_slice_importance

        scope = options.scope or default_scope(loaded.card, scan.ndim_spatial)
        if scope == "slices":
            scope = "slice"
        result = drain(
            classify_scan(
                scan,
                loaded,
                scope,
                batch_size=options.batch_size,
                device=options.device,
                slice_importance=classify_slice_importance,
            )
        )
        path = item.path
        if not options.include_phi:
            from napari_medcnn.io.metadata import redact

            tokens = scan.phi_tokens
            if options.deidentify:
                # a de-identified copy no longer knows the name its folder
                # was given: the original headers' strings too
                tokens = tokens | _header_tokens(item)
            path = redact(path, tokens)
        record = classification_record(
            result,
            name=scan.name,
            channel_layers=[scan.name],
            metadata=scan.metadata,
            path=path,
            channel_names=loaded.card.channel_names,
        )
        t_classify = time.perf_counter() - t0 - t_load
        row = base_row(item, path)
        row["name"] = scan.redact(scan.name or "")
        row["status"] = "ok"
        row["error"] = ""
        row.update(_flatten(record))
        if record.get("series_uid") and options.deidentify:
            row["series_uid"] = record["series_uid"]  # the new, pseudonymous one
        n_slices = int(scan.data.shape[0]) if scan.ndim_spatial == 3 else None
        top = telling_slice(result, n_slices)
        row["top_slice"] = top
        if notes:
            row["warnings"] = "; ".join([*notes, row["warnings"]]).strip("; ")
        saliency = None
        row["explain_method"] = options.explain or ""
        row["saliency_file"] = row["saliency_warnings"] = ""
        t_explain = 0.0
        if options.explain:
            stage = "explaining"
            t1 = time.perf_counter()
            sal, target = _explain(scan, loaded, options, out, item.key)
            saliency = sal.map
            row["saliency_file"] = str(target.relative_to(out))
            row["saliency_warnings"] = "; ".join(sal.warnings or [])
            row.update(trust_columns(sal.metrics))
            t_explain = time.perf_counter() - t1
        row["thumbnail"] = ""
        if options.thumbnails:
            stage = "drawing the thumbnail of"
            thumb = out / "thumbs" / f"{item.key}.png"
            _thumbnail(thumb, scan, top, saliency)
            row["thumbnail"] = str(thumb.relative_to(out))
        row.update(
            t_load_s=round(t_load, 4),
            t_classify_s=round(t_classify, 4),
            t_explain_s=round(t_explain, 4),
        )
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - pyo3 panics are BaseException
        reason = _reason(exc, where)
        if stage != "loading":
            reason = f"{stage} failed: {reason}"
        row = error_row(item, reason, options, model_id=model_id, model_name=model_name)
    row["t_total_s"] = round(time.perf_counter() - t0, 4)
    row["finished_at"] = _now()
    row["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    row["worker_peak_rss_mb"] = _peak_rss_mb()
    return scrub(row)


def error_row(
    item: Item, reason: str, options: CohortOptions, **model: str
) -> dict[str, Any]:
    """An ``error`` row whose reason is one line and whose path and reason
    are redacted with the patient's strings from the item's DICOM headers
    (unless ``options.include_phi``); ``model``: ``model_id``/``model_name``.
    For the executors too (a worker that died holding the item)."""
    from napari_medcnn.inference.records import scrub

    reason, path = _one_line(reason), item.path
    if not options.include_phi:
        from napari_medcnn.io.metadata import redact

        tokens = _header_tokens(item)
        reason, path = redact(reason, tokens), redact(path, tokens)
    row = status_row(item, "error", reason, **model)
    row["path"] = path
    return scrub(row)
