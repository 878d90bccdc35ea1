"""The query log (`--log-queries`): one line per answer, for an admin debugging DNS on a node.

Each line is CoreDNS's common log format (its `log` plugin) followed by where the answer came from, so the greps and
parsers people already use for CoreDNS keep working:

    10.0.0.5:41234 - 4711 "A IN web.default.svc.cluster.local. udp 71 false 1232" NOERROR qr,rd,ra 102 0.000021s cache

Every byte a client controls is escaped as in a zone file (RFC 1035 section 5.1: `\\.`, `\\"`, `\\DDD`), so a name
holding a newline or a quote cannot forge a line. With `--log-format json` each answer is a JSON object instead
(localdns/logformat.py): that line as `msg`, and its parts as keys of their own (client, port, id, type, class,
name, proto, size, do, bufsize, rcode, flags, rsize, duration, source). Lines are filtered by class (CoreDNS's:
success, denial, error), rate-limited by a token bucket (the rest are counted in
`localdns_query_log_dropped_total`), and written by a thread from a bounded queue, so a log reader that stalls never
stalls answering.
"""
from __future__ import annotations

import asyncio
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from localdns.logformat import JSONFormatter, TextFormatter

from . import wire
from .metrics import RCODE_NAMES
from .stats import TYPE_LABELS, Stats

Send = Callable[[bytes, Any], None]
CLASSES = ("success", "denial", "error")
QUEUE_LINES = 4096  # lines waiting for the writer; beyond, dropped and counted (the writer is stuck)
CLASS_NAMES = {1: "IN", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}
# Response flags in the order CoreDNS prints them, with their bit in the header's flags word.
FLAG_BITS = (("qr", 0x8000), ("aa", 0x0400), ("tc", 0x0200), ("rd", 0x0100), ("ra", 0x0080), ("z", 0x0040),
             ("ad", 0x0020), ("cd", 0x0010))
_ESCAPE = {byte: f"\\{byte:03d}" for byte in (*range(0x21), *range(0x7F, 0x100))}
_ESCAPE.update({ord(c): "\\" + c for c in '.\\"();@$'})
_LABEL_TABLE = {byte: _ESCAPE.get(byte, chr(byte)) for byte in range(0x100)}


def parse_classes(text: str) -> frozenset[str]:
    """'all', or a comma list of success, denial, error; ValueError names what is unknown."""
    names = {name.strip().lower() for name in text.split(",") if name.strip()}
    unknown = names - {"all", *CLASSES}
    if unknown or not names:
        raise ValueError(f"{text!r}: expected 'all' or a comma list of {', '.join(CLASSES)}")
    return frozenset(CLASSES) if "all" in names else frozenset(names)


def classify(reply: bytes) -> str:
    """CoreDNS's response classes: NOERROR with records (or truncated) is success, NXDOMAIN and NODATA (NOERROR
    without answer records) are denial, every other rcode is error."""
    flags = (reply[2] << 8) | reply[3]
    rcode = flags & wire.RCODE_MASK
    if rcode == 3:
        return "denial"
    if rcode:
        return "error"
    return "success" if reply[6:8] != b"\x00\x00" or flags & 0x0200 else "denial"


def escape_name(name: bytes) -> str:
    """An uncompressed wire name as presentation text, every byte outside printable ASCII (and every character
    that means something in a zone file or in this log's quotes) escaped: `a\\.b.example.`, `\\010.example.`."""
    labels, offset, end = [], 0, len(name)
    while offset < end and name[offset]:
        length = name[offset]
        labels.append("".join(_LABEL_TABLE[byte] for byte in name[offset + 1:offset + 1 + length]))
        offset += length + 1
    return ".".join(labels) + "."


def question_of(data: bytes) -> tuple[str, str, str]:
    """(type, class, name) of a query's question as text, '-' where the packet has none to read."""
    offset, end = 12, len(data)
    while offset < end and data[offset] and not data[offset] & 0xC0 and offset - 12 <= wire.MAX_NAME:
        offset += data[offset] + 1
    if offset + 5 > end or data[offset] != 0:
        return "-", "-", "-"
    qtype = (data[offset + 1] << 8) | data[offset + 2]
    qclass = (data[offset + 3] << 8) | data[offset + 4]
    return (TYPE_LABELS.get(qtype, f"TYPE{qtype}"), CLASS_NAMES.get(qclass, f"CLASS{qclass}"),
            escape_name(data[12:offset + 1]))


