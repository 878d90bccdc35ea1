"""Answers through the cache match what kube-dns (dnsmasq) says, for every record type pods ask for."""
from __future__ import annotations

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename

from tests.cache.conftest import UPSTREAM_TTL


def ask(cache, name: str, rdtype: str = "A", **kwargs) -> dns.message.Message:
    return cache.udp(dns.message.make_query(name, rdtype, **kwargs))


def rrset_values(response: dns.message.Message, rdtype: str) -> set[str]:
    return {rd.to_text() for rrset in response.answer if rrset.rdtype == dns.rdatatype.from_text(rdtype)
            for rd in rrset}


def test_a_aaaa_srv_ptr_txt(cache):
    assert rrset_values(ask(cache, "web.default.svc.cluster.local", "A"), "A") == {"10.0.0.1"}
    assert rrset_values(ask(cache, "web.default.svc.cluster.local", "AAAA"), "AAAA") == {"fd00::1"}
    srv = rrset_values(ask(cache, "_http._tcp.web.default.svc.cluster.local", "SRV"), "SRV")
    assert srv == {"0 10 80 web.default.svc.cluster.local."}
    ptr = ask(cache, dns.reversename.from_address("10.0.0.1").to_text(), "PTR")
    assert rrset_values(ptr, "PTR") == {"web.default.svc.cluster.local."}
    assert rrset_values(ask(cache, "txt.default.svc.cluster.local", "TXT"), "TXT") == {'"hello from kube-dns"'}


def test_cname_chain_is_answered_whole(cache, kube_dns):
    response = ask(cache, "alias.cluster.local")
    assert rrset_values(response, "CNAME") == {"web.default.svc.cluster.local."}
    assert rrset_values(response, "A") == {"10.0.0.1"}
    # A CNAME to a CNAME: dnsmasq answers only the first link; the cache passes on exactly what kube-dns said.
    direct = dns.query.udp(dns.message.make_query("alias2.cluster.local", "A"), "127.0.0.1", port=kube_dns.port,
                           timeout=5)
    through = ask(cache, "alias2.cluster.local")
    assert [(r.name, r.rdtype, set(r)) for r in through.answer] == [(r.name, r.rdtype, set(r)) for r in direct.answer]


def test_nxdomain_and_nodata_carry_the_soa_with_the_denial_ttl(cache):
    for _ in range(2):  # miss, then hit
        nx = ask(cache, "nothing-here.default.svc.cluster.local")
        assert nx.rcode() == dns.rcode.NXDOMAIN
        assert nx.authority and nx.authority[0].rdtype == dns.rdatatype.SOA
        assert 0 < nx.authority[0].ttl <= 5  # SOA minimum 60, capped by --denial-ttl 5
    nodata = ask(cache, "db.default.svc.cluster.local", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA


def test_too_large_for_udp_sets_tc_and_tcp_gets_everything(cache):
    plain = ask(cache, "big.default.svc.cluster.local")  # no EDNS: 512 bytes at most
    assert plain.flags & dns.flags.TC and 0 < len(rrset_values(plain, "A")) < 100  # the records that fit
    full = cache.tcp(dns.message.make_query("big.default.svc.cluster.local", "A"))
    assert len(rrset_values(full, "A")) == 100
    assert not full.flags & dns.flags.TC


def test_edns_size_is_honoured_and_answered_with_opt(cache):
    big = ask(cache, "big.default.svc.cluster.local", use_edns=0, payload=4096)
    assert big.edns == 0 and not big.flags & dns.flags.TC
    assert len(rrset_values(big, "A")) == 100
    small = ask(cache, "big.default.svc.cluster.local", use_edns=0, payload=1232)
    assert small.flags & dns.flags.TC and small.edns == 0
    plain = ask(cache, "web.default.svc.cluster.local")
    assert plain.edns == -1  # no OPT for a client that sent none


def test_udp_upstream_truncation_is_retried_over_tcp(cache):
    # example.org is forwarded over UDP; dnsmasq truncates 100 A records at 1232 bytes, the cache retries over TCP.
    response = ask(cache, "big.example.org", use_edns=0, payload=4096)
    assert len(rrset_values(response, "A")) == 100


def test_0x20_mixed_case_question_is_echoed_exactly(cache):
    for name in ("wEb.DeFaUlT.sVc.ClUsTeR.lOcAl", "WEB.default.svc.cluster.local"):
        query = dns.message.make_query(name, "A")
        response = cache.udp(query)
        assert response.id == query.id
        assert response.question[0].name.labels == query.question[0].name.labels  # bytes: case-sensitive
        assert rrset_values(response, "A") == {"10.0.0.1"}


def test_do_bit_is_part_of_the_cache_key(cache, node_dns):
    name = "www.example.org"
    before = node_dns.queries(name)
    ask(cache, name)
    ask(cache, name)
    ask(cache, name, want_dnssec=True)
    ask(cache, name, want_dnssec=True)
    assert node_dns.queries(name) - before in (0, 2)  # 0 if an earlier test cached both already
    assert 0 < ask(cache, name).answer[0].ttl <= 30 < UPSTREAM_TTL


def test_tcp_clients_get_the_same_answers(cache):
    response = cache.tcp(dns.message.make_query("web.default.svc.cluster.local", "A"))
    assert rrset_values(response, "A") == {"10.0.0.1"}
    assert response.flags & dns.flags.RA and not response.flags & dns.flags.AA
