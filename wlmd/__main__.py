"""``python -m wlmd`` runs the server."""

import sys

from wlmd.cli import main

sys.exit(main())
