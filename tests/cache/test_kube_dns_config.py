"""--kube-dns-config: kube-dns's ConfigMap (stubDomains, upstreamNameservers) honoured as kube-dns and node-local-dns
honour it, re-read when the kubelet swaps the mounted directory's `..data` link, per key, keeping the last good value.

The directory is written exactly as the kubelet's atomic writer lays out a ConfigMap volume: each generation in a
fresh `..<timestamp>` directory, a `..data` symlink renamed onto it, and one `KEY -> ..data/KEY` symlink per key.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from cache.addresses import Address
from cache.config import Settings
from cache.kubednsconfig import KubeDnsConfig, parse_stub_domains, parse_upstream_nameservers
from tests.cache.conftest import Cache, Dnsmasq

STUB_NAME, STUB_ADDRESS = "www.acme.local", "192.0.2.50"


class MountedConfigMap:
    """A ConfigMap volume as the kubelet writes it, updated the way the kubelet updates it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.generation = 0

    def write(self, data: dict[str, str]) -> None:
        self.generation += 1
        payload = self.directory / f"..2026_11_30_00_00_00.{os.getpid()}{self.generation}"
        payload.mkdir()
        for key, value in data.items():
            (payload / key).write_text(value)
        old = os.readlink(self.directory / "..data") if (self.directory / "..data").is_symlink() else None
        (self.directory / "..data_tmp").symlink_to(payload.name)
        os.rename(self.directory / "..data_tmp", self.directory / "..data")  # the atomic swap
        for key in data:
            if not (self.directory / key).is_symlink():
                (self.directory / key).symlink_to(f"..data/{key}")
        for entry in self.directory.iterdir():  # keys no longer in the ConfigMap lose their link
            if not entry.name.startswith("..") and entry.name not in data:
                entry.unlink()
        if old is not None:
            for item in (self.directory / old).iterdir():
                item.unlink()
            (self.directory / old).rmdir()


def own(address: Address) -> bool:
    return address == Address("udp", "127.0.0.1", 5353)


# ---- kube-dns's format and rules ----

def test_kube_dns_format_is_read_with_ports_and_ipv6():
    assert parse_stub_domains('{"acme.local": ["1.2.3.4", "5.6.7.8:5353"], "corp": ["fd00::53", "[fd00::54]:5300"]}',
                              "cluster.local") == {
        "acme.local": (Address("udp", "1.2.3.4", 53), Address("udp", "5.6.7.8", 5353)),
        "corp": (Address("udp", "fd00::53", 53), Address("udp", "fd00::54", 5300))}
    assert parse_upstream_nameservers('["8.8.8.8", "8.8.4.4:53"]') == (Address("udp", "8.8.8.8", 53),
                                                                      Address("udp", "8.8.4.4", 53))
    assert parse_upstream_nameservers("[]") == ()


@pytest.mark.parametrize("text, why", [
    ('{"acme.local": ["1.2.3.4"]', "not JSON"),
    ('["acme.local"]', "JSON object"),
    ('{"Acme.Local": ["1.2.3.4"]}', "DNS-1123"),
    ('{"acme.local.": ["1.2.3.4"]}', "DNS-1123"),
    ('{"cluster.local": ["1.2.3.4"]}', "cluster domain"),
    ('{"acme.local": []}', "non-empty list"),
    ('{"acme.local": "1.2.3.4"}', "non-empty list"),
    ('{"acme.local": ["ns.acme.local"]}', "not an IP address"),
    ('{"acme.local": ["1.2.3.4:0"]}', "no server"),
    ('{"acme.local": ["1.2.3.4:99999"]}', "not an IP address"),
    ('{"acme.local": ["fd00::53:5353x"]}', "not an IP address"),
    ('{"acme.local": [53]}', "not a string"),
])
def test_bad_stub_domains_say_why(text, why):
    with pytest.raises(ValueError, match=why):
        parse_stub_domains(text, "cluster.local")


@pytest.mark.parametrize("text, why", [
    ('["1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"]', "at most 3"),
    ('{"a": 1}', "JSON list"),
    ('["dns.google"]', "not an IP address"),
    ('["0.0.0.0"]', "no server"),
])
def test_bad_upstream_nameservers_say_why(text, why):
    with pytest.raises(ValueError, match=why):
        parse_upstream_nameservers(text)


