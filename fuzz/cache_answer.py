"""Target: an upstream's answer, any bytes, through what the cache does with it (wire.parse_answer and
records.check_rdata, the store, the renderer), asked by clients of every size: without EDNS, with EDNS and DO, over
TCP. The input's first byte picks the question's type and the first client's EDNS; the rest is the answer to
`www.fuzz.test` (the transport has matched its ID: the spoofing checks are tests/cache/test_spoofing.py's).

The rules (those of tests/cache/test_fuzz.py, judged by tests/cache/dnsoracle.py): nothing raises and no error is
logged; every query gets exactly one reply, with its ID, QR set, well framed, within the client's size; when the
answer holds only types the cache checks (or dnspython reads as opaque), every reply parses with dnspython, an
answer dnspython cannot read (the contents of its EDNS options aside: they are per hop, dropped unread) gets
SERVFAIL and is not cached, and no reply holds a record the answer did not hold
in the same section, nor another rcode than the answer's or SERVFAIL. What is cached is an answer to the question:
a response (QR), to a standard query, not truncated, with exactly our question; and a cached answer is not asked
for again.
"""
from __future__ import annotations

import struct

import dns.exception
import dns.message
import dns.rcode

from fuzz.logged import Errors
from fuzz.resolving import TCP, UDP, Pipeline
from tests.cache.dnsoracle import framing, options_opaque, parses, parses_as_answer, records_within, strict

ERRORS = Errors("cache")
NAME = b"\x03WwW\x04fuzz\x04TEST\x00"  # as the client asks (0x20 mixed case); the upstream is asked in lowercase
QTYPES = (1, 28, 5, 16, 15, 33, 12, 2, 6, 65, 257, 47)  # A AAAA CNAME TXT MX SRV PTR NS SOA HTTPS CAA NSEC
CLIENTS = (None, (512, False), (1232, True), (4096, False))  # EDNS (size, DO) of the first client; None: no EDNS
QUERY_ID = 0xBEEF


def question_of(selector: int) -> bytes:
    return NAME + struct.pack("!HH", QTYPES[selector % len(QTYPES)], 1)


def query(question: bytes, edns: tuple[int, bool] | None) -> bytes:
    header = struct.pack("!HHHHHH", QUERY_ID, 0x0100, 1, 0, 0, 0 if edns is None else 1)  # RD
    if edns is None:
        return header + question
    size, do = edns
    return header + question + b"\x00" + struct.pack("!HHIH", 41, size, 0x8000 if do else 0, 0)


def answers_question(sent: bytes, question: bytes) -> bool:
    """A response to a standard query, not truncated, with exactly this question (any case), well framed."""
    if len(sent) < 12 + len(question):
        return False
    flags, qdcount = struct.unpack_from("!HH", sent, 2)
    if not flags & 0x8000 or flags & 0x7800 or flags & 0x0200 or qdcount != 1:
        return False
    if sent[12:12 + len(question)].lower() != question.lower():
        return False
    try:
        framing(sent)
    except dns.exception.DNSException:
        return False
    return True


def check(data: bytes) -> str:
    """Raise AssertionError where the cache breaks a rule; otherwise what happened to the answer: cached, relayed
    (used, not kept) or refused (SERVFAIL instead)."""
    if not data:
        return "empty"
    selector, sent = data[0], data[1:]
    question = question_of(selector)
    first = CLIENTS[selector // len(QTYPES) % len(CLIENTS)]
    pipeline = Pipeline(lambda asked: sent)
    asks = [(UDP, first), (UDP, first), (TCP, first), (UDP, None), (UDP, (1232, True))]
    replies = []
    cached = False
    for index, (proto, edns) in enumerate(asks):
        message = query(question, edns)
        got = pipeline.ask(message, proto)
        ERRORS.check()
        assert len(got) == 1, f"{len(got)} replies to a well-formed query"
        reply = got[0]
        assert reply[:2] == message[:2] and reply[2] & 0x80, "the query's ID, QR set"
        limit = 65535 if proto == TCP else max(edns[0], 512) if edns else 512
        assert len(reply) <= limit, f"a reply of {len(reply)} bytes to a client that takes {limit}"
        framing(reply)  # a well-formed message, whatever the upstream sent
        replies.append(reply)
        if index == 0:
            cached = any(pipeline.store.sizes().values())
    if cached:
        assert answers_question(sent, question.lower()), "cached something that is not an answer to the question"
        # Rounds 2 and 3 ask what round 1 asked, and so does one of rounds 4 and 5 (the same DO bit: the same key).
        assert pipeline.upstream.asked == 2, "a cached answer is asked for again"
    if strict(sent):
        for reply in replies:
            assert parses(reply), f"a reply dnspython cannot read: {reply!r}"
        if not parses_as_answer(sent):
            assert not cached, "cached an answer dnspython cannot read"
            for reply in replies:
                assert reply[3] & 0x0F == dns.rcode.SERVFAIL, "an answer that does not parse is SERVFAIL"
        else:
            expected = dns.message.from_wire(options_opaque(sent), ignore_trailing=True)
            for reply in replies:
                parsed = dns.message.from_wire(reply)
                assert parsed.rcode() in (expected.rcode(), dns.rcode.SERVFAIL), (parsed.rcode(), expected.rcode())
                extra = records_within(parsed, expected)
                assert not extra, f"records the upstream did not send: {extra}"
    if cached:
        return "cached"
    return "refused" if all(reply[3] & 0x0F == dns.rcode.SERVFAIL for reply in replies) else "relayed"


if __name__ == "__main__":
    from fuzz.__main__ import alone
    alone("cache_answer")
