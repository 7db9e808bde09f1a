"""Sealed application headers (docs/FORMAT.md section 12) against a real
broker: headers round-trip byte for byte (names, values, nulls, empty
values, order, duplicates) from Java to librdkafka, librdkafka to Java and
within each host; clear headers (e2ee.headers.clear) stay readable on the
broker; a record whose sealed headers were tampered with, stripped,
duplicated or reordered, or whose clear copies were changed, is rejected by
both hosts; and the broker's segment files hold no sealed header name or
value."""

from __future__ import annotations

import json
import time
import uuid

from test_interop import PLUGIN, ck
from test_java import (  # noqa: F401  (pytest fixtures)
    STRING_DE,
    STRING_SER,
    Running,
    built,
    creds,
    e2ee,
    kafka,
    props,
    segments,
)
from test_malicious_broker import raw_read, raw_write

CLEAR = "route"


def spec(tag: str, n: int) -> list[dict]:
    """n records whose headers have everything a header list can have. Names
    and values carry `tag` (a random secret), so the segment scan can look
    for them."""
    out = []
    for i in range(n):
        out.append({
            "k": f"k{i}",
            "v": f"{tag}-value-{i}",
            "h": [
                [f"tenant-{tag}", f"acme-{tag}-{i}".encode().hex()],
                [CLEAR, f"eu-{i}".encode().hex()],
                ["nullh", None],
                [f"tenant-{tag}", f"globex-{tag}".encode().hex()],
                ["empty", ""],
                ["bin", bytes([0, 0xFF, 0x80, i % 256]).hex()],
                [CLEAR, None],
            ],
        })
    return out


def java_producer(built, kafka, creds, tmp_path, topic, records, interceptor=False) -> Running:
    path = tmp_path / f"spec-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(records))
    if interceptor:
        kv = {"value_serializer": STRING_SER, "interceptor_classes": "dev.kafkae2ee.E2eeProducerInterceptor",
              "value_serializer_encoding": "ISO-8859-1"}
    else:
        kv = {"value_serializer": "dev.kafkae2ee.EncryptingSerializer", "e2ee_inner_value_serializer": STRING_SER}
    prod = props(tmp_path / f"p-{uuid.uuid4().hex[:6]}.properties", kafka.bootstrap,
                 **e2ee(creds, "writer"), key_serializer=STRING_SER, e2ee_headers_clear=CLEAR, **kv)
    r = Running(built, "dev.kafkae2ee.it.HeadersApp", "produce", str(prod), topic, str(path))
    r.wait_line("SENT")
    return r


def java_consume(built, kafka, creds, tmp_path, topic, n, interceptor=False) -> list[dict]:
    from java_clients import java

    if interceptor:
        kv = {"value_deserializer": STRING_DE, "interceptor_classes": "dev.kafkae2ee.E2eeConsumerInterceptor",
              "value_deserializer_encoding": "ISO-8859-1"}
    else:
        kv = {"value_deserializer": "dev.kafkae2ee.DecryptingDeserializer", "e2ee_inner_value_deserializer": STRING_DE}
    cons = props(tmp_path / f"c-{uuid.uuid4().hex[:6]}.properties", kafka.bootstrap, **e2ee(creds, "reader"),
                 key_deserializer=STRING_DE, group_id="g-" + uuid.uuid4().hex[:8], auto_offset_reset="earliest",
                 **kv)
    r = java(built, "dev.kafkae2ee.it.HeadersApp", "consume", str(cons), topic, str(n), "60000", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def plugin_producer(kafka, creds, tmp_path, topic, records):
    path, out, stop = (tmp_path / f"{x}-{uuid.uuid4().hex[:6]}" for x in ("spec", "out", "stop"))
    path.write_text(json.dumps(records))
    p = ck("produce", {"bootstrap": kafka.bootstrap, "plugin": str(PLUGIN), "topic": topic,
                       "e2ee": {"e2ee.credential": str(creds["writer"]), "e2ee.trust": str(creds["trust"]),
                                # Java's deserializer cannot open key-bound records.
                                "e2ee.bind.key": "false", "e2ee.headers.clear": CLEAR},
                       "records": str(path), "out": str(out), "stop": str(stop)})
    deadline = time.time() + 60
    while not out.exists() and time.time() < deadline:
        time.sleep(0.2)
    report = json.loads(out.read_text())
    assert not report["failed"] and len(report["delivered"]) == len(records), report
    return p, stop


def plugin_consume(kafka, creds, tmp_path, topic, n) -> list[dict]:
    out, stop = tmp_path / f"ck-{uuid.uuid4().hex[:6]}.jsonl", tmp_path / f"stop-{uuid.uuid4().hex[:6]}"
    c = ck("consume", {"bootstrap": kafka.bootstrap, "plugin": str(PLUGIN), "topic": topic,
                       "group": "ck-" + uuid.uuid4().hex[:8], "on_error": "skip",
                       "e2ee": {"e2ee.credential": str(creds["reader"]), "e2ee.trust": str(creds["trust"])},
                       "seconds": 90, "out": str(out), "stop": str(stop)})
    deadline = time.time() + 90
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < n):
        time.sleep(0.3)
    stop.touch()
    c.wait(timeout=30)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for r in rows:
        if "hv" in r:
            # The plugin marks what it opened (e2ee.opened, docs/FFI.md): after
            # the application's headers, never among them.
            assert r["hv"][-1][0] == "e2ee.opened", r["hv"]
            r["h"] = r.pop("hv")[:-1]
    return rows


