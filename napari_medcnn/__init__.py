"""napari-medcnn: load scans, classify with CNNs, explain, fine-tune, in napari."""

__version__ = "0.1.0"
