"""A node, a pod and kube-dns as three network namespaces, wired as a Kubernetes node wires them.

    pod ns (eth0 10.78.0.2, fd00:78::2) --veth-- node ns --veth-- kube-dns ns (10.77.0.2, 10.77.0.3, 10.77.0.4,
                          (10.78.0.1, fd00:78::1 | 10.77.0.1, fd00:77::1)        fd00:77::2)
                          cache on 169.254.20.10 [+ fd00:ec::10]
                          (interface `nodelocaldns`, kind bridge)

dnsmasq in the kube-dns namespace plays CoreDNS: records under cluster.local on 10.77.0.2 (the kube-dns
"ClusterIP" the cache forwards to over TCP), and an external-looking zone example.org that the node's upstream
10.77.0.3 serves (there is no internet). 10.77.0.2, 10.77.0.4 and fd00:77::2 are also the kube-dns "pods" that the
headless Service localdns-kube-dns resolves to (the fail-open fallback's endpoints; tests/e2e/kubeproxy.py puts a
ClusterIP in front of them). The node does not forward packets unless a test switches forwarding on.
Both the node and kube-dns namespaces carry a firewall rule that uses
conntrack, as every real node does (kube-proxy's, a CNI's), so conntrack tracks flows there unless NOTRACK says not
to. The pod's /etc/resolv.conf is what `python -m webhook preview` renders for a sample pod in namespace default.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.netsetup.netns import PYTHON, REPO, Netns

LOCAL_IP = "169.254.20.10"
KUBE_DNS_IP = "10.77.0.2"
NODE_UPSTREAM_IP = "10.77.0.3"
NODE_TO_KUBE_DNS = "10.77.0.1"
NODE_TO_POD = "10.78.0.1"
POD_IP = "10.78.0.2"
KUBE_DNS_POD_IPS = ("10.77.0.2", "10.77.0.4")  # the endpoints of the headless Service localdns-kube-dns
KUBE_DNS_POD_IP6 = "fd00:77::2"
NODE_TO_KUBE_DNS6 = "fd00:77::1"
FALLBACK_NAME = "localdns-kube-dns.kube-system.svc.cluster.local"
LOCAL_IP6 = "fd00:ec::10"  # a second listen address, to prove the IPv6 path (interface /128, ip6tables)
NODE_TO_POD6 = "fd00:78::1"
POD_IP6 = "fd00:78::2"

RECORDS = {
    "svc-1.default.svc.cluster.local": "10.96.1.1",
    "svc-2.default.svc.cluster.local": "10.96.1.2",
    "db.other.svc.cluster.local": "10.96.2.1",
    "www.example.org": "192.0.2.80",
    "api.example.org": "192.0.2.81",
}
# The headless Service: one record per kube-dns pod (dnsmasq adds up repeated host-records).
HEADLESS_RECORDS = [f"{FALLBACK_NAME},{ip}" for ip in KUBE_DNS_POD_IPS] + [f"{FALLBACK_NAME},{KUBE_DNS_POD_IP6}"]

SAMPLE_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: e2e-client
spec:
  containers:
  - name: app
    image: registry.k8s.io/pause:3.10
"""


def webhook_resolv_conf(workdir: Path) -> str:
    """The pod's resolv.conf, cut from `python -m webhook preview`'s '/etc/resolv.conf:' section."""
    sample = workdir / "pod.yaml"
    sample.write_text(SAMPLE_POD)
    done = subprocess.run([PYTHON, "-m", "webhook", "preview", str(sample), "--namespace", "default"],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"python -m webhook preview failed ({done.returncode}): {done.stderr}")
    lines = done.stdout.splitlines()
    start = lines.index("/etc/resolv.conf:") + 1
    body = []
    for line in lines[start:]:
        if not line.strip() or line.startswith("== "):
            break
        body.append(line)
    text = "\n".join(body) + "\n"
    if f"nameserver {LOCAL_IP}" not in text:
        raise AssertionError(f"the webhook did not point the sample pod at the cache:\n{done.stdout}")
    return text


@dataclass
class Topology:
    workdir: Path
    suffix: str
    kube_dns: Netns
    node: Netns
    pod: Netns
    dnsmasq: subprocess.Popen | None = None
    dnsmasq_log: Path = field(default=Path("/dev/null"))
    resolv_conf: str = ""
    netns_etc: list[Path] = field(default_factory=list)

    # --- clients in the pod --------------------------------------------------------------------------------------

    def pod_run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.pod.run(*argv, check=check)

    # --- observation ------------------------------------------------------------------------------------------

    def conntrack(self, ns: Netns, *filters: str) -> list[str]:
        done = ns.run("conntrack", "-L", *filters, check=False)
        return [line for line in done.stdout.splitlines() if "=" in line]

    def flush_conntrack(self) -> None:
        for ns in (self.node, self.kube_dns):
            ns.run("conntrack", "-F", check=False)

    def dnsmasq_queries(self) -> list[str]:
        return [line for line in self.dnsmasq_log.read_text().splitlines() if "query[" in line]


