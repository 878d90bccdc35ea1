"""The rule table is node-local-dns's: per listen IP, conntrack skipped both ways and filter ACCEPT, tagged."""
from __future__ import annotations

import ipaddress

from cache.netsetup.iptables import rules_for


def summary(rule) -> tuple:
    args = rule.args
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
    assert len(v6) == len(rules) // 2 == 10
    assert all("fd00::10" in rule.args and "5353" in rule.args for rule in v6)
    assert all("fd00::10" not in rule.args for rule in rules if rule.family == 4)


def test_no_health_rules_without_a_health_port():
    rules = rules_for([ipaddress.ip_address("169.254.20.10")], 53, None)
    assert all("8080" not in rule.args for rule in rules)
    assert len(rules) == 10
