"""Fuzzing a running cache (`python -m cache`) from both sides, in bounded time (hypothesis, max_examples each).

Clients send queries from well-formed to garbage; an upstream the test controls (tests/cache/fakeupstream.py)
answers with generated records, mutated real answers or noise. Whatever comes, the cache keeps running, answers
every well-formed query in time (SERVFAIL at worst), never sends a malformed message, fits each UDP reply in the
client's size, and never caches an answer it could not check: an upstream answer that does not parse is SERVFAIL
and is asked again. The rdata of types outside records.RDATA_LAYOUTS is relayed as received (RFC 3597), so the
full parse of a reply by dnspython is required whenever the answer holds only types the cache checks or that
dnspython itself treats as opaque; for the others the reply's framing is checked. Replies are judged by
tests/cache/dnsoracle.py, which the atheris targets (fuzz/, `make fuzz`) share.
"""
from __future__ import annotations

import itertools
import socket
import struct
from datetime import timedelta

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cache.conftest import Cache, raw_udp
from tests.cache.dnsoracle import framing, limit_of, parses, parses_as_answer, question_as_asked, strict
from tests.cache.fakeupstream import FakeUpstream, echo, question_of

REPLY_TIMEOUT = 3.0  # the cache's --upstream-timeout is 0.5 s: every reply comes well within this
FUZZ = settings(deadline=timedelta(seconds=10), suppress_health_check=[HealthCheck.too_slow])
serial = itertools.count()


class Plans:
    """What the fake upstream answers, per question: a function of the query the cache sent (its ID is random)."""

    def __init__(self) -> None:
        self.by_question: dict[bytes, object] = {}
        self.sent: dict[bytes, bytes] = {}

    def respond(self, query: bytes, proto: str) -> bytes | None:
        question = question_of(query)
        plan = self.by_question.get(question)
        if plan is None:
            return echo(query)
        answer = plan(query)  # type: ignore[operator]
        self.sent[question] = answer
        return answer


@pytest.fixture(scope="module")
def plans():
    return Plans()


@pytest.fixture(scope="module")
def upstream(plans):
    with FakeUpstream(plans.respond) as server:
        yield server


@pytest.fixture(scope="module")
def cache(tmp_path_factory, upstream):
    at = f"127.0.0.1:{upstream.port}"
    process = Cache(tmp_path_factory.mktemp("fuzz"), "--kube-dns", at, "--forward", f".=udp://{at}",
                    "--forward", f"fuzz.test=udp://{at}", "--forward", f"fuzztcp.test=tcp://{at}",
                    "--upstream-timeout", "0.5")
    try:
        yield process
    finally:
        assert process.stop() == 0
        assert "Traceback" not in process.log.read_text()


# --- queries from clients ------------------------------------------------------------------------------------------

labels = st.one_of(st.binary(min_size=1, max_size=63), st.sampled_from([b"www", b"WwW", b"a" * 63, b"_srv"]))
qtypes = st.one_of(st.sampled_from([1, 28, 5, 16, 33, 255, 41, 250, 251, 252, 128]), st.integers(0, 65535))
edns = st.one_of(st.none(), st.tuples(st.integers(0, 65535), st.booleans(), st.integers(0, 2),
                                      st.binary(max_size=40)))


@st.composite
def well_formed_queries(draw) -> bytes:
    name = b"".join(bytes((len(label),)) + label for label in draw(st.lists(labels, min_size=0, max_size=3)))
    name += b"\x04fuzz\x04test\x00"
    qtype, qclass = draw(qtypes), draw(st.sampled_from([1, 1, 1, 3, 254, 255]))
    flags = draw(st.integers(0, 0xFFFF)) & ~0xF800 & 0xFFF0  # a query: QR 0, opcode QUERY, rcode 0
    opt = b""
    if (options := draw(edns)) is not None:
        size, do, version, option_bytes = options
        opt = b"\x00" + struct.pack("!HHIH", 41, size, version << 16 | (0x8000 if do else 0), len(option_bytes))
        opt += option_bytes
    return struct.pack("!HHHHHH", draw(st.integers(0, 0xFFFF)), flags, 1, 0, 0, 1 if opt else 0) + name + \
        struct.pack("!HH", qtype, qclass) + opt


@st.composite
def mutated(draw, base) -> bytes:
    data = bytearray(draw(base))
    for position, value in draw(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), max_size=4)):
        data[position % len(data)] = value
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=20))


queries = st.one_of(well_formed_queries(), mutated(well_formed_queries()), st.binary(max_size=700))


PROBE = dns.message.make_query("probe.fuzz.test", "A")


