"""Metrics after a known sequence of queries, under the CoreDNS names NodeLocal DNS dashboards use."""
from __future__ import annotations

import socket
import struct

import dns.message
from prometheus_client.parser import text_string_to_metric_families

from tests.cache.conftest import Cache, raw_udp


def test_metric_values_after_a_known_sequence(tmp_path, kube_dns):
    cache = Cache(tmp_path, kube_dns=kube_dns)
    try:
        cache.udp(dns.message.make_query("web.default.svc.cluster.local", "A"))  # miss
        cache.udp(dns.message.make_query("WEB.default.svc.cluster.local", "A"))  # hit (case does not matter)
        cache.udp(dns.message.make_query("web.default.svc.cluster.local", "A"))  # hit
        cache.udp(dns.message.make_query("missing.default.svc.cluster.local", "A"))  # miss, NXDOMAIN
        cache.udp(dns.message.make_query("missing.default.svc.cluster.local", "A"))  # denial hit
        cache.tcp(dns.message.make_query("web.default.svc.cluster.local", "AAAA"))  # miss over TCP
        assert raw_udp(cache.port, b"\x12\x34\x01\x00\x00\x02" + b"\x00" * 6) is not None  # FORMERR
        m = cache.metrics()
        _status, text = cache.http("/metrics", cache.metrics_port)
        families = {f.name: f for f in text_string_to_metric_families(text)}  # prometheus-client's own parser
        assert families["coredns_dns_requests"].type == "counter"
        assert families["coredns_forward_request_duration_seconds"].type == "histogram"
        assert families["coredns_cache_entries"].type == "gauge"
        assert m['coredns_dns_requests_total{family="1",proto="udp",type="A"}'] == 5
        assert m['coredns_dns_requests_total{family="1",proto="tcp",type="AAAA"}'] == 1
        assert m['coredns_dns_responses_total{rcode="NOERROR"}'] == 4
        assert m['coredns_dns_responses_total{rcode="NXDOMAIN"}'] == 2
        assert m['coredns_dns_responses_total{rcode="FORMERR"}'] == 1
        assert m['coredns_cache_hits_total{type="success"}'] == 2
        assert m['coredns_cache_hits_total{type="denial"}'] == 1
        assert m["coredns_cache_misses_total"] == 3
        assert m['coredns_cache_entries{type="success"}'] == 2
        assert m['coredns_cache_entries{type="denial"}'] == 1
        to = f'to="tcp://127.0.0.1:{kube_dns.port}"'
        # 3 misses, plus the start-up health check and loop probe of each of the 3 kube-dns zones
        assert m[f"coredns_forward_requests_total{{{to}}}"] == 3 + 3 * 2
        assert m[f'coredns_forward_request_duration_seconds_count{{rcode="NOERROR",{to}}}'] == 2
        assert m[f'coredns_forward_request_duration_seconds_bucket{{le="+Inf",rcode="NOERROR",{to}}}'] == 2
        assert m[f'coredns_forward_request_duration_seconds_sum{{rcode="NOERROR",{to}}}'] > 0
    finally:
        cache.stop()


def test_a_flood_of_every_query_type_keeps_the_page_small_and_its_series_unique(tmp_path, kube_dns):
    """One client asking for all 65,536 query types (for a name outside every forward zone: SERVFAIL at once, no
    upstream involved) adds one series, type="other", beside the named types: every label has a bounded set of
    values, kept merged as they are counted."""
    cache = Cache(tmp_path, "--log-level", "error", kube_dns=kube_dns)
    try:
        name = b"\x05flood\x04test\x00"
        servfails = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.settimeout(5)
            for start in range(0, 65536, 512):  # in windows, so that no datagram is lost to a full buffer
                window = range(start, start + 512)
                for qtype in window:
                    sock.sendto(struct.pack("!HHHHHH", qtype, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", qtype, 1),
                                ("127.0.0.1", cache.port))
                for _ in window:
                    try:
                        reply = sock.recv(4096)
                    except TimeoutError:  # a type the cache does not answer (none today)
                        break
                    servfails += reply[3] & 0xF == 2
        status, text = cache.http("/metrics", cache.metrics_port)
        assert status == 200
        assert len(text) < 32 * 1024, f"{len(text)} bytes"
        seen = set()
        requests = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                assert key not in seen, f"duplicate series {key}"
                seen.add(key)
                if sample.name == "coredns_dns_requests_total":
                    requests[sample.labels["type"]] = requests.get(sample.labels["type"], 0) + sample.value
        assert servfails > 65000  # nearly every type was answered through the counted path...
        assert sum(requests.values()) == servfails  # ...and counted, once each
        assert requests["A"] == 1 and requests["AAAA"] == 1
        assert requests["other"] > 65000
    finally:
        cache.stop()
