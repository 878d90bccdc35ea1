"""`make demo` runs `python -m webhook demo`: certs, the webhook and the cache together, with no root, no cluster and
no internet; it exits 0 and stops its servers. It ships in the image, so it runs with the runtime dependencies
alone: one test installs the project into a fresh virtual environment without the test extra and runs it there."""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from localdns import demo
from webhook.config import Settings

REPO = Path(__file__).resolve().parents[2]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LOCALDNS_") and k != "PYTHONPATH"}


def assert_demo_output(out: str) -> None:
    assert "decision: inject (injected nameservers=169.254.20.10 ndots=5)" in out
    assert "decision: skip (pod opted out with annotation localdns.io/inject: 'disabled')" in out
    assert "decision: skip (hostNetwork with ClusterFirst uses the node's resolv.conf)" in out
    assert "decision: already-injected" in out
    assert "      nameserver 169.254.20.10\n      nameserver 10.20.0.53\n" in out  # own dnsConfig kept
    assert "      options ndots:2\n" in out  # the per-pod ndots annotation
    assert "metrics: inject=3.0, already-injected=1.0, skip=2.0" in out
    assert "webhook stopped" in out
    # Then the cache resolves the names the injected pods would look up: a miss, then a hit, for each.
    resolved = re.findall(r"^  (svc-\d\.default\.svc\.cluster\.local) +(miss|hit) ", out, re.M)
    assert resolved == [(f"svc-{n}.default.svc.cluster.local", how) for n in (1, 2, 3) for how in ("miss", "hit")]


def test_demo_command_prints_each_decision_and_resolv_conf_then_resolves_through_the_cache():
    done = subprocess.run([sys.executable, "-m", "webhook", "demo"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=clean_env())
    assert done.returncode == 0, done.stderr
    assert_demo_output(done.stdout)
    assert "INFO localdns.webhook" not in done.stderr  # the per-admission lines would only repeat the story


def test_demo_hands_the_names_for_the_configured_domain_to_the_cache(monkeypatch):
    handed: list[list[str]] = []
    monkeypatch.setattr(demo.cache_demo, "run", lambda names, out: handed.append(list(names)))
    assert demo.run(Settings(cluster_domain="corp.internal"), out=io.StringIO()) == 0
    assert handed == [["svc-1.default.svc.corp.internal", "svc-2.default.svc.corp.internal",
                       "svc-3.default.svc.corp.internal"]]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_runs_with_only_the_runtime_dependencies(tmp_path):
    """`pip install .` (what the image does), then `python -m webhook demo` from outside the source tree."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.lock"):
        shutil.copy(REPO / name, source / name)
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for package in {p.split(".")[0] for p in packages}:  # what the image's build context holds
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", "-c", str(source / "requirements.lock"),
                              str(source)], capture_output=True, text=True, timeout=800, env=clean_env())
    assert install.returncode == 0, install.stderr[-3000:]
    where = subprocess.run([python, "-c", "import webhook, importlib.util as u; print(webhook.__file__); "
                            "print(u.find_spec('httpx'), u.find_spec('pytest'))"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean_env())
    assert where.stdout.split("\n")[:2] == [str(venv / "lib" / f"python{sys.version_info.major}."
                                                  f"{sys.version_info.minor}" / "site-packages" / "webhook"
                                                  / "__init__.py"), "None None"], where.stdout + where.stderr
    done = subprocess.run([python, "-m", "webhook", "demo"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=clean_env())
    assert done.returncode == 0, done.stderr
    assert_demo_output(done.stdout)
    # Every module of the source tree was installed, and imports with the runtime dependencies alone.
    modules = sorted(".".join(path.relative_to(source).with_suffix("").parts).removesuffix(".__init__")
                     for package in {p.split(".")[0] for p in packages} for path in (source / package).rglob("*.py"))
    imported = subprocess.run([python, "-c", f"import importlib\nfor m in {modules!r}: importlib.import_module(m)"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path, env=clean_env())
    assert imported.returncode == 0, imported.stderr[-3000:]
