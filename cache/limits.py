"""Every limit on what the cache keeps, for how long, and how long it waits: the one definition, with defaults.

The flags and the config file keys are generated from these fields (config.py), the daemon hands this object to the
store and the resolver as it is, and a reload swaps it whole. A new limit is one field here and one line of help.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    success_ttl: int = 30  # longest time a positive answer is kept (seconds)
    success_size: int = 9984  # most positive answers kept
    denial_ttl: int = 5  # longest time NXDOMAIN/NODATA is kept (RFC 2308)
    denial_size: int = 9984  # most negative answers kept
    servfail_ttl: int = 5  # how long an upstream SERVFAIL is kept; 0 = not at all
    stale_for: int = 3600  # how long past expiry an answer may be served while upstreams fail (RFC 8767)
    prefetch: int = 3  # hits within an entry's life that make it refreshed before it expires; 0 = never
    upstream_timeout: float = 2.0  # seconds before a query without an upstream answer gets SERVFAIL

    def problems(self) -> list[str]:
        """What is out of range, as `flag-name: why` (empty when every value can be used)."""
        found = [f"{name.replace('_', '-')}: must not be negative"
                 for name in ("success_ttl", "success_size", "denial_ttl", "denial_size", "servfail_ttl",
                              "stale_for", "prefetch") if getattr(self, name) < 0]
        if not self.upstream_timeout > 0:
            found.append("upstream-timeout: must be positive")
        return found
