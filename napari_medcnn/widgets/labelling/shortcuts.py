"""Keys 1–9 (label) and 0 (remove) while a labelling panel is open.

Bound with the public ``bind_key(..., overwrite=True)`` on the viewer and
on each image layer being labelled: napari's Image layers bind 1 and 2 to
their own modes (transform, pan/zoom) in their *class* keymap, which wins
over the viewer's keymap, so the layer's *instance* keymap is where the
labelling keys take precedence.  Whatever was bound before is restored by
:meth:`KeyBinder.unbind` (connected to the panel's ``destroyed`` signal).
A Labels layer keeps its own 1–9 (paint modes) while it is selected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

KEYS = tuple(str(k) for k in range(1, 10))
UNLABEL_KEY = "0"


class KeyBinder:
    """Binds the keys to ``on_key(k)`` / ``on_unlabel()``; holds no Qt object,
    so it can still unbind after the panel is gone."""

    def __init__(
        self, viewer: Any, on_key: Callable[[int], None], on_unlabel: Callable[[], None]
    ):
        self._viewer = viewer
        self._on_key = on_key
        self._on_unlabel = on_unlabel
        self._bound: list[tuple[Any, dict[str, Any]]] = []  # provider, previous
        self.enabled = False

    def bind(self) -> None:
        """Bind 1–9 and 0 on the viewer (and, from now on, on layers given
        to :meth:`bind_layer`)."""
        if not self.enabled:
            self.enabled = True
            self._bind(self._viewer)

    def bind_layer(self, layer: Any) -> None:
        """Also bind the keys on ``layer`` (an image layer), once."""
        if self.enabled and not any(p is layer for p, _ in self._bound):
            self._bind(layer)

    def forget_layer(self, layer: Any) -> None:
        """Restore ``layer``'s bindings (it leaves the panel)."""
        for i, (provider, previous) in enumerate(self._bound):
            if provider is layer:
                self._restore(provider, previous)
                del self._bound[i]
                return

    def unbind(self, *_args) -> None:
        """Remove every binding and restore what was bound before."""
        self.enabled = False
        while self._bound:
            self._restore(*self._bound.pop())

    def _bind(self, provider: Any) -> None:
        previous = {}
        for key in KEYS:
            previous[key] = provider.bind_key(key, self._make(int(key)), overwrite=True)
        previous[UNLABEL_KEY] = provider.bind_key(
            UNLABEL_KEY, self._unlabel, overwrite=True
        )
        self._bound.append((provider, previous))

    @staticmethod
    def _restore(provider: Any, previous: dict[str, Any]) -> None:
        for key, func in previous.items():
            with contextlib.suppress(RuntimeError, ValueError, TypeError):
                provider.bind_key(key, func, overwrite=True)

    def _make(self, k: int) -> Callable[[Any], None]:
        def press(_viewer: Any) -> None:
            try:
                self._on_key(k)
            except RuntimeError:  # the panel was deleted: stop listening
                self.unbind()

        press.__name__ = f"medcnn_label_key_{k}"
        press.__doc__ = f"Label the current slice/image with class {k}"
        return press

    def _unlabel(self, _viewer: Any) -> None:
        """Remove the label of the current slice/image."""
        try:
            self._on_unlabel()
        except RuntimeError:
            self.unbind()
