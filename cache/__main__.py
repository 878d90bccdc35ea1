"""`python -m cache`: the node-local DNS cache daemon (see docs/cache.md)."""
from __future__ import annotations

import sys

from . import nossl

nossl.import_event_loop()  # before anything imports asyncio: no OpenSSL in this process (4.5 MB of RSS)

from .daemon import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
