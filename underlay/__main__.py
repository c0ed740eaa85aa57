"""``python -m underlay`` is the ``underlay`` command."""

import sys

from underlay.cli.main import main

sys.exit(main())
