"""`python -m cache --log-format json --log-queries`: every line the cache writes is one JSON object (time, level,
logger, msg); each answer's line has its parts as keys of their own (client, port, id, type, class, name, proto,
size, do, bufsize, rcode, flags, rsize, duration, source), and a query name holding a newline, quotes or any byte
stays inside its line and reads back as the same wire name."""
from __future__ import annotations

import json
import time

import dns.message
import dns.name
from hypothesis import given, settings
from hypothesis import strategies as st

from cache.querylog import answer_fields, common_line, format_line
from tests.cache.conftest import Cache, raw_udp
from tests.cache.test_query_log import HOSTILE, hostile_query


def documents(cache: Cache) -> list[dict]:
    """Every line the cache wrote (start-up's too, and shutdown's once stopped), each parsed as one JSON object."""
    text = cache.output() if cache.proc.poll() is None else cache.log.read_text()
    return [json.loads(line) for line in text.splitlines()]


def answers(cache: Cache, count: int, timeout: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(found := [d for d in documents(cache) if d["logger"] == "cache.query"]) < count \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_every_line_is_json_and_answers_carry_their_parts(tmp_path, kube_dns, node_dns):
    cache = Cache(tmp_path, "--log-queries", "--log-format", "json", kube_dns=kube_dns, node_dns=node_dns)
    try:
        name = "db.default.svc.cluster.local"
        query = dns.message.make_query(name, "AAAA", use_edns=0, payload=1232, want_dnssec=True)
        query.id = 4711
        cache.udp(query)
        cache.udp(query)
        cache.tcp(dns.message.make_query("missing.cluster.local", "A", use_edns=False))
        lines = answers(cache, 3)
    finally:
        cache.stop()
    assert all({"time", "level", "logger", "msg"} <= document.keys() for document in documents(cache))
    assert any(document["logger"] == "cache" for document in documents(cache))  # the daemon's own lines
    assert [(d["type"], d["name"], d["proto"], d["rcode"], d["source"]) for d in lines] == [
        ("AAAA", f"{name}.", "udp", "NOERROR", "upstream"),  # db has no AAAA: NODATA, after a miss
        ("AAAA", f"{name}.", "udp", "NOERROR", "cache"),
        ("A", "missing.cluster.local.", "tcp", "NXDOMAIN", "upstream")]
    first, last = lines[0], lines[2]
    assert {key: first[key] for key in ("level", "client", "id", "class", "size", "do", "bufsize", "flags")} == {
        "level": "INFO", "client": "127.0.0.1", "id": 4711, "class": "IN", "size": len(query.to_wire()), "do": True,
        "bufsize": 1232, "flags": "qr,rd,ra"}
    assert (last["do"], last["bufsize"]) == (False, 512)  # no EDNS: CoreDNS's defaults
    assert isinstance(first["port"], int) and isinstance(first["rsize"], int)
    assert all(isinstance(d["duration"], float) and 0 <= d["duration"] < 10 for d in lines)
    # msg is the text format's line: greps written for it keep working on msg
    assert first["msg"].startswith(f'127.0.0.1:{first["port"]} - 4711 "AAAA IN {name}. udp ')
    assert first["msg"].endswith(" upstream")


def test_hostile_names_stay_in_their_line_and_read_back(tmp_path, kube_dns):
    cache = Cache(tmp_path, "--log-queries", "--log-format", "json", kube_dns=kube_dns)
    try:
        for qid, label in enumerate(HOSTILE, 1):
            assert raw_udp(cache.port, hostile_query(label, qid), timeout=5) is not None
        lines = answers(cache, len(HOSTILE))  # every line of the output parsed as one JSON object
    finally:
        cache.stop()
    assert len(lines) == len(HOSTILE)
    for line, label in zip(lines, HOSTILE):
        assert dns.name.from_text(line["name"]) == dns.name.Name([label, b"cluster", b"local", b""])
    assert cache.log.read_text().isascii()
    assert all(d["logger"] != "cache.query" or d["name"].endswith(".cluster.local.") for d in documents(cache))


@given(st.binary(max_size=80), st.binary(min_size=12, max_size=40), st.sampled_from([("10.0.0.5", 41234),
                                                                                     ("fd00::5", 53, 0, 0)]),
       st.floats(min_value=0, max_value=10))
@settings(max_examples=300, deadline=None)
def test_msg_is_the_text_line_for_any_packet(query, reply, addr, duration):
    """The JSON line's msg and the text line come from two renderings (the text one kept cheap): the same text."""
    assert common_line(answer_fields(query, addr, "udp", reply, duration, "cache")) == \
        format_line(query, addr, "udp", reply, duration, "cache")
