"""Thin napari / magicgui dock widgets, one subpackage or module per widget.

* :mod:`.series_browser`: ``SeriesBrowser``, scan a folder and load DICOM series.
* :mod:`.window_level`: ``WindowLevelWidget``, CT presets and free windows.
* :mod:`.classify`: ``ClassifyWidget``, classify image layers with a CNN.
* :mod:`.saliency`: ``SaliencyWidget``, saliency maps with trust metrics.
* :mod:`.labelling`: ``LabellingWidget``, label images, slices and regions.
* :mod:`.training`: ``TrainingWidget``, fine-tune a model on those labels.
* :mod:`.deidentify`: ``DeidentifyWidget``, export de-identified DICOM.
* :mod:`._common`: what several widgets share (jobs, run controls, model
  panel, model events, channels, layers, label stores, plots).

Each widget subpackage exports its widget class from its ``__init__``; the
modules inside it import each other's concrete modules, never that
``__init__``.  npe2 imports the widgets on demand (see ``napari.yaml``), so
nothing is imported here: importing the package must not pull in Qt.
"""
