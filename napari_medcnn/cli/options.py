"""Options and rules shared by the subcommands: ``--model`` / ``--device``
(``classify`` and ``explain``) and loading the model they name,
``--overwrite`` and the check of the files a command will write, and the
exit status every subcommand returns (:data:`EXIT_STATUS`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from typing import Any

#: exit status of every subcommand
EXIT_DONE, EXIT_PARTIAL, EXIT_NOTHING = 0, 1, 2

#: the ``--help`` text that states :data:`EXIT_DONE` ... for a command
EXIT_STATUS = (
    "Exit status: 0 done; 1 done, but some items failed (listed); 2 nothing "
    "done: bad arguments, an output file that already exists (see "
    "--overwrite), or no item could be processed."
)


def exit_status(done: int, failed: int) -> int:
    """0 when nothing failed, 1 when some items were done and some failed,
    2 when none was done (every one failed, or there were none)."""
    if done == 0:
        return EXIT_NOTHING
    return EXIT_PARTIAL if failed else EXIT_DONE


def add_overwrite_option(p: argparse.ArgumentParser) -> None:
    """Add ``--overwrite`` (replace existing output files) to a parser."""
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that already exist (default: refuse, "
        "and do nothing)",
    )


def refuse_existing(paths: Iterable[str | os.PathLike | None], overwrite: bool) -> bool:
    """Check the files a command is about to write, before any work.

    Prints ``error: ...`` naming the file on standard error and returns
    False when one exists (and ``overwrite`` is off) or two are the same.
    """
    from napari_medcnn._atomic import check_overwrite

    try:
        check_overwrite(list(paths), overwrite=overwrite)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    return True


#: how the command line names the scopes (for :func:`check_request`'s
#: messages): ``--scope slice`` is one 2D image or every slice of a volume
SCOPE_OPTIONS = {
    "slice": "--scope slice",
    "slices": "--scope slice",
    "volume": "--scope volume",
}


class ModelArgError(Exception):
    """The model named on the command line cannot be used (exit status 2)."""


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Add ``--model CKPT`` and ``--device`` to a subcommand's parser."""
    p.add_argument(
        "--model",
        metavar="CKPT",
        help="checkpoint (.safetensors, .pt or its .json card); default: the "
        "Br35H brain-MR model shipped with the plugin",
    )
    p.add_argument("--device", help="torch device (default: cuda, mps, then cpu)")


def load_model_arg(args: argparse.Namespace) -> Any:
    """The :class:`~napari_medcnn.models.checkpoint.LoadedModel` that
    ``args.model`` (default: the shipped model) names, on ``args.device``.

    Raises:
        ModelArgError: the default model is missing, or the checkpoint is
            corrupt or its card incomplete (the message says which).
    """
    from napari_medcnn.models.checkpoint import (
        CheckpointError,
        default_model_path,
        load_checkpoint,
    )

    path = args.model or default_model_path()
    if args.model is None and not default_model_path().exists():
        raise ModelArgError(f"default model not found ({path}); pass --model CKPT")
    try:
        return load_checkpoint(path, args.device)
    except CheckpointError as exc:
        raise ModelArgError(str(exc)) from exc
