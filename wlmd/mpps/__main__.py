"""``python -m wlmd.mpps``: the MPPS client (see ``wlmd.mpps.client``)."""

import sys

from wlmd.mpps.client import main

sys.exit(main())
