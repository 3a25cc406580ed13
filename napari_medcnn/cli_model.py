"""The ``--model`` / ``--device`` options shared by the ``classify`` and
``explain`` subcommands, and loading the model they name."""

from __future__ import annotations

import argparse
from typing import Any


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
    from .inference import default_model_path
    from .models.checkpoint import CheckpointError, load_checkpoint

    path = args.model or default_model_path()
    if args.model is None and not default_model_path().exists():
        raise ModelArgError(f"default model not found ({path}); pass --model CKPT")
    try:
        return load_checkpoint(path, args.device)
    except CheckpointError as exc:
        raise ModelArgError(str(exc)) from exc
