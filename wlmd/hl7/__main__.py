"""``python -m wlmd.hl7``: see ``wlmd.hl7.cli``."""

import sys

from wlmd.hl7.cli import main

sys.exit(main())
