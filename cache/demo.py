"""`python -m cache.demo [NAME ...]`: the cache in front of a kube-dns stand-in, on loopback, no root needed.

The stand-in is a tiny authoritative server for cluster.local (dnspython; it is not on the cache's hit path):
the usual cluster services, plus a Service record for every cluster.local name the demo is asked about, as if
the sample pods' Services existed. Each name is resolved through the cache twice: a miss (forwarded to the
stand-in over TCP), then a hit (answered from the cache's raw bytes).
"""
from __future__ import annotations

import asyncio
import hashlib
import sys
import threading
import time
from typing import TextIO, cast

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from .config import Settings
from .daemon import Daemon
from .server import bind_pair

ZONE = dns.name.from_text("cluster.local.")
TTL = 30
DEFAULT_NAMES = ["kubernetes.default.svc.cluster.local", "kube-dns.kube-system.svc.cluster.local",
                 "web.demo.svc.cluster.local", "missing.demo.svc.cluster.local"]
BASE_RECORDS = {
    "kubernetes.default.svc.cluster.local.": ("A", "10.96.0.1"),
    "kube-dns.kube-system.svc.cluster.local.": ("A", "10.96.0.10"),
    "web.demo.svc.cluster.local.": ("A", "10.96.12.7"),
}
SOA = "ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"


def service_ip(name: str) -> str:
    """A stable ClusterIP-like address for a name the demo was asked about."""
    digest = hashlib.sha256(name.encode()).digest()
    return f"10.96.{digest[0]}.{max(digest[1], 2)}"


class KubeDnsStandIn:
    """Authoritative for cluster.local over UDP and TCP; REFUSED for everything else."""

    def __init__(self, records: dict[str, tuple[str, str]]) -> None:
        self.records = {dns.name.from_text(k): v for k, v in records.items()}
        self.port = 0
        self._servers: list[asyncio.BaseTransport | asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()

    def answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        response = dns.message.make_response(query)
        question = query.question[0]
        if not question.name.is_subdomain(ZONE):
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        response.flags |= dns.flags.AA
        record = self.records.get(question.name)
        if record and dns.rdatatype.from_text(record[0]) == question.rdtype:
            response.answer.append(dns.rrset.from_text(question.name, TTL, "IN", record[0], record[1]))
        else:
            if record is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(dns.rrset.from_text(ZONE, TTL, "IN", "SOA", SOA))
        return response.to_wire()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        stand_in = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.DatagramTransport, transport)

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                reply = stand_in.answer(data)
                if reply:
                    self.transport.sendto(reply, addr)

        udp, tcp_socket = bind_pair("127.0.0.1", 0)
        transport, _ = await loop.create_datagram_endpoint(Udp, sock=udp)
        self.port = udp.getsockname()[1]

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.add(writer)
            try:
                while True:
                    length = int.from_bytes(await reader.readexactly(2), "big")
                    reply = self.answer(await reader.readexactly(length))
                    if reply:
                        writer.write(len(reply).to_bytes(2, "big") + reply)
            except (asyncio.IncompleteReadError, OSError):
                pass
            finally:
                self._writers.discard(writer)
                writer.close()

        server = await asyncio.start_server(tcp, sock=tcp_socket)
        self._servers = [transport, server]

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()  # its handler sees the end of the stream and returns
        for _ in range(100):
            if not self._writers:
                break
            await asyncio.sleep(0.01)


class _Running:
    """The stand-in and the cache on an event loop in a background thread."""

    def __init__(self, records: dict[str, tuple[str, str]]) -> None:
        self.loop = asyncio.new_event_loop()
        self.stand_in = KubeDnsStandIn(records)
        self.thread = threading.Thread(target=self.loop.run_forever, name="cache-demo", daemon=True)

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.stand_in.start(), self.loop).result(10)
        settings = Settings(listen=("127.0.0.1:0",), kube_dns=f"127.0.0.1:{self.stand_in.port}",
                            forward=(f".=udp://127.0.0.1:{self.stand_in.port}",), resolv_conf="/dev/null",
                            health="off", metrics="off", drain=0, udp_batch=True)
        settings.check()
        self.daemon = Daemon(settings)
        self.result = asyncio.run_coroutine_threadsafe(self.daemon.run(), self.loop)
        deadline = time.monotonic() + 10
        while not self.daemon.started.is_set():
            if self.result.done():
                self.result.result()  # raises what stopped it
            if time.monotonic() > deadline:
                raise RuntimeError("the cache did not start")
            time.sleep(0.01)

    @property
    def cache_port(self) -> int:
        return self.daemon.listeners.bound[0][1]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.daemon.stop)
        self.result.result(10)

        asyncio.run_coroutine_threadsafe(self.stand_in.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def describe(response: dns.message.Message) -> str:
    if response.rcode() != dns.rcode.NOERROR:
        return dns.rcode.to_text(response.rcode())
    values = [f"{rd.to_text()} (ttl {rrset.ttl})" for rrset in response.answer for rd in rrset]
    return ", ".join(values) or "no records (NODATA)"


def run(names: list[str], out: TextIO = sys.stdout) -> None:
    """Start the stand-in and the cache, resolve each name twice through the cache (miss, hit), stop both."""
    names = list(names) or DEFAULT_NAMES
    records = dict(BASE_RECORDS)
    for name in names:
        fqdn = dns.name.from_text(name)
        if fqdn.is_subdomain(ZONE) and fqdn.labels[0] not in (b"missing",) and fqdn.to_text() not in records:
            records[fqdn.to_text()] = ("A", service_ip(fqdn.to_text()))
    running = _Running(records)
    running.start()
    try:
        port = running.cache_port
        print(f"kube-dns stand-in (cluster.local) on 127.0.0.1:{running.stand_in.port}; "
              f"localdns cache on 127.0.0.1:{port}, forwarding cluster.local over TCP", file=out)
        stats = running.daemon.stats
        seen = {"miss": 0, "hit": 0}
        for name in names:
            for _ in range(2):
                query = dns.message.make_query(name, "A")
                misses = stats.misses
                started = time.perf_counter()
                response = dns.query.udp(query, "127.0.0.1", port=port, timeout=5)
                elapsed_ms = (time.perf_counter() - started) * 1000
                how = "miss" if stats.misses != misses else "hit"
                seen[how] += 1
                print(f"  {name:<48} {how:<4} {elapsed_ms:7.2f} ms  {describe(response)}", file=out)
        print(f"cache: {seen['miss']} misses (forwarded to kube-dns), {seen['hit']} hits (answered from the cache)",
              file=out)
    finally:
        running.stop()


def main(argv: list[str] | None = None) -> int:
    run(sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
