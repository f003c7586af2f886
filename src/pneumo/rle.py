"""Contract name: `pneumo.rle` is `pneumo.formats.rle` (the same module object)."""

import sys

from pneumo.formats import rle

sys.modules[__name__] = rle
