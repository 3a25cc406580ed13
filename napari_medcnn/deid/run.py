"""De-identify DICOM files: PS3.15 Annex E Basic Application Level
Confidentiality Profile, with its options, into a new folder.

The one entry point is :func:`iter_deidentify`, a generator (drain it, or
run it in a napari ``thread_worker``): it yields ``(stage, i, n)`` progress
and returns a :class:`DeidResult`.  :func:`deidentify` drains it.

What it guarantees:

* Inputs are only read, never written (tested by file hashes).
* Files that are not DICOM (and DICOMDIRs) are skipped and reported.
* Before the first file is written, the output folder is checked: it must
  be new or empty, must not overlap an input folder, must be writable, and
  must have room for the export; an existing manifest is refused unless
  ``overwrite``.  A failure (or inputs without any DICOM file) raises
  :class:`DeidError` with a clear message, and nothing is written: not even
  the output folder, which is made with the first file.
* Every output file is written to a temporary name, flushed to disk and
  renamed: an export stopped by a full disk, an error or Cancel leaves only
  complete files.
* Output paths are built from de-identified values only:
  ``<pseudonym>/<study>/<modality>_S<series number>_<series>/<instance>.dcm``
  (hex digests of the new UIDs), so no folder name carries PHI.
* The mapping manifest (original -> new identifiers) is written only when a
  path is given, never inside the export folder, mode 0600, and sealed
  (encrypted and authenticated, :mod:`.sealed`) when a passphrase is given;
  the key file too.

The profile itself (Table E.1-1, actions, options, UID remapping, date
shift, private attributes, identity flags) lives in :mod:`.deid_dataset`,
:mod:`.deid_table`, :mod:`.deid_options` and :mod:`.deid_keys`; pixels in
:mod:`.deid_pixels`; the report and manifest in :mod:`.deid_report`; the
preflight, names and atomic writes in :mod:`.deid_write`.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from napari_medcnn.deid.dataset import deidentify_dataset
from napari_medcnn.deid.keys import KeyFileError, ProjectKey
from napari_medcnn.deid.options import DeidOptions
from napari_medcnn.deid.report import DeidReport, Manifest
from napari_medcnn.deid.write import (
    AtomicWriter,
    DeidError,
    encode,
    ensure_file_meta,
    output_name,
    preflight,
    quiet_pydicom,
)

__all__ = [
    "DeidError",
    "DeidOptions",
    "DeidReport",
    "DeidResult",
    "KeyFileError",
    "ProjectKey",
    "collect_inputs",
    "deidentify",
    "iter_deidentify",
    "preflight",
]

_DICOMDIR_SOP = "1.2.840.10008.1.3.10"


@dataclass
class DeidResult:
    """What an export (or a dry run) did.

    Attributes:
        out_dir: the export folder (None for a dry run without one).
        outputs: written files, in input order (empty for a dry run).
        sources: the input file of each output (same order; PHI-bearing
            paths: for the caller, never for a report).
        report: counts by attribute and action, burned-in flags (no PHI).
        skipped: ``(input path, reason)`` for files that are not DICOM.
        failed: ``(input path, reason)`` for DICOM files that could not be
            de-identified (nothing written for them).
        flagged_inputs: output name (a key of ``report.flagged``) -> the
            input file whose pixels may carry burned-in text (a PHI-bearing
            path, for the caller; the report itself names outputs only).
        key_fingerprint: names the project key used.
        manifest: where the manifest was written, if anywhere.
        dry_run: nothing was written.
    """

    out_dir: Path | None
    outputs: list[Path] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)
    report: DeidReport = field(default_factory=DeidReport)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    flagged_inputs: dict[str, str] = field(default_factory=dict)
    key_fingerprint: str = ""
    manifest: Path | None = None
    dry_run: bool = False

    @property
    def series_dirs(self) -> list[Path]:
        """The folders written, one per series, in first-written order."""
        return list(dict.fromkeys(p.parent for p in self.outputs))


def _walk(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(
            Path(dirpath, f) for f in sorted(filenames) if not f.startswith(".")
        )
    return files


def collect_inputs(
    paths: Iterable[str | os.PathLike],
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files and folders (recursively) into DICOM files.

    Returns:
        ``(dicom_files, skipped)``: files in a stable order without
        duplicates, and ``(path, reason)`` for every file that is not DICOM
        or does not exist.
    """
    from napari_medcnn.io import detect_format

    files: dict[Path, None] = {}
    skipped: list[tuple[str, str]] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            candidates = _walk(p)
        elif p.exists():
            candidates = [p]
        else:
            skipped.append((str(p), "no such file or folder"))
            continue
        for f in candidates:
            if detect_format(f) == "dicom":
                files.setdefault(f.resolve(), None)
            else:
                skipped.append((str(f), "not a DICOM file"))
    return list(files), skipped


