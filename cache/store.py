"""The cache: answers by key in two size-bounded LRU maps (success, denial).

An entry knows when it expires and the TTL it was stored with; what is left of its TTL is derived from the clock,
never counted down in place. Expired entries stay (within the size bound) for `stale_for` seconds, so they can be
served when every upstream fails (RFC 8767).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Final

from .limits import Limits
from .wire import SERVFAIL, Answer

SUCCESS: Final = "success"
DENIAL: Final = "denial"


class Entry:
    """One cached answer. Kept small (a full cache holds 20,000): `__slots__`, one float, small ints and shared
    strings, so an entry costs its key, this object, its Answer and the Answer's one bytes object. (A plain class,
    not a dataclass, so that mypyc compiles its `__init__`: see wire.Query.)"""

    __slots__ = ("answer", "dead", "expires", "hits", "kind", "refreshing", "ttl")

    def __init__(self, answer: Answer, expires: float, ttl: int, kind: str) -> None:
        self.answer = answer
        self.expires = expires  # monotonic time when the answer stops being fresh
        self.ttl = ttl  # the capped TTL this entry was stored with
        self.kind = kind
        self.hits = 0
        self.refreshing = False  # a prefetch for this entry is in flight
        self.dead = False  # replaced or evicted: rendered replies that point at it must not be used


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
    """Two LRU maps, success and denial, each an OrderedDict in recency order (oldest first): a use moves the key
    to the end, eviction pops the first.

    Why an OrderedDict, although it costs some 45 bytes per entry more than a plain dict (0.9 MB with both maps
    full): a plain dict can find its first key only by walking past the empty slots that earlier evictions left at
    its front, which it compacts only when it resizes. In a full map that walk averaged ~6,000 slots, some 24,000
    instructions per miss (9% of a miss under `bench.profile miss --callgrind`); popitem(last=False) is a few
    hundred."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.maps: dict[str, OrderedDict[bytes, Entry]] = {SUCCESS: OrderedDict(), DENIAL: OrderedDict()}
        self.evictions = {SUCCESS: 0, DENIAL: 0}

    def get(self, key: bytes) -> Entry | None:
        """The entry (fresh or stale) for key, marked most recently used; the caller compares `expires` to now."""
        for entries in self.maps.values():
            entry = entries.get(key)
            if entry is not None:
                entries.move_to_end(key)
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
            if key in entries:  # (a membership test first: a new key, the usual case, calls no method)
                entries.pop(key).dead = True
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
            entries.popitem(False)[1].dead = True  # the first key is the least recently used (last=False)
            self.evictions[kind] += 1

    def sizes(self) -> dict[str, int]:
        return {kind: len(entries) for kind, entries in self.maps.items()}
