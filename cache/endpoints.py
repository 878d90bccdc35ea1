"""Where the fail-open fallback sends queries while no cache runs: kube-dns's endpoints, kept fresh by the cache.

`--fallback-endpoints NAME` names a headless Service with kube-dns's selector (deploy/ ships
`localdns-kube-dns.kube-system.svc.<cluster domain>`); its A and AAAA records are the kube-dns pods' addresses, read
through kube-dns itself at every --sync-interval, so the cache needs no API token. The node's rules
(cache/netsetup/fallback.py) DNAT to those addresses; they are not the ClusterIP because, with kube-proxy in
iptables or nftables mode, a packet is NATed once per hook and kube-proxy's own DNAT would never run. An answer
without addresses, or no answer, changes nothing: the last endpoints stay. `IP[,IP...]` (IPVS clusters: the
ClusterIP is local on every node) is used as given.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
import time
from collections.abc import Callable

from . import wire
from .exchange import UpstreamError
from .netsetup.fallback import FallbackSpec
from .netsetup.iptables import IPAddress
from .records import records, skip_name
from .stats import Stats
from .upstream import Group

log = logging.getLogger("cache.endpoints")

TYPE_A, TYPE_AAAA, CLASS_IN = 1, 28, 1
FIRST_RETRY_SECONDS = 2.0  # until the name has resolved once (a new node), then every --sync-interval


def addresses_in(answer: bytes, qtype: int) -> list[IPAddress]:
    """The A (or AAAA) records of an answer's answer section, whatever their owner (a CNAME's target counts)."""
    _, _, qdcount, ancount, _, _ = wire.HEADER.unpack_from(answer)
    offset = wire.HEADER.size
    for _ in range(qdcount):
        offset = skip_name(answer, offset) + 4
    size = 4 if qtype == TYPE_A else 16
    return [ipaddress.ip_address(answer[rdata:end])
            for _, rtype, rclass, _, rdata, end in records(answer, offset, ancount)
            if rtype == qtype and rclass == CLASS_IN and end - rdata == size]


class FallbackEndpoints:
    """The endpoints to program and the fallback's metrics; `route(name)` gives the upstream group of a name."""

    def __init__(self, spec: FallbackSpec, route: Callable[[bytes], Group | None], stats: Stats,
                 timeout: float) -> None:
        self.spec, self.route, self.stats, self.timeout = spec, route, stats, timeout
        self.resolved_once = False
        self._complaint = ""  # the last problem logged, so a lasting one is logged once
        stats.fallback_armed = 0

    @property
    def retry_in(self) -> float | None:
        """Seconds to the next try before the first success (None: go by --sync-interval)."""
        return None if self.resolved_once or self.spec.addresses else FIRST_RETRY_SECONDS

    async def refresh(self) -> list[IPAddress] | None:
        """The endpoints now, or None to keep the ones in place (no answer, or no address in it)."""
        if self.spec.addresses:
            return list(self.spec.addresses)
        assert self.spec.name is not None
        qname = wire.encode_name(self.spec.name)
        found = self.route(qname)
        if found is None:
            self._complain(f"no upstream zone holds {self.spec.name}; the fallback keeps its endpoints")
            return None
        answers = await asyncio.gather(*(self._ask(found, qname, qtype) for qtype in (TYPE_A, TYPE_AAAA)))
        if all(answer is None for answer in answers):
            return None
        endpoints = [address for answer in answers for address in answer or ()]
        if not endpoints:
            self._complain(f"{self.spec.name} has no A or AAAA record (is the headless Service localdns-kube-dns "
                           "in kube-system, with kube-dns's selector?); the fallback keeps its endpoints")
            return None
        self._complaint = ""
        self.resolved_once = True
        return endpoints

    async def _ask(self, group: Group, qname: bytes, qtype: int) -> list[IPAddress] | None:
        question = qname + struct.pack("!HH", qtype, CLASS_IN)
        try:
            answer = await group.exchange(question, False, False, self.timeout)
            rcode = int.from_bytes(answer[2:4], "big") & wire.RCODE_MASK
            if rcode not in (wire.NOERROR, wire.NXDOMAIN):
                self._complain(f"{self.spec.name}: kube-dns answered rcode {rcode}; the fallback keeps its endpoints")
                return None
            return addresses_in(answer, qtype)
        except UpstreamError as error:
            self._complain(f"{self.spec.name}: {error}; the fallback keeps its endpoints")
        except (ValueError, struct.error) as error:
            self._complain(f"{self.spec.name}: unreadable answer ({error}); the fallback keeps its endpoints")
        return None

    def record(self, rules_ok: bool, programmed: list[IPAddress], refreshed: bool) -> None:
        """After a sync: whether the kernel's fallback can act, and with how many endpoints."""
        self.stats.fallback_armed = int(rules_ok and bool(programmed))
        self.stats.fallback_endpoints = len(programmed)
        if rules_ok and refreshed:
            self.stats.fallback_last_refresh = time.time()

    def _complain(self, message: str) -> None:
        if message != self._complaint:
            log.warning("%s", message)
            self._complaint = message
