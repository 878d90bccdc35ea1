"""A reply too big for the client still carries the records that fit (RFC 2181 section 9).

The additional section goes first, then the authority section, in whole RRsets and without TC; TC is set only when
what the client needs is cut: the answer section, or the denial and wildcard proofs of the authority section
(RFC 4035 3.1.3). Of the answer section the client gets every record that fits, as CoreDNS and dnsmasq send them:
musl before 1.2.4 never retries over TCP and uses what a truncated reply holds.
"""
from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
from hypothesis import given, settings
from hypothesis import strategies as st

from cache import wire

SOA = "ns.zone.test. hostmaster.zone.test. 1 3600 900 604800 60"
SIG = "A 13 3 300 20261228040320 20261130040320 26235 zone.test. " + "A" * 88


def exchange(qname: str, qtype: str, build, client_edns: int | None = None, do: bool = False):
    """The client's query (parsed by the cache), and the upstream answer `build` fills in, stored by the cache."""
    query_message = dns.message.make_query(qname, qtype, use_edns=False if client_edns is None else 0,
                                           payload=client_edns or 512, want_dnssec=do)
    query = wire.parse_query(query_message.to_wire())
    upstream = dns.message.make_response(dns.message.make_query(qname.lower(), qtype, use_edns=0, want_dnssec=do))
    build(upstream)
    return query, upstream, wire.parse_answer(upstream.to_wire(max_size=65535), query.key[:-1])


def rrsets(section) -> dict:
    return {(r.name, r.rdtype, r.covers): set(r) for r in section}


def a_records(upstream, name: str = "big.zone.test.", count: int = 40) -> None:
    upstream.answer.append(dns.rrset.from_text(name, 300, "IN", "A", *[f"10.1.0.{i}" for i in range(1, count + 1)]))


def test_forty_addresses_without_edns_give_the_ones_that_fit_with_tc():
    query, upstream, answer = exchange("BiG.zone.test", "A", a_records)
    data = wire.render(query, answer, 30, 512)
    reply = dns.message.from_wire(data)
    assert len(data) <= 512 and reply.flags & dns.flags.TC
    addresses = set(reply.answer[0])
    assert addresses < set(upstream.answer[0])
    # Every record that fits: one more (16 bytes, its owner a pointer to the question) would not.
    assert len(data) + 16 > 512 and len(addresses) == (512 - 12 - len(query.question)) // 16
    assert reply.question[0].name.labels == (b"BiG", b"zone", b"test", b"")
    # Over TCP the whole RRset, no TC.
    whole = dns.message.from_wire(wire.render(query, answer, 30, 65535))
    assert not whole.flags & dns.flags.TC and set(whole.answer[0]) == set(upstream.answer[0])


def test_additional_then_authority_go_first_without_tc():
    def build(upstream):
        upstream.answer.append(dns.rrset.from_text("mx.zone.test.", 300, "IN", "MX", "10 mail1.zone.test.",
                                                   "20 mail2.zone.test."))
        upstream.authority.append(dns.rrset.from_text("zone.test.", 300, "IN", "NS",
                                                      *[f"ns{i}.zone.test." for i in range(20)]))
        for host in ("mail1", "mail2"):
            upstream.additional.append(dns.rrset.from_text(f"{host}.zone.test.", 300, "IN", "AAAA",
                                                           *[f"2001:db8::{i}" for i in range(1, 9)]))
    query, upstream, answer = exchange("mx.zone.test", "MX", build, client_edns=512)
    full = len(upstream.to_wire(max_size=65535))
    seen = []
    for limit in range(100, full + 40, 7):
        reply = dns.message.from_wire(wire.render(query, answer, 30, limit))
        assert not reply.flags & dns.flags.TC
        assert rrsets(reply.answer) == rrsets(upstream.answer)
        kept = rrsets(reply.authority) | rrsets(reply.additional)
        assert all(records == rrsets(upstream.authority + upstream.additional)[key] for key, records in kept.items())
        if reply.additional:
            assert rrsets(reply.authority) == rrsets(upstream.authority)
        seen.append((len(reply.authority), len(reply.additional)))
    assert seen[0] == (0, 0) and seen[-1] == (1, 2) and (1, 0) in seen and (1, 1) in seen


def test_a_negative_answer_keeps_its_soa_and_loses_the_rest():
    def build(upstream):
        upstream.set_rcode(dns.rcode.NXDOMAIN)
        upstream.authority.append(dns.rrset.from_text("zone.test.", 60, "IN", "SOA", SOA))
        upstream.additional.append(dns.rrset.from_text("ns.zone.test.", 60, "IN", "TXT", "x" * 250, "y" * 250))
    query, upstream, answer = exchange("nope.zone.test", "A", build)
    reply = dns.message.from_wire(wire.render(query, answer, 30, 512))
    assert reply.rcode() == dns.rcode.NXDOMAIN and not reply.flags & dns.flags.TC
    assert rrsets(reply.authority) == rrsets(upstream.authority) and not reply.additional