def rejections(rows: list[dict]) -> list[dict]:
    """The rows of records a consumer rejected: the plugin's carry the
    record's offset in "rejected" (its other errors, e.g. a transient one
    while the group forms, have none), Java's in "o"."""
    return [r for r in rows if "error" in r and ("rejected" in r or "offset" not in r)]


def assert_exact(rows: list[dict], records: list[dict]):
    got = [r for r in rows if "error" not in r]
    assert not rejections(rows), rows[:3]
    assert [(r["k"], r["v"], r["h"]) for r in got] == [(s["k"], s["v"], s["h"]) for s in records]


def assert_sealed_on_broker(kafka, topic: str, tag: str, n: int):
    data = segments(kafka, topic)
    assert f"eu-{n - 1}".encode() in data  # the clear header is readable: the scan sees headers
    assert b"e2ee.h" in data
    for secret in (tag.encode(), f"tenant-{tag}".encode(), b"globex", b"acme", b"nullh", b"empty"):
        assert secret not in data, f"{secret!r} found in the segment files of {topic}"


def test_librdkafka_to_java_and_librdkafka(built, kafka, creds, tmp_path):
    topic, tag, n = "headers-rdkafka-to-java", uuid.uuid4().hex[:12], 20
    kafka.create_topic(topic)
    records = spec(tag, n)
    p, stop = plugin_producer(kafka, creds, tmp_path, topic, records)
    try:
        assert_exact(java_consume(built, kafka, creds, tmp_path, topic, n), records)
        assert_exact(java_consume(built, kafka, creds, tmp_path, topic, n, interceptor=True), records)
        assert_exact(plugin_consume(kafka, creds, tmp_path, topic, n), records)
    finally:
        stop.touch()
        p.wait(timeout=30)
    assert_sealed_on_broker(kafka, topic, tag, n)
    # On the broker: the clear headers where the app put them, then e2ee and
    # e2ee.h; no other header.
    raw = raw_read(kafka.bootstrap, topic, n)
    assert [k for k, _ in raw[0]["headers"]] == [CLEAR, CLEAR, "e2ee", "e2ee.h"]
    assert raw[0]["headers"][1][1] is None


def test_java_to_librdkafka_and_java(built, kafka, creds, tmp_path):
    for interceptor in (False, True):
        topic, tag, n = f"headers-java-to-rdkafka-{int(interceptor)}", uuid.uuid4().hex[:12], 20
        kafka.create_topic(topic)
        records = spec(tag, n)
        with java_producer(built, kafka, creds, tmp_path, topic, records, interceptor=interceptor) as producer:
            assert_exact(plugin_consume(kafka, creds, tmp_path, topic, n), records)
            assert_exact(java_consume(built, kafka, creds, tmp_path, topic, n), records)
            assert producer.close().returncode == 0
        assert_sealed_on_broker(kafka, topic, tag, n)


