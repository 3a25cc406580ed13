"""``napari-medcnn`` command line: thin over the same core functions as napari.

Subcommands, one module each (``info``, ``classify``, ``explain``, ``train``,
``deid``, ``demo``), each with an ``add_<name>(subparsers)`` function; a new
one is added by appending its ``add_`` function to :data:`SUBCOMMANDS`:

* ``info PATH...``: one JSON summary per scan (name, shape, spacing,
  modality, quality), never any PHI.
* ``classify PATH...``: classify each scan with a checkpoint and write one
  record per scan (no PHI) to JSON and/or CSV.
* ``train --labels SIDECAR_OR_CSV... --out CKPT``: fine-tune a model on
  label sidecars or a ``path,label`` CSV (see ``cli/train.py``).
* ``demo``: napari with the plugin's widgets docked and a sample scan
  (classified when the default model is installed); ``--screenshot PNG
  --quit`` renders it to a file and exits.
* ``explain PATH``: a saliency map aligned with the scan (.npy, .nii.gz or
  .png, with a JSON sidecar) and its trust metrics printed as JSON.
* ``cohort INPUT... --out DIR``: classify (and explain) a whole cohort,
  resumably, on local worker processes or Dask (see ``cli/cohort.py``).
* ``deidentify IN... --out DIR``: DICOM PS3.15 Annex E Basic Profile
  de-identification (with its options) into a new folder; ``--dry-run``
  lists the changes by tag and action, never values.
* ``manifest show|rekey FILE``: decrypt a de-identification manifest (or
  look a pseudonym up) for an authorised re-identification; change the
  passphrase of an encrypted manifest or key file (see ``cli/manifest.py``).
* ``pacs echo|find|get|send``: a PACS over DICOMweb or DIMSE (see
  ``cli/pacs.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from napari_medcnn.cli.classify import add_classify
from napari_medcnn.cli.cohort import add_cohort
from napari_medcnn.cli.deid import add_deidentify
from napari_medcnn.cli.demo import (
    CLASSIFY_WIDGET,
    DEMO_WIDGETS,
    PLUGIN,
    SAMPLE_KEYS,
    add_demo,
)
from napari_medcnn.cli.explain import add_explain
from napari_medcnn.cli.info import add_info
from napari_medcnn.cli.manifest import add_manifest
from napari_medcnn.cli.pacs import add_pacs
from napari_medcnn.cli.train import add_train

__all__ = ["CLASSIFY_WIDGET", "DEMO_WIDGETS", "PLUGIN", "SAMPLE_KEYS", "main"]


# -- entry point ------------------------------------------------------------
SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    add_info,
    add_classify,
    add_demo,
    add_explain,
    add_deidentify,
    add_manifest,
    add_train,
    add_cohort,
    add_pacs,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``napari-medcnn`` argument parser with every subcommand."""
    from napari_medcnn import __version__

    parser = argparse.ArgumentParser(
        prog="napari-medcnn",
        description="Load, check, view and classify medical scans (DICOM, NIfTI, "
        "images).",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
