"""The atheris targets (fuzz/) without atheris: each target's `check` over its seed corpus (fuzz/corpus/TARGET), so a
target cannot rot between `make fuzz` runs. The seeds must pass, must still reach what the target is there to
reach (a cached answer, a patched pod...), and each check must catch a broken rule: the code under test is broken
on purpose here and the check has to fail."""
from __future__ import annotations

import importlib
from pathlib import Path

import jsonpointer
import pytest

from fuzz.__main__ import SEEDS, TARGETS

# What the seeds of each target must reach between them (the labels its `check` returns).
REACHED = {
    "cache_query": {"dropped", "refused", "hit", "miss"},  # no reply; an error; cached; SERVFAIL, asked again
    "cache_answer": {"cached", "refused"},  # stored and answered from; SERVFAIL, never stored
    "webhook_review": {"400", "allowed", "patched"},
}


def seeds(target: str) -> list[Path]:
    return sorted((SEEDS / target).iterdir())


@pytest.mark.parametrize("target", TARGETS)
def test_every_seed_keeps_the_rules_and_the_seeds_reach_what_the_target_is_for(target):
    check = importlib.import_module(f"fuzz.{target}").check
    assert len(seeds(target)) >= 5, "a handful of real inputs: python -m fuzz.seeds"
    reached = {check(path.read_bytes()) for path in seeds(target)}
    assert REACHED[target] <= reached, f"the seeds no longer reach {REACHED[target] - reached}"


def run_all(target: str) -> None:
    check = importlib.import_module(f"fuzz.{target}").check
    for path in seeds(target):
        check(path.read_bytes())


def test_cache_query_catches_a_reply_with_another_id(monkeypatch):
    import cache.resolver
    render = cache.resolver.render
    monkeypatch.setattr(cache.resolver, "render", lambda query, *args: b"\x00\x00" + render(query, *args)[2:])
    with pytest.raises(AssertionError, match="the query's ID"):
        run_all("cache_query")


def test_cache_query_catches_a_hit_that_differs_from_the_miss(monkeypatch):
    import cache.resolver
    render = cache.resolver.render

    def authoritative_hits(query, answer, ttl, limit):
        reply = render(query, answer, ttl, limit)
        # A miss is rendered with the whole capped TTL (30 s, or 5 s for a denial, by default); a hit with what is left.
        return reply if ttl in (30, 5) else reply[:2] + bytes((reply[2] | 0x04,)) + reply[3:]
    monkeypatch.setattr(cache.resolver, "render", authoritative_hits)
    with pytest.raises(AssertionError, match="a hit answers what the miss answered"):
        run_all("cache_query")


def test_cache_answer_catches_rdata_that_is_not_checked(monkeypatch):
    import cache.wire
    monkeypatch.setattr(cache.wire, "check_rdata", lambda *args: None)
    with pytest.raises(AssertionError, match="dnspython cannot read"):
        run_all("cache_answer")


def test_cache_answer_catches_an_answer_to_another_question_being_cached(monkeypatch):
    import cache.wire
    parse_answer = cache.wire.parse_answer
    monkeypatch.setattr(cache.wire, "parse_answer", lambda data, question: parse_answer(
        data[:12] + question + data[12 + len(question):], question))  # the question no longer compared
    check = importlib.import_module("fuzz.cache_answer").check
    data = (SEEDS / "cache_answer" / "a-answer").read_bytes()
    with pytest.raises(AssertionError, match="not an answer to the question"):
        check(data[:1] + data[1:14] + b"\x02" + data[15:])  # www.fuzz.test asked, wxw.fuzz.test answered


def test_webhook_review_catches_a_patch_that_does_not_apply(monkeypatch):
    import webhook.app
    admit = webhook.app.admit

    def wrong(*args, **kwargs):
        admitted = admit(*args, **kwargs)
        return admitted._replace(patch=[{"op": "replace", "path": "/spec/nothing/here", "value": 1}])
    monkeypatch.setattr(webhook.app, "admit", wrong)
    with pytest.raises(jsonpointer.JsonPointerException, match="member 'nothing' not found"):
        run_all("webhook_review")


def test_webhook_review_catches_an_error_logged_for_a_pod(monkeypatch):
    import webhook.app
    monkeypatch.setattr(webhook.app, "admit", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(AssertionError, match="internal error"):
        run_all("webhook_review")