def test_a_cut_denial_proof_sets_tc():
    def build(upstream):
        upstream.set_rcode(dns.rcode.NXDOMAIN)
        upstream.authority.append(dns.rrset.from_text("zone.test.", 60, "IN", "SOA", SOA))
        for owner in ("a.zone.test.", "m.zone.test.", "x.zone.test."):
            upstream.authority.append(dns.rrset.from_text(owner, 60, "IN", "NSEC", "z.zone.test. A RRSIG NSEC"))
            upstream.authority.append(dns.rrset.from_text(owner, 60, "IN", "RRSIG", SIG.replace("A 13", "NSEC 13")))
    query, upstream, answer = exchange("nope.zone.test", "A", build, client_edns=512, do=True)
    assert len(upstream.to_wire(max_size=65535)) > 512
    reply = dns.message.from_wire(wire.render(query, answer, 30, 512))
    assert reply.flags & dns.flags.TC and reply.rcode() == dns.rcode.NXDOMAIN
    whole = rrsets(upstream.authority)
    assert all(records == whole[key] for key, records in rrsets(reply.authority).items())


def test_optional_ns_after_the_answer_is_dropped_without_tc_but_a_split_rrset_never_kept_in_part():
    def build(upstream):
        a_records(upstream, "www.zone.test.", 1)
        # The same additional RRset in two runs (legal on the wire): a cut between them would keep half of it.
        upstream.additional.append(dns.rrset.from_text("ns1.zone.test.", 300, "IN", "A", "192.0.2.1"))
        upstream.additional.append(dns.rrset.from_text("ns2.zone.test.", 300, "IN", "TXT", "t" * 200))
        upstream.additional.append(dns.rrset.from_text("ns1.zone.test.", 300, "IN", "A", "192.0.2.2"))
        upstream.additional.append(dns.rrset.from_text("ns3.zone.test.", 300, "IN", "TXT", "u" * 250))
    query, upstream, answer = exchange("www.zone.test", "A", build)
    upstream_wire = upstream.to_wire(max_size=65535)
    for limit in range(200, len(upstream_wire) + 20):
        reply = dns.message.from_wire(wire.render(query, answer, 30, limit))
        addresses = [str(rd) for rrset in reply.additional if rrset.rdtype == dns.rdatatype.A for rd in rrset]
        assert addresses in ([], ["192.0.2.1", "192.0.2.2"])


names = st.sampled_from(["big.zone.test.", "a.zone.test.", "zone.test.", "x.y.zone.test."])
rdatas = {
    "A": st.integers(1, 250).map(lambda i: f"10.0.0.{i}"),
    "AAAA": st.integers(1, 9999).map(lambda i: f"2001:db8::{i:x}"),
    "TXT": st.text("abcxyz", min_size=1, max_size=200).map(lambda text: f'"{text}"'),
    "NS": names,
    "CNAME": names,
    "MX": names.map(lambda name: f"10 {name}"),
}
SINGLETONS = {"CNAME"}
rrset_strategy = st.tuples(names, st.sampled_from(sorted(rdatas))).flatmap(
    lambda spec: st.lists(rdatas[spec[1]], min_size=1, max_size=1 if spec[1] in SINGLETONS else 30,
                          unique=True).map(lambda values: dns.rrset.from_text(spec[0], 300, "IN", spec[1], *values)))
section = st.lists(rrset_strategy, max_size=3, unique_by=lambda rrset: (rrset.name, rrset.rdtype))


@settings(max_examples=150, deadline=None)
@given(section, section.filter(lambda rrsets: all(r.rdtype != dns.rdatatype.SOA for r in rrsets)), section,
       st.booleans(), st.sampled_from([None, 512, 1232]))
def test_every_cut_fits_keeps_whole_rrsets_and_sets_tc_only_for_a_cut_answer(answer_rrsets, authority, additional,
                                                                          negative, client_edns):
    def build(upstream):
        upstream.answer.extend(answer_rrsets)
        upstream.authority.extend(authority)
        if negative:
            upstream.authority.append(dns.rrset.from_text("zone.test.", 60, "IN", "SOA", SOA))
        upstream.additional.extend(additional)
    query, upstream, answer = exchange("Big.Zone.Test", "A", build, client_edns=client_edns)
    full = rrsets(upstream.answer), rrsets(upstream.authority), rrsets(upstream.additional)
    for limit in sorted({512, 600, 1000, 1232, client_edns or 512, len(upstream.to_wire(max_size=65535))}):
        data = wire.render(query, answer, 30, limit)
        reply = dns.message.from_wire(data)
        assert len(data) <= limit
        got = rrsets(reply.answer), rrsets(reply.authority), rrsets(reply.additional)
        # The answer section: a prefix of the upstream's, whole RRsets but maybe the last.
        for position, rrset in enumerate(reply.answer):
            assert set(rrset) <= set(upstream.answer[position])
            if position < len(reply.answer) - 1:
                assert set(rrset) == set(upstream.answer[position])
        # Authority and additional: whole RRsets, the additional one only once the rest is complete.
        for section, original in zip(got[1:], full[1:]):
            assert all(records == original[key] for key, records in section.items())
        complete_answer = got[0] == full[0]
        if got[1] or got[2]:
            assert complete_answer
        if got[2]:
            assert got[1] == full[1]
        # What the client needs: the answer, and the authority's records but NS (here: the SOA and the others).
        needed = [key for key in full[1] if key[1] != dns.rdatatype.NS]
        complete = complete_answer and all(key in got[1] for key in needed)
        assert bool(reply.flags & dns.flags.TC) == (not complete)
