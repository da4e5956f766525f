"""``python -m iv2_train ...`` = the ``iv2-train`` command (see :mod:`iv2_train.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
