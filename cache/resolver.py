"""The query pipeline: a hit is answered from raw bytes before `handle` returns; a miss joins or starts one
upstream exchange for its key, routed to the longest matching forward zone.
"""
from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from . import wire
from .exchange import UpstreamError
from .limits import Limits
from .stats import OTHER, TYPE_LABELS, Stats
from .store import Entry, Store
from .upstream import Group
from .wire import BadQuery, Drop, Query, parse_query, render

if TYPE_CHECKING:
    from .querylog import QueryLog

log = logging.getLogger("cache.resolver")

Send = Callable[[bytes, Any], None]
UDP: Final = "udp"
TCP: Final = "tcp"
STALE_TTL: Final = 30  # RFC 8767 section 4: the TTL of a stale answer
MAX_INFLIGHT: Final = 10000  # distinct upstream exchanges at once; beyond, SERVFAIL at once rather than grow
MAX_WAITING: Final = 20000  # clients waiting for upstream answers, all keys together; beyond, SERVFAIL at once
MAX_REPLAYS: Final = 4096  # rendered hit replies kept (about 300 bytes each); each is one query form (name case,
# EDNS size) of a cached name, and only the ones asked again within a TTL second pay off
MAX_WAITERS: Final = 256  # clients waiting for the same exchange; beyond, dropped (a flood of one name)
TYPE_HINFO: Final = 13


def size_limit(query: Query, proto: str) -> int:
    """The largest answer this client takes: its EDNS size (512 without EDNS) over UDP, a whole message over TCP."""
    if proto != UDP:
        return 65535
    return query.udp_size if query.edns else wire.PLAIN_UDP_SIZE


def should_prefetch(entry: Entry, left: float, threshold: int) -> bool:
    """Refresh an entry before it expires: popular (`threshold` hits or more, 0 = never) and in the last tenth of
    its TTL, unless a refresh is already on its way (CoreDNS's shouldPrefetch, with its 10% default)."""
    return 0 < threshold <= entry.hits and left * 10 <= entry.ttl and not entry.refreshing


