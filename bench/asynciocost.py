"""`python -m bench.asynciocost`: instructions per exchange of the asyncio machinery a cache miss can go through,
counted with callgrind, so that the choice between a Task, a callback and a timer per miss rests on figures.

Each way is run under `valgrind --tool=callgrind` twice, for N exchanges and for none; the difference divided by N
is its cost (start-up cancels out). An exchange is a future answered later, as an upstream answer is:

- future: the future alone (created, answered);
- callback: a done-callback on it instead of a waiting coroutine;
- task: a Task per exchange awaiting it (what `create_task(self._fetch(...))` costs);
- task+call_later: the Task, bounded by a `loop.call_later` timer cancelled on the answer;
- task+wait_for: the Task, bounded by `asyncio.wait_for` (what `TcpUpstream.exchange` does).
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = ("future", "callback", "task", "task+call_later", "task+wait_for")
BATCH = 100  # exchanges in flight at once, as under a burst of misses


async def _plain(future: asyncio.Future) -> object:
    return await future


async def _wait_for(future: asyncio.Future) -> object:
    return await asyncio.wait_for(future, 2.0)


async def _call_later(future: asyncio.Future) -> object:
    timer = asyncio.get_running_loop().call_later(2.0, future.cancel)
    try:
        return await future
    finally:
        timer.cancel()


async def exchanges(mode: str, count: int) -> None:
    loop = asyncio.get_running_loop()
    answered: list[object] = []
    tasks: list[asyncio.Task] = []  # held until the round is over (the loop keeps only weak references)
    for _ in range(count // BATCH):
        futures = [loop.create_future() for _ in range(BATCH)]
        if mode == "callback":
            for future in futures:
                future.add_done_callback(answered.append)
        elif mode != "future":
            waiter = {"task": _plain, "task+wait_for": _wait_for, "task+call_later": _call_later}[mode]
            tasks[:] = [loop.create_task(waiter(future)) for future in futures]
        await asyncio.sleep(0)
        for future in futures:
            future.set_result(b"answer")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        answered.clear()


def instructions(mode: str, count: int, out: Path) -> int:
    dump = out / f"{mode}-{count}.out"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", sys.executable, "-m",
                    "bench.asynciocost", "--run", mode, str(count)], check=True, capture_output=True, timeout=600,
                   cwd=Path(__file__).resolve().parent.parent)
    from bench.profile import callgrind_total
    return callgrind_total(dump.read_text(errors="replace"))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--run"]:
        import uvloop
        uvloop.run(exchanges(argv[1], int(argv[2])))
        return 0
    count = int(argv[0]) if argv else 20_000
    with tempfile.TemporaryDirectory() as out:
        for mode in MODES:
            cost = (instructions(mode, count, Path(out)) - instructions(mode, 0, Path(out))) / count
            print(f"{mode:16} {cost:8,.0f} instructions per exchange (uvloop, {count:,} exchanges)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
