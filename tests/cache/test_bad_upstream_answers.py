"""An upstream answer the cache cannot relay as it is gets SERVFAIL, is never cached, and is counted.

OPT is hop-by-hop (RFC 6891): the cache never keeps or relays an upstream's OPT record, and an OPT record out of its
place (in the answer or authority section, twice, under a name) or whose options do not fill its rdata makes the
whole answer bad, as do records that lie
about their length, names that break the wire rules, meta types, an extended error code, and TC over TCP. Each
case below is sent by an upstream the test controls (tests/cache/fakeupstream.py) to a real `python -m cache`.
"""
from __future__ import annotations

import struct

import dns.message
import dns.rcode
import pytest

from tests.cache.conftest import Cache
from tests.cache.fakeupstream import FakeUpstream, echo, question_of

ROOT_OPT = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)
TO_QNAME = b"\xc0\x0c"  # owner: a pointer to the question's name


def rr(rtype: int, rdata: bytes, owner: bytes = TO_QNAME, rclass: int = 1, ttl: int = 300) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


A = rr(1, bytes([192, 0, 2, 1]))


def opt(options: bytes) -> bytes:
    return b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(options)) + options


def answer(query: bytes, an: list[bytes] = (), ns: list[bytes] = (), ar: list[bytes] = (), flags: int = 0x8180,
           counts: tuple[int, int, int] | None = None) -> bytes:
    an_count, ns_count, ar_count = counts or (len(an), len(ns), len(ar))
    header = struct.pack("!HHHHHH", int.from_bytes(query[:2], "big"), flags, 1, an_count, ns_count, ar_count)
    return header + question_of(query) + b"".join([*an, *ns, *ar])


BAD_ANSWERS = {
    # The cases of issue 13: a traceback, a wrong record cached as an answer, or a malformed reply relayed.
    "opt-in-answer": lambda q: answer(q, an=[ROOT_OPT]),
    "opt-in-answer-and-a-record-after": lambda q: answer(q, an=[ROOT_OPT], ar=[A]),
    "two-opts": lambda q: answer(q, an=[A], ar=[ROOT_OPT, ROOT_OPT]),
    "opt-in-authority": lambda q: answer(q, an=[A], ns=[ROOT_OPT]),
    "opt-with-a-name": lambda q: answer(q, an=[A], ar=[rr(41, b"", rclass=1232, ttl=0)]),
    "opt-with-badvers": lambda q: answer(q, ar=[b"\x00" + struct.pack("!HHIH", 41, 1232, 1 << 24, 0)]),
    # Found by `make fuzz` (fuzz/cache_answer.py): options that do not fill the OPT record's rdata exactly (RFC 6891
    # 6.1.2) make the message malformed, although the record itself is dropped.
    "opt-option-past-its-length": lambda q: answer(q, an=[A], ar=[opt(struct.pack("!HH", 10, 8) + bytes(4))]),
    "opt-option-cut-short": lambda q: answer(q, an=[A], ar=[opt(b"\x00\x0a\x00")]),
    # The same class: records that lie, names that break the rules (a name in a TTL field changes when a hit
    # writes the TTL), what no answer may hold.
    "a-record-of-3-bytes": lambda q: answer(q, an=[rr(1, b"\xc0\x00\x02")]),
    "cname-past-its-length": lambda q: answer(q, an=[rr(5, b"\x03www\x04zone")]),
    "txt-string-past-its-length": lambda q: answer(q, an=[rr(16, b"\x09abc")]),
    "soa-without-its-numbers": lambda q: answer(q, flags=0x8183, ns=[rr(6, b"\x00\x00\x00\x00\x00\x01")]),
    "pointer-into-the-header": lambda q: answer(q, an=[rr(1, b"\x01\x02\x03\x04", owner=b"\xc0\x04")]),
    "name-of-256-bytes": lambda q: answer(q, an=[rr(1, b"\x01\x02\x03\x04", owner=(b"\x3f" + b"a" * 63) * 4
                                                     + b"\x00")]),
    "pointer-into-a-ttl": lambda q: answer(q, an=[rr(1, b"\x01\x02\x03\x04", ttl=0), rr(
        1, b"\x01\x02\x03\x05", owner=struct.pack("!H", 0xC000 | 12 + len(question_of(q)) + 6))]),
    "record-of-another-class": lambda q: answer(q, an=[rr(1, b"\x01\x02\x03\x04", rclass=3)]),
    "tsig-record": lambda q: answer(q, an=[A], ar=[rr(250, b"\x00" * 16, owner=b"\x00", rclass=255, ttl=0)]),
    # Found by `make fuzz`: an NSEC type bitmap whose window ends in a zero octet (RFC 4034 4.1.2: omitted).
    "nsec-bitmap-with-a-trailing-zero": lambda q: answer(q, flags=0x8183, ns=[rr(47, b"\x00\x00\x02\x40\x00")]),
    # Found by `make fuzz`: a name reached by a pointer is a prior occurrence (RFC 1035 4.1.4), so it ends before the
    # pointer. This owner points at the question's last byte (class IN: 1), a label of one byte, the pointer's own
    # first one; the pointer's second byte is read as the next label's length, and the name runs on through its own
    # record, TTL included, to a zero in the rdata (of a type the cache relays unchecked).
    "name-read-past-its-pointer": lambda q: answer(q, an=[rr(65280, bytes(64), owner=struct.pack(
        "!H", 0xC000 | 12 + len(question_of(q)) - 1))]),
    # ... and a name reached by a pointer may not be made of a TTL field's bytes either, whether it starts in one
    # (pointer-into-a-ttl above) or runs into one: here from the first record's type (A: its low byte 1), through its
    # class, into its TTL (2^24 + 300: the bytes 1, 0 end the name), which every hit rewrites.
    "name-running-into-a-ttl": lambda q: answer(q, an=[rr(1, b"\x01\x02\x03\x04", ttl=(1 << 24) + 300), rr(
        1, b"\x01\x02\x03\x05", owner=struct.pack("!H", 0xC000 | 12 + len(question_of(q)) + 3))]),
    # ... nor when it starts in the question: at its class (1), a label of the next byte, then 12 bytes of the first
    # record's fields, its TTL among them, to a zero in its address.
    "name-from-the-question-into-a-ttl": lambda q: answer(q, an=[rr(1, b"\xc0\x00\x00\x01"), rr(
        1, b"\x01\x02\x03\x05", owner=struct.pack("!H", 0xC000 | 12 + len(question_of(q)) - 1))]),
    "count-that-lies": lambda q: answer(q, an=[A], counts=(2, 0, 0)),
    "truncated-over-tcp": lambda q: answer(q, an=[A], flags=0x8380),
}


