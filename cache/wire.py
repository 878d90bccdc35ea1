"""Raw DNS wire helpers (RFC 1035, RFC 6891): what the hit path needs, on bytes, without dnspython.

A query is parsed just enough to answer it: ID, flags, the question exactly as asked, and EDNS (UDP size, DO).
An upstream answer is walked once when it is stored (`parse_answer`): the OPT record is cut out (it is per hop) and
the offsets of every TTL field are remembered, so a hit only writes the remaining TTL into a copy (`render`).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

HEADER = struct.Struct("!HHHHHH")
RR_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength

QR, OPCODE_MASK, AA, TC, RD, RA, AD, CD = 0x8000, 0x7800, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010
RCODE_MASK = 0x000F
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16  # extended rcode, carried partly in the OPT record
TYPE_SOA, TYPE_OPT = 6, 41

MAX_NAME = 255
MAX_POINTER_JUMPS = 64  # a name has at most 127 labels; 64 jumps is generous and stops every pointer loop
PLAIN_UDP_SIZE = 512  # RFC 1035 limit without EDNS
OUR_UDP_SIZE = 1232  # what we advertise (DNS flag day 2020)
DO_BIT = 0x8000  # in the OPT record's TTL field


class Drop(Exception):
    """The packet gets no answer at all (too short to echo an ID, or a response sent to us)."""


class BadQuery(Exception):
    """The packet gets an error answer: `response` is ready to send."""

    def __init__(self, rcode: int, reason: str, response: bytes) -> None:
        super().__init__(reason)
        self.rcode = rcode
        self.response = response


class BadAnswer(Exception):
    """An upstream answer that cannot be used (malformed, or not for our question)."""


@dataclass(slots=True)
class Query:
    id: int
    flags: int
    question: bytes  # qname + qtype + qclass, exactly as asked (0x20 mixed case kept)
    key: bytes  # lowercased question + one byte of DO/CD: the cache key
    qtype: int
    edns: bool
    udp_size: int  # the most the client accepts over UDP
    do: bool
    cd: bool

    @property
    def qname(self) -> bytes:
        """The lowercased wire name."""
        return self.key[:-5]


ANSWER_HEAD = struct.Struct("!HHHHH")  # flags, ancount, nscount, arcount (OPT removed), number of TTL fields
_TTL_OFFSETS = [struct.Struct(f"!{count}H") for count in range(33)]  # compiled once for the usual record counts


@dataclass(slots=True, eq=False)
class Answer:
    """An upstream answer without its header's ID, question and OPT: what the cache keeps.

    A full cache holds some 20,000 of these, so the records live in one bytes object, `packed`: the flags and
    counts, the offsets of the TTL fields, then the records after the question (see `pack_answer`). One object and
    one bytes per answer, instead of a bytes, a tuple and an int each besides, is most of what a cache entry costs.
    """

    packed: bytes
    ttl: int  # seconds this answer may be reused (min TTL; SOA minimum for denials)
    rcode: int
    negative: bool  # NXDOMAIN or NODATA
    has_soa: bool


def pack_answer(flags: int, counts: tuple[int, int, int], ttl_offsets: list[int], body: bytes) -> bytes:
    """`Answer.packed`: flags, counts and the number of TTL fields, their offsets in body (each 16 bits: a DNS
    message is at most 65535 bytes), then body."""
    return b"".join((ANSWER_HEAD.pack(flags, *counts, len(ttl_offsets)),
                     _offsets_layout(len(ttl_offsets)).pack(*ttl_offsets), body))


def _offsets_layout(count: int) -> struct.Struct:
    return _TTL_OFFSETS[count] if count < len(_TTL_OFFSETS) else struct.Struct(f"!{count}H")


def _ttl_offsets(packed: bytes, count: int) -> tuple[int, ...]:
    return _offsets_layout(count).unpack_from(packed, ANSWER_HEAD.size)


def _error(data: bytes, rcode: int, reason: str, question: bytes = b"", edns: bool = False) -> BadQuery:
    """An error response built from whatever part of the query could be read."""
    qid, flags = struct.unpack_from("!HH", data)
    rflags = QR | (flags & (OPCODE_MASK | RD | CD)) | (rcode & RCODE_MASK)
    response = HEADER.pack(qid, rflags, 1 if question else 0, 0, 0, 1 if edns else 0) + question
    if edns:
        response += opt_record(rcode >> 4, False)
    return BadQuery(rcode, reason, response)


def opt_record(extended_rcode: int = 0, do: bool = False) -> bytes:
    return b"\x00" + RR_FIXED.pack(TYPE_OPT, OUR_UDP_SIZE, (extended_rcode << 24) | (DO_BIT if do else 0), 0)


def skip_name(data: bytes, offset: int) -> int:
    """Offset just after the (possibly compressed) name at `offset`; pointer loops and overruns raise ValueError."""
    end = len(data)
    jumps = 0
    after = -1
    total = 0
    while True:
        if offset >= end:
            raise ValueError("name runs past the end of the message")
        length = data[offset]
        if length == 0:
            return offset + 1 if after < 0 else after
        if length & 0xC0 == 0xC0:
            if offset + 1 >= end:
                raise ValueError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | data[offset + 1]
            if after < 0:
                after = offset + 2
            jumps += 1
            if jumps > MAX_POINTER_JUMPS or target >= offset:
                raise ValueError("compression pointer loop")  # pointers must point backwards
            offset = target
            continue
        if length & 0xC0:
            raise ValueError("unknown label type")
        total += length + 1
        if total > MAX_NAME:
            raise ValueError("name longer than 255 bytes")
        offset += length + 1


def parse_query(data: bytes) -> Query:
    """Read a client's query. Raises Drop (no answer) or BadQuery (answer with its `response`)."""
    if len(data) < 12:
        raise Drop("shorter than a DNS header")
    qid, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    if flags & QR:
        raise Drop("a response sent to us")
    if flags & OPCODE_MASK:
        raise _error(data, NOTIMP, "opcode other than QUERY")
    if qdcount != 1:
        raise _error(data, FORMERR, f"{qdcount} questions (exactly one is answered)")
    # The question: plain labels only. A pointer could only point into the header: not a name, so FORMERR.
    offset, end = 12, len(data)
    while True:
        if offset >= end:
            raise _error(data, FORMERR, "question runs past the end")
        length = data[offset]
        if length == 0:
            break
        if length & 0xC0:
            raise _error(data, FORMERR, "compressed or unknown label in the question")
        offset += length + 1
        if offset - 12 > MAX_NAME:
            raise _error(data, FORMERR, "name longer than 255 bytes")
    name_end = offset + 1
    question_end = name_end + 4
    if question_end > end:
        raise _error(data, FORMERR, "question runs past the end")
    question = data[12:question_end]
    qtype = (data[name_end] << 8) | data[name_end + 1]
    edns, udp_size, do = False, PLAIN_UDP_SIZE, False
    offset = question_end
    try:
        for index in range(ancount + nscount + arcount):
            owner = offset
            offset = skip_name(data, offset)
            rtype, rclass, ttl, rdlength = RR_FIXED.unpack_from(data, offset)
            offset += 10 + rdlength
            if offset > end:
                raise ValueError("record runs past the end")
            if rtype == TYPE_OPT:
                if index < ancount + nscount or edns or data[owner] != 0:
                    raise ValueError("misplaced, repeated or named OPT record")
                edns, udp_size, do = True, max(rclass, PLAIN_UDP_SIZE), bool(ttl & DO_BIT)
                if (ttl >> 16) & 0xFF:
                    raise _error(data, BADVERS, "EDNS version other than 0", question, edns=True)
    except (ValueError, struct.error) as error:
        raise _error(data, FORMERR, str(error) or "truncated record", question) from None
    cd = bool(flags & CD)
    key = question.lower() + bytes((do << 1 | cd,))
    return Query(qid, flags, question, key, qtype, edns, udp_size, do, cd)


