"""What the Classify and Saliency panels share: a model and one job.

:class:`ModelPanelMixin` loads a checkpoint in a worker (the previous model
stays when that fails), keeps one worker at a time in a :class:`JobHandle`
(model load or the panel's own job), disables Run and the model buttons
while it runs, quits it on Cancel, shows ``errored`` as a notification and
keeps the status line and progress bar.  It also offers the image layers
as ticked channels.  The ``build_*`` functions create the child widgets
both panels lay out alike: the layer list with its channel order and the
model row, the run row with status, and the scroll area around it all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QButtonGroup,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from napari_medcnn.widgets._channels import ChannelList
from napari_medcnn.widgets._classify_jobs import (
    JobHandle,
    contains,
    default_model_file,
    load_model_job,
)
from napari_medcnn.widgets._jobs import WorkerPanel, build_progress_controls

MODEL_FILTER = "Model checkpoints (*.safetensors *.pt *.pth *.json)"


class ModelPanelMixin(WorkerPanel):
    """Model and job plumbing of a panel (mixed into a ``QWidget``).

    The panel calls :meth:`_init_panel` first, then builds the widgets of
    :func:`build_model_controls`, :func:`build_run_controls` and
    :func:`build_scope_buttons`, sets ``_view`` (a ``ResultView``: colours
    and the model / channel texts) and calls
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

    def _connect_model_controls(self) -> None:
        self.channels.channels_changed.connect(self._update_channel_label)
        self.up_button.clicked.connect(lambda: self.channels.move_current(-1))
        self.down_button.clicked.connect(lambda: self.channels.move_current(1))
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
            self._error(f"Default model not found: {target}")
            return False
        worker = thread_worker(load_model_job, start_thread=False, ignore_errors=True)(
            str(target)
        )
        worker.returned.connect(self._on_model_loaded)
        self._pending = {"kind": "load"}
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
        self.channel_label.setText(self._view.channel_text(names, card))

    def _show_model_text(self) -> None:
        text, tip = self._view.model_text(self._model)
        self.model_label.setText(text)
        self.model_label.setToolTip(tip)

    def _say(self, message: str, warn: bool = False) -> None:
        self.status.setText(message)
        self.status.setStyleSheet(f"color: {self._view.colors.marker};" if warn else "")

    def _error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self._say(message, warn=True)
        show_error(message)

    def _browse_model(self) -> None:
        path = ask_model_path(self, str(self._default_model().parent))
        if path:
            self.load_model(path)


def build_model_controls(w: QWidget) -> tuple[QGridLayout, QHBoxLayout]:
    """Create the layer list (``channels``, ``up_button``, ``down_button``,
    ``channel_label``) and the model row (``model_label``,
    ``default_button``, ``browse_button``) as attributes of ``w``.

    Returns:
        (layer grid, model row) to lay out.
    """
    w.channels = ChannelList()
    w.up_button, w.down_button = QPushButton("Up"), QPushButton("Down")
    w.channel_label = QLabel()
    w.channel_label.setWordWrap(True)
    w.model_label = QLabel("No model loaded.")
    w.model_label.setWordWrap(True)
    w.default_button = QPushButton("Default model")
    w.browse_button = QPushButton("Model file…")
    grid = QGridLayout()
    grid.addWidget(QLabel("<b>Image layers</b> (ticked, in channel order)"), 0, 0)
    grid.addWidget(w.channels, 1, 0, 2, 1)
    grid.addWidget(w.up_button, 1, 1)
    grid.addWidget(w.down_button, 2, 1)
    w.channels.setMaximumHeight(3 * w.fontMetrics().height() + 16)
    model_row = QHBoxLayout()
    model_row.addWidget(QLabel("<b>Model</b>"))
    model_row.addStretch(1)
    model_row.addWidget(w.default_button)
    model_row.addWidget(w.browse_button)
    return grid, model_row


def add_model_controls(layout: QVBoxLayout, w: QWidget, grid, model_row) -> None:
    """Lay out what :func:`build_model_controls` made, top to bottom."""
    layout.addLayout(grid)
    layout.addWidget(w.channel_label)
    layout.addLayout(model_row)
    layout.addWidget(w.model_label)


def build_run_controls(w: QWidget) -> QHBoxLayout:
    """Create ``run_button``, ``cancel_button``, ``progress`` and ``status``
    as attributes of ``w``; returns the run row (status goes below it)."""
    w.run_button = QPushButton("Run")
    build_progress_controls(w)
    run_row = QHBoxLayout()
    run_row.addWidget(w.run_button)
    run_row.addWidget(w.cancel_button)
    run_row.addWidget(w.progress, 1)
    return run_row


def scrolled_layout(w: QWidget) -> QVBoxLayout:
    """Put a vertical scroll area in ``w`` and return its content's layout.

    On a short screen the panel scrolls instead of making napari's window
    taller than the screen or squashing the plots.
    """
    inner = QWidget()
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidget(inner)
    outer = QVBoxLayout(w)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return QVBoxLayout(inner)


def build_scope_buttons(w: QWidget, scopes: dict[str, str]) -> QHBoxLayout:
    """Create ``scope_group`` and ``scope_buttons`` (key -> radio button,
    ``slice`` checked) on ``w`` from ``scopes`` (key -> text); returns
    a row of the buttons."""
    w.scope_group = QButtonGroup(w)
    w.scope_buttons = {k: QRadioButton(t) for k, t in scopes.items()}
    for i, button in enumerate(w.scope_buttons.values()):
        w.scope_group.addButton(button, i)
    w.scope_buttons["slice"].setChecked(True)
    scope_row = QHBoxLayout()
    for button in w.scope_buttons.values():
        scope_row.addWidget(button)
    scope_row.addStretch(1)
    return scope_row


def ask_model_path(parent: QWidget, start: str) -> str | None:
    """Ask for a checkpoint file; None when cancelled."""
    path, _ = QFileDialog.getOpenFileName(
        parent, "Model checkpoint", start, MODEL_FILTER
    )
    return path or None
