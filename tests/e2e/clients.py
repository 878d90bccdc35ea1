"""Real resolver libraries for the e2e tests, and a kube-dns stand-in for names with many addresses.

- musl: a tiny getaddrinfo program compiled static with `musl-gcc` (Debian's musl 1.2.3, as in Alpine before 3.18:
  no retry over TCP, so a truncated reply is all it ever sees);
- Node: `dns.Resolver` (c-ares, which retries over TCP on TC) and `dns.lookup` (the system's getaddrinfo);
- `ManyAddresses`: a second dnsmasq in the kube-dns namespace, on an address of its own, answering one name with
  many A records (a headless Service with that many endpoints), so topology.py's dnsmasq stays as it is.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.conftest import require_tool
from tests.e2e.topology import Topology

GETADDRINFO_C = r"""
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    struct addrinfo hints, *found, *each;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int error = getaddrinfo(argv[1], NULL, &hints, &found);
    if (error) {
        fprintf(stderr, "getaddrinfo: %s\n", gai_strerror(error));
        return 2;
    }
    for (each = found; each; each = each->ai_next) {
        char text[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &((struct sockaddr_in *)each->ai_addr)->sin_addr, text, sizeof text);
        puts(text);
    }
    freeaddrinfo(found);
    return 0;
}
"""

NODE_RESOLVE4 = """
const dns = require('dns');
new dns.promises.Resolver().resolve4(process.argv[1])
  .then(addresses => console.log(JSON.stringify(addresses)))
  .catch(error => { console.error(error.code); process.exit(2); });
"""

NODE_LOOKUP = """
require('dns').lookup(process.argv[1], {all: true, family: 4}, (error, found) => {
  if (error) { console.error(error.code); process.exit(2); }
  console.log(JSON.stringify(found.map(entry => entry.address)));
});
"""


def musl_getaddrinfo(workdir: Path) -> Path:
    """The static musl program: `gai NAME` prints one IPv4 address a line, or exits 2."""
    compiler = require_tool("musl-gcc")
    source, binary = workdir / "gai.c", workdir / "gai-musl"
    source.write_text(GETADDRINFO_C)
    subprocess.run([compiler, "-static", "-O2", "-o", str(binary), str(source)], check=True, capture_output=True,
                   timeout=120)
    return binary


def addresses_from(done: subprocess.CompletedProcess[str], json_output: bool) -> list[str] | str:
    """The addresses a client printed, or what it said when it failed."""
    if done.returncode != 0:
        return (done.stderr or done.stdout).strip() or f"exit {done.returncode}"
    return sorted(json.loads(done.stdout) if json_output else done.stdout.split())


def musl(topo: Topology, binary: Path, name: str) -> list[str] | str:
    return addresses_from(topo.pod_run(str(binary), name, check=False), json_output=False)


def node(topo: Topology, script: str, name: str) -> list[str] | str:
    return addresses_from(topo.pod_run(require_tool("node"), "-e", script, name, check=False), json_output=True)


class ManyAddresses:
    """dnsmasq at `ip` in the kube-dns namespace answering each name of `names` with its many A records."""

    def __init__(self, topo: Topology, ip: str, names: dict[str, list[str]]) -> None:
        self.topo, self.ip = topo, ip
        self.device = f"kn{topo.suffix}"
        hosts = topo.workdir / f"many-{ip}.hosts"
        hosts.write_text("".join(f"{address} {name}\n" for name, addresses in names.items() for address in addresses))
        topo.kube_dns.run("ip", "addr", "add", f"{ip}/24", "dev", self.device)
        self.log = topo.workdir / f"many-{ip}.log"
        stderr = open(topo.workdir / f"many-{ip}.stderr", "w")
        self.process = topo.kube_dns.popen(
            "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces",
            f"--listen-address={ip}", "--port=53", "--local=/cluster.local/", f"--addn-hosts={hosts}",
            "--cache-size=0", "--local-ttl=30", "--user=root", "--pid-file=", "--log-queries",
            f"--log-facility={self.log}", stdout=subprocess.DEVNULL, stderr=stderr)
        stderr.close()
        probe = next(iter(names))
        deadline = time.monotonic() + 10
        while self.topo.kube_dns.run("dig", "+short", "+time=1", "+tries=1", f"@{ip}", probe,
                                     check=False).stdout.strip() == "":
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"dnsmasq at {ip} did not answer")
            time.sleep(0.1)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.topo.kube_dns.run("ip", "addr", "del", f"{self.ip}/24", "dev", self.device, check=False)