def parse_answer(data: bytes, question: bytes) -> Answer:
    """Walk an upstream answer to our (lowercased) question once, keeping what a later hit needs."""
    if len(data) < 12:
        raise BadAnswer("shorter than a DNS header")
    _, flags, qdcount, ancount, nscount, arcount = HEADER.unpack_from(data)
    qend = 12 + len(question)
    if not flags & QR or qdcount != 1 or data[12:qend].lower() != question:
        raise BadAnswer("not an answer to our question")
    rcode = flags & RCODE_MASK
    offsets: list[int] = []
    min_ttl = 0x7FFFFFFF
    soa_ttl = -1
    cut = (0, 0)  # the OPT record's span, removed from the stored body
    offset = qend
    try:
        for index in range(ancount + nscount + arcount):
            start = offset
            offset = skip_name(data, offset)
            rtype, _, ttl, rdlength = RR_FIXED.unpack_from(data, offset)
            ttl_at = offset + 4
            offset += 10 + rdlength
            if offset > len(data):
                raise BadAnswer("record runs past the end")
            if rtype == TYPE_OPT:
                cut = (start, offset)
                continue
            if ttl & 0x80000000:
                ttl = 0  # RFC 2181 section 8: a TTL with the top bit set counts as zero
            offsets.append(ttl_at)
            min_ttl = min(min_ttl, ttl)
            if rtype == TYPE_SOA and ancount <= index < ancount + nscount and rdlength >= 20:
                (minimum,) = struct.unpack_from("!I", data, offset - 4)
                soa_ttl = min(ttl, minimum)
    except (ValueError, struct.error) as error:
        raise BadAnswer(str(error) or "truncated record") from None
    negative = rcode == NXDOMAIN or (rcode == NOERROR and ancount == 0)
    if cut != (0, 0):
        arcount -= 1
        cut_len = cut[1] - cut[0]
        body = data[qend:cut[0]] + data[cut[1]:offset]
        offsets = [o if o < cut[0] else o - cut_len for o in offsets]
    else:
        body = data[qend:offset]
    ttl = soa_ttl if negative else (min_ttl if offsets else 0)
    return Answer(
        packed=pack_answer(flags, (ancount, nscount, arcount), [o - qend for o in offsets], body),
        ttl=max(ttl, 0),
        rcode=rcode,
        negative=negative,
        has_soa=soa_ttl >= 0,
    )


