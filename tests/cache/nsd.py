"""NSD, the authoritative truth for the differential tests: signed zones made in a temporary directory (keys from
`ldns-keygen`, signatures from `ldns-signzone`), served on loopback at a free port, started and stopped by PID.

The zones hold what makes a cache's answers hard to get right: RRsets too big for 512 and 1232 bytes, CNAME
chains inside and out of the zone, a wildcard, empty non-terminals, SRV/MX with additional records, CAA, large
TXT, NXDOMAIN and NODATA with their SOA, and with DO the RRSIGs and NSEC/NSEC3 proofs (RSA 2048 signatures, so
that even small answers need cutting at 512 bytes).
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from tests.cache.conftest import free_port, stop_process
from tests.conftest import require_tool

ZONE = "zone.test"
NSEC3_ZONE = "nsec3.test"

RECORDS = """\
$TTL 300
@ IN SOA ns1 hostmaster 1 3600 900 604800 60
@ NS ns1
@ NS ns2
ns1 A 127.0.0.1
ns2 A 127.0.0.2
ns1 AAAA ::1
www A 192.0.2.1
www AAAA 2001:db8::1
mx MX 10 mail1
mx MX 20 mail2
mail1 A 192.0.2.25
mail1 AAAA 2001:db8::25
mail2 A 192.0.2.26
_http._tcp SRV 0 5 80 www
_http._tcp SRV 0 5 8080 mail1
caa CAA 0 issue "ca.example.net"
caa CAA 0 iodef "mailto:security@zone.test"
*.wild A 192.0.2.99
a.b.ent A 192.0.2.50
alias1 CNAME alias2
alias2 CNAME www
out CNAME www.elsewhere.example.
into CNAME www.nsec3.test.
"""


def zone_text(origin: str) -> str:
    lines = [f"$ORIGIN {origin}.", RECORDS]
    lines += [f"big A 10.1.0.{i}" for i in range(1, 41)]
    lines += [f"big6 AAAA 2001:db8::{i:x}" for i in range(1, 41)]
    # One TXT record of ten 120-byte strings (1.2 KB, cannot be split), and four of 240 bytes (can).
    lines.append("txt TXT " + " ".join(f'"{f"t{i}" * 60}"' for i in range(10)))
    lines += [f'bigtxt TXT "{f"x{i}" * 120}"' for i in range(4)]
    return "\n".join(lines) + "\n"


class Nsd:
    def __init__(self, workdir: Path) -> None:
        self.binary = require_tool("nsd")
        for tool in ("ldns-keygen", "ldns-signzone"):
            require_tool(tool)
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def _sign(self, origin: str, nsec3: bool) -> str:
        (self.workdir / origin).write_text(zone_text(origin))
        keys = []
        for ksk in (True, False):
            made = subprocess.run(["ldns-keygen", "-a", "RSASHA256", "-b", "2048", *(["-k"] if ksk else []), origin],
                                  cwd=self.workdir, capture_output=True, text=True, check=True, timeout=120)
            keys.append(made.stdout.strip())
        signed = f"{origin}.signed"
        options = ["-n", "-t", "0"] if nsec3 else []  # no salt, no extra iterations (RFC 9276)
        subprocess.run(["ldns-signzone", *options, "-f", signed, origin, *keys], cwd=self.workdir, check=True,
                       capture_output=True, timeout=120)
        return signed

    def start(self) -> Nsd:
        zones = [(ZONE, self._sign(ZONE, nsec3=False)), (NSEC3_ZONE, self._sign(NSEC3_ZONE, nsec3=True))]
        conf = self.workdir / "nsd.conf"
        conf.write_text("\n".join([
            "server:",
            "  ip-address: 127.0.0.1",
            f"  port: {self.port}",
            '  username: ""',
            '  chroot: ""',
            f'  zonesdir: "{self.workdir}"',
            '  database: ""',
            '  pidfile: ""',
            '  xfrdfile: ""',
            '  zonelistfile: "zone.list"',
            '  logfile: "nsd.log"',
            "  server-count: 1",
            "  round-robin: no",  # the default, said aloud: the record order is compared
            "  ipv4-edns-size: 4096",  # honour the client's size up to 4096, as the cache does (NSD's default: 1232)
            "remote-control:",
            "  control-enable: no",
            *(line for name, signed in zones for line in ("zone:", f"  name: {name}", f"  zonefile: {signed}")),
        ]) + "\n")
        self.proc = subprocess.Popen([self.binary, "-d", "-c", str(conf)], cwd=self.workdir,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nsd exited: {self.proc.stderr.read().decode()}")
            try:
                for name in (ZONE, NSEC3_ZONE):
                    dns.query.udp(dns.message.make_query(name, "SOA"), "127.0.0.1", port=self.port, timeout=0.3)
                return self
            except (dns.exception.Timeout, OSError):
                continue
        raise RuntimeError("nsd did not answer")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc.stderr.close()
