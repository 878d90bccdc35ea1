"""The benchmark checks every program and Python module it needs before its first scenario, and stops with one
message naming what is missing and how to get it (before, a run without matplotlib loaded every server for ten
minutes and then died writing its charts)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench import preflight

ROOT = Path(__file__).resolve().parents[2]


def test_missing_module_and_program_are_named_with_how_to_get_them():
    needs = [preflight.module("json", "reading results", "nothing"),
             preflight.module("localdns_bench_no_such_module", "the charts", "pip install it"),
             preflight.program("sh", "a shell", "nothing"),
             preflight.program("localdns-bench-no-such-program", "the load", "apt-get install it")]

    unmet = preflight.missing(needs)

    assert [(n.kind, n.name) for n in unmet] == [("module", "localdns_bench_no_such_module"),
                                                 ("program", "localdns-bench-no-such-program")]
    text = preflight.message(unmet)
    assert "2 missing" in text
    assert "module localdns_bench_no_such_module (for the charts): pip install it" in text
    assert "program localdns-bench-no-such-program (for the load): apt-get install it" in text


def test_a_module_that_is_installed_but_fails_to_import_counts_as_missing(tmp_path, monkeypatch):
    (tmp_path / "localdns_bench_broken.py").write_text("raise ImportError('libfoo.so: cannot open shared object')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    unmet = preflight.missing([preflight.module("localdns_bench_broken", "the charts", "reinstall it")])

    assert [n.name for n in unmet] == ["localdns_bench_broken"]


def test_a_program_two_caches_need_is_named_once_with_both():
    needs = [preflight.program("localdns-bench-no-such-unbound", "cache unbound", "apt-get install unbound"),
             preflight.program("localdns-bench-no-such-unbound", "cache unbound-tcp", "apt-get install unbound")]

    unmet = preflight.missing(needs)

    assert len(unmet) == 1 and unmet[0].used_for == "cache unbound; cache unbound-tcp"


def test_every_cache_asked_for_is_checked():
    names = {n.name for n in preflight.for_bench(dns=True, webhook=False, caches=["localdns", "kresd",
                                                                                  "unbound-tcp"])}

    assert {"dnsperf", "dnsmasq", "taskset", "matplotlib", "kresd", "unbound"} <= names


def test_python_m_bench_without_matplotlib_stops_before_any_scenario(tmp_path):
    # A sitecustomize that makes `import matplotlib` fail as it does where the bench extra is not installed.
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['matplotlib'] = None\n")
    out = tmp_path / "report"

    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONPATH": str(blocker)},
                          capture_output=True, text=True, timeout=120)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "module matplotlib (for the report's charts)" in done.stderr
    assert "make bench" in done.stderr
    assert "nothing was started" in done.stderr
    assert done.stdout == ""  # no server started, no scenario run
    assert not out.exists()
