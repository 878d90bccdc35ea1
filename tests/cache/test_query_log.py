"""--log-queries: one line per answer in CoreDNS's common log format plus its source; hostile names cannot forge a
line; the class filter and the rate limit hold, with every line over the limit counted; switched by a config reload.
"""
from __future__ import annotations

import io
import re
import struct
import threading
import time

import dns.message
import dns.name
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache.querylog import QUEUE_LINES, QueryLog, classify, escape_name, format_line
from cache.stats import Stats
from tests.cache.conftest import Cache, raw_udp

# CoreDNS's common format, then our source: the grep an admin writes, as a regex over the whole line.
LINE = re.compile(r'^\S+ \S+ INFO cache\.query: (?P<remote>\S+):(?P<port>\d+) - (?P<id>\d+) '
                  r'"(?P<type>\S+) (?P<class>\S+) (?P<name>\S+) (?P<proto>udp|tcp) (?P<size>\d+) (?P<do>true|false|-) '
                  r'(?P<bufsize>\d+|-)" (?P<rcode>[A-Z0-9]+) (?P<rflags>\S+) (?P<rsize>\d+) (?P<duration>[0-9.]+)s '
                  r'(?P<source>cache|upstream)$')


NOTE = re.compile(r" cache\.query: dropped (\d+) query log lines before this one")


def query_lines(cache: Cache) -> list[re.Match]:
    lines = [line for line in cache.output().splitlines() if " cache.query: " in line and not NOTE.search(line)]
    matches = [LINE.match(line) for line in lines]
    assert all(matches), [line for line, m in zip(lines, matches) if not m]
    return [m for m in matches if m]