def render(query: Query, answer: Answer, ttl: int, limit: int) -> bytes:
    """The answer for this query: its ID and question as asked, TTLs set to `ttl`, OPT if asked, TC if too big."""
    packed = answer.packed
    aflags, an, ns, ar, ttl_fields = ANSWER_HEAD.unpack_from(packed)
    start = ANSWER_HEAD.size + 2 * ttl_fields
    body: bytes | bytearray = packed[start:]
    if ttl_fields:
        buffer = bytearray(body)
        ttl_bytes = ttl.to_bytes(4, "big")
        for at in _ttl_offsets(packed, ttl_fields):
            buffer[at:at + 4] = ttl_bytes
        body = buffer
    qflags = query.flags
    # A cache is not authoritative; AD only for clients that can see it (RFC 6840 5.8); RD/CD echo the query.
    flags = QR | RA | (qflags & (RD | CD)) | (aflags & RCODE_MASK)
    if qflags & AD or query.do:
        flags |= aflags & AD
    opt = opt_record(0, query.do) if query.edns else b""
    size = 12 + len(query.question) + len(body) + len(opt)
    if size > limit:
        return HEADER.pack(query.id, flags | TC, 1, 0, 0, 1 if opt else 0) + query.question + opt
    return b"".join((HEADER.pack(query.id, flags, 1, an, ns, ar + 1 if opt else ar), query.question, body, opt))


def error_response(query: Query, rcode: int) -> bytes:
    """SERVFAIL/REFUSED/... for a query we could parse."""
    flags = QR | RA | (query.flags & (RD | CD)) | rcode
    opt = opt_record(0, query.do) if query.edns else b""
    return HEADER.pack(query.id, flags, 1, 0, 0, 1 if opt else 0) + query.question + opt


def random_id() -> int:
    """A fresh DNS message ID from the kernel's random source (RFC 5452: unpredictable IDs defeat spoofing)."""
    return int.from_bytes(os.urandom(2), "big")


def build_query(qid: int, question: bytes, do: bool, cd: bool) -> bytes:
    """An upstream query: RD set, EDNS with our UDP size and the client's DO bit."""
    flags = RD | (CD if cd else 0)
    return HEADER.pack(qid, flags, 1, 0, 0, 1) + question + opt_record(0, do)


def encode_name(name: str) -> bytes:
    """'a.b.' or 'a.b' to wire format (lowercased); '.' is the root."""
    labels = [label for label in name.strip().rstrip(".").lower().split(".") if label]
    wire = b"".join(bytes((len(label),)) + label.encode("ascii") for label in labels) + b"\x00"
    if len(wire) > MAX_NAME or any(len(label) > 63 for label in labels):
        raise ValueError(f"not a valid DNS name: {name!r}")
    return wire


def decode_name(wire: bytes) -> str:
    """Uncompressed wire name to 'a.b.' text (for logs and errors)."""
    labels, offset = [], 0
    while offset < len(wire) and wire[offset]:
        length = wire[offset]
        labels.append(wire[offset + 1:offset + 1 + length].decode("ascii", "backslashreplace"))
        offset += length + 1
    return ".".join(labels) + "."