def iter_deidentify(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike | None,
    *,
    options: DeidOptions | None = None,
    key: ProjectKey | None = None,
    key_file: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    passphrase: str | bytes | None = None,
    plaintext_manifest: bool = False,
    dry_run: bool = False,
    overwrite: bool = False,
) -> Generator[tuple[str, int, int], None, DeidResult]:
    """De-identify every DICOM file under ``inputs`` into ``out_dir``.

    Args:
        inputs: files and folders (searched recursively).
        out_dir: the export folder; may be None for a dry run.
        options: profile options (default: Basic Profile, safe private kept).
        key: the project key; default: read ``key_file`` (created if
            missing, except in a dry run), else a one-off random key.
        key_file: where the key lives (checked to be outside ``out_dir``).
        manifest: where to write the original -> new mapping (JSON, or CSV
            for ``.csv``); None writes none.  Sealed (encrypted) under
            ``passphrase`` when one is given, else plaintext (mode 0600).
        passphrase: opens a sealed ``key_file`` and seals a new one, and
            seals the manifest (scrypt, AES-256-GCM: :mod:`.sealed`).
        plaintext_manifest: write the manifest in plaintext even though a
            passphrase is given (unsafe: it re-identifies every patient).
        dry_run: compute the report only; nothing is written anywhere.
        overwrite: an existing ``manifest`` may be replaced.

    Yields:
        ``("deidentify", i, n)`` after each file (``"preview"`` in a dry run).

    Returns:
        A :class:`DeidResult`.

    Raises:
        DeidError: the output cannot be written, or the inputs hold no
            DICOM file (before any file is written, or, for a full disk
            mid-way, after complete files only).
        KeyFileError: the key file cannot be read.
    """
    options = options or DeidOptions()
    # a key file that exists is read first: a bad one stops before any work
    if key is None and key_file is not None and Path(key_file).exists():
        key = ProjectKey.from_file(key_file, passphrase=passphrase)
    inputs = list(inputs)
    files, skipped = collect_inputs(inputs)
    stage = "preview" if dry_run else "deidentify"
    yield (stage, 0, len(files))
    out: Path | None = None
    if not dry_run:
        if out_dir is None:
            raise DeidError("no output folder given")
        if not files:
            raise DeidError(
                f"no DICOM file in the input(s) ({len(skipped)} skipped: not "
                "DICOM or missing); nothing was written"
            )
        out = preflight(out_dir, files, inputs, manifest=manifest, key_file=key_file,
                        options=options, overwrite=overwrite)  # fmt: skip
        # a dry run or a refused export creates nothing, not even a key file
        if key is None and key_file is not None:
            key = ProjectKey.from_file(key_file, create=True, passphrase=passphrase)
    elif out_dir is not None:
        out = Path(out_dir).expanduser().resolve()
    key = key or ProjectKey.random()
    result = DeidResult(out, skipped=skipped, key_fingerprint=key.fingerprint,
                        dry_run=dry_run)  # fmt: skip
    for _path, reason in skipped:
        result.report.skipped[reason] += 1
    run = _Run(key, options, out, result, None if dry_run else AtomicWriter())
    try:
        for i, path in enumerate(files, 1):
            with quiet_pydicom():
                run.one(path, i)
            yield (stage, i, len(files))
        run.finish()
    finally:  # also on Cancel: the writes in flight complete
        run.close()
    if manifest is not None and not dry_run:
        seal_with = None if plaintext_manifest else passphrase
        result.manifest = run.mapping.write(
            manifest, key.fingerprint, options, overwrite=overwrite,
            passphrase=seal_with,
        )  # fmt: skip
    return result


class _Run:
    """One export: reads, de-identifies and hands files to the writer."""

    def __init__(self, key, options, out, result, writer: AtomicWriter | None):
        self.key, self.options, self.out = key, options, out
        self.result, self.writer = result, writer
        self.mapping = Manifest()
        self.used: set[Path] = set()

    def one(self, path: Path, index: int) -> None:
        """Read, de-identify and (unless a dry run) queue one file."""
        result, dry_run = self.result, self.writer is None
        try:
            ds = pydicom.dcmread(
                path, force=True, defer_size="64 KB" if dry_run else None
            )
            sop_class = str(ds.get("SOPClassUID", ""))
            if sop_class == _DICOMDIR_SOP or "DirectoryRecordSequence" in ds:
                result.skipped.append(
                    (str(path), "DICOMDIR (a media index, not an image)")
                )
                result.report.skipped["DICOMDIR"] += 1
                return
            if not sop_class or "SOPInstanceUID" not in ds:
                raise ValueError("no SOP Class or Instance UID: not a storable object")
            outcome = deidentify_dataset(ds, self.key, self.options, blank=not dry_run)
            ensure_file_meta(ds)
            rel = output_name(ds, outcome.pseudonym, index)
            while rel in self.used:  # the same instance given twice
                rel = rel.with_name(f"{rel.stem}_{len(self.used)}.dcm")
            self.used.add(rel)
            data = None if dry_run else encode(ds).getvalue()
        except Exception as exc:  # one bad file never stops the others
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            result.failed.append((str(path), reason))
            result.report.failed[type(exc).__name__] += 1
            return
        result.report.add(outcome.changes)
        if outcome.burned_in:
            result.report.flagged[rel.as_posix()] = outcome.burned_in
            result.flagged_inputs[rel.as_posix()] = str(path)
        if data is not None:
            target = self.out / rel

            def done() -> None:
                result.outputs.append(target)
                result.sources.append(path)
                self.mapping.add(outcome, str(path), rel.as_posix())

            self._guard(lambda: self.writer.submit(target, data, done))

    def _guard(self, action) -> None:
        try:
            action()
        except OSError as exc:
            raise DeidError(
                f"writing to {self.out} failed after {len(self.result.outputs)} "
                f"complete file(s) ({exc.strerror or exc}); no partial file "
                "was left"
            ) from exc

    def finish(self) -> None:
        """Wait for every write (raises DeidError if one failed)."""
        if self.writer is not None:
            self._guard(self.writer.drain)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def deidentify(
    inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike | None, **kwargs
) -> DeidResult:
    """:func:`iter_deidentify` drained (same arguments)."""
    from napari_medcnn._progress import drain

    return drain(iter_deidentify(inputs, out_dir, **kwargs))
