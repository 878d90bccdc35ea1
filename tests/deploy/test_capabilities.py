"""The capabilities the manifests grant are enough, for real: in a throw-away network namespace, the cache runs
with exactly the rendered arguments, config and capability set of the DaemonSet (uid 0, every other capability
removed from the bounding set, no_new_privs), sets up the interface and the NOTRACK rules with the node's
iptables (nf_tables), and answers DNS on port 53; then the uninstall's teardown command, with exactly the
cleanup DaemonSet's capabilities, leaves the namespace clean. Needs root (network namespaces); skipped with the
reason elsewhere, run in CI.

What this cannot show: a node whose iptables is the legacy backend (a fresh namespace has no legacy tables, so
the cache rightly picks nf_tables); that case is the legacy-iptables-backend component's NET_RAW, measured by
hand with `capsh --drop=cap_net_raw -- -c 'iptables-legacy -t raw -S'` ("Permission denied")."""
from __future__ import annotations

import shlex
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import require_root, require_tool
from tests.deploy.render import LOCAL_IP, cache_config, container, expanded_args, find, rendered
from tests.netsetup.netns import PYTHON, Netns

STARTUP_LIMIT_SECONDS = 30  # a bound on waiting for the cache, not a timing assertion


def confined(capabilities: list[str]) -> list[str]:
    """setpriv: keep uid 0, but only these capabilities in the bounding set (so in every set after exec)."""
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in capabilities)])
    return [require_tool("setpriv"), f"--bounding-set={bounding}", "--inh-caps=-all", "--no-new-privs"]


def test_cache_sets_up_the_node_and_serves_with_only_the_granted_capabilities(tmp_path: Path) -> None:
    require_root()
    for tool in ("ip", "iptables-nft", "dig"):
        require_tool(tool)
    install = rendered(("builtin-certs",))
    cache = container(find(install, "DaemonSet", "localdns-cache"), "cache")
    capabilities = cache["securityContext"]["capabilities"]["add"]
    assert cache["securityContext"]["runAsUser"] == 0
    text, config = cache_config(install)
    (tmp_path / "cache.yaml").write_text(text)
    args = [f"--config={tmp_path / 'cache.yaml'}" if a.startswith("--config=") else a
            for a in expanded_args(cache, {"status.hostIP": "127.0.0.1"})]
    cleanup = container(find(rendered((), directory="uninstall"), "DaemonSet", "localdns-cache-cleanup"), "cleanup")
    teardown = shlex.split(expanded_args(cleanup)[0].partition("&&")[0])
    assert teardown[:3] == ["python", "-m", "cache.netsetup"]

    with Netns("ldep") as node:
        # Some kernels (this sandbox's among them) have no dummy interfaces; the cache then needs an empty bridge,
        # as docs/install.md says for such nodes. Everything else stays as rendered.
        probe = node.run("ip", "link", "add", "ldep-probe", "type", "dummy", check=False)
        if probe.returncode == 0:
            node.run("ip", "link", "del", "ldep-probe")
        else:
            args.append("--interface-kind=bridge")
        log = (tmp_path / "cache.log").open("w")
        process = node.popen(*confined(capabilities), PYTHON, "-m", "cache", *args, stdout=log,
                             stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
            answered = None
            while time.monotonic() < deadline and process.poll() is None:
                # Any DNS answer from the local IP proves the bind to port 53 (kube-dns is unreachable here, so
                # the cache answers SERVFAIL after its upstream timeout; that is an answer too).
                answered = node.run("dig", f"@{LOCAL_IP}", "+tries=1", "+time=5", "kubernetes.default.svc."
                                    "cluster.local", check=False)
                if "status:" in answered.stdout:
                    break
                time.sleep(0.2)
            assert process.poll() is None, f"the cache exited:\n{(tmp_path / 'cache.log').read_text()}"
            assert answered is not None and "status:" in answered.stdout, (tmp_path / "cache.log").read_text()
            # The interface and every rule are in place, made with NET_ADMIN alone. Rules go in only once the
            # listeners serve, so the first answer can come a moment before them: wait for them, bounded.
            assert node.addresses(config["interface-name"]) == [LOCAL_IP]
            rules = node.our_rules()
            while not rules and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.2)
                rules = node.our_rules()
            assert rules and all(LOCAL_IP in rule for rule in rules)
            assert any("NOTRACK" in rule for rule in rules)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
        cache_log = (tmp_path / "cache.log").read_text()
        assert "setup_errors" not in cache_log and "Permission denied" not in cache_log, cache_log
        # --skip-teardown: a stopping pod leaves the node set up ...
        assert node.addresses(config["interface-name"]) == [LOCAL_IP] and node.our_rules()
        # ... and the uninstall's command, with the cleanup's capabilities, removes all of it.
        cleanup_caps = cleanup["securityContext"]["capabilities"]["add"]
        done = node.run(*confined(cleanup_caps), PYTHON, "-m", *teardown[2:], check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert node.our_rules() == [] and node.addresses(config["interface-name"]) is None
