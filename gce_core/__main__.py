"""`python -m gce_core ...`: see gce_core.cli."""

import sys

from gce_core.cli import main

sys.exit(main())
