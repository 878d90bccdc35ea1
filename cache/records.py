"""Walking the records of a DNS message on raw bytes (RFC 1035 section 4.1): names, each record's fixed fields, and
the rdata of the types whose layout a client relies on. Pure functions; every malformation raises ValueError.

A name may end in a compression pointer; a pointer must point backwards, past the header (a reply's header is not
the upstream's, so a name built from header bytes would change meaning), to a prior occurrence of the name: what it
leads to ends before the pointer (RFC 1035 4.1.4; a name that runs on into the pointer's own record is read one way
by us and refused by other parsers). A name is at most 255 bytes on the wire, root label included.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

RR_FIXED: Final = struct.Struct("!HHIH")  # type, class, ttl, rdlength
HEADER_SIZE: Final = 12
MAX_NAME: Final = 255
MAX_POINTER_JUMPS: Final = 64  # a name has at most 127 labels; 64 jumps is generous and stops every pointer loop

# A record as `records` yields it: where it starts, its type, class and TTL, where its rdata starts, where it ends.
Record = tuple[int, int, int, int, int, int]


def skip_name(data: bytes, offset: int, targets: list[int] | None = None) -> int:
    """Offset just after the (possibly compressed) name at `offset`; the offsets its pointers lead to are added to
    `targets` when given."""
    end = len(data)
    limit = end  # where the name must end: the message's end, then the last pointer followed
    jumps = 0
    after = -1
    total = 1  # the root label
    while True:
        if offset >= limit:
            raise ValueError("name runs past the end of the message" if limit == end else
                             "compressed name runs into the pointer that leads to it")
        length = data[offset]
        if length == 0:
            return offset + 1 if after < 0 else after
        if length & 0xC0 == 0xC0:
            if offset + 1 >= limit:
                raise ValueError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | data[offset + 1]
            if after < 0:
                after = offset + 2
            jumps += 1
            if target >= offset or jumps > MAX_POINTER_JUMPS:
                raise ValueError("compression pointer loop")  # pointers must point backwards
            if target < HEADER_SIZE:
                raise ValueError("compression pointer into the header")
            if targets is not None:
                targets.append(target)
            limit, offset = offset, target
            continue
        if length & 0xC0:
            raise ValueError("unknown label type")
        total += length + 1
        if total > MAX_NAME:
            raise ValueError("name longer than 255 bytes")
        offset += length + 1


def read_name(data: bytes, offset: int) -> bytes:
    """The name at `offset`, uncompressed and lowercased: the same bytes for every spelling of one name.
    Call it on names `skip_name` has accepted."""
    labels: list[bytes] = []
    while True:
        length = data[offset]
        if length == 0:
            return b"".join(labels).lower() + b"\x00"
        if length & 0xC0 == 0xC0:
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        labels.append(data[offset:offset + length + 1])
        offset += length + 1


def u16(data: bytes, at: int) -> int:
    """The 16-bit big-endian number at `at`. Plain arithmetic on the bytes rather than struct: compiled, it stays a
    machine integer, where struct's tuple of objects made every comparison and mask after it a generic call."""
    return (data[at] << 8) | data[at + 1]


def u32(data: bytes, at: int) -> int:
    return (data[at] << 24) | (data[at + 1] << 16) | (data[at + 2] << 8) | data[at + 3]


def record_at(data: bytes, offset: int, targets: list[int] | None = None) -> Record:
    """The record at `offset` as (start, type, class, ttl, rdata start, end); where its owner name's pointers lead
    is added to `targets` when given."""
    start = offset
    offset = skip_name(data, offset, targets)
    size = len(data)
    if offset + 10 > size:
        raise ValueError("record runs past the end")
    rdata = offset + 10
    end = rdata + u16(data, offset + 8)
    if end > size:
        raise ValueError("record runs past the end")
    return start, u16(data, offset), u16(data, offset + 2), u32(data, offset + 4), rdata, end


def records(data: bytes, offset: int, count: int, targets: list[int] | None = None) -> Iterator[Record]:
    """The `count` records from `offset` (see `record_at`)."""
    for _ in range(count):
        record = record_at(data, offset, targets)
        offset = record[5]
        yield record


