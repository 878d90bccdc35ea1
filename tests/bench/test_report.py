"""The report's ratios are taken within each round and shown as median (lowest–highest), so one lucky round cannot
pass for a gain; a round one server missed is left out of its ratios."""
from __future__ import annotations

from bench import report


def results(ours: list[float | None], theirs: list[float | None]) -> dict:
    def cache(name: str, values: list[float | None]) -> dict:
        rounds = [{"round": r, "cpu_us": v} for r, v in enumerate(values) if v is not None]
        return {"name": name, "rss_idle_kib": 20 * 1024, "rss_full_kib": 30 * 1024, "rounds": {"miss": rounds}}

    return {"plan": {"rounds": len(ours), "rates": []},
            "caches": {"localdns": cache("localdns", ours), "unbound-tcp": cache("unbound-tcp", theirs)}}


def miss_row(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("| misses (unique names): server CPU"))


def test_summary_gives_the_median_of_per_round_ratios_and_their_range():
    # Per round: 5/10, 6/6, 9/10 -> 0.5, 1.0, 0.9. The ratio of the medians (6/10 = 0.6) would hide that two rounds
    # of three show no gain at all.
    row = miss_row(report.summary(results([5.0, 6.0, 9.0], [10.0, 6.0, 10.0])))

    assert row == "| misses (unique names): server CPU µs / query | 6.0 (5.0–9.0) | 0.90× (0.50–1.00) |"


def test_a_round_one_server_missed_is_left_out_of_the_ratio():
    ratio = report.ratios(results([5.0, None, 9.0], [10.0, 6.0, 10.0])["caches"],
                          report.Metric("", "miss", "cpu_us", 1), "unbound-tcp")

    assert ratio is not None and (ratio.low, ratio.high, ratio.count) == (0.5, 0.9, 2)


def test_targets_judge_by_the_median_ratio_and_show_the_spread():
    targets = {t: (m, met) for t, m, met in report.targets(results([5.0, 6.0, 9.0], [10.0, 6.0, 10.0]))}

    measured, met = targets["misses: CPU per query ≤ unbound's over TCP"]
    assert met is True and measured.startswith("0.90× (0.50–1.00) per round")
    assert targets["misses (moonshot): CPU per query ≤ kresd's"] == ("not measured", None)


def test_memory_is_given_as_a_ratio_to_unbound():
    data = results([5.0], [10.0])
    data["caches"]["unbound"] = {"name": "unbound", "rss_idle_kib": 16 * 1024, "rss_full_kib": 40 * 1024}

    row = next(line for line in report.memory(data) if line.startswith("| localdns |"))

    assert row.startswith("| localdns | 20.0 | 1.25× | 30.0 | 0.75× |")
