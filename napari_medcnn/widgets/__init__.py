"""Thin napari / magicgui dock widgets, one module per widget.

* :mod:`.series_browser`: ``SeriesBrowser``, scan a folder and load DICOM series.
* :mod:`.window_level`: ``WindowLevelWidget``, CT presets and free windows.

The modules are imported by npe2 on demand (see ``napari.yaml``), so nothing
is imported here: importing the package must not pull in Qt.
"""