def test_each_key_keeps_its_last_good_value_and_a_missing_key_means_none(tmp_path):
    mount = MountedConfigMap(tmp_path / "kube-dns")
    config = KubeDnsConfig(str(mount.directory), "cluster.local", own)
    assert config.refresh() == (False, []) and config.stub_domains == {} and config.upstreams == ()

    mount.write({"stubDomains": '{"acme.local": ["10.0.0.1"]}', "upstreamNameservers": '["10.0.0.2"]'})
    assert config.refresh() == (True, [])
    assert config.stub_domains == {"acme.local": (Address("udp", "10.0.0.1", 53),)}

    # A bad stubDomains beside a good new upstreamNameservers: the one is ignored, the other applies.
    mount.write({"stubDomains": '{"acme.local": ["10.0.0.1"],}', "upstreamNameservers": '["10.0.0.3"]'})
    changed, problems = config.refresh()
    assert changed and len(problems) == 1 and problems[0].startswith("stubDomains: not JSON")
    assert config.stub_domains == {"acme.local": (Address("udp", "10.0.0.1", 53),)}
    assert config.upstreams == (Address("udp", "10.0.0.3", 53),)
    assert config.refresh() == (False, [])  # an unchanged bad value is reported once, not on every poll

    # Forwarding to the cache itself is a bad value too; non-UTF-8 bytes as well.
    mount.write({"stubDomains": '{"acme.local": ["127.0.0.1:5353"]}', "upstreamNameservers": '["10.0.0.3"]'})
    assert config.refresh()[1] == ["stubDomains: udp://127.0.0.1:5353 is this cache's own listen address "
                                   "(a forwarding loop)"]
    (mount.directory / "..data" / "upstreamNameservers").write_bytes(b'["10.0.0.\xff"]')
    assert config.refresh()[1] == ["upstreamNameservers: not UTF-8"]
    assert config.upstreams == (Address("udp", "10.0.0.3", 53),)

    mount.write({})  # both keys removed from the ConfigMap: no stub domains, no override
    assert config.refresh() == (True, [])
    assert (config.stub_domains, config.upstreams) == ({}, ())


def test_precedence_defaults_then_configmap_then_forward(tmp_path):
    mount = MountedConfigMap(tmp_path / "kube-dns")
    mount.write({"stubDomains": '{"acme.local": ["10.0.0.1"], "corp.example": ["10.0.0.9"]}',
                 "upstreamNameservers": '["10.0.0.2", "10.0.0.3:5300"]'})
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.53\n")
    settings = Settings(listen=("127.0.0.1:5353",), kube_dns="10.96.0.10", resolv_conf=str(resolv),
                        forward=("corp.example=tcp://10.0.0.10:53",))
    config = KubeDnsConfig(str(mount.directory), settings.cluster_domain, settings.is_own_address)
    config.refresh()
    zones = settings.zones({}, config)
    assert zones["."] == [Address("udp", "10.0.0.2", 53), Address("udp", "10.0.0.3", 5300)]  # not resolv.conf's
    assert zones["acme.local"] == [Address("udp", "10.0.0.1", 53)]
    assert zones["corp.example"] == [Address("tcp", "10.0.0.10", 53)]  # --forward wins over the ConfigMap
    assert zones["cluster.local"] == [Address("tcp", "10.96.0.10", 53)]  # kube-dns keeps its zones
    assert settings.zones({})["."] == [Address("udp", "10.0.0.53", 53)]  # without the ConfigMap: resolv.conf


# ---- the running cache ----

@pytest.fixture(scope="module")
def stub_dns(tmp_path_factory):
    """A second dnsmasq, the corporate DNS server of the stub domain acme.local."""
    server = Dnsmasq(tmp_path_factory.mktemp("stubdns"), auth=False)
    server.args += [f"--host-record={STUB_NAME},{STUB_ADDRESS}", "--local=/acme.local/"]
    server.probe = STUB_NAME
    try:
        yield server.start()
    finally:
        server.stop()


