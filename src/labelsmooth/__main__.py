"""``python -m labelsmooth``: the same command as the ``labelsmooth`` console script."""

import sys

from labelsmooth.cli import main

sys.exit(main())
