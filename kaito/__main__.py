"""``python -m kaito``: the same as the ``kaito`` command."""

import sys

from kaito.cli import main

sys.exit(main())
