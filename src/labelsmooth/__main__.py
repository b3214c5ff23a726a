"""``python -m labelsmooth``: the same command as the ``labelsmooth`` console script."""

import sys

from labelsmooth.cli import main

if __name__ == "__main__":  # pytest --doctest-modules imports this module too
    sys.exit(main())
