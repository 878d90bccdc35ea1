"""The listener floor: a UDP server that answers every query from its raw bytes (the query turned into an empty
NOERROR response) and does nothing else. Run with the batched listener and with a plain uvloop datagram endpoint, it
shows what the I/O path alone costs per query, apart from the resolver.

Run: python -m bench.echo --port P [--plain]
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import socket

from cache import batchio

FLAGS_RESPONSE = b"\x81\x80"  # QR, RD, RA, NOERROR


def answer(data: bytes, addr, send) -> None:
    if len(data) >= 12:
        send(data[:2] + FLAGS_RESPONSE + data[4:], addr)


class _Plain(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.DatagramTransport) -> None:  # type: ignore[override]
        self.send = transport.sendto

    def datagram_received(self, data: bytes, addr) -> None:
        answer(data, addr, self.send)


async def serve(port: int, plain: bool) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    loop = asyncio.get_running_loop()
    listener = None
    if plain:
        await loop.create_datagram_endpoint(_Plain, sock=sock)
    else:
        listener = batchio.BatchListener(sock, answer)
        listener.start()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    if listener is not None:
        print(f"batch listener: {listener.stats()}", flush=True)  # in the server's log under --keep


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.echo")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--plain", action="store_true", help="plain datagram endpoint instead of recvmmsg/sendmmsg")
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port, args.plain))


if __name__ == "__main__":
    main()
