"""The fallback's endpoints, as the cache reads them through kube-dns (dnsmasq here) at every sync: every A and
AAAA of the headless Service, and None (keep what the node has) for an answer without addresses, a missing name, an
unreachable kube-dns or an unreadable answer. Its three gauges are rendered only while the fallback is on."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct

import dns.message
import dns.rrset
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cache import wire
from cache.addresses import Address
from cache.config import SettingsError, load
from cache.endpoints import TYPE_A, TYPE_AAAA, FallbackEndpoints, addresses_in
from cache.exchange import UpstreamError
from cache.limits import Limits
from cache.metrics import Metrics
from cache.netsetup.fallback import FallbackSpec
from cache.stats import Stats
from cache.store import Store
from cache.upstream import Group, Upstream
from tests.cache.conftest import free_port

ip = ipaddress.ip_address


def resolve(spec: FallbackSpec, group: object | None, stats: Stats | None = None) -> list | None:
    async def run() -> list | None:
        endpoints = FallbackEndpoints(spec, lambda qname: group, stats or Stats(), timeout=1.0)  # type: ignore[arg-type,return-value]
        try:
            return await endpoints.refresh()
        finally:
            if isinstance(group, Group):
                group.close()
    return asyncio.run(run())


def kube_dns_group(port: int) -> Group:
    stats = Stats()
    return Group("cluster.local", [Upstream(Address("tcp", "127.0.0.1", port), stats)], stats)


def test_every_a_and_aaaa_record_of_the_name_becomes_an_endpoint(kube_dns):
    found = resolve(FallbackSpec(name="web.default.svc.cluster.local"), kube_dns_group(kube_dns.port))
    assert sorted(found, key=str) == [ip("10.0.0.1"), ip("fd00::1")]
    many = resolve(FallbackSpec(name="big.default.svc.cluster.local"), kube_dns_group(kube_dns.port))
    assert sorted(many, key=int) == [ip(f"10.1.0.{i}") for i in range(1, 101)]  # TCP: no truncation at 100
    assert kube_dns.queries("big.default.svc.cluster.local", "AAAA") >= 1


def test_a_name_behind_a_cname_gives_the_targets_addresses(kube_dns):
    found = resolve(FallbackSpec(name="alias.cluster.local"), kube_dns_group(kube_dns.port))
    assert sorted(found, key=str) == [ip("10.0.0.1"), ip("fd00::1")]


def test_a_missing_name_keeps_the_endpoints_in_place_and_says_what_to_create(kube_dns, caplog):
    caplog.set_level(logging.WARNING, logger="cache.endpoints")
    assert resolve(FallbackSpec(name="localdns-kube-dns.kube-system.svc.cluster.local"),
                   kube_dns_group(kube_dns.port)) is None
    assert "headless Service localdns-kube-dns" in caplog.text


def test_an_unreachable_kube_dns_keeps_the_endpoints_in_place(caplog):
    caplog.set_level(logging.WARNING, logger="cache.endpoints")
    assert resolve(FallbackSpec(name="web.default.svc.cluster.local"), kube_dns_group(free_port())) is None
    assert "keeps its endpoints" in caplog.text


def test_a_name_no_zone_holds_keeps_the_endpoints_in_place():
    assert resolve(FallbackSpec(name="kube-dns.example"), None) is None


def test_fixed_addresses_are_used_as_given_without_asking_anyone():
    spec = FallbackSpec(addresses=(ip("10.96.0.10"),))
    assert resolve(spec, None) == [ip("10.96.0.10")]


class OneAnswer:
    """An upstream group that answers every question with the bytes `make(question)` returns."""

    def __init__(self, make) -> None:
        self.make = make

    async def exchange(self, question: bytes, do: bool, cd: bool, timeout: float) -> bytes:
        answer = self.make(question)
        if answer is None:
            raise UpstreamError("no answer within 1s")
        return answer


def reply_to(question: bytes, records: list[dns.rrset.RRset], rcode: int = 0) -> bytes:
    qname = wire.decode_name(question[:-4])
    qtype = struct.unpack("!H", question[-4:-2])[0]
    message = dns.message.make_response(dns.message.make_query(qname, qtype))
    message.set_rcode(rcode)
    message.answer = [r for r in records if r.rdtype == qtype or r.rdtype == 5]
    return message.to_wire()


NAME = "localdns-kube-dns.kube-system.svc.cluster.local."


def test_records_of_another_type_are_not_endpoints():
    records = [dns.rrset.from_text(NAME, 5, "IN", "A", "10.0.0.7"),
               dns.rrset.from_text(NAME, 5, "IN", "TXT", '"10.0.0.9"')]
    assert resolve(FallbackSpec(name=NAME), OneAnswer(lambda q: reply_to(q, records))) == [ip("10.0.0.7")]


def test_a_servfail_or_an_unreadable_answer_keeps_the_endpoints(caplog):
    caplog.set_level(logging.WARNING, logger="cache.endpoints")
    records = [dns.rrset.from_text(NAME, 5, "IN", "A", "10.0.0.7")]
    assert resolve(FallbackSpec(name=NAME), OneAnswer(lambda q: reply_to(q, records, rcode=2))) is None
    assert "rcode 2" in caplog.text
    cut = resolve(FallbackSpec(name=NAME), OneAnswer(lambda q: reply_to(q, records)[:-3]))
    assert cut is None and "unreadable answer" in caplog.text


def test_one_family_answering_is_enough():
    records = [dns.rrset.from_text(NAME, 5, "IN", "AAAA", "fd00::7")]
    only_aaaa = OneAnswer(lambda q: reply_to(q, records) if q.endswith(struct.pack("!HH", TYPE_AAAA, 1)) else None)
    assert resolve(FallbackSpec(name=NAME), only_aaaa) == [ip("fd00::7")]


def test_addresses_in_walks_compressed_names():
    query = dns.message.make_query(NAME, "AAAA")
    response = dns.message.make_response(query)
    response.answer = [dns.rrset.from_text(NAME, 5, "IN", "AAAA", "fd00::1", "fd00::2")]
    data = response.to_wire()  # dnspython compresses the owner names into pointers to the question
    assert b"\xc0\x0c" in data
    assert sorted(addresses_in(data, TYPE_AAAA)) == [ip("fd00::1"), ip("fd00::2")]
    assert addresses_in(data, TYPE_A) == []


def test_the_three_gauges_follow_the_fallback_and_are_absent_when_it_is_off():
    stats = Stats()
    names = {"localdns_fallback_armed", "localdns_fallback_endpoints",
             "localdns_fallback_last_refresh_timestamp_seconds"}

    def gauges() -> dict[str, float]:
        text = Metrics(stats, Store(Limits())).render()[0].decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert all(families[n].type == "gauge" for n in names & families.keys())
        return {n: families[n].samples[0].value for n in names & families.keys()}

    assert gauges() == {}  # --fallback-endpoints none
    endpoints = FallbackEndpoints(FallbackSpec(name=NAME), lambda q: None, stats, timeout=1.0)
    assert gauges() == dict.fromkeys(names, 0.0)
    endpoints.record(True, [ip("10.0.0.1"), ip("10.0.0.2")], refreshed=True)
    after = gauges()
    assert after["localdns_fallback_armed"] == 1 and after["localdns_fallback_endpoints"] == 2
    assert after["localdns_fallback_last_refresh_timestamp_seconds"] > 1.7e9
    endpoints.record(False, [ip("10.0.0.1")], refreshed=True)  # the rules could not be checked: not armed
    assert gauges()["localdns_fallback_armed"] == 0
    assert gauges()["localdns_fallback_last_refresh_timestamp_seconds"] == \
        after["localdns_fallback_last_refresh_timestamp_seconds"]
    endpoints.record(True, [], refreshed=False)  # rules in place, but no endpoint yet (a new node)
    assert gauges()["localdns_fallback_armed"] == 0


@pytest.mark.parametrize("value", ["10.0.0.1,kube-dns", "0.0.0.0", "a b"])
def test_a_bad_flag_value_stops_the_cache_at_start_with_the_reason(value):
    with pytest.raises(SettingsError, match="fallback-endpoints"):
        load(["--kube-dns", "10.96.0.10", "--fallback-endpoints", value], environ={})


def test_the_flag_needs_a_restart_to_change():
    from cache.config import RESTART_ONLY
    assert "fallback_endpoints" in RESTART_ONLY and "remove_startup_taint" in RESTART_ONLY
