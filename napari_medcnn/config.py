"""User settings shared by the core, the widgets and the CLI.

The one PHI switch lives here: ``include_phi`` (default False).  It is read
from the environment variable ``NAPARI_MEDCNN_INCLUDE_PHI`` (``1``/``true``)
so that the CLI, scripts and napari all honour it, and it can be overridden
per call (``io.load(path, include_phi=True)``).
"""

from __future__ import annotations

import os

PHI_ENV = "NAPARI_MEDCNN_INCLUDE_PHI"


def include_phi_default() -> bool:
    """Whether patient name, ID and birth date may go into layer metadata."""
    return os.environ.get(PHI_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
