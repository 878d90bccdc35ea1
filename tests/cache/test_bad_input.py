"""Bad packets get FORMERR, NOTIMP or no answer, as the RFCs say; the cache never crashes and keeps answering."""
from __future__ import annotations

import socket
import struct

import dns.message
import dns.rcode
import pytest

from tests.cache.conftest import Cache, raw_udp

QUESTION = b"\x03web\x07default\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01"


def header(qid=0x1234, flags=0x0100, qd=1, an=0, ns=0, ar=0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


def rcode_of(reply: bytes) -> int:
    return struct.unpack("!H", reply[2:4])[0] & 0xF


def still_answers(cache) -> None:
    response = cache.udp(dns.message.make_query("web.default.svc.cluster.local", "A"))
    assert response.rcode() == dns.rcode.NOERROR and response.answer


@pytest.mark.parametrize("payload, rcode", [
    (header() + b"\x03web\x07def", dns.rcode.FORMERR),  # question cut short
    (header() + b"\x05\xc0\x0c", dns.rcode.FORMERR),  # label runs past the end
    (header() + b"\xc0\x0c\x00\x01\x00\x01", dns.rcode.FORMERR),  # compression pointer to itself (a loop)
    (header(qd=2) + QUESTION * 2, dns.rcode.FORMERR),  # several questions
    (header(qd=0), dns.rcode.FORMERR),  # no question
    (header(ar=1) + QUESTION, dns.rcode.FORMERR),  # additional record announced, absent
    (header(ar=1) + QUESTION + b"\x00\x00\x29\x10\x00\x00\x00", dns.rcode.FORMERR),  # OPT cut short
    (header(ar=2) + QUESTION + (b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00") * 2, dns.rcode.FORMERR),  # 2 OPT
    (header(flags=0x2000) + QUESTION, dns.rcode.NOTIMP),  # opcode NOTIFY... (4 << 11) is 0x2000
    (header(flags=0x1000) + QUESTION, dns.rcode.NOTIMP),  # opcode STATUS
    (header() + b"\x40abc\x00\x00\x01\x00\x01", dns.rcode.FORMERR),  # extended label type
    (header() + b"\x3f" + b"a" * 63 + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01", dns.rcode.FORMERR),
])
def test_malformed_queries_get_an_error_with_their_id(cache, payload, rcode):
    reply = raw_udp(cache.port, payload, timeout=3)
    assert reply is not None, "no answer"
    assert reply[:2] == payload[:2]  # the query's ID
    assert struct.unpack("!H", reply[2:4])[0] & 0x8000  # QR
    assert rcode_of(reply) == rcode
    still_answers(cache)


def test_edns_version_1_gets_badvers(cache):
    opt = b"\x00\x00\x29\x04\xd0\x00\x01\x00\x00\x00\x00"  # version 1
    reply = dns.message.from_wire(raw_udp(cache.port, header(ar=1) + QUESTION + opt, timeout=3))
    assert reply.rcode() == dns.rcode.BADVERS


@pytest.mark.parametrize("payload", [
    b"",
    b"\x12",
    b"\x12\x34\x01\x00\x00",  # shorter than a header
    header(flags=0x8180) + QUESTION,  # a response (QR set) sent to the cache: answering it could start a loop
    bytes(range(256)) * 20,  # 5 KiB of garbage
    b"\xff" * 65000,  # oversized
])
def test_packets_that_get_no_answer(cache, payload):
    if payload:
        assert raw_udp(cache.port, payload, timeout=0.5) is None
    else:
        raw_udp(cache.port, payload, timeout=0.2)
    still_answers(cache)
    assert cache.proc.poll() is None


def test_tcp_stalls_and_garbage(tmp_path, kube_dns):
    """(The connection limits have their own tests in test_tcp_clients.py.)"""
    cache = Cache(tmp_path, "--tcp-idle-timeout", "1", kube_dns=kube_dns)
    try:
        # A length and nothing more: closed after the idle timeout, not held open.
        stalled = socket.create_connection(("127.0.0.1", cache.port), timeout=10)
        stalled.sendall(b"\x00\x40")
        assert stalled.recv(10) == b""  # EOF from the cache
        stalled.close()
        # Garbage over TCP: FORMERR for a readable header, and the connection keeps working.
        with socket.create_connection(("127.0.0.1", cache.port), timeout=10) as sock:
            bad = header(qd=2) + QUESTION
            sock.sendall(struct.pack("!H", len(bad)) + bad)
            assert rcode_of(sock.recv(struct.unpack("!H", sock.recv(2))[0])) == dns.rcode.FORMERR
            query = dns.message.make_query("web.default.svc.cluster.local", "A").to_wire()
            sock.sendall(struct.pack("!H", len(query)) + query)
            assert dns.message.from_wire(sock.recv(struct.unpack("!H", sock.recv(2))[0])).answer
        still_answers(cache)
    finally:
        assert cache.stop() == 0
