"""The cache answers as the authoritative server does: every question asked of NSD directly and through the cache.

Each question is asked without EDNS and with EDNS sizes 512, 1232 and 4096, with DO off and on, in lower and mixed
case (0x20), through two caches: one that forwards over UDP (TCP when truncated) and keeps answers, asked twice (a
miss, then hits), and one that forwards over TCP and keeps nothing (every query a miss). The cache's reply must
carry NSD's rcode and NSD's RRsets (TTLs not above NSD's, RA set, AA not required), fit the client's size, and set
TC exactly when NSD itself sets it for that size: when the answer section or a DNSSEC proof in the authority
section does not fit (RFC 2181 section 9, RFC 4035 section 3.1). Where NSD drops an RRset whole, the cache may keep
the records of the answer's last RRset that fit (RFC 2181 section 9 allows it; musl before 1.2.4 needs it); every
other RRset it sends is whole, and the additional section, then the authority section, go first.
"""
from __future__ import annotations

import socket

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import dns.rrset
import pytest

from tests.cache.conftest import Cache
from tests.cache.nsd import NSEC3_ZONE, ZONE, Nsd

QUESTIONS = [(f"{name}.{ZONE}".lstrip("@."), qtype) for name, qtype in [
    ("www", "A"), ("www", "AAAA"), ("www", "MX"), ("big", "A"), ("big6", "AAAA"), ("mx", "MX"),
    ("_http._tcp", "SRV"), ("caa", "CAA"), ("txt", "TXT"), ("bigtxt", "TXT"), ("x.wild", "A"), ("x.wild", "TXT"),
    ("deep.x.wild", "A"), ("b.ent", "A"), ("ent", "TXT"), ("a.b.ent", "A"), ("alias1", "A"), ("alias1", "AAAA"),
    ("out", "A"), ("into", "A"), ("nope", "A"), ("@", "SOA"), ("@", "NS"), ("@", "DNSKEY"),
]] + [(f"{name}.{NSEC3_ZONE}", qtype) for name, qtype in [
    ("www", "A"), ("www", "MX"), ("nope", "A"), ("x.wild", "TXT"), ("b.ent", "A"), ("big", "A"),
]]
VARIANTS = [(None, False), (512, False), (512, True), (1232, False), (1232, True), (4096, False), (4096, True)]


@pytest.fixture(scope="module")
def nsd(tmp_path_factory):
    server = Nsd(tmp_path_factory.mktemp("nsd")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def caches(tmp_path_factory, nsd):
    at = f"127.0.0.1:{nsd.port}"
    workdir = tmp_path_factory.mktemp("caches")
    zones = ("--kube-dns", at, "--forward", f"{ZONE}=udp://{at}", "--forward", f"{NSEC3_ZONE}=udp://{at}")
    keeping = Cache(workdir, *zones)
    forgetting = Cache(workdir, *(arg.replace("udp://", "tcp://") for arg in zones),
                       "--success-size", "0", "--denial-size", "0", "--servfail-ttl", "0")
    try:
        yield {"udp upstream, miss then hits": keeping, "tcp upstream, misses": forgetting}
    finally:
        keeping.stop()
        forgetting.stop()


def mixed_case(name: str) -> str:
    return "".join(c.upper() if i % 2 else c for i, c in enumerate(name))


def make_query(name: str, qtype: str, size: int | None, do: bool) -> dns.message.Message:
    return dns.message.make_query(name, qtype, use_edns=False if size is None else 0, payload=size or 512,
                                  want_dnssec=do)


def key(rrset: dns.rrset.RRset) -> tuple:
    return rrset.name, rrset.rdtype, rrset.covers


def needed(rrset: dns.rrset.RRset) -> bool:
    """An authority RRset a client needs (a denial or wildcard proof, the SOA of a denial); NS is optional."""
    return dns.rdatatype.NS not in (rrset.rdtype, rrset.covers)


def check(reply: dns.message.Message, data: bytes, query: dns.message.Message, limit: int,
          full: dns.message.Message, direct: dns.message.Message) -> None:
    assert len(data) <= limit
    assert reply.rcode() == full.rcode()
    assert reply.question[0].name.labels == query.question[0].name.labels  # 0x20: the case as asked
    assert reply.flags & dns.flags.RA
    assert reply.edns == query.edns and (reply.ednsflags & dns.flags.DO) == (query.ednsflags & dns.flags.DO)
    truncated = bool(reply.flags & dns.flags.TC)
    assert truncated == bool(direct.flags & dns.flags.TC), "TC where NSD sets it for this size, and only there"
    # Every RRset NSD has, TTLs not above NSD's; whole, but for the last answer RRset of a truncated reply.
    for section, whole in ((reply.answer, full.answer), (reply.authority, full.authority),
                           (reply.additional, full.additional)):
        originals = {key(rrset): rrset for rrset in whole}
        for position, rrset in enumerate(section):
            original = originals[key(rrset)]
            assert rrset.ttl <= original.ttl
            partial_allowed = truncated and section is reply.answer and position == len(section) - 1
            assert set(rrset) <= set(original) if partial_allowed else set(rrset) == set(original)
    sent = {key(rrset) for rrset in reply.answer + reply.authority}
    # Never less than NSD sends at this size of what the client needs; all of it unless TC.
    assert {key(rrset) for rrset in direct.answer + direct.authority if needed(rrset)} <= sent
    if not truncated:
        assert {key(rrset) for rrset in full.answer + full.authority if needed(rrset)} <= sent
        assert [key(rrset) for rrset in reply.answer] == [key(rrset) for rrset in full.answer]
    if reply.additional:  # the additional section goes first, then the authority section
        assert {key(rrset) for rrset in full.authority} <= sent


@pytest.mark.parametrize("name, qtype", QUESTIONS)
def test_the_cache_answers_as_nsd_does(nsd, caches, name, qtype):
    full = {do: dns.query.tcp(make_query(name, qtype, 65535, do), "127.0.0.1", port=nsd.port, timeout=5)
            for do in (False, True)}
    for size, do in VARIANTS:
        for asked in (name, mixed_case(name)):
            query = make_query(asked, qtype, size, do)
            direct = dns.query.udp(query, "127.0.0.1", port=nsd.port, timeout=5)
            for how, cache in caches.items():
                for attempt in ("first", "again"):
                    reply, data = udp_exchange(cache, query)
                    try:
                        check(reply, data, query, size or 512, full[do], direct)
                    except AssertionError as error:
                        raise AssertionError(f"{asked} {qtype} size {size} DO {do}, {how}, {attempt} ask: {error}\n"
                                             f"cache:\n{reply}\n\nNSD at this size:\n{direct}\n\nNSD over TCP:\n"
                                             f"{full[do]}") from error
    # Over TCP the cache sends it all.
    for how, cache in caches.items():
        query = make_query(mixed_case(name), qtype, 1232, True)
        reply = cache.tcp(query)
        assert not reply.flags & dns.flags.TC, how
        assert [key(rrset) for rrset in reply.answer] == [key(rrset) for rrset in full[True].answer], how


def udp_exchange(cache: Cache, query: dns.message.Message) -> tuple[dns.message.Message, bytes]:
    """The reply and its bytes (the size is checked on the bytes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(query.to_wire(), ("127.0.0.1", cache.port))
        while True:
            data = sock.recv(65535)
            if data[:2] == query.to_wire()[:2]:
                return dns.message.from_wire(data), data
