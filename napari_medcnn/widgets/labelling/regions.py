"""Region labels, the probability map and "Next case" for the labelling panel.

A mixin for :class:`~napari_medcnn.widgets.labelling.widget.LabellingWidget`
(its fields are those of a ``RegionBox``): the worker plumbing
(progress bar, Cancel, errors) and the result layers.  The probability of
class ``c`` is an Image layer ``<scan> · p(<c>)`` with the scan's scale and
translate, updated by name on every retraining; "Map → Labels" copies the
predicted classes into ``<scan> · regions (predicted)`` to correct them.
The patch classifier of the last run is kept in a temporary folder and the
next run continues from it (same patch size), which is the interactive
loop.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from napari_medcnn.widgets._common.jobs import JobError
from napari_medcnn.widgets._common.labels import open_store
from napari_medcnn.widgets._common.layers import RESULT_KEY, is_result, level0
from napari_medcnn.widgets._common.model_events import current_model
from napari_medcnn.widgets.labelling.jobs import next_case_job, region_job

_COLORMAPS = ("green", "magenta", "cyan", "yellow", "red", "blue")


class RegionMixin:
    """Needs ``_viewer``, ``_job``, ``_stores``, ``_model``, ``layer``,
    ``classes``, ``go_to``, ``_say``, ``_error``, ``progress``,
    ``cancel_button``, ``next_button`` and the fields of a ``RegionBox``."""

    def _init_regions(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="medcnn-patches-")
        self._patch: dict[str, Any] = {}  # ckpt path and its patch settings
        self._control: Any = None
        self._map: Any = None  # last ProbabilityMap
        self._map_layer: Any = None  # the scan it was computed on

    # -- public API ------------------------------------------------------
    @property
    def probability_map(self) -> Any:
        """The last :class:`~napari_medcnn.training.labels.regions.ProbabilityMap`."""
        return self._map

    def set_model(self, model: Any) -> None:
        """The model "Next case" and "From model" use (path or LoadedModel;
        None: the Classify widget's model, else the default one)."""
        self._model = model

    def train_regions(self) -> bool:
        """Train the patch classifier on the painted Labels layer and show
        its probability map (in a worker).  Returns whether a job started."""
        from napari.qt.threading import thread_worker

        from napari_medcnn.training.control import TrainControl

        if self._job.worker is not None:
            return False
        layer, labels = self.layer, self.labels_combo.currentData()
        if layer is None or labels is None:
            self._error("Choose the scan and a Labels layer painted on it.")
            return False
        image = level0(layer)
        if labels.data.shape != image.shape:
            self._error(
                f"'{labels.name}' has shape {labels.data.shape} but "
                f"'{layer.name}' has {image.shape}: paint on a Labels layer "
                "made for this scan."
            )
            return False
        names = {i + 1: c for i, c in enumerate(self.classes)}
        mm = float(self.patch_spin.value())
        dims = int(self.patch_dims_combo.currentData())
        settings = (mm, dims, layer.unique_id)
        parent = self._patch.get("path") if self._patch.get("key") == settings else None
        out = Path(self._tmp.name) / f"patch_{len(self._patch.get('runs', []))}"
        self._control = TrainControl()
        worker = thread_worker(region_job, start_thread=False, ignore_errors=True)(
            image,
            labels.data,
            tuple(float(s) for s in layer.scale),
            mm,
            dims,
            names,
            parent,
            str(out),
            self._control,
            int(self.region_epochs.value()),
        )
        worker.returned.connect(self._on_regions_done)
        self._pending_region = {"layer": layer, "key": settings, "out": out}
        self._start_job(worker, "Sampling patches…")
        return True

    def map_to_labels(self) -> Any:
        """Copy the predicted classes into a Labels layer (to correct)."""
        layer = self._map_layer
        if self._map is None or layer is None or layer not in self._viewer.layers:
            self._error("Train a patch classifier first.")
            return None
        name = f"{layer.name} · regions (predicted)"
        return self._put_layer(
            name, self._map.label_image(), layer, kind="labels", opacity=0.5
        )

    def export_seg(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write a DICOM Segmentation of the scan's series
        (:mod:`napari_medcnn.export.seg`): the last probability map as a
        FRACTIONAL SEG (one segment per class, named after it, made by the
        patch classifier) when there is one for this scan, else the chosen
        Labels layer as a BINARY SEG (label ``k`` = class ``k``).

        Raises:
            ValueError: nothing to export, or the scan has no DICOM source
                (NIfTI, image): the message says why.
        """
        import numpy as np

        from napari_medcnn.export.common import Algorithm
        from napari_medcnn.export.seg import write_segmentation
        from napari_medcnn.export.sources import source_images

        use_map = self._map is not None and self._map_layer is self.layer
        layer = self.layer
        labels = self.labels_combo.currentData()
        if layer is None or (not use_map and labels is None):
            raise ValueError("nothing to export: paint regions or train a map first")
        shape = level0(layer).shape
        spatial = len(shape) - (1 if getattr(layer, "rgb", False) else 0)
        src = source_images(
            dict(layer.metadata),
            n_slices=shape[0] if spatial == 3 else 1,
            name=str(layer.name),
        )
        if use_map:
            probs = np.moveaxis(np.asarray(self._map.probs, np.float32), 0, -1)
            run = str(self._patch.get("path") or "patch classifier")
            algorithm = Algorithm(
                name="napari-medcnn patch classifier",
                model_id=Path(run).name[:64],
                classes=tuple(self._map.classes),
            )
            data, names = np.clip(probs, 0.0, 1.0), list(self._map.classes)
        else:
            algorithm, data, names = None, np.asarray(labels.data), list(self.classes)
        return write_segmentation(
            data, src, path, overwrite=overwrite, segment_names=names,
            algorithm=algorithm,
        )  # fmt: skip

    def _export_seg_dialog(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        name = "".join(c if c.isalnum() else "_" for c in str(self.layer.name))
        path, _ = QFileDialog.getSaveFileName(
            self, "Export DICOM SEG", f"{name}_seg.dcm", "DICOM SEG (*.dcm)"
        )
        if not path:
            return
        confirmed = path.lower().endswith(".dcm")
        path = path if confirmed else f"{path}.dcm"
        try:
            out = self.export_seg(path, overwrite=confirmed)
        except (OSError, ValueError) as exc:
            self._error(f"Export failed: {exc}")
            return
        self._say(f"Exported to {Path(out).name}.")

    def next_case(self) -> bool:
        """Rank the unlabelled slices/images of the open image layers by the
        model's uncertainty and go to the most informative (a worker)."""
        from napari.layers import Image

        if self._job.worker is not None:
            return False
        layers = [
            lay
            for lay in self._viewer.layers
            if isinstance(lay, Image) and not is_result(lay) and lay.ndim in (2, 3)
        ]
        if not layers:
            self._error("Open an image layer first.")
            return False
        scans = []
        for lay in layers:
            store = self._stores.get(lay.unique_id)
            if store is None:
                try:
                    store = open_store(lay)
                except ValueError:
                    store = None
            scans.append(
                {
                    "images": [level0(lay)],
                    "spacing": tuple(float(s) for s in lay.scale),
                    "rgb": bool(getattr(lay, "rgb", False)),
                    "store": store,
                }
            )
        model = self._model or current_model(self._viewer)
        from napari.qt.threading import thread_worker

        worker = thread_worker(next_case_job, start_thread=False, ignore_errors=True)(
            scans, model
        )
        worker.returned.connect(lambda r: self._on_ranked(r, layers))
        self._start_job(worker, "Ranking unlabelled slices…")
        return True

    # -- worker plumbing -------------------------------------------------
    def _start_job(self, worker: Any, message: str) -> None:
        self._job.worker = worker
        worker.yielded.connect(self._on_job_progress)
        worker.errored.connect(self._on_job_errored)
        worker.finished.connect(self._on_job_finished)
        self.progress.setRange(0, 0)
        self._say(message)
        self._update_buttons()
        worker.start()

    def _on_job_progress(self, event: Any) -> None:
        if hasattr(event, "kind"):  # TrainEvent
            done = (event.epoch - 1) * event.n_steps + event.step
            self.progress.setRange(0, max(1, event.n_epochs * event.n_steps))
            self.progress.setValue(done)
            loss = event.metrics.get("loss", event.metrics.get("val_loss"))
            loss = f", loss {loss:.3f}" if loss is not None else ""
            self._say(f"Training patches: epoch {event.epoch}/{event.n_epochs}{loss}")
            return
        stage, i, n = event[:3]
        if n:
            self.progress.setRange(0, int(n))
            self.progress.setValue(int(i))
        text = {"patches": "Sampling patches…", "probability_map": "Mapping…"}
        self._say(text.get(stage, "Ranking…") + (f" {i}/{n}" if n else ""))

    def _on_job_errored(self, exc: Exception) -> None:
        why = str(exc) if isinstance(exc, JobError | ValueError) else repr(exc)
        self._error(f"Failed: {why}")

    def _on_job_finished(self) -> None:
        self._job.worker = None
        self._control = None
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self._update_buttons()

    def _cancel_regions(self) -> None:
        if self._control is not None:
            self._control.cancel()  # the trainer returns after its batch
        elif self._job.worker is not None:
            self._job.worker.quit()

    def _update_region_buttons(self) -> None:
        busy = self._job.worker is not None
        has_scan = self.layer is not None
        self.region_button.setEnabled(
            not busy and has_scan and self.labels_combo.count() > 0
        )
        self.to_labels_button.setEnabled(not busy and self._map is not None)
        dicom = self.layer is not None and bool(self.layer.metadata.get("source_paths"))
        self.seg_button.setEnabled(
            not busy
            and dicom
            and (self._map is not None or self.labels_combo.count() > 0)
        )
        self.next_button.setEnabled(not busy and has_scan)
        self.cancel_button.setEnabled(busy)

    # -- results ---------------------------------------------------------
    def _on_regions_done(self, out: tuple[Any, Any]) -> None:
        res, pm = out
        pending = getattr(self, "_pending_region", {})
        if res.checkpoint is not None and not res.cancelled:
            runs = self._patch.get("runs", []) + [res.checkpoint]
            self._patch = {"path": str(res.checkpoint), "key": pending["key"],
                           "runs": runs}  # fmt: skip
        if pm is None:
            self._say("Cancelled: the previous map stays.")
            return
        layer = pending["layer"]
        if layer not in self._viewer.layers:
            return
        self._map, self._map_layer = pm, layer
        for k, cls in enumerate(pm.classes):
            self._put_layer(
                f"{layer.name} · p({cls})",
                pm.probs[k],
                layer,
                colormap=_COLORMAPS[k % len(_COLORMAPS)],
                blending="additive",
                contrast_limits=(0.0, 1.0),
                opacity=0.6,
            )
        acc = res.metrics.get("accuracy")
        acc = f", validation accuracy {acc:.2f}" if acc is not None else ""
        self._say(f"Probability map of {len(pm.classes)} classes{acc}.")
        self._update_buttons()

    def _put_layer(self, name: str, data: Any, source: Any, kind="image", **kw):
        """Add or update (by name) a result layer aligned with ``source``."""
        geometry = {"scale": source.scale, "translate": source.translate}
        md = {RESULT_KEY: kind, "source_layer": str(source.name)}
        if name in self._viewer.layers:
            lay = self._viewer.layers[name]
            lay.data = data
            lay.scale, lay.translate = geometry["scale"], geometry["translate"]
            return lay
        add = self._viewer.add_labels if kind == "labels" else self._viewer.add_image
        return add(data, name=name, metadata=md, **geometry, **kw)

    def _on_ranked(self, ranking: Any, layers: list[Any]) -> None:
        cand = ranking.best(1)[0]
        layer = layers[cand.scan]
        if layer not in self._viewer.layers:
            return
        self.go_to(cand.slice, layer)
        where = f"slice {cand.slice}" if cand.slice is not None else "image"
        score = float(ranking.scores[ranking.order[0]])
        self._say(
            f"Next case: '{layer.name}' {where} ({ranking.method} {score:.3f} nats)."
        )

    # -- helpers ---------------------------------------------------------
    def _model_classes(self) -> list[str]:
        """Classes of the current model, read from its JSON card (no torch)."""
        import json

        from napari_medcnn.models.checkpoint import default_model_path

        model = self._model or current_model(self._viewer)
        if hasattr(model, "card"):
            return list(model.card.classes)
        path = Path(model if model is not None else default_model_path())
        card = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        return [str(c) for c in card["classes"]]