def wait_lines(cache: Cache, count: int, timeout: float = 10) -> list[re.Match]:
    deadline = time.monotonic() + timeout
    while len(found := query_lines(cache)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_one_line_per_answer_with_its_source(tmp_path, kube_dns, node_dns):
    cache = Cache(tmp_path, "--log-queries", kube_dns=kube_dns, node_dns=node_dns)
    try:
        name = "db.default.svc.cluster.local"
        query = dns.message.make_query(name, "AAAA", use_edns=0, payload=1232, want_dnssec=True)
        query.id = 4711
        cache.udp(query)
        cache.udp(query)
        cache.tcp(dns.message.make_query("missing.cluster.local", "A"))
        lines = wait_lines(cache, 3)
        assert [(m["type"], m["name"], m["proto"], m["rcode"], m["source"]) for m in lines] == [
            ("AAAA", f"{name}.", "udp", "NOERROR", "upstream"),  # db has no AAAA: NODATA, after a miss
            ("AAAA", f"{name}.", "udp", "NOERROR", "cache"),
            ("A", "missing.cluster.local.", "tcp", "NXDOMAIN", "upstream")]
        first = lines[0]
        assert (first["remote"], first["id"], first["class"], first["do"], first["bufsize"]) == (
            "127.0.0.1", "4711", "IN", "true", "1232")
        assert first["rflags"] == "qr,rd,ra" and int(first["size"]) == len(query.to_wire())
    finally:
        cache.stop()


# Labels a client may send: every one must come out on one line, escaped, and mean the same name again.
HOSTILE = [b'\n1 INFO cache.query: 10.0.0.1:53 - 1 "A IN forged. udp" NOERROR',
           b"\r\x1b[31mred", b'quote"d', b"dot.ted", b"sp ace", b"back\\slash", b"\x00\xff\x80", b"tab\tx"]


def hostile_query(label: bytes, qid: int) -> bytes:
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + bytes((len(label),)) + label + \
        b"\x07cluster\x05local\x00" + struct.pack("!HH", 1, 1)


def test_hostile_names_cannot_forge_a_line(tmp_path, kube_dns):
    cache = Cache(tmp_path, "--log-queries", kube_dns=kube_dns)
    try:
        for qid, label in enumerate(HOSTILE, 1):
            assert raw_udp(cache.port, hostile_query(label, qid), timeout=5) is not None
        lines = wait_lines(cache, len(HOSTILE))  # every line matches the whole-line pattern (query_lines)
        assert len(lines) == len(HOSTILE)
        for line, label in zip(lines, HOSTILE):
            assert dns.name.from_text(line["name"]) == dns.name.Name([label, b"cluster", b"local", b""])
        assert not re.search(r"[^\x20-\x7e\n]", cache.output())  # no control byte reached the log
    finally:
        cache.stop()


@given(st.lists(st.binary(min_size=1, max_size=63), min_size=1, max_size=4))
@settings(max_examples=300, deadline=None)
def test_escaped_names_are_printable_and_mean_the_same_name(labels):
    wire = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    text = escape_name(wire)
    assert all(0x21 <= ord(char) <= 0x7E for char in text)  # printable, no space: one field of one line
    assert not re.search(r'(?<!\\)"', text)  # every quote escaped: the quoted question cannot be closed early
    assert dns.name.from_text(text) == dns.name.Name([*labels, b""])


def test_class_filter_keeps_only_denials(tmp_path, kube_dns):
    cache = Cache(tmp_path, "--log-queries", "--log-queries-class", "denial", kube_dns=kube_dns)
    try:
        cache.udp(dns.message.make_query("web.default.svc.cluster.local", "A"))  # success
        cache.udp(dns.message.make_query("nothere.cluster.local", "A"))  # NXDOMAIN
        cache.udp(dns.message.make_query("db.default.svc.cluster.local", "AAAA"))  # NODATA
        raw_udp(cache.port, struct.pack("!HHHHHH", 9, 0x0100, 2, 0, 0, 0))  # FORMERR: an error
        lines = wait_lines(cache, 2)
        time.sleep(0.3)  # the writer thread has nothing more to write
        assert [(m["name"], m["rcode"]) for m in query_lines(cache)] == [
            ("nothere.cluster.local.", "NXDOMAIN"), ("db.default.svc.cluster.local.", "NOERROR")]
        assert len(lines) == 2
    finally:
        cache.stop()


def test_classes_follow_corednss_log_plugin():
    def reply(rcode: int, answers: int, tc: bool = False) -> bytes:
        return struct.pack("!HHHHHH", 1, 0x8180 | rcode | (0x0200 if tc else 0), 1, answers, 0, 0)
    assert [classify(reply(0, 1)), classify(reply(0, 0)), classify(reply(3, 0)), classify(reply(2, 0)),
            classify(reply(5, 0)), classify(reply(0, 0, tc=True))] == [
        "success", "denial", "denial", "error", "error", "success"]


def test_the_rate_limit_drops_and_counts_the_rest(tmp_path, kube_dns):
    cache = Cache(tmp_path, "--log-queries", "--log-queries-rate", "1", "--log-queries-burst", "5",
                  kube_dns=kube_dns)
    try:
        sent = 200
        query = dns.message.make_query("web.default.svc.cluster.local", "A")
        for _ in range(sent):
            cache.udp(query)
        dropped = cache.metrics()["localdns_query_log_dropped_total"]
        assert dropped > 0
        time.sleep(1.2)  # a token for one more line, which reports the drops before it
        cache.udp(query)
        deadline = time.monotonic() + 10
        while len(query_lines(cache)) + dropped < sent + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        logged = len(query_lines(cache))
        assert 5 <= logged < sent
        assert logged + dropped == sent + 1  # every answer was either logged or counted
        assert cache.metrics()["localdns_query_log_dropped_total"] == dropped
        assert sum(int(n) for n in NOTE.findall(cache.output())) == dropped  # and the log says so
    finally:
        cache.stop()


def test_a_stalled_log_reader_never_stalls_answering():
    """A writer stuck on its stream: answers still go out, and what cannot be queued is counted as dropped."""
    release = threading.Event()

    class Stuck(io.StringIO):
        def write(self, text: str) -> int:
            release.wait(30)
            return super().write(text)

    stats = Stats()
    log = QueryLog(stats, rate=1e9, burst=10 ** 6, stream=Stuck())
    sent: list[bytes] = []
    data = hostile_query(b"www", 1)
    reply = data[:2] + b"\x81\x80" + data[4:6] + b"\x00\x01" + data[8:]
    total = QUEUE_LINES + 1000
    for _ in range(total):
        log.watch(data, ("10.0.0.1", 5353), lambda r, a: sent.append(r), "udp")(reply, ("10.0.0.1", 5353))
    assert len(sent) == total  # every answer went out while the writer was blocked
    assert stats.query_log_dropped >= total - QUEUE_LINES - 256 > 0
    release.set()
    log.close()


def test_rate_limit_is_a_token_bucket():
    now = [100.0]
    stats = Stats()
    log = QueryLog(stats, rate=2, burst=3, stream=io.StringIO(), clock=lambda: now[0])
    taken = [log._take() for _ in range(5)]
    now[0] += 1.0  # two tokens back
    taken += [log._take() for _ in range(3)]
    now[0] += 60  # never more than the burst
    taken += [log._take() for _ in range(4)]
    assert taken == [True] * 3 + [False] * 2 + [True] * 2 + [False] + [True] * 3 + [False]


def test_format_matches_corednss_common_format():
    query = dns.message.make_query("example.org", "A", use_edns=0, payload=4096)
    query.id = 29008
    response = dns.message.make_response(query, recursion_available=True)
    line = format_line(query.to_wire(), ("::1", 50759, 0, 0), "udp", response.to_wire(), 0.03799, "upstream")
    assert line == (f'[::1]:50759 - 29008 "A IN example.org. udp {len(query.to_wire())} false 4096" NOERROR '
                    f'qr,rd,ra {len(response.to_wire())} 0.037990s upstream')


def test_switched_on_and_off_by_a_config_reload(tmp_path, kube_dns):
    config = tmp_path / "cache.yaml"
    config.write_text("log-queries: false\n")
    cache = Cache(tmp_path, "--config", str(config), kube_dns=kube_dns)
    try:
        query = dns.message.make_query("web.default.svc.cluster.local", "A")
        cache.udp(query)
        config.write_text("log-queries: true\nlog-queries-class: success\n")
        deadline = time.monotonic() + 15
        while cache.metrics().get('localdns_config_reloads_total{result="ok"}', 0) < 1:
            assert time.monotonic() < deadline, cache.output()
            time.sleep(0.1)
        cache.udp(query)
        assert len(wait_lines(cache, 1)) == 1
        config.write_text("log-queries: false\n")
        while cache.metrics().get('localdns_config_reloads_total{result="ok"}', 0) < 2:
            assert time.monotonic() < deadline + 15, cache.output()
            time.sleep(0.1)
        cache.udp(query)
        time.sleep(0.3)
        assert len(query_lines(cache)) == 1
    finally:
        cache.stop()


@pytest.mark.parametrize("value", ["loud", "", "denial,everything"])
def test_a_bad_class_is_a_clear_error(value):
    from cache.config import Settings, SettingsError
    with pytest.raises(SettingsError, match="log-queries-class"):
        Settings(listen=("127.0.0.1:5353",), kube_dns="10.96.0.10", resolv_conf="/dev/null",
                 log_queries_class=value).check({})
