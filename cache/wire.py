"""Raw DNS wire helpers (RFC 1035, RFC 6891): what the hit path needs, on bytes, without dnspython.

A query is parsed just enough to answer it: ID, flags, the question exactly as asked, and EDNS (UDP size, DO).
An upstream answer is walked and checked once, when it is stored (`parse_answer`): the OPT record is cut out (it is
per hop), and what every later hit needs is remembered beside the records: the offsets of the TTL fields, so a hit
only writes the remaining TTL into a copy (`render`), and, for an answer that may not fit a client's size, the
places where it may be cut (RFC 2181 section 9), so a truncated reply still carries the records that fit.
"""
from __future__ import annotations

import bisect
import os
import struct
from typing import Final

from .records import MAX_NAME as MAX_NAME  # (querylog reads it here)
from .records import RR_FIXED, check_options, check_rdata, read_name, record_at, records, u16, u32

# Final: mypyc compiles these names into the module as constants (ints inlined), instead of a lookup in the
# module's dict at every use on the hot path.
HEADER: Final = struct.Struct("!HHHHHH")

QR: Final = 0x8000
OPCODE_MASK: Final = 0x7800
AA: Final = 0x0400
TC: Final = 0x0200
RD: Final = 0x0100
RA: Final = 0x0080
AD: Final = 0x0020
CD: Final = 0x0010
RCODE_MASK: Final = 0x000F
NOERROR: Final = 0
FORMERR: Final = 1
SERVFAIL: Final = 2
NXDOMAIN: Final = 3
NOTIMP: Final = 4
REFUSED: Final = 5
BADVERS: Final = 16  # extended rcode, carried partly in the OPT record
TYPE_NS: Final = 2
TYPE_SOA: Final = 6
TYPE_OPT: Final = 41
TYPE_RRSIG: Final = 46
TYPE_IXFR: Final = 251
TYPE_AXFR: Final = 252
TYPE_ANY: Final = 255

PLAIN_UDP_SIZE: Final = 512  # RFC 1035 limit without EDNS
OUR_UDP_SIZE: Final = 1232  # what we advertise (DNS flag day 2020)
DO_BIT: Final = 0x8000  # in the OPT record's TTL field


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


class Query:
    """A client's query, parsed once: what a hit, a miss and the reply need of it.

    This and `Answer` (and store.Entry) are plain classes with `__slots__` and an `__init__` of their own rather than
    dataclasses: mypyc compiles such a class natively, while a dataclass keeps the `__init__` the dataclasses
    module generates, run by the interpreter (one object per parsed query and per miss: 3.1k instructions each
    under callgrind, against a few hundred)."""

    __slots__ = ("cd", "do", "edns", "flags", "id", "key", "qtype", "question", "udp_size")

    def __init__(self, id: int, flags: int, question: bytes, key: bytes, qtype: int, edns: bool, udp_size: int,
                 do: bool, cd: bool) -> None:
        self.id = id
        self.flags = flags
        self.question = question  # qname + qtype + qclass, exactly as asked (0x20 mixed case kept)
        self.key = key  # lowercased question + one byte of DO/CD: the cache key
        self.qtype = qtype
        self.edns = edns
        self.udp_size = udp_size  # the most the client accepts over UDP
        self.do = do
        self.cd = cd

    def __repr__(self) -> str:
        return f"Query(id={self.id}, question={self.question!r}, key={self.key!r})"

    @property
    def qname(self) -> bytes:
        """The lowercased wire name."""
        return self.key[:-5]


# What the cache keeps of an answer, in one bytes object (`Answer.packed`):
#   ANSWER_HEAD                       flags, ancount, nscount, arcount (OPT removed), TTL fields, where the body starts
#   one H per TTL field               its offset in the body
#   cut table (answers over 512 B)    NEEDED: the body length below which a cut drops a record the client needs;
#                                     then per place the body may be cut, CUT: the body length there, records kept
#   body                              the records after the question, as the upstream sent them
ANSWER_HEAD: Final = struct.Struct("!HHHHHH")
RRsetKey = tuple[bytes, int, int, int, int]  # owner (lowercase), type, class, type an RRSIG covers, section
CUT_SIZE: Final = 4  # a cut: body length, records kept (16 bits each)
# Compiled once for the usual record counts: the head and the TTL offsets after it (written once per answer, in one
# pack; read back field by field with u16).
_HEADS: Final = [struct.Struct(f"!6H{count}H") for count in range(33)]


