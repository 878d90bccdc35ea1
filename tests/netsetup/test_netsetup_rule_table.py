"""The rule table is node-local-dns's: per listen IP, conntrack skipped both ways and filter ACCEPT, tagged; plus the
port-unreachable NOTRACK (issue 13 item 7), and with the fail-open fallback a socket-matched NOTRACK and nat jumps."""
from __future__ import annotations

import ipaddress

import pytest

from cache.netsetup.fallback import FallbackSpec, by_family, dnat_rules, endpoints_in, parse_fallback
from cache.netsetup.iptables import COMMENT_PREFIX, rules_for

PORT_UNREACHABLE_V4 = (4, "raw", "OUTPUT", "icmp", "-s", "169.254.20.10", "--icmp-type", "port-unreachable", "NOTRACK")


def summary(rule) -> tuple:
    args = rule.args
    if "--icmp-type" in args or "--icmpv6-type" in args:
        flag = "--icmp-type" if "--icmp-type" in args else "--icmpv6-type"
        return (rule.family, rule.table, rule.chain, args[args.index("-p") + 1], args[0], args[1], flag,
                args[args.index(flag) + 1], args[-1])
    host_flag, ip = args[0], args[1]
    proto = args[args.index("-p") + 1]
    port_flag = "--dport" if "--dport" in args else "--sport"
    port = args[args.index(port_flag) + 1]
    return (rule.family, rule.table, rule.chain, proto, host_flag, ip, port_flag, port, args[-1])


def test_every_rule_of_node_local_dns_for_one_ipv4_address():
    rules = rules_for([ipaddress.ip_address("169.254.20.10")], 53, 8080)
    expected = set()
    for proto in ("tcp", "udp"):
        expected |= {
            (4, "raw", "PREROUTING", proto, "-d", "169.254.20.10", "--dport", "53", "NOTRACK"),
            (4, "filter", "INPUT", proto, "-d", "169.254.20.10", "--dport", "53", "ACCEPT"),
            (4, "raw", "OUTPUT", proto, "-s", "169.254.20.10", "--sport", "53", "NOTRACK"),
            (4, "filter", "OUTPUT", proto, "-s", "169.254.20.10", "--sport", "53", "ACCEPT"),
            (4, "raw", "OUTPUT", proto, "-d", "169.254.20.10", "--dport", "53", "NOTRACK"),
        }
    expected |= {
        PORT_UNREACHABLE_V4,
        (4, "raw", "OUTPUT", "tcp", "-d", "169.254.20.10", "--dport", "8080", "NOTRACK"),
        (4, "raw", "OUTPUT", "tcp", "-s", "169.254.20.10", "--sport", "8080", "NOTRACK"),
    }
    assert {summary(rule) for rule in rules} == expected
    assert len(rules) == len(expected)


def test_each_rule_carries_a_localdns_comment():
    for rule in rules_for([ipaddress.ip_address("169.254.20.10")], 53, 8080):
        comment = rule.args[rule.args.index("--comment") + 1]
        assert comment.startswith("localdns: ")


def test_ipv6_addresses_go_to_ip6tables_and_each_address_gets_its_own_rules():
    rules = rules_for([ipaddress.ip_address("169.254.20.10"), ipaddress.ip_address("fd00::10")], 5353, None)
    v6 = [rule for rule in rules if rule.family == 6]
    assert len(v6) == len(rules) // 2 == 11
    assert all("fd00::10" in rule.args for rule in v6)
    assert all("5353" in rule.args for rule in v6 if "-p" in rule.args and "ipv6-icmp" not in rule.args)
    [icmp6] = [rule for rule in v6 if "ipv6-icmp" in rule.args]
    assert summary(icmp6) == (6, "raw", "OUTPUT", "ipv6-icmp", "-s", "fd00::10", "--icmpv6-type", "port-unreachable",
                              "NOTRACK")
    assert all("fd00::10" not in rule.args for rule in rules if rule.family == 4)


def test_no_health_rules_without_a_health_port():
    rules = rules_for([ipaddress.ip_address("169.254.20.10")], 53, None)
    assert all("8080" not in rule.args for rule in rules)
    assert len(rules) == 11


def test_with_the_fallback_pods_skip_conntrack_only_while_a_socket_is_bound_and_the_rest_jumps_to_the_chain():
    address = ipaddress.ip_address("169.254.20.10")
    plain = rules_for([address], 53, 8080)
    armed = rules_for([address], 53, 8080, fallback=True)
    # Added: the jumps that send tracked queries (= no socket bound) to the DNAT chain.
    added = {summary(rule) for rule in armed} - {summary(rule) for rule in plain}
    assert added == {(4, "nat", "PREROUTING", proto, "-d", "169.254.20.10", "--dport", "53", "LOCALDNS-FALLBACK")
                     for proto in ("tcp", "udp")}
    assert {summary(rule) for rule in plain} <= {summary(rule) for rule in armed}
    # Changed: the pods' NOTRACK carries the socket match; nothing else does.
    socket_matched = [rule for rule in armed if "socket" in rule.args]
    assert [(rule.table, rule.chain) for rule in socket_matched] == [("raw", "PREROUTING")] * 2
    for rule in socket_matched:
        # --nowildcard: a listener on 0.0.0.0:53 (some node daemon) must not count as the cache
        at = rule.args.index("socket")
        assert rule.args[at - 1:at + 2] == ("-m", "socket", "--nowildcard")
    assert all("socket" not in rule.args for rule in plain)
    assert len(armed) == len(plain) + 2


