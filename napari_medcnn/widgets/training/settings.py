"""Settings of the Fine-tune widget: labelled layers, parent, run options.

A mixin for :class:`~napari_medcnn.widgets.training.widget.TrainingWidget`
that reads the panel's controls (the fields of its ``ModelBox``,
``TrainingBox`` and ``AugmentBox``) and the viewer's layers into the
arguments of :func:`napari_medcnn.widgets.training.jobs.train_job`; bad
settings raise ``ValueError`` with the message shown to the user.  No torch
import here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_medcnn.widgets._common.labels import stored_labels
from napari_medcnn.widgets._common.layers import is_result, level0
from napari_medcnn.widgets._common.model_events import current_model
from napari_medcnn.widgets.training.dialogs import ask_open_path, ask_save_path
from napari_medcnn.widgets.training.jobs import checkpoint_paths


class SettingsMixin:
    """Needs ``_viewer``, ``_kept``, ``augment_box``, ``model_box`` and the
    fields of the ``ModelBox`` and ``TrainingBox``."""

    def sources(self) -> list[dict[str, Any]]:
        """The labelled image layers: sidecar dict, images, spacing, rgb."""
        from napari.layers import Image

        out = []
        for lay in self._viewer.layers:
            if not isinstance(lay, Image) or is_result(lay):
                continue
            try:
                store = stored_labels(lay)
            except ValueError:  # unreadable sidecar: the labelling panel says so
                continue
            if store is not None and store.items():
                out.append(
                    {
                        "labels": store.to_dict(),
                        "images": [level0(lay)],
                        "spacing": tuple(float(s) for s in lay.scale),
                        "rgb": bool(getattr(lay, "rgb", False)),
                        "name": str(lay.name),
                        "modality": (lay.metadata or {}).get("modality"),
                        "mask": self._lesion_mask(lay, store),
                    }
                )
        return out

    def _lesion_mask(self, lay: Any, store: Any) -> Any:
        """The painted lesion mask of a volume-labelled layer, or None."""
        from napari_medcnn.widgets._common.labels import open_store, scan_path_of
        from napari_medcnn.widgets._common.masks import painted_mask

        if lay.ndim != 3 or store.volume_label is None:
            return None
        path = scan_path_of(lay)
        try:
            sidecar = open_store(lay) if path is not None and path.exists() else None
            return painted_mask(self._viewer, lay, sidecar)
        except ValueError as exc:  # a damaged mask file: train without it
            self._say(f"'{lay.name}': lesion mask not used: {exc}")
            return None

    def _parent_path(self) -> str | None:
        from napari_medcnn.models.checkpoint import default_model_path

        kind = self.parent_combo.currentData()
        if kind == "scratch":
            return None
        if kind == "current":
            loaded = current_model(self._viewer)
            if loaded is None:
                raise ValueError("No current model: open the Classify widget first.")
            return str(loaded.path)
        if kind == "file":
            path = Path(self.parent_edit.text().strip()).expanduser()
            if not path.exists():
                raise ValueError(f"Parent checkpoint not found: {path}")
            return str(path)
        return str(default_model_path())

    def _settings(self, resume: bool) -> dict[str, Any]:
        from napari_medcnn.training.data.splits import MIN_PER_CLASS

        sources = self.sources()
        counts = {c: n for c, n in self.refresh_labels().items() if n > 0}
        if len(counts) < 2 or min(counts.values()) < MIN_PER_CLASS:
            have = ", ".join(f"{c}: {n}" for c, n in counts.items()) or "none"
            raise ValueError(
                f"Training needs at least 2 classes with at least {MIN_PER_CLASS} "
                f"labelled examples each (have {have})."
            )
        parent = self._parent_path()
        epochs = self.epochs_spin.value()
        provenance = {"tool": "napari-medcnn Fine-tune widget"}
        if resume:
            provenance["resumed_from_cancelled_run"] = self._kept.get("parent")
            parent = self._kept["staging"]
            epochs = max(1, epochs - int(self._kept.get("epochs_run") or 0))
        out = self.out_edit.text().strip()
        if not out:
            raise ValueError("Choose where to save the new checkpoint.")
        for p in filter(None, (parent, self._kept and self._kept.get("parent"))):
            if same_checkpoint(out, p):
                raise ValueError("The output is the parent model: choose another path.")
        self._check_out(out)
        split = self.split_combo.currentData()
        return {
            "sources": sources,
            "parent": parent,
            "config": {
                "epochs": epochs,
                "batch_size": self.batch_spin.value(),
                "freeze_backbone_epochs": min(self.freeze_spin.value(), epochs),
                "augment": self.augment_box.config(),
                "balance": self.balance_combo.currentData(),
            },
            "mode": self.mode_combo.currentData(),
            "arch": None if resume else self.model_box.volume_arch(),
            "slices": self.model_box.slices_spin.value(),
            "kfold": {"auto": "auto", "holdout": None, "kfold": 5}[split],
            "provenance": provenance,
        }

    # -- dialogs ---------------------------------------------------------
    def _browse_parent(self) -> None:
        path = ask_open_path(self, self.parent_edit.text())
        if path:
            self.parent_edit.setText(path)

    def _browse_out(self) -> None:
        path = ask_save_path(self, self.out_edit.text())
        if path:
            self.out_edit.setText(path)
            self._out_confirmed = path  # the dialog asked before replacing

    def _save_best_dialog(self) -> None:
        path = ask_save_path(self, self.out_edit.text())
        if path:
            try:
                self.save_best(path, overwrite=True)  # confirmed in the dialog
            except (OSError, ValueError) as exc:
                self._error(f"Not saved: {exc}")

    def _may_replace(self, out: str) -> bool:
        """Whether the user agreed to replace ``out`` (in the save dialog, or
        ``set_output(..., overwrite=True)``)."""
        return bool(out) and getattr(self, "_out_confirmed", None) == out

    def _check_out(self, out: str) -> None:
        """Refuse, before training, a checkpoint that would replace files
        the user did not agree to replace (ValueError naming the file)."""
        from napari_medcnn._atomic import OverwriteError, check_overwrite

        try:
            check_overwrite(checkpoint_paths(out), overwrite=self._may_replace(out))
        except OverwriteError as exc:
            raise ValueError(
                f"{exc.path} already exists: choose another name, or pick it "
                "with the browse button and confirm replacing it."
            ) from None


def label_classes(labels: dict[str, Any]) -> list[str]:
    """Class of every labelled item in a sidecar dict."""
    out = [labels[k] for k in ("image_label", "volume_label") if labels.get(k)]
    for a, b, c in labels.get("slices") or []:
        out += [c] * (int(b) - int(a) + 1)
    return out


def same_checkpoint(a: str | Path, b: str | Path) -> bool:
    """Whether two user paths (weights, card or bare stem) name one checkpoint."""

    def stem(p: str | Path) -> Path:
        p = Path(p).expanduser()
        if p.suffix in (".safetensors", ".json", ".pt", ".pth"):
            p = p.with_suffix("")
        return p.resolve()

    return stem(a) == stem(b)