def edns_of(data: bytes) -> tuple[bool | None, int | None]:
    """The query's DO bit and advertised UDP size, as CoreDNS has them (False, 512 without EDNS); None, None
    where the query cannot be read."""
    try:
        query = wire.parse_query(data)
    except (wire.Drop, wire.BadQuery):
        return None, None
    return query.do, query.udp_size if query.edns else wire.PLAIN_UDP_SIZE


def format_line(data: bytes, addr: Any, proto: str, reply: bytes, duration: float, source: str) -> str:
    """One log line, from the query and reply bytes as they crossed the wire. The text format's path: written out
    rather than through `answer_fields` and `common_line`, which cost it 7% more instructions per line."""
    host, port = addr[0], addr[1]
    remote = f"[{host}]" if ":" in host else host
    qid = (data[0] << 8) | data[1] if len(data) >= 2 else "-"
    qtype, qclass, name = question_of(data)
    do, bufsize = edns_of(data)
    flags = (reply[2] << 8) | reply[3]
    rcode = flags & wire.RCODE_MASK
    rflags = ",".join(flag for flag, bit in FLAG_BITS if flags & bit)
    return (f'{remote}:{port} - {qid} "{qtype} {qclass} {name} {proto} {len(data)} '
            f'{"-" if do is None else "true" if do else "false"} {"-" if bufsize is None else bufsize}" '
            f"{RCODE_NAMES.get(rcode, f'RCODE{rcode}')} {rflags or '-'} {len(reply)} {duration:.6f}s {source}")


def common_line(fields: dict[str, Any]) -> str:
    """`format_line`'s text from the line's parts (`answer_fields`): the JSON format's `msg`."""
    host, qid, do, bufsize = fields["client"], fields["id"], fields["do"], fields["bufsize"]
    remote = f"[{host}]" if ":" in host else host
    return (f'{remote}:{fields["port"]} - {"-" if qid is None else qid} "{fields["type"]} {fields["class"]} '
            f'{fields["name"]} {fields["proto"]} {fields["size"]} {"-" if do is None else "true" if do else "false"} '
            f'{"-" if bufsize is None else bufsize}" {fields["rcode"]} {fields["flags"] or "-"} {fields["rsize"]} '
            f'{fields["duration"]:.6f}s {fields["source"]}')


def answer_fields(data: bytes, addr: Any, proto: str, reply: bytes, duration: float, source: str) -> dict[str, Any]:
    """The line's parts as JSON keys, typed (numbers as numbers, the DO bit as a boolean; null where the query has
    none to read), the name in presentation form as in the line (escaped: it reads back as the same wire name)."""
    qtype, qclass, name = question_of(data)
    do, bufsize = edns_of(data)
    flags = (reply[2] << 8) | reply[3]
    rcode = flags & wire.RCODE_MASK
    return {"client": addr[0], "port": addr[1], "id": (data[0] << 8) | data[1] if len(data) >= 2 else None,
            "type": qtype, "class": qclass, "name": name, "proto": proto, "size": len(data),
            "do": do, "bufsize": bufsize,
            "rcode": RCODE_NAMES.get(rcode, f"RCODE{rcode}"),
            "flags": ",".join(flag for flag, bit in FLAG_BITS if flags & bit), "rsize": len(reply),
            "duration": round(duration, 6), "source": source}