def test_the_fallback_chain_spreads_flows_evenly_and_keeps_the_port():
    endpoints = [ipaddress.ip_address(a) for a in ("10.0.0.1", "10.0.0.2", "10.0.0.3")]
    rules = dnat_rules(endpoints)
    assert [rule[-1] for rule in rules] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]  # no :port: 53 stays 53
    everies = [rule[rule.index("--every") + 1] if "--every" in rule else None for rule in rules]
    assert everies == ["3", "2", None]  # 1/3, then 1/2 of the remaining 2/3, then the rest: 1/3 each
    # Simulate the kernel's nth counters (each rule counts the flows that reach it) over many flows.
    counters = [0] * len(rules)
    taken = {str(e): 0 for e in endpoints}
    for _ in range(3000):
        for index, rule in enumerate(rules):
            if "--every" not in rule:
                taken[rule[-1]] += 1
                break
            every = int(rule[rule.index("--every") + 1])
            counters[index] = (counters[index] + 1) % every
            if counters[index] == 0:
                taken[rule[-1]] += 1
                break
    assert taken == {"10.0.0.1": 1000, "10.0.0.2": 1000, "10.0.0.3": 1000}
    assert dnat_rules([]) == []
    assert "--every" not in dnat_rules(endpoints[:1])[0]


def test_every_fallback_rule_carries_the_localdns_comment():
    for rule in dnat_rules([ipaddress.ip_address("fd00::1"), ipaddress.ip_address("fd00::2")]):
        assert rule[rule.index("--comment") + 1].startswith(f"{COMMENT_PREFIX}: ")
    for rule in rules_for([ipaddress.ip_address("169.254.20.10")], 53, 8080, fallback=True):
        assert rule.args[rule.args.index("--comment") + 1].startswith(f"{COMMENT_PREFIX}: ")


def test_endpoints_are_grouped_by_family_in_a_stable_order():
    found = by_family(ipaddress.ip_address(a) for a in ("10.0.0.9", "fd00::2", "10.0.0.1", "10.0.0.9"))
    assert found == {4: [ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.9")],
                     6: [ipaddress.ip_address("fd00::2")]}


def test_what_iptables_prints_reads_back_as_the_endpoints_programmed():
    lines = ["-A LOCALDNS-FALLBACK -m statistic --mode nth --every 2 --packet 0 -m comment --comment "
             '"localdns: fallback to kube-dns endpoint 10.0.0.1" -j DNAT --to-destination 10.0.0.1',
             "-A LOCALDNS-FALLBACK -j DNAT --to-destination 10.0.0.2:53",
             "-A LOCALDNS-FALLBACK -j DNAT --to-destination fd00::2",
             "-A LOCALDNS-FALLBACK -j DNAT --to-destination [fd00::3]:53",
             "-A LOCALDNS-FALLBACK -j ACCEPT"]
    assert endpoints_in(lines) == [ipaddress.ip_address(a) for a in ("10.0.0.1", "10.0.0.2", "fd00::2", "fd00::3")]


@pytest.mark.parametrize(("value", "expected"), [
    ("none", FallbackSpec()),
    ("None", FallbackSpec()),
    ("localdns-kube-dns.kube-system.svc.cluster.local",
     FallbackSpec(name="localdns-kube-dns.kube-system.svc.cluster.local")),
    ("Kube-DNS.kube-system.svc.corp.example.", FallbackSpec(name="kube-dns.kube-system.svc.corp.example")),
    ("10.96.0.10", FallbackSpec(addresses=(ipaddress.ip_address("10.96.0.10"),))),
    ("10.96.0.10, fd00::10,10.96.0.10", FallbackSpec(addresses=(ipaddress.ip_address("10.96.0.10"),
                                                                ipaddress.ip_address("fd00::10")))),
    ("[fd00::10]", FallbackSpec(addresses=(ipaddress.ip_address("fd00::10"),))),
])
def test_the_flag_reads_as_off_a_name_or_addresses(value, expected):
    assert parse_fallback(value) == expected


@pytest.mark.parametrize("value", ["a name with spaces", "10.0.0.1,kube-dns", "0.0.0.0", "127.0.0.1", "::",
                                   "two..dots", "-leading-dash.example", "x" * 64 + ".example"])
def test_a_flag_value_that_cannot_work_is_refused_with_the_reason(value):
    with pytest.raises(ValueError) as error:
        parse_fallback(value)
    assert str(error.value)
