"""`python -m service ...` is the `adamod-lab` console script."""

from __future__ import annotations

import sys

from service.cli import main

if __name__ == "__main__":
    sys.exit(main())