class Answer:
    """An upstream answer without its header's ID, question and OPT: what the cache keeps.

    A full cache holds some 20,000 of these, so the records live in one bytes object, `packed` (see `pack_answer`).
    One object and one bytes per answer, instead of a bytes, a tuple and an int each besides, is most of what a
    cache entry costs.
    """

    __slots__ = ("has_soa", "negative", "packed", "rcode", "ttl")

    def __init__(self, packed: bytes, ttl: int, rcode: int, negative: bool, has_soa: bool) -> None:
        self.packed = packed
        self.ttl = ttl  # seconds this answer may be reused (min TTL; SOA minimum for denials)
        self.rcode = rcode
        self.negative = negative  # NXDOMAIN or NODATA
        self.has_soa = has_soa

    def __repr__(self) -> str:
        return f"Answer(rcode={self.rcode}, ttl={self.ttl}, negative={self.negative}, {len(self.packed)} bytes)"


def pack_answer(flags: int, counts: tuple[int, int, int], ttl_offsets: list[int], body: bytes,
                cut_table: bytes = b"") -> bytes:
    """`Answer.packed`: the head, the TTL fields' offsets in body (each 16 bits: a DNS message is at most 65535
    bytes), the cut table, then body."""
    count = len(ttl_offsets)
    head = _HEADS[count] if count < len(_HEADS) else struct.Struct(f"!6H{count}H")
    start = ANSWER_HEAD.size + 2 * count + len(cut_table)
    return b"".join((head.pack(flags, counts[0], counts[1], counts[2], count, start, *ttl_offsets), cut_table, body))


def _error(data: bytes, rcode: int, reason: str, question: bytes = b"", edns: bool = False) -> BadQuery:
    """An error response built from whatever part of the query could be read."""
    qid, flags = u16(data, 0), u16(data, 2)
    rflags = QR | (flags & (OPCODE_MASK | RD | CD)) | (rcode & RCODE_MASK)
    response = HEADER.pack(qid, rflags, 1 if question else 0, 0, 0, 1 if edns else 0) + question
    if edns:
        response += opt_record(rcode >> 4, False)
    return BadQuery(rcode, reason, response)


def opt_record(extended_rcode: int = 0, do: bool = False) -> bytes:
    return b"\x00" + RR_FIXED.pack(TYPE_OPT, OUR_UDP_SIZE, (extended_rcode << 24) | (DO_BIT if do else 0), 0)


# The OPT records every answer and upstream query carries, made once.
OPT_PLAIN: Final = opt_record(0, False)
OPT_DO: Final = opt_record(0, True)
# An upstream query's header after its ID: RD (and CD), one question, one additional record (our OPT).
_QUERY_FLAGS_AND_COUNTS: Final = HEADER.pack(0, RD, 1, 0, 0, 1)[2:]
_QUERY_FLAGS_AND_COUNTS_CD: Final = HEADER.pack(0, RD | CD, 1, 0, 0, 1)[2:]


def _meta_query_error(data: bytes, qtype: int, question: bytes, edns: bool) -> BadQuery:
    """Queries no cache can answer, as unbound refuses them: zone transfers REFUSED (a transfer is a stream of
    messages from the zone's own servers), the other meta types FORMERR (they name no data: OPT, TSIG and TKEY
    exist per message, MAILA/MAILB are obsolete, 128-248 unassigned)."""
    if qtype in (TYPE_IXFR, TYPE_AXFR):
        return _error(data, REFUSED, "zone transfer", question, edns)
    return _error(data, FORMERR, f"query for meta type {qtype}", question, edns)


