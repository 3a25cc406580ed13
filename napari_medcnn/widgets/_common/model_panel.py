"""What the Classify and Saliency panels share: a model and one job.

:class:`ModelPanelMixin` loads a checkpoint in a worker (the previous model
stays when that fails), keeps one worker at a time in a :class:`JobHandle`
(model load or the panel's own job), disables Run and the model buttons
while it runs, quits it on Cancel, shows ``errored`` as a notification and
keeps the status line and progress bar.  It also offers the image layers
as ticked channels, puts them in the card's channel order when their names
say so, and checks that they can share one grid (the notes under the layer
list say what was reordered or will be resampled).  Both panels lay out
the same child widgets, made by the classes here: :class:`ModelControls`
(the layer list with its channel order, and the model row) and
:class:`ScopeButtons`; the run row is a
:class:`~napari_medcnn.widgets._common.controls.RunControls`.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QButtonGroup,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from napari_medcnn.widgets._common.channels import (
    ChannelInputs,
    ChannelList,
    channel_inputs,
    order_for_card,
)
from napari_medcnn.widgets._common.jobs import (
    JobHandle,
    WorkerPanel,
    default_model_file,
    load_model_job,
)
from napari_medcnn.widgets._common.layers import contains

MODEL_FILTER = "Model checkpoints (*.safetensors *.pt *.pth *.json)"


class ModelControls(QWidget):
    """The image layers ticked as channels, in order, and the model row.

    Attributes:
        channels: the :class:`ChannelList`; ``up_button`` / ``down_button``
            move its selected layer.
        channel_label: the chosen channels and what the model expects.
        model_label: the loaded model.
        default_button, browse_button: load the default model, or a file.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.channels = ChannelList()
        self.up_button, self.down_button = QPushButton("Up"), QPushButton("Down")
        self.channel_label = QLabel()
        self.channel_label.setWordWrap(True)
        self.model_label = QLabel("No model loaded.")
        self.model_label.setWordWrap(True)
        self.default_button = QPushButton("Default model")
        self.browse_button = QPushButton("Model file…")

        grid = QGridLayout()
        grid.addWidget(QLabel("<b>Image layers</b> (ticked, in channel order)"), 0, 0)
        grid.addWidget(self.channels, 1, 0, 2, 1)
        grid.addWidget(self.up_button, 1, 1)
        grid.addWidget(self.down_button, 2, 1)
        self.channels.setMaximumHeight(3 * self.fontMetrics().height() + 16)
        model_row = QHBoxLayout()
        model_row.addWidget(QLabel("<b>Model</b>"))
        model_row.addStretch(1)
        model_row.addWidget(self.default_button)
        model_row.addWidget(self.browse_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(grid)
        layout.addWidget(self.channel_label)
        layout.addLayout(model_row)
        layout.addWidget(self.model_label)

        self.up_button.clicked.connect(lambda: self.channels.move_current(-1))
        self.down_button.clicked.connect(lambda: self.channels.move_current(1))


class ScopeButtons(QWidget):
    """A row of radio buttons, one per scope, ``slice`` checked.

    Args:
        scopes: scope key -> button text, in display order.
        title: a label before the buttons ("" for none).

    Attributes:
        group: the ``QButtonGroup`` (exclusive).
        buttons: scope key -> ``QRadioButton``.
    """

    def __init__(
        self, scopes: dict[str, str], title: str = "", parent: QWidget | None = None
    ):
        super().__init__(parent)
        self.group = QButtonGroup(self)
        self.buttons = {k: QRadioButton(t) for k, t in scopes.items()}
        for i, button in enumerate(self.buttons.values()):
            self.group.addButton(button, i)
        self.buttons["slice"].setChecked(True)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        if title:
            row.addWidget(QLabel(title))
        for button in self.buttons.values():
            row.addWidget(button)
        row.addStretch(1)


class ModelLoading:
    """Loading a checkpoint in a worker, for a panel with a ``JobHandle``
    (``_job``), ``_pending``, ``_start``, ``_error``, ``_say`` and an
    ``_on_model_loaded(loaded)`` slot; ``_pending["path"]`` is the path
    asked for (None: the default model) while the load runs.
    """

    def load_model(self, path: str | None = None) -> bool:
        """Load a checkpoint (None: the default model) in a worker.

        On failure the error is shown and the previous model stays.
        Returns False when busy or when the default model is missing.
        """
        from napari.qt.threading import thread_worker

        if self._job.worker is not None:
            return False
        target = Path(path) if path is not None else self._default_model()
        if path is None and not target.exists():
            self._error(f"Default model not found: {target.name}")
            return False
        worker = thread_worker(load_model_job, start_thread=False, ignore_errors=True)(
            str(target)
        )
        worker.returned.connect(self._on_model_loaded)
        self._pending = {"kind": "load", "path": path}
        self._start(worker, f"Loading model {target.name}…")
        return True

    def _default_model(self) -> Path:
        return default_model_file()

    def _load_first(self, model: str | None, missing: str) -> None:
        """Load ``model`` (None: the default one, if installed) at start."""
        if model is not None or self._default_model().exists():
            self.load_model(model)
        else:
            self._say(missing, warn=True)


class ModelPanelMixin(ModelLoading, WorkerPanel):
    """Model and job plumbing of a panel (mixed into a ``QWidget``).

    The panel calls :meth:`_init_panel` first, then makes its child widgets:
    a :class:`ModelControls`, a :class:`ScopeButtons` and a ``RunControls``,
    whose children it keeps as its own attributes (``channels``,
    ``up_button``, ``down_button``, ``channel_label``, ``model_label``,
    ``default_button``, ``browse_button``, ``scope_group``,
    ``scope_buttons``, ``run_button``, ``cancel_button``, ``progress``,
    ``status``), sets ``_colors`` (``PlotColors``) and calls
    :meth:`_connect_model_controls`.  It has ``run``, ``_update_buttons``,
    ``_on_layers_changed`` and ``_on_model_loaded``.
    """

    #: how the status line names a failed job (other than a model load)
    _job_failed = "Job failed"

    def _init_panel(self, viewer: Any) -> None:
        self._viewer = viewer
        self._job = JobHandle()
        self.destroyed.connect(self._job.quit)
        self._model: Any = None  # LoadedModel
        self._pending: dict[str, Any] = {}
        self._channel_notes: list[str] = []

    def _connect_model_controls(self) -> None:
        self.channels.channels_changed.connect(self._on_channels_changed)
        self.default_button.clicked.connect(lambda: self.load_model(None))
        self.browse_button.clicked.connect(self._browse_model)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)

    @property
    def worker(self):
        """The running worker (model load or the panel's job), or None."""
        return self._job.worker

    @property
    def model(self):
        """The loaded model (``LoadedModel``), or None."""
        return self._model

    @property
    def scope(self) -> str:
        """The checked scope: ``slice`` (the slice napari shows), ``slices``
        or ``volume`` (the keys of ``scope_buttons``)."""
        return next(k for k, b in self.scope_buttons.items() if b.isChecked())

    def set_scope(self, scope: str) -> None:
        """Choose the scope (a key of ``scope_buttons``)."""
        self.scope_buttons[scope].setChecked(True)

    def set_channels(self, layers: Sequence[Any]) -> None:
        """Use ``layers`` as the input, in this channel order."""
        self._on_layers_changed()
        self.channels.set_checked(list(layers))

    def selected_layers(self) -> list[Any]:
        """The ticked image layers, in channel order."""
        return self.channels.checked()

    # -- worker plumbing -------------------------------------------------
    def _on_errored(self, exc: Exception) -> None:
        if self._pending.get("kind") == "load":
            kept = "; the previous model stays" if self._model is not None else ""
            self._error(f"Model not loaded{kept}: {exc}")
        else:
            self._error(f"{self._job_failed}: {exc}")

    def _on_finished(self) -> None:
        self._pending = {}
        WorkerPanel._on_finished(self)

    # -- layers, texts and dialogs ----------------------------------------
    def _sync_channels(self, images: list[Any]) -> None:
        """Offer ``images``; with none ticked, tick the active (or last) one."""
        self.channels.sync(images)
        if not self.channels.checked() and images:
            active = self._viewer.layers.selection.active
            pick = active if contains(images, active) else images[-1]
            self.channels.set_checked([pick])
        self._update_channel_label()
        self._update_buttons()

    def _update_channel_label(self) -> None:
        names = [str(lay.name) for lay in self.selected_layers()]
        card = self._model.card if self._model is not None else None
        text = channel_text(names, card, self._colors.marker)
        for note in self._channel_notes:
            text += (
                f'<br><span style="color:{self._colors.marker}">'
                f"{html.escape(note, quote=False)}</span>"
            )
        self.channel_label.setText(text)

    def _on_channels_changed(self) -> None:
        self._channel_notes = []  # they were about the previous choice
        self._update_channel_label()

    # -- the ticked layers as channels -------------------------------------
    def _card_ordered_layers(self) -> list[Any]:
        """The ticked layers, in the card's channel order when their names
        say so unambiguously (the list is reordered to show it); the notes
        wait for :meth:`_channel_inputs`."""
        card = self._model.card if self._model is not None else None
        layers, notes = order_for_card(self.selected_layers(), card)
        if layers != self.selected_layers():
            self.channels.set_checked(layers)
        self._channel_notes = notes
        return layers

    def _channel_inputs(self, layers: Sequence[Any]) -> ChannelInputs:
        """Check that ``layers`` can share the first one's grid and plan the
        resampling (``ValueError`` when not); show the notes (reordering,
        name mismatches, resampling) under the layer list and as a napari
        warning."""
        notes = self._channel_notes
        inputs = channel_inputs(layers)
        self._channel_notes = notes + inputs.messages
        self._update_channel_label()
        if self._channel_notes:
            from napari.utils.notifications import show_warning

            show_warning("\n".join(self._channel_notes))
        return inputs

    def _show_model_text(self) -> None:
        text, tip = model_text(self._model)
        self.model_label.setText(text)
        self.model_label.setToolTip(tip)

    def _say(self, message: str, warn: bool = False) -> None:
        self.status.setText(message)
        self.status.setStyleSheet(f"color: {self._colors.marker};" if warn else "")

    def _error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self._say(message, warn=True)
        show_error(message)

    def _browse_model(self) -> None:
        path = ask_model_path(self, str(self._default_model().parent))
        if path:
            self.load_model(path)


