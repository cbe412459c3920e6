"""``python -m wlmd.wlmctl``."""

import sys

from wlmd.wlmctl.cli import main

sys.exit(main())