def parse_query(data: bytes) -> Query:
    """Read a client's query. Raises Drop (no answer) or BadQuery (answer with its `response`)."""
    if len(data) < 12:
        raise Drop("shorter than a DNS header")
    flags, qdcount = u16(data, 2), u16(data, 4)
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
        if offset - 11 > MAX_NAME:  # the labels so far and the root label
            raise _error(data, FORMERR, "name longer than 255 bytes")
    name_end = offset + 1
    question_end = name_end + 4
    if question_end > end:
        raise _error(data, FORMERR, "question runs past the end")
    question = data[12:question_end]
    qtype = (data[name_end] << 8) | data[name_end + 1]
    edns, udp_size, do = False, PLAIN_UDP_SIZE, False
    ancount, nscount, arcount = u16(data, 6), u16(data, 8), u16(data, 10)
    if ancount or nscount or arcount:
        try:
            opt = _query_opt(data, question_end, ancount, nscount, arcount)
        except ValueError as error:
            raise _error(data, FORMERR, str(error), question) from None
        if opt is not None:
            rclass, ttl = opt
            if (ttl >> 16) & 0xFF:
                raise _error(data, BADVERS, "EDNS version other than 0", question, edns=True)
            edns, udp_size, do = True, max(rclass, PLAIN_UDP_SIZE), bool(ttl & DO_BIT)
    if qtype == TYPE_OPT or 128 <= qtype < TYPE_ANY:
        raise _meta_query_error(data, qtype, question, edns)
    cd = bool(flags & CD)
    key = question.lower() + bytes((do << 1 | cd,))
    return Query(u16(data, 0), flags, question, key, qtype, edns, udp_size, do, cd)


def _query_opt(data: bytes, offset: int, ancount: int, nscount: int, arcount: int) -> tuple[int, int] | None:
    """The class (UDP size) and TTL (extended rcode, version, DO) of the OPT record among a query's records from
    `offset`, or None; ValueError when a record is malformed or an OPT record is out of place (RFC 6891 6.1.1)."""
    size = len(data)
    if arcount == 1 and not ancount and not nscount and data[offset:offset + 3] == b"\x00\x00\x29" \
            and offset + 11 <= size:  # the usual EDNS query: its one record is an OPT at the root
        if offset + 11 + u16(data, offset + 9) <= size:
            return u16(data, offset + 3), u32(data, offset + 5)
    found = None
    for index, (owner, rtype, rclass, ttl, _, _) in enumerate(records(data, offset, ancount + nscount + arcount)):
        if rtype == TYPE_OPT:
            if index < ancount + nscount or found is not None or data[owner] != 0:
                raise ValueError("misplaced, repeated or named OPT record")
            found = rclass, ttl
    return found


