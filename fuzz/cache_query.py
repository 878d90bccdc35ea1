"""Target: a client's datagram, any bytes, through the cache's query path (parse, miss, upstream answer, store, hit,
the replay of a hit, and TCP).

The rules (those of tests/cache/test_fuzz.py, judged by tests/cache/dnsoracle.py): nothing raises and no error is
logged; a packet too short for a header or with QR set gets no reply, every other one exactly one; every reply has
the query's ID and QR set, parses with dnspython and carries the question exactly as asked; a UDP reply to a query
dnspython reads fits the client's size (512 bytes without EDNS); and a hit answers what the miss answered (TTLs
aside). The upstream answers every question validly, in a way picked from the question: addresses (one, a few, or
more than 512 bytes of them), NXDOMAIN or NODATA with an SOA, SERVFAIL, or no answer at all.
"""
from __future__ import annotations

import struct
import zlib

import dns.message

from cache.exchange import UpstreamError
from fuzz.logged import Errors
from fuzz.resolving import TCP, UDP, Pipeline
from tests.cache.dnsoracle import limit_of, parses, question_as_asked

ERRORS = Errors("cache")
SOA = b"\x00" + struct.pack("!HHIH", 6, 0, 60, 22) + b"\x00\x00" + struct.pack("!5I", 1, 7200, 900, 86400, 30)
ADDRESSES = {1: b"\xc0\x00\x02", 28: b"\x20\x01\x0d\xb8" + bytes(11)}  # A, AAAA (IN): all but the last byte


def upstream(question: bytes) -> bytes | Exception:
    """A valid answer to `question` (lowercased wire name, type, class), the kind picked by its checksum."""
    qtype, qclass = struct.unpack_from("!HH", question, len(question) - 4)
    pick = zlib.crc32(question)
    kind = pick % 6
    if kind == 5:
        return UpstreamError("no answer within the timeout")
    flags, count, answers, authority = 0x8180, 0, b"", b""
    if kind in (0, 1) and qtype in ADDRESSES and qclass == 1:  # (A in class CH has another layout: RFC 1035 3.4.1)
        count = (1, 3, 60)[pick // 6 % 3]  # 60 A records are 940 bytes: cut for a 512-byte client
        rdata = ADDRESSES[qtype]
        answers = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", qtype, qclass, 60, len(rdata) + 1) + rdata
                           + bytes((i + 1,)) for i in range(count))
    elif kind == 2 or kind in (0, 1):  # NODATA (and the answer to other types)
        authority = SOA[:3] + struct.pack("!H", qclass) + SOA[5:]
    elif kind == 3:
        flags |= 3  # NXDOMAIN
        authority = SOA[:3] + struct.pack("!H", qclass) + SOA[5:]
    else:
        flags |= 2  # SERVFAIL
    header = struct.pack("!HHHHHH", 0, flags, 1, count, 1 if authority else 0, 0)
    return header + question + answers + authority


def same_but_ttls(first: bytes, second: bytes) -> bool:
    """Replies equal in size, header and records, TTLs aside (dnspython compares rdata sets, not TTLs)."""
    return len(first) == len(second) and first[:12] == second[:12] and \
        dns.message.from_wire(first) == dns.message.from_wire(second)


def check(data: bytes) -> str:
    """Raise AssertionError where the cache breaks a rule; otherwise what happened: dropped, refused (answered
    without asking upstream: an error), hit (asked once, then answered from the cache) or miss (asked each time)."""
    pipeline = Pipeline(upstream)
    rounds = [(UDP, pipeline.ask(data)), (UDP, pipeline.ask(data)), (UDP, pipeline.ask(data)),
              (TCP, pipeline.ask(data, TCP))]  # the miss (or an error), a hit, its replay, then over TCP
    ERRORS.check()
    dropped = len(data) < 12 or data[2] & 0x80
    well_formed = parses(data)
    for proto, replies in rounds:
        assert len(replies) == (0 if dropped else 1), f"{len(replies)} replies over {proto} (dropped: {dropped})"
        for reply in replies:
            assert reply[:2] == data[:2] and reply[2] & 0x80, "the query's ID, QR set"
            assert parses(reply), f"a reply dnspython cannot read: {reply!r}"
            assert question_as_asked(data, reply), "the question exactly as asked"
            if well_formed and proto == UDP:
                assert len(reply) <= limit_of(dns.message.from_wire(data)), "a UDP reply fits the client's size"
    if dropped:
        return "dropped"
    (_, [first]), (_, [hit]), (_, [replayed]), _ = rounds
    assert same_but_ttls(first, hit) and same_but_ttls(first, replayed), "a hit answers what the miss answered"
    return ("refused", "hit")[pipeline.upstream.asked] if pipeline.upstream.asked < 2 else "miss"


if __name__ == "__main__":
    from fuzz.__main__ import alone
    alone("cache_query")
