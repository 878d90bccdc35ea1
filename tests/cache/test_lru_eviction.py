"""The size caps (--success-size, --denial-size) hold as least-recently-used caches: a use keeps an entry, the entry
used longest ago goes first, and a replaced or evicted entry is marked dead so no rendered reply points at it."""
from __future__ import annotations

import dns.message
import dns.rcode
import dns.rrset

from cache import wire
from cache.limits import Limits
from cache.store import DENIAL, SUCCESS, Store


def answer(name: str, nxdomain: bool = False) -> wire.Answer:
    query = dns.message.make_query(name, "A", use_edns=0)
    response = dns.message.make_response(query)
    if nxdomain:
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(dns.rrset.from_text("cluster.local.", 30, "IN", "SOA",
                                                      "ns.cluster.local. h.cluster.local. 1 2 3 4 30"))
    else:
        response.answer.append(dns.rrset.from_text(name, 30, "IN", "A", "10.0.0.1"))
    return wire.parse_answer(response.to_wire(), key(name)[:-1])


def key(name: str) -> bytes:
    return wire.encode_name(name) + b"\x00\x01\x00\x01\x00"


def names(count: int, prefix: str = "n") -> list[str]:
    return [f"{prefix}{i}.cluster.local." for i in range(count)]


def test_the_least_recently_used_entry_is_evicted_not_the_oldest_stored():
    store = Store(Limits(success_size=3))
    a, b, c, d = names(4)
    for name in (a, b, c):
        store.put(key(name), answer(name), 0.0)
    assert store.get(key(a)) is not None  # a is used: b is now the least recently used
    store.put(key(d), answer(d), 0.0)
    assert store.get(key(b)) is None
    assert all(store.get(key(name)) is not None for name in (a, c, d))
    assert store.sizes() == {SUCCESS: 3, DENIAL: 0} and store.evictions[SUCCESS] == 1


def test_each_cap_holds_on_its_own_map_under_a_long_fill():
    store = Store(Limits(success_size=50, denial_size=20))
    positives, negatives = names(1000, "p"), names(1000, "nx")
    for index, (positive, negative) in enumerate(zip(positives, negatives)):
        store.put(key(positive), answer(positive), 0.0)
        store.put(key(negative), answer(negative, nxdomain=True), 0.0)
        if index % 7 == 0:
            store.get(key(positives[index // 2]))  # uses mixed in, as hits come between misses
        assert len(store.maps[SUCCESS]) <= 50 and len(store.maps[DENIAL]) <= 20
    assert store.sizes() == {SUCCESS: 50, DENIAL: 20}
    assert store.evictions == {SUCCESS: 950, DENIAL: 980}
    # The most recent fills are the ones kept.
    assert all(store.get(key(name)) is not None for name in positives[-40:] + negatives[-20:])


def test_replaced_and_evicted_entries_are_marked_dead():
    store = Store(Limits(success_size=1))
    a, b = names(2)
    first = store.put(key(a), answer(a), 0.0)
    second = store.put(key(a), answer(a), 1.0)  # a refresh replaces the entry
    assert first.dead and not second.dead
    store.put(key(b), answer(b), 2.0)  # over the cap: a is evicted
    assert second.dead and store.get(key(a)) is None


def test_a_name_moves_between_maps_when_its_answer_changes_kind():
    store = Store(Limits())
    name = names(1)[0]
    store.put(key(name), answer(name, nxdomain=True), 0.0)
    store.put(key(name), answer(name), 1.0)
    assert store.sizes() == {SUCCESS: 1, DENIAL: 0}
    assert store.get(key(name)).kind == SUCCESS


def test_a_smaller_cap_on_reload_drops_the_least_recently_used_at_once():
    store = Store(Limits(success_size=10))
    filled = names(10)
    for name in filled:
        store.put(key(name), answer(name), 0.0)
    for name in filled[:3]:
        store.get(key(name))  # the three stored first are now the most recently used
    store.resize(Limits(success_size=3))
    assert store.sizes()[SUCCESS] == 3
    assert all(store.get(key(name)) is not None for name in filled[:3])


def test_an_entry_keeps_its_expiry_and_capped_ttl_not_a_countdown():
    store = Store(Limits(success_ttl=30))
    name = names(1)[0]
    entry = store.put(key(name), answer(name), 100.0)
    assert (entry.expires, entry.ttl) == (130.0, 30)