def parse_answer(data: bytes, question: bytes) -> Answer:
    """Check an upstream answer to our (lowercased) question and keep what a later hit needs; BadAnswer when the
    answer must not be used: malformed, not ours, truncated, an OPT out of place or an extended error in it."""
    if len(data) < 12:
        raise BadAnswer("shorter than a DNS header")
    flags, qdcount, ancount, nscount, arcount = u16(data, 2), u16(data, 4), u16(data, 6), u16(data, 8), u16(data, 10)
    qend = 12 + len(question)
    if not flags & QR or qdcount != 1 or data[12:qend].lower() != question:
        raise BadAnswer("not an answer to our question")
    if flags & OPCODE_MASK:
        raise BadAnswer("opcode other than QUERY")
    if flags & TC:  # over TCP (UDP answers with TC were asked again over TCP): a part we cannot complete
        raise BadAnswer("truncated answer")
    rcode = flags & RCODE_MASK
    ttl_offsets: list[int] = []
    min_ttl = 0x7FFFFFFF
    soa_ttl = -1
    kept = 0  # records kept: everything before the OPT record (what follows it is dropped: see below)
    body_end = qend
    opt_seen = False
    # Where the body may be cut (RFC 2181 section 9): after any answer record (the client is told TC), and in the
    # authority and additional sections only between RRsets, so a reply without TC never holds part of an RRset.
    cuts: list[int] = []  # pairs, flat: body length there, records kept
    needed = 0  # body length up to the last record a client needs: the answers, and the authority's proofs
    names: dict[bytes, bytes] = {}  # owner as written -> as compared (uncompressed, lowercase)
    previous: RRsetKey | None = None
    began: dict[RRsetKey, int] = {}  # RRset -> the number of cuts when it began
    qclass = (data[qend - 2] << 8) | data[qend - 1]
    targets: list[int] = []  # where the names' compression pointers lead
    # Only an answer that may not fit 512 bytes with our OPT needs its cut table (below), and the RRset bookkeeping
    # that builds it: most answers are far shorter, and skip it.
    may_cut = len(data) + len(OPT_PLAIN) > PLAIN_UDP_SIZE
    end = qend
    try:
        for index in range(ancount + nscount + arcount):
            start, rtype, rclass, ttl, rdata, end = record_at(data, end, targets)
            section = 0 if index < ancount else 1 if index < ancount + nscount else 2
            if rtype == TYPE_OPT:
                if section != 2 or opt_seen or data[start] != 0:
                    raise ValueError("OPT record out of place")
                if ttl >> 24:
                    raise ValueError(f"extended rcode {(ttl >> 20) & 0xFF0 | rcode}")
                check_options(data, rdata, end)
                opt_seen = True
                continue
            if 128 <= rtype <= TYPE_ANY:  # TKEY, TSIG, the query types: none is data (OPT is above)
                raise ValueError(f"record of meta type {rtype}")
            if rclass != qclass:
                raise ValueError(f"record of class {rclass} in an answer to class {qclass}")
            check_rdata(data, rtype, rclass, rdata, end, targets)
            if opt_seen:
                continue  # kept would be pointers into bytes that moved; additional records may be left out
            kept += 1
            body_end = end
            ttl_offsets.append(rdata - 6 - qend)
            if ttl & 0x80000000:
                ttl = 0  # RFC 2181 section 8: a TTL with the top bit set counts as zero
            if ttl < min_ttl:
                min_ttl = ttl
            if section == 0:
                cuts.append(end - qend)
                cuts.append(kept)
                needed = end - qend
                continue
            if rtype == TYPE_SOA and section == 1:
                soa_ttl = min(ttl, u32(data, end - 4))
            if not may_cut:
                continue
            raw = data[start:rdata - 10]
            owner = names.get(raw)
            if owner is None:
                owner = names[raw] = read_name(data, start)
            covered = (data[rdata] << 8) | data[rdata + 1] if rtype == TYPE_RRSIG else 0
            rrset = (owner, rtype, rclass, covered, section)
            if rrset != previous:
                if not cuts or cuts[-2] != start - qend:
                    cuts += (start - qend, kept - 1)
                if rrset in began:  # the RRset again after another one: no cut may leave its first part alone
                    del cuts[began[rrset]:]
                else:
                    began[rrset] = len(cuts)
                previous = rrset
            # NS in the authority section is optional (RFC 2181 9); denial and wildcard proofs are not (RFC 4035
            # 3.1.3): a reply cut short of them tells the client TC, as one cut short of an answer does.
            if section == 1 and rtype != TYPE_NS and covered != TYPE_NS:
                needed = end - qend
        # Every hit rewrites the TTL fields: a name made of their bytes would change under the client's eyes. What a
        # pointer leads to (in the question too) is read up to the name's end or its next pointer: none of it may be
        # a TTL's byte.
        for target in targets:
            if target == HEADER.size:
                continue  # the question's name, the usual target: plain labels that end inside the question
            stop = target
            while data[stop] and data[stop] & 0xC0 != 0xC0:
                stop += data[stop] + 1
            if data[stop]:
                stop += 1  # the pointer's second byte
            field = bisect.bisect_right(ttl_offsets, stop - qend) - 1
            if field >= 0 and ttl_offsets[field] + 4 > target - qend:
                raise ValueError("compression pointer into a TTL")
    except ValueError as error:
        raise BadAnswer(str(error)) from None
    body = data[qend:body_end]
    # An answer that fits 512 bytes with our OPT fits every client: no cut table needed.
    cut_table = b""
    if qend + len(body) + len(OPT_PLAIN) > PLAIN_UDP_SIZE:  # (never without may_cut: body is part of data)
        cut_table = struct.pack(f"!{1 + len(cuts)}H", needed, *cuts)  # NEEDED, then a CUT per pair
    negative = rcode == NXDOMAIN or (rcode == NOERROR and ancount == 0)
    ttl = soa_ttl if negative else (min_ttl if ttl_offsets else 0)
    return Answer(
        packed=pack_answer(flags, (ancount, nscount, kept - ancount - nscount), ttl_offsets, body, cut_table),
        ttl=max(ttl, 0),
        rcode=rcode,
        negative=negative,
        has_soa=soa_ttl >= 0,
    )