def model_text(loaded: Any) -> tuple[str, str]:
    """(label text, tooltip) describing a ``LoadedModel`` (or None)."""
    if loaded is None:
        return "No model loaded.", ""
    card = loaded.card
    kind = {
        "slice": "2D slices",
        "volume": "3D volumes",
        "sequence": "slice series",
    }
    classes = ", ".join(card.classes)
    text = (
        f"<b>{html.escape(card.name or card.arch)}</b> ({html.escape(card.arch)}, "
        f"{kind.get(card.input_kind, card.input_kind)})<br>"
        f"classes: {html.escape(classes)}"
    )
    tip = f"{loaded.path}\nmodel id {card.model_id or 'n/a'}\ndevice {loaded.device}"
    return text, tip


def channel_text(names: Sequence[str], card: Any, warn_color: str) -> str:
    """Chosen channel layers in order, the model's expectation, mismatch
    (in ``warn_color``)."""
    esc = html.escape
    chosen = (
        "  ".join(f"{i + 1}. {esc(n)}" for i, n in enumerate(names))
        if names
        else "none"
    )
    text = f"Channels: {chosen}"
    if card is None:
        return text
    expected = ", ".join(card.channel_names) or "unnamed"
    text += f"<br>Model expects {card.in_channels}: {esc(expected)}"
    if names and len(names) != card.in_channels:
        text += (
            f'<br><span style="color:{warn_color}">'
            f"tick {card.in_channels} layer(s): {len(names)} ticked</span>"
        )
    return text


def ask_model_path(parent: QWidget, start: str) -> str | None:
    """Ask for a checkpoint file; None when cancelled."""
    path, _ = QFileDialog.getOpenFileName(
        parent, "Model checkpoint", start, MODEL_FILTER
    )
    return path or None
