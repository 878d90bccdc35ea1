"""localdns node-local DNS cache: `python -m cache` (daemon), `python -m cache.demo` (loopback demo)."""