def exchange_then_probe(port: int, data: bytes) -> bytes | None:
    """The reply to `data` if the cache sends one before it answers a well-formed query sent right after (a packet
    it drops gets no reply; one it answers at once is answered before the next)."""
    PROBE.id = int.from_bytes(data[:2], "big") ^ 0xFFFF if len(data) >= 2 else 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(REPLY_TIMEOUT)
        sock.sendto(data, ("127.0.0.1", port))
        sock.sendto(PROBE.to_wire(), ("127.0.0.1", port))
        while True:
            reply = sock.recv(65535)
            if reply[:2] != PROBE.to_wire()[:2]:
                return reply
            return None


@settings(FUZZ, max_examples=400)
@given(data=queries)
def test_any_packet_gets_no_reply_or_a_well_formed_one(cache, data):
    reply = raw_udp(cache.port, data, REPLY_TIMEOUT) if parses(data) else exchange_then_probe(cache.port, data)
    if parses(data):
        query = dns.message.from_wire(data)
        assert reply is not None, "a well-formed query gets an answer, SERVFAIL at worst"
        assert len(reply) <= limit_of(query)
    if reply is None:
        return
    assert reply[:2] == data[:2] and reply[2] & 0x80  # its ID, QR set
    assert question_as_asked(data, reply)  # a well-formed message, with the question exactly as asked
    assert cache.proc.poll() is None


# --- answers from the upstream -------------------------------------------------------------------------------------

VALID_RDATA = {
    1: [b"\xc0\x00\x02\x01"], 28: [bytes(15) + b"\x01"], 2: [b"\xc0\x0c", b"\x02ns\x00"], 5: [b"\x01x\xc0\x0c"],
    12: [b"\xc0\x0c"], 15: [b"\x00\x0a\xc0\x0c"], 16: [b"\x03abc", b"\x00", b"\x01a\x02bc"],
    33: [b"\x00\x00\x00\x05\x00\x50\xc0\x0c"], 6: [b"\xc0\x0c\xc0\x0c" + bytes(16) + b"\x00\x00\x00\x3c"],
    65280: [b"", b"\xff" * 9],
}
RECORD_TYPES = [*sorted(VALID_RDATA), 41, 46, 47, 250]


@st.composite
def records(draw) -> bytes:
    owner = draw(st.one_of(st.just(b"\xc0\x0c"), st.just(b"\x00"), st.integers(0, 400).map(
        lambda target: struct.pack("!H", 0xC000 | target)), st.binary(max_size=12).map(lambda tail: tail + b"\x00")))
    rtype = draw(st.sampled_from(RECORD_TYPES))
    rdata = draw(st.one_of(st.sampled_from(VALID_RDATA.get(rtype, [b""])), st.binary(max_size=30)))
    rdlength = len(rdata) + draw(st.sampled_from([0, 0, 0, -1, 1, 3]))
    rclass = draw(st.sampled_from([1, 1, 1, 3, 255, 1232]))
    ttl = draw(st.sampled_from([0, 60, 300, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]))
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, max(rdlength, 0) & 0xFFFF) + rdata


@st.composite
def generated_answer(draw):
    flags = draw(st.sampled_from([0x8180, 0x8183, 0x8182, 0x8580, 0x8380, 0x8181, 0x0180, 0x8980]))
    sections = [draw(st.lists(records(), max_size=4)) for _ in range(3)]
    counts = [len(section) for section in sections]
    if draw(st.booleans()):
        counts = [draw(st.integers(0, 5)) for _ in range(3)]  # counts that lie

    def plan(query: bytes) -> bytes:
        header = struct.pack("!HHHHHH", int.from_bytes(query[:2], "big"), flags, 1, *counts)
        return header + question_of(query) + b"".join(b"".join(section) for section in sections)
    return plan, False