def render(query: Query, answer: Answer, ttl: int, limit: int) -> bytes:
    """The answer for this query: its ID and question as asked, TTLs set to `ttl`, OPT if asked, and no bigger
    than `limit`: cut where the answer allows it, with TC when what the client needs did not fit."""
    packed = answer.packed
    aflags, an, ns, ar = u16(packed, 0), u16(packed, 2), u16(packed, 4), u16(packed, 6)
    ttl_fields, start = u16(packed, 8), u16(packed, 10)
    if ttl_fields:  # the body with `ttl` in every TTL field (their offsets ascend): a join of the bytes between
        field = ttl.to_bytes(4, "big")
        parts = []
        at = start
        for index in range(ANSWER_HEAD.size, ANSWER_HEAD.size + 2 * ttl_fields, 2):
            offset = start + u16(packed, index)
            parts.append(packed[at:offset])
            parts.append(field)
            at = offset + 4
        parts.append(packed[at:])
        body = b"".join(parts)
    else:
        body = packed[start:]
    qflags = query.flags
    # A cache is not authoritative; AD only for clients that can see it (RFC 6840 5.8); RD/CD echo the query.
    flags = QR | RA | (qflags & (RD | CD)) | (aflags & RCODE_MASK)
    if qflags & AD or query.do:
        flags |= aflags & AD
    opt = (OPT_DO if query.do else OPT_PLAIN) if query.edns else b""
    size = 12 + len(query.question) + len(body) + len(opt)
    if size > limit:
        table = ANSWER_HEAD.size + 2 * ttl_fields
        length, kept = _cut(packed, table, start, limit - size + len(body))
        # (An answer without a cut table fits 512 bytes with our OPT: the first test is only a safeguard.)
        if start == table or length < u16(packed, table):
            flags |= TC
        body = body[:length]
        an = min(an, kept)
        ns = min(ns, kept - an)
        ar = kept - an - ns
    return b"".join((HEADER.pack(query.id, flags, 1, an, ns, ar + 1 if opt else ar), query.question, body, opt))


def _cut(packed: bytes, table: int, end: int, room: int) -> tuple[int, int]:
    """The longest cut of the body that fits `room` bytes: (body length, records kept)."""
    for at in range(end - CUT_SIZE, table, -CUT_SIZE):
        length = u16(packed, at)
        if length <= room:
            return length, u16(packed, at + 2)
    return 0, 0


def error_response(query: Query, rcode: int) -> bytes:
    """SERVFAIL/REFUSED/... for a query we could parse."""
    flags = QR | RA | (query.flags & (RD | CD)) | rcode
    opt = (OPT_DO if query.do else OPT_PLAIN) if query.edns else b""
    return HEADER.pack(query.id, flags, 1, 0, 0, 1 if opt else 0) + query.question + opt


_RANDOM_IDS: list[int] = []
RANDOM_ID_BLOCK = 1024  # IDs read from the kernel at once


def random_id() -> int:
    """A fresh DNS message ID from the kernel's random source (RFC 5452: unpredictable IDs defeat spoofing). Read a
    block at a time: one getrandom() system call per upstream query was a quarter of a miss's system calls."""
    if not _RANDOM_IDS:
        _RANDOM_IDS.extend(memoryview(os.urandom(2 * RANDOM_ID_BLOCK)).cast("H"))
    return _RANDOM_IDS.pop()


def build_query(qid: int, question: bytes, do: bool, cd: bool) -> bytes:
    """An upstream query: RD set, EDNS with our UDP size and the client's DO bit."""
    return b"".join((qid.to_bytes(2, "big"), _QUERY_FLAGS_AND_COUNTS_CD if cd else _QUERY_FLAGS_AND_COUNTS, question,
                     OPT_DO if do else OPT_PLAIN))


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
