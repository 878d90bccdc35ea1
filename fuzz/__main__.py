"""`python -m fuzz`: every target in turn, each for $FUZZ_SECONDS (60) seconds, starting from its seed corpus
(fuzz/corpus/TARGET) and what earlier runs found (build/fuzz/TARGET/corpus); crashing inputs are written to
build/fuzz/TARGET/crashes, and the exit status is 1 if any target crashed. `make fuzz` runs this.

`python -m fuzz TARGET [LIBFUZZER ARGS]` (or `python -m fuzz.TARGET ...`): one target under libFuzzer, with its
flags and corpus directories, e.g. `python -m fuzz cache_query -max_total_time=300 fuzz/corpus/cache_query`, or a
crash file alone to reproduce it. Only the project's packages are instrumented: the coverage that guides the fuzzer
is the cache's and the webhook's, not that of the libraries judging them.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("cache_query", "cache_answer", "webhook_review")
SEEDS = ROOT / "fuzz" / "corpus"
WORK = ROOT / "build" / "fuzz"
INSTRUMENTED = ["cache", "webhook"]
PER_INPUT_TIMEOUT = 10  # seconds one input may take before libFuzzer calls it a hang (a crash)


def fuzz_one(name: str, args: list[str]) -> None:
    """Run one target under libFuzzer in this process (does not return)."""
    import atheris

    with atheris.instrument_imports(include=INSTRUMENTED):
        target = importlib.import_module(f"fuzz.{name}")
    mutator = getattr(target, "MUTATOR", None)

    def test_one_input(data: bytes) -> None:
        target.check(data)

    extra = {} if mutator is None else {
        "custom_mutator": lambda data, max_size, seed: mutator(data, max_size, seed, atheris.Mutate)}
    atheris.Setup([sys.argv[0], *args], test_one_input, **extra)
    atheris.Fuzz()


def alone(name: str) -> None:
    """`python -m fuzz.TARGET ARGS`: the same as `python -m fuzz TARGET ARGS` (the target's modules must be
    imported under instrumentation, so the run starts over in a fresh interpreter)."""
    os.execv(sys.executable, [sys.executable, "-m", "fuzz", name, *sys.argv[1:]])


def fuzz_all(seconds: int) -> int:
    failed = []
    for name in TARGETS:
        corpus, crashes = WORK / name / "corpus", WORK / name / "crashes"
        corpus.mkdir(parents=True, exist_ok=True)
        crashes.mkdir(parents=True, exist_ok=True)
        before = set(crashes.iterdir())
        print(f"== {name}: {seconds} s", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", "fuzz", name, f"-max_total_time={seconds}",
                                f"-timeout={PER_INPUT_TIMEOUT}", f"-artifact_prefix={crashes}/",
                                "-print_final_stats=1", str(corpus), str(SEEDS / name)], cwd=ROOT)
        found = sorted(set(crashes.iterdir()) - before)
        print(f"== {name}: exit {code} after {time.monotonic() - started:.0f} s, {len(found)} crash file(s)",
              flush=True)
        if code or found:
            failed.append(name)
            for path in found:
                print(f"   reproduce: python -m fuzz {name} {path.relative_to(ROOT)}")
    print("fuzz: " + (f"crashes in {', '.join(failed)}" if failed else f"no crash in {', '.join(TARGETS)}"))
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        name = sys.argv[1]
        if name not in TARGETS:
            print(f"unknown target {name!r}; the targets: {', '.join(TARGETS)}", file=sys.stderr)
            return 2
        fuzz_one(name, sys.argv[2:])  # libFuzzer exits when it is done
        return 0
    seconds = os.environ.get("FUZZ_SECONDS", "60")
    if not seconds.isdigit() or int(seconds) < 1:
        print(f"FUZZ_SECONDS must be a whole number of seconds, got {seconds!r}", file=sys.stderr)
        return 2
    return fuzz_all(int(seconds))


if __name__ == "__main__":
    sys.exit(main())
