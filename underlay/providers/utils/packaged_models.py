"""Moved to :mod:`underlay.shared.packaged_models` (core and the CLI use it too, and core may not import
provider code). This name stays an alias of that module, so old imports and monkeypatches still reach
the one implementation."""

import sys

from underlay.shared import packaged_models

sys.modules[__name__] = packaged_models
