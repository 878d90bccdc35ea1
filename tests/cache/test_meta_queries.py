"""Queries the cache refuses before asking anyone, as unbound does: zone transfers get REFUSED (a transfer is a
stream of messages from the zone's own servers, nothing a cache holds), the other meta types FORMERR (OPT, TSIG
and TKEY exist per message, MAILA/MAILB are obsolete, 128-248 unassigned). A name over 255 bytes, or a record
whose name points into the header, is malformed: FORMERR. ANY is a question like others and is forwarded.
"""
from __future__ import annotations

import socket
import struct

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from tests.cache.conftest import Cache, raw_udp
from tests.cache.fakeupstream import FakeUpstream


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def cache(tmp_path_factory, upstream):
    process = Cache(tmp_path_factory.mktemp("meta"), "--kube-dns", f"127.0.0.1:{upstream.port}",
                    "--forward", f"meta.test=udp://127.0.0.1:{upstream.port}")
    try:
        yield process
    finally:
        process.stop()


def question(name: str, qtype: int) -> bytes:
    return dns.name.from_text(name).to_wire() + struct.pack("!HH", qtype, 1)


def asked(upstream: FakeUpstream, name: str, qtype: int) -> int:
    return upstream.asked[question(name.lower(), qtype)]


def tcp_exchange(port: int, query: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(len(query).to_bytes(2, "big") + query)
        length = int.from_bytes(sock.recv(2), "big")
        data = b""
        while len(data) < length:
            data += sock.recv(length - len(data))
        return data


@pytest.mark.parametrize("qtype, rcode", [
    (41, dns.rcode.FORMERR),  # OPT
    (249, dns.rcode.FORMERR),  # TKEY
    (250, dns.rcode.FORMERR),  # TSIG
    (253, dns.rcode.FORMERR),  # MAILB
    (254, dns.rcode.FORMERR),  # MAILA
    (128, dns.rcode.FORMERR),
    (248, dns.rcode.FORMERR),
    (251, dns.rcode.REFUSED),  # IXFR
    (252, dns.rcode.REFUSED),  # AXFR
])
@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("edns", [False, True])
def test_meta_type_queries_are_answered_without_asking_upstream(cache, upstream, qtype, rcode, proto, edns):
    name = f"Meta-{qtype}-{proto}.meta.test"
    query = dns.message.make_query(name, dns.rdatatype.A, use_edns=0 if edns else False)
    query.question[0].rdtype = qtype
    data = query.to_wire()
    reply_bytes = raw_udp(cache.port, data, timeout=3) if proto == "udp" else tcp_exchange(cache.port, data)
    assert reply_bytes is not None
    reply = dns.message.from_wire(reply_bytes)
    assert reply.id == query.id and reply.rcode() == rcode
    assert reply.question[0].name.labels == query.question[0].name.labels and reply.question[0].rdtype == qtype
    assert reply.edns == (0 if edns else -1)
    assert asked(upstream, name, qtype) == 0


def test_any_is_forwarded(cache, upstream):
    reply = cache.udp(dns.message.make_query("any.meta.test", "ANY"))
    assert reply.rcode() == dns.rcode.NXDOMAIN  # the upstream's answer
    assert asked(upstream, "any.meta.test", 255) == 1


def long_name(length: int) -> str:
    """A name under meta.test whose wire form is exactly `length` bytes."""
    suffix = len(dns.name.from_text("meta.test").to_wire())
    labels, left = [], length - suffix
    while left > 0:
        size = min(63, left - 1)
        labels.append("a" * size)
        left -= size + 1
    return ".".join([*labels, "meta.test"])


def test_a_name_of_255_bytes_is_asked_one_of_256_is_formerr(cache, upstream):
    fits = long_name(255)
    assert len(dns.name.from_text(fits).to_wire()) == 255
    assert cache.udp(dns.message.make_query(fits, "A")).rcode() == dns.rcode.NXDOMAIN
    assert asked(upstream, fits, 1) == 1
    three_labels = b"".join(bytes((63,)) + b"b" * 63 for _ in range(3))
    for last in (62, 63):  # 3 x 64 + 1 + 62 + 1 = 256 bytes, and 257
        wire_name = three_labels + bytes((last,)) + b"b" * last + b"\x00"
        assert len(wire_name) == 194 + last
        data = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + wire_name + struct.pack("!HH", 1, 1)
        reply = raw_udp(cache.port, data, timeout=3)
        assert reply is not None and reply[:2] == b"\x42\x42" and reply[3] & 0x0F == dns.rcode.FORMERR


def test_a_record_named_by_a_pointer_into_the_header_is_formerr(cache, upstream):
    query = dns.message.make_query("pointer.meta.test", "A").to_wire()
    header = bytearray(query[:12])
    header[11] = 1  # ARCOUNT 1
    record = b"\xc0\x02" + struct.pack("!HHIH", 1, 1, 0, 4) + b"\x0a\x00\x00\x01"  # owner: bytes 2.. of the header
    reply = raw_udp(cache.port, bytes(header) + query[12:] + record, timeout=3)
    assert reply is not None and reply[3] & 0x0F == dns.rcode.FORMERR
    assert asked(upstream, "pointer.meta.test", 1) == 0