def wait_for(condition, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def address_of(reply: dns.message.Message) -> list[str]:
    return [item.address for rrset in reply.answer for item in rrset if hasattr(item, "address")]


def test_stub_domain_and_upstream_override_follow_kubelet_updates(tmp_path, kube_dns, node_dns, stub_dns):
    mount = MountedConfigMap(tmp_path / "kube-dns")
    mount.write({"stubDomains": json.dumps({"acme.local": [f"127.0.0.1:{stub_dns.port}"]})})
    # The node's resolv.conf names a server no test runs (loopback, port 53): '.' answers only through the override.
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.3\n")
    cache = Cache(tmp_path, "--kube-dns-config", str(mount.directory), "--resolv-conf", str(resolv),
                  kube_dns=kube_dns)
    asked = stub_dns.queries(STUB_NAME)  # the fixture's own probe
    try:
        reply = cache.udp(dns.message.make_query(STUB_NAME, "A"))
        assert address_of(reply) == [STUB_ADDRESS] and stub_dns.queries(STUB_NAME) == asked + 1
        before = node_dns.queries("www.example.org")
        assert address_of(cache.udp(dns.message.make_query("www.example.org", "A"))) != ["192.0.2.10"]
        assert node_dns.queries("www.example.org") == before

        # The kubelet swaps in a generation with upstreamNameservers: '.' goes there, the cache is kept.
        mount.write({"stubDomains": json.dumps({"acme.local": [f"127.0.0.1:{stub_dns.port}"]}),
                     "upstreamNameservers": json.dumps([f"127.0.0.1:{node_dns.port}"])})
        wait_for(lambda: f"upstream nameservers for '.': udp://127.0.0.1:{node_dns.port}" in cache.output(),
                 "the upstream nameservers to be re-read")
        wait_for(lambda: address_of(cache.udp(dns.message.make_query("www.example.org", "A"), timeout=3))
                 == ["192.0.2.10"], "'.' to reach the ConfigMap's upstream")
        assert address_of(cache.udp(dns.message.make_query(STUB_NAME, "A"))) == [STUB_ADDRESS]
        assert stub_dns.queries(STUB_NAME) == asked + 1  # answered from the cache kept across the change

        # A bad stubDomains value: logged with the key, counted, and the stub domain in force stays.
        mount.write({"stubDomains": json.dumps({"acme.local": [f"127.0.0.1:{stub_dns.port}"]})[:-2],
                     "upstreamNameservers": json.dumps([f"127.0.0.1:{node_dns.port}"])})
        wait_for(lambda: "bad stubDomains: not JSON" in cache.output(), "the bad value to be logged")
        assert cache.metrics()['coredns_nodecache_setup_errors_total{errortype="configmap"}'] == 1
        reply = cache.udp(dns.message.make_query("mail.acme.local", "A"))
        assert reply.rcode() == dns.rcode.NXDOMAIN and stub_dns.queries("mail.acme.local") == 1

        # The ConfigMap loses both keys: no stub domain, '.' back to the resolv.conf.
        mount.write({})
        wait_for(lambda: "stub domains: none; upstream nameservers for '.': none" in cache.output(),
                 "the keys' removal to be seen")
        cache.udp(dns.message.make_query("other.acme.local", "A"))
        assert stub_dns.queries("other.acme.local") == 0
        assert cache.proc.poll() is None
    finally:
        cache.stop()


def test_forward_flag_wins_and_a_missing_directory_is_no_configmap(tmp_path, kube_dns, node_dns, stub_dns):
    mount = MountedConfigMap(tmp_path / "kube-dns")
    mount.write({"stubDomains": json.dumps({"example.org": [f"127.0.0.1:{stub_dns.port}"]})})
    cache = Cache(tmp_path, "--kube-dns-config", str(mount.directory), kube_dns=kube_dns, node_dns=node_dns)
    try:  # --forward example.org=node_dns (from the fixture) beats the ConfigMap's stub domain for the same zone
        assert address_of(cache.udp(dns.message.make_query("www.example.org", "A"))) == ["192.0.2.10"]
        assert stub_dns.queries("www.example.org") == 0
    finally:
        cache.stop()
    absent = Cache(tmp_path, "--kube-dns-config", str(tmp_path / "not-mounted"), kube_dns=kube_dns)
    try:  # the ConfigMap is optional: no directory, no stub domains, and the cache serves
        assert address_of(absent.udp(dns.message.make_query("web.default.svc.cluster.local", "A"))) == ["10.0.0.1"]
        assert "stub domains: none" in absent.output()
    finally:
        absent.stop()
