"""Throw-away network namespaces for tests: random names, everything run inside them, deleted on close.

Nothing here touches the host's own namespace: every command runs under `ip netns exec NAME`, and the xtables lock
is moved to a private file with XTABLES_LOCKFILE (which iptables itself honours), so a test that holds the lock
never blocks the host's kube-proxy, CNI or another engineer's tests.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(3)}"


class Netns:
    def __init__(self, prefix: str = "ldns") -> None:
        self.name = unique(prefix + "-")
        self.lockfile = Path(tempfile.gettempdir()) / f"xtables-{self.name}.lock"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        try:
            self.run("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ, XTABLES_LOCKFILE=str(self.lockfile), PYTHONPATH=str(REPO))
        env.update(extra or {})
        return env

    def command(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.command(*argv), capture_output=True, text=True, env=self.env(env),
                              timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} in {self.name} exited {done.returncode}: "
                                 f"{done.stdout}{done.stderr}")
        return done

    def popen(self, *argv: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(*argv), env=self.env(env), **kwargs)

    def python(self, code: str, env: dict[str, str] | None = None) -> dict:
        """Run `code` in a fresh interpreter inside the namespace; it prints one JSON object as its last line."""
        done = self.run(PYTHON, "-c", code, env=env, check=False)
        if done.returncode != 0:
            raise AssertionError(f"python in {self.name} failed:\n{done.stderr}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def iptables_save(self, family: int = 4, backend: str = "nft") -> str:
        tool = "iptables" if family == 4 else "ip6tables"
        return self.run(f"{tool}-{backend}-save").stdout

    def our_rules(self, family: int = 4, backend: str = "nft") -> list[str]:
        return [line for line in self.iptables_save(family, backend).splitlines()
                if line.startswith("-A") and "localdns" in line]

    def addresses(self, interface: str) -> list[str] | None:
        done = self.run("ip", "-j", "addr", "show", "dev", interface, check=False)
        if done.returncode != 0:
            return None
        return sorted(a["local"] for link in json.loads(done.stdout) for a in link.get("addr_info", [])
                      if a.get("scope") != "link")

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        self.lockfile.unlink(missing_ok=True)

    def __enter__(self) -> Netns:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
