"""Contract name: `pneumo.dicom` is `pneumo.formats.dicom` (the same module object)."""

import sys

from pneumo.formats import dicom

sys.modules[__name__] = dicom
