"""Worker jobs of the De-identify dock widget (core generators, no Qt).

:func:`iter_preview_job` is the dry run; :func:`iter_export_job` writes the
de-identified copies and re-reads every written series, which proves that
they still load.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from napari_medcnn.deid.options import DeidOptions
from napari_medcnn.widgets._common.jobs import guarded


def iter_preview_job(
    inputs: Sequence[str],
    options: DeidOptions,
    key_file: str | None,
    passphrase: str | None = None,
) -> Generator[Any, None, Any]:
    """A dry run for a worker thread (core generator, no Qt); ``passphrase``
    opens an encrypted key file."""
    from napari_medcnn.deid.run import iter_deidentify

    return (
        yield from guarded(
            iter_deidentify(
                inputs,
                None,
                options=options,
                key_file=key_file,
                passphrase=passphrase,
                dry_run=True,
            )
        )
    )


def iter_export_job(
    inputs: Sequence[str],
    out_dir: str,
    options: DeidOptions,
    key_file: str | None,
    manifest: str | None,
    passphrase: str | None = None,
    plaintext_manifest: bool = False,
) -> Generator[Any, None, tuple[Any, list[Any], int]]:
    """Export, then re-read every written series (core generator, no Qt).

    ``passphrase`` opens an encrypted key file, encrypts a new one and the
    manifest (unless ``plaintext_manifest``).

    Yields ``("deidentify", i, n)`` then ``("load", i, n)``; returns
    ``(DeidResult, scans, n_unloadable)``: series that hold no image (SR,
    RT...) are counted, not loaded.
    """
    from napari_medcnn.deid.run import iter_deidentify
    from napari_medcnn.io import ScanReadError, load

    result = yield from guarded(
        iter_deidentify(
            inputs,
            out_dir,
            options=options,
            key_file=key_file,
            manifest=manifest,
            passphrase=passphrase,
            plaintext_manifest=plaintext_manifest,
        )
    )
    scans: list[Any] = []
    unloadable = 0
    folders = result.series_dirs
    for i, folder in enumerate(folders, 1):
        try:
            scans.extend(load(folder, include_phi=False))
        except ScanReadError:
            unloadable += 1
        yield ("load", i, len(folders))
    return result, scans, unloadable