class _Logged:
    """A client's `send`, wrapped: sends the reply, then logs it. A reply sent before the loop turn that received
    the query is over was answered at once, from the cache; one sent later came after waiting on an upstream (an
    upstream answer always comes in a later turn: it needs the loop to poll for it)."""

    __slots__ = ("addr", "at_once", "data", "log", "proto", "send", "started")

    def __init__(self, log: QueryLog, data: bytes, addr: Any, send: Send, proto: str) -> None:
        self.log, self.data, self.addr, self.send, self.proto = log, data, addr, send, proto
        self.started = time.monotonic()
        self.at_once = True
        try:
            asyncio.get_running_loop().call_soon(self._turn_over)
        except RuntimeError:  # no running loop (a test calling the resolver directly): every reply is at once
            pass

    def _turn_over(self) -> None:
        self.at_once = False

    def __call__(self, reply: bytes, addr: Any) -> None:
        self.send(reply, addr)
        self.log.answered(self, reply)


class QueryLog:
    """Filters, rate-limits and queues answer lines; a daemon thread writes them to `stream`."""

    def __init__(self, stats: Stats, classes: frozenset[str] = frozenset(CLASSES), rate: float = 100,
                 burst: int = 1000, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stats, self.clock = stats, clock
        self.classes, self.rate, self.burst = classes, float(rate), burst
        self.tokens, self.refilled = float(burst), clock()
        self.dropped_unreported = 0
        self.json = False
        self.stream = stream
        # (time, message, fields): fields None for a text line, else the keys of a JSON line
        self.lines: queue.Queue[tuple[float, str, dict[str, Any] | None] | None] = queue.Queue(QUEUE_LINES)
        self._writer: threading.Thread | None = None

    def configure(self, classes: frozenset[str], rate: float, burst: int, log_format: str = "text") -> None:
        self.classes, self.rate, self.burst = classes, float(rate), burst
        self.tokens = min(self.tokens, float(burst))
        self.json = log_format == "json"

    def watch(self, data: bytes, addr: Any, send: Send, proto: str) -> Send:
        """The `send` to hand the resolver for this query, so that its answer is logged."""
        return _Logged(self, data, addr, send, proto)

    def answered(self, query: _Logged, reply: bytes) -> None:
        if len(reply) < 12 or classify(reply) not in self.classes:
            return
        if not self._take():
            self.stats.query_log_dropped += 1
            self.dropped_unreported += 1
            return
        duration = time.monotonic() - query.started
        source = "cache" if query.at_once else "upstream"
        if self.dropped_unreported:
            self._put(f"dropped {self.dropped_unreported} query log lines before this one (over {self.rate:g} a "
                      f"second, bursts of {self.burst}: --log-queries-rate, --log-queries-burst)",
                      {"dropped": self.dropped_unreported} if self.json else None)
            self.dropped_unreported = 0
        if self.json:  # the parts, read once; the JSON itself is made by the writer thread
            fields = answer_fields(query.data, query.addr, query.proto, reply, duration, source)
            self._put(common_line(fields), fields)
        else:
            self._put(format_line(query.data, query.addr, query.proto, reply, duration, source))

    def _take(self) -> bool:
        """One token from the bucket, refilled at `rate` a second up to `burst`."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def _put(self, line: str, fields: dict[str, Any] | None = None) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._write, name="query-log", daemon=True)
            self._writer.start()
        try:
            self.lines.put_nowait((time.time(), line, fields))
        except queue.Full:
            self.stats.query_log_dropped += 1

    def _write(self) -> None:
        """The writer thread: blocks on the stream so that the event loop never does."""
        stream = self.stream or sys.stderr
        text, json = TextFormatter(), JSONFormatter()  # this thread's own: their per-second caches are not shared
        while True:
            item = self.lines.get()
            batch = [item]
            while item is not None and len(batch) < 256:
                try:
                    item = self.lines.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
            lines = "".join((text.line(at, "INFO", "cache.query", line) if fields is None else
                             json.line(at, "INFO", "cache.query", line, fields)) + "\n"
                            for at, line, fields in filter(None, batch))
            try:
                stream.write(lines)
                stream.flush()
            except (OSError, ValueError):  # stream closed: nothing to log to
                pass
            if batch[-1] is None:
                return

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued, then stop the writer."""
        if self._writer is not None:
            try:
                self.lines.put(None, timeout=timeout)
            except queue.Full:
                return
            self._writer.join(timeout)
            self._writer = None
