"""Latency of pipelined misses to dnsmasq over the cache's kube-dns connection, with and without TCP_QUICKACK.

dnsmasq leaves Nagle's algorithm on: while one answer is unacknowledged it holds the next, and the receiver's
delayed ACK (40 ms on Linux) is what releases it. `python -m bench.pipelined` starts dnsmasq on loopback as
kube-dns, sends bursts of distinct queries at once through `cache.tcpupstream.TcpUpstream` (one connection), and
prints each mode's latency percentiles, round by round (rounds alternate the modes, so load on a shared machine
falls on both): `delayed` with the kernel's delayed ACKs, `quickack` as the code is (re-armed after each read that
leaves queries unanswered).
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from cache import tcpupstream, wire
from cache.addresses import Address
from cache.stats import Stats

NAMES = 100


def start_dnsmasq(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    hosts = work / "hosts"
    hosts.write_text("".join(f"10.9.0.{i + 1} n{i}.cluster.local\n" for i in range(NAMES)))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    process = subprocess.Popen([dnsmasq, "--keep-in-foreground", f"--port={port}", "--listen-address=127.0.0.1",
                                "--bind-interfaces", "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}",
                                "--cache-size=0", "--pid-file=", "--user=root"])
    time.sleep(0.5)
    return process, port


async def bursts(port: int, size: int, count: int) -> list[float]:
    """Milliseconds from a burst's start to its last answer, for `count` bursts of `size` queries."""
    upstream = tcpupstream.TcpUpstream(Address("tcp", "127.0.0.1", port), Stats())
    questions = [wire.encode_name(f"n{i}.cluster.local") + struct.pack("!HH", 1, 1) for i in range(size)]
    await upstream.exchange(questions[0], False, False, 2)
    lasts = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            await asyncio.gather(*(upstream.exchange(q, False, False, 2) for q in questions))
            lasts.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(0.02)  # idle between bursts, as misses come
    finally:
        upstream.close()
    return lasts


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    pick = lambda f: ordered[min(len(ordered) - 1, int(f * len(ordered)))]  # noqa: E731
    return f"median {pick(0.5):6.2f}  p90 {pick(0.9):6.2f}  max {ordered[-1]:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bursts", type=int, default=100, help="bursts per mode and round")
    parser.add_argument("--sizes", default="2,10,50", help="queries per burst")
    args = parser.parse_args()
    quick_ack = tcpupstream._Connection.quick_ack
    with tempfile.TemporaryDirectory() as work:
        process, port = start_dnsmasq(Path(work))
        try:
            for round_ in range(1, args.rounds + 1):
                for size in map(int, args.sizes.split(",")):
                    for mode in ("delayed", "quickack"):
                        tcpupstream._Connection.quick_ack = quick_ack if mode == "quickack" else lambda self: None
                        lasts = asyncio.run(bursts(port, size, args.bursts))
                        print(f"round {round_}  burst {size:3d}  {mode:8s}  last answer of a burst: "
                              f"{percentiles(lasts)}", flush=True)
        finally:
            tcpupstream._Connection.quick_ack = quick_ack
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
