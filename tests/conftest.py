"""Project-wide test rules.

In CI (CI=true) a skipped test is a failure: nothing real may silently not run. Outside CI, tests that need root
or a missing system tool skip with the reason, via `require_root()` and `require_tool()`.
"""
from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_root() -> None:
    """Skip (outside CI) unless running as root; network namespaces and iptables need it."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, iptables); run `sudo make test` or let CI run it")


def require_tool(name: str) -> str:
    """Return the tool's path, or skip naming the Debian package step that installs it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed; `make test` as root installs it (tools/install-system.sh)")
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {reason}"
