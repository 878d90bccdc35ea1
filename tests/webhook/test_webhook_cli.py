"""`python -m webhook`: built-in subcommands, and the optional ones (audit, rollout, status) registered through
`add_parser(subparsers)` when present, without breaking the others when absent or broken."""
from __future__ import annotations

import argparse
import sys
import types

from webhook.__main__ import _add_optional, build_parser, main


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_builtin_subcommands_and_serve_flags():
    args = build_parser().parse_args(["serve", "--tls-cert", "c", "--tls-key", "k"])
    assert (args.host, args.port, args.drain_seconds, args.max_body_bytes) == ("0.0.0.0", 8443, 25, 4 * 1024 * 1024)
    assert {"serve", "preview", "demo"} <= set(subcommands(build_parser()))


def test_absent_optional_module_adds_nothing():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    _add_optional(sub, "no_such_subcommand")
    assert "no_such_subcommand" not in subcommands(parser)


def test_broken_optional_module_reports_itself_only_when_used(monkeypatch, capsys):
    broken = types.ModuleType("webhook.broken_tool")

    def add_parser(_subparsers):
        raise RuntimeError("half-written module")

    broken.add_parser = add_parser
    monkeypatch.setitem(sys.modules, "webhook.broken_tool", broken)
    monkeypatch.setattr("webhook.__main__.OPTIONAL_SUBCOMMANDS", ("broken_tool",))
    assert "broken_tool" in subcommands(build_parser())
    assert main(["broken_tool"]) == 1
    assert "half-written module" in capsys.readouterr().err


def test_optional_module_registers_its_subcommand(monkeypatch):
    tool = types.ModuleType("webhook.sample_tool")

    def add_parser(subparsers):
        subparsers.add_parser("sample_tool").set_defaults(func=lambda args: 7)

    tool.add_parser = add_parser
    monkeypatch.setitem(sys.modules, "webhook.sample_tool", tool)
    monkeypatch.setattr("webhook.__main__.OPTIONAL_SUBCOMMANDS", ("sample_tool",))
    assert main(["sample_tool"]) == 7
