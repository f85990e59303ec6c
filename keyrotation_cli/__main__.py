"""`python -m keyrotation_cli`: the same as the `keyrotation` console script."""

import sys

from keyrotation_cli.main import main

sys.exit(main())