class Resolver:
    """Answers queries from the store, forwards misses to the zone's upstream group, and counts in `stats`."""

    def __init__(self, zones: dict[str, Group], store: Store, stats: Stats, limits: Limits,
                 on_loop: Callable[[str], None] | None = None) -> None:
        self.store, self.stats, self.limits = store, stats, limits
        self.inflight: dict[bytes, list[tuple[Query, Any, Send, str]]] = {}
        self.waiting = 0  # clients in all inflight lists
        # query bytes after the ID -> (entry, its TTL second, the reply after the ID, qtype as counted)
        self.replays: dict[bytes, tuple[Entry, int, bytes, str]] = {}
        self.loop_probes: dict[bytes, str] = {}  # probe question -> zone
        self.on_loop = on_loop
        self.query_log: QueryLog | None = None  # --log-queries: wraps each client's send to log its answer
        self.zones: dict[bytes, Group] = {wire.encode_name(zone): group for zone, group in zones.items()}

    def configure(self, zones: dict[str, Group], limits: Limits) -> list[Group]:
        """Swap zones and limits (config reload) keeping the cache; returns the replaced groups to close."""
        old = list(self.zones.values())
        self.zones = {wire.encode_name(zone): group for zone, group in zones.items()}
        self.limits = limits
        self.store.resize(limits)
        return old

    @property
    def ready(self) -> bool:
        return any(group.up for group in self.zones.values())

    def handle(self, data: bytes, addr: Any, send: Send, proto: str = UDP) -> None:
        """A query: answered (hit, error) before returning, or later (miss), through `send(reply, addr)`."""
        if self.query_log is not None:  # the one check the hit path pays while query logging is off
            send = self.query_log.watch(data, addr, send, proto)
        stats = self.stats
        now = time.monotonic()
        # Hottest path: this exact query (all but its ID) was answered within the same TTL second, so the reply is
        # the same bytes after the ID. (LRU recency is refreshed by the regular hit below, once per TTL second.)
        replay = self.replays.get(data[2:]) if proto == UDP else None
        if replay is not None:
            replayed, ttl, tail, type_label = replay
            left = replayed.expires - now
            if int(left) == ttl and left > 0 and not replayed.dead:
                send(data[:2] + tail, addr)
                stats.requests[(UDP, "1" if len(addr) == 2 else "2", type_label)] += 1
                self._hit(replayed, left, data)
                return
        try:
            query = parse_query(data)
        except Drop as drop:
            stats.dropped[drop.args[0]] += 1
            return
        except BadQuery as bad:
            stats.responses[bad.rcode] += 1
            send(bad.response, addr)
            return
        stats.requests[(proto, "1" if len(addr) == 2 else "2", TYPE_LABELS.get(query.qtype, OTHER))] += 1
        entry = self.store.get(query.key)
        if entry is not None:
            left = entry.expires - now
            if left > 0:
                reply = render(query, entry.answer, int(left), size_limit(query, proto))
                send(reply, addr)
                if proto == UDP:
                    if len(self.replays) >= MAX_REPLAYS:
                        self.replays.clear()  # bounded; the hot ones come back within a second
                    self.replays[data[2:]] = (entry, int(left), reply[2:], TYPE_LABELS.get(query.qtype, OTHER))
                self._hit(entry, left, query)
                return
        self._miss(query, addr, send, proto)

    def _hit(self, entry: Entry, left: float, query: Query | bytes) -> None:
        """Count an answer from the cache, and refresh the entry if it is due (`query` parsed or still raw)."""
        stats = self.stats
        stats.hits[entry.kind] += 1
        stats.responses[entry.answer.rcode] += 1
        entry.hits += 1
        if should_prefetch(entry, left, self.limits.prefetch):
            self._prefetch(query if isinstance(query, Query) else parse_query(query), entry)

    def _miss(self, query: Query, addr: Any, send: Send, proto: str) -> None:
        stats = self.stats
        stats.misses += 1
        key = query.key
        waiters = self.inflight.get(key)
        if waiters is not None:
            if len(waiters) < MAX_WAITERS and self.waiting < MAX_WAITING:
                waiters.append((query, addr, send, proto))
                self.waiting += 1
            else:
                stats.dropped["too many identical queries in flight"] += 1
            return
        zone = self.loop_probes.get(key[:-1])
        if zone is not None:
            self._loop_detected(zone, query, addr, send)
            return
        if len(self.inflight) >= MAX_INFLIGHT or self.waiting >= MAX_WAITING:
            self._reply(query, addr, send, wire.error_response(query, wire.SERVFAIL), wire.SERVFAIL)
            return
        self.inflight[key] = [(query, addr, send, proto)]
        self.waiting += 1
        self._forward(query)

    def _prefetch(self, query: Query, entry: Entry) -> None:
        if query.key in self.inflight:
            return
        entry.refreshing = True
        self.stats.prefetch += 1
        self.inflight[query.key] = []
        self._forward(query)

    def route(self, qname: bytes) -> tuple[str, Group] | None:
        """The group of the longest forward zone that contains qname (lowercased wire name)."""
        offset = 0
        while True:
            group = self.zones.get(qname[offset:])
            if group is not None:
                return group.zone, group
            if offset >= len(qname) or qname[offset] == 0:
                return None
            offset += qname[offset] + 1

    def _forward(self, query: Query) -> None:
        """Ask the zone's upstreams; `_fetched` gets the answer (or the error) and delivers it to every waiter."""
        routed = self.route(query.qname)
        if routed is None:
            log.warning("no forward zone for %s", wire.decode_name(query.qname))
            self._deliver(query.key, None)
            return
        zone, group = routed
        group.start(query.key[:-1], query.do, query.cd, self.limits.upstream_timeout,
                    lambda result: self._fetched(query, zone, result))

    def _fetched(self, query: Query, zone: str, result: bytes | Exception) -> None:
        answer = None
        try:
            if isinstance(result, bytes):
                answer = wire.parse_answer(result, query.key[:-1])
            else:
                log.info("no answer for %s: %s", wire.decode_name(query.qname), result)
        except wire.BadAnswer as error:  # SERVFAIL (or the stale answer), never cached
            self.stats.bad_answers[zone] += 1
            log.warning("unusable upstream answer for %s: %s", wire.decode_name(query.qname), error)
        except Exception:  # never leave clients waiting on a bug
            log.exception("resolving %s failed", wire.decode_name(query.qname))
        finally:
            self._deliver(query.key, answer)

    def _deliver(self, key: bytes, answer: wire.Answer | None) -> None:
        now = time.monotonic()
        waiters = self.inflight.pop(key, [])
        self.waiting -= len(waiters)
        ttl = 0
        if answer is not None:
            entry = self.store.put(key, answer, now)
            ttl = entry.ttl if entry is not None else min(answer.ttl, self.limits.success_ttl)
        if answer is None or answer.rcode == wire.SERVFAIL:
            stale = self.store.stale(key, now)
            if stale is not None:
                stale.refreshing = False
                if stale.expires <= now:  # a fresh SERVFAIL cannot be stored over it; the stale answer wins
                    answer, ttl = stale.answer, STALE_TTL
                    self.stats.served_stale += len(waiters)
        for query, addr, send, proto in waiters:
            if answer is None:
                self._reply(query, addr, send, wire.error_response(query, wire.SERVFAIL), wire.SERVFAIL)
                continue
            self._reply(query, addr, send, render(query, answer, ttl, size_limit(query, proto)), answer.rcode)

    def _reply(self, query: Query, addr: Any, send: Send, reply: bytes, rcode: int) -> None:
        self.stats.responses[rcode] += 1
        try:
            send(reply, addr)
        except OSError as error:  # a client gone away must not stop the others' answers
            log.debug("sending to %s failed: %s", addr, error)

    # Loop detection, as CoreDNS's loop plugin: ask each zone for a random name; if the query reaches us, the
    # forwarding leads back here.
    def loop_probe_questions(self) -> list[tuple[str, bytes]]:
        """One probe question per zone, the same for the life of the process (a set that cannot grow)."""
        probes = []
        for wire_zone, group in self.zones.items():
            question = next((q for q, zone in self.loop_probes.items() if zone == group.zone), None)
            if question is None:
                label = os.urandom(8).hex().encode()
                question = bytes((len(label),)) + label + wire_zone + struct.pack("!HH", TYPE_HINFO, 1)
                self.loop_probes[question] = group.zone
            probes.append((group.zone, question))
        return probes

    async def probe_loops(self) -> None:
        """Send one probe per zone; a probe that comes back calls `on_loop`."""
        async def probe(zone: str, question: bytes) -> None:
            group = self.zones.get(wire.encode_name(zone))
            if group is None:
                return
            try:
                await group.exchange(question, False, False, self.limits.upstream_timeout)
            except UpstreamError:
                pass
        await asyncio.gather(*(probe(zone, question) for zone, question in self.loop_probe_questions()))

    def _loop_detected(self, zone: str, query: Query, addr: Any, send: Send) -> None:
        self.stats.loops_detected += 1
        log.error("forwarding loop detected: a query for zone %r sent upstream came back to this cache; "
                  "check the --forward/--kube-dns targets and the node's resolv.conf", zone)
        self._reply(query, addr, send, wire.error_response(query, wire.SERVFAIL), wire.SERVFAIL)
        if self.on_loop is not None:
            self.on_loop(zone)
