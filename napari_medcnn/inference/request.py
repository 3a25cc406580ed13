"""The one check of a classify or explain request against a model's card.

Every path that classifies or explains (the core's
:func:`~napari_medcnn.inference.predict.classify`, saliency's input plan,
the ``classify`` and ``explain`` subcommands and the Classify and Saliency
widgets) calls :func:`check_request`, so the rule "the scope must match the
model" is written once.  Only the words differ: each caller passes how *it*
names the scopes (``--scope volume`` on the command line, "Whole volume"
in a widget), so the message tells the user what to pick where they are.

Scopes (core names):

* ``slice``: one 2D image, or one slice of a volume (``slice_index``);
* ``slices``: every slice of a volume through a 2D model (on a 2D image it
  is the same as ``slice``);
* ``volume``: a whole volume through a 3D or CNN+RNN model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from napari_medcnn.models.card import CardError

SCOPES = ("slice", "slices", "volume")
#: how the core (and its error messages) names the scopes
CORE_NAMES: Mapping[str, str] = {
    "slice": "scope 'slice'",
    "slices": "scope 'slices'",
    "volume": "scope 'volume'",
}


@dataclass(frozen=True)
class Request:
    """A checked request.

    Attributes:
        scope: ``slice``, ``slices`` or ``volume`` (``slices`` only on a
            volume: a 2D image in ``slices`` scope becomes ``slice``).
        slice_index: the slice of a volume in ``slice`` scope, else None.
    """

    scope: str
    slice_index: int | None = None


def is_volume_model(card: Any) -> bool:
    """True for models that read whole volumes (3D CNN, CNN+RNN)."""
    return card.input_kind in ("volume", "sequence")


def default_scope(card: Any, ndim: int | None, slice_index: int | None = None) -> str:
    """The scope to use when the user chose none: ``volume`` for a volume
    model; for a slice model ``slice`` on a 2D image or when a slice is
    given, else ``slices`` (every slice)."""
    if is_volume_model(card):
        return "volume"
    return "slice" if ndim == 2 or slice_index is not None else "slices"


def check_request(
    card: Any,
    *,
    scope: str | None,
    n_channels: int | None = None,
    ndim: int | None = None,
    slice_index: int | None = None,
    n_slices: int | None = None,
    names: Mapping[str, str] = CORE_NAMES,
) -> Request:
    """Check that a model (its card) can take a request; resolve its scope.

    Args:
        card: the model's :class:`~napari_medcnn.models.card.ModelCard`.
        scope: ``slice``, ``slices``, ``volume`` or None (the default for
            this model and input, :func:`default_scope`).
        n_channels: image layers/channels offered (None: not checked yet,
            e.g. before any file is read).
        ndim: spatial dimensions of the input, 2 or 3 (None: not known yet).
        slice_index: the slice picked in ``slice`` scope on a volume.
        n_slices: the volume's number of slices (checks ``slice_index``).
        names: how the caller names each scope in its words (CLI option,
            widget choice), for the messages.

    Returns:
        The :class:`Request` with the resolved scope.

    Raises:
        CardError: the scope, dimensions or channels do not fit the model
            (the message says what to choose instead).
        ValueError: an unknown scope, or a slice index missing or outside
            the volume.
    """
    model = f"model '{card.name or card.arch}'"
    if ndim is not None and ndim not in (2, 3):
        raise ValueError(f"expected a 2D image or a 3D volume, got {ndim}D")
    if scope is None:
        scope = default_scope(card, ndim, slice_index)
    if scope not in SCOPES:
        raise ValueError(f"scope must be slice, slices or volume, not {scope!r}")
    volume = is_volume_model(card)
    if volume and scope != "volume":
        raise CardError(
            f"{model} reads whole volumes ({card.input_kind}): use {names['volume']}"
        )
    if not volume and scope == "volume":
        one, every = names["slice"], names["slices"]
        either = one if one == every else f"{one} or {every}"
        raise CardError(f"{model} classifies 2D slices: use {either}")
    if n_channels is not None:
        card.check_input(n_channels, (ndim or 3) if volume else 2)
    elif volume and ndim is not None and ndim != 3:
        card.check_input(card.in_channels, ndim)
    if scope == "slice" and ndim == 3:
        if slice_index is None:
            raise ValueError("slice scope on a volume needs slice_index")
        if n_slices is not None and not 0 <= slice_index < n_slices:
            raise ValueError(
                f"slice {slice_index} outside the volume's {n_slices} slices"
            )
        return Request("slice", int(slice_index))
    if scope == "slices" and ndim == 2:
        scope = "slice"
    return Request(scope, None)