# The rdata layouts checked before an answer is cached, as a sequence of fields: a number is that many bytes, N a
# name (compressed or not), S one character-string, S+ one or more up to the end, B an NSEC type bitmap, * the rest.
# These are the types a client decompresses or parses to use the answer; every other type is relayed as received
# (RFC 3597), only its length checked. The layouts of A, AAAA, SRV and KX are those of class IN only.
_NAME_ONLY = ("N",)
RDATA_LAYOUTS: dict[int, tuple[int | str, ...]] = {
    1: (4,),  # A
    2: _NAME_ONLY, 3: _NAME_ONLY, 4: _NAME_ONLY, 5: _NAME_ONLY,  # NS, MD, MF, CNAME
    6: ("N", "N", 20),  # SOA
    7: _NAME_ONLY, 8: _NAME_ONLY, 9: _NAME_ONLY, 12: _NAME_ONLY,  # MB, MG, MR, PTR
    13: ("S", "S"),  # HINFO
    14: ("N", "N"),  # MINFO
    15: (2, "N"),  # MX
    16: ("S+",),  # TXT
    17: ("N", "N"),  # RP
    18: (2, "N"), 21: (2, "N"), 36: (2, "N"),  # AFSDB, RT, KX
    28: (16,),  # AAAA
    33: (6, "N"),  # SRV
    39: _NAME_ONLY,  # DNAME
    46: (18, "N", "*"),  # RRSIG
    47: ("N", "B"),  # NSEC
    99: ("S+",),  # SPF
}


CLASS_IN: Final = 1
IN_ONLY: Final = frozenset((1, 28, 33, 36))
FIXED_SIZES = {rtype: layout[0] for rtype, layout in RDATA_LAYOUTS.items()
               if len(layout) == 1 and isinstance(layout[0], int)}  # A, AAAA: the most common, checked first


def check_rdata(data: bytes, rtype: int, rclass: int, start: int, end: int, targets: list[int] | None = None) -> None:
    """Raise ValueError unless the rdata in data[start:end] has the layout of its type (when we know it); where the
    pointers of its names lead is added to `targets` when given."""
    size = FIXED_SIZES.get(rtype)
    if size is not None:
        if end - start != size and rclass == CLASS_IN:
            raise ValueError(f"rdata of {end - start} bytes for type {rtype}")
        return
    layout = RDATA_LAYOUTS.get(rtype)
    if layout is None or (rclass != CLASS_IN and rtype in IN_ONLY):
        return
    offset = start
    for field in layout:
        if isinstance(field, int):
            offset += field
        elif field == "N":
            offset = skip_name(data, offset, targets)
        elif field == "S":
            if offset >= end:
                raise ValueError("character-string missing")
            offset += data[offset] + 1
        elif field == "S+":
            if offset >= end:
                raise ValueError("no character-string")
            while offset < end:
                offset += data[offset] + 1
        elif field == "B":
            offset = _skip_type_bitmap(data, offset, end)
        else:  # "*"
            offset = end
        if offset > end:
            raise ValueError("rdata runs past its length")
    if offset != end:
        raise ValueError("rdata longer than its type's fields")


def check_options(data: bytes, start: int, end: int) -> None:
    """Raise ValueError unless the OPT rdata in data[start:end] is whole options, each a code, a length and that
    many bytes (RFC 6891 6.1.2). The record is dropped, not relayed, but one that does not add up makes the message
    malformed, and a message we cannot read whole is not one to answer from."""
    offset = start
    while offset < end:
        if offset + 4 > end:
            raise ValueError("EDNS option cut short")
        offset += 4 + ((data[offset + 2] << 8) | data[offset + 3])
    if offset != end:
        raise ValueError("EDNS option runs past the OPT record")


def _skip_type_bitmap(data: bytes, offset: int, end: int) -> int:
    """RFC 4034 section 4.1.2: windows in increasing order, each 1 to 32 bytes of bitmap whose last byte is not
    zero (trailing zero octets are omitted, and a window without types is left out)."""
    last_window = -1
    while offset < end:
        if offset + 2 > end:
            raise ValueError("type bitmap cut short")
        window, length = data[offset], data[offset + 1]
        if window <= last_window or not 1 <= length <= 32:
            raise ValueError("bad type bitmap")
        if offset + 2 + length <= end and data[offset + 1 + length] == 0:
            raise ValueError("type bitmap window ends in a zero octet")
        last_window = window
        offset += 2 + length
    return offset
