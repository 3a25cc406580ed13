"""What goes wrong with labels: the errors every label module raises."""

from __future__ import annotations

from pathlib import Path


class LabelsError(ValueError):
    """Labels cannot be read, written or applied; the message says why."""


class SidecarCorrupt(LabelsError):
    """A sidecar exists but cannot be read; it is left untouched."""

    def __init__(self, path: Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"{path}: cannot read the labels ({reason}). The file was left as "
            "it is; fix it, or open the scan with on_error='reset' to keep a "
            "copy of it and start again."
        )
