"""bench/profile.py's reading of its records: py-spy's collapsed stacks summed per function (self and total), and
the instruction count of a callgrind dump."""
from __future__ import annotations

import pytest

from bench.profile import callgrind_total, function_of, strace_counts, summarise, summary_markdown

COLLAPSED = """\
main (cache/daemon.py:277);_on_readable (cache/batchio.py:240);handle (cache/resolver.py:80) 6
main (cache/daemon.py:277);_on_readable (cache/batchio.py:251);handle (cache/resolver.py:95) 3
main (cache/daemon.py:277);_on_readable (cache/batchio.py:240);sendmmsg (libc.so.6) 1
main (cache/daemon.py:277);walk (x.py:3);walk (x.py:4);walk (x.py:5) 10
"""


def test_a_function_adds_up_over_its_lines_and_counts_once_per_sample_when_it_recurs():
    samples, own, total = summarise(COLLAPSED)

    assert samples == 20
    assert own["handle (cache/resolver.py)"] == 9
    assert own["sendmmsg (libc.so.6)"] == 1
    assert total["_on_readable (cache/batchio.py)"] == 10
    assert total["walk (x.py)"] == 10  # three frames deep, ten samples
    assert total["main (cache/daemon.py)"] == 20


def test_frames_without_a_line_number_stay_as_they_are():
    assert function_of("0x7f53 ([vdso])") == "0x7f53 ([vdso])"
    assert function_of("handle (cache/resolver.py:80)") == "handle (cache/resolver.py)"


def test_the_summary_gives_shares_of_all_samples():
    text = summary_markdown("t", COLLAPSED)

    assert "| 50.0% | 10 | `walk (x.py)` |" in text
    assert "| 45.0% | 9 | `handle (cache/resolver.py)` |" in text


def test_callgrind_total_reads_the_summary_line():
    dump = "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 36744833\n\nfn=(1) main\n"

    assert callgrind_total(dump) == 36744833
    with pytest.raises(ValueError):
        callgrind_total("not a dump\n")


STRACE_SUMMARY = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 38.09    0.012029           2      5000           sendto
 26.12    0.008249           1      5003           write
  2.10    0.000662          13        50        50 connect
------ ----------- ----------- --------- --------- ----------------
100.00    0.031580           3     10053        50 total
"""


def test_strace_counts_reads_every_call_once_and_leaves_out_the_total():
    counts = strace_counts(STRACE_SUMMARY)

    assert counts == {"sendto": 5000, "write": 5003, "connect": 50}  # a call that failed counts as a call
