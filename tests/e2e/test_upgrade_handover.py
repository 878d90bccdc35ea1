"""An upgrade under constant load loses no query: the new instance binds beside the old one (SO_REUSEPORT), the
old one drains on SIGTERM, and neither removes the interface or rules the other needs."""
from __future__ import annotations

import re
import subprocess

import pytest

from tests.e2e.topology import FALLBACK_NAME, LOCAL_IP, RECORDS, Cache, Topology

QUERIES = "".join(f"{name} A\n" for name in RECORDS) + "svc-1.default.svc.cluster.local AAAA\n"
DURATION_S = 10  # long enough that the old instance exits while the load still runs
RATE_QPS = 300


def dnsperf_summary(output: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(Queries sent|Queries completed|Queries lost|Response codes):\s+(.*)$",
                           output, re.MULTILINE))


# With the fail-open fallback (as the DaemonSet runs) the pods' NOTRACK depends on a bound socket: the handover must
# keep one bound at every instant, or queries would be tracked and DNATed mid-upgrade.
VARIANTS = {"fallback": ("--fallback-endpoints", FALLBACK_NAME), "no-fallback": ()}
RULES = {"fallback": 15 + 2, "no-fallback": 13}  # with the fallback: + the nat jumps and a DNAT per kube-dns pod


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_upgrade_under_load_loses_and_fails_no_query(clean_node: Topology, variant: str):
    topo = clean_node
    query_file = topo.workdir / "queries.txt"
    query_file.write_text(QUERIES)
    extra = VARIANTS[variant]
    old = Cache(topo, "old", "--drain", "2", *extra, sync_interval=60)
    new = None
    load = None
    try:
        old.wait_serving()
        old.wait_rules(RULES[variant])
        # Bounded in time (-l) and rate (-Q); several clients so the kernel spreads flows over both instances.
        load = topo.pod.popen("dnsperf", "-s", LOCAL_IP, "-d", str(query_file), "-l", str(DURATION_S),
                              "-Q", str(RATE_QPS), "-c", "8", "-t", "3",
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        new = Cache(topo, "new", "--drain", "2", *extra, sync_interval=60)
        new.wait_until(lambda: _serves(topo, new), "the new instance answering")
        assert old.terminate() == 0, old.output
        # What this test is about: the old instance is gone and the load has not finished (-l bounds it).
        assert load.poll() is None, "dnsperf ended before the handover; the machine is too slow for DURATION_S"
        output, _ = load.communicate(timeout=DURATION_S + 30)
        print(output)  # shown with `pytest -rP`: the figures behind the assertion
        summary = dnsperf_summary(output)
        sent = int(summary["Queries sent"].split()[0])
        assert sent >= RATE_QPS * (DURATION_S - 1), output
        assert summary["Queries completed"].startswith(f"{sent} "), output
        assert summary["Queries lost"].startswith("0 "), output
        assert re.fullmatch(r"NOERROR \d+ \(100\.00%\)", summary["Response codes"].strip()), output

        # The old instance left the node network to the new one, which still answers.
        assert len(topo.node.our_rules()) == RULES[variant]
        assert topo.node.addresses("nodelocaldns") == [LOCAL_IP]
        answer = topo.pod.run("dig", "+short", "+time=2", "+tries=1", f"@{LOCAL_IP}", "svc-1.default.svc.cluster.local")
        assert answer.stdout.split() == [RECORDS["svc-1.default.svc.cluster.local"]]
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait()
        old.close()
        if new is not None:
            new.terminate()


def _serves(topo: Topology, cache: Cache) -> bool:
    """True once `cache` has answered a query. dnsperf's few sockets may all hash to the old instance, so each call
    also sends one query from a new source port, which SO_REUSEPORT places on either instance."""
    topo.pod.run("dig", "+short", "+time=1", "+tries=1", f"@{LOCAL_IP}", "svc-1.default.svc.cluster.local",
                 check=False)
    try:
        return cache.metric("coredns_dns_requests_total") > 0
    except AssertionError:  # its metrics endpoint is not up yet
        return False
