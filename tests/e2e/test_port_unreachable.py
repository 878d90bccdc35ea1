"""With no cache bound, the node's "port unreachable" reaches the pod at once, also on a node that drops
conntrack-INVALID packets in OUTPUT (as many hardened nodes do), so resolvers move to their next nameserver (or
fail) at once instead of waiting their timeout (glibc: 5 s). Issue 13, item 7.

The query skipped conntrack (NOTRACK), so conntrack finds nothing the ICMP error relates to and calls it INVALID;
our raw OUTPUT rule makes it untracked instead. The control removes just that rule: the error is then dropped (the
DROP rule counts it) and the client hears nothing."""
from __future__ import annotations

from tests.e2e.topology import LOCAL_IP, PYTHON, Topology

ASK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], 53))  # connected, as glibc's resolver is: an ICMP error comes back as ECONNREFUSED
s.settimeout(float(sys.argv[2]))
s.send(bytes.fromhex("beef01000001000000000000") + b"\\x05svc-1\\x00\\x00\\x01\\x00\\x01")
try:
    s.recv(512)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("silence")
"""
DROP_INVALID = ("OUTPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")


def dropped(topo: Topology) -> int:
    listing = topo.node.run("iptables-nft", "-L", "OUTPUT", "-v", "-x", "-n").stdout
    return sum(int(line.split()[0]) for line in listing.splitlines() if "ctstate INVALID" in line)


def test_port_unreachable_reaches_the_pod_on_a_node_that_drops_invalid_packets(clean_node: Topology):
    topo = clean_node
    topo.node.run(PYTHON, "-m", "cache.netsetup", "setup", "--listen", f"{LOCAL_IP}:53", "--interface-kind", "bridge")
    topo.node.run("iptables-nft", "-A", *DROP_INVALID)
    try:
        # The timeout only bounds the control's wait; "refused" arrives within milliseconds.
        assert topo.pod_run(PYTHON, "-c", ASK, LOCAL_IP, "3").stdout.strip() == "refused"
        assert dropped(topo) == 0

        rule = next(line for line in topo.node.our_rules() if "port unreachable" in line)
        topo.node.run("sh", "-c", f"iptables-nft -t raw {rule.replace('-A', '-D', 1)}")
        assert topo.pod_run(PYTHON, "-c", ASK, LOCAL_IP, "3").stdout.strip() == "silence"
        assert dropped(topo) >= 1
    finally:
        topo.node.run("iptables-nft", "-D", *DROP_INVALID, check=False)
