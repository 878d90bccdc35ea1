"""What a reply of the cache must be, judged by dnspython and plain wire reading rather than by the cache's own code:
shared by the fuzz tests (tests/cache/test_fuzz.py, against the running cache) and the atheris targets (fuzz/, in
process), so both hold the cache to the same rules."""
from __future__ import annotations

import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.wire

from cache.records import RDATA_LAYOUTS


def framing(data: bytes) -> list[tuple[int, int, int]]:
    """(section, type, class) of every record, read with dnspython's name and wire primitives only (so rdata of any
    type passes); raises dns.exception.DNSException when the message itself is malformed. One OPT at most, in the
    additional section, owned by the root."""
    parser = dns.wire.Parser(data)
    _, _, qdcount, *counts = parser.get_struct("!HHHHHH")
    for _ in range(qdcount):
        parser.get_name(decompress=True)
        parser.get_struct("!HH")
    found: list[tuple[int, int, int]] = []
    for section, count in enumerate(counts):
        for _ in range(count):
            owner = parser.get_name(decompress=True)
            rtype, rclass, _, rdlength = parser.get_struct("!HHIH")
            parser.get_bytes(rdlength)
            if rtype == dns.rdatatype.OPT and (section != 2 or owner != dns.name.root
                                               or any(t == dns.rdatatype.OPT for _, t, _ in found)):
                raise dns.exception.FormError("OPT out of place")
            found.append((section, rtype, rclass))
    return found


def checked_or_opaque(rtype: int) -> bool:
    """A type whose rdata the cache checks, or one dnspython reads as opaque bytes."""
    if rtype in RDATA_LAYOUTS or rtype == dns.rdatatype.OPT:
        return True
    return dns.rdata.get_rdata_class(dns.rdataclass.IN, rtype) is dns.rdata.GenericRdata


def strict(data: bytes) -> bool:
    """Whether every reply built from this upstream answer must parse with dnspython: the answer holds only types the
    cache checks or dnspython reads as opaque, or it does not even frame (then nothing of it may reach a client).
    The rdata of other types is relayed as received (RFC 3597), so only the reply's framing can be required."""
    try:
        return all(checked_or_opaque(rtype) for _, rtype, _ in framing(data))
    except dns.exception.DNSException:
        return True


def parses(data: bytes, ignore_trailing: bool = False) -> bool:
    try:
        dns.message.from_wire(data, ignore_trailing=ignore_trailing)
        return True
    except Exception:  # dnspython's errors are many (FormError, BadLabelType, ValueError, ...)
        return False


EXPERIMENTAL_OPTION = 65001  # RFC 6891 9: reserved for local or experimental use, read by dnspython as opaque bytes


def options_opaque(data: bytes) -> bytes:
    """The message with the codes of its OPT record's options made experimental ones, their lengths kept: the
    options are per hop, the cache drops them unread and so checks only that they fill the record (RFC 6891 6.1.2);
    what they hold (a cookie of the wrong size, an unknown address family) is no rule of ours. Unchanged when the
    message does not frame."""
    out = bytearray(data)
    try:
        parser = dns.wire.Parser(data)
        _, _, qdcount, *counts = parser.get_struct("!HHHHHH")
        for _ in range(qdcount):
            parser.get_name(decompress=True)
            parser.get_struct("!HH")
        for _ in range(sum(counts)):
            parser.get_name(decompress=True)
            rtype, _, _, rdlength = parser.get_struct("!HHIH")
            start = parser.current
            parser.get_bytes(rdlength)
            at = start
            while rtype == dns.rdatatype.OPT and at + 4 <= start + rdlength:
                out[at:at + 2] = EXPERIMENTAL_OPTION.to_bytes(2, "big")
                at += 4 + int.from_bytes(data[at + 2:at + 4], "big")
    except dns.exception.DNSException:
        return data
    return bytes(out)


def parses_as_answer(data: bytes) -> bool:
    """Whether dnspython reads an upstream answer, trailing bytes and the contents of its EDNS options aside."""
    return parses(options_opaque(data), ignore_trailing=True)


def limit_of(query: dns.message.Message) -> int:
    """The most a UDP reply to this query may hold: its EDNS size, 512 without EDNS."""
    return max(query.payload, 512) if query.edns >= 0 else 512


def question_as_asked(query: bytes, reply: bytes) -> bool:
    """A reply that carries a question carries the query's, byte for byte (0x20 mixed case kept)."""
    message = dns.message.from_wire(reply)
    if not message.question:
        return True
    asked = reply[12:12 + len(message.question[0].name.to_wire() or b"") + 4]
    return query[12:12 + len(asked)] == asked


def records_within(reply: dns.message.Message, sent: dns.message.Message) -> list[str]:
    """The records of `reply` that `sent` does not hold in the same section (TTLs aside): none, for a reply made
    from that answer, whole or cut short."""
    extra = []
    for name, got, have in (("answer", reply.answer, sent.answer), ("authority", reply.authority, sent.authority),
                            ("additional", reply.additional, sent.additional)):
        for rrset in got:
            for rdata in rrset:
                if not any(rdata in theirs for theirs in have if theirs.match(rrset.name, rrset.rdclass, rrset.rdtype,
                                                                              rrset.covers)):
                    extra.append(f"{name}: {rrset.name} {rdata.to_text()}")
    return extra
