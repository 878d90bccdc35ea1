"""Before the first scenario: every program and Python module the run will need, checked at once, so that a run
stops at the start with one message saying what is missing and how to get it, not after ten minutes of load.
"""
from __future__ import annotations

import importlib
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

SYSTEM = "as root: tools/install-system.sh (`make bench` runs it)"
BENCH_EXTRA = ("the `bench` extra: `make bench`, or "
               "`.venv/bin/python -m pip install -c requirements.lock -e '.[test,bench]'`")


@dataclass(frozen=True)
class Need:
    """One program (found on PATH) or Python module (imported) that a part of the run needs."""

    name: str
    kind: str  # "program" or "module"
    used_for: str
    how: str

    def present(self) -> bool:
        if self.kind == "program":
            return shutil.which(self.name) is not None
        try:  # imported, not only found: a module that is installed but broken fails here too
            importlib.import_module(self.name)
        except Exception:
            return False
        return True


def program(name: str, used_for: str, how: str) -> Need:
    return Need(name, "program", used_for, how)


def module(name: str, used_for: str, how: str) -> Need:
    return Need(name, "module", used_for, how)


# The program each peer cache is started as (the localdns variants are this Python), and its Debian package.
PEER_PROGRAMS = {"dnsmasq": ("dnsmasq", "dnsmasq"), "unbound": ("unbound", "unbound"),
                 "unbound-tcp": ("unbound", "unbound"), "kresd": ("kresd", "knot-resolver")}


def for_bench(dns: bool, webhook: bool, caches: Iterable[str]) -> list[Need]:
    """What `python -m bench` needs for the halves and caches asked for."""
    caches = list(caches)
    needs = [program("taskset", "pinning servers and load to their cores", f"apt-get install util-linux ({SYSTEM})"),
             module("matplotlib", "the report's charts", BENCH_EXTRA)]
    if dns:
        needs += [program("dnsperf", "the DNS load", f"apt-get install dnsperf ({SYSTEM})"),
                  program("dnsmasq", "the upstream (kube-dns)", f"apt-get install dnsmasq ({SYSTEM})"),
                  module("dns", "waiting for each server's first answer", "dnspython: `make install`"),
                  module("uvloop", "the localdns cache and the listener floor", "uvloop: `make install`")]
        if {"localdns", "localdns-plain"} & set(caches):  # run as the image runs it: the hot path compiled
            needs += [module("mypyc", "compiling the cache's hot path (tools/compile_cache.py)",
                             "mypy, in the test extra: `make install`"),
                      program("gcc", "compiling the cache's hot path (tools/compile_cache.py)",
                              f"apt-get install gcc ({SYSTEM}), or measure the plain-Python cache alone: "
                              "--caches localdns-py,...")]
        for cache in caches:
            if cache in PEER_PROGRAMS:
                binary, package = PEER_PROGRAMS[cache]
                needs.append(program(binary, f"cache {cache}", f"apt-get install {package} (`make bench` installs it), "
                                     f"or leave {cache} out of --caches"))
    if webhook:
        needs += [module(name, "the webhook and its floor", "`make install`")
                  for name in ("fastapi", "uvicorn", "cryptography")]
    return needs


def missing(needs: Iterable[Need]) -> list[Need]:
    """The needs not met, each named once with everything that needs it (two caches may need one program)."""
    unmet: dict[tuple[str, str], Need] = {}
    checked: set[tuple[str, str]] = set()
    for need in needs:
        key = (need.kind, need.name)
        if key in unmet:
            first = unmet[key]
            unmet[key] = Need(first.name, first.kind, f"{first.used_for}; {need.used_for}", first.how)
        elif key not in checked:
            checked.add(key)
            if not need.present():
                unmet[key] = need
    return list(unmet.values())


def message(unmet: list[Need], what: str = "the benchmark") -> str:
    lines = [f"cannot run {what}: {len(unmet)} missing, nothing was started"]
    lines += [f"  - {need.kind} {need.name} (for {need.used_for}): {need.how}" for need in unmet]
    return "\n".join(lines)
