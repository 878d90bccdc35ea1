"""`python -m fuzz.seeds`: write the seed corpus of every target (fuzz/corpus/TARGET/NAME), a handful of real
inputs each, made with dnspython and the webhook's own review_for as clients, servers and kube-apiserver send them.
The files are kept in the repository; run this again when a target's input format changes."""
from __future__ import annotations

import json
import random
import shutil
import struct
from collections.abc import Callable

import dns.edns
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from fuzz.__main__ import SEEDS
from fuzz.cache_answer import CLIENTS, QTYPES
from tests.webhook.samples import pod
from webhook.review import review_for

NAME = b"\x03www\x04fuzz\x04test\x00"
SOA = "ns.fuzz.test. hostmaster.fuzz.test. 1 7200 900 86400 30"


def _query(name: str, qtype: str, qid: int, **kwargs: object) -> bytes:
    message = dns.message.make_query(name, qtype, **kwargs)  # type: ignore[arg-type]
    message.id = qid
    return message.to_wire()


def cache_query() -> dict[str, bytes]:
    return {
        "a-edns": _query("web.default.svc.cluster.local", "A", 1, use_edns=0, payload=1232),
        "aaaa-do-mixed-case": _query("WeB.Default.SVC.cluster.local", "AAAA", 2, want_dnssec=True),
        "mx-plain": _query("example.org", "MX", 3, use_edns=False),
        "txt-cookie": _query("txt.example.org", "TXT", 4, use_edns=0,
                             options=[dns.edns.GenericOption(dns.edns.OptionType.COOKIE, bytes(8))]),
        "ptr": _query("10.0.0.10.in-addr.arpa", "PTR", 5),
        "any": _query("example.org", "ANY", 6),
        "axfr": _query("cluster.local", "AXFR", 7),
        "chaos": _query("version.bind", "TXT", 8, rdclass="CH"),
        "big-a-plain": _query("big3.example.org", "A", 9, use_edns=False),
        "edns-version-1": _query("example.org", "A", 10, use_edns=1),
        "response": bytes.fromhex("000b81800001000000000000") + b"\x00\x00\x01\x00\x01",
        "short": b"\x00\x0c\x01",
    }


def _answer(qtype: int, kind: str, edns: bool) -> bytes:
    query = dns.message.make_query("www.fuzz.test", dns.rdatatype.RdataType(qtype), use_edns=0 if edns else False)
    query.id = 0x1234
    response = dns.message.make_response(query)
    name = query.question[0].name
    rdata = {1: ["192.0.2.1", "192.0.2.2"], 28: ["2001:db8::1"], 5: ["target.fuzz.test."], 16: ['"v=spf1 -all"'],
             15: ["10 mx.fuzz.test."], 33: ["0 5 443 web.fuzz.test."], 12: ["web.fuzz.test."],
             2: ["ns1.fuzz.test.", "ns2.fuzz.test."], 6: [SOA], 65: ['1 . alpn="h2"'], 257: ['0 issue "ca.test"'],
             47: ["next.fuzz.test. A AAAA RRSIG NSEC"]}[qtype]
    if kind == "answer":
        response.answer.append(dns.rrset.from_text(name, 300, "IN", dns.rdatatype.RdataType(qtype), *rdata))
        if qtype == 5:
            response.answer.append(dns.rrset.from_text("target.fuzz.test.", 60, "IN", "A", "192.0.2.9"))
        if qtype == 15:
            response.additional.append(dns.rrset.from_text("mx.fuzz.test.", 60, "IN", "A", "192.0.2.25"))
            response.authority.append(dns.rrset.from_text("fuzz.test.", 60, "IN", "NS", "ns1.fuzz.test."))
    elif kind == "big":
        response.answer.append(dns.rrset.from_text(name, 300, "IN", "A", *[f"10.9.0.{i}" for i in range(1, 61)]))
    else:
        response.set_rcode(dns.rcode.NXDOMAIN if kind == "nxdomain" else dns.rcode.NOERROR)
        response.authority.append(dns.rrset.from_text("fuzz.test.", 60, "IN", "SOA", SOA))
    return response.to_wire(max_size=65535)


