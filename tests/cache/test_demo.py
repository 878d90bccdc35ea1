"""`cache.demo.run` (called by `python -m webhook demo`): a miss then a hit per name, on loopback, without root."""
from __future__ import annotations

import io
import re
import subprocess
import sys

from tests.cache.conftest import ROOT


def test_demo_resolves_each_name_twice_miss_then_hit():
    from cache.demo import run

    out = io.StringIO()
    run(["web.demo.svc.cluster.local", "missing.demo.svc.cluster.local"], out=out)
    lines = [line.split() for line in out.getvalue().splitlines() if line.startswith("  ")]
    assert [(fields[0], fields[1]) for fields in lines] == [
        ("web.demo.svc.cluster.local", "miss"), ("web.demo.svc.cluster.local", "hit"),
        ("missing.demo.svc.cluster.local", "miss"), ("missing.demo.svc.cluster.local", "hit")]
    assert "10.96.12.7" in " ".join(lines[0]) and "10.96.12.7" in " ".join(lines[1])
    assert lines[2][-1] == "NXDOMAIN" and lines[3][-1] == "NXDOMAIN"
    assert re.search(r"ttl 30\)", " ".join(lines[0]))


def test_python_m_cache_demo_runs_alone():
    result = subprocess.run([sys.executable, "-m", "cache.demo"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "kubernetes.default.svc.cluster.local" in result.stdout and " hit " in result.stdout
    assert "Traceback" not in result.stderr