def flip(b: bytes, i: int) -> bytes:
    out = bytearray(b)
    out[i] ^= 0x01
    return bytes(out)


def test_tampered_sealed_headers_are_rejected_by_both_hosts(built, kafka, creds, tmp_path):
    topic, tag, n = "headers-tampered", uuid.uuid4().hex[:12], 3
    kafka.create_topic(topic)
    records = spec(tag, n)
    p, stop = plugin_producer(kafka, creds, tmp_path, topic, records)
    try:
        legit = raw_read(kafka.bootstrap, topic, n)

        def rewrite(r, headers):
            return {"topic": topic, "key": r["key"], "value": r["value"], "headers": headers}

        def sealed(r):
            return [v for k, v in r["headers"] if k == "e2ee.h"][0]

        def without(r, name):
            return [(k, v) for k, v in r["headers"] if k != name]

        r0, r1 = legit[0], legit[1]
        e2ee_at = [k for k, _ in r0["headers"]].index("e2ee")
        attacks = {
            "flipped list bit": without(r0, "e2ee.h") + [("e2ee.h", flip(sealed(r0), 3))],
            "flipped tag bit": without(r0, "e2ee.h") + [("e2ee.h", flip(sealed(r0), len(sealed(r0)) - 1))],
            "stripped e2ee.h": without(r0, "e2ee.h"),
            "duplicated e2ee.h": r0["headers"] + [("e2ee.h", sealed(r0))],
            "another record's e2ee.h": without(r0, "e2ee.h") + [("e2ee.h", sealed(r1))],
            "flag stripped": [(k, bytes([v[0], v[1] & 0x7F]) + v[2:] if k == "e2ee" else v)
                              for k, v in r0["headers"]],
            "clear copy changed": [(k, b"us-0" if k == CLEAR and v else v) for k, v in r0["headers"]],
            "clear copies reordered": list(reversed([h for h in r0["headers"] if h[0] == CLEAR]))
            + [h for h in r0["headers"] if h[0] != CLEAR],
            "clear copy removed": [h for i, h in enumerate(r0["headers"]) if i != 0],
        }
        offsets = raw_write(kafka.bootstrap, [rewrite(r0, h) for h in attacks.values()])
        # ... followed by one untouched record, which still reads.
        good = raw_write(kafka.bootstrap, [rewrite(r1, r1["headers"])])[0]
        total = n + len(attacks) + 1
        for rows in (plugin_consume(kafka, creds, tmp_path, topic, total),
                     java_consume(built, kafka, creds, tmp_path, topic, total)):
            errors = {r["rejected"] if "rejected" in r else r["o"] for r in rejections(rows)}
            assert errors == set(offsets), (sorted(errors), offsets, rows)
            ok = [r for r in rows if "error" not in r]
            assert [r["o"] for r in ok] == [0, 1, 2, good]
            assert ok[-1]["h"] == records[1]["h"]
    finally:
        stop.touch()
        p.wait(timeout=30)


def test_a_wrong_setting_fails_client_construction_naming_it(built, kafka, creds, tmp_path):
    from confluent_kafka import KafkaException, Producer

    from java_clients import java

    base = {"bootstrap.servers": kafka.bootstrap, "plugin.library.paths": str(PLUGIN),
            "e2ee.credential": str(creds["writer"]), "e2ee.trust": str(creds["trust"])}
    for name, value in (("e2ee.headers", "plain"), ("e2ee.headers.clear", "route,e2ee.h")):
        try:
            Producer({**base, name: value})
        except KafkaException as e:
            assert name in str(e), e
        else:
            raise AssertionError(f"{name}={value} was accepted")
    prod = props(tmp_path / "bad.properties", kafka.bootstrap, **e2ee(creds, "writer"), key_serializer=STRING_SER,
                 value_serializer="dev.kafkae2ee.EncryptingSerializer", e2ee_inner_value_serializer=STRING_SER,
                 e2ee_headers="plain")
    spec_file = tmp_path / "none.json"
    spec_file.write_text("[]")
    r = java(built, "dev.kafkae2ee.it.HeadersApp", "produce", str(prod), "headers-bad", str(spec_file),
             input="", timeout=60)
    assert r.returncode != 0 and "e2ee.headers" in r.stdout + r.stderr, r.stdout + r.stderr
