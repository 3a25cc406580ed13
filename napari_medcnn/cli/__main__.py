"""``python -m napari_medcnn.cli``: the same as the ``napari-medcnn`` command."""

import sys

from napari_medcnn.cli import main

sys.exit(main())
