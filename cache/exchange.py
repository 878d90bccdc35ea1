"""What every upstream exchange shares, UDP or TCP: the errors when an upstream gives no usable answer (or we could
not ask it), and the check that an answer belongs to the query (the defence against spoofed answers)."""
from __future__ import annotations

import errno


class UpstreamError(Exception):
    """No usable answer from this upstream (timeout, refused connection, connections closed again and again)."""


class OutOfSockets(UpstreamError):
    """This process could not open a socket (out of file descriptors or socket memory): a shortage of ours, not a
    failure of the upstream, which must not be marked down for it."""

    ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def answer_matches(data: bytes, qid: int, question: bytes) -> bool:
    """Does an upstream answer belong to our query: its random ID, and its question (compared case-insensitively)?"""
    return (len(data) >= 12 + len(question) and int.from_bytes(data[:2], "big") == qid
            and data[12:12 + len(question)].lower() == question)
