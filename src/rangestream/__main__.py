"""``python -m rangestream``: the command line."""

import sys

from rangestream.cli import main

if __name__ == "__main__":
    sys.exit(main())
