"""Which layer is which of the channels a model card names.

:func:`match_channels` matches layers to the card's ``channel_names``
(``T1``, ``T2``, ``FLAIR``...) from DICOM modality, series description or
layer name (:func:`sequence_key` reads a free-text name as a sequence):
the order when that is unambiguous, warnings when not.  The geometry of
the channels is :mod:`napari_medcnn.preprocessing.channels`.

Pure Python, no Qt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

#: sequence key -> how messages name it
SEQUENCE_NAMES = {
    "t1": "T1",
    "t1c": "T1 with contrast",
    "t2": "T2",
    "flair": "FLAIR",
    "pd": "PD",
    "dwi": "DWI",
    "adc": "ADC",
    "swi": "SWI",
    "ct": "CT",
}
#: sequence key -> patterns of one word (lower case, split at non-alphanumerics)
_WORDS = {
    "flair": r"(t2)?flair\w*|tirm\w*|darkfluid",
    "adc": r"adc\w*",
    "dwi": r"dwi\w*|diff\w*|trace\w*|dti\w*|b\d{2,4}",
    "t1c": r"t1(c|ce|gd|km|post|contrast)\w*",
    "t1": r"t1(?!\d)\w*|mprage\w*|mp2rage\w*|f?spgr\w*|bravo\w*|tfl\w*",
    "t2": r"t2(?!\d)\w*",
    "pd": r"pd(w|fs)?\w*",
    "swi": r"swi\w*",
    "ct": r"ct",
}
_CONTRAST_WORDS = {"post", "gd", "gad", "gado", "contrast", "ce", "postcontrast"}
#: which key wins when several are found (FLAIR over T2 in "t2_flair"...)
_PRIORITY = ("flair", "adc", "dwi", "t1c")


def sequence_key(text: str | None) -> str | None:
    """The MR sequence (or CT) a series description or layer name names,
    as a key of :data:`SEQUENCE_NAMES`, or None when it names none or
    several.

    ``"T1w"``, ``"t1_mprage_sag"`` -> ``t1``; ``"AX T2 FLAIR"``,
    ``"t2_flair"`` -> ``flair``; ``"ep2d_diff_ADC"`` -> ``adc``;
    ``"T1 post gad"``, ``"T1+C"`` -> ``t1c``; ``"MR"`` -> None.
    """
    if not text:
        return None
    low = str(text).lower().replace("+c", " contrast ").replace("+gd", " gd ")
    words = [w for w in re.split(r"[^a-z0-9]+", low) if w]
    phrase = f" {' '.join(words)} "
    found = {
        key
        for key, pattern in _WORDS.items()
        if any(re.fullmatch(pattern, w) for w in words)
    }
    if " proton density " in phrase:
        found.add("pd")
    if " dark fluid " in phrase:
        found.add("flair")
    if " apparent diffusion " in phrase:
        found.add("adc")
    if "t1" in found and _CONTRAST_WORDS & set(words):
        found.add("t1c")
    for key in _PRIORITY:
        if key in found:
            return key
    return found.pop() if len(found) == 1 else None


def layer_sequence(info: Mapping[str, Any]) -> str | None:
    """The sequence key of a layer described by ``info`` (``name``,
    optional ``series_description`` and ``modality`` as in layer
    metadata): from the name, else the description, else ``ct`` for the
    CT modality."""
    key = sequence_key(info.get("name")) or sequence_key(info.get("series_description"))
    if key is None and str(info.get("modality") or "").upper() == "CT":
        key = "ct"
    return key


def match_channels(
    card_channel_names: Sequence[str], layer_infos: Sequence[Mapping[str, Any]]
) -> tuple[tuple[int, ...] | None, list[str]]:
    """Which layer is which of the channels a model card names.

    Each card channel that names a sequence (``T1``, ``T2``, ``FLAIR``,
    ``DWI``, ``ADC``, ``PD``, ``CT``...; see :func:`sequence_key`) takes
    the one layer that names the same; a channel that names none (``MR``,
    ``image``) takes the layer of exactly its name.

    Args:
        card_channel_names: the card's ``channel_names``, in order.
        layer_infos: one mapping per layer, in the user's order: ``name``
            and, when known, ``series_description`` and ``modality`` (a
            layer's metadata with its name added will do).

    Returns:
        (order, warnings).  ``order[j]`` is the index in ``layer_infos`` of
        the layer for card channel ``j``, when every channel has exactly
        one layer and no two share one; otherwise None.  Warnings say what
        does not fit (a layer that matches no expected channel, two layers
        that look alike, a channel no layer names, a layer whose place
        contradicts its name), e.g. ``"the model expects T1, T2, FLAIR;
        layer 'dwi_b1000' matches none (it looks like DWI)"``.  Nothing is
        said when the card names no sequence or the counts differ (the
        request check says that).
    """
    wanted = [str(n) for n in card_channel_names]
    if not wanted or len(wanted) != len(layer_infos):
        return None, []
    card_keys = [sequence_key(n) for n in wanted]
    if all(k is None for k in card_keys):
        return None, []
    names = [
        str(info.get("name", f"layer {i + 1}")) for i, info in enumerate(layer_infos)
    ]
    keys = [layer_sequence(info) for info in layer_infos]
    candidates = []
    for j, ck in enumerate(card_keys):
        if ck is not None:
            candidates.append([i for i, k in enumerate(keys) if k == ck])
        else:
            target = wanted[j].strip().casefold()
            candidates.append(
                [i for i, n in enumerate(names) if n.strip().casefold() == target]
            )
    chosen = [c[0] for c in candidates if len(c) == 1]
    if len(chosen) == len(wanted) and len(set(chosen)) == len(chosen):
        return tuple(chosen), []

    expects = f"the model expects {', '.join(wanted)}"
    warnings: list[str] = []
    said: set[int] = set()
    generic = any(k is None for k in card_keys)  # "MR" may be any sequence
    for i, k in enumerate(keys):
        if k is not None and k not in card_keys and not generic:
            warnings.append(
                f"{expects}; layer '{names[i]}' matches none (it looks like "
                f"{SEQUENCE_NAMES[k]})"
            )
            said.add(i)
    for j, c in enumerate(candidates):
        if len(c) > 1:
            listed = ", ".join(f"'{names[i]}'" for i in c)
            warnings.append(f"{expects}; layers {listed} all look like {wanted[j]}")
            said.update(c)
        elif not c and card_keys[j] is not None:
            warnings.append(f"{expects}; no ticked layer looks like {wanted[j]}")
    for j, ck in enumerate(card_keys):
        k = keys[j]
        if ck is not None and k is not None and k != ck and j not in said:
            warnings.append(
                f"{expects}; channel {j + 1} ({wanted[j]}) is layer "
                f"'{names[j]}', which looks like {SEQUENCE_NAMES[k]}"
            )
            said.add(j)
    return None, warnings