def real_answer(query: bytes, kind: str, count: int, with_opt: bool) -> bytes:
    question = dns.message.from_wire(query).question[0]
    response = dns.message.make_response(dns.message.from_wire(query))
    name = question.name
    if kind == "addresses":
        response.answer.append(dns.rrset.from_text(name, 60, "IN", "A", *[f"10.9.{i // 250}.{i % 250 + 1}"
                                                                              for i in range(count)]))
    elif kind == "chain":
        target = dns.name.from_text("target", name)
        response.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", target.to_text()))
        response.answer.append(dns.rrset.from_text(target, 60, "IN", "AAAA", *[f"2001:db8::{i + 1:x}"
                                                                                for i in range(count)]))
    elif kind == "mail":
        response.answer.append(dns.rrset.from_text(name, 60, "IN", "MX", *[f"{i} mx{i}.fuzz.test."
                                                                              for i in range(count)]))
        for i in range(count):
            response.additional.append(dns.rrset.from_text(f"mx{i}.fuzz.test.", 60, "IN", "A", "192.0.2.1"))
        response.authority.append(dns.rrset.from_text("fuzz.test.", 60, "IN", "NS", "ns1.fuzz.test."))
    elif kind == "text":
        response.answer.append(dns.rrset.from_text(name, 60, "IN", "TXT", *[f'"{"t" * (i * 5)}"'
                                                                               for i in range(1, count + 1)]))
    else:  # a denial
        response.set_rcode(dns.rcode.NXDOMAIN if kind == "nxdomain" else dns.rcode.NOERROR)
        response.authority.append(dns.rrset.from_text("fuzz.test.", 60, "IN", "SOA",
                                                      "ns1.fuzz.test. h.fuzz.test. 1 2 3 4 30"))
    if not with_opt:
        response.use_edns(False)
    return response.to_wire(max_size=65535)


@st.composite
def mutated_real_answer(draw):
    kind = draw(st.sampled_from(["addresses", "chain", "mail", "text", "nxdomain", "nodata"]))
    count, with_opt = draw(st.integers(1, 45)), draw(st.booleans())
    mutations = draw(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=3))
    in_header = draw(st.booleans())
    cut, tail = draw(st.integers(0, 3000)), draw(st.binary(max_size=10))

    def plan(query: bytes) -> bytes:
        data = bytearray(real_answer(query, kind, count, with_opt))
        qend = 12 + len(question_of(query))
        for position, value in mutations:  # the header's flags and counts, or anything after the question
            data[2 + position % 10 if in_header else qend + position % max(len(data) - qend, 1)] = value
        return bytes(data[:max(qend, min(cut, len(data)))]) + tail if mutations or tail else bytes(data)
    return plan, not mutations and not tail


@st.composite
def noise(draw):
    tail = draw(st.binary(max_size=300))
    flags, counts = draw(st.integers(0, 0xFFFF)), draw(st.tuples(*[st.integers(0, 3)] * 3))

    def plan(query: bytes) -> bytes:
        return struct.pack("!HHHHHH", int.from_bytes(query[:2], "big"), flags, 1, *counts) + question_of(query) + tail
    return plan, False


client_edns = st.sampled_from([None, (512, False), (1232, True), (4096, False), (4096, True)])


@settings(FUZZ, max_examples=200)
@given(planned=st.one_of(generated_answer(), mutated_real_answer(), noise()), over_tcp=st.booleans(),
       sizes=st.lists(client_edns, min_size=2, max_size=3))
def test_any_upstream_answer_gives_a_well_formed_reply_and_only_checked_ones_are_cached(
        cache, upstream, plans, planned, over_tcp, sizes):
    plan, untouched = planned
    name = f"n{next(serial)}.{'fuzztcp' if over_tcp else 'fuzz'}.test"
    question = dns.name.from_text(name).to_wire() + b"\x00\x01\x00\x01"
    plans.by_question[question] = plan
    replies = []
    for size in sizes:
        query = dns.message.make_query(name.upper(), "A", use_edns=False if size is None else 0,
                                       payload=size[0] if size else 512, want_dnssec=bool(size and size[1]))
        reply = raw_udp(cache.port, query.to_wire(), REPLY_TIMEOUT)
        assert reply is not None, "every query answered in time (SERVFAIL at worst)"
        assert len(reply) <= limit_of(query), "a UDP reply fits the client's size"
        assert reply[:2] == query.to_wire()[:2] and reply[2] & 0x80
        framing(reply)  # a well-formed message, whatever the upstream sent
        replies.append(reply)
    assert not upstream.errors
    sent = plans.sent[question]
    if strict(sent):
        for reply in replies:
            assert parses(reply), "the reply parses with dnspython"
        if not parses_as_answer(sent):
            for reply in replies:
                assert reply[3] & 0x0F == dns.rcode.SERVFAIL, "an answer that does not parse is SERVFAIL"
            assert upstream.asked[question] >= len(sizes), "and is never cached: each query asks upstream again"
    if untouched:  # a real answer as a server sends it: relayed, not refused
        expected = dns.message.from_wire(sent)
        for reply in replies:
            message = dns.message.from_wire(reply)
            assert message.rcode() == expected.rcode()
            assert all(rrset in expected.answer or message.flags & dns.flags.TC for rrset in message.answer)
    assert cache.proc.poll() is None