def build(workdir: Path) -> Topology:
    suffix = os.urandom(2).hex()
    kube_dns, node, pod = Netns("kdns"), Netns("node"), Netns("pod")
    topo = Topology(workdir, suffix, kube_dns, node, pod)
    try:
        _wire(topo)
        _start_dnsmasq(topo)
        topo.resolv_conf = webhook_resolv_conf(workdir)
        _write_netns_etc(topo, pod, topo.resolv_conf)
        # The node's own resolver: its upstream, as on a real node.
        _write_netns_etc(topo, node, f"nameserver {NODE_UPSTREAM_IP}\n")
        return topo
    except BaseException:
        destroy(topo)
        raise


def destroy(topo: Topology) -> None:
    if topo.dnsmasq is not None:
        _stop(topo.dnsmasq)
    for ns in (topo.pod, topo.node, topo.kube_dns):
        ns.close()
    for directory in topo.netns_etc:
        shutil.rmtree(directory, ignore_errors=True)


def remove_our_rules(topo: Topology, family: int = 4) -> None:
    saved = topo.node.iptables_save(family)
    kept = "\n".join(line for line in saved.splitlines() if "localdns" not in line) + "\n"
    restore = "iptables-nft-restore" if family == 4 else "ip6tables-nft-restore"
    subprocess.run(topo.node.command(restore), input=kept, text=True, check=True)
    assert topo.node.our_rules(family) == []


def _wire(topo: Topology) -> None:
    s = topo.suffix
    node, kdns, pod = topo.node, topo.kube_dns, topo.pod
    subprocess.run(["ip", "link", "add", f"nk{s}", "netns", node.name, "type", "veth",
                    "peer", "name", f"kn{s}", "netns", kdns.name], check=True)
    subprocess.run(["ip", "link", "add", f"np{s}", "netns", node.name, "type", "veth",
                    "peer", "name", "eth0", "netns", pod.name], check=True)
    node.run("ip", "addr", "add", f"{NODE_TO_KUBE_DNS}/24", "dev", f"nk{s}")
    node.run("ip", "addr", "add", f"{NODE_TO_POD}/24", "dev", f"np{s}")
    kdns.run("ip", "addr", "add", f"{KUBE_DNS_IP}/24", "dev", f"kn{s}")
    kdns.run("ip", "addr", "add", f"{NODE_UPSTREAM_IP}/24", "dev", f"kn{s}")
    kdns.run("ip", "addr", "add", f"{KUBE_DNS_POD_IPS[1]}/24", "dev", f"kn{s}")
    kdns.run("ip", "addr", "add", f"{KUBE_DNS_POD_IP6}/64", "dev", f"kn{s}", "nodad")
    node.run("ip", "addr", "add", f"{NODE_TO_KUBE_DNS6}/64", "dev", f"nk{s}", "nodad")
    pod.run("ip", "addr", "add", f"{POD_IP}/24", "dev", "eth0")
    for ns, dev in ((node, f"nk{s}"), (node, f"np{s}"), (kdns, f"kn{s}"), (pod, "eth0")):
        ns.run("ip", "link", "set", dev, "up")
    pod.run("ip", "route", "add", "default", "via", NODE_TO_POD)
    node.run("ip", "addr", "add", f"{NODE_TO_POD6}/64", "dev", f"np{s}", "nodad")
    pod.run("ip", "addr", "add", f"{POD_IP6}/64", "dev", "eth0", "nodad")
    pod.run("ip", "-6", "route", "add", "default", "via", NODE_TO_POD6)
    kdns.run("ip", "route", "add", "default", "via", NODE_TO_KUBE_DNS)
    kdns.run("ip", "-6", "route", "add", "default", "via", NODE_TO_KUBE_DNS6)
    for ns in (node, kdns):
        # A firewall rule that needs conntrack, like kube-proxy's; it makes the kernel track this namespace.
        for tool in ("iptables-nft", "ip6tables-nft"):
            ns.run(tool, "-A", "INPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")