NSID_OPTION = struct.pack("!HH", 3, 4) + b"nsd1"
GOOD_ANSWERS = {
    "with-its-own-opt": lambda q: answer(q, an=[A], ar=[b"\x00" + struct.pack("!HHIH", 41, 4096, 0, 8)
                                                        + NSID_OPTION]),
}


def respond(query: bytes, proto: str) -> bytes | None:
    label = question_of(query)[1:1 + query[12]].decode()
    build = BAD_ANSWERS.get(label) or GOOD_ANSWERS.get(label)
    return echo(query) if build is None else build(query)


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(respond) as server:
        yield server


@pytest.fixture(scope="module")
def cache(tmp_path_factory, upstream):
    process = Cache(tmp_path_factory.mktemp("bad-answers"), "--kube-dns", f"127.0.0.1:{upstream.port}",
                    "--forward", f"bad.test=udp://127.0.0.1:{upstream.port}",
                    "--forward", f"badtcp.test=tcp://127.0.0.1:{upstream.port}", "--upstream-timeout", "1")
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("case", sorted(BAD_ANSWERS))
@pytest.mark.parametrize("zone", ["bad.test", "badtcp.test"])
def test_a_bad_upstream_answer_is_servfail_not_cached_and_counted(cache, upstream, case, zone):
    name = f"{case}.{zone}"
    wire_name = dns.message.make_query(name, "A").question[0].name.to_wire()
    before = cache.metrics().get(f'localdns_forward_bad_answers_total{{zone="{zone}"}}', 0)
    for attempt in (1, 2):
        for edns in (False, True):
            query = dns.message.make_query(name.upper(), "A", use_edns=0 if edns else False)
            reply = cache.udp(query)
            assert reply.rcode() == dns.rcode.SERVFAIL, case
            assert reply.question == query.question and reply.edns == (0 if edns else -1)
        asked = upstream.asked[wire_name + b"\x00\x01\x00\x01"]
        assert asked >= 2 * attempt  # each asked upstream again: nothing was cached
    counted = cache.metrics()[f'localdns_forward_bad_answers_total{{zone="{zone}"}}'] - before
    assert counted >= 4
    assert "Traceback" not in cache.output()
    assert cache.proc.poll() is None


def test_an_answer_with_its_own_opt_is_relayed_without_it(cache, upstream):
    """The good case beside the bad ones: the upstream's OPT (its size, its options) never reaches the client."""
    for _ in range(2):  # miss, then hit
        reply = cache.udp(dns.message.make_query("with-its-own-opt.bad.test", "A", use_edns=0, payload=4096))
        assert reply.rcode() == dns.rcode.NOERROR and [str(rd) for rd in reply.answer[0]] == ["192.0.2.1"]
        assert reply.edns == 0 and reply.payload == 1232 and not reply.options  # our OPT, not the upstream's
        plain = cache.udp(dns.message.make_query("with-its-own-opt.bad.test", "A"))
        assert plain.edns == -1 and not plain.additional
