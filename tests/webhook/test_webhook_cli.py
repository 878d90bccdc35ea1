"""`python -m webhook`: serve and preview are its own; audit, rollout, status and demo are handed over to the programs
they belong to, imported only when chosen, with the command line and help exactly as the user typed them."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from webhook.__main__ import HANDOVER, build_parser, main

REPO = Path(__file__).resolve().parents[2]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def python_m_webhook(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALDNS_")}
    return subprocess.run([sys.executable, "-m", "webhook", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env=env)


def test_builtin_subcommands_and_serve_flags():
    args = build_parser().parse_args(["serve", "--tls-cert", "c", "--tls-key", "k"])
    assert (args.host, args.port, args.drain_seconds, args.max_body_bytes) == ("0.0.0.0", 8443, 25, 4 * 1024 * 1024)
    assert set(subcommands(build_parser())) == {"serve", "preview", "audit", "rollout", "status", "demo"}


def test_every_handed_over_command_is_a_function_of_its_program():
    for name, (target, _help) in HANDOVER.items():
        module, _, function = target.partition(":")
        assert module.split(".")[0] != "webhook", f"{name} is the webhook's own: give it a parser here"
        code = f"import importlib; assert callable(importlib.import_module({module!r}).{function})"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 0, (name, done.stderr)


def test_the_help_listing_says_what_the_cluster_tools_say_of_themselves():
    from clustertools.__main__ import COMMANDS

    handed = {name: help_text for name, (target, help_text) in HANDOVER.items() if target.startswith("clustertools")}
    assert {"audit", "rollout", "status"} <= set(handed)  # the names the docs have always used
    for name, help_text in handed.items():
        assert help_text == COMMANDS[name].HELP


@pytest.mark.parametrize("argv,prog", [(["audit", "--help"], "python -m webhook audit"),
                                       (["--log-level", "DEBUG", "status", "-h"], "python -m webhook status"),
                                       (["rollout", "--help"], "python -m webhook rollout")])
def test_handed_over_help_is_the_programs_own_under_the_name_typed(argv, prog):
    done = python_m_webhook(*argv)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {prog} ") and "--kubeconfig" in done.stdout and "--context" in done.stdout


def test_handed_over_options_reach_the_program(tmp_path):
    done = python_m_webhook("audit", "--kubeconfig", str(tmp_path / "absent"), "-n", "shop", "-o", "json")
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot load Kubernetes credentials: kubeconfig ") and "absent" in done.stderr
    bad = python_m_webhook("audit", "--no-such-option")
    assert bad.returncode == 2 and "unrecognized arguments: --no-such-option" in bad.stderr


def test_serving_commands_load_no_other_program(tmp_path):
    pod = tmp_path / "pod.yaml"
    pod.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: c, image: i}]}\n")
    code = ("import sys; from webhook.__main__ import main; "
            f"assert main(['preview', {str(pod)!r}, '-n', 'shop']) == 0; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'clustertools', 'localdns', 'certs', 'cache', 'kubernetes', 'httpx'}); "
            # the log format every program shares (standard library only: tests/test_layout.py) is no program
            "assert loaded == ['localdns', 'localdns.logformat'], loaded")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "decision: inject" in done.stdout


def test_unknown_options_of_its_own_commands_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--tls-cert", "c", "--tls-key", "k", "--no-such-option"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_unknown_log_level_is_one_clear_line():
    done = python_m_webhook("--log-level", "LOUD", "audit")
    assert done.returncode == 2 and "unknown log level 'LOUD'" in done.stderr and "Traceback" not in done.stderr