def cache_answer() -> dict[str, bytes]:
    seeds = {}
    for index, qtype in enumerate(QTYPES):
        edns = index % 2 == 0
        client = index % len(CLIENTS)  # the first client's EDNS, picked by the selector byte (see cache_answer)
        selector = bytes((index + client * len(QTYPES),))
        name = dns.rdatatype.to_text(dns.rdatatype.RdataType(qtype)).lower()
        seeds[f"{name}-answer"] = selector + _answer(qtype, "answer", edns)
    seeds["a-big"] = b"\x00" + _answer(1, "big", True)
    seeds["a-nxdomain"] = bytes((len(QTYPES),)) + _answer(1, "nxdomain", False)
    seeds["aaaa-nodata"] = b"\x01" + _answer(28, "nodata", True)
    # What `make fuzz` found (SERVFAIL, not cached, since): options that overrun the upstream's OPT record, and an
    # NSEC bitmap window that ends in a zero octet.
    with_opt = _answer(1, "answer", True)  # its last record is the OPT, without options (rdlength 0)
    seeds["a-opt-option-overrun"] = b"\x00" + with_opt[:-2] + struct.pack("!HHH", 4, 10, 8)
    rdata = b"\x04next\x04fuzz\x04test\x00" + b"\x00\x02\x40\x00"  # window 0: A, then a zero octet
    nsec = struct.pack("!HHHHHH", 0x1234, 0x8180, 1, 1, 0, 0) + NAME + struct.pack("!HH", 47, 1) + b"\xc0\x0c" \
        + struct.pack("!HHIH", 47, 1, 300, len(rdata)) + rdata
    seeds["nsec-bitmap-trailing-zero"] = bytes((QTYPES.index(47),)) + nsec
    # As the fuzzer wrote it: an owner pointer to the question's type, whose low byte (28) is read as a label that
    # runs on through the pointer's own record, TTL included.
    seeds["aaaa-name-past-its-pointer"] = bytes.fromhex(
        "0d123481000001000100000000037777770466757a7a047465737400001c0001c01c001c00010000012c001020"
        "010db8000000000000000000000001")
    # ... and one that starts at the question's class (1) and runs into the first record's TTL.
    seeds["mx-name-from-the-question-into-a-ttl"] = bytes.fromhex(
        "04123481000001000100010002037777770466757a7a047465737400000f0001c00c000f00010000012c0007000a026d78c0"
        "10c010000200010000003c0006036e7331c010c01e123400010000003c0004c0000219037777770466757a7a047465737400"
        "000000010000292000000000000000")
    return seeds


def _review(sent: dict[str, object], namespace: str = "shop", **kwargs: str) -> bytes:
    return json.dumps(review_for(sent, namespace, uid="9f0c-seed", **kwargs), indent=None).encode()


def webhook_review() -> dict[str, bytes]:
    windows = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["windows"]}]}]}}}
    locked = pod("locked")
    return {
        "plain": _review(pod()),
        "own-dns-config": _review(pod(dnsConfig={"nameservers": ["10.0.0.2"], "searches": ["corp.example"],
                                                 "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]})),
        "opted-out": _review(pod(annotations={"localdns.io/inject": "disabled"})),
        "per-pod-ndots": _review(pod(annotations={"localdns.io/ndots": "2"})),
        "host-network": _review(pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")),
        "windows": _review(pod(affinity=windows)),
        "networkpolicy-blocked": _review(locked),
        "v1beta1": _review(pod(), api_version="admission.k8s.io/v1beta1"),
        "update": _review(pod(), operation="UPDATE"),
        "excluded-namespace": _review(pod(), "kube-system"),
        "not-json": b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": ',
    }


MAKERS: dict[str, Callable[[], dict[str, bytes]]] = {
    "cache_query": cache_query, "cache_answer": cache_answer, "webhook_review": webhook_review}


def main() -> None:
    random.seed(0)  # dnspython shuffles the records of an RRset as it renders them: the same files every time
    for target, make in MAKERS.items():
        folder = SEEDS / target
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        seeds = make()
        for name, data in seeds.items():
            (folder / name).write_bytes(data)
        print(f"{folder.relative_to(SEEDS.parent.parent)}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
