"""``python -m wlmd.findscu`` runs the findscu client."""

import sys

from wlmd.findscu.cli import main

sys.exit(main())
