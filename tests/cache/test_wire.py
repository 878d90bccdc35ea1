"""The raw-bytes wire helpers against dnspython: parse what it renders, render what it parses, never crash."""
from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
from hypothesis import given, settings
from hypothesis import strategies as st

from cache import wire
from cache.limits import Limits
from cache.store import DENIAL, SUCCESS, Store


def upstream_answer(name: str, ttl: int = 300, rcode: int = 0, records: int = 1, edns: bool = True) -> bytes:
    query = dns.message.make_query(name, "A", use_edns=0 if edns else False)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    if rcode == 0 and records:
        response.answer.append(dns.rrset.from_text(name, ttl, "IN", "A",
                                                   *[f"10.0.{i // 250}.{i % 250 + 1}" for i in range(records)]))
    if rcode == dns.rcode.NXDOMAIN or not records:
        response.authority.append(dns.rrset.from_text("cluster.local.", ttl, "IN", "SOA",
                                                      "ns.cluster.local. h.cluster.local. 1 2 3 4 7"))
    return response.to_wire()


def test_a_hit_keeps_id_question_case_and_counts_ttl():
    query_msg = dns.message.make_query("WeB.cluster.local", "A", use_edns=0, payload=4096)
    query = wire.parse_query(query_msg.to_wire())
    answer = wire.parse_answer(upstream_answer("web.cluster.local."), query.key[:-1])
    reply = dns.message.from_wire(wire.render(query, answer, 17, 4096))
    assert reply.id == query_msg.id
    assert reply.question[0].name.labels == query_msg.question[0].name.labels
    assert reply.answer[0].ttl == 17 and reply.edns == 0
    assert reply.flags & dns.flags.RA and not reply.flags & dns.flags.AA


def test_denial_ttl_is_the_soa_minimum_and_capped():
    answer = wire.parse_answer(upstream_answer("x.cluster.local.", rcode=dns.rcode.NXDOMAIN),
                               wire.encode_name("x.cluster.local") + b"\x00\x01\x00\x01")
    assert answer.negative and answer.has_soa and answer.ttl == 7
    store = Store(Limits(denial_ttl=5))
    assert store.put(b"k", answer, 0.0).ttl == 5


def test_truncation_without_edns_and_lru_bound():
    query = wire.parse_query(dns.message.make_query("big.cluster.local", "A").to_wire())
    answer = wire.parse_answer(upstream_answer("big.cluster.local.", records=60), query.key[:-1])
    reply = dns.message.from_wire(wire.render(query, answer, 5, 512))
    assert reply.flags & dns.flags.TC and 0 < len(reply.answer[0]) < 60  # the records that fit (RFC 2181 9)
    store = Store(Limits(success_size=3))
    for index in range(10):
        store.put(bytes([index]), answer, 0.0)
    assert store.sizes() == {SUCCESS: 3, DENIAL: 0} and store.evictions[SUCCESS] == 7


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_packets_only_ever_drop_or_get_an_error(data):
    try:
        wire.parse_query(data)
    except wire.Drop:
        pass
    except wire.BadQuery as bad:
        reply = dns.message.from_wire(bad.response, question_only=True)
        assert reply.id == int.from_bytes(data[:2], "big")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 299))
def test_mangled_upstream_answers_never_crash(noise, position):
    good = upstream_answer("web.cluster.local.", records=3)
    mangled = good[:position] + noise + good[position + len(noise):]
    try:
        wire.parse_answer(mangled, wire.encode_name("web.cluster.local") + b"\x00\x01\x00\x01")
    except wire.BadAnswer:
        pass
