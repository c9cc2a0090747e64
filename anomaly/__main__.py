"""`python -m anomaly`: the same command as `anomaly`."""

import sys

from anomaly.cli import main

sys.exit(main())
