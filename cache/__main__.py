"""`python -m cache`: the node-local DNS cache daemon (see docs/cache.md)."""
from __future__ import annotations

import sys

from .daemon import main

if __name__ == "__main__":
    sys.exit(main())
