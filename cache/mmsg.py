"""The C side of batched UDP I/O: libc's recvmmsg and sendmmsg through ctypes, and the preallocated message arrays
they read into and send from (`struct mmsghdr`, its iovec, a data slot and a sockaddr slot per message).

Apart from the listener (cache/batchio.py) because mypyc compiles the listener, and cannot compile a ctypes
Structure: this module stays plain Python, and the listener reaches every field through the memoryviews
`MessageArray` makes once, never through ctypes attributes per datagram.
"""
from __future__ import annotations

import ctypes
import sys
from typing import Any

NAME_SLOT = 128  # sizeof(struct sockaddr_storage)


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


# Positions of the fields the hot loop touches, in 32-bit words from the start of each mmsghdr.
STRIDE_BYTES = ctypes.sizeof(_MMsgHdr)
_STRIDE = STRIDE_BYTES // 4
_NAMELEN = _MsgHdr.namelen.offset // 4
_LEN = _MMsgHdr.len.offset // 4
_STRIDE_PTRS = STRIDE_BYTES // ctypes.sizeof(ctypes.c_size_t)  # msg_name is the first field of each mmsghdr

get_errno = ctypes.get_errno


def _bytes_data_offset() -> int | None:
    """Where a bytes object's data starts relative to id() (CPython: 32 on 64-bit), so sendmmsg can point its
    iovecs at the answers themselves instead of copying them; None (copy instead) if that does not hold here."""
    if sys.implementation.name != "cpython":
        return None
    offsets = {(ctypes.cast(ctypes.c_char_p(sample), ctypes.c_void_p).value or 0) - id(sample)
               for sample in (b"probe", b"x" * 100, bytes(range(7)))}
    return offsets.pop() if len(offsets) == 1 else None


# Read by each listener as it starts (tests set it to None to run the copying path).
BYTES_DATA = _bytes_data_offset()


def _load_libc() -> tuple[Any, Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The C library the interpreter already runs on (dlopen(NULL)): no ctypes.util.find_library, which runs
        # ldconfig and imports shutil, tempfile, bz2 and lzma (0.6 MB of RSS) only to name it.
        libc = ctypes.CDLL(None, use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recvmmsg.restype = ctypes.c_int
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


LIBC = _load_libc()


class MessageArray:
    """`count` preallocated mmsghdr/iovec/buffer/sockaddr slots, each header pointing at its own slot."""

    def __init__(self, count: int, slot: int) -> None:
        self.count, self.slot = count, slot
        self._headers = (_MMsgHdr * count)()
        self._iovecs = (_IoVec * count)()
        self._data = (ctypes.c_char * (count * slot))()
        self._names = (ctypes.c_char * (count * NAME_SLOT))()
        data_at, names_at = ctypes.addressof(self._data), ctypes.addressof(self._names)
        for i in range(count):
            self._iovecs[i].base, self._iovecs[i].len = data_at + i * slot, slot
            hdr = self._headers[i].hdr
            hdr.name, hdr.namelen = names_at + i * NAME_SLOT, NAME_SLOT
            hdr.iov, hdr.iovlen = ctypes.addressof(self._iovecs[i]), 1
        self.address = ctypes.addressof(self._headers)
        self.size = ctypes.sizeof(self._headers)
        self.words = memoryview(self._headers).cast("B").cast("I")
        # "N" is size_t, which typeshed's literal list of formats lacks.
        self.pointers = memoryview(self._headers).cast("B").cast("N")  # type: ignore[call-overload]
        self.iovs = memoryview(self._iovecs).cast("B").cast("N")  # type: ignore[call-overload]  # base, len, ...
        self.data = memoryview(self._data).cast("B")
        self.names = memoryview(self._names).cast("B")
        # Slicing a c_char array gives bytes at once (typeshed says list[bytes]).
        self.data_bytes: Any = self._data
        self.names_bytes: Any = self._names
        self.name_words = self.names.cast("Q")  # an IPv4 sockaddr's family, port and address in one int
        # Where slot i's fields are in those views, computed once instead of per datagram.
        self.rx_slots = [(i * _STRIDE + _LEN, i * _STRIDE + _NAMELEN, i * NAME_SLOT, i * NAME_SLOT // 8, i * slot)
                         for i in range(count)]
        self.tx_slots = [(2 * i, 2 * i + 1, i * _STRIDE_PTRS, i * _STRIDE + _NAMELEN, i * slot) for i in range(count)]
        self.named: list[bytes | None] = [None] * count  # sending: the sockaddr each slot's msg_name points at

    def message_at(self, index: int) -> int:
        """The address of message `index`'s mmsghdr (sendmmsg from there sends the rest)."""
        return self.address + index * STRIDE_BYTES

    def copy_name(self, index: int, raw: bytes) -> int:
        """Copy a sockaddr into slot `index` (the portable path) and return its address."""
        self.names[index * NAME_SLOT:index * NAME_SLOT + len(raw)] = raw
        return ctypes.addressof(self._names) + index * NAME_SLOT
