"""kube-proxy as it would be on the node, in the three modes it runs in, for the fail-open tests.

Each mode gives the node a kube-dns ClusterIP (10.96.0.10) that leads to the kube-dns "pods" of the topology
(10.77.0.2 and 10.77.0.4), built as kube-proxy builds it, reduced to this one Service:
- iptables: nat KUBE-SERVICES (jumped to from PREROUTING and OUTPUT) -> KUBE-SVC-... (statistic random) ->
  KUBE-SEP-... (DNAT), the masquerade mark chains, and KUBE-FORWARD dropping conntrack-INVALID packets;
- nftables: a table `ip kube-proxy` with nat-prerouting/nat-output hooks at priority dstnat jumping to `services`,
  a numgen spread over endpoint chains that DNAT, and filter-forward dropping `ct state invalid`;
- ipvs: the ClusterIP on a dummy `kube-ipvs0` (local on the node) and an IPVS virtual server in masquerade mode
  with `net.ipv4.vs.conntrack=1`, as kube-proxy sets it. Only where the kernel has ip_vs (`available_modes()`).
The node also forwards packets (as every node does), so a DNAT to a kube-dns pod reaches it.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import IN_CI
from tests.e2e.topology import KUBE_DNS_POD_IPS, Topology

CLUSTER_IP = "10.96.0.10"
SERVICE_CIDR = "10.96.0.0/12"

IPTABLES_RULES = f"""*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-TCOU7JCQXEZGVUNU - [0:0]
:KUBE-SEP-IT2ZTR26TO4XFPTO - [0:0]
:KUBE-SEP-YIL6JZP7A3QYXJU2 - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
-A KUBE-SERVICES -d {CLUSTER_IP}/32 -p udp -m udp --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU
-A KUBE-SERVICES -d {CLUSTER_IP}/32 -p tcp -m tcp --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-TCOU7JCQXEZGVUNU -m statistic --mode random --probability 0.5 -j KUBE-SEP-IT2ZTR26TO4XFPTO
-A KUBE-SVC-TCOU7JCQXEZGVUNU -j KUBE-SEP-YIL6JZP7A3QYXJU2
-A KUBE-SEP-IT2ZTR26TO4XFPTO -s {KUBE_DNS_POD_IPS[0]}/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-IT2ZTR26TO4XFPTO -j DNAT --to-destination {KUBE_DNS_POD_IPS[0]}
-A KUBE-SEP-YIL6JZP7A3QYXJU2 -s {KUBE_DNS_POD_IPS[1]}/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-YIL6JZP7A3QYXJU2 -j DNAT --to-destination {KUBE_DNS_POD_IPS[1]}
COMMIT
*filter
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
"""

NFTABLES_RULES = f"""
table ip kube-proxy {{
    chain nat-prerouting {{ type nat hook prerouting priority dstnat; policy accept; jump services; }}
    chain nat-output {{ type nat hook output priority -100; policy accept; jump services; }}
    chain nat-postrouting {{ type nat hook postrouting priority 100; policy accept; jump masquerading; }}
    chain filter-forward {{ type filter hook forward priority -110; policy accept; ct state invalid drop; }}
    chain masquerading {{
        meta mark & 0x4000 == 0 return
        meta mark set meta mark ^ 0x4000
        masquerade fully-random
    }}
    chain mark-for-masquerade {{ meta mark set meta mark | 0x4000; }}
    chain nodeports {{ }}
    chain services {{
        ip daddr {CLUSTER_IP} meta l4proto {{ tcp, udp }} th dport 53 goto service-kube-dns
        fib daddr type local jump nodeports
    }}
    chain service-kube-dns {{ numgen random mod 2 vmap {{ 0 : goto endpoint-1, 1 : goto endpoint-2 }}; }}
    chain endpoint-1 {{
        ip saddr {KUBE_DNS_POD_IPS[0]} jump mark-for-masquerade
        dnat to {KUBE_DNS_POD_IPS[0]}
    }}
    chain endpoint-2 {{
        ip saddr {KUBE_DNS_POD_IPS[1]} jump mark-for-masquerade
        dnat to {KUBE_DNS_POD_IPS[1]}
    }}
}}
"""


def ipvs_available() -> bool:
    """True where this kernel runs IPVS (the module is loaded, or built in) and ipvsadm is installed."""
    if not Path("/proc/net/ip_vs").exists() and shutil.which("modprobe"):
        subprocess.run(["modprobe", "ip_vs"], capture_output=True, check=False)
    return Path("/proc/net/ip_vs").exists() and shutil.which("ipvsadm") is not None


def available_modes() -> list:
    """The modes to run: iptables and nftables always; ipvs where the kernel has ip_vs. Without it, outside CI the
    ipvs case is reported as skipped with the reason; in CI it is not collected at all (a skip there is a failure,
    and no CI kernel of ours has ip_vs: docs/node.md says what IPVS clusters set instead, and why it works)."""
    import pytest

    modes: list = ["iptables", "nftables"]
    if ipvs_available():
        modes.append("ipvs")
    elif not IN_CI:
        modes.append(pytest.param("ipvs", marks=pytest.mark.skip(
            reason="this kernel has no ip_vs (or ipvsadm is missing): the IPVS mode runs where both exist")))
    return modes


def fallback_target(mode: str) -> str:
    """What the DaemonSet passes as --fallback-endpoints in this mode."""
    return CLUSTER_IP if mode == "ipvs" else "localdns-kube-dns.kube-system.svc.cluster.local"


def install(topo: Topology, mode: str) -> None:
    node = topo.node
    node.run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
    device = next(line.split(":")[1].strip().split("@")[0] for line in node.run("ip", "-o", "link").stdout
                  .splitlines() if line.split(":")[1].strip().startswith("nk"))
    if mode == "iptables":
        node.run("ip", "route", "replace", SERVICE_CIDR, "dev", device)
        subprocess.run(node.command("iptables-nft-restore", "--noflush"), input=IPTABLES_RULES, text=True,
                       check=True, env=node.env())
    elif mode == "nftables":
        node.run("ip", "route", "replace", SERVICE_CIDR, "dev", device)
        subprocess.run(node.command("nft", "-f", "-"), input=NFTABLES_RULES, text=True, check=True, env=node.env())
    elif mode == "ipvs":
        node.run("sysctl", "-qw", "net.ipv4.vs.conntrack=1")
        node.run("ip", "link", "add", "kube-ipvs0", "type", "dummy")
        node.run("ip", "addr", "add", f"{CLUSTER_IP}/32", "dev", "kube-ipvs0")
        for flag in ("-u", "-t"):
            node.run("ipvsadm", "-A", flag, f"{CLUSTER_IP}:53", "-s", "rr")
            for endpoint in KUBE_DNS_POD_IPS:
                node.run("ipvsadm", "-a", flag, f"{CLUSTER_IP}:53", "-r", f"{endpoint}:53", "-m")
    else:
        raise ValueError(mode)


def remove(topo: Topology, mode: str) -> None:
    node = topo.node
    if mode == "iptables":
        for family, tool in ((4, "iptables-nft-restore"),):
            kept = "\n".join(line for line in node.iptables_save(family).splitlines() if "KUBE-" not in line) + "\n"
            subprocess.run(node.command(tool), input=kept, text=True, check=True, env=node.env())
    elif mode == "nftables":
        node.run("nft", "delete", "table", "ip", "kube-proxy", check=False)
    elif mode == "ipvs":
        node.run("ipvsadm", "-C", check=False)
        node.run("ip", "link", "del", "kube-ipvs0", check=False)
    node.run("ip", "route", "del", SERVICE_CIDR, check=False)
    node.run("sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0")
    topo.flush_conntrack()
