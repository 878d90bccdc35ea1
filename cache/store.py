"""The cache: answers by key in two size-bounded LRU maps (success, denial).

An entry knows when it expires and the TTL it was stored with; what is left of its TTL is derived from the clock,
never counted down in place. Expired entries stay (within the size bound) for `stale_for` seconds, so they can be
served when every upstream fails (RFC 8767).
"""
from __future__ import annotations

from dataclasses import dataclass

from .limits import Limits
from .wire import SERVFAIL, Answer

SUCCESS, DENIAL = "success", "denial"


@dataclass(slots=True, eq=False)
class Entry:
    """One cached answer. Kept small (a full cache holds 20,000): `__slots__`, one float, small ints and shared
    strings, so an entry costs its key, this object, its Answer and the Answer's one bytes object."""

    answer: Answer
    expires: float  # monotonic time when the answer stops being fresh
    ttl: int  # the capped TTL this entry was stored with
    kind: str
    hits: int = 0
    refreshing: bool = False  # a prefetch for this entry is in flight
    dead: bool = False  # replaced or evicted: rendered replies that point at it must not be used


def cache_ttl(answer: Answer, limits: Limits) -> tuple[str, int] | None:
    """Which map and for how long an answer may be kept (RFC 1035, RFC 2308), or None: not cacheable."""
    if answer.rcode == SERVFAIL:
        return (DENIAL, limits.servfail_ttl) if limits.servfail_ttl > 0 else None
    if answer.negative:
        if not answer.has_soa:  # RFC 2308 section 5: without an SOA there is no negative TTL
            return None
        ttl = min(answer.ttl, limits.denial_ttl)
        return (DENIAL, ttl) if ttl > 0 else None
    if answer.rcode != 0:
        return None
    ttl = min(answer.ttl, limits.success_ttl)
    return (SUCCESS, ttl) if ttl > 0 else None


class Store:
    """Two LRU maps, success and denial, each a plain dict in recency order (oldest first): a use moves the key to
    the end, eviction takes the first. A dict costs about 60 bytes per entry where an OrderedDict costs 115, and
    both caches full hold 20,000 entries. (Finding the first key skips the slots earlier evictions left empty until
    the dict next compacts itself: a microsecond or two per miss, against a miss's 150.)"""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.maps: dict[str, dict[bytes, Entry]] = {SUCCESS: {}, DENIAL: {}}
        self.evictions = {SUCCESS: 0, DENIAL: 0}

    def get(self, key: bytes) -> Entry | None:
        """The entry (fresh or stale) for key, marked most recently used; the caller compares `expires` to now."""
        for entries in self.maps.values():
            entry = entries.pop(key, None)
            if entry is not None:
                entries[key] = entry  # re-inserted: now the most recently used
                return entry
        return None

    def stale(self, key: bytes, now: float) -> Entry | None:
        """An expired entry still within the serve-stale window (a SERVFAIL is never served stale)."""
        entry = self.get(key)
        if entry is None or entry.answer.rcode == SERVFAIL:
            return None
        return entry if now < entry.expires + self.limits.stale_for else None

    def put(self, key: bytes, answer: Answer, now: float) -> Entry | None:
        """Store a cacheable answer; returns the new entry, or None when the answer is not to be kept."""
        verdict = cache_ttl(answer, self.limits)
        if verdict is None:
            return None
        kind, ttl = verdict
        if answer.rcode == SERVFAIL and self.stale(key, now) is not None:
            return None  # keep the stale answer rather than replace it by a failure
        for entries in self.maps.values():
            old = entries.pop(key, None)
            if old is not None:
                old.dead = True
        entry = Entry(answer, now + ttl, ttl, kind)
        entries = self.maps[kind]
        entries[key] = entry
        self._trim(kind)
        return entry

    def resize(self, limits: Limits) -> None:
        """New limits (config reload): smaller maps drop their least recently used entries now."""
        self.limits = limits
        self._trim(SUCCESS)
        self._trim(DENIAL)

    def _trim(self, kind: str) -> None:
        entries = self.maps[kind]
        size = self.limits.success_size if kind == SUCCESS else self.limits.denial_size
        while len(entries) > max(size, 0):
            entries.pop(next(iter(entries))).dead = True  # the first key is the least recently used
            self.evictions[kind] += 1

    def sizes(self) -> dict[str, int]:
        return {kind: len(entries) for kind, entries in self.maps.items()}