def _start_dnsmasq(topo: Topology) -> None:
    topo.dnsmasq_log = topo.workdir / "dnsmasq.log"
    args = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces",
            f"--listen-address={KUBE_DNS_IP},{NODE_UPSTREAM_IP},{KUBE_DNS_POD_IPS[1]},{KUBE_DNS_POD_IP6}",
            "--except-interface=lo", "--port=53",
            "--local=/cluster.local/", "--local=/example.org/", "--cache-size=0", "--local-ttl=30", "--user=root",
            "--pid-file=", "--log-queries", f"--log-facility={topo.dnsmasq_log}"]
    args += [f"--host-record={name},{ip}" for name, ip in RECORDS.items()]
    args += [f"--host-record={record}" for record in HEADLESS_RECORDS]
    stderr_path = topo.workdir / "dnsmasq.stderr"
    with open(stderr_path, "w") as stderr:  # a file, not a pipe nobody reads: dnsmasq must never block on it
        topo.dnsmasq = topo.kube_dns.popen(*args, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 10
    while True:
        probe = topo.kube_dns.run("dig", "+short", "+time=1", "+tries=1", f"@{KUBE_DNS_IP}",
                                  "svc-1.default.svc.cluster.local", check=False)
        if probe.stdout.strip() == RECORDS["svc-1.default.svc.cluster.local"]:
            return
        if topo.dnsmasq.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"dnsmasq did not answer: {stderr_path.read_text() or 'no message'}")
        time.sleep(0.1)


def _write_netns_etc(topo: Topology, ns: Netns, resolv_conf: str) -> None:
    directory = Path("/etc/netns") / ns.name  # `ip netns exec` bind-mounts these files over /etc
    directory.mkdir(parents=True, exist_ok=False)
    topo.netns_etc.append(directory)
    (directory / "resolv.conf").write_text(resolv_conf)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the cache under test ------------------------------------------------------------------------------------------

class Cache:
    """One `python -m cache` process in the node namespace; its log in a file, stopped by PID."""

    def __init__(self, topo: Topology, name: str, *extra: str, env: dict[str, str] | None = None,
                 setup_network: bool = True, sync_interval: float = 1.0) -> None:
        self.topo = topo
        self.metrics_port = _free_port_hint()
        self.log_path = topo.workdir / f"cache-{name}.log"
        args = [PYTHON, "-m", "cache", "--listen", f"{LOCAL_IP}:53", "--kube-dns", f"{KUBE_DNS_IP}:53",
                "--forward", f".=udp://{NODE_UPSTREAM_IP}:53", "--health", f"{LOCAL_IP}:8080",
                "--metrics", f"127.0.0.1:{self.metrics_port}"]
        if setup_network:
            args += ["--setup-network", "--interface-kind", "bridge", "--sync-interval", str(sync_interval)]
        if "--drain" not in extra:
            args += ["--drain", "0.2"]  # the handover test sets its own; elsewhere a long drain only costs time
        args += list(extra)
        self.log = open(self.log_path, "w")
        self.process = topo.node.popen(*args, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)

    @property
    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def metrics(self) -> str:
        code = (f"import urllib.request; print(urllib.request.urlopen("
                f"'http://127.0.0.1:{self.metrics_port}/metrics', timeout=2).read().decode())")
        return self.topo.node.run(PYTHON, "-c", code).stdout

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
        total = 0.0
        for line in self.metrics().splitlines():
            match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
            if not match or match.group(1) != name:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
        return total

    def wait_serving(self, timeout: float = 20) -> None:
        """Until this instance's metrics answer and a query through the pod's path gets an answer."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"cache exited {self.process.returncode}:\n{self.output}")
            with contextlib.suppress(AssertionError):
                self.metrics()
                answer = self.topo.pod.run("dig", "+short", "+time=1", "+tries=1", f"@{LOCAL_IP}",
                                           "svc-1.default.svc.cluster.local", check=False).stdout.strip()
                if answer == RECORDS["svc-1.default.svc.cluster.local"]:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"cache did not serve within {timeout}s:\n{self.output}")
            time.sleep(0.2)

    def wait_rules(self, count: int = 13) -> None:
        """Rules go in once the listeners serve and the upstreams were checked: wait for all of them."""
        self.wait_until(lambda: len(self.topo.node.our_rules()) == count, f"{count} rules in place")

    def wait_until(self, predicate, what: str, timeout: float = 15, poll: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not happen within {timeout}s:\n{self.output}")
            time.sleep(poll)

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


_next_port = iter(range(19253, 20000))


def _free_port_hint() -> int:
    # The node namespace is private to the test run, so its ports are ours: one per instance, never reused.
    return next(_next_port)


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
