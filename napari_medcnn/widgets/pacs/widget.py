"""PACS dock widget: pick or define a server, test it, search, retrieve
series with progress and Cancel, and send the results of a layer.

A stateful panel (a small ``QWidget``).  Every network call runs in a napari
``thread_worker`` (:mod:`.jobs`), one at a time; Cancel stops a retrieve at
the next instance (the series in progress leaves nothing in the cache and
nothing is loaded) and any other job at its next step.

Retrieved series go to the session cache
(:func:`napari_medcnn.pacs.session_cache`, mode 0700) unless a
``cache_dir`` is given: a cancel or an error deletes what the retrieve
wrote, closing the panel deletes the session cache, and the process
deletes it at exit.  With "Keep retrieved series encrypted at rest"
(:mod:`.encrypted`) each retrieved series is also sealed into an encrypted
cache folder (:mod:`napari_medcnn.pacs.vault`); "Open encrypted…" decrypts
one into the session cache again.

Privacy: patient names are masked in the table (``patient <key>``) unless
"Show names" is ticked; status lines, notifications and logs carry no
patient data; the password field is masked, the password lives in the
profile only when "Remember password" is ticked (the profiles file is mode
0600) and is never shown or logged.  "Send results" of a de-identified scan
asks first (:func:`.dialogs.ask_confirm_deidentified`), and the core
refuses such objects without that confirmation
(:func:`napari_medcnn.pacs.send`).
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from napari_medcnn.widgets._common.controls import (
    RunControls,
    scrolled_layout,
    select_table_rows,
    selected_table_rows,
)
from napari_medcnn.widgets._common.jobs import JobHandle, WorkerPanel
from napari_medcnn.widgets.pacs import dialogs, encrypted
from napari_medcnn.widgets.pacs.jobs import (
    echo_job,
    iter_open_vault_job,
    iter_retrieve_job,
    iter_search_job,
    send_job,
)

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

NEW_PROFILE = "(new server)"
KINDS = {"DICOMweb": "dicomweb", "DIMSE": "dimse"}
#: (header, key of the study / series display rows)
COLUMNS = (
    ("Patient", "patient"),
    ("Date", "date"),
    ("Study", "study_description"),
    ("#", "number"),
    ("Modality", "modality"),
    ("Series", "description"),
    ("Images", "images"),
)
_STUDY_KEYS = ("patient", "date", "study_description")
_ROW_ROLE = Qt.ItemDataRole.UserRole + 1
#: the filters of the search form: key -> (label, placeholder)
FILTERS = {
    "patient_id": ("Patient ID", "e.g. PID123 (* wildcards)"),
    "patient_name": ("Patient name", "e.g. DOE^* (* wildcards)"),
    "date_from": ("Date from", "YYYYMMDD"),
    "date_to": ("Date to", "YYYYMMDD"),
    "modality": ("Modality", "e.g. MR"),
    "accession": ("Accession", ""),
    "description": ("Description", "study description (* wildcards)"),
}


class PacsWidget(WorkerPanel, QWidget):
    """Dock widget for one PACS: test, search, retrieve, send results.

    Args:
        viewer: the napari viewer retrieved series are added to, and whose
            current layer "Send results" sends.
        cache_dir: where retrieved series go (``<study>/<series>/``);
            None: the session cache (:func:`napari_medcnn.pacs.session_cache`,
            a temporary folder, mode 0700), which the panel deletes when it
            closes (and the process at exit).  The files of a loaded series
            stay there while the panel is open: "Send results" builds its
            objects against them.
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        cache_dir: str | Path | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setObjectName("napari_medcnn_pacs")
        self._viewer = viewer
        self.cache_dir = cache_dir
        self._hits: list[Any] = []
        self._rows: list[tuple[Any, Any]] = []  # (StudyResult, SeriesResult)
        self._cancel: threading.Event | None = None
        self._kind = ""
        self.last_sent: Any = None  # the StoreResult of the last send
        self.last_retrieved: Any = None  # the Retrieved of the last retrieve
        # a closed panel stops its job; the slot must not hold `self`
        self._job = JobHandle()
        self.destroyed.connect(self._job.quit)
        if cache_dir is None:  # nothing retrieved outlives the panel
            self.destroyed.connect(_clear_session_cache)

        # -- server -----------------------------------------------------------
        self.profile_combo = QComboBox()
        self.kind_combo = QComboBox()
        self.kind_combo.addItems(list(KINDS))
        self.address_edit = QLineEdit()
        self.calling_aet_edit = QLineEdit("NAPARI_MEDCNN")
        self.user_edit = QLineEdit()
        self.password_edit = QLineEdit()
        self.password_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.password_edit.setPlaceholderText("not stored unless remembered")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("profile name")
        self.remember_box = QCheckBox("Remember password")
        self.remember_box.setToolTip(
            "Store the password in the profiles file (mode 0600 in your config "
            "folder); otherwise it is kept only while napari runs"
        )
        self.save_button = QPushButton("Save profile")
        self.test_button = QPushButton("Test")
        self.test_status = QLabel("Not tested.")
        self.test_status.setWordWrap(True)
        self.tls_button = QPushButton("TLS…")  # dialogs.ask_tls_settings
        self.tls_button.setToolTip("CA bundle, client certificate, DIMSE over TLS")
        self._tls: dict[str, Any] = {}
        server_box = QGroupBox("Server")
        form = QFormLayout(server_box)
        form.addRow("Profile", self.profile_combo)
        form.addRow("Protocol", self.kind_combo)
        form.addRow("Address", self.address_edit)
        form.addRow("Calling AET", self.calling_aet_edit)
        form.addRow("User", self.user_edit)
        form.addRow("Password", self.password_edit)
        save_row = QHBoxLayout()
        save_row.addWidget(self.name_edit, 1)
        save_row.addWidget(self.remember_box)
        save_row.addWidget(self.save_button)
        form.addRow(save_row)
        test_row = QHBoxLayout()
        test_row.addWidget(self.test_button)
        test_row.addWidget(self.tls_button)
        test_row.addWidget(self.test_status, 1)
        form.addRow(test_row)

        # -- search -------------------------------------------------------------
        self.filter_edits = {}
        search_box = QGroupBox("Search")
        sform = QFormLayout(search_box)
        for key, (_label, hint) in FILTERS.items():
            edit = QLineEdit()
            edit.setPlaceholderText(hint)
            edit.returnPressed.connect(self.search)
            self.filter_edits[key] = edit
        for a, b in (("patient_id", "patient_name"), ("date_from", "date_to"),
                     ("modality", "accession")):  # fmt: skip
            row = QHBoxLayout()
            row.addWidget(self.filter_edits[a])
            row.addWidget(QLabel(FILTERS[b][0]))
            row.addWidget(self.filter_edits[b])
            sform.addRow(FILTERS[a][0], row)
        sform.addRow("Description", self.filter_edits["description"])
        self.show_names = QCheckBox("Show names")
        self.show_names.setToolTip("Patient names are masked unless ticked")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([h for h, _k in COLUMNS])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(
            QHeaderView.ResizeMode.Interactive
        )
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMinimumHeight(140)

        # -- run: search, retrieve, send -----------------------------------------
        self.run_controls = rc = RunControls(
            ("Search", "Retrieve", "Send results"),
            "Define or pick a server, then Search.",
            progress_below=True,
        )
        self.search_button, self.retrieve_button, self.send_button = rc.buttons
        self.cancel_button, self.progress, self.status = (
            rc.cancel_button, rc.progress, rc.status,
        )  # fmt: skip
        self.send_button.setToolTip(
            "Send the current layer's result: the SR of its classification, "
            "the Parametric Map of a saliency overlay, or the SEG of a Labels "
            "layer, built against its DICOM source series"
        )
        self.send_target = QLabel("")
        self.send_target.setWordWrap(True)
        # -- the encrypted cache (encrypted.py) ---------------------------------
        self.encrypted_box = encrypted.EncryptedCacheBox()

        layout = scrolled_layout(self)
        layout.addWidget(server_box)
        layout.addWidget(search_box)
        names_row = QHBoxLayout()
        names_row.addStretch(1)
        names_row.addWidget(self.show_names)
        layout.addLayout(names_row)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.run_controls)
        layout.addWidget(self.send_target)
        layout.addWidget(self.encrypted_box)

        # -- signals ------------------------------------------------------------
        self.profile_combo.currentTextChanged.connect(self._on_profile_picked)
        self.kind_combo.currentTextChanged.connect(self._on_kind_changed)
        self.save_button.clicked.connect(self._save_clicked)
        self.test_button.clicked.connect(self.test)
        self.tls_button.clicked.connect(self._tls_clicked)
        self.search_button.clicked.connect(self.search)
        self.retrieve_button.clicked.connect(self.retrieve)
        self.send_button.clicked.connect(self.send_results)
        self.encrypted_box.open_button.clicked.connect(self.open_encrypted)
        self.cancel_button.clicked.connect(self.cancel)
        self.show_names.toggled.connect(self._fill_table)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        listening = (
            (viewer.layers.selection.events.active, self._on_active_changed),
            (viewer.layers.events.removed, self._on_active_changed),
        )
        for emitter, callback in listening:
            emitter.connect(callback)
        self.destroyed.connect(partial(_disconnect, listening))
        self.reload_profiles()
        self._on_kind_changed(self.kind_combo.currentText())
        self._on_active_changed()
        self._update_buttons()

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        """Room for the table when first docked."""
        return QSize(480, 760)

    # -- public API ---------------------------------------------------------
    @property
    def worker(self) -> Any:
        """The running worker, or None."""
        return self._job.worker

    @property
    def hits(self) -> list[Any]:
        """The last search: :class:`~.jobs.SearchHit` per study."""
        return list(self._hits)

    @property
    def rows(self) -> list[tuple[Any, Any]]:
        """The table's rows: ``(StudyResult, SeriesResult)``."""
        return list(self._rows)

    def reload_profiles(self) -> None:
        """Fill the profile list from the saved profiles (a broken profiles
        file is reported, never fatal)."""
        from napari_medcnn.pacs import load_profiles

        try:
            names = sorted(load_profiles())
        except ValueError as exc:
            names = []
            self._say(f"Profiles not read: {exc}")
        current = self.profile_combo.currentText()
        self.profile_combo.blockSignals(True)
        self.profile_combo.clear()
        self.profile_combo.addItems([NEW_PROFILE, *names])
        if current in names:
            self.profile_combo.setCurrentText(current)
        self.profile_combo.blockSignals(False)

    def set_server(self, server: Any) -> None:
        """Show ``server`` (a :class:`~napari_medcnn.pacs.Server`) in the
        fields, its password (if it holds one) in the masked field."""
        kind = "DICOMweb" if server.kind == "dicomweb" else "DIMSE"
        self.kind_combo.setCurrentText(kind)
        if server.kind == "dicomweb":
            self.address_edit.setText(server.url or "")
        else:
            self.address_edit.setText(
                f"{server.called_aet}@{server.host}:{server.port}"
            )
        self.calling_aet_edit.setText(server.calling_aet or "")
        self.user_edit.setText(server.user or "")
        secret = server.password
        self.password_edit.setText(secret.reveal() if secret else "")
        self.name_edit.setText(server.name)
        self._profile = server
        self._tls = {k: getattr(server, k) for k in dialogs.TLS_FIELDS}
        self._show_tls()
        self.test_status.setText("Not tested.")

    def server(self) -> Any:
        """The :class:`~napari_medcnn.pacs.Server` the fields define
        (settings of the picked profile, such as timeout or CA bundle,
        kept).

        Raises:
            ValueError: no address, or a malformed one.
        """
        from napari_medcnn.pacs import Server

        kind = KINDS[self.kind_combo.currentText()]
        address = self.address_edit.text().strip()
        if not address:
            raise ValueError(
                "Give the server's address: a DICOMweb URL or AET@HOST:PORT."
            )
        base = getattr(self, "_profile", None)
        keep = {}
        if base is not None and base.kind == kind:
            keep = {k: v for k, v in base.to_dict().items()
                    if k in ("qido_prefix", "wado_prefix", "stow_prefix",
                             "storage_port", "retrieve", "password_env",
                             "token_env", "timeout")}  # fmt: skip
            if base.token is not None:
                keep["token"] = base.token
        opts: dict[str, Any] = {
            **keep,
            "calling_aet": self.calling_aet_edit.text().strip() or "NAPARI_MEDCNN",
            "user": self.user_edit.text().strip() or None,
            "password": self.password_edit.text() or None,
            **{k: v for k, v in self._tls.items() if k != "tls"},
            "tls": bool(self._tls.get("tls")) and kind == "dimse",
        }
        name = self.name_edit.text().strip() or address
        if kind == "dicomweb":
            return Server(name, "dicomweb", url=address, **opts)
        return Server.dimse(address, name=name, **opts)

    def save_profile(self, remember_password: bool | None = None) -> Path | None:
        """Save the fields as a profile (named by the name field); the
        password only with ``remember_password`` (default: the check box).
        Returns the profiles file, or None when refused (message shown)."""
        from napari_medcnn.pacs import save_profile

        if remember_password is None:
            remember_password = self.remember_box.isChecked()
        try:
            server = self.server()
        except ValueError as exc:
            self._say(str(exc))
            return None
        if not remember_password:
            server = server.with_(password=None)
        path = save_profile(server)
        self.reload_profiles()
        self.profile_combo.blockSignals(True)
        self.profile_combo.setCurrentText(server.name)
        self.profile_combo.blockSignals(False)
        self._say(f"Saved profile {server.name!r}.")
        return path

    def filters(self) -> dict[str, str]:
        """The search filters (``patient_id``, ``patient_name``, ``date`` as
        a ``FROM-TO`` range, ``modality``, ``accession``, ``description``)."""
        text = {k: e.text().strip() for k, e in self.filter_edits.items()}
        lo, hi = text.pop("date_from"), text.pop("date_to")
        out = {k: v for k, v in text.items() if v}
        if lo or hi:
            out["date"] = (lo or None, hi or None)
        return out

    def set_filters(self, **filters: str) -> None:
        """Fill the search form (keys of :data:`FILTERS`)."""
        for key, value in filters.items():
            self.filter_edits[key].setText(str(value))

    def test(self) -> bool:
        """C-ECHO (DIMSE) or a QIDO-RS ping (DICOMweb), in a worker; the
        result goes to the line next to Test.  Returns whether it started."""
        server = self._server_or_say()
        if server is None:
            self.test_status.setText(self.status.text())
            return False
        from napari.qt.threading import thread_worker

        worker = thread_worker(echo_job, start_thread=False, ignore_errors=True)(server)
        worker.returned.connect(partial(self._on_echo, server.label))
        self.test_status.setText("Testing…")
        return self._begin(worker, "test", f"Testing {server.label}…")

    def search(self) -> bool:
        """Search studies and their series with the filters, in a worker.
        Returns whether it started."""
        server = self._server_or_say()
        if server is None:
            return False
        from napari.qt.threading import thread_worker

        worker = thread_worker(iter_search_job, start_thread=False, ignore_errors=True)(
            server, self.filters()
        )
        worker.yielded.connect(self._on_step)
        worker.returned.connect(self._on_searched)
        return self._begin(worker, "search", "Searching…")

    def select_rows(self, rows: list[int]) -> None:
        """Select table rows (series) by index."""
        select_table_rows(self.table, rows)

    def selected_rows(self) -> list[int]:
        """Indices of the selected table rows."""
        return selected_table_rows(self.table)

    def retrieve(self) -> bool:
        """Retrieve the selected series in a worker, with progress; each
        opens as image layers read like a disk load.  Cancel stops at the
        next instance and loads nothing.  Returns whether it started."""
        rows = self.selected_rows()
        if not rows:
            self._say("Select the series to retrieve.")
            return False
        server = self._server_or_say()
        if server is None:
            return False
        from napari.qt.threading import thread_worker

        items = [(self._rows[r][1].study_uid, self._rows[r][1].series_uid)
                 for r in rows]  # fmt: skip
        vault = None
        if self.encrypted_box.keep_encrypted:
            vault, why = self.encrypted_box.unlock()
            if vault is None:
                self._say(f"Not retrieved: {why}")
                return False
        self._cancel = threading.Event()
        worker = thread_worker(
            iter_retrieve_job, start_thread=False, ignore_errors=True
        )(server, items, self.cache_dir, self._cancel, vault)
        worker.yielded.connect(self._on_step)
        worker.returned.connect(self._on_retrieved)
        return self._begin(worker, "retrieve", f"Retrieving {len(items)} series…")

    def open_encrypted(self, index: int | None = None) -> bool:
        """Decrypt a series of the encrypted cache into the session cache
        (removed when the panel closes) and open it, in a worker; asks for
        the folder, the passphrase and the series (``index`` into
        :meth:`~napari_medcnn.pacs.vault.Vault.series` skips that
        question).  Returns whether it started."""
        if self._job.worker is not None:
            return False
        from napari_medcnn.pacs.vault import VaultError

        vault, why = self.encrypted_box.unlock()
        if vault is None:
            self._say(why)
            return False
        try:
            entries = vault.series()
        except VaultError as exc:
            self._say(f"Encrypted cache: {exc}")
            return False
        if not entries:
            self._say("The encrypted cache holds no series.")
            return False
        if index is None:
            labels = [" ".join(v for v in e.display_row().values() if v)
                      for e in entries]  # fmt: skip
            index = encrypted.ask_vault_series(self, labels)
            if index is None:
                return False
        from napari.qt.threading import thread_worker

        self._cancel = threading.Event()
        worker = thread_worker(
            iter_open_vault_job, start_thread=False, ignore_errors=True
        )(vault, [entries[index]], self._cancel)
        worker.yielded.connect(self._on_step)
        worker.returned.connect(self._on_retrieved)
        return self._begin(worker, "retrieve", "Decrypting 1 series…")

    def send_results(self, layer: Any = None) -> bool:
        """Send the result of ``layer`` (default: the current layer): the SR
        of its classification, the Parametric Map of a saliency overlay or
        the SEG of a Labels layer, built against its DICOM source, with
        STOW-RS or C-STORE, in a worker.  Results of a de-identified scan
        are sent only after the user confirms.  Returns whether it
        started."""
        from napari_medcnn.widgets.pacs.results import plan_results

        layer = layer if layer is not None else self._viewer.layers.selection.active
        if layer is None:
            self._say("Select the layer whose result to send.")
            return False
        server = self._server_or_say()
        if server is None:
            return False
        try:
            plan = plan_results(layer, list(self._viewer.layers))
        except ValueError as exc:
            self._say(str(exc))
            return False
        confirm = False
        if plan.source_deidentified():
            if not dialogs.ask_confirm_deidentified(
                self, len(plan.kinds), server.label
            ):
                self._say("Not sent: the results are de-identified.")
                return False
            confirm = True
        from napari.qt.threading import thread_worker

        worker = thread_worker(send_job, start_thread=False, ignore_errors=True)(
            server, plan.build, confirm_deidentified=confirm
        )
        worker.returned.connect(self._on_sent)
        what = " + ".join(plan.kinds)
        return self._begin(worker, "send", f"Sending {what} of '{layer.name}'…")

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        """Closing the panel stops its job and deletes the session cache."""
        if self._job.worker is not None:
            self._job.quit()
        if self.cache_dir is None:
            _clear_session_cache()
        self.encrypted_box.lock()
        super().closeEvent(event)

    def cancel(self) -> None:
        """Stop the running job: a retrieve at its next instance (nothing
        kept, nothing loaded), any other job after its current step."""
        if self._job.worker is None:
            return
        self._say("Cancelling…")
        if self._kind == "retrieve" and self._cancel is not None:
            self._cancel.set()  # the job cleans up and returns "cancelled"
        else:
            self._job.worker.quit()

    # -- worker plumbing (the rest in _common.jobs.WorkerPanel) -------------
    def _server_or_say(self) -> Any:
        if self._job.worker is not None:
            return None
        try:
            return self.server()
        except ValueError as exc:
            self._say(str(exc))
            return None

    def _begin(self, worker: Any, kind: str, message: str) -> bool:
        self._kind = kind
        self._start(worker, message)
        return True

    def _on_step(self, event: Any) -> None:
        step = self._show_step(event)
        if step is None:
            return
        what = {"search": "studies", "retrieve": "instances", "series": "series",
                "seal": "sealed", "decrypt": "decrypted"}  # fmt: skip
        self._say(f"{self._kind.capitalize()}… {step[0]} / {step[1]} "
                  f"{what.get(event[0], '')}".rstrip())  # fmt: skip

    def _done(self) -> None:
        """Show the bar full: the job finished."""
        self.progress.setRange(0, 1)
        self.progress.setValue(1)

    def _on_echo(self, label: str, seconds: float) -> None:
        self._done()
        self.test_status.setText(f"OK: {label} answered in {seconds * 1000:.0f} ms.")
        self._say("Connection OK.")

    def _on_searched(self, hits: list[Any]) -> None:
        self._done()
        self._hits = list(hits or [])
        self._rows = [(h.study, s) for h in self._hits for s in h.series]
        self._fill_table()
        n_series = len(self._rows)
        n_studies = len(self._hits)
        studies = "study" if n_studies == 1 else "studies"
        self._say(f"Found {n_studies} {studies}, {n_series} series.")
        log.info("pacs search: %d studies, %d series", len(self._hits), n_series)

    def _on_retrieved(self, out: Any) -> None:
        self.last_retrieved = out
        if out is None or out.cancelled:
            self._say("Retrieve cancelled: nothing loaded, no partial series kept.")
            return
        self._done()
        added = []
        for data, kwargs, _kind in out.layers:
            added.append(self._viewer.add_image(data, **kwargs))
        text = f"Retrieved {len(out.folders)} series: {len(added)} layer(s) added."
        if out.not_images:
            text += f" {len(out.not_images)} series hold no image (not loaded)."
        if out.sealed:
            text += f" {out.sealed} sealed into the encrypted cache."
        self._say(text)
        log.info("pacs retrieve: %d series, %d layers", len(out.folders), len(added))

    def _on_sent(self, value: Any) -> None:
        result, kinds = value
        self.last_sent = result
        self._done()
        n_ok, n_bad = len(result.stored), len(result.failed)
        what = " + ".join(kinds)
        text = f"Sent {what}: {n_ok} object(s) stored"
        text += f", {n_bad} failed." if n_bad else "."
        if n_bad:
            reasons = "; ".join(sorted({r for _p, r in result.failed}))
            text += f" ({reasons})"
        self._say(text)
        log.info("pacs send: %d stored, %d failed", n_ok, n_bad)

    def _on_errored(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        # PacsError messages name the server (never a secret) and the reason
        message = str(exc) or type(exc).__name__
        if self._kind == "test":
            self.test_status.setText(f"Failed: {message}")
        self._say(f"{self._kind.capitalize() or 'Job'} failed: {message}")
        show_error(f"PACS: {message}")
        log.warning("pacs %s failed (%s)", self._kind, type(exc).__name__)

    def _on_aborted(self) -> None:
        if self._kind == "test":
            self.test_status.setText("Not tested (cancelled).")
        self._say("Cancelled.")

    def _on_finished(self) -> None:
        super()._on_finished()
        self._cancel = None

    # -- display --------------------------------------------------------------
    def _fill_table(self, *_args) -> None:
        """(Re)write the table: one row per series, the study's cells once
        per study; names masked unless "Show names"."""
        mask = not self.show_names.isChecked()
        self.table.clearContents()
        self.table.setRowCount(len(self._rows))
        prev = None
        for r, (study, series) in enumerate(self._rows):
            srow = study.display_row(mask_names=mask)
            row = {
                "patient": srow["patient"],
                "date": srow["date"],
                "study_description": srow["description"],
                **series.display_row(mask, study.tokens),
            }
            same_study = prev is not None and prev.study_uid == study.study_uid
            for c, (_header, key) in enumerate(COLUMNS):
                text = str(row.get(key, "") or "")
                item = QTableWidgetItem("" if same_study and key in _STUDY_KEYS
                                        else text)  # fmt: skip
                item.setToolTip(text)
                item.setData(_ROW_ROLE, r)
                self.table.setItem(r, c, item)
            prev = study
        self.table.resizeColumnsToContents()
        self._update_buttons()

    def _on_profile_picked(self, name: str) -> None:
        from napari_medcnn.pacs import load_profiles

        if not name or name == NEW_PROFILE:
            self._profile = None
            return
        try:
            server = load_profiles().get(name)
        except ValueError as exc:
            self._say(f"Profile not read: {exc}")
            return
        if server is not None:
            self.set_server(server)

    def _on_kind_changed(self, text: str) -> None:
        web = KINDS.get(text) == "dicomweb"
        self.address_edit.setPlaceholderText(
            "https://pacs.example.org/dicom-web" if web else "AET@HOST:PORT"
        )
        self.user_edit.setEnabled(web)
        self.password_edit.setEnabled(web)
        self.remember_box.setEnabled(web)

    def _tls_clicked(self) -> None:
        settings = dialogs.ask_tls_settings(self, dict(self._tls))
        if settings is not None:
            self._tls = settings
            self._show_tls()
            self.test_status.setText("Not tested.")

    def _show_tls(self) -> None:
        """The TLS button says what is set: "TLS: on" (DIMSE over TLS),
        "TLS: CA" (a CA bundle or client certificate for HTTPS) or "TLS…";
        its tooltip names the files (paths, never their contents)."""
        tls = self._tls
        if tls.get("tls"):
            label = "TLS: on"
        elif tls.get("ca_bundle") or tls.get("client_cert"):
            label = "TLS: CA"
        else:
            label = "TLS…"
        self.tls_button.setText(label)
        keys = ("ca_bundle", "client_cert", "client_key")
        files = [f"{k.replace('_', ' ')}: {tls[k]}" for k in keys if tls.get(k)]
        tip = "CA bundle, client certificate, DIMSE over TLS"
        self.tls_button.setToolTip("\n".join([tip, *files]))

    def _save_clicked(self) -> None:
        self.save_profile()

    def _on_active_changed(self, _event=None) -> None:
        # follow the current layer's metadata: a classification stored in
        # it (by the Classify widget) makes its SR sendable
        layer = self._viewer.layers.selection.active
        watched = getattr(self, "_watched", None)
        if watched is not layer:
            if watched is not None:
                watched.events.metadata.disconnect(self._show_send_target)
            if layer is not None:
                layer.events.metadata.connect(self._show_send_target)
            self._watched = layer
        self._show_send_target()

    def _show_send_target(self, _event=None) -> None:
        from napari_medcnn.widgets.pacs.results import plan_results

        layer = self._viewer.layers.selection.active
        if layer is None:
            self.send_target.setText("Send results: select a layer.")
        else:
            try:
                plan = plan_results(layer, list(self._viewer.layers))
            except ValueError as exc:
                self.send_target.setText(f"Send results: {exc}")
            else:
                what = " + ".join(plan.kinds)
                self.send_target.setText(f"Send results: the {what} of '{layer.name}'.")
        self._update_buttons()

    def _update_buttons(self) -> None:
        busy = self._job.worker is not None
        for w in (self.test_button, self.search_button, self.save_button,
                  self.profile_combo):  # fmt: skip
            w.setEnabled(not busy)
        self.retrieve_button.setEnabled(not busy and bool(self.selected_rows()))
        self.send_button.setEnabled(
            not busy and self._viewer.layers.selection.active is not None
        )
        self.cancel_button.setEnabled(busy)


def _clear_session_cache(*_args: Any) -> None:
    """Delete the session cache (a closed panel; must not hold the panel)."""
    from napari_medcnn.pacs import clear_session_cache

    clear_session_cache()


def _disconnect(connections: Any, *_args: Any) -> None:
    """Disconnect ``(napari emitter, callback)`` pairs (a closed panel)."""
    for emitter, callback in connections:
        emitter.disconnect(callback)
